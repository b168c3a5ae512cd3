package intake

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
)

// BeatsConfig configures the Beats (Lumberjack v2) listener.
type BeatsConfig struct {
	Addr     string      // host:port to bind
	TLS      *tls.Config // nil: plain TCP; ClientAuth RequireAndVerifyClientCert: mTLS
	Insecure bool        // allow a non-loopback address without mTLS

	MaxEventBytes int // one event's JSON (default 1 MiB); larger events are skipped, counted and acknowledged
	// MaxBatchBytes bounds the decompressed event bytes one connection
	// holds at once (default 64 MiB): a window larger than that is handed
	// on and acknowledged in chunks. It also bounds one compressed frame
	// and one announced event (beyond, the connection is closed).
	MaxBatchBytes int
	// MaxBatchEvents is the most events handed on at once (default 16384;
	// Winlogbeat's bulk_max_size is 2048): a larger window is handed on and
	// acknowledged in chunks of this many (partial ACKs), never refused.
	MaxBatchEvents int
	MaxConns       int           // open connections that finished the TLS handshake, or plain ones (default 64)
	Timeout        time.Duration // reading the next frame of a started window, writing an ACK (default 30 s)
	Keepalive      time.Duration // ACKs repeating the last one while the handler or the memory budget holds a window (default 3 s)
	IdleTimeout    time.Duration // no window started for this long: close (default 5 min)
	PreAuth        PreAuthConfig // TLS: connections still in the handshake (see PreAuthConfig)
	// Budget is the intake memory budget events are read under (nil: none
	// beyond MaxBatchBytes per connection).
	Budget *MemoryBudget
}

// maxWindowEvents bounds the event count a window may announce: no Beats
// client sends more than a few thousand, and an absurd count is a broken or
// hostile peer (memory does not depend on it: windows are read in chunks).
const maxWindowEvents = 1 << 24

// The Lumberjack v2 frames (protocol version byte '2').
const (
	ljVersion    = '2'
	ljWindow     = 'W'
	ljJSON       = 'J'
	ljCompressed = 'C'
	ljACK        = 'A'
)

var (
	errLumberFrame   = errors.New("lumberjack frame invalid")
	errLumberTooBig  = errors.New("lumberjack frame over the size limit")
	errBeatsShutdown = errors.New("beats listener closing")
)

// BeatsServer receives windows of events from Winlogbeat's output.logstash
// (and any Lumberjack v2 client) and acknowledges events only after they
// went through the handler.
//
// It speaks the protocol itself (go-lumber's server trusts the sizes in
// frame headers and holds two whole windows per connection). It reads a
// window's events one at a time, inflating compressed frames as a stream,
// and checks every announced size before reading: at most MaxEventBytes
// per event (a larger one is skipped, counted too_large and acknowledged,
// so a forwarder does not resend it forever), MaxBatchBytes and
// MaxBatchEvents held at once. The events of a window go to the handler in
// chunks: when the window ends, when a chunk reaches MaxBatchEvents or
// MaxBatchBytes, or when the memory budget cannot take the next event; each
// chunk is acknowledged on its own (a partial ACK carries the sequence
// number of the chunk's last event, which Lumberjack v2 clients accept), so
// any window size is taken without holding more than a chunk. Nothing more
// is read from a connection while its chunk is in the handler.
type BeatsServer struct {
	cfg    BeatsConfig
	h      Handler
	log    *zap.Logger
	c      *counters
	ln     net.Listener
	pool   *pool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

// NewBeatsServer binds cfg.Addr and serves until Close.
func NewBeatsServer(cfg BeatsConfig, h Handler, logger *zap.Logger) (*BeatsServer, error) {
	cfg.MaxEventBytes = orDefault(cfg.MaxEventBytes, DefaultBeatsMaxEvent)
	cfg.MaxBatchBytes = orDefault(cfg.MaxBatchBytes, DefaultBeatsMaxBatch)
	cfg.MaxBatchEvents = orDefault(cfg.MaxBatchEvents, DefaultBeatsMaxEvents)
	cfg.MaxConns = orDefault(cfg.MaxConns, DefaultBeatsMaxConns)
	cfg.Timeout = orDefault(cfg.Timeout, DefaultBeatsTimeout)
	cfg.Keepalive = orDefault(cfg.Keepalive, 3*time.Second)
	cfg.IdleTimeout = orDefault(cfg.IdleTimeout, DefaultIdleTimeout)
	cfg.PreAuth = cfg.PreAuth.withDefaults()
	cfg.MaxEventBytes = min(cfg.MaxEventBytes, cfg.MaxBatchBytes)
	logger = logger.Named("intake.beats")

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
		ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	s.pool = newPool(cfg.MaxConns, cfg.TLS != nil, cfg.PreAuth, s.c, logger)
	s.wg.Add(1)
	go s.acceptLoop(s.pool.listener(ln))
	logger.Info("beats intake listening", zap.String(fAddr, ln.Addr().String()),
		zap.Bool("tls", cfg.TLS != nil), zap.Bool("mtls", requiresClientCert(cfg.TLS)))
	return s, nil
}

// Addr is the bound address.
func (s *BeatsServer) Addr() net.Addr { return s.ln.Addr() }

// Stats returns a snapshot of the counters.
func (s *BeatsServer) Stats() Stats { return s.c.snapshot() }

// Close stops the listener and every connection. Events not yet
// acknowledged are resent by the clients when they reconnect.
func (s *BeatsServer) Close() error {
	s.cancel()
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *BeatsServer) acceptLoop(ln net.Listener) {
	defer s.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Error("accept failed, beats listener stopped", zap.Error(err))
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

func (s *BeatsServer) serveConn(raw net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, raw)
		s.mu.Unlock()
		_ = raw.Close()
	}()
	bc := &beatsConn{s: s, raw: raw, conn: raw, remote: raw.RemoteAddr().String()}
	if s.cfg.TLS != nil {
		tc := tls.Server(raw, s.cfg.TLS)
		// The pool closes a peer that did not finish in time (counted
		// preauth_timeout); the deadline is the backstop.
		_ = raw.SetDeadline(time.Now().Add(s.cfg.PreAuth.Timeout + time.Second))
		if err := tc.HandshakeContext(s.ctx); err != nil {
			if !isClosedByPool(raw) {
				s.c.drop(rTLSHandshake)
			}
			s.log.Debug("tls handshake failed", zap.String(fRemote, bc.remote), zap.Error(err))
			return
		}
		if pc := poolConnOf(raw); pc != nil && pc.authenticated() != nil {
			return
		}
		_ = raw.SetDeadline(time.Time{})
		cs := tc.ConnectionState()
		bc.subject = peerSubject(&cs)
		bc.conn = tc
	}
	bc.in = bufio.NewReaderSize(bc.conn, 32<<10)
	err := bc.run()
	bc.release()
	bc.count(err)
}

// beatsConn is one client connection.
type beatsConn struct {
	s       *BeatsServer
	raw     net.Conn // below TLS
	conn    net.Conn
	in      *bufio.Reader
	remote  string
	subject string

	wmu   sync.Mutex // ACK writes (the keepalive goroutine writes too)
	acked uint32     // last sequence number acknowledged in the current window

	chunk []beatsEvent
	held  int64 // memory budget held for the chunk
	zr    io.ReadCloser
	zlim  *io.LimitedReader
	hdr   [8]byte
}

// beatsEvent is one event of a chunk.
type beatsEvent struct {
	seq      uint32
	json     []byte
	tooLarge bool
}

func (bc *beatsConn) count(err error) {
	s := bc.s
	switch {
	case err == nil, errors.Is(err, errBeatsShutdown):
		return
	case errors.Is(err, errLumberTooBig):
		s.c.drop(rTooLarge)
	case errors.Is(err, errLumberFrame):
		s.c.drop(rBadFrame)
	case isTimeout(err):
		s.c.drop(rReadTimeout)
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, io.ErrUnexpectedEOF):
		return
	default:
		s.c.drop(rIO)
	}
	s.log.Debug("beats connection closed", zap.String(fRemote, bc.remote), zap.Error(err))
}

// run serves windows until the peer leaves or breaks the protocol.
func (bc *beatsConn) run() error {
	s := bc.s
	for {
		_ = bc.conn.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		h := bc.hdr[:2]
		if _, err := io.ReadFull(bc.in, h); err != nil {
			return err
		}
		if h[0] != ljVersion {
			return fmt.Errorf("read lumberjack frame: %w: version %q (only v2 is served)", errLumberFrame, h[0])
		}
		if h[1] != ljWindow {
			return fmt.Errorf("read lumberjack frame: %w: %q outside a window", errLumberFrame, h[1])
		}
		_ = bc.conn.SetReadDeadline(time.Now().Add(s.cfg.Timeout))
		b := bc.hdr[:4]
		if _, err := io.ReadFull(bc.in, b); err != nil {
			return err
		}
		n := binary.BigEndian.Uint32(b)
		if n > maxWindowEvents {
			return fmt.Errorf("read lumberjack window: %w: %d events announced (at most %d)", errLumberTooBig, n, maxWindowEvents)
		}
		if n == 0 {
			continue
		}
		if err := bc.window(n); err != nil {
			return err
		}
	}
}

// window reads the n events of a window and hands them on in chunks.
func (bc *beatsConn) window(n uint32) error {
	s := bc.s
	bc.setAcked(0)
	for remaining := n; remaining > 0; {
		_ = bc.conn.SetReadDeadline(time.Now().Add(s.cfg.Timeout))
		src, err := bc.nextEventSource()
		if err != nil {
			return err
		}
		if src == nil {
			continue // a compressed frame ended; the next frame follows
		}
		b := bc.hdr[:8]
		if _, err := io.ReadFull(src, b); err != nil {
			return bc.frameErr(err)
		}
		remaining--
		seq, size := binary.BigEndian.Uint32(b[:4]), binary.BigEndian.Uint32(b[4:])
		if int64(size) > int64(s.cfg.MaxBatchBytes) {
			return fmt.Errorf("read lumberjack event: %w: %d bytes announced", errLumberTooBig, size)
		}
		if int(size) > s.cfg.MaxEventBytes {
			if _, err := io.CopyN(io.Discard, src, int64(size)); err != nil {
				return bc.frameErr(err)
			}
			bc.chunk = append(bc.chunk, beatsEvent{seq: seq, tooLarge: true})
			continue
		}
		if err := bc.reserve(int64(size)); err != nil {
			return err
		}
		ev := beatsEvent{seq: seq, json: make([]byte, size)}
		if _, err := io.ReadFull(src, ev.json); err != nil {
			return bc.frameErr(err)
		}
		bc.chunk = append(bc.chunk, ev)
		if len(bc.chunk) >= s.cfg.MaxBatchEvents || bc.held >= int64(s.cfg.MaxBatchBytes) {
			if err := bc.flush(); err != nil {
				return err
			}
		}
	}
	if bc.zr != nil {
		// The window's events are read: the compressed frame must end.
		var one [1]byte
		if k, err := bc.zr.Read(one[:]); k != 0 || (err != nil && err != io.EOF) {
			return fmt.Errorf("inflate lumberjack frame: %w: data after the window's last event", errLumberFrame)
		}
		if err := bc.endCompressed(); err != nil {
			return err
		}
	}
	return bc.flush()
}

// nextEventSource returns where the next event frame is read from: the
// inflated stream of a compressed frame, or the connection. It returns
// nil when a compressed frame just ended.
func (bc *beatsConn) nextEventSource() (io.Reader, error) {
	s := bc.s
	h := bc.hdr[:2]
	if bc.zr != nil {
		if _, err := io.ReadFull(bc.zr, h); err != nil {
			if err != io.EOF {
				return nil, fmt.Errorf("inflate lumberjack frame: %w", errors.Join(errLumberFrame, err))
			}
			return nil, bc.endCompressed()
		}
		if h[0] != ljVersion || h[1] != ljJSON {
			return nil, fmt.Errorf("read compressed lumberjack frame: %w: type %q", errLumberFrame, h[1])
		}
		return bc.zr, nil
	}
	if _, err := io.ReadFull(bc.in, h); err != nil {
		return nil, err
	}
	if h[0] != ljVersion {
		return nil, fmt.Errorf("read lumberjack frame: %w: version %q", errLumberFrame, h[0])
	}
	switch h[1] {
	case ljJSON:
		return bc.in, nil
	case ljCompressed:
		b := bc.hdr[:4]
		if _, err := io.ReadFull(bc.in, b); err != nil {
			return nil, err
		}
		n := binary.BigEndian.Uint32(b)
		if int64(n) > int64(s.cfg.MaxBatchBytes) {
			return nil, fmt.Errorf("read lumberjack compressed frame: %w: %d bytes", errLumberTooBig, n)
		}
		bc.zlim = &io.LimitedReader{R: bc.in, N: int64(n)}
		zr, err := zlib.NewReader(bc.zlim)
		if err != nil {
			return nil, fmt.Errorf("inflate lumberjack frame: %w", errors.Join(errLumberFrame, err))
		}
		bc.zr = zr
		return nil, nil
	case ljWindow:
		return nil, fmt.Errorf("read lumberjack window: %w: new window inside a window", errLumberFrame)
	}
	return nil, fmt.Errorf("read lumberjack frame: %w: type %q", errLumberFrame, h[1])
}

func (bc *beatsConn) endCompressed() error {
	err := bc.zr.Close()
	bc.zr = nil
	if err != nil {
		return fmt.Errorf("inflate lumberjack frame: %w", errors.Join(errLumberFrame, err))
	}
	_, err = io.Copy(io.Discard, bc.zlim)
	return err
}

// frameErr names an error inside an event frame: the end of a compressed
// frame there is a truncated event.
func (bc *beatsConn) frameErr(err error) error {
	if bc.zr != nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
		return fmt.Errorf("inflate lumberjack frame: %w: truncated event", errLumberFrame)
	}
	return err
}

// reserve takes n bytes of the memory budget for the next event. When the
// budget cannot give them at once, the events already held are handed on
// and acknowledged first (their bytes go back), then it waits, keeping the
// forwarder waiting with keepalive ACKs; nothing more is read meanwhile.
func (bc *beatsConn) reserve(n int64) error {
	b := bc.s.cfg.Budget
	if b == nil {
		bc.held += n
		return nil
	}
	if b.TryAcquire(n) {
		bc.held += n
		return nil
	}
	if len(bc.chunk) > 0 {
		if err := bc.flush(); err != nil {
			return err
		}
	}
	var err error
	bc.whileBusy(func() { err = b.Acquire(bc.s.ctx, n) })
	if err != nil {
		return errBeatsShutdown
	}
	bc.held += n
	return nil
}

// release gives back what the connection holds.
func (bc *beatsConn) release() {
	bc.s.cfg.Budget.Release(bc.held)
	bc.held = 0
	bc.chunk = nil
	if bc.zr != nil {
		_ = bc.zr.Close()
		bc.zr = nil
	}
}

// flush hands the chunk's events to the handler and acknowledges them.
func (bc *beatsConn) flush() error {
	if len(bc.chunk) == 0 {
		return nil
	}
	var err error
	bc.whileBusy(func() { err = bc.handle() })
	if err != nil {
		return err
	}
	last := bc.chunk[len(bc.chunk)-1].seq
	clear(bc.chunk)
	bc.chunk = bc.chunk[:0]
	bc.s.cfg.Budget.Release(bc.held)
	bc.held = 0
	bc.setAcked(last)
	return bc.ack(last)
}

// handle offers each event of the chunk to the handler, retrying while it
// is busy, then waits for the handler's Sync (Syncer) to make them durable
// (the client waits, kept alive by keepalive ACKs).
func (bc *beatsConn) handle() error {
	s := bc.s
	now := time.Now()
	for i := range bc.chunk {
		ev := &bc.chunk[i]
		if ev.tooLarge {
			s.c.drop(rTooLarge)
			continue
		}
		if !looksLikeJSONObject(ev.json) { // full validation is the handler's: it parses anyway
			s.c.drop(rUnreadable)
			continue
		}
		m := Message{Transport: TransportBeats, Remote: bc.remote, Payload: ev.json, Received: now,
			Meta: map[string]string{}}
		if bc.subject != "" {
			m.Meta[MetaClientCert] = bc.subject
		}
		res, why, stalled := handleWithRetry(s.ctx, s.h, m)
		if stalled {
			s.c.drop(why)
		}
		if errors.Is(res.Err, ErrBusy) {
			return errBeatsShutdown // no ACK: the client resends
		}
		s.c.result(len(ev.json), res)
		if res.Err != nil {
			s.c.drop(rUnreadable)
		}
		ev.json = nil // the handler may keep it; the chunk does not
	}
	// Acknowledge only what is durable: while the handler cannot store
	// the chunk, the (partial) ACK is withheld (the client waits, kept
	// alive by keepalive ACKs).
	if failed, err := syncWithRetry(s.ctx, s.h); failed || err != nil {
		s.c.drop(rNotDurable)
		if err != nil {
			return errBeatsShutdown // shutting down: no ACK, the client resends
		}
	}
	return nil
}

// whileBusy runs fn while sending keepalive ACKs (the last sequence number
// acknowledged in the window) every Keepalive, so the client keeps waiting.
func (bc *beatsConn) whileBusy(fn func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(bc.s.cfg.Keepalive)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if bc.ack(bc.ackedNow()) != nil {
					return
				}
			}
		}
	}()
	fn()
	close(done)
	<-stopped
}

func (bc *beatsConn) setAcked(seq uint32) {
	bc.wmu.Lock()
	bc.acked = seq
	bc.wmu.Unlock()
}

func (bc *beatsConn) ackedNow() uint32 {
	bc.wmu.Lock()
	defer bc.wmu.Unlock()
	return bc.acked
}

// ack writes an ACK frame.
func (bc *beatsConn) ack(seq uint32) error {
	bc.wmu.Lock()
	defer bc.wmu.Unlock()
	var b [6]byte
	b[0], b[1] = ljVersion, ljACK
	binary.BigEndian.PutUint32(b[2:], seq)
	_ = bc.conn.SetWriteDeadline(time.Now().Add(bc.s.cfg.Timeout))
	_, err := bc.conn.Write(b[:])
	return err
}

// looksLikeJSONObject: Beats events are JSON objects.
func looksLikeJSONObject(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) >= 2 && b[0] == '{' && b[len(b)-1] == '}'
}
