package alert

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Fanout writes every batch to several sinks, which fail independently.
//
// The sinks are written concurrently. Write succeeds as soon as one
// durable sink (a file, a webhook spool: see Durable) accepted the batch:
// a failing sink then keeps the records it did not accept in a backlog of
// its own, bounded by MaxBacklog, and gets them again — before any newer
// record, in order — on the next Write and from a background retry with a
// growing pause. So a webhook whose spool is full or whose disk fails
// neither stops the caller (intake and the sensor keep flowing) nor makes
// the healthy sinks write a record twice. When its backlog is full the
// oldest records are dropped from it, counted and logged with their ids:
// the durable sink has them.
//
// When no durable sink accepted a batch, Write fails and the caller keeps
// the batch and retries it; the sinks that did accept it remember its
// records (by id and action) and skip them on the retry, so nothing is
// written twice either way.
type Fanout struct {
	sinks []*fanSink
	cfg   FanoutConfig
	log   *zap.Logger

	mu     sync.Mutex
	closed bool
	stop   chan struct{}
	done   chan struct{}
	c      counters
}

// FanoutConfig configures a Fanout. Zero values take the defaults.
type FanoutConfig struct {
	// MaxBacklog bounds the records one failing sink holds (default
	// 10000, a few tens of MB of alerts at most).
	MaxBacklog int
	// RetryInterval is the first pause before a failing sink's backlog
	// is offered again; it doubles up to MaxRetryInterval (defaults 100 ms
	// and 5 s).
	RetryInterval, MaxRetryInterval time.Duration
	// Logger receives the fan-out's logs; nil discards them.
	Logger *zap.Logger
}

// Defaults of FanoutConfig.
const (
	DefaultMaxBacklog       = 10000
	defaultRetryInterval    = 100 * time.Millisecond
	defaultMaxRetryInterval = 5 * time.Second
)

// Durable is implemented by sinks that can say whether a record they
// accepted survives a crash: a file synced after every write, a webhook's
// spool. Standard output is not durable (a pipe reader can lose it).
type Durable interface {
	Durable() bool
}

func isDurable(s Sink) bool {
	d, ok := s.(Durable)
	return ok && d.Durable()
}

type recKey struct{ id, action string }

type fanSink struct {
	s       Sink
	name    string
	durable bool

	mu      sync.Mutex // one write to the sink at a time; guards what follows
	backlog []Record   // records this sink did not accept, oldest first
	taken   map[recKey]bool
	retryAt time.Time
	pause   time.Duration

	nBacklog atomic.Int64
	dropped  atomic.Uint64
}

// NewFanout returns a sink that writes to all of sinks, with the default
// configuration. It owns them: Close closes every one.
func NewFanout(sinks ...Sink) *Fanout { return NewFanoutConfig(FanoutConfig{}, sinks...) }

// NewFanoutConfig is NewFanout with a configuration.
func NewFanoutConfig(cfg FanoutConfig, sinks ...Sink) *Fanout {
	if cfg.MaxBacklog <= 0 {
		cfg.MaxBacklog = DefaultMaxBacklog
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = defaultRetryInterval
	}
	if cfg.MaxRetryInterval < cfg.RetryInterval {
		cfg.MaxRetryInterval = max(defaultMaxRetryInterval, cfg.RetryInterval)
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	f := &Fanout{cfg: cfg, log: log.Named("alert.fanout"), stop: make(chan struct{}), done: make(chan struct{})}
	for i, s := range sinks {
		f.sinks = append(f.sinks, &fanSink{s: s, name: sinkName(s, i), durable: isDurable(s), taken: map[recKey]bool{}})
	}
	go f.retryLoop()
	return f
}

// Sinks returns the sinks the fan-out writes to.
func (f *Fanout) Sinks() []Sink {
	out := make([]Sink, len(f.sinks))
	for i, fs := range f.sinks {
		out[i] = fs.s
	}
	return out
}

// Durable reports whether one of the sinks is durable.
func (f *Fanout) Durable() bool {
	for _, fs := range f.sinks {
		if fs.durable {
			return true
		}
	}
	return false
}

// errBackoff is a sink's answer while its backlog waits for the next retry.
var errBackoff = errors.New("sink failing: backlog waits for the next retry")

// Write hands recs to every sink and waits for all of them; see Fanout for
// when it succeeds. The error joins the errors of the sinks that failed,
// each prefixed with the sink's name.
func (f *Fanout) Write(ctx context.Context, recs []Record) error {
	f.mu.Lock()
	closed := f.closed
	f.mu.Unlock()
	if closed {
		return ErrClosed
	}
	errs := make([]error, len(f.sinks))
	if len(f.sinks) == 1 {
		errs[0] = f.sinks[0].write(ctx, recs, f.cfg)
	} else {
		var wg sync.WaitGroup
		for i, fs := range f.sinks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = fs.write(ctx, recs, f.cfg)
			}()
		}
		wg.Wait()
	}
	f.c.written.Add(uint64(len(recs)))
	durableOK, failed := false, 0
	var invalid []error
	for i, err := range errs {
		switch {
		case err == nil:
			durableOK = durableOK || f.sinks[i].durable
		case errors.Is(err, ErrInvalidRecord):
			// The valid records were written; the invalid never will be.
			durableOK = durableOK || f.sinks[i].durable
			invalid = append(invalid, fmt.Errorf("write sink %s: %w", f.sinks[i].name, err))
			errs[i] = nil
		default:
			failed++
			errs[i] = fmt.Errorf("write sink %s: %w", f.sinks[i].name, err)
		}
	}
	if failed > 0 {
		f.c.errors.Add(uint64(failed))
	}
	if failed == 0 || (durableOK && len(f.sinks) > 1) {
		for i, fs := range f.sinks {
			if errs[i] != nil {
				dropped, first := fs.keep(recs, f.cfg.MaxBacklog)
				f.logDropped(fs, dropped)
				if first {
					f.log.Warn("alert sink failing: its records are kept in a backlog and retried; a durable sink has them",
						zap.String(fieldSink, fs.name), zap.Int(fieldRecords, len(recs)), zap.Error(errs[i]))
				}
			}
			fs.forget(recs)
		}
		return errors.Join(invalid...)
	}
	// No durable sink has the batch: the caller keeps and retries it; the
	// sinks that took it skip it then.
	for i, fs := range f.sinks {
		if errs[i] == nil {
			fs.remember(recs)
		}
	}
	return errors.Join(append(errs, invalid...)...)
}

// write offers the sink its backlog, then the records of recs it has not
// taken yet.
func (fs *fanSink) write(ctx context.Context, recs []Record, cfg FanoutConfig) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if len(fs.backlog) > 0 {
		if time.Now().Before(fs.retryAt) {
			return errBackoff
		}
		if err := fs.flushLocked(ctx, cfg); err != nil {
			return err
		}
	}
	todo := recs
	if len(fs.taken) > 0 {
		todo = make([]Record, 0, len(recs))
		for _, r := range recs {
			if !fs.taken[recKey{r.ID, r.Action}] {
				todo = append(todo, r)
			}
		}
	}
	if len(todo) == 0 {
		return nil
	}
	if err := fs.s.Write(ctx, todo); err != nil && !errors.Is(err, ErrInvalidRecord) {
		fs.failedLocked(cfg)
		return err
	} else if err != nil {
		fs.pause = 0
		return err
	}
	fs.pause = 0
	return nil
}

// flushLocked writes the backlog (fs.mu held).
func (fs *fanSink) flushLocked(ctx context.Context, cfg FanoutConfig) error {
	if err := fs.s.Write(ctx, fs.backlog); err != nil && !errors.Is(err, ErrInvalidRecord) {
		fs.failedLocked(cfg)
		return err
	}
	clear(fs.backlog)
	fs.backlog = fs.backlog[:0]
	fs.nBacklog.Store(0)
	fs.pause = 0
	return nil
}

func (fs *fanSink) failedLocked(cfg FanoutConfig) {
	fs.pause = min(max(2*fs.pause, cfg.RetryInterval), cfg.MaxRetryInterval)
	fs.retryAt = time.Now().Add(fs.pause)
}

// keep appends what the sink did not take of recs to its backlog and
// returns the records dropped from its front beyond max, and whether the
// backlog was empty before.
func (fs *fanSink) keep(recs []Record, max int) (dropped []Record, first bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	first = len(fs.backlog) == 0
	for _, r := range recs {
		if !fs.taken[recKey{r.ID, r.Action}] {
			fs.backlog = append(fs.backlog, r)
		}
	}
	if over := len(fs.backlog) - max; over > 0 {
		dropped = append(dropped, fs.backlog[:over]...)
		fs.backlog = append(fs.backlog[:0:0], fs.backlog[over:]...)
		fs.dropped.Add(uint64(over))
	}
	fs.nBacklog.Store(int64(len(fs.backlog)))
	return dropped, first
}

func (fs *fanSink) remember(recs []Record) {
	fs.mu.Lock()
	for _, r := range recs {
		fs.taken[recKey{r.ID, r.Action}] = true
	}
	fs.mu.Unlock()
}

func (fs *fanSink) forget(recs []Record) {
	fs.mu.Lock()
	if len(fs.taken) > 0 {
		for _, r := range recs {
			delete(fs.taken, recKey{r.ID, r.Action})
		}
	}
	fs.mu.Unlock()
}

func (f *Fanout) logDropped(fs *fanSink, dropped []Record) {
	if len(dropped) == 0 {
		return
	}
	ids := make([]string, 0, min(len(dropped), 20))
	for _, r := range dropped[:min(len(dropped), 20)] {
		ids = append(ids, r.ID+"/"+r.Action)
	}
	f.log.Error("alert sink backlog full: oldest records dropped for this sink only (a durable sink has them)",
		zap.String(fieldSink, fs.name), zap.Int(fieldRecords, len(dropped)), zap.Strings("ids", ids),
		zap.Int("max_backlog", f.cfg.MaxBacklog))
}

// retryLoop offers failing sinks their backlog while no Write comes.
func (f *Fanout) retryLoop() {
	defer close(f.done)
	t := time.NewTicker(f.cfg.RetryInterval)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
		}
		for _, fs := range f.sinks {
			if fs.nBacklog.Load() == 0 {
				continue
			}
			fs.mu.Lock()
			if len(fs.backlog) > 0 && !time.Now().Before(fs.retryAt) {
				ctx, cancel := context.WithTimeout(context.Background(), f.cfg.MaxRetryInterval*4)
				if err := fs.flushLocked(ctx, f.cfg); err == nil {
					f.log.Info("alert sink recovered: backlog delivered", zap.String(fieldSink, fs.name))
				}
				cancel()
			}
			fs.mu.Unlock()
		}
	}
}

// Close offers every backlog once more, then closes every sink
// (concurrently, since a webhook may spend its final delivery attempt) and
// joins their errors. Records still in a backlog are logged by id and
// counted as dropped: a durable sink has them.
func (f *Fanout) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.mu.Unlock()
	close(f.stop)
	<-f.done
	errs := make([]error, len(f.sinks))
	var wg sync.WaitGroup
	for i, fs := range f.sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fs.mu.Lock()
			if len(fs.backlog) > 0 {
				ctx, cancel := context.WithTimeout(context.Background(), defaultMaxRetryInterval)
				if err := fs.flushLocked(ctx, f.cfg); err != nil {
					f.logDropped(fs, fs.backlog)
					fs.dropped.Add(uint64(len(fs.backlog)))
					fs.backlog = nil
					fs.nBacklog.Store(0)
				}
				cancel()
			}
			fs.mu.Unlock()
			if err := fs.s.Close(); err != nil {
				errs[i] = fmt.Errorf("close sink %s: %w", fs.name, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Stats reports the fan-out's own counters: Written counts records handed to
// it, Errors the sink writes that failed. Use StatsOf for the sinks below
// (with their backlogs).
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
