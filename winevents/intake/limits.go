package intake

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Defaults applied to zero config fields.
const (
	DefaultMaxBodyBytes      = 10 << 20 // HTTP request body, before and after gzip
	DefaultMaxMessageBytes   = 256 << 10
	DefaultMaxConns          = 256
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 60 * time.Second
	DefaultIdleTimeout       = 5 * time.Minute
	DefaultBeatsMaxEvent     = 1 << 20
	DefaultBeatsMaxBatch     = 64 << 20 // decompressed bytes of one window
	DefaultBeatsMaxConns     = 64
	DefaultBeatsTimeout      = 30 * time.Second
	maxUDPDatagram           = 65535
)

// log field names.
const (
	fTransport = "transport"
	fAddr      = "addr"
	fRemote    = "remote"
	fReason    = "reason"
	fPath      = "path"
	fSize      = "size"
	fLimit     = "limit"
	fOffset    = "offset"
	fInode     = "inode"
)

func orDefault[T int | int64 | time.Duration](v, d T) T {
	if v <= 0 {
		return d
	}
	return v
}

// limitListener caps the number of open connections: a connection over the
// cap is accepted and closed at once (counted as too_many_conns), so the
// peer sees a clear refusal instead of a hanging backlog.
type limitListener struct {
	net.Listener
	sem chan struct{}
	c   *counters
	log *zap.Logger
}

func newLimitListener(l net.Listener, max int, c *counters, log *zap.Logger) *limitListener {
	return &limitListener{Listener: l, sem: make(chan struct{}, max), c: c, log: log}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			// e.g. EMFILE: keep serving once descriptors free up
			l.c.drop(rIO)
			l.log.Warn("accept failed, retrying", zap.Error(err))
			time.Sleep(100 * time.Millisecond)
			continue
		}
		select {
		case l.sem <- struct{}{}:
			l.c.open.Add(1)
			l.c.conns.Add(1)
			return &limitConn{Conn: conn, release: func() { l.c.open.Add(-1); <-l.sem }}, nil
		default:
			l.c.drop(rTooManyConns)
			l.log.Warn("connection refused: connection limit reached",
				zap.String(fRemote, conn.RemoteAddr().String()), zap.Int(fLimit, cap(l.sem)))
			_ = conn.Close()
		}
	}
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// isTimeout reports whether err is a deadline expiry.
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
