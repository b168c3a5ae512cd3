package intake

import (
	"container/list"
	"errors"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
)

// PreAuthConfig bounds the connections of a listener whose peers have not
// authenticated yet: a TLS handshake not done (or done without the required
// client certificate), or, for HTTP with a bearer token, no request with a
// valid token yet. They get a pool of their own, so that however many of
// them connect, an authenticated forwarder still gets one of the MaxConns
// slots; they must authenticate within Timeout; one source address may hold
// at most PerSource of them; when the pool is full a new peer takes the slot
// of the oldest unauthenticated connection of the source that holds the
// most, as long as its own source holds fewer (a flood from a few addresses
// cannot keep a forwarder from another address out). Listeners that do not
// authenticate (plain TCP or HTTP without a token, on loopback) have no
// pre-authentication phase. Zero fields take the defaults.
type PreAuthConfig struct {
	MaxConns  int           // unauthenticated connections (default 64)
	PerSource int           // unauthenticated connections per source address (default 8)
	Timeout   time.Duration // time to authenticate (default 10 s)
}

func (c PreAuthConfig) withDefaults() PreAuthConfig {
	c.MaxConns = orDefault(c.MaxConns, DefaultPreAuthConns)
	c.PerSource = orDefault(c.PerSource, DefaultPreAuthPerSource)
	c.Timeout = orDefault(c.Timeout, DefaultPreAuthTimeout)
	return c
}

// errPoolFull is returned by poolConn.authenticated when the authenticated
// pool is full.
var errPoolFull = errors.New("connection limit reached")

// pool is a listener's connection budget: MaxConns for authenticated peers
// (every peer of a listener that does not authenticate) and a pre-auth pool.
type pool struct {
	mu       sync.Mutex
	max      int
	pre      PreAuthConfig
	auth     bool // peers start unauthenticated
	open     int  // authenticated (or not authenticating) connections
	nPre     int
	bySource map[string]*list.List // unauthenticated connections per source, oldest first
	c        *counters
	log      *zap.Logger
}

func newPool(max int, auth bool, pre PreAuthConfig, c *counters, log *zap.Logger) *pool {
	return &pool{max: max, pre: pre.withDefaults(), auth: auth, bySource: map[string]*list.List{}, c: c, log: log}
}

// poolListener admits connections into a pool: a connection over a limit
// is accepted and closed at once (counted), so the peer sees a clear
// refusal instead of a hanging backlog.
type poolListener struct {
	net.Listener
	p *pool
}

func (p *pool) listener(l net.Listener) *poolListener { return &poolListener{Listener: l, p: p} }

func (l *poolListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			// e.g. EMFILE: keep serving once descriptors free up
			l.p.c.drop(rIO)
			l.p.log.Warn("accept failed, retrying", zap.Error(err))
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if pc := l.p.admit(conn); pc != nil {
			return pc, nil
		}
	}
}

// poolConn is a connection admitted by a pool.
type poolConn struct {
	net.Conn
	p      *pool
	src    string
	state  int           // connMain, connPre, connClosed; guarded by p.mu
	elem   *list.Element // in p.bySource[src] while connPre
	timer  *time.Timer
	closed sync.Once
}

const (
	connMain = iota
	connPre
	connClosed
)

func sourceOf(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

// admit returns the admitted connection, or nil after closing a refused
// one.
func (p *pool) admit(conn net.Conn) *poolConn {
	pc := &poolConn{Conn: conn, p: p, src: sourceOf(conn)}
	var evict *poolConn
	p.mu.Lock()
	switch {
	case !p.auth:
		if p.open >= p.max {
			p.mu.Unlock()
			p.refuse(conn, rTooManyConns, "connection refused: connection limit reached", p.max)
			return nil
		}
		p.open++
		pc.state = connMain
	default:
		l := p.bySource[pc.src]
		if l != nil && l.Len() >= p.pre.PerSource {
			p.mu.Unlock()
			p.refuse(conn, rPreAuthLimit, "connection refused: too many unauthenticated connections from this source", p.pre.PerSource)
			return nil
		}
		if p.nPre >= p.pre.MaxConns {
			evict = p.biggestOldest(pc.src)
			if evict == nil {
				p.mu.Unlock()
				p.refuse(conn, rPreAuthLimit, "connection refused: unauthenticated connection limit reached", p.pre.MaxConns)
				return nil
			}
			p.unlinkPre(evict)
			evict.state = connClosed
		}
		if l == nil {
			l = list.New()
			p.bySource[pc.src] = l
		}
		pc.elem = l.PushBack(pc)
		p.nPre++
		p.c.preAuth.Store(int64(p.nPre))
		pc.state = connPre
		pc.timer = time.AfterFunc(p.pre.Timeout, pc.expire)
	}
	p.mu.Unlock()
	p.c.open.Add(1)
	p.c.conns.Add(1)
	if evict != nil {
		p.c.drop(rPreAuthEvicted)
		p.log.Debug("unauthenticated connection closed to admit a peer from a source with fewer",
			zap.String(fRemote, evict.RemoteAddr().String()))
		evict.stopTimer()
		_ = evict.Conn.Close()
		evict.release()
	}
	return pc
}

func (p *pool) refuse(conn net.Conn, r reason, msg string, limit int) {
	p.c.drop(r)
	p.log.Warn(msg, zap.String(fRemote, conn.RemoteAddr().String()), zap.Int(fLimit, limit))
	_ = conn.Close()
}

// biggestOldest returns the oldest unauthenticated connection of the source
// with the most of them, if that source holds more than src does.
func (p *pool) biggestOldest(src string) *poolConn {
	var best *list.List
	for s, l := range p.bySource {
		if best == nil || l.Len() > best.Len() || (l.Len() == best.Len() && s < sourceOfList(best)) {
			best = l
		}
	}
	mine := 0
	if l := p.bySource[src]; l != nil {
		mine = l.Len()
	}
	if best == nil || best.Len() <= mine {
		return nil
	}
	return best.Front().Value.(*poolConn)
}

func sourceOfList(l *list.List) string { return l.Front().Value.(*poolConn).src }

// unlinkPre removes pc from the pre-auth bookkeeping (p.mu held).
func (p *pool) unlinkPre(pc *poolConn) {
	l := p.bySource[pc.src]
	l.Remove(pc.elem)
	pc.elem = nil
	if l.Len() == 0 {
		delete(p.bySource, pc.src)
	}
	p.nPre--
	p.c.preAuth.Store(int64(p.nPre))
}

// expire closes a connection that did not authenticate in time.
func (pc *poolConn) expire() {
	p := pc.p
	p.mu.Lock()
	if pc.state != connPre {
		p.mu.Unlock()
		return
	}
	p.unlinkPre(pc)
	pc.state = connClosed
	p.mu.Unlock()
	p.c.drop(rPreAuthTimeout)
	p.log.Debug("connection closed: not authenticated in time", zap.String(fRemote, pc.RemoteAddr().String()),
		zap.Duration("timeout", p.pre.Timeout))
	_ = pc.Conn.Close()
	pc.release()
}

func (pc *poolConn) stopTimer() {
	if pc.timer != nil {
		pc.timer.Stop()
	}
}

// authenticated moves pc from the pre-auth pool to the authenticated one;
// it is a no-op for a connection already there. When the authenticated
// pool is full it returns errPoolFull (counted too_many_conns) and the
// caller closes the connection.
func (pc *poolConn) authenticated() error {
	p := pc.p
	p.mu.Lock()
	switch pc.state {
	case connMain:
		p.mu.Unlock()
		return nil
	case connClosed:
		p.mu.Unlock()
		return net.ErrClosed
	}
	pc.stopTimer()
	p.unlinkPre(pc)
	if p.open >= p.max {
		pc.state = connClosed
		p.mu.Unlock()
		p.c.drop(rTooManyConns)
		p.log.Warn("authenticated connection refused: connection limit reached",
			zap.String(fRemote, pc.RemoteAddr().String()), zap.Int(fLimit, p.max))
		return errPoolFull
	}
	p.open++
	pc.state = connMain
	p.mu.Unlock()
	return nil
}

// release takes the connection off the open gauge, once (its slot is
// given back where its state changes, under the pool's lock).
func (pc *poolConn) release() {
	pc.closed.Do(func() { pc.p.c.open.Add(-1) })
}

func (pc *poolConn) Close() error {
	err := pc.Conn.Close()
	p := pc.p
	p.mu.Lock()
	switch pc.state {
	case connPre:
		pc.stopTimer()
		p.unlinkPre(pc)
	case connMain:
		p.open--
	}
	pc.state = connClosed
	p.mu.Unlock()
	pc.release()
	return err
}

// poolConnOf finds the pool connection under c (itself or below TLS).
func poolConnOf(c net.Conn) *poolConn {
	for {
		switch v := c.(type) {
		case *poolConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
}

// isClosedByPool reports whether c was closed by its pool (not
// authenticated in time, or evicted): already counted as such.
func isClosedByPool(c net.Conn) bool {
	pc := poolConnOf(c)
	if pc == nil {
		return false
	}
	pc.p.mu.Lock()
	defer pc.p.mu.Unlock()
	return pc.state == connClosed
}

// closeUnauthenticated closes every connection still in the pre-auth pool
// (at shutdown).
func (p *pool) closeUnauthenticated() {
	p.mu.Lock()
	var all []*poolConn
	for _, l := range p.bySource {
		for e := l.Front(); e != nil; e = e.Next() {
			all = append(all, e.Value.(*poolConn))
		}
	}
	p.mu.Unlock()
	for _, pc := range all {
		_ = pc.Close()
	}
}
