package alert

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
)

// Fanout writes every batch to several sinks. The sinks are written
// concurrently; a failing or slow sink does not keep the batch from the
// others, and the errors of all failing sinks are joined.
type Fanout struct {
	sinks []Sink

	mu     sync.Mutex
	closed bool
	c      counters
}

// NewFanout returns a sink that writes to all of sinks. It owns them: Close
// closes every one.
func NewFanout(sinks ...Sink) *Fanout {
	return &Fanout{sinks: append([]Sink(nil), sinks...)}
}

// Sinks returns the sinks the fan-out writes to.
func (f *Fanout) Sinks() []Sink { return append([]Sink(nil), f.sinks...) }

// Write hands recs to every sink and waits for all of them. The error joins
// the errors of the sinks that failed, each prefixed with the sink's name.
func (f *Fanout) Write(ctx context.Context, recs []Record) error {
	f.mu.Lock()
	closed := f.closed
	f.mu.Unlock()
	if closed {
		return ErrClosed
	}
	errs := make([]error, len(f.sinks))
	if len(f.sinks) == 1 {
		errs[0] = f.sinks[0].Write(ctx, recs)
	} else {
		var wg sync.WaitGroup
		for i, s := range f.sinks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = s.Write(ctx, recs)
			}()
		}
		wg.Wait()
	}
	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			errs[i] = fmt.Errorf("write sink %s: %w", sinkName(f.sinks[i], i), err)
		}
	}
	f.c.written.Add(uint64(len(recs)))
	if failed > 0 {
		f.c.errors.Add(uint64(failed))
	}
	return errors.Join(errs...)
}

// Close closes every sink (concurrently, since a webhook may spend its final
// delivery attempt) and joins their errors.
func (f *Fanout) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.mu.Unlock()
	errs := make([]error, len(f.sinks))
	var wg sync.WaitGroup
	for i, s := range f.sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Close(); err != nil {
				errs[i] = fmt.Errorf("close sink %s: %w", sinkName(s, i), err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Stats reports the fan-out's own counters: Written counts records handed to
// it, Errors the sink writes that failed. Use StatsOf for the sinks below.
func (f *Fanout) Stats() Stats {
	return f.c.snapshot("fanout", "fanout")
}

func sinkName(s Sink, i int) string {
	if r, ok := s.(StatsReporter); ok {
		if n := r.Stats().Name; n != "" {
			return n
		}
	}
	return "#" + strconv.Itoa(i)
}
