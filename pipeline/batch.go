package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/evidence"
)

// Retry pauses after a failed sink write.
const (
	minRetry = 100 * time.Millisecond
	maxRetry = 5 * time.Second
)

// emit is the engine's Emitter: it marshals the alert and queues it. It
// never drops an alert; the bound is enforced before evidence goes in
// (waitSpace, busyReason), so the queue can pass MaxQueued only by the
// alerts of evidence already admitted.
//
// With an alert ledger, a record the sinks already accepted before a
// restart (the rebuilt engine emits the same ids for the same evidence) is
// not sent again; a better one than the ledger has goes out as an upgrade.
func (p *Pipeline) emit(a correlate.Alert) {
	rank := a.Rank()
	if p.cfg.Delivered != nil {
		if had, ok := p.cfg.Delivered.Rank(a.ID); ok {
			if rank <= had {
				p.counters.alreadySent.Add(1)
				p.log.Debug("alert record already delivered before a restart: not sent again",
					zap.String(fieldAlertID, a.ID), zap.String(fieldAction, a.Action))
				return
			}
			a.Action = correlate.ActionUpgraded
		}
	}
	b, err := a.MarshalJSON()
	if err != nil {
		// A bug in the engine's renderer; never lose the alert's identity.
		p.counters.marshal.Add(1)
		p.log.Error("alert not rendered", zap.String(fieldAlertID, a.ID), zap.Error(err))
		return
	}
	p.counters.emitted.Add(1)
	switch {
	case a.Suppressed != "":
		p.counters.suppressed.Add(1)
	case a.Action == correlate.ActionUpgraded:
		p.counters.upgrades.Add(1)
	}
	if a.Suppressed == "" {
		p.counters.inc(p.counters.alerts, a.Confidence.String())
	}
	p.mu.Lock()
	if p.flushed {
		// Evidence still in flight when Close had already flushed: the
		// sink is gone, so the alert goes to the log in full.
		p.mu.Unlock()
		p.counters.undeliv.Add(1)
		p.log.Error("alert not delivered: emitted after shutdown", zap.String(fieldAlertID, a.ID),
			zap.String(fieldAction, a.Action), zap.ByteString(fieldAlert, b))
		return
	}
	p.queue = append(p.queue, queued{rec: alert.Record{ID: a.ID, Action: a.Action, JSON: b}, rank: rank})
	full := len(p.queue) >= p.cfg.BatchSize
	p.mu.Unlock()
	if full {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// flusher writes queued alerts on the timer, when a batch is full, and
// retries a failing sink with a growing pause.
func (p *Pipeline) flusher() {
	defer close(p.stopped)
	t := time.NewTicker(p.cfg.FlushInterval)
	defer t.Stop()
	retry := time.Duration(0)
	var retryAt time.Time
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
		case <-p.kick:
		}
		if retry > 0 && time.Now().Before(retryAt) {
			continue
		}
		if err := p.writeQueued(context.Background()); err != nil {
			retry = min(max(2*retry, minRetry), maxRetry)
			retryAt = time.Now().Add(retry)
			p.log.Warn("alert sink write failed; alerts stay queued and are retried",
				zap.Duration("retry_in", retry), zap.Error(err))
			continue
		}
		retry = 0
	}
}

// writeQueued writes the queue in batches until it is empty or a write
// fails. Records stay queued until the sink accepted them.
func (p *Pipeline) writeQueued(ctx context.Context) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	for {
		p.mu.Lock()
		n := min(len(p.queue), p.cfg.BatchSize)
		batch := make([]alert.Record, n)
		marks := make([]evidence.Mark, n)
		now := p.cfg.Now()
		for i, q := range p.queue[:n] {
			batch[i] = q.rec
			marks[i] = evidence.Mark{ID: q.rec.ID, Action: q.rec.Action, Rank: q.rank, Time: now}
		}
		p.mu.Unlock()
		if n == 0 {
			return nil
		}
		err := p.sink.Write(ctx, batch)
		if err != nil && !errors.Is(err, alert.ErrInvalidRecord) {
			p.counters.writeErr.Add(1)
			return fmt.Errorf("write alerts: %w", err)
		}
		if err != nil {
			// The valid records were written; the invalid ones never will be.
			p.counters.writeErr.Add(1)
			p.log.Error("alert sink refused invalid records", zap.Error(err))
		}
		p.counters.batches.Add(1)
		p.counters.written.Add(uint64(n))
		if p.cfg.Delivered != nil {
			if err := p.cfg.Delivered.Record(ctx, marks); err != nil {
				// Delivered; the ledger keeps the marks and writes them
				// again (the syncer's Sync at the latest). A restart
				// before that may send these again (same ids).
				p.counters.ledgerErr.Add(1)
				p.warnLedger(err, n)
			}
		}
		p.mu.Lock()
		p.queue = append(p.queue[:0:0], p.queue[n:]...)
		p.space.Broadcast()
		p.mu.Unlock()
	}
}

// Flush writes every queued alert now.
func (p *Pipeline) Flush(ctx context.Context) error {
	return p.writeQueued(ctx)
}

// Close stops taking evidence, writes what is queued (bounded by
// CloseTimeout), and closes the sink. Alerts the sink still refused are
// logged in full at error level and counted (Stats.AlertsUndelivered).
func (p *Pipeline) Close() error {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return ErrClosed
	}
	p.closing = true
	p.space.Broadcast()
	p.mu.Unlock()
	close(p.done)
	<-p.stopped
	var errs []error
	if p.syncDone != nil {
		<-p.syncDone
		if err := p.Sync(context.Background()); err != nil {
			if n, _ := p.unstoredStats(); n > 0 {
				err = fmt.Errorf("close pipeline: %d pieces of evidence the evidence log refused are not stored (a restart cannot rebuild them): %w", n, err)
			}
			errs = append(errs, err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.CloseTimeout)
	defer cancel()
	for {
		err := p.writeQueued(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			errs = append(errs, err)
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(minRetry):
		}
	}
	// Marks a failed ledger write left (the ledger's Close does the same).
	p.syncLedger(context.Background())
	p.mu.Lock()
	left := p.queue
	p.queue = nil
	p.flushed = true
	p.mu.Unlock()
	for _, q := range left {
		r := q.rec
		p.counters.undeliv.Add(1)
		p.log.Error("alert not delivered before shutdown", zap.String(fieldAlertID, r.ID),
			zap.String(fieldAction, r.Action), zap.ByteString(fieldAlert, r.JSON))
	}
	if len(left) > 0 {
		errs = append(errs, fmt.Errorf("close pipeline: %d alerts not delivered (logged)", len(left)))
	}
	if p.sink != nil {
		if err := p.sink.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close alert sink: %w", err))
		}
	}
	return errors.Join(errs...)
}
