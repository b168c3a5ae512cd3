package scaleout

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// FlagTarget is where other sensors' flags go: the XDP program
// (*loader.Sensor; the Go twin and the replayer have the same methods).
type FlagTarget interface {
	SetRemoteFlag(src, dst netip.Addr, until time.Time) error
	PruneRequests(now time.Time) (flags, samples int, err error)
}

// RemoteFlags keeps the program's table of other sensors' flags
// (flags_in, sensor.Config.RemoteFlags entries) within its size, choosing
// what goes when it is full.
//
// Attack: anyone can make a tap raise flags (spoofed knocks: three SYNs
// and three RSTs per flag), so a flood of flags on the flags topic is
// cheap. A table that kept the first flags would be filled once and then
// refuse the real knock's. This one keeps the flags that live longest: a
// full table gives up the flag that expires first, so a flag is lost only
// when more flags than the table holds arrive after it within its
// lifetime (at the defaults, 14,336 flags in flag_ttl, 40 knocks a second
// for six minutes); until then no flood evicts it (TestRemoteFlagsFlood).
// Every eviction is counted (the bound hit), and docs/SCALE-OUT.md sizes
// remote_flags for the flood a deployment must survive. A flag record
// claiming to expire later than a real flag could (a forged or broken
// one) is cut to maxTTL, so it cannot outrank the real ones.
//
// The program's table is a plain hash map that refuses inserts when
// full; an evicted flag is first expired in place (its expiry moved to
// the past: the program stops using it at once) and removed by the next
// PruneRequests, which runs before the map could fill: an eighth of the
// table is kept for flags expired in place.
type RemoteFlags struct {
	mu     sync.Mutex
	target FlagTarget
	index  map[flagKey]*flagEntry
	heap   flagHeap // by expiry, the first to go on top
	size   int      // the program's table size
	live   int      // the most flags kept (size minus the reserve)
	stale  int      // map entries expired in place, no longer indexed
	maxTTL time.Duration

	c flagCounters
}

type flagKey struct{ src, dst netip.Addr }

type flagEntry struct {
	key   flagKey
	until time.Time
	i     int // heap index
}

// flagHeap is a min-heap of entries by expiry.
type flagHeap []*flagEntry

func (h flagHeap) Len() int           { return len(h) }
func (h flagHeap) Less(i, j int) bool { return h[i].until.Before(h[j].until) }
func (h flagHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].i = i; h[j].i = j }
func (h *flagHeap) Push(x any)        { e := x.(*flagEntry); e.i = len(*h); *h = append(*h, e) }
func (h *flagHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

type flagCounters struct {
	set, updated, evicted, refused, clamped, expired, prunes, errors atomic.Uint64
}

// NewRemoteFlags keeps target's table of size entries (sensor.Config
// RemoteFlags). maxTTL bounds how far ahead a flag may expire (this
// sensor's flag_ttl plus the clock skew between sensors).
func NewRemoteFlags(target FlagTarget, size int, maxTTL time.Duration) *RemoteFlags {
	size = max(size, 1)
	return &RemoteFlags{target: target, index: map[flagKey]*flagEntry{}, size: size,
		live: max(size-size/8, 1), maxTTL: maxTTL}
}

// ErrFlagRefused is a flag that could not be placed (the table is full of
// flags that expire later) or that the program's table refused.
var ErrFlagRefused = errors.New("remote flag not placed")

// Set makes the program watch (src, dst) until until (now is the clock).
// A flag already expired is ignored; one expiring later than now + maxTTL
// is clamped.
func (r *RemoteFlags) Set(src, dst netip.Addr, until, now time.Time) error {
	k := flagKey{src.Unmap().WithZone(""), dst.Unmap().WithZone("")}
	if !until.After(now) {
		r.c.expired.Add(1)
		return nil
	}
	if lim := now.Add(r.maxTTL); until.After(lim) {
		until = lim
		r.c.clamped.Add(1)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.index[k]; e != nil {
		if !until.After(e.until) {
			return nil // no news
		}
		if err := r.target.SetRemoteFlag(k.src, k.dst, until); err != nil {
			r.c.errors.Add(1)
			return fmt.Errorf("set remote flag: %w", err)
		}
		e.until = until
		heap.Fix(&r.heap, e.i)
		r.c.updated.Add(1)
		return nil
	}
	for len(r.heap) >= r.live {
		first := r.heap[0]
		if first.until.After(now) {
			if !until.After(first.until) {
				r.c.evicted.Add(1) // the newcomer is the one to go
				return ErrFlagRefused
			}
			// Evict a live flag: expire it in place.
			if err := r.target.SetRemoteFlag(first.key.src, first.key.dst, now.Add(-time.Millisecond)); err != nil {
				r.c.errors.Add(1)
				return fmt.Errorf("evict remote flag: %w", err)
			}
			r.c.evicted.Add(1)
		}
		heap.Pop(&r.heap)
		delete(r.index, first.key)
		r.stale++ // its key stays in the map until pruned
	}
	if len(r.heap)+r.stale >= r.size {
		if err := r.pruneLocked(now); err != nil {
			return err
		}
	}
	err := r.target.SetRemoteFlag(k.src, k.dst, until)
	if err != nil {
		// A table fuller than we know (a pinned map from a previous run):
		// prune and try once more.
		if perr := r.pruneLocked(now); perr == nil {
			err = r.target.SetRemoteFlag(k.src, k.dst, until)
		}
	}
	if err != nil {
		r.c.refused.Add(1)
		return fmt.Errorf("%w: %w", ErrFlagRefused, err)
	}
	e := &flagEntry{key: k, until: until}
	heap.Push(&r.heap, e)
	r.index[k] = e
	r.c.set.Add(1)
	return nil
}

// Maintain removes expired flags from the program's table (and from the
// index). Run it every few seconds.
func (r *RemoteFlags) Maintain(now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pruneLocked(now)
}

func (r *RemoteFlags) pruneLocked(now time.Time) error {
	r.c.prunes.Add(1)
	if _, _, err := r.target.PruneRequests(now); err != nil {
		r.c.errors.Add(1)
		return fmt.Errorf("prune remote flags: %w", err)
	}
	r.stale = 0
	for len(r.heap) > 0 && !r.heap[0].until.After(now) {
		e := heap.Pop(&r.heap).(*flagEntry)
		delete(r.index, e.key)
	}
	return nil
}

// Has reports whether (src, dst) holds a live flag at now.
func (r *RemoteFlags) Has(src, dst netip.Addr, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.index[flagKey{src.Unmap().WithZone(""), dst.Unmap().WithZone("")}]
	return e != nil && e.until.After(now)
}

// RemoteFlagStats are a RemoteFlags table's counters.
type RemoteFlagStats struct {
	Capacity int
	InUse    int
	// Set: new flags placed; Updated: an expiry moved; Evicted: flags
	// given up because the table was full of flags that live longer (the
	// bound hit); Refused: flags the program's table would not take;
	// Clamped: expiries cut to maxTTL; Expired: flags already over when
	// they arrived.
	Set, Updated, Evicted, Refused, Clamped, Expired, Prunes, Errors uint64
}

// Stats snapshots the counters.
func (r *RemoteFlags) Stats() RemoteFlagStats {
	r.mu.Lock()
	inUse := len(r.heap) + r.stale
	r.mu.Unlock()
	return RemoteFlagStats{Capacity: r.size, InUse: inUse, Set: r.c.set.Load(), Updated: r.c.updated.Load(),
		Evicted: r.c.evicted.Load(), Refused: r.c.refused.Load(), Clamped: r.c.clamped.Load(),
		Expired: r.c.expired.Load(), Prunes: r.c.prunes.Load(), Errors: r.c.errors.Load()}
}

// FlagSubscriber applies the other sensors' flags from the flags topic to
// a RemoteFlags table. Every sensor reads every partition (no group): a
// flag may be needed on any tap.
type FlagSubscriber struct {
	s     *session
	cl    *kgo.Client
	table *RemoteFlags
	log   *zap.Logger
	now   func() time.Time

	cancel context.CancelFunc
	done   chan struct{}

	received, applied, own, forged, malformed, lastWarn atomic.Uint64
}

// Subscribe starts a subscriber on producer's connection settings: it
// reads the flags topic from the flags raised within the table's maxTTL
// and applies those of other processes.
func (p *Producer) Subscribe(table *RemoteFlags) (*FlagSubscriber, error) {
	from := time.Now().Add(-table.maxTTL)
	cl, err := p.s.client(
		kgo.ConsumeTopics(p.s.cfg.Topics.Flags),
		kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(from.UnixMilli())),
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	if err != nil {
		return nil, fmt.Errorf("subscribe to %s: %w", p.s.cfg.Topics.Flags, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &FlagSubscriber{s: p.s, cl: cl, table: table, log: p.s.cfg.Logger.Named("scaleout.flags"), now: time.Now,
		cancel: cancel, done: make(chan struct{})}
	go f.run(ctx)
	return f, nil
}

func (f *FlagSubscriber) run(ctx context.Context) {
	defer close(f.done)
	maint := time.NewTicker(5 * time.Second)
	defer maint.Stop()
	for {
		select {
		case <-maint.C:
			if err := f.table.Maintain(f.now()); err != nil {
				f.log.Warn("prune remote flags", zap.Error(err))
			}
		default:
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := f.cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				f.log.Warn("read flags", zap.String("topic", t), zap.Int32("partition", p), zap.Error(err))
			}
		})
		fs.EachRecord(f.apply)
	}
}

// apply takes one record of the flags topic.
func (f *FlagSubscriber) apply(r *kgo.Record) {
	f.received.Add(1)
	if _, err := f.s.open(r); err != nil {
		if errors.Is(err, ErrForged) {
			f.forged.Add(1)
		} else {
			f.malformed.Add(1)
		}
		f.warn("flag record refused", r, err)
		return
	}
	fl, err := decodeFlag(r.Value)
	if err != nil {
		f.malformed.Add(1)
		f.warn("flag record refused", r, err)
		return
	}
	if fl.Instance == f.s.instance {
		f.own.Add(1)
		return
	}
	if err := f.table.Set(fl.Src, fl.Dst, fl.Until, f.now()); err == nil {
		f.applied.Add(1)
	}
}

// warn logs a refused record at most once a minute (the counters have
// every one).
func (f *FlagSubscriber) warn(msg string, r *kgo.Record, err error) {
	now := uint64(time.Now().Unix())
	if last := f.lastWarn.Load(); now-last < 60 || !f.lastWarn.CompareAndSwap(last, now) {
		return
	}
	f.log.Warn(msg, zap.String("topic", r.Topic), zap.Int32("partition", r.Partition), zap.Int64("offset", r.Offset), zap.Error(err))
}

// Close stops the subscriber.
func (f *FlagSubscriber) Close() {
	f.cancel()
	<-f.done
	f.cl.Close()
}

// FlagSubscriberStats are the subscriber's counters.
type FlagSubscriberStats struct {
	Received, Applied, Own, Forged, Malformed uint64
}

// Stats snapshots the counters.
func (f *FlagSubscriber) Stats() FlagSubscriberStats {
	return FlagSubscriberStats{Received: f.received.Load(), Applied: f.applied.Load(), Own: f.own.Load(),
		Forged: f.forged.Load(), Malformed: f.malformed.Load()}
}
