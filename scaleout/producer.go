package scaleout

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// ErrBusy wraps the errors of evidence refused because the brokers have
// not acknowledged what came before it for BusyAfter, or the producer's
// buffer is full: it also wraps intake.ErrBusy, so a listener answers 429
// (Beats withholds its ACK) and the sender offers it again later.
var ErrBusy = fmt.Errorf("kafka brokers behind: %w", intake.ErrBusy)

// failMemory is how long a failed batch keeps failing the Syncs that
// cover it: its appender's own Sync follows its Append within
// milliseconds, so it sees the failure; other callers' Syncs within this
// time see it too and answer "not stored" (their senders resend, and the
// engine recognises the repeat).
const failMemory = time.Minute

// Producer is a node's producer of evidence and flags. It implements the
// pipeline's evidence log (Append, Sync) on the evidence topic, and Busy
// for the pipeline's refusal of events while the brokers do not answer.
// Its methods are safe for concurrent use.
type Producer struct {
	s   *session
	cl  *kgo.Client
	adm *kadm.Client
	log *zap.Logger

	resolve atomic.Pointer[func(string) []netip.Addr]
	parts   atomic.Int32 // the evidence topic's partitions (broadcasts)

	mu      sync.Mutex
	batches []*batch // pending, and failed ones for failMemory

	stop chan struct{}
	wg   sync.WaitGroup
	c    producerCounters
}

// batch is one Append: its records' acknowledgements.
type batch struct {
	at     time.Time
	left   atomic.Int64
	done   chan struct{}
	failAt time.Time // guarded by Producer.mu once done
	mu     sync.Mutex
	err    error
}

func (b *batch) finish(err error) {
	if err != nil {
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	}
	if b.left.Add(-1) == 0 {
		close(b.done)
	}
}

func (b *batch) failure() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

type producerCounters struct {
	produced  [evidence.KindChange + 1]atomic.Uint64 // evidence records by kind
	items     atomic.Uint64
	acked     atomic.Uint64
	failed    atomic.Uint64
	broadcast atomic.Uint64 // changes sent to every partition (no address)
	busy      atomic.Uint64 // Busy refusals
	full      atomic.Uint64 // refused: buffer full
	syncFail  atomic.Uint64 // Syncs that timed out or saw a failure
	flags     atomic.Uint64 // flags published
	flagFail  atomic.Uint64
}

// NewProducer connects a producer. cfg must have passed Validate after
// Defaults.
func NewProducer(ctx context.Context, cfg Config) (*Producer, error) {
	s, err := newSession(cfg)
	if err != nil {
		return nil, err
	}
	return s.newProducer(ctx)
}

func (s *session) newProducer(ctx context.Context) (*Producer, error) {
	cl, err := s.client(
		kgo.RecordPartitioner(partitioner()),
		kgo.MaxBufferedBytes(s.cfg.MaxBufferedBytes),
		kgo.ProducerLinger(2*time.Millisecond),
		kgo.ProducerBatchCompression(kgo.Lz4Compression(), kgo.NoCompression()),
		kgo.UnknownTopicRetries(-1),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to kafka: %w", err)
	}
	p := &Producer{s: s, cl: cl, adm: kadm.NewClient(cl), log: s.cfg.Logger.Named("scaleout.producer"), stop: make(chan struct{})}
	if err := p.refreshPartitions(ctx); err != nil {
		cl.Close()
		return nil, err
	}
	p.wg.Add(1)
	go p.watchPartitions()
	return p, nil
}

// refreshPartitions reads the evidence topic's partition count.
func (p *Producer) refreshPartitions(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	topic := p.s.cfg.Topics.Evidence
	td, err := p.adm.ListTopics(ctx, topic)
	if err != nil {
		return fmt.Errorf("read topic %s: %w", topic, err)
	}
	t, ok := td[topic]
	if !ok || t.Err != nil {
		e := errors.New("not found")
		if ok {
			e = t.Err
		}
		return fmt.Errorf("topic %s: %w", topic, e)
	}
	p.parts.Store(int32(len(t.Partitions)))
	return nil
}

func (p *Producer) watchPartitions() {
	defer p.wg.Done()
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			_ = p.refreshPartitions(context.Background())
		}
	}
}

// SetResolver sets how a change's host name becomes addresses (the
// inventory), to key it by the host's addresses; nil: only the addresses
// the event carries.
func (p *Producer) SetResolver(fn func(host string) []netip.Addr) {
	if fn == nil {
		p.resolve.Store(nil)
		return
	}
	p.resolve.Store(&fn)
}

// Append produces items to the evidence topic, keyed by destination host.
// It does not wait for the brokers (Sync does). When the producer's buffer
// is full nothing of the batch is produced and the error wraps ErrBusy.
func (p *Producer) Append(_ context.Context, items []evidence.Item) error {
	if len(items) == 0 {
		return nil
	}
	var resolve func(string) []netip.Addr
	if r := p.resolve.Load(); r != nil {
		resolve = *r
	}
	n := int(p.parts.Load())
	var recs []*kgo.Record
	for i := range items {
		it := &items[i]
		rs, broadcast, err := evidenceRecords(p.s.cfg.Topics.Evidence, it, resolve, n)
		if err != nil {
			continue // no evidence in it: the pipeline validated before
		}
		if broadcast {
			p.c.broadcast.Add(1)
		}
		p.c.produced[it.Kind()].Add(uint64(len(rs)))
		recs = append(recs, rs...)
	}
	p.c.items.Add(uint64(len(items)))
	if len(recs) == 0 {
		return nil
	}
	if limit := int64(p.s.cfg.MaxBufferedBytes); p.cl.BufferedProduceBytes() > limit*7/8 {
		p.c.full.Add(uint64(len(recs)))
		return fmt.Errorf("append evidence: %d bytes wait for the brokers: %w", p.cl.BufferedProduceBytes(), ErrBusy)
	}
	b := &batch{at: time.Now(), done: make(chan struct{})}
	b.left.Store(int64(len(recs)))
	p.mu.Lock()
	p.batches = append(p.batches, b)
	p.mu.Unlock()
	for _, r := range recs {
		p.s.seal(r)
		p.cl.TryProduce(context.Background(), r, func(_ *kgo.Record, err error) {
			if err != nil {
				p.c.failed.Add(1)
				if errors.Is(err, kgo.ErrMaxBuffered) {
					p.c.full.Add(1)
					err = fmt.Errorf("%w: %w", ErrBusy, err)
				}
			} else {
				p.c.acked.Add(1)
			}
			b.finish(err)
		})
	}
	return nil
}

// Sync returns once every batch appended before it was acknowledged by the
// brokers (acks=all, idempotent), or with an error when one of them
// failed or SyncTimeout passed first (the records stay buffered and are
// delivered when the brokers answer again; the sender's retry is a
// duplicate the engine recognises).
func (p *Producer) Sync(ctx context.Context) error {
	p.mu.Lock()
	pending := append([]*batch(nil), p.batches...)
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, p.s.cfg.SyncTimeout)
	defer cancel()
	var failed error
	for _, b := range pending {
		select {
		case <-b.done:
		case <-ctx.Done():
			p.c.syncFail.Add(1)
			return fmt.Errorf("sync evidence: not acknowledged by the kafka brokers within %v: %w", p.s.cfg.SyncTimeout, ErrBusy)
		}
		if err := b.failure(); err != nil && failed == nil {
			failed = err
		}
	}
	p.prune()
	if failed != nil {
		p.c.syncFail.Add(1)
		return fmt.Errorf("sync evidence: %w", failed)
	}
	return nil
}

// prune drops finished batches: successes at once, failures after
// failMemory.
func (p *Producer) prune() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	kept := p.batches[:0]
	for _, b := range p.batches {
		if b.isDone() {
			if b.failure() == nil {
				continue
			}
			if b.failAt.IsZero() {
				b.failAt = now
			}
			if now.Sub(b.failAt) >= failMemory {
				continue
			}
		}
		kept = append(kept, b)
	}
	clear(p.batches[len(kept):])
	p.batches = kept
}

func (b *batch) isDone() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// oldestPending is when the oldest batch not yet acknowledged was
// appended (zero: none).
func (p *Producer) oldestPending() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.batches {
		if !b.isDone() {
			return b.at
		}
	}
	return time.Time{}
}

// Busy says why events should be refused now (nil: take them): the oldest
// unacknowledged evidence has waited BusyAfter for the brokers, or the
// buffer is nearly full.
func (p *Producer) Busy() error {
	p.prune()
	if oldest := p.oldestPending(); !oldest.IsZero() {
		if waited := time.Since(oldest); waited >= p.s.cfg.BusyAfter {
			p.c.busy.Add(1)
			return fmt.Errorf("evidence has waited %v for the kafka brokers: %w", waited.Round(time.Millisecond), ErrBusy)
		}
	}
	if limit := int64(p.s.cfg.MaxBufferedBytes); p.cl.BufferedProduceBytes() > limit*3/4 {
		p.c.busy.Add(1)
		return fmt.Errorf("%d bytes wait for the kafka brokers: %w", p.cl.BufferedProduceBytes(), ErrBusy)
	}
	return nil
}

// PublishFlag publishes a KNOCK's flag: the pair and its expiry (the flag
// time plus ttl, the sensor's flag_ttl). It does not wait; failures are
// counted (the knock itself is evidence and goes through Append).
func (p *Producer) PublishFlag(k *sensor.Knock, ttl time.Duration) {
	ft := k.FlagTime
	if ft.IsZero() {
		for _, t := range k.Touches {
			if t.Time.After(ft) {
				ft = t.Time
			}
		}
	}
	f := flag{Src: k.Src, Dst: k.Dst, FlagTime: ft, Until: ft.Add(ttl), Epoch: k.Epoch, Instance: p.s.instance}
	r := &kgo.Record{Topic: p.s.cfg.Topics.Flags, Key: hostKey(k.Dst), Value: appendFlag(nil, &f), Timestamp: time.Now()}
	p.s.seal(r)
	p.cl.TryProduce(context.Background(), r, func(_ *kgo.Record, err error) {
		if err != nil {
			p.c.flagFail.Add(1)
			return
		}
		p.c.flags.Add(1)
	})
}

// Close waits up to timeout for what is buffered, then disconnects.
func (p *Producer) Close(timeout time.Duration) error {
	close(p.stop)
	p.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := p.cl.Flush(ctx)
	left := p.cl.BufferedProduceRecords()
	p.cl.Close()
	if err != nil {
		return fmt.Errorf("close kafka producer: %d records not acknowledged: %w", left, err)
	}
	return nil
}

// ProducerStats are the producer's counters.
type ProducerStats struct {
	Produced        map[string]uint64 // evidence records by kind
	Items           uint64
	Acked, Failed   uint64
	Broadcast       uint64
	Busy, Full      uint64
	SyncFailures    uint64
	FlagsPublished  uint64
	FlagsFailed     uint64
	BufferedRecords int64
	BufferedBytes   int64
	MaxBytes        int64
	OldestPending   time.Duration
}

// Stats snapshots the counters.
func (p *Producer) Stats() ProducerStats {
	st := ProducerStats{Produced: map[string]uint64{}, Items: p.c.items.Load(), Acked: p.c.acked.Load(),
		Failed: p.c.failed.Load(), Broadcast: p.c.broadcast.Load(), Busy: p.c.busy.Load(), Full: p.c.full.Load(),
		SyncFailures: p.c.syncFail.Load(), FlagsPublished: p.c.flags.Load(), FlagsFailed: p.c.flagFail.Load(),
		BufferedRecords: p.cl.BufferedProduceRecords(), BufferedBytes: p.cl.BufferedProduceBytes(),
		MaxBytes: int64(p.s.cfg.MaxBufferedBytes)}
	for _, k := range evidence.Kinds {
		st.Produced[k.String()] = p.c.produced[k].Load()
	}
	if oldest := p.oldestPending(); !oldest.IsZero() {
		st.OldestPending = time.Since(oldest)
	}
	return st
}
