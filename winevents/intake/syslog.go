package intake

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
)

// SyslogConfig configures a syslog listener (UDP, TCP or TLS).
type SyslogConfig struct {
	Addr     string      // host:port to bind
	TLS      *tls.Config // TCP only: serve syslog over TLS (RFC 5425); ClientAuth RequireAndVerifyClientCert: mTLS
	Insecure bool        // allow a non-loopback address without mTLS

	MaxMessageBytes int            // one syslog message (default 256 KiB; UDP at most 65535)
	MaxConns        int            // open TCP/TLS connections that finished the TLS handshake, or plain TCP ones (default 256)
	PreAuth         PreAuthConfig  // TLS: connections still in the handshake (see PreAuthConfig)
	IdleTimeout     time.Duration  // a frame must complete within this time (default 5 min)
	Location        *time.Location // zone of RFC 3164 timestamps (default UTC)
}

// SyslogServer is a running syslog listener.
type SyslogServer struct {
	transport string
	cfg       SyslogConfig
	h         Handler
	log       *zap.Logger
	c         *counters
	ln        net.Listener   // TCP/TLS
	pc        net.PacketConn // UDP
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     map[net.Conn]struct{}
}

func newSyslog(transport string, cfg SyslogConfig, h Handler, logger *zap.Logger) *SyslogServer {
	cfg.MaxMessageBytes = orDefault(cfg.MaxMessageBytes, DefaultMaxMessageBytes)
	cfg.MaxConns = orDefault(cfg.MaxConns, DefaultMaxConns)
	cfg.IdleTimeout = orDefault(cfg.IdleTimeout, DefaultIdleTimeout)
	if cfg.Location == nil {
		cfg.Location = time.UTC
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &SyslogServer{transport: transport, cfg: cfg, h: h, log: logger.Named("intake." + transport),
		c: newCounters(transport), ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
}

// NewSyslogTCP binds cfg.Addr and serves syslog over TCP, or over TLS when
// cfg.TLS is set. Without mTLS it refuses a non-loopback address unless
// cfg.Insecure.
func NewSyslogTCP(cfg SyslogConfig, h Handler, logger *zap.Logger) (*SyslogServer, error) {
	transport := TransportSyslogTCP
	if cfg.TLS != nil {
		transport = TransportSyslogTLS
	}
	s := newSyslog(transport, cfg, h, logger)
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", transport, err)
	}
	if err := checkExposure(transport, ln.Addr(), requiresClientCert(cfg.TLS), cfg.Insecure,
		"syslog over TLS with required client certificates"); err != nil {
		_ = ln.Close()
		return nil, err
	}
	s.ln = ln
	// Over TLS a peer authenticates by completing the handshake (with the
	// client certificate mTLS requires); until then it is in the pre-auth
	// pool, with its short deadline.
	lim := newPool(s.cfg.MaxConns, cfg.TLS != nil, cfg.PreAuth, s.c, s.log).listener(ln)
	s.wg.Add(1)
	go s.acceptLoop(lim)
	s.log.Info("syslog intake listening", zap.String(fAddr, ln.Addr().String()),
		zap.String(fTransport, transport), zap.Bool("mtls", requiresClientCert(cfg.TLS)))
	return s, nil
}

// NewSyslogUDP binds cfg.Addr and serves syslog over UDP, one message per
// datagram. UDP cannot authenticate: a non-loopback address needs
// cfg.Insecure.
func NewSyslogUDP(cfg SyslogConfig, h Handler, logger *zap.Logger) (*SyslogServer, error) {
	cfg.MaxMessageBytes = min(orDefault(cfg.MaxMessageBytes, DefaultMaxMessageBytes), maxUDPDatagram)
	s := newSyslog(TransportSyslogUDP, cfg, h, logger)
	pc, err := net.ListenPacket("udp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen syslog-udp: %w", err)
	}
	if err := checkExposure(TransportSyslogUDP, pc.LocalAddr(), false, cfg.Insecure,
		"UDP cannot authenticate peers; use syslog over TLS with client certificates"); err != nil {
		_ = pc.Close()
		return nil, err
	}
	if u, ok := pc.(*net.UDPConn); ok {
		_ = u.SetReadBuffer(4 << 20)
	}
	s.pc = pc
	s.wg.Add(1)
	go s.udpLoop()
	s.log.Info("syslog intake listening", zap.String(fAddr, pc.LocalAddr().String()),
		zap.String(fTransport, TransportSyslogUDP))
	return s, nil
}

// Addr is the bound address.
func (s *SyslogServer) Addr() net.Addr {
	if s.pc != nil {
		return s.pc.LocalAddr()
	}
	return s.ln.Addr()
}

// Stats returns a snapshot of the counters.
func (s *SyslogServer) Stats() Stats { return s.c.snapshot() }

// Close stops the listener, closes open connections and waits for their
// goroutines. A message the handler is still refusing (busy) is not lost:
// TCP senders never saw it acknowledged and resend after reconnecting.
func (s *SyslogServer) Close() error {
	s.cancel()
	var err error
	if s.pc != nil {
		err = s.pc.Close()
	} else {
		err = s.ln.Close()
	}
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *SyslogServer) acceptLoop(ln net.Listener) {
	defer s.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Error("accept failed, syslog listener stopped", zap.Error(err))
			}
			return
		}
		s.mu.Lock()
		if s.ctx.Err() != nil {
			s.mu.Unlock()
			_ = conn.Close()
			return
		}
		s.conns[conn] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serveConn(conn)
	}
}

func (s *SyslogServer) serveConn(raw net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, raw)
		s.mu.Unlock()
		_ = raw.Close()
	}()
	remote := raw.RemoteAddr().String()
	var conn net.Conn = raw
	subject := ""
	if s.cfg.TLS != nil {
		tc := tls.Server(raw, s.cfg.TLS)
		// The pool closes a peer that did not finish in time (counted
		// preauth_timeout); the deadline is the backstop.
		_ = raw.SetDeadline(time.Now().Add(s.cfg.PreAuth.withDefaults().Timeout + time.Second))
		if err := tc.HandshakeContext(s.ctx); err != nil {
			if !isClosedByPool(raw) {
				s.c.drop(rTLSHandshake)
			}
			s.log.Debug("tls handshake failed", zap.String(fRemote, remote), zap.Error(err))
			return
		}
		if pc := poolConnOf(raw); pc != nil && pc.authenticated() != nil {
			return
		}
		_ = raw.SetDeadline(time.Time{})
		cs := tc.ConnectionState()
		subject = peerSubject(&cs)
		conn = tc
	}
	fr := newFrameReader(conn, s.cfg.MaxMessageBytes)
	for {
		_ = raw.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		frame, err := fr.next()
		switch {
		case err == nil:
			s.deliver(frame, remote, subject, true)
		case errors.Is(err, errFrameTooLarge):
			s.c.drop(rTooLarge)
			s.log.Debug("syslog frame over the size limit skipped", zap.String(fRemote, remote),
				zap.Int(fLimit, s.cfg.MaxMessageBytes))
		case isTimeout(err):
			s.c.drop(rReadTimeout)
			s.log.Debug("connection closed: read timeout", zap.String(fRemote, remote))
			return
		case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || s.ctx.Err() != nil:
			return
		default:
			s.c.drop(rIO)
			s.log.Debug("connection closed: read error", zap.String(fRemote, remote), zap.Error(err))
			return
		}
	}
}

func (s *SyslogServer) udpLoop() {
	defer s.wg.Done()
	buf := make([]byte, maxUDPDatagram+1)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.c.drop(rIO)
			s.log.Warn("udp read failed", zap.Error(err))
			continue
		}
		if n > s.cfg.MaxMessageBytes {
			s.c.drop(rTooLarge)
			continue
		}
		s.deliver(buf[:n], from.String(), "", false)
	}
}

// deliver parses one message and hands its MSG to the handler. With wait
// (stream transports) a busy handler is retried, which stops reading from
// the connection; without (UDP) the message is dropped and counted busy.
func (s *SyslogServer) deliver(frame []byte, remote, subject string, wait bool) {
	sm, err := ParseSyslog(frame, time.Now(), s.cfg.Location)
	if err != nil || len(sm.Msg) == 0 {
		s.c.drop(rBadSyslog)
		if err == nil {
			err = errors.New("empty message")
		}
		s.log.Debug("syslog message refused", zap.String(fRemote, remote), zap.Error(err))
		return
	}
	m := Message{Transport: s.transport, Remote: remote, Payload: append([]byte(nil), sm.Msg...),
		Received: time.Now(), Meta: sm.meta()}
	if subject != "" {
		m.Meta[MetaClientCert] = subject
	}
	var res Result
	if wait {
		var stalled bool
		var why reason
		res, why, stalled = handleWithRetry(s.ctx, s.h, m)
		if stalled {
			s.c.drop(why)
		}
		if errors.Is(res.Err, ErrBusy) { // shutting down while busy
			return
		}
	} else {
		res = s.h.Handle(s.ctx, m)
		if errors.Is(res.Err, ErrBusy) {
			s.c.drop(stallReason(res.Err))
			return
		}
	}
	s.c.result(len(m.Payload), res)
	if res.Err != nil {
		s.c.drop(rUnreadable)
		s.log.Debug("message unreadable", zap.String(fRemote, remote), zap.Error(res.Err))
	}
}
