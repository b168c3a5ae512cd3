package intake

import (
	"context"
	"errors"
	"net"
	"time"
)

// Transport names, as they appear in Message.Transport and Stats.Transport.
const (
	TransportHTTP      = "http"
	TransportSyslogUDP = "syslog-udp"
	TransportSyslogTCP = "syslog-tcp"
	TransportSyslogTLS = "syslog-tls"
	TransportBeats     = "beats"
	TransportFile      = "file"
)

// Message is one unit a transport received: an HTTP body (decompressed), one
// syslog message's MSG part, one Beats event (its JSON), or one record (line
// or XML event) from a followed file.
//
// The transport never reuses Payload after Handle returns: the handler may
// keep it.
type Message struct {
	Transport string // "http", "syslog-udp", "syslog-tcp", "syslog-tls", "beats", "file"
	Remote    string // peer address, or the file path for "file"
	Payload   []byte
	Received  time.Time         // arrival time (never the event time)
	Meta      map[string]string // e.g. syslog hostname/appname, the TLS client's subject
}

// Result is what a Handler made of a Message.
type Result struct {
	Accepted, Rejected int   // events accepted / rejected inside the payload
	Err                error // non-nil: the payload as a whole was unreadable (or ErrBusy)
}

// Handler consumes messages. It is called concurrently from many connections
// and must return promptly once ctx is cancelled (the transports' Close waits
// for running calls).
type Handler interface {
	Handle(ctx context.Context, m Message) Result
}

// Syncer is implemented by a Handler whose Handle may return before what
// it took is durable (the pipeline stores evidence in its evidence log and
// fsyncs in batches). Transports that acknowledge — HTTP (202), Beats (the
// ACK) and the file follower (the saved position) — call Sync after the
// messages they acknowledge were handled and acknowledge only when it
// returned nil; an error is handled like ErrBusy (HTTP 503 with
// Retry-After, no Beats ACK, the file position not saved). Syslog has no
// acknowledgement to hold back.
type Syncer interface {
	Sync(ctx context.Context) error
}

// syncHandler calls h's Sync when it has one.
func syncHandler(ctx context.Context, h Handler) error {
	if s, ok := h.(Syncer); ok {
		return s.Sync(ctx)
	}
	return nil
}

// syncWithRetry syncs until it succeeds or ctx ends; it reports whether it
// failed at least once.
func syncWithRetry(ctx context.Context, h Handler) (bool, error) {
	failed := false
	for attempt := 0; ; attempt++ {
		err := syncHandler(ctx, h)
		if err == nil || ctx.Err() != nil {
			return failed, err
		}
		failed = true
		t := time.NewTimer(busyBackoff(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return failed, err
		case <-t.C:
		}
	}
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, m Message) Result

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, m Message) Result { return f(ctx, m) }

// ErrBusy is returned (possibly wrapped) in Result.Err by a Handler that
// applies backpressure: nothing of the message was consumed and it should be
// offered again later. HTTP answers 429, Beats withholds the acknowledgement,
// TCP syslog and files stop reading until the handler takes the message; UDP
// cannot push back and drops it (counted as busy).
var ErrBusy = errors.New("intake: handler busy")

// ErrNotDurable is wrapped, together with ErrBusy, in Result.Err by a
// Handler that took the message but could not make it durable (its
// evidence log is failing, a full disk): the message must not be
// acknowledged and should be offered again. HTTP answers 503 with
// Retry-After; the other transports treat it as ErrBusy. Both are counted
// as not_durable.
var ErrNotDurable = errors.New("intake: handler could not store the message durably")

// Listener is what every network transport returns.
type Listener interface {
	Addr() net.Addr
	Stats() Stats
	Close() error
}

// Meta keys set by the transports.
const (
	MetaHostname   = "hostname"
	MetaAppName    = "appname"
	MetaProcID     = "procid"
	MetaMsgID      = "msgid"
	MetaTimestamp  = "timestamp"
	MetaFacility   = "facility"
	MetaSeverity   = "severity"
	MetaSyslogFmt  = "syslog_format"
	MetaClientCert = "client_cert_subject"
	MetaTokenName  = "token_name" // the name of the bearer token a request carried
	MetaContentTyp = "content_type"
	MetaPath       = "path"
	MetaOffset     = "offset"
)

// busyBackoff returns how long to wait before offering a busy message again.
func busyBackoff(attempt int) time.Duration {
	d := 10 * time.Millisecond << min(attempt, 6) // 10ms .. 640ms
	return min(d, 500*time.Millisecond)
}

// handleWithRetry offers m until the handler takes it or ctx ends. It reports
// whether the handler was busy (or could not store it durably) at least
// once, and why the first time, so callers count the stall.
func handleWithRetry(ctx context.Context, h Handler, m Message) (Result, reason, bool) {
	stalled := false
	why := rBusy
	for attempt := 0; ; attempt++ {
		r := h.Handle(ctx, m)
		if !errors.Is(r.Err, ErrBusy) {
			return r, why, stalled
		}
		if !stalled {
			why = stallReason(r.Err)
		}
		stalled = true
		t := time.NewTimer(busyBackoff(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return r, why, stalled
		case <-t.C:
		}
	}
}

// stallReason counts an ErrBusy result: not_durable or busy.
func stallReason(err error) reason {
	if errors.Is(err, ErrNotDurable) {
		return rNotDurable
	}
	return rBusy
}
