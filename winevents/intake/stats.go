package intake

import "sync/atomic"

// Reasons a transport refuses or loses something, as used in Stats.Dropped.
const (
	ReasonTooLarge     = "too_large"      // message/body/record over the size limit
	ReasonUnauthorized = "unauthorized"   // missing or wrong bearer token
	ReasonBadFrame     = "bad_frame"      // framing or protocol violation
	ReasonBadSyslog    = "bad_syslog"     // not a syslog message nor a bare JSON/XML event
	ReasonBadRequest   = "bad_request"    // HTTP method/path/encoding or unreadable gzip
	ReasonUnreadable   = "unreadable"     // the handler could not read the payload as a whole
	ReasonBusy         = "busy"           // handler backpressure (HTTP 429, UDP drop, stall elsewhere)
	ReasonReadTimeout  = "read_timeout"   // peer too slow or idle past the limit
	ReasonTooManyConns = "too_many_conns" // connection refused at the connection limit
	ReasonTLSHandshake = "tls_handshake"  // TLS handshake failed (incl. missing client certificate)
	ReasonTruncated    = "truncated"      // followed file shrank (copytruncate); reading restarts at 0
	ReasonIO           = "io"             // read/stat/open error
	ReasonTooManyFiles = "too_many_files" // followed-file limit reached
	// ReasonPreAuthLimit: a connection refused because the unauthenticated
	// pool, or its source's share of it, was full.
	ReasonPreAuthLimit = "preauth_limit"
	// ReasonPreAuthTimeout: a connection closed because it did not
	// authenticate (TLS handshake, valid token) within the pre-auth timeout.
	ReasonPreAuthTimeout = "preauth_timeout"
	// ReasonPreAuthEvicted: an unauthenticated connection closed to admit
	// a peer from a source that held fewer.
	ReasonPreAuthEvicted = "preauth_evicted"
	// ReasonMemoryBudget: a message refused because the intake memory
	// budget stayed exhausted (HTTP 429).
	ReasonMemoryBudget = "memory_budget"
	// ReasonNotDurable: the handler could not make it durable (Syncer
	// failed, a full disk): not acknowledged.
	ReasonNotDurable = "not_durable"
)

var allReasons = [...]string{
	ReasonTooLarge, ReasonUnauthorized, ReasonBadFrame, ReasonBadSyslog, ReasonBadRequest,
	ReasonUnreadable, ReasonBusy, ReasonReadTimeout, ReasonTooManyConns, ReasonTLSHandshake,
	ReasonTruncated, ReasonIO, ReasonTooManyFiles, ReasonPreAuthLimit, ReasonPreAuthTimeout, ReasonPreAuthEvicted,
	ReasonMemoryBudget, ReasonNotDurable,
}

type reason int

const (
	rTooLarge reason = iota
	rUnauthorized
	rBadFrame
	rBadSyslog
	rBadRequest
	rUnreadable
	rBusy
	rReadTimeout
	rTooManyConns
	rTLSHandshake
	rTruncated
	rIO
	rTooManyFiles
	rPreAuthLimit
	rPreAuthTimeout
	rPreAuthEvicted
	rMemoryBudget
	rNotDurable
	numReasons
)

// Stats is a snapshot of one transport's counters (plain values, safe to
// keep). The cmd layer exports them to Prometheus.
type Stats struct {
	Transport        string
	ConnectionsOpen  int64  // currently open connections (or followed files)
	ConnectionsTotal uint64 // connections accepted (or files opened) since start
	// ConnectionsUnauthenticated are the open connections that have not
	// authenticated yet (the pre-auth pool).
	ConnectionsUnauthenticated int64
	Received                   uint64 // messages handed to the handler
	Bytes                      uint64 // payload bytes handed to the handler
	Accepted                   uint64 // events the handler accepted
	Rejected                   uint64 // events the handler rejected
	// Dropped counts what the transport refused or lost, by reason (every
	// reason is present, zero or not).
	Dropped map[string]uint64
}

// counters are the live atomic counters behind Stats.
type counters struct {
	transport string
	open      atomic.Int64
	preAuth   atomic.Int64
	conns     atomic.Uint64
	received  atomic.Uint64
	bytes     atomic.Uint64
	accepted  atomic.Uint64
	rejected  atomic.Uint64
	dropped   [numReasons]atomic.Uint64
}

func newCounters(transport string) *counters { return &counters{transport: transport} }

func (c *counters) drop(r reason) { c.dropped[r].Add(1) }

// result records what the handler made of one message.
func (c *counters) result(n int, r Result) {
	c.received.Add(1)
	c.bytes.Add(uint64(n))
	if r.Accepted > 0 {
		c.accepted.Add(uint64(r.Accepted))
	}
	if r.Rejected > 0 {
		c.rejected.Add(uint64(r.Rejected))
	}
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Transport:                  c.transport,
		ConnectionsOpen:            c.open.Load(),
		ConnectionsTotal:           c.conns.Load(),
		ConnectionsUnauthenticated: c.preAuth.Load(),
		Received:                   c.received.Load(),
		Bytes:                      c.bytes.Load(),
		Accepted:                   c.accepted.Load(),
		Rejected:                   c.rejected.Load(),
		Dropped:                    make(map[string]uint64, numReasons),
	}
	for i, name := range allReasons {
		s.Dropped[name] = c.dropped[i].Load()
	}
	return s
}
