package coverage

import (
	"net/netip"
	"strings"
	"time"
)

// Event is one decoded Windows event as the pipeline received it.
type Event struct {
	Host    string       // the computer (<Computer>, winlog.computer_name, NXLog Hostname)
	HostIPs []netip.Addr // addresses the event carries for its host
	Time    time.Time    // event time, on the host's clock
	// Arrival is when the sensor received it (zero: unknown, as for a
	// file replayed offline: no lag is measured).
	Arrival  time.Time
	Channel  string
	EventID  uint32
	RecordID uint64
	// Conn is set for host-side connection evidence (5156 inbound,
	// Sysmon 3 with Initiated=false).
	Conn *Conn
}

// Conn is an inbound connection as the host logged it.
type Conn struct {
	Local, Remote         netip.Addr
	LocalPort, RemotePort uint16
	// SideKnown is false when the decoder could not tell which side is
	// local (LocalSideBy "unknown"): the match tries both orientations.
	SideKnown bool
	// At is when the host saw the connection, on its clock, when the
	// record says so apart from its own time (Sysmon 3 UtcTime); zero:
	// the event's Time.
	At time.Time
}

// Handshake is a completed handshake the sensor reported: a clock sample
// (Sample) or a flagged source's first handshake.
type Handshake struct {
	Src, Dst      netip.Addr
	SrcPort, Port uint16
	SYN, SYNACK   time.Time // SYNACK zero: not seen (the client's ACK proved it)
	ACK           time.Time
	Sample        bool
}

// Knock is what a KNOCK record says of the path to its host: its touches'
// kinds.
type Knock struct {
	Src, Dst netip.Addr
	// Answered are touches an RST from the host answered (REJ);
	// Unanswered touches nobody answered (S0, RSTOS0), with their times.
	Answered   []time.Time
	Unanswered []time.Time
}

// InventoryHost is one host of the inventory (--hosts).
type InventoryHost struct {
	Name string
	IPs  []netip.Addr
}

// Interface is one capture interface's counters as the program keeps
// them (sensor.InterfaceCounterNames: packets, tcp, ... and, when the
// program counts them per interface, syn, synack and rst).
type Interface struct {
	Name     string
	Counters map[string]uint64
}

// Sampler asks the sensor for the next handshake completed to host before
// until (loader.Sensor, loader.Replayer, gotwin.Twin: RequestSample).
type Sampler interface {
	RequestSample(host netip.Addr, until time.Time) error
}

// Clock is a host's measured clock.
type Clock struct {
	Host string
	// Offset is host time minus sensor time (negative: behind).
	Offset   time.Duration
	Samples  int           // agreeing matched connections
	Sources  int           // agreeing peers (one vote each)
	Spread   time.Duration // largest distance between two agreeing samples
	Measured time.Time     // sensor time of the newest agreeing sample
	Evidence []Sample      // newest agreeing samples first (at most 4)
}

// Sample is one matched connection: the sensor's handshake and the
// host's event of it.
type Sample struct {
	Peer       netip.Addr
	PeerPort   uint16
	Host       netip.Addr
	Port       uint16
	HostTime   time.Time
	SensorTime time.Time
	EventID    uint32
	Channel    string
	RecordID   uint64
	Offset     time.Duration
	conflicted bool
}

// ClockUpdate is a change of a host address's clock: Clock nil clears it.
type ClockUpdate struct {
	IP    netip.Addr
	Clock *Clock
}

// plain strips IPv4 mapping and zones (the form every key uses).
func plain(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// normName lower-cases a host name and drops a trailing root dot.
func normName(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

// sameHost: equal ignoring case, or one is the other's short name.
func sameHost(a, b string) bool {
	a, b = normName(a), normName(b)
	if a == "" || b == "" {
		return false
	}
	if a == b {
		return true
	}
	ad, bd := strings.IndexByte(a, '.'), strings.IndexByte(b, '.')
	switch {
	case ad > 0 && bd < 0:
		return a[:ad] == b
	case bd > 0 && ad < 0:
		return b[:bd] == a
	}
	return false
}

// channel classes a host's events are counted by.
const (
	ChannelFirewall = "firewall"
	ChannelSecurity = "security"
	ChannelSysmon   = "sysmon"
	ChannelSystem   = "system"
	ChannelOther    = "other"
)

var channelClasses = []string{ChannelFirewall, ChannelSecurity, ChannelSysmon, ChannelSystem, ChannelOther}

func channelClass(ch string) int {
	c := strings.ToLower(ch)
	switch {
	case strings.Contains(c, "firewall"):
		return 0
	case c == "security":
		return 1
	case strings.Contains(c, "sysmon"):
		return 2
	case c == "system":
		return 3
	}
	return 4
}

// keep returns a copy of s of at most n bytes: what coverage stores never
// pins a larger buffer (a decoded payload) and is bounded whatever an
// event carries.
func keep(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.Clone(s)
}

// Bounds of the strings coverage keeps.
const (
	maxNameBytes    = 256
	maxChannelBytes = 128
)
