package pipeline

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/winevents"
)

// DefaultMaxUnstored is Config.MaxUnstored's default: the bytes of
// evaluated evidence the evidence log refused that the pipeline keeps to
// store again.
const DefaultMaxUnstored = 64 << 20

// retryStoreEvery is how often evidence waiting to be stored again is
// tried while nothing else (a listener's Sync) tries it.
const retryStoreEvery = time.Second

// unstored keeps the evidence the evidence log refused, to append it
// again before any later Sync may succeed.
//
// What the log accepted it keeps until durable itself: evidence.Log keeps
// every batch appended since its last good fsync and writes it again after
// a failed fsync or write (the EvidenceLog contract), so a failed Sync
// needs nothing from here. What it refused (a full disk, a failing disk
// at its in-memory bound) is not in the log, and two kinds of evidence
// would be lost with it:
//
//   - changes whose records have record ids: the decoder remembers every
//     record id it processed, so the forwarder's re-send of the event that
//     was not acknowledged decodes to a duplicate, and its changes exist
//     only here;
//   - sensor records (and AddChange's changes): nobody acknowledges them or
//     sends them again, and a restart that cannot rebuild a knock misses
//     the alert.
//
// Both wait in one list, in the order they were evaluated, and are
// appended before anything newer (appendMu), so a Sync that returns nil,
// after which the listeners acknowledge, covers them. Changes without a
// record id are not kept: the decoder cannot recognise their re-send, which
// brings them again.
type unstored struct {
	// appendMu serialises the pipeline's appends, so that kept evidence
	// goes to the log before anything evaluated after it.
	appendMu sync.Mutex

	mu sync.Mutex
	// retry holds the kept evidence, in order (changed under both locks).
	retry []keptItem
	// bytes estimates retry's memory; unacked is the part of it that
	// nobody acknowledges (sensor records, AddChange), bounded by half of
	// Config.MaxUnstored so that a flood of them cannot take the room of
	// acknowledged changes.
	bytes, unacked int
	// notBefore: until then, evidence that arrives while retry is not
	// empty queues behind it without a new append (after a failed append,
	// the next try is at the next Sync or after retryStoreEvery).
	notBefore time.Time
	// lastErr is why the last append failed (for the errors of what
	// queues behind it).
	lastErr error
}

// keptItem is a piece of evidence waiting to be stored again.
type keptItem struct {
	it      evidence.Item
	bytes   int
	unacked bool
}

// retryItems returns the kept evidence as the log takes it.
func (u *unstored) retryItems() []evidence.Item {
	if len(u.retry) == 0 {
		return nil
	}
	out := make([]evidence.Item, len(u.retry))
	for i := range u.retry {
		out[i] = u.retry[i].it
	}
	return out
}

// keepable reports whether a change must be kept until durable: the
// record that made the decoder emit it (its own, or the join partner that
// arrived) has a record id, so the decoder will take its re-send for a
// duplicate.
func keepable(c *winevents.ExposureChange) bool {
	return c.Source.RecordID != 0 || (c.Joined != nil && c.Joined.RecordID != 0)
}

// itemBytes estimates what a kept item holds in memory.
func itemBytes(it *evidence.Item) int {
	n := 256
	if k := it.Knock; k != nil {
		n += 32 * len(k.Touches)
	}
	if c := it.Change; c != nil {
		n += len(c.Host) + len(c.RuleID) + len(c.RuleName) + len(c.Application) + len(c.Service) +
			len(c.ModifyingUser) + len(c.ModifyingApplication) + len(c.Channel) + len(c.Origin) +
			24*len(c.HostIPs) + 4*len(c.Ports.Ranges)
	}
	return n
}

// storeAcked stores the changes of a message the listener acknowledges
// after Sync. keep[i] says items[i] must be kept until stored (keepable).
// A failure is counted and logged and returned wrapping ErrNotStored; the
// kept items then wait in the retry list.
func (p *Pipeline) storeAcked(ctx context.Context, items []evidence.Item, keep []bool) error {
	return p.storeKept(ctx, items, keep, false)
}

// store appends the valid items to the evidence log (evidence the engine
// will refuse is not stored: the engine counts it): sensor records and
// AddChange's changes, which nobody acknowledges. If the log refuses them
// they are kept and appended again (bounded: past half of MaxUnstored they
// are dropped and counted). A failure is counted and logged (at most once a
// minute) and returned wrapping ErrNotStored.
func (p *Pipeline) store(ctx context.Context, items []evidence.Item) error {
	return p.storeKept(ctx, items, nil, true)
}

// storeKept appends the valid items after the kept ones. keep nil keeps
// every item whose append fails, as evidence nobody acknowledges (unacked).
func (p *Pipeline) storeKept(ctx context.Context, items []evidence.Item, keep []bool, unacked bool) error {
	if p.cfg.Evidence == nil || len(items) == 0 {
		return nil
	}
	var valid, kept []evidence.Item
	for i := range items {
		if items[i].Validate() != nil {
			continue // the engine refuses and counts it
		}
		valid = append(valid, items[i])
		if keep == nil || keep[i] {
			kept = append(kept, items[i])
		}
	}
	if len(valid) == 0 {
		return nil
	}
	u := &p.unstored
	u.appendMu.Lock()
	defer u.appendMu.Unlock()
	u.mu.Lock()
	retried := u.retryItems()
	if len(retried) > 0 && time.Now().Before(u.notBefore) {
		// Behind the evidence waiting to be stored again, in order: not
		// durable now either.
		p.keepLocked(kept, unacked)
		u.mu.Unlock()
		p.counters.notStored.Add(uint64(len(valid)))
		return fmt.Errorf("%w: earlier evidence still waits to be stored (%w)", ErrNotStored, u.lastErr)
	}
	u.mu.Unlock()

	batch := valid
	if len(retried) > 0 {
		batch = slices.Concat(retried, valid)
	}
	err := p.cfg.Evidence.Append(ctx, batch)

	u.mu.Lock()
	defer u.mu.Unlock()
	if err != nil {
		p.keepLocked(kept, unacked)
		u.notBefore, u.lastErr = time.Now().Add(retryStoreEvery), err
		p.counters.notStored.Add(uint64(len(valid)))
		p.warnStore(err)
		return fmt.Errorf("%w: %w", ErrNotStored, err)
	}
	p.restoredLocked(len(retried))
	p.kickSync()
	return nil
}

// keepLocked appends items to the retry list. Unacknowledged evidence is
// kept only up to half of MaxUnstored; past it, it is dropped (the engine
// has it; a restart could not rebuild it), counted and logged.
func (p *Pipeline) keepLocked(items []evidence.Item, unacked bool) {
	u := &p.unstored
	for i := range items {
		n := itemBytes(&items[i])
		if unacked {
			if u.unacked+n > p.cfg.MaxUnstored/2 {
				p.counters.unstoredDropped.Add(uint64(len(items) - i))
				p.warnDropped(len(items) - i)
				return
			}
			u.unacked += n
		}
		u.retry = append(u.retry, keptItem{it: items[i], bytes: n, unacked: unacked})
		u.bytes += n
	}
}

// restoredLocked drops the first n items of the retry list: the log has
// them now.
func (p *Pipeline) restoredLocked(n int) {
	if n == 0 {
		return
	}
	u := &p.unstored
	p.counters.restored.Add(uint64(n))
	for _, k := range u.retry[:n] {
		u.bytes -= k.bytes
		if k.unacked {
			u.unacked -= k.bytes
		}
	}
	u.retry = slices.Delete(u.retry, 0, n)
	if len(u.retry) == 0 {
		u.retry, u.bytes, u.unacked = nil, 0, 0
	}
}

// warnDropped logs (at most once a minute) that sensor records were not
// kept; the counter has all of them.
func (p *Pipeline) warnDropped(n int) {
	p.wmuWarn.Lock()
	defer p.wmuWarn.Unlock()
	if now := time.Now(); now.Sub(p.lastDrop) >= time.Minute {
		p.lastDrop = now
		p.log.Error("evidence log: sensor records waiting to be stored again are at their bound: these are evaluated but not stored, and a restart cannot rebuild them",
			zap.Int(fieldRecords, n), zap.Int("max_bytes", p.cfg.MaxUnstored/2))
	}
}

// warnLedger logs (at most once a minute) a failed ledger write; the
// ledger keeps the marks and writes them again.
func (p *Pipeline) warnLedger(err error, n int) {
	p.wmuWarn.Lock()
	defer p.wmuWarn.Unlock()
	if now := time.Now(); now.Sub(p.lastLedger) >= time.Minute {
		p.lastLedger = now
		p.log.Error("could not record delivered alerts: the ledger keeps them and writes them again; until then a restart may send them again",
			zap.Int(fieldRecords, n), zap.Error(err))
	}
}

// kickSync asks the syncer for a sync: whatever was appended becomes
// durable soon even if no listener calls Sync (syslog acknowledges
// nothing; sensor records are acknowledged to no one).
func (p *Pipeline) kickSync() {
	if p.syncKick == nil {
		return
	}
	select {
	case p.syncKick <- struct{}{}:
	default: // a sync is already due; it covers this append
	}
}

// Sync makes the evidence Handle and AddRecords stored durable, per the
// evidence log's fsync policy (intake.Syncer: listeners call it before
// they acknowledge). Evidence waiting to be stored again (the log refused
// its append) is appended first, so a nil return covers every piece of
// evidence evaluated before it; what the log accepted it keeps until
// durable itself, also across a failed Sync (EvidenceLog). Without an
// evidence log it returns nil.
func (p *Pipeline) Sync(ctx context.Context) error {
	if p.cfg.Evidence == nil {
		return nil
	}
	u := &p.unstored
	u.appendMu.Lock()
	u.mu.Lock()
	batch := u.retryItems()
	u.mu.Unlock()
	if len(batch) > 0 {
		err := p.cfg.Evidence.Append(ctx, batch)
		u.mu.Lock()
		if err != nil {
			u.notBefore, u.lastErr = time.Now().Add(retryStoreEvery), err
			u.mu.Unlock()
			u.appendMu.Unlock()
			p.counters.syncErr.Add(1)
			p.warnStore(err)
			return fmt.Errorf("%w: %w", ErrNotStored, err)
		}
		p.restoredLocked(len(batch))
		u.mu.Unlock()
	}
	u.appendMu.Unlock()
	if err := p.cfg.Evidence.Sync(ctx); err != nil {
		p.counters.syncErr.Add(1)
		p.warnStore(err)
		return fmt.Errorf("%w: %w", ErrNotStored, err)
	}
	return nil
}

// unstoredFull reports whether the kept evidence is at its bound.
func (p *Pipeline) unstoredFull() bool {
	u := &p.unstored
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.bytes >= p.cfg.MaxUnstored
}

// unstoredStats returns the kept evidence waiting to be stored again, and
// its estimated bytes.
func (p *Pipeline) unstoredStats() (items, bytes int) {
	u := &p.unstored
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.retry), u.bytes
}
