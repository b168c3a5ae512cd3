package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/winevents"
)

// DefaultMaxUnstored is Config.MaxUnstored's default: the bytes of
// evaluated but not yet durable changes the pipeline keeps to store again.
const DefaultMaxUnstored = 64 << 20

// retryStoreEvery is how often evidence waiting to be stored again is
// tried while nothing else (a listener's Sync) tries it.
const retryStoreEvery = time.Second

// unstored keeps the changes a re-send cannot bring back until the
// evidence log has made them durable.
//
// The decoder remembers every record id it processed, so when an event's
// first delivery is not acknowledged (the log refused the append: a full
// disk; or the fsync after it failed, which may lose what was appended) the
// forwarder's re-send decodes to nothing: the record is a duplicate. Its
// changes exist only here then. They are kept from the moment they were
// evaluated until a Sync made them durable (the window), and appended again
// when their append failed or a Sync failed after it (retry), before any
// later Sync may succeed: so a Sync that returns nil, after which the
// listeners acknowledge, covers them, and the re-sent duplicate is
// acknowledged only once the first delivery's changes are durable.
//
// Changes whose records have no record id are not kept: the decoder cannot
// recognise their re-send, which brings them again.
type unstored struct {
	// syncMu serialises Sync (the log's fsyncs are serial anyway), so
	// that a failed sync has moved its window to retry before the next
	// sync starts: a later fsync that succeeds cannot cover changes that
	// were in the failed one without appending them again.
	syncMu sync.Mutex

	mu sync.Mutex
	// gen counts failed syncs: a change appended while one failed may be
	// in what it lost, and is appended again.
	gen uint64
	// window holds the kept changes appended since the last good Sync, in
	// order; window[i] is the base+i-th change appended.
	window []evidence.Item
	base   uint64
	// retry holds the kept changes to append again, in order, before any
	// later change.
	retry []evidence.Item
	bytes int // estimated bytes of window and retry
	// notBefore: until then, a change that arrives while retry is not empty
	// queues behind it without a new append (after a failed append, the
	// next try is at the next Sync or after retryStoreEvery).
	notBefore time.Time
}

// keepable reports whether a change must be kept until durable: the
// record that made the decoder emit it (its own, or the join partner that
// arrived) has a record id, so the decoder will take its re-send for a
// duplicate.
func keepable(c *winevents.ExposureChange) bool {
	return c.Source.RecordID != 0 || (c.Joined != nil && c.Joined.RecordID != 0)
}

// itemBytes estimates what a kept change holds in memory.
func itemBytes(it *evidence.Item) int {
	n := 256
	if c := it.Change; c != nil {
		n += len(c.Host) + len(c.RuleID) + len(c.RuleName) + len(c.Application) + len(c.Service) +
			len(c.ModifyingUser) + len(c.ModifyingApplication) + len(c.Channel) + len(c.Origin) +
			24*len(c.HostIPs) + 4*len(c.Ports.Ranges)
	}
	return n
}

func sizeOf(items []evidence.Item) int {
	n := 0
	for i := range items {
		n += itemBytes(&items[i])
	}
	return n
}

// storeAcked stores the changes of a message the listener acknowledges
// after Sync. keep[i] says items[i] must be kept until durable (keepable).
// A failure is counted and logged and returned wrapping ErrNotStored; the
// kept items then wait in the retry list.
func (p *Pipeline) storeAcked(ctx context.Context, items []evidence.Item, keep []bool) error {
	if p.cfg.Evidence == nil || len(items) == 0 {
		return nil
	}
	var valid, kept []evidence.Item
	for i := range items {
		if items[i].Validate() != nil {
			continue // the engine refuses and counts it
		}
		valid = append(valid, items[i])
		if keep[i] {
			kept = append(kept, items[i])
		}
	}
	if len(valid) == 0 {
		return nil
	}
	u := &p.unstored
	u.mu.Lock()
	batch, retried := valid, 0
	if len(u.retry) > 0 {
		if time.Now().Before(u.notBefore) {
			// Behind the changes waiting to be stored again, in order:
			// not durable now either.
			u.retry = append(u.retry, kept...)
			u.bytes += sizeOf(kept)
			u.mu.Unlock()
			p.counters.notStored.Add(uint64(len(valid)))
			return fmt.Errorf("%w: earlier evidence still waits to be stored", ErrNotStored)
		}
		batch = append(u.retry, valid...)
		retried = len(u.retry)
		u.retry = nil
	}
	gen := u.gen
	u.mu.Unlock()

	err := p.cfg.Evidence.Append(ctx, batch)

	u.mu.Lock()
	defer u.mu.Unlock()
	if err != nil {
		// Back in front of whatever queued meanwhile.
		u.retry = slices.Concat(batch[:retried], kept, u.retry)
		u.bytes += sizeOf(kept)
		u.notBefore = time.Now().Add(retryStoreEvery)
		p.counters.notStored.Add(uint64(len(valid)))
		p.warnStore(err)
		return fmt.Errorf("%w: %w", ErrNotStored, err)
	}
	p.counters.restored.Add(uint64(retried))
	if gen != u.gen {
		// A sync failed while this was appended: it may be in what the
		// failed sync lost. Append it again before the next sync.
		u.retry = slices.Concat(u.retry, batch[:retried], kept)
	} else {
		u.window = slices.Concat(u.window, batch[:retried], kept)
	}
	u.bytes += sizeOf(kept)
	return nil
}

// Sync makes the evidence Handle and AddRecords stored durable, per the
// evidence log's fsync policy (intake.Syncer: listeners call it before
// they acknowledge). Changes waiting to be stored again (a failed append
// or a failed sync before) are appended first, so a nil return covers
// every change evaluated before it. Without an evidence log it returns nil.
func (p *Pipeline) Sync(ctx context.Context) error {
	if p.cfg.Evidence == nil {
		return nil
	}
	u := &p.unstored
	u.syncMu.Lock()
	defer u.syncMu.Unlock()
	u.mu.Lock()
	if len(u.retry) > 0 {
		batch := u.retry
		u.retry = nil
		u.mu.Unlock()
		err := p.cfg.Evidence.Append(ctx, batch)
		u.mu.Lock()
		if err != nil {
			u.retry = append(batch, u.retry...)
			u.notBefore = time.Now().Add(retryStoreEvery)
			u.mu.Unlock()
			p.counters.syncErr.Add(1)
			p.warnStore(err)
			return fmt.Errorf("%w: %w", ErrNotStored, err)
		}
		p.counters.restored.Add(uint64(len(batch)))
		u.window = append(u.window, batch...)
	}
	upto := u.base + uint64(len(u.window))
	u.mu.Unlock()

	err := p.cfg.Evidence.Sync(ctx)

	u.mu.Lock()
	defer u.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil || !errors.Is(err, ctx.Err()) {
			// What the failed sync covered may be lost: append it again.
			u.base += uint64(len(u.window))
			u.retry = slices.Concat(u.window, u.retry)
			u.window = nil
			u.gen++
		}
		p.counters.syncErr.Add(1)
		p.warnStore(err)
		return fmt.Errorf("%w: %w", ErrNotStored, err)
	}
	if n := int(upto - min(upto, u.base)); n > 0 {
		u.bytes -= sizeOf(u.window[:n])
		u.window = slices.Delete(u.window, 0, n)
		u.base = upto
	}
	if len(u.window) == 0 && len(u.retry) == 0 {
		u.bytes = 0
	}
	return nil
}

// unstoredFull reports whether the kept changes are at their bound.
func (p *Pipeline) unstoredFull() bool {
	u := &p.unstored
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.bytes >= p.cfg.MaxUnstored
}

// unstoredStats returns the kept changes waiting for a sync or to be
// stored again, and their estimated bytes.
func (p *Pipeline) unstoredStats() (items, bytes int) {
	u := &p.unstored
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.window) + len(u.retry), u.bytes
}
