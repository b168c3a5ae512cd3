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
	queue   []alert.Record
	space   *sync.Cond // signalled when the queue shrinks or on close
	closing bool
	flushed bool // Close wrote (or logged) the queue for the last time
	kick    chan struct{}
	done    chan struct{}
	stopped chan struct{}

	counters counters
}

// New builds a pipeline that delivers alerts to sink. The pipeline owns
// sink: Close flushes and closes it. logger may be nil.
func New(cfg Config, sink alert.Sink, logger *zap.Logger) (*Pipeline, error) {
	if sink == nil {
		return nil, errors.New("new pipeline: nil sink")
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
	switch r := r.(type) {
	case *sensor.Knock:
		return p.AddKnock(ctx, r)
	case *sensor.Handshake:
		return p.AddHandshake(ctx, r)
	}
	p.counters.reject("record", "unknown_type")
	return fmt.Errorf("add record: unknown record type %T", r)
}

// AddKnock feeds a KNOCK record. It waits while the alert queue is full
// (the sink is failing or slow) or until ctx ends.
func (p *Pipeline) AddKnock(ctx context.Context, k *sensor.Knock) error {
	if err := p.waitSpace(ctx); err != nil {
		p.counters.reject("knock", reasonOf(err))
		return fmt.Errorf("add knock: %w", err)
	}
	p.counters.in("knock")
	if err := p.engine.AddKnock(KnockFromLoader(k)); err != nil {
		p.counters.reject("knock", reasonOf(err))
		return fmt.Errorf("add knock: %w", err)
	}
	return nil
}

// AddHandshake feeds a HANDSHAKE record, waiting like AddKnock.
func (p *Pipeline) AddHandshake(ctx context.Context, h *sensor.Handshake) error {
	if err := p.waitSpace(ctx); err != nil {
		p.counters.reject("handshake", reasonOf(err))
		return fmt.Errorf("add handshake: %w", err)
	}
	p.counters.in("handshake")
	if err := p.engine.AddHandshake(HandshakeFromLoader(h)); err != nil {
		p.counters.reject("handshake", reasonOf(err))
		return fmt.Errorf("add handshake: %w", err)
	}
	return nil
}

// AddChange feeds one decoded exposure change. A change that must not
// reach the engine is counted by reason and is not an error.
func (p *Pipeline) AddChange(c *winevents.ExposureChange) error {
	return p.addChange(c, "")
}

// addChange feeds a change that origin (see originOf) delivered.
func (p *Pipeline) addChange(c *winevents.ExposureChange, origin string) error {
	ec, ok, skip := ChangeFromWinevents(c)
	if !ok {
		p.counters.skip(skip)
		return nil
	}
	ec.Origin = origin
	p.counters.in("change")
	if err := p.engine.AddChange(ec); err != nil {
		p.counters.reject("change", reasonOf(err))
		return fmt.Errorf("add change: %w", err)
	}
	return nil
}

// Handle implements intake.Handler: it decodes the payload, feeds every
// exposure change to the engine and reports the counts. An unreadable
// payload is Result.Err (HTTP 400); a full alert queue, a closing pipeline
// or a cancelled ctx is intake.ErrBusy, so the sender offers it again.
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
	for i := range changes {
		c := &changes[i]
		if p.cfg.ObserveLag != nil && !c.Time.IsZero() {
			p.cfg.ObserveLag(m.Transport, c.Source.Format, arrival.Sub(c.Time))
		}
		if c.Time.After(arrival.Add(p.cfg.MaxFuture)) {
			rejected++
			p.counters.reject("change", reasonOf(ErrFuture))
			p.log.Debug("change rejected", zap.String(fieldTransport, m.Transport), zap.Time("event_time", c.Time), zap.Error(ErrFuture))
			continue
		}
		if err := p.addChange(c, origin); err != nil {
			rejected++
			p.log.Debug("change rejected", zap.String(fieldTransport, m.Transport), zap.Error(err))
		}
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
}

// rejectReasons are the reasons each kind of evidence can be refused for
// (reasonOf); their counters exist at 0 from the start.
var rejectReasons = map[string][]string{
	"knock":     {"invalid_addr", "missing_time", "no_touches", "invalid_port", "invalid_kind", "time_range", "closed", "cancelled", "other"},
	"handshake": {"invalid_addr", "missing_time", "invalid_port", "invalid_order", "time_range", "closed", "cancelled", "other"},
	"change":    {"invalid_addr", "missing_time", "no_host", "time_range", "future_time", "closed", "cancelled", "other"},
}

func (c *counters) init() {
	c.inByKind = map[string]uint64{"knock": 0, "handshake": 0, "change": 0}
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
