package sensor

import (
	"fmt"
	"net/netip"
	"time"
)

// TouchKind says how a closed port was touched.
type TouchKind uint8

// Touch kinds, as Zeek names the connection states (enum kw_touch_kind).
const (
	TouchREJ    TouchKind = 1 // SYN answered by an RST
	TouchS0     TouchKind = 2 // SYN never answered
	TouchRSTOS0 TouchKind = 3 // SYN, then the originator's own RST; no answer seen
	// TouchAttempt is a SYN pushed out of the sensor's state before it was
	// answered or timed out: tried, not decided. It appears only in a
	// KNOCK's touch list (and counts in Attempted), never as a closed touch.
	TouchAttempt TouchKind = 4
)

// Closed reports whether k shows a closed port (REJ, S0 or RSTOS0).
func (k TouchKind) Closed() bool { return k >= TouchREJ && k <= TouchRSTOS0 }

func (k TouchKind) String() string {
	switch k {
	case TouchREJ:
		return "REJ"
	case TouchS0:
		return "S0"
	case TouchRSTOS0:
		return "RSTOS0"
	case TouchAttempt:
		return "attempt"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MarshalText writes REJ or S0.
func (k TouchKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Touch is one closed-port touch (or, Kind TouchAttempt, an attempt).
type Touch struct {
	Port    uint16    `json:"port"`
	SrcPort uint16    `json:"source_port,omitempty"`
	Time    time.Time `json:"time"`
	Kind    TouchKind `json:"kind"`
}

// Knock is a KNOCK record: Src touched at least MinPorts distinct closed
// ports on Dst within the window. Touches are ordered by time (the last 16,
// attempts included). Every use of a knock sends one: Epoch counts them.
type Knock struct {
	Src, Dst netip.Addr
	Touches  []Touch
	// Distinct closed ports of Src on Dst in the current burst (saturating
	// at 65535): a knock is a handful, a scan is hundreds.
	Distinct int
	// Attempted distinct ports Src tried on Dst in the burst without an
	// open answer, decided or not (a SYN scan of a filtered host is
	// hundreds here even when few SYNs were decided).
	Attempted int
	Epoch     uint32
	FlagTime  time.Time
}

// Handshake is a HANDSHAKE record: the first completed three-way handshake
// of a flagged pair to one port since its latest knock.
type Handshake struct {
	Src, Dst      netip.Addr
	SrcPort, Port uint16
	SYN           time.Time
	SYNACK        time.Time // zero: not seen (the client's ACK proved it)
	ACK           time.Time
	// What the sensor knew of Dst:Port before this connection was answered
	// (the zero time: never seen).
	PortLastClosed time.Time // latest closed touch, by anyone
	PortFirstOpen  time.Time // first answer since then, to anyone
	PortLastOpen   time.Time // latest answer, to anyone
	// PortOtherDone: the first handshake completed since the port was last
	// seen closed, when another source completed it (zero: none, or this
	// source itself). Probes that never complete do not count.
	PortOtherDone time.Time
	Distinct      int
	Attempted     int
	Epoch         uint32 // the knock this handshake follows (0: unknown)
	// RemoteFlag: the flag came from another sensor (SetRemoteFlag).
	RemoteFlag bool
	// Sample: not a flagged pair's handshake but the clock-calibration
	// sample userspace asked of the host (RequestSample).
	Sample bool
}

// TouchRecord is one closed-port touch as the sensor classified it, with
// the SYN's 4-tuple: what `knockwatch replay --touches` prints, one per
// touch. The sensor sends them only when Config.ReportTouches is set (a
// replay asks for them; a live sensor never does, so a busy link does not
// pay a record per touch).
type TouchRecord struct {
	Src, Dst netip.Addr
	SrcPort  uint16 // the SYN's source port
	Port     uint16 // the touched port on Dst
	Time     time.Time
	Kind     TouchKind
}

// Record is one record of the sensor: a *Knock, a *Handshake or a
// *TouchRecord.
type Record interface{ isRecord() }

func (*Knock) isRecord()       {}
func (*Handshake) isRecord()   {}
func (*TouchRecord) isRecord() {}

// Clock converts the program's timestamps to wall-clock time. Live mode
// stamps CLOCK_TAI (see loader.TAIClock); replay mode stamps unix ns.
type Clock func(ns uint64) time.Time

// UnixClock reads ns as nanoseconds since the Unix epoch (replay mode).
func UnixClock(ns uint64) time.Time { return time.Unix(0, int64(ns)).UTC() }

// Stamp converts ns with c; 0 (never seen) stays the zero time.
func Stamp(c Clock, ns uint64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return c(ns)
}

// Destination is a host inside coverage's networks that SYNs went to, as
// the program's syn_dsts table holds it (loader.Sensor.SYNDestinations).
type Destination struct {
	Addr    netip.Addr
	LastSYN time.Time // the latest SYN, to within a second
}
