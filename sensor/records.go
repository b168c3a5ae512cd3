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
	TouchREJ TouchKind = 1 // SYN answered by an RST
	TouchS0  TouchKind = 2 // SYN never answered
)

func (k TouchKind) String() string {
	switch k {
	case TouchREJ:
		return "REJ"
	case TouchS0:
		return "S0"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MarshalText writes REJ or S0.
func (k TouchKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Touch is one closed-port touch.
type Touch struct {
	Port uint16    `json:"port"`
	Time time.Time `json:"time"`
	Kind TouchKind `json:"kind"`
}

// Knock is a KNOCK record: Src touched at least MinPorts distinct closed
// ports on Dst within the window. Touches are ordered by time (the last 16).
type Knock struct {
	Src, Dst netip.Addr
	Touches  []Touch
	// Distinct closed ports of Src on Dst in the current burst (saturating
	// at 65535): a knock is a handful, a scan is hundreds.
	Distinct int
	FlagTime time.Time
}

// Handshake is a HANDSHAKE record: the first completed three-way handshake
// of a flagged pair to one port.
type Handshake struct {
	Src, Dst       netip.Addr
	SrcPort, Port  uint16
	SYN, SYNACK    time.Time
	ACK            time.Time
	PortLastClosed time.Time // zero: the sensor never saw the port closed
	PortLastOpen   time.Time // zero: never seen open before this connection
	Distinct       int
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
