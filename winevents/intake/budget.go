package intake

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// MemoryBudget bounds the event bytes all listeners hold at once: a Beats
// event is counted from before its bytes are read (or inflated) until the
// chunk it belongs to was handed to the handler; an HTTP body from before
// it is read (or decompressed) until the handler returned. A peer that
// finds the budget exhausted waits (Beats: the connection is not read, the
// forwarder is kept waiting with keepalive ACKs, after the events already
// held were handled and acknowledged) or is refused (HTTP: 429 when nothing
// was freed within the wait). Waiters are served in arrival order, so a
// large message is not starved by small ones. One budget is shared by every
// listener of the process; nil means no global bound (each listener's own
// per-message limits still apply).
type MemoryBudget struct {
	mu      sync.Mutex
	cap     int64
	used    int64
	peak    int64
	waiters list.List // of *budgetWaiter, arrival order

	waits   atomic.Uint64
	refused atomic.Uint64
}

type budgetWaiter struct {
	n     int64
	ready chan struct{}
}

// ErrOverBudget is returned for a request larger than the whole budget.
var ErrOverBudget = errors.New("larger than the intake memory budget")

// NewMemoryBudget returns a budget of bytes (at least 1 MiB).
func NewMemoryBudget(bytes int64) *MemoryBudget {
	return &MemoryBudget{cap: max(bytes, 1<<20)}
}

// TryAcquire takes n bytes if they are free now and nobody waits before.
func (b *MemoryBudget) TryAcquire(n int64) bool {
	if b == nil || n <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.waiters.Len() > 0 || b.used+n > b.cap {
		return false
	}
	b.take(n)
	return true
}

func (b *MemoryBudget) take(n int64) {
	b.used += n
	b.peak = max(b.peak, b.used)
}

// Acquire takes n bytes, waiting until they are free or ctx ends.
func (b *MemoryBudget) Acquire(ctx context.Context, n int64) error {
	if b == nil || n <= 0 {
		return nil
	}
	if n > b.cap {
		b.refused.Add(1)
		return fmt.Errorf("acquire %d bytes: %w of %d bytes", n, ErrOverBudget, b.cap)
	}
	b.mu.Lock()
	if b.waiters.Len() == 0 && b.used+n <= b.cap {
		b.take(n)
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	e := b.waiters.PushBack(w)
	b.mu.Unlock()
	b.waits.Add(1)
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		select {
		case <-w.ready: // granted meanwhile: give it back
			b.mu.Unlock()
			b.Release(n)
		default:
			b.waiters.Remove(e)
			b.grantLocked() // the next one may fit now
			b.mu.Unlock()
		}
		b.refused.Add(1)
		return fmt.Errorf("acquire %d bytes of the intake memory budget: %w", n, ctx.Err())
	}
}

// Release gives back n bytes.
func (b *MemoryBudget) Release(n int64) {
	if b == nil || n <= 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	if b.used < 0 {
		b.used = 0 // a bug; never let the budget grow
	}
	b.grantLocked()
	b.mu.Unlock()
}

func (b *MemoryBudget) grantLocked() {
	for b.waiters.Len() > 0 {
		e := b.waiters.Front()
		w := e.Value.(*budgetWaiter)
		if b.used+w.n > b.cap {
			return
		}
		b.waiters.Remove(e)
		b.take(w.n)
		close(w.ready)
	}
}

// BudgetStats is a snapshot of a MemoryBudget.
type BudgetStats struct {
	Capacity, InUse, Peak int64
	Waiting               int
	// Waits counts acquisitions that had to wait; Refused those that gave
	// up (the wait ended, or more than the whole budget was asked).
	Waits, Refused uint64
}

// Stats returns a snapshot (zero for a nil budget).
func (b *MemoryBudget) Stats() BudgetStats {
	if b == nil {
		return BudgetStats{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return BudgetStats{Capacity: b.cap, InUse: b.used, Peak: b.peak, Waiting: b.waiters.Len(),
		Waits: b.waits.Load(), Refused: b.refused.Load()}
}
