package scaleout

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/evidence"
)

// CorrelatorConfig is what a correlator runs: the rule, its options, and
// where committed alerts are also copied.
type CorrelatorConfig struct {
	// Engine is the rule with its caps for the whole evidence topic: each
	// partition's engine gets its share of MaxPairs, MaxChanges and
	// MaxHandshakes (never below minShare), so the correlators together
	// hold what one embedded box would.
	Engine correlate.Config
	// Options are passed to every partition's engine (observer, logger);
	// the inventory is set with SetInventory.
	Options []correlate.Option
	// Inventory resolves host names (nil: none).
	Inventory correlate.Inventory
	// Committed, when set, receives every alert record after its
	// transaction committed (a local copy: a crash between the commit and
	// the copy loses the copy, never the topic's record).
	Committed func(id, action string, json []byte)
}

// minShare is the smallest state cap a partition's engine gets.
const minShare = 1024

// Correlator is a member of the correlators' consumer group: one engine
// per partition it owns, alerts and offsets committed in one transaction.
type Correlator struct {
	s      *session
	cfg    CorrelatorConfig
	sess   *kgo.GroupTransactSession
	reader *kgo.Client // rebuilds: plain partition reads
	adm    *kadm.Client
	log    *zap.Logger
	topic  string

	mu    sync.Mutex // parts, inv, suppression (the loop and Reload)
	parts map[int32]*part
	inv   correlate.Inventory
	sup   *correlate.Suppression
	drop  map[int32]bool // revoked or lost: drop before the next batch

	cancel context.CancelFunc
	done   chan struct{}
	err    error

	c corrCounters
}

// part is one partition's engine.
type part struct {
	eng  *correlate.Engine
	next int64 // the next offset expected live
	// emitting is false while the engine is rebuilt: its alerts were
	// committed (or will be produced again) by whoever processed those
	// records live.
	emitting bool
	rebuild  atomic.Uint64 // alerts recomputed (not emitted) by the rebuild
	// pending are alerts emitted live, waiting for the batch's
	// transaction (an inventory reload may emit between batches: they go
	// with the next one).
	mu      sync.Mutex
	pending []correlate.Alert
}

// take returns and clears the pending alerts.
func (pt *part) take() []correlate.Alert {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	out := pt.pending
	pt.pending = nil
	return out
}

type corrCounters struct {
	records, forged, malformed, rejected       atomic.Uint64
	byKind                                     [evidence.KindChange + 1]atomic.Uint64
	rebuilds, rebuildRecords, rebuildAlerts    atomic.Uint64
	rebuildNanos, rebuildStalls                atomic.Uint64
	commits, aborts, alerts, high, medium, upg atomic.Uint64
	produceErrs                                atomic.Uint64
	lastWarn                                   atomic.Int64
}

// NewCorrelator joins the correlators' group. cfg must have passed
// Validate after Defaults; ccfg.Engine must validate.
func NewCorrelator(ctx context.Context, cfg Config, ccfg CorrelatorConfig) (*Correlator, error) {
	if err := ccfg.Engine.Validate(); err != nil {
		return nil, fmt.Errorf("new correlator: %w", err)
	}
	s, err := newSession(cfg)
	if err != nil {
		return nil, err
	}
	c := &Correlator{s: s, cfg: ccfg, log: cfg.Logger.Named("scaleout.correlator"), topic: cfg.Topics.Evidence,
		parts: map[int32]*part{}, inv: ccfg.Inventory, drop: map[int32]bool{}, done: make(chan struct{})}
	txid := cfg.TransactionalID
	if txid == "" {
		txid = "knockwatch-" + cfg.Node + "-" + randomID(4)
	}
	from := time.Now().Add(-c.horizon())
	c.sess, err = kgo.NewGroupTransactSession(append(append([]kgo.Opt{}, s.opts...),
		kgo.TransactionalID(txid),
		kgo.TransactionTimeout(cfg.TransactionTimeout),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(c.topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.RebalanceTimeout(max(cfg.SessionTimeout, 10*time.Second)),
		kgo.HeartbeatInterval(max(cfg.SessionTimeout/10, 100*time.Millisecond)),
		// A partition nobody committed yet starts at the rebuild horizon:
		// evidence of the last retention is evaluated live (a new group
		// started after an attack still alerts on it).
		kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(from.UnixMilli())),
		kgo.FetchMaxWait(250*time.Millisecond),
		kgo.OnPartitionsRevoked(c.revoked),
		kgo.OnPartitionsLost(c.revoked),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	)...)
	if err != nil {
		return nil, fmt.Errorf("join group %s: %w", cfg.Group, err)
	}
	c.reader, err = s.client(kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		c.sess.Close()
		return nil, fmt.Errorf("connect rebuild reader: %w", err)
	}
	c.adm = kadm.NewClient(c.reader)
	rctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.run(rctx)
	c.log.Info("correlator joined", zap.String("group", cfg.Group), zap.String("topic", c.topic),
		zap.String("transactional_id", txid), zap.Duration("rebuild_horizon", c.horizon()))
	_ = ctx
	return c, nil
}

// horizon is how far back a partition's rebuild reads: everything the
// engine could still hold (pipeline.RebuildFrom's span).
func (c *Correlator) horizon() time.Duration {
	e := c.cfg.Engine
	return e.Retention + e.SensorLateness + e.Skew
}

// revoked runs in the group's goroutine: the partitions' engines go
// before the next batch (the session aborts a transaction in flight).
func (c *Correlator) revoked(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ps := range m[c.topic] {
		c.drop[ps] = true
	}
}

// Done is closed when the correlator stops (Err says why, nil after
// Close).
func (c *Correlator) Done() <-chan struct{} { return c.done }

// Err is why the correlator stopped.
func (c *Correlator) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// SetInventory swaps the inventory of every partition's engine (a reload).
func (c *Correlator) SetInventory(inv correlate.Inventory) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inv = inv
	for _, p := range c.parts {
		p.eng.SetInventory(inv)
	}
}

// SetSuppression swaps the suppression lists of every partition's engine.
func (c *Correlator) SetSuppression(s correlate.Suppression) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.parts {
		if err := p.eng.SetSuppression(s); err != nil {
			return err
		}
	}
	c.sup = &s
	c.cfg.Engine.Suppression = s
	return nil
}

// Close leaves the group (aborting a transaction in flight) and
// disconnects.
func (c *Correlator) Close() error {
	c.cancel()
	<-c.done
	c.sess.Close()
	c.reader.Close()
	if errors.Is(c.err, context.Canceled) {
		return nil
	}
	return c.err
}

func (c *Correlator) run(ctx context.Context) {
	defer close(c.done)
	for {
		fs := c.sess.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			c.err = ctx.Err()
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				c.warn("read evidence", zap.String("topic", t), zap.Int32("partition", p), zap.Error(err))
			}
		})
		if fs.Empty() {
			continue
		}
		if err := c.batch(ctx, fs); err != nil {
			if ctx.Err() != nil {
				c.err = ctx.Err()
				return
			}
			c.err = err
			c.log.Error("correlator stopped", zap.Error(err))
			return
		}
	}
}

// batch processes one poll's records in one transaction.
func (c *Correlator) batch(ctx context.Context, fs kgo.Fetches) error {
	c.applyDrops()
	// Partitions seen for the first time (or rewound by an aborted
	// transaction) are rebuilt from their history first.
	need := map[int32]int64{}
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if p.Topic != c.topic || len(p.Records) == 0 {
			return
		}
		first := p.Records[0].Offset
		c.mu.Lock()
		pt := c.parts[p.Partition]
		c.mu.Unlock()
		if pt == nil || first < pt.next {
			need[p.Partition] = first
		}
	})
	// A rebuild that cannot read the history now (the brokers away) is
	// tried again: the batch waits, nothing of it is evaluated before.
	for attempt := 0; len(need) > 0; attempt++ {
		err := c.rebuild(ctx, need)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.warn("rebuild failed; trying again", zap.Int("partitions", len(need)), zap.Error(err))
		if !sleepCtx(ctx, backoff(attempt+3)) {
			return ctx.Err()
		}
	}
	if err := c.sess.Begin(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	var alerts []correlate.Alert
	touched := map[int32]bool{}
	fs.EachRecord(func(r *kgo.Record) {
		if r.Topic != c.topic {
			return
		}
		c.mu.Lock()
		pt := c.parts[r.Partition]
		c.mu.Unlock()
		if pt == nil {
			return // revoked meanwhile: the transaction aborts
		}
		touched[r.Partition] = true
		c.feed(pt, r, true)
		pt.next = r.Offset + 1
	})
	c.mu.Lock()
	for _, pt := range c.parts {
		alerts = append(alerts, pt.take()...)
	}
	c.mu.Unlock()
	var produceErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for i := range alerts {
		a := &alerts[i]
		b, err := a.MarshalJSON()
		if err != nil {
			c.log.Error("alert not rendered", zap.String("alert_id", a.ID), zap.Error(err))
			continue
		}
		r := &kgo.Record{Topic: c.s.cfg.Topics.Alerts, Key: []byte(a.ID), Value: b, Timestamp: time.Now(),
			Headers: []kgo.RecordHeader{{Key: headerAction, Value: []byte(a.Action)}}}
		c.s.seal(r)
		wg.Add(1)
		c.sess.Produce(ctx, r, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				c.c.produceErrs.Add(1)
				produceErr.CompareAndSwap(nil, &err)
			}
		})
	}
	wg.Wait()
	try := kgo.TryCommit
	if produceErr.Load() != nil {
		try = kgo.TryAbort
	}
	committed, err := c.sess.End(ctx, try)
	if !committed {
		// The records of this batch will be read again from the last
		// commit: their engines saw them, so they are rebuilt.
		c.c.aborts.Add(1)
		c.mu.Lock()
		for p := range touched {
			delete(c.parts, p)
		}
		c.mu.Unlock()
		if pe := produceErr.Load(); pe != nil {
			c.warn("alerts not produced: transaction aborted, the batch is read again", zap.Error(*pe))
		}
		if err != nil {
			return fmt.Errorf("end transaction: %w", err)
		}
		return nil
	}
	c.c.commits.Add(1)
	for i := range alerts {
		a := &alerts[i]
		c.c.alerts.Add(1)
		switch {
		case a.Action == correlate.ActionUpgraded:
			c.c.upg.Add(1)
		default:
		}
		if a.Suppressed == "" {
			switch a.Confidence.String() {
			case "high":
				c.c.high.Add(1)
			case "medium":
				c.c.medium.Add(1)
			}
		}
		if c.cfg.Committed != nil {
			if b, err := a.MarshalJSON(); err == nil {
				c.cfg.Committed(a.ID, a.Action, b)
			}
		}
	}
	return nil
}

// applyDrops forgets the engines of revoked partitions.
func (c *Correlator) applyDrops() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p := range c.drop {
		delete(c.parts, p)
	}
	clear(c.drop)
}

// newPart makes a partition's engine.
func (c *Correlator) newPart() (*part, error) {
	pt := &part{}
	ec := c.cfg.Engine
	n := max(int(c.s.cfg.Topics.Partitions), 1)
	share := func(v int) int { return max(v/n, min(v, minShare)) }
	ec.MaxPairs, ec.MaxChanges, ec.MaxHandshakes = share(ec.MaxPairs), share(ec.MaxChanges), share(ec.MaxHandshakes)
	c.mu.Lock()
	inv := c.inv
	c.mu.Unlock()
	opts := append([]correlate.Option{correlate.WithLogger(c.s.cfg.Logger)}, c.cfg.Options...)
	if inv != nil {
		opts = append(opts, correlate.WithInventory(inv))
	}
	eng, err := correlate.New(ec, correlate.EmitterFunc(func(a correlate.Alert) {
		if !pt.emitting {
			pt.rebuild.Add(1)
			c.c.rebuildAlerts.Add(1)
			return
		}
		pt.mu.Lock()
		pt.pending = append(pt.pending, a)
		pt.mu.Unlock()
	}), opts...)
	if err != nil {
		return nil, fmt.Errorf("new engine: %w", err)
	}
	pt.eng = eng
	return pt, nil
}

// feed hands one record's evidence to a partition's engine (live: read by
// the group, else by a rebuild).
func (c *Correlator) feed(pt *part, r *kgo.Record, live bool) {
	if live {
		c.c.records.Add(1)
	}
	if _, err := c.s.open(r); err != nil {
		if errors.Is(err, ErrForged) {
			c.c.forged.Add(1)
		} else {
			c.c.malformed.Add(1)
		}
		c.warn("evidence record refused", zap.Int32("partition", r.Partition), zap.Int64("offset", r.Offset), zap.Error(err))
		return
	}
	it, err := evidence.DecodeItem(r.Value)
	if err != nil {
		c.c.malformed.Add(1)
		c.warn("evidence record refused", zap.Int32("partition", r.Partition), zap.Int64("offset", r.Offset), zap.Error(err))
		return
	}
	if live {
		c.c.byKind[it.Kind()].Add(1)
	}
	if !it.Arrival.IsZero() {
		pt.eng.Advance(it.Arrival)
	}
	switch it.Kind() {
	case evidence.KindKnock:
		err = pt.eng.AddKnock(*it.Knock)
	case evidence.KindHandshake:
		err = pt.eng.AddHandshake(*it.Handshake)
	case evidence.KindChange:
		err = pt.eng.AddChange(*it.Change)
	}
	if err != nil {
		c.c.rejected.Add(1)
	}
}

// rebuild gives each partition in need (partition -> its first live
// offset) a new engine fed, without emitting, the partition's records from
// the rebuild horizon up to that offset.
func (c *Correlator) rebuild(ctx context.Context, need map[int32]int64) error {
	start := time.Now()
	since := start.Add(-c.horizon())
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	offs, err := c.adm.ListOffsetsAfterMilli(lctx, since.UnixMilli(), c.topic)
	cancel()
	if err != nil {
		return fmt.Errorf("find the rebuild start of %s: %w", c.topic, err)
	}
	parts := map[int32]*part{}
	from := map[int32]kgo.Offset{}
	upto := map[int32]int64{}
	for p, live := range need {
		pt, err := c.newPart()
		if err != nil {
			return err
		}
		parts[p] = pt
		o, ok := offs.Lookup(c.topic, p)
		if !ok || o.Err != nil || o.Offset >= live {
			continue
		}
		from[p] = kgo.NewOffset().At(o.Offset)
		upto[p] = live
	}
	var n uint64
	if len(from) > 0 {
		c.reader.AddConsumePartitions(map[string]map[int32]kgo.Offset{c.topic: from})
		ps := make([]int32, 0, len(from))
		for p := range from {
			ps = append(ps, p)
		}
		defer c.reader.RemoveConsumePartitions(map[string][]int32{c.topic: ps})
		last := time.Now()
		for len(upto) > 0 {
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			fs := c.reader.PollFetches(pctx)
			cancel()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			progress := false
			fs.EachRecord(func(r *kgo.Record) {
				end, ok := upto[r.Partition]
				if !ok || r.Topic != c.topic || r.Offset >= end {
					return
				}
				progress = true
				c.feed(parts[r.Partition], r, false)
				n++
				if r.Offset+1 >= end {
					delete(upto, r.Partition)
				}
			})
			if progress {
				last = time.Now()
			} else if time.Since(last) > 15*time.Second {
				// The records before the live offset are gone (deleted by
				// retention meanwhile): rebuild from what was read.
				c.c.rebuildStalls.Add(1)
				c.log.Warn("rebuild stopped early: records before the committed offset could not be read", zap.Int("partitions", len(upto)))
				break
			}
		}
	}
	c.mu.Lock()
	for p, pt := range parts {
		pt.emitting = true
		pt.next = need[p]
		c.parts[p] = pt
	}
	c.mu.Unlock()
	d := time.Since(start)
	c.c.rebuilds.Add(uint64(len(need)))
	c.c.rebuildRecords.Add(n)
	c.c.rebuildNanos.Add(uint64(d))
	var recomputed uint64
	for _, pt := range parts {
		recomputed += pt.rebuild.Load()
	}
	c.log.Info("partitions rebuilt", zap.Int("partitions", len(need)), zap.Uint64("records", n),
		zap.Uint64("alerts_already_committed", recomputed), zap.Duration("duration", d))
	return nil
}

// warn logs at most once a second (the counters have every case).
func (c *Correlator) warn(msg string, fields ...zap.Field) {
	now := time.Now().Unix()
	if last := c.c.lastWarn.Load(); now-last < 1 || !c.c.lastWarn.CompareAndSwap(last, now) {
		return
	}
	c.log.Warn(msg, fields...)
}

// CorrelatorStats are a correlator's counters and state.
type CorrelatorStats struct {
	Partitions                int
	Records                   uint64
	ByKind                    map[string]uint64
	Forged, Malformed         uint64
	Rejected                  uint64
	Rebuilds, RebuildRecords  uint64
	RebuildAlerts             uint64 // alerts recomputed by rebuilds, not emitted again
	RebuildSeconds            float64
	RebuildStalls             uint64
	Commits, Aborts           uint64
	Alerts, High, Medium      uint64
	Upgrades, ProduceFailures uint64
	// Pairs, Changes and Handshakes are the engines' state, summed.
	Pairs, Changes, Handshakes int
}

// Stats snapshots the counters and the engines' sizes.
func (c *Correlator) Stats() CorrelatorStats {
	st := CorrelatorStats{ByKind: map[string]uint64{}, Records: c.c.records.Load(), Forged: c.c.forged.Load(),
		Malformed: c.c.malformed.Load(), Rejected: c.c.rejected.Load(), Rebuilds: c.c.rebuilds.Load(),
		RebuildRecords: c.c.rebuildRecords.Load(), RebuildAlerts: c.c.rebuildAlerts.Load(),
		RebuildSeconds: time.Duration(c.c.rebuildNanos.Load()).Seconds(), RebuildStalls: c.c.rebuildStalls.Load(),
		Commits: c.c.commits.Load(), Aborts: c.c.aborts.Load(), Alerts: c.c.alerts.Load(), High: c.c.high.Load(),
		Medium: c.c.medium.Load(), Upgrades: c.c.upg.Load(), ProduceFailures: c.c.produceErrs.Load()}
	for _, k := range evidence.Kinds {
		st.ByKind[k.String()] = c.c.byKind[k].Load()
	}
	c.mu.Lock()
	engines := make([]*correlate.Engine, 0, len(c.parts))
	for _, p := range c.parts {
		engines = append(engines, p.eng)
	}
	st.Partitions = len(c.parts)
	c.mu.Unlock()
	for _, e := range engines {
		es := e.Stats()
		st.Pairs += es.Pairs
		st.Changes += es.Changes
		st.Handshakes += es.Handshakes
	}
	return st
}
