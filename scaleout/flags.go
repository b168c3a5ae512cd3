package scaleout

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
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

// FlagWays is how many flags share a bucket of a RemoteFlags table.
const FlagWays = 4

// RemoteFlags keeps the program's table of other sensors' flags
// (flags_in, sensor.Config.RemoteFlags entries) within its size, choosing
// what goes when it is full.
//
// Attack: anyone can make a tap raise flags (spoofed knocks: three SYNs
// and three RSTs per flag), so a flood of flags on the flags topic is
// cheap. A table that kept the first flags would be filled once and then
// refuse the real knock's; one that evicted the oldest would lose the
// real flag to any flood larger than the table within a flag's lifetime.
// Instead flags live in buckets of FlagWays chosen by a keyed hash of the
// pair under a random per-process seed (an attacker cannot aim flags at
// the real one's bucket), and a full bucket gives up the flag that
// expires first. A flag is lost only when FlagWays newer flags land in its
// bucket before it expires: with F flood flags per flag lifetime in a
// table of C entries, Poisson(F·FlagWays/C) ≥ FlagWays (about 2% at
// F = C/2, 0.2% at F = C/4: TestRemoteFlagsFlood holds the bound;
// docs/SCALE-OUT.md sizes remote_flags from it). Evictions are counted.
//
// The program's table is a plain hash map that refuses inserts when
// full; an evicted flag is first expired in place (its expiry moved to
// the past: the program stops using it at once) and removed by the next
// PruneRequests, which runs before the map could fill.
type RemoteFlags struct {
	mu      sync.Mutex
	target  FlagTarget
	seed    maphash.Seed
	slots   []flagSlot // buckets of FlagWays
	buckets int
	size    int // the program's table size
	used    int // slots holding a flag (possibly expired, still in the map)
	stale   int // map entries expired in place, not in slots
	maxTTL  time.Duration

	c flagCounters
}

type flagSlot struct {
	src, dst netip.Addr
	until    time.Time
	used     bool
}

type flagCounters struct {
	set, updated, evicted, refused, clamped, expired, prunes, errors atomic.Uint64
}

// NewRemoteFlags keeps target's table of size entries (sensor.Config
// RemoteFlags). maxTTL bounds how far ahead a flag may expire (this
// sensor's flag_ttl plus the clock skew between sensors): a record
// claiming more is clamped, so a forged or broken flag cannot hold a slot
// for longer than a real one could.
func NewRemoteFlags(target FlagTarget, size int, maxTTL time.Duration) *RemoteFlags {
	size = max(size, 1)
	live := size - size/8 // a reserve for flags expired in place
	nb := max(live/FlagWays, 1)
	return &RemoteFlags{target: target, seed: maphash.MakeSeed(), slots: make([]flagSlot, nb*FlagWays),
		buckets: nb, size: size, maxTTL: maxTTL}
}

func (r *RemoteFlags) bucket(src, dst netip.Addr) []flagSlot {
	var h maphash.Hash
	h.SetSeed(r.seed)
	s, d := src.As16(), dst.As16()
	h.Write(s[:])
	h.Write(d[:])
	b := int(h.Sum64() % uint64(r.buckets))
	return r.slots[b*FlagWays : (b+1)*FlagWays]
}

// ErrFlagRefused is a flag that could not be placed (its bucket holds only
// flags that expire later) or that the program's table refused.
var ErrFlagRefused = errors.New("remote flag not placed")

// Set makes the program watch (src, dst) until until (now is the clock).
// A flag already expired is ignored; one expiring later than now + maxTTL
// is clamped.
func (r *RemoteFlags) Set(src, dst netip.Addr, until, now time.Time) error {
	src, dst = src.Unmap().WithZone(""), dst.Unmap().WithZone("")
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
	b := r.bucket(src, dst)
	for i := range b {
		s := &b[i]
		if s.used && s.src == src && s.dst == dst {
			if !until.After(s.until) {
				return nil // no news
			}
			if err := r.target.SetRemoteFlag(src, dst, until); err != nil {
				r.c.errors.Add(1)
				return fmt.Errorf("set remote flag: %w", err)
			}
			s.until = until
			r.c.updated.Add(1)
			return nil
		}
	}
	// A free slot, else an expired one, else the one expiring first.
	victim := -1
	for i := range b {
		if !b[i].used {
			victim = i
			break
		}
		if victim < 0 || b[i].until.Before(b[victim].until) {
			victim = i
		}
	}
	v := &b[victim]
	if v.used {
		if v.until.After(now) {
			if !until.After(v.until) {
				r.c.evicted.Add(1) // the newcomer is the one to go
				return ErrFlagRefused
			}
			// Evict a live flag: expire it in place.
			if err := r.target.SetRemoteFlag(v.src, v.dst, now.Add(-time.Millisecond)); err != nil {
				r.c.errors.Add(1)
				return fmt.Errorf("evict remote flag: %w", err)
			}
			r.c.evicted.Add(1)
		}
		r.stale++ // its key stays in the map until pruned
		r.used--
		v.used = false
	}
	if r.used+r.stale >= r.size {
		if err := r.pruneLocked(now); err != nil {
			return err
		}
	}
	err := r.target.SetRemoteFlag(src, dst, until)
	if err != nil {
		// A table fuller than we know (a pinned map from a previous run):
		// prune and try once more.
		if perr := r.pruneLocked(now); perr == nil {
			err = r.target.SetRemoteFlag(src, dst, until)
		}
	}
	if err != nil {
		r.c.refused.Add(1)
		return fmt.Errorf("%w: %w", ErrFlagRefused, err)
	}
	*v = flagSlot{src: src, dst: dst, until: until, used: true}
	r.used++
	r.c.set.Add(1)
	return nil
}

// Maintain removes expired flags from the program's table (and frees
// their slots). Run it every few seconds.
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
	for i := range r.slots {
		s := &r.slots[i]
		if s.used && !s.until.After(now) {
			s.used = false
			r.used--
		}
	}
	return nil
}

// Has reports whether (src, dst) holds a live flag at now (tests).
func (r *RemoteFlags) Has(src, dst netip.Addr, now time.Time) bool {
	src, dst = src.Unmap().WithZone(""), dst.Unmap().WithZone("")
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.bucket(src, dst) {
		if s.used && s.src == src && s.dst == dst && s.until.After(now) {
			return true
		}
	}
	return false
}

// RemoteFlagStats are a RemoteFlags table's counters.
type RemoteFlagStats struct {
	Capacity int
	InUse    int
	// Set: new flags placed; Updated: an expiry moved; Evicted: flags
	// that lost their bucket to newer ones (the bound of the table hit);
	// Refused: flags the program's table would not take; Clamped: expiries
	// cut to maxTTL; Expired: flags already over when they arrived.
	Set, Updated, Evicted, Refused, Clamped, Expired, Prunes, Errors uint64
}

// Stats snapshots the counters.
func (r *RemoteFlags) Stats() RemoteFlagStats {
	r.mu.Lock()
	inUse := r.used
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
