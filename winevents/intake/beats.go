package intake

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/elastic/go-lumber/lj"
	lumberlog "github.com/elastic/go-lumber/log"
	lumber "github.com/elastic/go-lumber/server/v2"
	"go.uber.org/zap"
)

// BeatsConfig configures the Beats (Lumberjack v2) listener.
type BeatsConfig struct {
	Addr     string      // host:port to bind
	TLS      *tls.Config // nil: plain TCP; ClientAuth RequireAndVerifyClientCert: mTLS
	Insecure bool        // allow a non-loopback address without mTLS

	MaxEventBytes  int           // one event's JSON (default 1 MiB); larger events are skipped and counted
	MaxBatchBytes  int           // one window's events, decompressed (default 64 MiB); larger closes the connection
	MaxBatchEvents int           // events per window (default 16384; Winlogbeat's bulk_max_size is 2048)
	MaxConns       int           // open connections (default 64)
	Timeout        time.Duration // reading a started window, writing an ACK (default 30 s)
	Keepalive      time.Duration // empty ACKs while a batch is in the handler (default 3 s)
	IdleTimeout    time.Duration // no window started for this long: close (default 5 min)
}

// BeatsServer receives batches from Winlogbeat's output.logstash (and any
// Lumberjack v2 client) and acknowledges a batch only after every event in it
// went through the handler.
type BeatsServer struct {
	cfg    BeatsConfig
	h      Handler
	log    *zap.Logger
	c      *counters
	ln     net.Listener
	srv    *lumber.Server
	ch     chan *lj.Batch
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var lumberLogOnce sync.Once

// NewBeatsServer binds cfg.Addr and serves until Close.
func NewBeatsServer(cfg BeatsConfig, h Handler, logger *zap.Logger) (*BeatsServer, error) {
	cfg.MaxEventBytes = orDefault(cfg.MaxEventBytes, DefaultBeatsMaxEvent)
	cfg.MaxBatchBytes = orDefault(cfg.MaxBatchBytes, DefaultBeatsMaxBatch)
	cfg.MaxBatchEvents = orDefault(cfg.MaxBatchEvents, 16384)
	cfg.MaxConns = orDefault(cfg.MaxConns, DefaultBeatsMaxConns)
	cfg.Timeout = orDefault(cfg.Timeout, DefaultBeatsTimeout)
	cfg.Keepalive = orDefault(cfg.Keepalive, 3*time.Second)
	cfg.IdleTimeout = orDefault(cfg.IdleTimeout, DefaultIdleTimeout)
	logger = logger.Named("intake.beats")
	// go-lumber logs every connection through a process-wide logger; the
	// guard and this server log and count what matters, so its chatter is
	// dropped rather than written unstructured to stderr.
	lumberLogOnce.Do(func() { lumberlog.Logger = discardPrinter{} })

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen beats: %w", err)
	}
	if err := checkExposure(TransportBeats, ln.Addr(), requiresClientCert(cfg.TLS), cfg.Insecure,
		"serve TLS with required client certificates"); err != nil {
		_ = ln.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &BeatsServer{cfg: cfg, h: h, log: logger, c: newCounters(TransportBeats), ln: ln,
		ch: make(chan *lj.Batch), ctx: ctx, cancel: cancel}
	gl := &guardListener{limitListener: newLimitListener(ln, cfg.MaxConns, s.c, logger), s: s}
	s.srv, err = lumber.NewWithListener(gl,
		lumber.Timeout(cfg.Timeout), lumber.Keepalive(cfg.Keepalive),
		lumber.JSONDecoder(decodeGuarded), lumber.Channel(s.ch))
	if err != nil {
		cancel()
		_ = ln.Close()
		return nil, fmt.Errorf("start lumberjack server: %w", err)
	}
	s.wg.Add(1)
	go s.receive()
	logger.Info("beats intake listening", zap.String(fAddr, ln.Addr().String()),
		zap.Bool("tls", cfg.TLS != nil), zap.Bool("mtls", requiresClientCert(cfg.TLS)))
	return s, nil
}

// Addr is the bound address.
func (s *BeatsServer) Addr() net.Addr { return s.ln.Addr() }

// Stats returns a snapshot of the counters.
func (s *BeatsServer) Stats() Stats { return s.c.snapshot() }

// Close stops the listener and every connection. Batches not yet
// acknowledged are resent by the clients when they reconnect.
func (s *BeatsServer) Close() error {
	s.cancel()
	err := s.srv.Close()
	s.wg.Wait()
	return err
}

// receive hands each batch to its own goroutine: go-lumber keeps at most one
// unacknowledged batch per connection in flight, so this is bounded by
// MaxConns.
func (s *BeatsServer) receive() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case b := <-s.ch:
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.process(b)
			}()
		}
	}
}

// process hands each event to the handler (retrying while it is busy, which
// withholds the ACK: the client keeps waiting, kept alive by empty ACKs) and
// acknowledges the batch when all went through and the handler's Sync
// (Syncer) made them durable.
func (s *BeatsServer) process(b *lj.Batch) {
	now := time.Now()
	for _, raw := range b.Events {
		ev, _ := raw.(beatsEvent)
		if ev.tooLarge {
			s.c.drop(rTooLarge)
			continue
		}
		if !looksLikeJSONObject(ev.json) { // full validation is the handler's: it parses anyway
			s.c.drop(rUnreadable)
			continue
		}
		m := Message{Transport: TransportBeats, Remote: ev.remote, Payload: ev.json, Received: now,
			Meta: map[string]string{}}
		if ev.subject != "" {
			m.Meta[MetaClientCert] = ev.subject
		}
		res, why, stalled := handleWithRetry(s.ctx, s.h, m)
		if stalled {
			s.c.drop(why)
		}
		if errors.Is(res.Err, ErrBusy) {
			return // shutting down: no ACK, the client resends the batch
		}
		s.c.result(len(ev.json), res)
		if res.Err != nil {
			s.c.drop(rUnreadable)
		}
	}
	// Acknowledge only what is durable: while the handler cannot store
	// it, the ACK is withheld (the client waits, kept alive by empty ACKs).
	if failed, err := syncWithRetry(s.ctx, s.h); failed || err != nil {
		s.c.drop(rNotDurable)
		if err != nil {
			return // shutting down: no ACK, the client resends the batch
		}
	}
	b.ACK()
}

// looksLikeJSONObject: Beats events are JSON objects.
func looksLikeJSONObject(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) >= 2 && b[0] == '{' && b[len(b)-1] == '}'
}

// guardListener limits connections, wraps each in a lumberGuard and never
// gives go-lumber an error other than "closed" (go-lumber stops serving on
// any Accept error).
type guardListener struct {
	*limitListener
	s *BeatsServer
}

func (l *guardListener) Accept() (net.Conn, error) {
	for {
		c, err := l.limitListener.Accept()
		if err == nil {
			return newLumberGuard(l.s, c), nil
		}
		if errors.Is(err, net.ErrClosed) || l.s.ctx.Err() != nil {
			return nil, err
		}
		l.s.log.Warn("accept failed, retrying", zap.Error(err))
		select {
		case <-l.s.ctx.Done():
			return nil, net.ErrClosed
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// discardPrinter silences go-lumber's own log lines.
type discardPrinter struct{}

func (discardPrinter) Printf(string, ...any) {}
func (discardPrinter) Println(...any)        {}
func (discardPrinter) Print(...any)          {}
