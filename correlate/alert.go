package correlate

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"time"
)

// Rule identity written into every alert.
const (
	RuleID          = "AN0842"
	RuleName        = "Port knock followed by a host exposure change and the knocker's first handshake"
	RuleReference   = "https://attack.mitre.org/analytics/AN0842/"
	TechniqueID     = "T1205"
	SubtechniqueID  = "T1205.001"
	ThreatFramework = "MITRE ATT&CK"
	// TechniqueReference and SubtechniqueReference are the ATT&CK pages.
	TechniqueReference    = "https://attack.mitre.org/techniques/T1205/"
	SubtechniqueReference = "https://attack.mitre.org/techniques/T1205/001/"
)

// ECS identity of the records: the schema version the alert fields follow
// (checked against that release's field reference in the tests) and the
// event module and dataset.
const (
	ECSVersion  = "8.17.0"
	EventModule = "knockwatch"
	Dataset     = "knockwatch.an0842"
)

// Observer identifies the sensor in every alert (ECS observer.*). Zero
// fields are left out; Vendor, Product and Type default to "knockwatch",
// "knockwatch" and "ids".
type Observer struct {
	Hostname string
	Name     string
	Type     string
	Vendor   string
	Product  string
	Version  string
	// Interface is the capture interface (observer.ingress.interface.name)
	// when the sensor has exactly one; with several (a tap's two ports)
	// records do not say which saw them, so it is left out and Interfaces
	// lists them under knockwatch.observer.interfaces.
	Interface  string
	Interfaces []string
}

// WithObserver sets the sensor identity written into alerts.
func WithObserver(o Observer) Option {
	return func(e *Engine) { e.observer = o.withDefaults() }
}

func (o Observer) withDefaults() Observer {
	if o.Vendor == "" {
		o.Vendor = "knockwatch"
	}
	if o.Product == "" {
		o.Product = "knockwatch"
	}
	if o.Type == "" {
		o.Type = "ids"
	}
	if o.Interface == "" && len(o.Interfaces) == 1 {
		o.Interface = o.Interfaces[0]
	}
	o.Interfaces = append([]string(nil), o.Interfaces...)
	return o
}

// Windows are the rule's windows an alert was decided with, so that a
// reader (knockwatch explain) can draw them.
type Windows struct {
	MinPorts       int
	KnockWindow    time.Duration
	ChangeAfter    time.Duration
	Skew           time.Duration
	HandshakeAfter time.Duration
}

// Alert record actions (event.action). Not to be confused with the
// firewall rule's Action (allow/block); AlertCreated and AlertUpgraded are
// the same values under names that cannot be mistaken for it.
const (
	ActionCreated  = "created"
	ActionUpgraded = "upgraded"
	AlertCreated   = ActionCreated
	AlertUpgraded  = ActionUpgraded
)

// Alert is one AN0842 alert record. MarshalJSON renders it as one
// ECS-shaped JSON object; a sink writes one per line.
type Alert struct {
	// ID is deterministic from (source, destination, port, handshake ACK
	// time): re-runs over the same evidence and upgrades share it.
	ID string
	// Action is "created" for the first record of an ID and "upgraded"
	// for a later one with a better outcome.
	Action     string
	Confidence Confidence
	// Suppressed is the suppression reason; such records carry
	// knockwatch.suppressed true (and the reason in event.reason and
	// knockwatch.suppression_reason) and are emitted only with
	// Config.EmitSuppressed, or as the upgrade of a record already out.
	Suppressed string
	HostName   string
	// Touches are the knock's touches (the window ending at its last
	// touch), KnockPorts its distinct ports in touch order.
	Touches    []Touch
	KnockPorts []uint16
	// Change is the matching host event; nil when the network alone shows
	// the port opening.
	Change    *ExposureChange
	Handshake Handshake
	// Observer is the sensor (WithObserver); Windows the rule's windows.
	Observer Observer
	Windows  Windows
	// Clock is the change's host clock as the engine knew it (nil with no
	// change). Clock.Measured false: no measurement, Skew alone applied.
	Clock *AlertClock
}

// AlertClock is what an alert says of its host's clock
// (knockwatch.clock).
type AlertClock struct {
	// Measured: the host's clock was measured (HostClock holds it).
	Measured bool
	HostClock
	// Applied: the change matched only at its time corrected by the
	// measurement (ChangeTime, on the sensor's clock).
	Applied    bool
	ChangeTime time.Time
}

// Rank orders the records of one alert id: confidence first, then
// unsuppressed before suppressed. The engine emits a further record for an
// id only with a higher rank, so a consumer that remembers the best rank
// it delivered per id (the pipeline after a restart) can tell a record it
// already has from a better one.
func (a Alert) Rank() int { return outcome{conf: a.Confidence, suppressed: a.Suppressed}.rank() }

// Timestamp is the alert's @timestamp: the handshake-completing ACK.
func (a Alert) Timestamp() time.Time { return a.Handshake.ACK }

// AlertID returns the alert id for (src, dst, port, ack).
func AlertID(src, dst netip.Addr, port uint16, ack time.Time) string {
	var b [16 + 16 + 2 + 8 + len(RuleID)]byte
	s16, d16 := src.Unmap().As16(), dst.Unmap().As16()
	n := copy(b[:], RuleID)
	n += copy(b[n:], s16[:])
	n += copy(b[n:], d16[:])
	binary.BigEndian.PutUint16(b[n:], port)
	binary.BigEndian.PutUint64(b[n+2:], uint64(ack.UnixNano()))
	sum := sha256.Sum256(b[:])
	return hex.EncodeToString(sum[:16])
}

// buildAlert copies the evidence of r's best outcome into an Alert.
func (e *Engine) buildAlert(action string, d netip.Addr, p *pair, r *hsRec) Alert {
	o := r.best
	a := Alert{
		ID:         AlertID(r.h.Src, r.h.Dst, r.h.Port, r.h.ACK),
		Action:     action,
		Confidence: o.conf,
		Suppressed: o.suppressed,
		Handshake:  r.h,
		Observer:   e.observer,
		Windows: Windows{MinPorts: e.cfg.MinPorts, KnockWindow: e.cfg.KnockWindow, ChangeAfter: e.cfg.ChangeAfter,
			Skew: e.cfg.Skew, HandshakeAfter: e.cfg.HandshakeAfter},
	}
	var c *chg
	if o.change != nil {
		c = o.change
		cc := c.c
		a.Change = &cc
		a.Clock = &AlertClock{Applied: o.clocked, ChangeTime: time.Unix(0, c.t).UTC()}
		if c.clock != nil {
			a.Clock.Measured, a.Clock.HostClock = true, *c.clock
			a.Clock.Evidence = append([]ClockSample(nil), c.clock.Evidence...)
		}
	}
	a.HostName = e.hostName(d, c)
	for i := o.knock.first; i <= o.knock.last && i < len(p.touches); i++ {
		t := p.touches[i]
		a.Touches = append(a.Touches, Touch{Port: t.port, Time: time.Unix(0, t.t).UTC(), Kind: t.kind})
		seen := false
		for _, q := range a.KnockPorts {
			seen = seen || q == t.port
		}
		if !seen {
			a.KnockPorts = append(a.KnockPorts, t.port)
		}
	}
	return a
}

// severity maps confidence to ECS event.severity (Elastic's 47 medium,
// 73 high).
func severity(c Confidence) int {
	if c == ConfidenceHigh {
		return 73
	}
	return 47
}

type jsonTime time.Time

func (t jsonTime) MarshalJSON() ([]byte, error) {
	if time.Time(t).IsZero() {
		return []byte("null"), nil
	}
	return []byte(`"` + time.Time(t).UTC().Format(time.RFC3339Nano) + `"`), nil
}

type ecsEndpoint struct {
	IP   string `json:"ip"`
	Port uint16 `json:"port"`
}

type ecsTouch struct {
	Port uint16   `json:"port"`
	Time jsonTime `json:"time"`
	Kind string   `json:"kind"`
}

type ecsChange struct {
	Time                 jsonTime `json:"time"`
	Host                 string   `json:"host"`
	HostIPs              []string `json:"host_ips"`
	Kind                 string   `json:"kind"`
	Ports                string   `json:"ports"`
	Protocol             string   `json:"protocol"`
	Direction            string   `json:"direction"`
	Action               string   `json:"action"`
	Active               *bool    `json:"active"`
	RuleID               string   `json:"rule_id"`
	RuleName             string   `json:"rule_name"`
	Application          string   `json:"application"`
	Service              string   `json:"service"`
	ModifyingUser        string   `json:"modifying_user"`
	ModifyingApplication string   `json:"modifying_application"`
	ProcessID            uint32   `json:"process_id"`
	EventID              uint32   `json:"event_id"`
	Channel              string   `json:"channel"`
	RecordID             uint64   `json:"record_id"`
}

type ecsObserver struct {
	Hostname string `json:"hostname,omitempty"`
	Name     string `json:"name,omitempty"`
	Type     string `json:"type,omitempty"`
	Vendor   string `json:"vendor,omitempty"`
	Product  string `json:"product,omitempty"`
	Version  string `json:"version,omitempty"`
	Ingress  *struct {
		Interface struct {
			Name string `json:"name"`
		} `json:"interface"`
	} `json:"ingress,omitempty"`
}

type ecsAlert struct {
	Timestamp jsonTime `json:"@timestamp"`
	ECS       struct {
		Version string `json:"version"`
	} `json:"ecs"`
	Event struct {
		Kind     string   `json:"kind"`
		ID       string   `json:"id"`
		Severity int      `json:"severity"`
		Action   string   `json:"action"`
		Category []string `json:"category"`
		Type     []string `json:"type"`
		Module   string   `json:"module"`
		Dataset  string   `json:"dataset"`
		Outcome  string   `json:"outcome"`
		Reason   string   `json:"reason,omitempty"`
	} `json:"event"`
	Rule struct {
		ID        string `json:"id"`
		Name      string `json:"name"`
		Reference string `json:"reference"`
	} `json:"rule"`
	Threat struct {
		Framework string `json:"framework"`
		Tactic    struct {
			ID        []string `json:"id"`
			Name      []string `json:"name"`
			Reference []string `json:"reference"`
		} `json:"tactic"`
		Technique struct {
			ID           []string `json:"id"`
			Name         []string `json:"name"`
			Reference    []string `json:"reference"`
			Subtechnique struct {
				ID        []string `json:"id"`
				Name      []string `json:"name"`
				Reference []string `json:"reference"`
			} `json:"subtechnique"`
		} `json:"technique"`
	} `json:"threat"`
	Observer    ecsObserver `json:"observer"`
	Source      ecsEndpoint `json:"source"`
	Destination ecsEndpoint `json:"destination"`
	Host        struct {
		Name string   `json:"name,omitempty"`
		IP   []string `json:"ip"`
	} `json:"host"`
	Network struct {
		Transport string `json:"transport"`
		Type      string `json:"type"`
		Direction string `json:"direction"`
	} `json:"network"`
	Related struct {
		IP []string `json:"ip"`
	} `json:"related"`
	Knockwatch struct {
		Confidence string `json:"confidence"`
		Basis      string `json:"basis"`
		// Suppressed (with SuppressionReason) replaces the former
		// event.outcome "suppressed", which is not an ECS value.
		Suppressed        bool   `json:"suppressed"`
		SuppressionReason string `json:"suppression_reason,omitempty"`
		Knock             struct {
			Touches   []ecsTouch `json:"touches"`
			Ports     []uint16   `json:"ports"`
			LastTouch jsonTime   `json:"last_touch"`
			// The sensor's counts of the knock's burst at the handshake
			// and the knock's number among the pair's (0: unknown).
			Distinct  int    `json:"distinct"`
			Attempted int    `json:"attempted"`
			Epoch     uint32 `json:"epoch"`
		} `json:"knock"`
		Change    *ecsChange `json:"change"`
		Handshake struct {
			SYN    jsonTime `json:"syn"`
			SYNACK jsonTime `json:"syn_ack"`
			ACK    jsonTime `json:"ack"`
			// RemoteFlag: another sensor raised the flag that made this
			// one report the handshake.
			RemoteFlag bool `json:"remote_flag"`
		} `json:"handshake"`
		PortLastClosed jsonTime `json:"port_last_closed"`
		PortFirstOpen  jsonTime `json:"port_first_open"`
		PortLastOpen   jsonTime `json:"port_last_open"`
		PortOtherDone  jsonTime `json:"port_other_done"`
		// Rule holds the windows the alert was decided with (seconds).
		Rule struct {
			MinPorts       int     `json:"min_ports"`
			KnockWindow    float64 `json:"knock_window"`
			ChangeAfter    float64 `json:"change_after"`
			Skew           float64 `json:"skew"`
			HandshakeAfter float64 `json:"handshake_after"`
		} `json:"rule"`
		Observer *struct {
			Interfaces []string `json:"interfaces"`
		} `json:"observer,omitempty"`
		Clock *ecsClock `json:"clock,omitempty"`
	} `json:"knockwatch"`
}

// ecsClock is knockwatch.clock: the host clock the change was judged by.
type ecsClock struct {
	Host     string `json:"host,omitempty"`
	Measured bool   `json:"measured"`
	// Offset is host minus sensor time in seconds; Applied says the
	// change matched only once corrected by it (ChangeTime: its time on
	// the sensor's clock).
	Offset     *float64        `json:"offset,omitempty"`
	Applied    bool            `json:"applied"`
	ChangeTime jsonTime        `json:"change_time"`
	Samples    int             `json:"samples,omitempty"`
	Sources    int             `json:"sources,omitempty"`
	Spread     *float64        `json:"spread,omitempty"`
	MeasuredAt *jsonTime       `json:"measured_at,omitempty"`
	Evidence   []ecsClockMatch `json:"evidence,omitempty"`
}

type ecsClockMatch struct {
	SourceIP   string   `json:"source_ip"`
	SourcePort uint16   `json:"source_port"`
	Port       uint16   `json:"port"`
	HostTime   jsonTime `json:"host_time"`
	SensorTime jsonTime `json:"sensor_time"`
	EventID    uint32   `json:"event_id"`
	Channel    string   `json:"channel,omitempty"`
	RecordID   uint64   `json:"record_id,omitempty"`
}

func clockJSON(c *AlertClock) *ecsClock {
	out := &ecsClock{Measured: c.Measured, Applied: c.Applied, ChangeTime: jsonTime(c.ChangeTime)}
	if !c.Measured {
		return out
	}
	off, spread := c.Offset.Seconds(), c.Spread.Seconds()
	at := jsonTime(c.HostClock.Measured)
	out.Host, out.Offset, out.Samples, out.Sources, out.Spread, out.MeasuredAt = c.Host, &off, c.Samples, c.Sources, &spread, &at
	for _, s := range c.Evidence {
		out.Evidence = append(out.Evidence, ecsClockMatch{SourceIP: s.Src.String(), SourcePort: s.SrcPort, Port: s.Port,
			HostTime: jsonTime(s.HostTime), SensorTime: jsonTime(s.SensorTime), EventID: s.EventID, Channel: s.Channel,
			RecordID: s.RecordID})
	}
	return out
}

// Tactics of T1205 (ATT&CK): ids, names and pages, in the same order.
var (
	tacticIDs   = []string{"TA0005", "TA0003", "TA0011"}
	tacticNames = []string{"Defense Evasion", "Persistence", "Command and Control"}
	tacticRefs  = []string{"https://attack.mitre.org/tactics/TA0005/", "https://attack.mitre.org/tactics/TA0003/",
		"https://attack.mitre.org/tactics/TA0011/"}
)

// MarshalJSON renders the alert as one ECS-shaped JSON object.
func (a Alert) MarshalJSON() ([]byte, error) {
	var j ecsAlert
	h := &a.Handshake
	j.Timestamp = jsonTime(h.ACK)
	j.ECS.Version = ECSVersion
	j.Event.Kind = "alert"
	j.Event.ID = a.ID
	j.Event.Severity = severity(a.Confidence)
	j.Event.Action = a.Action
	j.Event.Category = []string{"network", "intrusion_detection"}
	j.Event.Type = []string{"info"} // the one type both categories allow
	j.Event.Module = EventModule
	j.Event.Dataset = Dataset
	// The alert's event is the knocker's completed handshake.
	j.Event.Outcome = "success"
	if a.Suppressed != "" {
		j.Event.Reason = a.Suppressed
	}
	j.Rule.ID, j.Rule.Name, j.Rule.Reference = RuleID, RuleName, RuleReference
	j.Threat.Framework = ThreatFramework
	j.Threat.Tactic.ID, j.Threat.Tactic.Name, j.Threat.Tactic.Reference = tacticIDs, tacticNames, tacticRefs
	j.Threat.Technique.ID, j.Threat.Technique.Name = []string{TechniqueID}, []string{"Traffic Signaling"}
	j.Threat.Technique.Reference = []string{TechniqueReference}
	j.Threat.Technique.Subtechnique.ID, j.Threat.Technique.Subtechnique.Name = []string{SubtechniqueID}, []string{"Port Knocking"}
	j.Threat.Technique.Subtechnique.Reference = []string{SubtechniqueReference}
	o := a.Observer
	j.Observer = ecsObserver{Hostname: o.Hostname, Name: o.Name, Type: o.Type, Vendor: o.Vendor, Product: o.Product, Version: o.Version}
	if o.Interface != "" {
		j.Observer.Ingress = &struct {
			Interface struct {
				Name string `json:"name"`
			} `json:"interface"`
		}{}
		j.Observer.Ingress.Interface.Name = o.Interface
	}
	j.Source = ecsEndpoint{IP: h.Src.String(), Port: h.SrcPort}
	j.Destination = ecsEndpoint{IP: h.Dst.String(), Port: h.Port}
	j.Host.Name = a.HostName
	j.Host.IP = []string{h.Dst.String()}
	j.Network.Transport = "tcp"
	j.Network.Type = "ipv4"
	if h.Dst.Is6() {
		j.Network.Type = "ipv6"
	}
	// host.* is the knocked Windows host; from its side the handshake comes
	// in. (inbound/outbound would need the site's internal ranges.)
	j.Network.Direction = "ingress"
	j.Related.IP = []string{h.Src.String(), h.Dst.String()}
	k := &j.Knockwatch
	k.Confidence = a.Confidence.String()
	k.Basis = "network"
	k.Suppressed, k.SuppressionReason = a.Suppressed != "", a.Suppressed
	w := a.Windows
	k.Rule.MinPorts = w.MinPorts
	k.Rule.KnockWindow, k.Rule.ChangeAfter = w.KnockWindow.Seconds(), w.ChangeAfter.Seconds()
	k.Rule.Skew, k.Rule.HandshakeAfter = w.Skew.Seconds(), w.HandshakeAfter.Seconds()
	if len(o.Interfaces) > 1 {
		k.Observer = &struct {
			Interfaces []string `json:"interfaces"`
		}{Interfaces: o.Interfaces}
	}
	k.Knock.Touches = make([]ecsTouch, 0, len(a.Touches))
	for _, t := range a.Touches {
		k.Knock.Touches = append(k.Knock.Touches, ecsTouch{Port: t.Port, Time: jsonTime(t.Time), Kind: t.Kind.String()})
		if t.Time.After(time.Time(k.Knock.LastTouch)) {
			k.Knock.LastTouch = jsonTime(t.Time)
		}
	}
	k.Knock.Ports = a.KnockPorts
	if k.Knock.Ports == nil {
		k.Knock.Ports = []uint16{}
	}
	if c := a.Change; c != nil {
		k.Basis = "host_event"
		k.Change = changeJSON(c)
	}
	k.Knock.Distinct, k.Knock.Attempted, k.Knock.Epoch = h.DistinctClosed, h.Attempted, h.Epoch
	if a.Clock != nil {
		k.Clock = clockJSON(a.Clock)
	}
	k.Handshake.SYN, k.Handshake.SYNACK, k.Handshake.ACK = jsonTime(h.SYN), jsonTime(h.SYNACK), jsonTime(h.ACK)
	k.Handshake.RemoteFlag = h.RemoteFlag
	k.PortLastClosed, k.PortLastOpen = jsonTime(h.PortLastClosed), jsonTime(h.PortLastOpen)
	k.PortFirstOpen, k.PortOtherDone = jsonTime(h.PortFirstOpen), jsonTime(h.PortOtherDone)
	return json.Marshal(&j)
}

func changeJSON(c *ExposureChange) *ecsChange {
	out := &ecsChange{
		Time: jsonTime(c.Time), Host: c.Host, HostIPs: make([]string, 0, len(c.HostIPs)),
		Kind: c.Kind.String(), Ports: c.Ports.String(), Protocol: c.Protocol.String(),
		Direction: c.Direction.String(), Action: c.Action.String(),
		RuleID: c.RuleID, RuleName: c.RuleName, Application: c.Application, Service: c.Service,
		ModifyingUser: c.ModifyingUser, ModifyingApplication: c.ModifyingApplication,
		ProcessID: c.ProcessID, EventID: c.EventID, Channel: c.Channel, RecordID: c.RecordID,
	}
	if c.Kind == ChangeFirewallDisabled && !c.Ports.Known() {
		out.Ports = "*"
	}
	for _, ip := range c.HostIPs {
		out.HostIPs = append(out.HostIPs, ip.String())
	}
	switch c.Active {
	case TriTrue:
		v := true
		out.Active = &v
	case TriFalse:
		v := false
		out.Active = &v
	}
	return out
}
