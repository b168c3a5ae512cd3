package winevents

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Kind says what happened to the host's exposure.
type Kind string

// The kinds of ExposureChange. See the package doc for which event emits
// which kind.
const (
	KindRuleAdded        Kind = "rule_added"
	KindRuleEnabled      Kind = "rule_enabled"
	KindRuleModified     Kind = "rule_modified"
	KindRuleDeleted      Kind = "rule_deleted"
	KindListener         Kind = "listener"
	KindFirewallDisabled Kind = "firewall_disabled"
	KindService          Kind = "service"
	// KindConnection is host-side evidence of an inbound connection (5156
	// inbound, Sysmon 3 with Initiated=false): not a change of exposure but
	// proof that a remote peer reached a local port.
	KindConnection Kind = "connection"
)

// Protocol is an IANA protocol number as the firewall writes it; 256 means
// any protocol and 0 unknown.
type Protocol uint16

// Protocol values used by the Windows Firewall.
const (
	ProtoUnknown Protocol = 0
	ProtoICMP    Protocol = 1
	ProtoTCP     Protocol = 6
	ProtoUDP     Protocol = 17
	ProtoICMPv6  Protocol = 58
	ProtoAny     Protocol = 256
)

// String names the protocol: "tcp", "udp", "any", "" for unknown, else the number.
func (p Protocol) String() string {
	switch p {
	case ProtoUnknown:
		return ""
	case ProtoICMP:
		return "icmp"
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMPv6:
		return "icmpv6"
	case ProtoAny:
		return "any"
	}
	return strconv.Itoa(int(p))
}

// Includes reports whether traffic of protocol q is covered by p.
func (p Protocol) Includes(q Protocol) bool { return p == ProtoAny || p == q }

// MarshalText writes String.
func (p Protocol) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText reads what MarshalText wrote.
func (p *Protocol) UnmarshalText(b []byte) error {
	*p = parseProtocol(string(b))
	return nil
}

// parseProtocol accepts numbers ("6") and names ("tcp", as Sysmon writes).
func parseProtocol(s string) Protocol {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseUint(s, 10, 16); err == nil && n <= 256 {
		return Protocol(n)
	}
	switch strings.ToLower(s) {
	case "tcp":
		return ProtoTCP
	case "udp":
		return ProtoUDP
	case "any", "*":
		return ProtoAny
	case "icmp":
		return ProtoICMP
	case "icmpv6":
		return ProtoICMPv6
	}
	return ProtoUnknown
}

// Direction of a rule or connection.
type Direction string

// Directions; empty means unknown or not applicable.
const (
	DirIn  Direction = "in"
	DirOut Direction = "out"
)

// Action of a rule or filter.
type Action string

// Actions; empty means unknown or not applicable.
const (
	ActionAllow Action = "allow"
	ActionBlock Action = "block"
)

// Actor classifies who made a firewall change, from ModifyingUser: "user"
// for an account SID (S-1-5-21-...), "system" for LocalSystem, LocalService,
// NetworkService and service SIDs (S-1-5-18/19/20, S-1-5-80-...), "" when
// unknown. Windows' own churn (AppX rules rewritten by svchost at logon) is
// "system"; netsh, PowerShell or an MMC run by an operator or an attacker
// is "user".
type Actor string

// Actor values.
const (
	ActorUser   Actor = "user"
	ActorSystem Actor = "system"
)

func classifyActor(sid string) Actor {
	switch {
	case sid == "":
		return ""
	case sid == "S-1-5-18" || sid == "S-1-5-19" || sid == "S-1-5-20" || strings.HasPrefix(sid, "S-1-5-80-"):
		return ActorSystem
	case strings.HasPrefix(sid, "S-1-5-21-") || strings.HasPrefix(sid, "S-1-12-1-"):
		return ActorUser
	}
	return ""
}

// Format is a wire format of forwarded events.
type Format string

// Formats detected from content.
const (
	FormatXML        Format = "xml"
	FormatECS        Format = "winlogbeat_ecs"
	FormatWinlogbeat Format = "winlogbeat_legacy"
	FormatNXLog      Format = "nxlog"
	FormatUnknown    Format = "unknown"
)

// Formats lists every format, in a stable order (for metrics).
var Formats = []Format{FormatXML, FormatECS, FormatWinlogbeat, FormatNXLog, FormatUnknown}

// SourceRef names the Windows record a change was derived from.
type SourceRef struct {
	Format   Format    `json:"format"`
	Channel  string    `json:"channel"`
	EventID  uint32    `json:"event_id"`
	RecordID uint64    `json:"record_id,omitempty"`
	Time     time.Time `json:"time"`
}

// ExposureChange is one normalized piece of evidence that a Windows host's
// exposure changed (or, for KindConnection, that a peer reached it).
// Fields that the source event does not carry are left zero.
type ExposureChange struct {
	Time time.Time `json:"time"` // event time, UTC
	Host string    `json:"host"` // <Computer>, winlog.computer_name, NXLog Hostname
	// HostIPs are the host's addresses when known: host.ip of a Winlogbeat
	// that runs on the host itself, addresses its listeners are bound to,
	// and the local side of connections decided by address, listener or
	// Sysmon (at most 16, most recent last).
	HostIPs []netip.Addr `json:"host_ips,omitempty"`
	Kind    Kind         `json:"kind"`

	Ports     PortSet   `json:"ports"` // local ports; empty when the event names none
	Protocol  Protocol  `json:"protocol,omitempty"`
	Direction Direction `json:"direction,omitempty"`
	Action    Action    `json:"action,omitempty"`
	// Active is the rule's Active flag for rule kinds; true for listeners,
	// firewall_disabled, service (running) and connections.
	Active   bool   `json:"active"`
	Profiles string `json:"profiles,omitempty"`

	RuleID    string `json:"rule_id,omitempty"`
	RuleName  string `json:"rule_name,omitempty"`
	RuleGroup string `json:"rule_group,omitempty"` // EmbeddedContext; "@{Package...}" for AppX package rules
	// WindowsManaged is true when Windows itself made the change: a
	// service identity (Actor "system") through svchost.exe, as in the rule
	// churn of AppX packages at logon. An operator or attacker using netsh,
	// PowerShell (WmiPrvSE), or the MMC shows another ModifyingApplication.
	WindowsManaged bool `json:"windows_managed,omitempty"`
	// AppPackageRule is true for rules Windows generates for AppX packages
	// (EmbeddedContext "@{...}"): they are scoped to one app container.
	AppPackageRule bool `json:"app_package_rule,omitempty"`

	Application string `json:"application,omitempty"` // rule ApplicationPath, listener Application, service ImagePath
	Service     string `json:"service,omitempty"`
	ProcessID   uint32 `json:"process_id,omitempty"`

	ModifyingUser        string `json:"modifying_user,omitempty"`
	ModifyingApplication string `json:"modifying_application,omitempty"`
	Actor                Actor  `json:"actor,omitempty"`

	// LocalAddress is the listener's bound address or the local side of a
	// connection; RemoteAddress/RemotePort the peer of a connection.
	LocalAddress  netip.Addr `json:"local_address,omitzero"`
	RemoteAddress netip.Addr `json:"remote_address,omitzero"`
	RemotePort    uint16     `json:"remote_port,omitempty"`
	// LocalSideBy says how the local side of a connection was decided:
	// "host_ip", "listener", "sysmon_hostname", "ephemeral_port",
	// "sysmon_initiated", or
	// "unknown" (then LocalAddress/Ports hold the destination side as
	// written and RemoteAddress the source side).
	LocalSideBy string `json:"local_side_by,omitempty"`
	// Observed is, for a connection from Sysmon 3, when Sysmon saw the
	// connection (its UtcTime, on the host's clock): Sysmon writes network
	// events late (seconds to a minute after UtcTime), so Time is not the
	// connection's time. Zero otherwise (Time is).
	Observed time.Time `json:"observed,omitzero"`

	FilterID uint64 `json:"filter_id,omitempty"` // WFP filter (5447 FilterId, 5154/5158/5156 FilterRTID)
	Layer    string `json:"layer,omitempty"`     // WFP layer: bind, listen, accept, connect or the 5447 layer name
	Setting  string `json:"setting,omitempty"`   // firewall_disabled: the setting and value that disabled it

	Source SourceRef `json:"source"`
	// Joined is the second record of a join (5447 giving a 4946 its port,
	// 5447 naming the rule of a 5154, 2004 inactive before a 2005 enable,
	// firewall-channel record giving a 4946/4948 its port).
	Joined *SourceRef `json:"joined,omitempty"`
	// Replaces names a change emitted earlier that this one supersedes:
	// a Security 4946/4947/4948 emitted on its own because the Firewall
	// channel's record of the same rule change (same RuleId and operation,
	// within JoinWindow) arrived after it. Consumers drop the replaced
	// change, so one change remains whichever record arrives first.
	Replaces *SourceRef `json:"replaces,omitempty"`
}

// Opens reports whether the change makes ports reachable from outside: an
// active allow rule that is inbound (or either direction) being added,
// enabled or modified, a listener (a TCP socket only once it listens), or
// the firewall being disabled. AppX package rules written by Windows itself
// (WindowsManaged and AppPackageRule) do not count: they are the benign
// logon churn and apply only inside the package's app container.
func (c *ExposureChange) Opens() bool {
	switch c.Kind {
	case KindFirewallDisabled:
		return true
	case KindListener:
		// A TCP socket that is only bound (5158) is not reachable until it
		// listens (5154); a bound UDP socket is.
		return !(c.Layer == "bind" && c.Protocol == ProtoTCP)
	case KindRuleAdded, KindRuleEnabled, KindRuleModified:
		if c.WindowsManaged && c.AppPackageRule {
			// Windows' own AppX package rules apply only inside that
			// package's app container: no arbitrary port opens.
			return false
		}
		return c.Active && c.Action != ActionBlock && c.Direction != DirOut
	}
	return false
}
