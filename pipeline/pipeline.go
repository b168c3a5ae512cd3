package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/coverage"
	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/internal/binding"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// Defaults of Config.
const (
	DefaultBatchSize     = 64
	DefaultFlushInterval = 200 * time.Millisecond
	DefaultMaxQueued     = 4096
	DefaultCloseTimeout  = 10 * time.Second
)

// Log field names.
const (
	fieldAlertID   = "alert_id"
	fieldAction    = "action"
	fieldRecords   = "records"
	fieldAlert     = "alert"
	fieldTransport = "transport"
	fieldRemote    = "remote"
	fieldReason    = "reason"
)

// ErrClosed is returned after Close.
var ErrClosed = errors.New("pipeline closed")

// Config configures a Pipeline. Zero values take the defaults.
type Config struct {
	// Engine is the correlation rule; Engine.Validate must pass.
	Engine correlate.Config
	// EngineOptions are passed to correlate.New (inventory, ...); the
	// pipeline adds its logger.
	EngineOptions []correlate.Option
	// Decoder decodes event payloads; nil: a Decoder with DecoderOptions.
	Decoder        *winevents.Decoder
	DecoderOptions winevents.Options
	// BatchSize alerts are written in one sink call at most; a full batch
	// is written at once, a partial one after FlushInterval.
	BatchSize     int
	FlushInterval time.Duration
	// MaxQueued bounds the alerts waiting for the sink. At half of it,
	// event payloads are refused with intake.ErrBusy; at the bound the
	// engine's callers wait for the sink.
	MaxQueued int
	// CloseTimeout bounds the final flush of Close.
	CloseTimeout time.Duration
	// ObserveLag, when set, receives each exposure change's arrival time
	// minus its event time, with the transport and format it came in.
	ObserveLag func(transport string, format winevents.Format, lag time.Duration)
	// Now is the clock for arrivals without a time (tests); default time.Now.
	Now func() time.Time
	// MaxFuture refuses an exposure change received by a listener whose
	// event time is further than this ahead of its arrival (a broken host
	// clock would otherwise open windows in the future); default 1 h.
	MaxFuture time.Duration
	// Bindings restricts which hosts each forwarder identity (bearer token
	// name, client certificate subject) may send events for; nil: any.
	Bindings *binding.Policy
	// Evidence, when set, is where every piece of evidence goes before the
	// engine sees it (the evidence log; nil for replay): Handle and
	// AddRecords append to it, Sync makes what they appended durable, and
	// Rebuild reads it back at start.
	Evidence EvidenceLog
	// Delivered, when set, remembers the alert records the sinks accepted
	// (the alert ledger): every written batch is recorded in it, and a
	// record whose rank it already has for that id is not sent again.
	Delivered AlertLedger
	// MaxUnstored bounds the bytes of changes the engine evaluated that
	// wait to be appended again because the evidence log refused them (a
	// full disk, a failing disk at the log's own bound: see Sync); at the
	// bound event payloads are refused
	// unread (intake.ErrNotDurable) until the log works again. Sensor
	// records the log refused are kept too, within half of it (past that
	// they are dropped and counted: a flood of them cannot take the room
	// of acknowledged changes). Default DefaultMaxUnstored.
	MaxUnstored int
	// StoreOnly: the engine runs elsewhere (a scale-out sensor or intake
	// role: Evidence is a Kafka topic the correlators read). Evidence is
	// decoded, validated, counted and stored, never evaluated here; the
	// pipeline needs no sink.
	StoreOnly bool
	// Busy, when set, is asked before an event payload is taken: an error
	// (wrapping intake.ErrBusy) refuses it, so the listener answers 429 or
	// withholds its ACK (the scale-out evidence topic's brokers are not
	// answering: events would only pile up).
	Busy func() error
	// Coverage, when set, is told every sensor record and decoded event:
	// clock samples (HANDSHAKE records with Sample) and connection events
	// go to it only, the hosts' clocks it measures go to the engine
	// (correlate.Engine.SetHostClock), and knocks of a path it finds
	// blind are held until the path shows an answer (CoverageTick).
	Coverage *coverage.Tracker
}

// EvidenceLog is where evidence goes before the engine sees it: the local
// evidence.Log or, in a distributed deployment, a topic. Append writes a
// batch in order (it survives a crash of the process once Append
// returns); Sync returns once everything appended before it is durable.
// A batch Append accepted is the log's to keep until durable, across
// failed Syncs (evidence.Log keeps what no good fsync covered and writes it
// again; a producer retries until the broker acknowledges): the pipeline
// appends again only what Append refused.
type EvidenceLog interface {
	Append(ctx context.Context, items []evidence.Item) error
	Sync(ctx context.Context) error
}

// EvidenceSource replays stored evidence in order from a start in event
// time (evidence.Log.Replay).
type EvidenceSource interface {
	Replay(since time.Time, fn func(evidence.Item) error) (evidence.ReplayStats, error)
}

// AlertLedger remembers, per alert id, the best rank
// (correlate.Alert.Rank) the sinks accepted (evidence.Ledger).
// Record keeps what it could not make durable and writes it again, at the
// latest at the next Sync (the pipeline calls Sync every retryStoreEvery).
type AlertLedger interface {
	Rank(id string) (int, bool)
	Record(ctx context.Context, marks []evidence.Mark) error
	Sync(ctx context.Context) error
}

// ErrFuture refuses an event time too far ahead of its arrival.
var ErrFuture = errors.New("event time too far in the future")

// DefaultMaxFuture is Config.MaxFuture's default.
const DefaultMaxFuture = time.Hour

// Pipeline owns a correlation engine, a decoder and an alert sink.
// Its methods are safe for concurrent use.
type Pipeline struct {
	cfg     Config
	refusal refusalLog
	engine  *correlate.Engine
	decoder *winevents.Decoder
	sink    alert.Sink
	log     *zap.Logger

	wmu     sync.Mutex // one writer of the queue's head at a time
	mu      sync.Mutex
	queue   []queued
	space   *sync.Cond // signalled when the queue shrinks or on close
	closing bool
	flushed bool // Close wrote (or logged) the queue for the last time
	kick    chan struct{}
	done    chan struct{}
	stopped chan struct{}

	counters counters
	held     heldKnocks

	wmuWarn                        sync.Mutex
	lastWarn, lastDrop, lastLedger time.Time

	// syncKick wakes the syncer, which makes sensor records durable in
	// the background (nobody waits for their acknowledgement).
	syncKick chan struct{}
	syncDone chan struct{}

	// unstored keeps evaluated changes until they are durable (durable.go).
	unstored unstored
}

// syncer syncs the evidence log whenever something was appended to it:
// one fsync covers every batch appended before it, and the ring-buffer
// reader never waits for the disk. Every retryStoreEvery it also syncs
// the evidence log (a no-op when nothing waits: evidence a failed append
// left, or a failed fsync's range the log writes again) and the alert
// ledger (marks a failed write or fsync left), so a failure is made good
// without waiting for new evidence or the next alert.
func (p *Pipeline) syncer() {
	defer close(p.syncDone)
	t := time.NewTicker(retryStoreEvery)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-p.syncKick:
			_ = p.Sync(context.Background()) // counted and logged by Sync
		case <-t.C:
			if p.cfg.Evidence != nil {
				_ = p.Sync(context.Background())
			}
			p.syncLedger(context.Background())
		}
	}
}

// syncLedger syncs the alert ledger, logging a failure at most once a
// minute (the ledger counts them).
func (p *Pipeline) syncLedger(ctx context.Context) {
	if p.cfg.Delivered == nil {
		return
	}
	if err := p.cfg.Delivered.Sync(ctx); err != nil {
		p.warnLedger(err, 0)
	}
}

// queued is an alert record waiting for the sinks, with its rank for the
// ledger.
type queued struct {
	rec  alert.Record
	rank int
}

// New builds a pipeline that delivers alerts to sink. The pipeline owns
// sink: Close flushes and closes it. logger may be nil.
func New(cfg Config, sink alert.Sink, logger *zap.Logger) (*Pipeline, error) {
	if sink == nil && !cfg.StoreOnly {
		return nil, errors.New("new pipeline: nil sink")
	}
	if cfg.StoreOnly && cfg.Evidence == nil {
		return nil, errors.New("new pipeline: store-only without an evidence log")
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.MaxQueued <= 0 {
		cfg.MaxQueued = DefaultMaxQueued
	}
	if cfg.MaxQueued < 2 {
		cfg.MaxQueued = 2
	}
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = DefaultCloseTimeout
	}
	if cfg.MaxFuture <= 0 {
		cfg.MaxFuture = DefaultMaxFuture
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxUnstored <= 0 {
		cfg.MaxUnstored = DefaultMaxUnstored
	}
	p := &Pipeline{
		cfg:     cfg,
		sink:    sink,
		log:     logger.Named("pipeline"),
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	p.counters.init()
	p.space = sync.NewCond(&p.mu)
	p.decoder = cfg.Decoder
	if p.decoder == nil {
		p.decoder = winevents.NewDecoder(cfg.DecoderOptions)
	}
	opts := append([]correlate.Option{correlate.WithLogger(logger)}, cfg.EngineOptions...)
	eng, err := correlate.New(cfg.Engine, correlate.EmitterFunc(p.emit), opts...)
	if err != nil {
		return nil, fmt.Errorf("new pipeline: %w", err)
	}
	p.engine = eng
	go p.flusher()
	if cfg.Evidence != nil || cfg.Delivered != nil {
		p.syncKick = make(chan struct{}, 1)
		p.syncDone = make(chan struct{})
		go p.syncer()
	}
	return p, nil
}

// Engine returns the correlation engine (for SetInventory, SetSuppression,
// Stats).
func (p *Pipeline) Engine() *correlate.Engine { return p.engine }

// Decoder returns the event decoder (for Stats).
func (p *Pipeline) Decoder() *winevents.Decoder { return p.decoder }

// Sink returns the alert sink (for alert.StatsOf).
func (p *Pipeline) Sink() alert.Sink { return p.sink }

// Advance moves the engine's watermark with the sensor's clock (live mode).
func (p *Pipeline) Advance(t time.Time) { p.engine.Advance(t) }

// AddRecord feeds one ring-buffer record (*sensor.Knock or
// *sensor.Handshake).
func (p *Pipeline) AddRecord(ctx context.Context, r sensor.Record) error {
	return p.AddRecords(ctx, []sensor.Record{r})
}

// AddRecords feeds a batch of ring-buffer records. It waits while the
// alert queue is full (the sink is failing or slow) or until ctx ends.
// With an evidence log the batch is appended first, then fed to the
// engine; a background sync makes it durable right after (per the log's
// fsync policy): sensor records are acknowledged to no one, so neither
// the engine nor the ring-buffer reader waits for the disk. A log that
// cannot store them (a full disk) does not stop detection: the engine
// still gets them, the failure is counted and logged, the records are kept
// and appended again before the next Sync can succeed (bounded: see
// Config.MaxUnstored), and the error wraps ErrNotStored.
func (p *Pipeline) AddRecords(ctx context.Context, recs []sensor.Record) error {
	if len(recs) == 0 {
		return nil
	}
	if err := p.waitSpace(ctx); err != nil {
		for _, r := range recs {
			p.counters.reject(recordKind(r), reasonOf(err))
		}
		return fmt.Errorf("add %s: %w", recordKind(recs[0]), err)
	}
	arrival := p.cfg.Now()
	items := make([]evidence.Item, 0, len(recs))
	var errs []error
	for _, r := range recs {
		if p.observeRecord(r) {
			// A clock sample: coverage's, not evidence of a knock.
			p.counters.samples.Add(1)
			continue
		}
		switch r := r.(type) {
		case *sensor.Knock:
			k := KnockFromLoader(r)
			items = append(items, evidence.Item{Arrival: arrival, Knock: &k})
		case *sensor.Handshake:
			h := HandshakeFromLoader(r)
			items = append(items, evidence.Item{Arrival: arrival, Handshake: &h})
		default:
			p.counters.reject("record", "unknown_type")
			errs = append(errs, fmt.Errorf("add record: unknown record type %T", r))
		}
	}
	stored := p.store(ctx, items)
	for i := range items {
		it := &items[i]
		if it.Knock != nil {
			held, overflow := p.hold(it.Knock)
			if overflow != nil {
				p.counters.in("knock")
				if err := p.engine.AddKnock(*overflow); err != nil {
					p.counters.reject("knock", reasonOf(err))
				}
			}
			if held {
				continue
			}
		}
		if it.Handshake != nil && p.cfg.Coverage != nil {
			// An answered handshake shows its path: knocks held for it
			// go first.
			p.releaseHeld(it.Handshake.ACK)
		}
		if err := p.feed(it); err != nil {
			errs = append(errs, fmt.Errorf("add %s: %w", it.Kind(), err))
		}
	}
	if stored != nil {
		errs = append(errs, stored)
	}
	return errors.Join(errs...)
}

func recordKind(r sensor.Record) string {
	switch r.(type) {
	case *sensor.Knock:
		return "knock"
	case *sensor.Handshake:
		return "handshake"
	}
	return "record"
}

// AddKnock feeds a KNOCK record, like AddRecords.
func (p *Pipeline) AddKnock(ctx context.Context, k *sensor.Knock) error {
	return p.AddRecords(ctx, []sensor.Record{k})
}

// AddHandshake feeds a HANDSHAKE record, like AddRecords.
func (p *Pipeline) AddHandshake(ctx context.Context, h *sensor.Handshake) error {
	return p.AddRecords(ctx, []sensor.Record{h})
}

// AddChange feeds one decoded exposure change (replay's event files;
// listeners go through Handle). A change that must not reach the engine is
// counted by reason and is not an error. It has no forwarder (Origin "").
func (p *Pipeline) AddChange(c *winevents.ExposureChange) error {
	p.observeEvent(c, time.Time{})
	ec, ok, skip := ChangeFromWinevents(c)
	if !ok {
		p.counters.skip(skip)
		return nil
	}
	it := evidence.Item{Arrival: p.cfg.Now(), Change: &ec}
	stored := p.store(context.Background(), []evidence.Item{it})
	if err := p.feed(&it); err != nil {
		return fmt.Errorf("add change: %w", err)
	}
	return stored
}

// ErrNotStored wraps the errors of evidence the evidence log could not
// store (the engine still evaluated it).
var ErrNotStored = errors.New("evidence not stored in the evidence log")

// warnStore logs an evidence log failure at most once a minute (the
// counters have all of them).
func (p *Pipeline) warnStore(err error) {
	p.wmuWarn.Lock()
	defer p.wmuWarn.Unlock()
	if now := time.Now(); now.Sub(p.lastWarn) >= time.Minute {
		p.lastWarn = now
		msg := "evidence log write failed: evidence is evaluated but not yet durable; it is kept and written again, and events are not acknowledged (senders retry) until that works"
		if errors.Is(err, evidence.ErrNoSpace) {
			msg = "evidence log: the state directory's disk is full: evidence is evaluated but not yet stored; it is kept and written again, and events are not acknowledged (senders retry) until there is room"
		}
		p.log.Error(msg, zap.Error(err))
	}
}

// feed hands one item to the engine, counting it (store-only: checks it
// as the engine would).
func (p *Pipeline) feed(it *evidence.Item) error {
	kind := it.Kind().String()
	p.counters.in(kind)
	if p.cfg.StoreOnly {
		err := it.Validate()
		if err != nil {
			p.counters.reject(kind, reasonOf(err))
		}
		return err
	}
	var err error
	switch it.Kind() {
	case evidence.KindKnock:
		err = p.engine.AddKnock(*it.Knock)
	case evidence.KindHandshake:
		err = p.engine.AddHandshake(*it.Handshake)
	case evidence.KindChange:
		err = p.engine.AddChange(*it.Change)
	}
	if err != nil {
		p.counters.reject(kind, reasonOf(err))
	}
	return err
}

// Handle implements intake.Handler: it decodes the payload, stores the
// exposure changes in the evidence log, feeds them to the engine and
// reports the counts. An unreadable payload is Result.Err (HTTP 400); a
// full alert queue, a closing pipeline or a cancelled ctx is
// intake.ErrBusy, so the sender offers it again. With an evidence log the
// changes are durable once Sync returns, which the listeners call before
// they acknowledge; when the log cannot store them (a full disk, a failed
// fsync) the engine still evaluates them but the result is
// intake.ErrNotDurable, so the sender keeps them and offers them again.
// The decoder takes that re-send for a duplicate when its records have
// record ids: their changes are then kept and appended again until a Sync
// makes them durable (durable.go), so the re-send is acknowledged only
// once they are. While those kept changes are at Config.MaxUnstored,
// payloads are refused unread.
func (p *Pipeline) Handle(ctx context.Context, m intake.Message) intake.Result {
	p.counters.payloads.Add(1)
	if err := ctx.Err(); err != nil {
		p.counters.busy.Add(1)
		return intake.Result{Err: fmt.Errorf("handle %s message: %w: %w", m.Transport, intake.ErrBusy, err)}
	}
	if why := p.busyReason(); why != "" {
		p.counters.busy.Add(1)
		return intake.Result{Err: fmt.Errorf("handle %s message: %s: %w", m.Transport, why, intake.ErrBusy)}
	}
	if p.cfg.Evidence != nil && p.unstoredFull() {
		if err := p.Sync(ctx); err != nil || p.unstoredFull() {
			p.counters.busy.Add(1)
			p.counters.unstoredFull.Add(1)
			return intake.Result{Err: fmt.Errorf("handle %s message: evidence waiting to be stored is at its bound (%d bytes): %w: %w",
				m.Transport, p.cfg.MaxUnstored, intake.ErrNotDurable, intake.ErrBusy)}
		}
	}
	if p.cfg.Busy != nil {
		if err := p.cfg.Busy(); err != nil {
			p.counters.busy.Add(1)
			return intake.Result{Err: fmt.Errorf("handle %s message: %w: %w", m.Transport, intake.ErrBusy, err)}
		}
	}
	id := binding.Identity{Token: m.Meta[intake.MetaTokenName], CertSubject: m.Meta[intake.MetaClientCert],
		Local: m.Transport == intake.TransportFile}
	var from winevents.HostPolicy
	if hp := p.cfg.Bindings.For(id); hp != nil {
		from = hp
	}
	changes, res := p.decoder.DecodeFrom(m.Payload, from)
	if n := res.Reasons[winevents.ReasonHostNotAllowed]; n > 0 {
		p.refusal.log(p.log, id, m, n)
	}
	origin := originOf(m, id)
	rejected := res.Rejected
	if res.Err != nil && len(changes) == 0 {
		p.counters.unreadable.Add(1)
		p.log.Debug("unreadable event payload", zap.String(fieldTransport, m.Transport),
			zap.String(fieldRemote, m.Remote), zap.Error(res.Err))
		return intake.Result{Rejected: rejected, Err: res.Err}
	}
	arrival := m.Received
	if arrival.IsZero() {
		arrival = p.cfg.Now()
	}
	items := make([]evidence.Item, 0, len(changes))
	keep := make([]bool, 0, len(changes))
	for i := range changes {
		c := &changes[i]
		if p.cfg.ObserveLag != nil && !c.Time.IsZero() {
			p.cfg.ObserveLag(m.Transport, c.Source.Format, arrival.Sub(c.Time))
		}
		p.observeEvent(c, arrival)
		if c.Time.After(arrival.Add(p.cfg.MaxFuture)) {
			rejected++
			p.counters.reject("change", reasonOf(ErrFuture))
			p.log.Debug("change rejected", zap.String(fieldTransport, m.Transport), zap.Time("event_time", c.Time), zap.Error(ErrFuture))
			continue
		}
		ec, ok, skip := ChangeFromWinevents(c)
		if !ok {
			p.counters.skip(skip)
			continue
		}
		ec.Origin = origin
		items = append(items, evidence.Item{Arrival: arrival, Change: &ec})
		keep = append(keep, keepable(c))
	}
	stored := p.storeAcked(ctx, items, keep)
	for i := range items {
		if err := p.feed(&items[i]); err != nil {
			rejected++
			p.log.Debug("change rejected", zap.String(fieldTransport, m.Transport), zap.Error(err))
		}
	}
	if stored != nil {
		p.counters.busy.Add(1)
		return intake.Result{Err: fmt.Errorf("handle %s message: %w: %w: %w", m.Transport, intake.ErrNotDurable, intake.ErrBusy, stored)}
	}
	accepted := res.Read - rejected
	if accepted < 0 {
		accepted = 0
	}
	return intake.Result{Accepted: accepted, Rejected: rejected}
}

// busyReason says why event payloads are refused now, or "".
func (p *Pipeline) busyReason() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closing:
		return "pipeline closing"
	case len(p.queue) >= p.cfg.MaxQueued/2:
		return "alert queue full"
	}
	return ""
}

// waitSpace blocks while the alert queue is at its bound.
func (p *Pipeline) waitSpace(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return ErrClosed
	}
	if len(p.queue) < p.cfg.MaxQueued {
		return nil
	}
	p.counters.waits.Add(1)
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.space.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	for len(p.queue) >= p.cfg.MaxQueued && !p.closing {
		if err := ctx.Err(); err != nil {
			return err
		}
		p.space.Wait()
	}
	if p.closing {
		return ErrClosed
	}
	return nil
}

// reasonOf names an error for the rejection counters.
func reasonOf(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{correlate.ErrInvalidAddr, "invalid_addr"},
		{correlate.ErrMissingTime, "missing_time"},
		{correlate.ErrNoTouches, "no_touches"},
		{correlate.ErrInvalidPort, "invalid_port"},
		{correlate.ErrNoHost, "no_host"},
		{correlate.ErrInvalidOrder, "invalid_order"},
		{correlate.ErrInvalidKind, "invalid_kind"},
		{correlate.ErrTimeRange, "time_range"},
		{ErrFuture, "future_time"},
		{ErrClosed, "closed"},
		{context.Canceled, "cancelled"},
		{context.DeadlineExceeded, "cancelled"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "other"
}

// counters are the pipeline's own counts; see Stats.
type counters struct {
	mu         sync.Mutex
	inByKind   map[string]uint64
	rejected   map[string]map[string]uint64
	skipped    map[string]uint64
	alerts     map[string]uint64 // by confidence
	payloads   atomic.Uint64
	unreadable atomic.Uint64
	busy       atomic.Uint64
	waits      atomic.Uint64
	emitted    atomic.Uint64
	suppressed atomic.Uint64
	upgrades   atomic.Uint64
	marshal    atomic.Uint64
	written    atomic.Uint64
	writeErr   atomic.Uint64
	batches    atomic.Uint64
	undeliv    atomic.Uint64
	// The evidence log and the alert ledger.
	notStored    atomic.Uint64 // evidence evaluated but not stored
	syncErr      atomic.Uint64
	restored     atomic.Uint64 // kept evidence appended again after a failure
	unstoredFull atomic.Uint64 // payloads refused: kept evidence at its bound
	// unacknowledged evidence (sensor records) not kept: at its bound
	unstoredDropped atomic.Uint64
	alreadySent     atomic.Uint64 // alert records the ledger already had
	ledgerErr       atomic.Uint64
	replayed        map[string]uint64 // by kind, at the rebuild
	// samples are clock-calibration handshakes passed to coverage;
	// heldNow the knocks held for a blind path.
	samples      atomic.Uint64
	heldNow      atomic.Int64
	heldOverflow atomic.Uint64 // held knocks the bound sent to the engine
	rebuildDur   time.Duration
	rebuilt      bool
}

// rejectReasons are the reasons each kind of evidence can be refused for
// (reasonOf); their counters exist at 0 from the start.
var rejectReasons = map[string][]string{
	"knock": {"invalid_addr", "missing_time", "no_touches", "invalid_port", "invalid_kind", "time_range", "closed", "cancelled", "other",
		"held_expired"},
	"handshake": {"invalid_addr", "missing_time", "invalid_port", "invalid_order", "time_range", "closed", "cancelled", "other"},
	"change":    {"invalid_addr", "missing_time", "no_host", "time_range", "future_time", "closed", "cancelled", "other"},
}

func (c *counters) init() {
	c.inByKind = map[string]uint64{"knock": 0, "handshake": 0, "change": 0}
	c.replayed = map[string]uint64{"knock": 0, "handshake": 0, "change": 0}
	c.rejected = map[string]map[string]uint64{}
	for kind, reasons := range rejectReasons {
		c.rejected[kind] = map[string]uint64{}
		for _, r := range reasons {
			c.rejected[kind][r] = 0
		}
	}
	c.skipped = map[string]uint64{SkipConnection: 0, SkipAppPackage: 0, SkipBindOnly: 0, SkipUnknownKind: 0}
	c.alerts = map[string]uint64{"high": 0, "medium": 0}
}

func (c *counters) inc(m map[string]uint64, k string) {
	c.mu.Lock()
	m[k]++
	c.mu.Unlock()
}

func (c *counters) in(kind string)  { c.inc(c.inByKind, kind) }
func (c *counters) skip(why string) { c.inc(c.skipped, why) }

func (c *counters) reject(kind, why string) {
	c.mu.Lock()
	m := c.rejected[kind]
	if m == nil {
		m = map[string]uint64{}
		c.rejected[kind] = m
	}
	m[why]++
	c.mu.Unlock()
}

// originOf names the forwarder of a message for the engine's fair
// eviction: its authenticated identity and its address ("token:wec01@
// 10.0.0.7", "cert:CN=wec01@10.0.0.7", "syslog-tcp@127.0.0.1"); "" for
// followed files.
func originOf(m intake.Message, id binding.Identity) string {
	if id.Local {
		return ""
	}
	who := m.Transport
	switch {
	case id.Token != "":
		who = "token:" + id.Token
	case id.CertSubject != "":
		who = "cert:" + id.CertSubject
	}
	host := m.Remote
	if h, _, err := net.SplitHostPort(m.Remote); err == nil {
		host = h
	}
	return who + "@" + host
}

// refusalLog logs records refused because their forwarder may not speak
// for their host: at most once a minute per identity (the counters have
// every one).
type refusalLog struct {
	mu   sync.Mutex
	last map[binding.Identity]time.Time
}

func (r *refusalLog) log(l *zap.Logger, id binding.Identity, m intake.Message, n int) {
	r.mu.Lock()
	now := time.Now()
	if r.last == nil || len(r.last) > 1024 {
		r.last = map[binding.Identity]time.Time{}
	}
	t, seen := r.last[id]
	if seen && now.Sub(t) < time.Minute {
		r.mu.Unlock()
		return
	}
	r.last[id] = now
	r.mu.Unlock()
	l.Warn("records refused: the forwarder may not send events for their hosts (listeners.forwarders)",
		zap.String(fieldTransport, m.Transport), zap.String(fieldRemote, m.Remote),
		zap.String("token", id.Token), zap.String("client_cert_subject", id.CertSubject), zap.Int(fieldRecords, n))
}
