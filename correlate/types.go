package correlate

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// TouchKind says how the sensor knew a port was closed.
type TouchKind uint8

// Touch kinds, named after Zeek's conn_state values.
const (
	// TouchREJ is a SYN answered by an RST.
	TouchREJ TouchKind = iota + 1
	// TouchS0 is a SYN that got no answer within the sensor's timeout.
	TouchS0
	// TouchRSTOS0 is a SYN the source itself reset before any answer was
	// seen (Zeek's RSTOS0): a port that did not open for it.
	TouchRSTOS0
)

// String returns "REJ", "S0" or "RSTOS0".
func (k TouchKind) String() string {
	switch k {
	case TouchREJ:
		return "REJ"
	case TouchS0:
		return "S0"
	case TouchRSTOS0:
		return "RSTOS0"
	}
	return fmt.Sprintf("TouchKind(%d)", uint8(k))
}

// Touch is one closed-port touch of a knock.
type Touch struct {
	Port uint16
	Time time.Time
	Kind TouchKind
}

// Knock is what the sensor reports when source Src has touched enough
// distinct closed TCP ports on host Dst: the touches in the order they
// happened (the sensor sends up to the last 16).
type Knock struct {
	Src, Dst netip.Addr
	Touches  []Touch
	// DistinctClosed is the sensor's count of distinct closed ports Src
	// touched on Dst in its window, when known (0 = unknown). It may be
	// larger than len(Touches) because the record holds only the last few.
	DistinctClosed int
	// Attempted is the sensor's count of distinct ports Src tried on Dst in
	// the same burst without an open answer, decided or not (0 = unknown):
	// a SYN scan of a filtered host shows here even when few of its SYNs
	// were decided closed.
	Attempted int
	// Epoch numbers the sensor's KNOCK records of the pair: every use of a
	// knock is a new one (0 = unknown).
	Epoch uint32
}

// Handshake is the first completed three-way handshake of a flagged source
// Src to Dst:Port, as the sensor reports it.
type Handshake struct {
	Src, Dst netip.Addr
	SrcPort  uint16
	Port     uint16
	SYN      time.Time
	SYNACK   time.Time
	ACK      time.Time
	// PortLastClosed and PortLastOpen are when Dst:Port was last seen
	// closed (RST, S0 or RSTOS0, to anyone) and last seen open (a SYN-ACK,
	// to anyone) before this connection; PortFirstOpen is the first answer
	// since it was last seen closed. The zero time means unknown/never.
	PortLastClosed time.Time
	PortFirstOpen  time.Time
	PortLastOpen   time.Time
	// PortOtherDone is when another source completed the first handshake
	// to Dst:Port since it was last seen closed (zero: nobody else did).
	// Only completed handshakes count: a SYN-ACK to a spoofed SYN, or the
	// source's own half-open probe, never makes someone else first.
	PortOtherDone time.Time
	// DistinctClosed is how many distinct closed ports Src touched on Dst
	// in the sensor's current window (saturating; 0 = unknown).
	DistinctClosed int
	// Attempted is the sensor's count of distinct ports Src tried on Dst in
	// the burst without an open answer (0 = unknown).
	Attempted int
	// Epoch is the sensor's KNOCK this handshake follows (0 = unknown: the
	// pair's state was pushed out, the flag survived).
	Epoch uint32
	// RemoteFlag: the sensor reported it for a flag another sensor raised.
	RemoteFlag bool
}

// ChangeKind is what happened on the Windows host.
type ChangeKind uint8

// Change kinds.
const (
	ChangeUnknown ChangeKind = iota
	// ChangeRuleAdded is a firewall rule added (2004/2071/2097, 4946, 5447 add).
	ChangeRuleAdded
	// ChangeRuleModified is a firewall rule modified (2005/2073/2099, 4947);
	// the change carries the new values.
	ChangeRuleModified
	// ChangeRuleEnabled is a rule that became active (a modification whose
	// only effect is Active=1, as winevents reports it).
	ChangeRuleEnabled
	// ChangeRuleDeleted is a rule deleted (2006/2052, 2033/2059, 4948).
	ChangeRuleDeleted
	// ChangeListener is a process listening on a port (5154, 5158).
	ChangeListener
	// ChangeFirewallDisabled is the firewall switched off (4950, 2003/2082).
	ChangeFirewallDisabled
	// ChangeServiceStarted is a service installed or started (7045, 7036):
	// no port, weak evidence.
	ChangeServiceStarted
)

var changeKindNames = [...]string{
	ChangeUnknown:          "unknown",
	ChangeRuleAdded:        "rule_added",
	ChangeRuleModified:     "rule_modified",
	ChangeRuleEnabled:      "rule_enabled",
	ChangeRuleDeleted:      "rule_deleted",
	ChangeListener:         "listener",
	ChangeFirewallDisabled: "firewall_disabled",
	ChangeServiceStarted:   "service_started",
}

// String returns the snake_case name used in alerts.
func (k ChangeKind) String() string {
	if int(k) < len(changeKindNames) {
		return changeKindNames[k]
	}
	return fmt.Sprintf("ChangeKind(%d)", uint8(k))
}

// Protocol is the IP protocol number as Windows reports it (6 TCP, 17 UDP,
// 256 any). Zero means not reported.
type Protocol uint16

// Protocols that matter to the rule.
const (
	ProtocolUnknown Protocol = 0
	ProtocolTCP     Protocol = 6
	ProtocolUDP     Protocol = 17
	ProtocolAny     Protocol = 256
)

// String returns "tcp", "udp", "any", "" for unknown, or the number.
func (p Protocol) String() string {
	switch p {
	case ProtocolUnknown:
		return ""
	case ProtocolTCP:
		return "tcp"
	case ProtocolUDP:
		return "udp"
	case ProtocolAny:
		return "any"
	}
	return fmt.Sprintf("%d", uint16(p))
}

// coversTCP reports whether a change with this protocol can open a TCP port.
func (p Protocol) coversTCP() bool {
	return p == ProtocolTCP || p == ProtocolAny || p == ProtocolUnknown
}

// Direction of a firewall rule.
type Direction uint8

// Directions.
const (
	DirectionUnknown Direction = iota
	DirectionInbound
	DirectionOutbound
)

// String returns "inbound", "outbound" or "".
func (d Direction) String() string {
	switch d {
	case DirectionInbound:
		return "inbound"
	case DirectionOutbound:
		return "outbound"
	}
	return ""
}

// Action of a firewall rule.
type Action uint8

// Actions.
const (
	ActionUnknown Action = iota
	ActionAllow
	ActionBlock
)

// String returns "allow", "block" or "".
func (a Action) String() string {
	switch a {
	case ActionAllow:
		return "allow"
	case ActionBlock:
		return "block"
	}
	return ""
}

// Tri is a boolean that may be unknown (Windows events do not always say).
type Tri uint8

// Tri values.
const (
	TriUnknown Tri = iota
	TriTrue
	TriFalse
)

// ExposureChange is a normalized change of a Windows host's exposure, as
// winevents derives it from forwarded events.
type ExposureChange struct {
	// Time is when the change happened on the host (host clock, UTC).
	Time time.Time
	// Host is the computer name as the event names it; HostIPs are the
	// host's addresses when the event carries them. At least one is needed.
	Host    string
	HostIPs []netip.Addr
	Kind    ChangeKind
	// Ports the change opens; a zero PortSet means the event carried no
	// port (a 4946 that only names the rule).
	Ports     PortSet
	Protocol  Protocol
	Direction Direction
	Action    Action
	Active    Tri
	RuleID    string
	RuleName  string
	// Application is the program the rule or listener belongs to.
	Application string
	Service     string
	// ModifyingUser (often a SID) and ModifyingApplication made the change.
	ModifyingUser        string
	ModifyingApplication string
	ProcessID            uint32
	// EventID, Channel and RecordID identify the source Windows record;
	// (Host, Channel, RecordID) and the content recognise the same record
	// forwarded twice. A record with the same id but other content is
	// either a later version of it (winevents emits a change again when the
	// partner of a join arrives: it says all the stored version said and
	// more), which replaces the stored one, or contradicts it (a forgery
	// claiming the id of a real record, or the real record after one),
	// and then both are kept: neither is dropped as a duplicate.
	EventID  uint32
	Channel  string
	RecordID uint64
	// Replaces names an earlier change of the same host that this one
	// supersedes (winevents: a Firewall-channel record replacing the
	// port-less Security 4946/4947/4948 of the same rule change that
	// arrived first). The engine drops the replaced change (each stored
	// version of that record with the same RuleID) and remembers the
	// record as replaced while the replacing change is retained, so one
	// change remains whichever record arrived first, and whether or not
	// the replaced record is sent again.
	Replaces *ChangeRef
	// Origin names the forwarder that delivered the change (its
	// authenticated identity and address, see the pipeline), "" for local
	// sources. When the change table is full, eviction takes from the
	// forwarder with the most changes first, so one forwarder's flood
	// cannot push out another's evidence. It is not part of the content.
	Origin string
}

// ChangeRef names the Windows record of a change: with the change's host,
// (Channel, RecordID) identifies the record.
type ChangeRef struct {
	Channel  string
	EventID  uint32
	RecordID uint64
}

// Validation errors; wrap them with errors.Is to count by reason.
var (
	ErrInvalidAddr  = errors.New("invalid or missing address")
	ErrMissingTime  = errors.New("missing time")
	ErrNoTouches    = errors.New("knock without touches")
	ErrInvalidPort  = errors.New("port 0")
	ErrNoHost       = errors.New("change names no host")
	ErrInvalidOrder = errors.New("times out of order")
	ErrInvalidKind  = errors.New("unknown touch kind")
	ErrTimeRange    = errors.New("time outside 1980-2200")
)

// Evidence times are kept as Unix nanoseconds, which overflow before 1678
// and after 2262; anything outside these bounds is a broken clock or a
// zero timestamp (Windows writes 1601-01-01), refused with ErrTimeRange.
var (
	minTime = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

func checkTime(t time.Time) error {
	if t.IsZero() {
		return ErrMissingTime
	}
	if t.Before(minTime) || t.After(maxTime) {
		return fmt.Errorf("%w: %s", ErrTimeRange, t.UTC().Format(time.RFC3339))
	}
	return nil
}

func (k *Knock) validate() error {
	if !k.Src.IsValid() || !k.Dst.IsValid() {
		return ErrInvalidAddr
	}
	if len(k.Touches) == 0 {
		return ErrNoTouches
	}
	for i := range k.Touches {
		t := &k.Touches[i]
		if err := checkTime(t.Time); err != nil {
			return fmt.Errorf("touch %d: %w", i, err)
		}
		if t.Port == 0 {
			return fmt.Errorf("touch %d: %w", i, ErrInvalidPort)
		}
		if t.Kind != TouchREJ && t.Kind != TouchS0 && t.Kind != TouchRSTOS0 {
			return fmt.Errorf("touch %d: %w %d", i, ErrInvalidKind, t.Kind)
		}
	}
	return nil
}

func (h *Handshake) validate() error {
	if !h.Src.IsValid() || !h.Dst.IsValid() {
		return ErrInvalidAddr
	}
	if h.Port == 0 {
		return ErrInvalidPort
	}
	for _, t := range []time.Time{h.SYN, h.ACK} {
		if err := checkTime(t); err != nil {
			return err
		}
	}
	// SYNACK is zero when the capture lacked it (the client's ACK proved
	// it). It comes from the server's side of a tap, stamped by another
	// port: it may precede the SYN by the sensor's answer skew, so only
	// the client's own packets are held to their order.
	if !h.SYNACK.IsZero() {
		if err := checkTime(h.SYNACK); err != nil {
			return err
		}
	}
	if h.ACK.Before(h.SYN) {
		return ErrInvalidOrder
	}
	return nil
}

func (c *ExposureChange) validate() error {
	if err := checkTime(c.Time); err != nil {
		return err
	}
	if c.Host == "" && len(c.HostIPs) == 0 {
		return ErrNoHost
	}
	for _, ip := range c.HostIPs {
		if !ip.IsValid() {
			return ErrInvalidAddr
		}
	}
	return nil
}

// Validate reports why the engine would refuse k (nil: it would take it).
// A caller that stores evidence before the engine sees it (the pipeline's
// evidence log) uses it to keep refused evidence out of the store.
func (k *Knock) Validate() error { return k.validate() }

// Validate reports why the engine would refuse h.
func (h *Handshake) Validate() error { return h.validate() }

// Validate reports why the engine would refuse c.
func (c *ExposureChange) Validate() error { return c.validate() }
