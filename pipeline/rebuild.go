package pipeline

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/evidence"
)

// RebuildFrom is where a rebuild at now starts in event time: everything
// the engine could still hold. Its retention counts back from its
// watermark (the newest sensor time minus the sensor lateness), and a
// host event may sit up to the clock skew before the knock it follows.
func (p *Pipeline) RebuildFrom(now time.Time) time.Time {
	e := p.cfg.Engine
	return now.Add(-(e.Retention + e.SensorLateness + e.Skew))
}

// Rebuild replays stored evidence into the engine, before anything live
// arrives: every item from RebuildFrom(now) on, in the order it was
// stored, each after moving the engine's watermark to the item's arrival
// (as the live clock had moved it), so that the engine decides what it
// decided then. Nothing is stored again. Alerts come out as usual; with an
// alert ledger those the sinks already accepted are not sent again, so an
// alert whose evidence was complete but which was not yet written when
// the process died goes out now, once. It waits for the sinks like
// AddRecords. Finally the watermark moves to now.
func (p *Pipeline) Rebuild(ctx context.Context, src EvidenceSource, now time.Time) (evidence.ReplayStats, error) {
	start := time.Now()
	rs, err := src.Replay(p.RebuildFrom(now), func(it evidence.Item) error {
		if err := p.waitSpace(ctx); err != nil {
			return err
		}
		if !it.Arrival.IsZero() {
			p.engine.Advance(it.Arrival)
		}
		p.counters.mu.Lock()
		p.counters.replayed[it.Kind().String()]++
		p.counters.mu.Unlock()
		_ = p.feedReplayed(&it)
		return nil
	})
	p.engine.Advance(now)
	d := time.Since(start)
	p.counters.mu.Lock()
	p.counters.rebuildDur, p.counters.rebuilt = d, true
	p.counters.mu.Unlock()
	if err != nil {
		return rs, fmt.Errorf("rebuild from the evidence log: %w", err)
	}
	p.log.Info("engine state rebuilt from the evidence log", zap.Uint64("replayed", rs.Replayed),
		zap.Uint64("expired", rs.Expired), zap.Uint64("undecodable", rs.Undecodable), zap.Duration("duration", d),
		zap.Uint64("alerts_already_sent", p.counters.alreadySent.Load()))
	return rs, nil
}

// feedReplayed hands a replayed item to the engine; its counters are the
// engine's own (the pipeline counts replayed items apart from live ones).
func (p *Pipeline) feedReplayed(it *evidence.Item) error {
	switch it.Kind() {
	case evidence.KindKnock:
		return p.engine.AddKnock(*it.Knock)
	case evidence.KindHandshake:
		return p.engine.AddHandshake(*it.Handshake)
	case evidence.KindChange:
		return p.engine.AddChange(*it.Change)
	}
	return evidence.ErrNoEvidence
}
