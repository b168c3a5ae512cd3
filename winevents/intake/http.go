package intake

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// EventsPath is the HTTP intake endpoint.
const EventsPath = "/v1/events"

// HTTPConfig configures the HTTP(S) listener.
type HTTPConfig struct {
	Addr     string      // host:port to bind, e.g. "127.0.0.1:0"
	Token    string      // bearer token; empty: no token required
	TLS      *tls.Config // nil: plain HTTP; ClientAuth RequireAndVerifyClientCert: mTLS
	Insecure bool        // allow a non-loopback address without token or mTLS

	MaxBodyBytes      int64         // request body limit, compressed and decompressed (default 10 MiB)
	MaxConns          int           // open connections (default 256)
	ReadHeaderTimeout time.Duration // default 10 s
	ReadTimeout       time.Duration // whole request incl. body (default 60 s)
	IdleTimeout       time.Duration // keep-alive idle (default 5 min)
}

// HTTPServer receives POST /v1/events.
type HTTPServer struct {
	cfg  HTTPConfig
	h    Handler
	log  *zap.Logger
	c    *counters
	tok  *tokenMatcher
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
	// conns follows open connections (net.Conn -> *httpConn).
	conns sync.Map
}

// NewHTTPServer binds cfg.Addr and serves until Close.
func NewHTTPServer(cfg HTTPConfig, h Handler, logger *zap.Logger) (*HTTPServer, error) {
	cfg.MaxBodyBytes = orDefault(cfg.MaxBodyBytes, DefaultMaxBodyBytes)
	cfg.MaxConns = orDefault(cfg.MaxConns, DefaultMaxConns)
	cfg.ReadHeaderTimeout = orDefault(cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	cfg.ReadTimeout = orDefault(cfg.ReadTimeout, DefaultReadTimeout)
	cfg.IdleTimeout = orDefault(cfg.IdleTimeout, DefaultIdleTimeout)
	logger = logger.Named("intake.http")

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen http: %w", err)
	}
	if err := checkExposure(TransportHTTP, ln.Addr(), cfg.Token != "" || requiresClientCert(cfg.TLS),
		cfg.Insecure, "set a bearer token or require client certificates"); err != nil {
		_ = ln.Close()
		return nil, err
	}
	s := &HTTPServer{cfg: cfg, h: h, log: logger, c: newCounters(TransportHTTP),
		tok: newTokenMatcher(cfg.Token), done: make(chan struct{})}
	var l net.Listener = newLimitListener(ln, cfg.MaxConns, s.c, logger)
	if cfg.TLS != nil {
		l = tls.NewListener(l, cfg.TLS)
	}
	s.ln = ln
	mux := http.NewServeMux()
	mux.HandleFunc(EventsPath, s.serveEvents)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		s.c.drop(rBadRequest)
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "not found: POST " + EventsPath})
	})
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if hc, ok := r.Context().Value(httpConnKey{}).(*httpConn); ok {
				hc.served.Store(true)
			}
			mux.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.ReadTimeout + 30*time.Second,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(&httpErrorLog{s: s}, "", 0),
		ConnContext:       s.connContext,
		ConnState:         s.connState,
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("http intake stopped", zap.Error(err))
		}
	}()
	if cfg.Token != "" && cfg.TLS == nil && !isLoopback(ln.Addr()) {
		logger.Warn("bearer token over plain HTTP on a non-loopback address: the token crosses the network in clear text; configure TLS",
			zap.String(fAddr, ln.Addr().String()))
	}
	logger.Info("http intake listening", zap.String(fAddr, ln.Addr().String()),
		zap.Bool("tls", cfg.TLS != nil), zap.Bool("mtls", requiresClientCert(cfg.TLS)),
		zap.Bool("token", cfg.Token != ""))
	return s, nil
}

// Addr is the bound address.
func (s *HTTPServer) Addr() net.Addr { return s.ln.Addr() }

// Stats returns a snapshot of the counters.
func (s *HTTPServer) Stats() Stats { return s.c.snapshot() }

// Close stops accepting, lets running requests finish (up to 5 s) and closes.
func (s *HTTPServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = s.srv.Close()
	}
	<-s.done
	return err
}

// httpConn follows one connection, so that a client that sent bytes but
// never completed a request (slowloris: net/http answers 408 and closes
// without calling a handler) is counted as a read timeout.
type httpConn struct {
	active atomic.Bool // read at least one byte of a request
	served atomic.Bool // a request reached a handler
}

type httpConnKey struct{}

func (s *HTTPServer) connContext(ctx context.Context, c net.Conn) context.Context {
	hc := &httpConn{}
	s.conns.Store(c, hc)
	return context.WithValue(ctx, httpConnKey{}, hc)
}

func (s *HTTPServer) connState(c net.Conn, st http.ConnState) {
	v, ok := s.conns.Load(c)
	if !ok {
		return
	}
	hc := v.(*httpConn)
	switch st {
	case http.StateActive:
		hc.active.Store(true)
	case http.StateIdle:
		hc.active.Store(false)
		hc.served.Store(false)
	case http.StateClosed, http.StateHijacked:
		s.conns.Delete(c)
		if hc.active.Load() && !hc.served.Load() {
			s.c.drop(rReadTimeout)
		}
	}
}

func (s *HTTPServer) serveEvents(w http.ResponseWriter, r *http.Request) {
	if s.tok != nil {
		auth := r.Header.Get("Authorization")
		scheme, tok, ok := strings.Cut(auth, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || !s.tok.match(strings.TrimSpace(tok)) {
			s.c.drop(rUnauthorized)
			s.log.Debug("request refused: missing or wrong bearer token", zap.String(fRemote, r.RemoteAddr))
			w.Header().Set("WWW-Authenticate", `Bearer realm="knockwatch"`)
			writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "missing or invalid bearer token"})
			return
		}
	}
	if r.Method != http.MethodPost {
		s.c.drop(rBadRequest)
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"error": "method not allowed: use POST"})
		return
	}
	body, status, err := s.readBody(w, r)
	if err != nil {
		s.log.Debug("request refused", zap.String(fRemote, r.RemoteAddr), zap.Int("status", status), zap.Error(err))
		writeJSON(w, status, map[string]any{"error": err.Error()})
		return
	}
	m := Message{Transport: TransportHTTP, Remote: r.RemoteAddr, Payload: body, Received: time.Now(),
		Meta: map[string]string{}}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		m.Meta[MetaContentTyp] = ct
	}
	if sub := peerSubject(r.TLS); sub != "" {
		m.Meta[MetaClientCert] = sub
	}
	res := s.h.Handle(r.Context(), m)
	if res.Err == nil {
		// Acknowledge only what is durable.
		if err := syncHandler(r.Context(), s.h); err != nil {
			res.Err = fmt.Errorf("%w: %w: %w", ErrNotDurable, ErrBusy, err)
		}
	}
	if errors.Is(res.Err, ErrNotDurable) {
		s.c.drop(rNotDurable)
		s.log.Warn("event not acknowledged: the handler could not store it durably", zap.String(fRemote, r.RemoteAddr), zap.Error(res.Err))
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": "events could not be stored durably; retry later"})
		return
	}
	if errors.Is(res.Err, ErrBusy) {
		s.c.drop(rBusy)
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"error": "busy, retry later"})
		return
	}
	s.c.result(len(body), res)
	if res.Err != nil {
		s.c.drop(rUnreadable)
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "unreadable body: " + res.Err.Error(),
			"accepted": res.Accepted, "rejected": res.Rejected})
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"accepted": res.Accepted, "rejected": res.Rejected})
}

// readBody reads the (possibly gzip-compressed) body within the size limit,
// which applies to the bytes on the wire and to the decompressed bytes.
func (s *HTTPServer) readBody(w http.ResponseWriter, r *http.Request) ([]byte, int, error) {
	max := s.cfg.MaxBodyBytes
	if r.ContentLength > max {
		s.c.drop(rTooLarge)
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("body of %d bytes over the limit of %d", r.ContentLength, max)
	}
	var src io.Reader = http.MaxBytesReader(w, r.Body, max)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(src)
		if err != nil {
			st, err := s.bodyError(err, "read gzip body")
			return nil, st, err
		}
		defer zr.Close()
		src = zr
	default:
		s.c.drop(rBadRequest)
		return nil, http.StatusUnsupportedMediaType, fmt.Errorf("unsupported content encoding %q (use gzip or none)", enc)
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	n, err := buf.ReadFrom(io.LimitReader(src, max+1))
	if err != nil {
		st, err := s.bodyError(err, "read body")
		return nil, st, err
	}
	if n > max {
		s.c.drop(rTooLarge)
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("decompressed body over the limit of %d bytes", max)
	}
	if n == 0 {
		s.c.drop(rBadRequest)
		return nil, http.StatusBadRequest, errors.New("empty body")
	}
	return buf.Bytes(), 0, nil
}

func (s *HTTPServer) bodyError(err error, what string) (int, error) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		s.c.drop(rTooLarge)
		return http.StatusRequestEntityTooLarge, fmt.Errorf("body over the limit of %d bytes", s.cfg.MaxBodyBytes)
	case isTimeout(err):
		s.c.drop(rReadTimeout)
		return http.StatusRequestTimeout, fmt.Errorf("%s: %w", what, err)
	default:
		s.c.drop(rBadRequest)
		return http.StatusBadRequest, fmt.Errorf("%s: %w", what, err)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// httpErrorLog routes net/http's internal errors to zap and counts TLS
// handshake failures.
type httpErrorLog struct{ s *HTTPServer }

func (e *httpErrorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "TLS handshake error") {
		e.s.c.drop(rTLSHandshake)
	}
	e.s.log.Debug("http server", zap.String("detail", msg))
	return len(p), nil
}
