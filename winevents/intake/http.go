package intake

import (
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
	"slices"
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
	Addr  string // host:port to bind, e.g. "127.0.0.1:0"
	Token string // bearer token (named DefaultTokenName); empty: see Tokens
	// Tokens are further bearer tokens by name; a request with any of them
	// is authenticated and carries the name in Meta[MetaTokenName]. With
	// neither Token nor Tokens no token is required.
	Tokens   map[string]string
	TLS      *tls.Config // nil: plain HTTP; ClientAuth RequireAndVerifyClientCert: mTLS
	Insecure bool        // allow a non-loopback address without token or mTLS
	// PreAuth bounds connections that have not authenticated yet (see
	// PreAuthConfig); Budget is the intake memory budget bodies are read
	// under (nil: none).
	PreAuth PreAuthConfig
	Budget  *MemoryBudget
	// BudgetWait is how long a request waits for the memory budget before
	// it is answered 429 (default 5 s).
	BudgetWait time.Duration

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
	pool *pool
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
	cfg.BudgetWait = orDefault(cfg.BudgetWait, defaultBudgetWait)
	logger = logger.Named("intake.http")

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen http: %w", err)
	}
	tokens := map[string]string{}
	for name, t := range cfg.Tokens {
		tokens[name] = t
	}
	if cfg.Token != "" {
		tokens[DefaultTokenName] = cfg.Token
	}
	tm := newTokenMatcher(tokens)
	if err := checkExposure(TransportHTTP, ln.Addr(), tm != nil || requiresClientCert(cfg.TLS),
		cfg.Insecure, "set a bearer token or require client certificates"); err != nil {
		_ = ln.Close()
		return nil, err
	}
	s := &HTTPServer{cfg: cfg, h: h, log: logger, c: newCounters(TransportHTTP),
		tok: tm, done: make(chan struct{})}
	// Peers authenticate with a token (a request that carries it) or, on
	// TLS without one, by completing the handshake (with a verified client
	// certificate when mTLS is required).
	s.pool = newPool(cfg.MaxConns, tm != nil || cfg.TLS != nil, cfg.PreAuth, s.c, logger)
	var l net.Listener = s.pool.listener(ln)
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
	if tm != nil && cfg.TLS == nil && !isLoopback(ln.Addr()) {
		logger.Warn("bearer token over plain HTTP on a non-loopback address: the token crosses the network in clear text; configure TLS",
			zap.String(fAddr, ln.Addr().String()))
	}
	logger.Info("http intake listening", zap.String(fAddr, ln.Addr().String()),
		zap.Bool("tls", cfg.TLS != nil), zap.Bool("mtls", requiresClientCert(cfg.TLS)),
		zap.Bool("token", tm != nil))
	return s, nil
}

// Addr is the bound address.
func (s *HTTPServer) Addr() net.Addr { return s.ln.Addr() }

// Stats returns a snapshot of the counters.
func (s *HTTPServer) Stats() Stats { return s.c.snapshot() }

// Close stops accepting, lets running requests finish (up to 5 s) and closes.
func (s *HTTPServer) Close() error {
	s.pool.closeUnauthenticated() // nothing in flight: Shutdown would wait for them
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
	pc     *poolConn   // the pool slot (nil when not pooled)
}

type httpConnKey struct{}

func (s *HTTPServer) connContext(ctx context.Context, c net.Conn) context.Context {
	hc := &httpConn{pc: poolConnOf(c)}
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
		if s.tok == nil && hc.pc != nil {
			// TLS without a token: the handshake (with the client
			// certificate mTLS requires) is done by now.
			if err := hc.pc.authenticated(); err != nil {
				_ = c.Close()
			}
		}
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
	tokenName := ""
	if s.tok != nil {
		auth := r.Header.Get("Authorization")
		scheme, tok, ok := strings.Cut(auth, " ")
		name, valid := "", false
		if ok && strings.EqualFold(scheme, "Bearer") {
			name, valid = s.tok.match(strings.TrimSpace(tok))
		}
		if !valid {
			s.c.drop(rUnauthorized)
			s.log.Debug("request refused: missing or wrong bearer token", zap.String(fRemote, r.RemoteAddr))
			w.Header().Set("WWW-Authenticate", `Bearer realm="knockwatch"`)
			// A peer without the token gets no keep-alive: its connection
			// would otherwise hold a slot until the idle timeout.
			w.Header().Set("Connection", "close")
			writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "missing or invalid bearer token"})
			return
		}
		tokenName = name
		if hc, ok := r.Context().Value(httpConnKey{}).(*httpConn); ok && hc.pc != nil {
			if err := hc.pc.authenticated(); err != nil {
				w.Header().Set("Connection", "close")
				w.Header().Set("Retry-After", "1")
				writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": "connection limit reached, retry later"})
				return
			}
		}
	}
	if r.Method != http.MethodPost {
		s.c.drop(rBadRequest)
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"error": "method not allowed: use POST"})
		return
	}
	body, held, status, err := s.readBody(w, r)
	defer s.cfg.Budget.Release(held)
	if err != nil {
		s.log.Debug("request refused", zap.String(fRemote, r.RemoteAddr), zap.Int("status", status), zap.Error(err))
		if status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		writeJSON(w, status, map[string]any{"error": err.Error()})
		return
	}
	m := Message{Transport: TransportHTTP, Remote: r.RemoteAddr, Payload: body, Received: time.Now(),
		Meta: map[string]string{}}
	if tokenName != "" {
		m.Meta[MetaTokenName] = tokenName
	}
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

// defaultBudgetWait is HTTPConfig.BudgetWait's default.
const defaultBudgetWait = 5 * time.Second

// budgetStep is how much of the memory budget a body of unknown size
// (gzip, chunked) takes at a time.
const budgetStep = 1 << 20

// readBody reads the (possibly gzip-compressed) body within the size limit,
// which applies to the bytes on the wire and to the decompressed bytes. It
// reads under the memory budget and returns how many bytes of it it holds
// (the caller releases them once the handler is done): a body of known
// size takes its size before it is read, waiting up to BudgetWait; one of
// unknown size takes a first step the same way and more as it grows, never
// waiting while it holds some (no two requests can wait on each other); a
// request that cannot get the budget is answered 429.
func (s *HTTPServer) readBody(w http.ResponseWriter, r *http.Request) (body []byte, held int64, status int, err error) {
	max := s.cfg.MaxBodyBytes
	if r.ContentLength > max {
		s.c.drop(rTooLarge)
		return nil, 0, http.StatusRequestEntityTooLarge, fmt.Errorf("body of %d bytes over the limit of %d", r.ContentLength, max)
	}
	var src io.Reader = http.MaxBytesReader(w, r.Body, max)
	gz := false
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		gz = true
	default:
		s.c.drop(rBadRequest)
		return nil, 0, http.StatusUnsupportedMediaType, fmt.Errorf("unsupported content encoding %q (use gzip or none)", enc)
	}
	known := !gz && r.ContentLength >= 0
	first := int64(budgetStep)
	if known {
		first = r.ContentLength
	}
	if s.cfg.Budget != nil && first > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.BudgetWait)
		err := s.cfg.Budget.Acquire(ctx, first)
		cancel()
		if err != nil {
			s.c.drop(rMemoryBudget)
			return nil, 0, http.StatusTooManyRequests, errors.New("intake memory budget exhausted, retry later")
		}
		held = first
	}
	if gz {
		zr, err := gzip.NewReader(src)
		if err != nil {
			st, err := s.bodyError(err, "read gzip body")
			return nil, held, st, err
		}
		defer zr.Close()
		src = zr
	}
	initial := first
	if !known {
		initial = 32 << 10
	}
	buf := make([]byte, 0, max64(initial, 512))
	for int64(len(buf)) <= max {
		if len(buf) == cap(buf) {
			// Full: probe for the end before growing.
			var one [1]byte
			n, rerr := src.Read(one[:])
			if rerr != nil && rerr != io.EOF {
				st, err := s.bodyError(rerr, "read body")
				return nil, held, st, err
			}
			if n == 0 {
				if rerr == io.EOF {
					break
				}
				continue
			}
			grow := max64(min(int64(cap(buf)), max+1-int64(len(buf))), 512)
			if need := int64(cap(buf)) + grow - held; s.cfg.Budget != nil && need > 0 {
				need = max64(need, budgetStep)
				if !s.cfg.Budget.TryAcquire(need) {
					s.c.drop(rMemoryBudget)
					return nil, held, http.StatusTooManyRequests, errors.New("intake memory budget exhausted, retry later")
				}
				held += need
			}
			buf = append(slices.Grow(buf, int(grow)), one[0])
			if rerr == io.EOF {
				break
			}
			continue
		}
		n, rerr := src.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			st, err := s.bodyError(rerr, "read body")
			return nil, held, st, err
		}
	}
	if int64(len(buf)) > max {
		s.c.drop(rTooLarge)
		return nil, held, http.StatusRequestEntityTooLarge, fmt.Errorf("decompressed body over the limit of %d bytes", max)
	}
	if len(buf) == 0 {
		s.c.drop(rBadRequest)
		return nil, held, http.StatusBadRequest, errors.New("empty body")
	}
	return buf, held, 0, nil
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
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
