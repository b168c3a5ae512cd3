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
	TechniqueID     = "T1205"
	SubtechniqueID  = "T1205.001"
	ThreatFramework = "MITRE ATT&CK"
)

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
	// event.outcome "suppressed" and are emitted only with
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
	}
	var c *chg
	if o.change != nil {
		c = o.change
		cc := c.c
		a.Change = &cc
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

type ecsAlert struct {
	Timestamp jsonTime `json:"@timestamp"`
	Event     struct {
		Kind     string   `json:"kind"`
		ID       string   `json:"id"`
		Severity int      `json:"severity"`
		Action   string   `json:"action"`
		Category []string `json:"category"`
		Dataset  string   `json:"dataset"`
		Outcome  string   `json:"outcome,omitempty"`
		Reason   string   `json:"reason,omitempty"`
	} `json:"event"`
	Rule struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"rule"`
	Threat struct {
		Framework string `json:"framework"`
		Tactic    struct {
			ID   []string `json:"id"`
			Name []string `json:"name"`
		} `json:"tactic"`
		Technique struct {
			ID           string `json:"id"`
			Name         string `json:"name"`
			Subtechnique struct {
				ID   string `json:"id"`
				Name string `json:"name"`
			} `json:"subtechnique"`
		} `json:"technique"`
	} `json:"threat"`
	Source      ecsEndpoint `json:"source"`
	Destination ecsEndpoint `json:"destination"`
	Host        struct {
		Name string   `json:"name,omitempty"`
		IP   []string `json:"ip"`
	} `json:"host"`
	Network struct {
		Transport string `json:"transport"`
		Type      string `json:"type"`
	} `json:"network"`
	Knockwatch struct {
		Confidence string `json:"confidence"`
		Basis      string `json:"basis"`
		Knock      struct {
			Touches   []ecsTouch `json:"touches"`
			Ports     []uint16   `json:"ports"`
			LastTouch jsonTime   `json:"last_touch"`
		} `json:"knock"`
		Change    *ecsChange `json:"change"`
		Handshake struct {
			SYN    jsonTime `json:"syn"`
			SYNACK jsonTime `json:"syn_ack"`
			ACK    jsonTime `json:"ack"`
		} `json:"handshake"`
		PortLastClosed jsonTime `json:"port_last_closed"`
		PortLastOpen   jsonTime `json:"port_last_open"`
	} `json:"knockwatch"`
}

// MarshalJSON renders the alert as one ECS-shaped JSON object.
func (a Alert) MarshalJSON() ([]byte, error) {
	var j ecsAlert
	h := &a.Handshake
	j.Timestamp = jsonTime(h.ACK)
	j.Event.Kind = "alert"
	j.Event.ID = a.ID
	j.Event.Severity = severity(a.Confidence)
	j.Event.Action = a.Action
	j.Event.Category = []string{"network", "intrusion_detection"}
	j.Event.Dataset = "knockwatch.an0842"
	if a.Suppressed != "" {
		j.Event.Outcome = "suppressed"
		j.Event.Reason = a.Suppressed
	}
	j.Rule.ID, j.Rule.Name = RuleID, RuleName
	j.Threat.Framework = ThreatFramework
	j.Threat.Tactic.ID = []string{"TA0005", "TA0003", "TA0011"}
	j.Threat.Tactic.Name = []string{"Defense Evasion", "Persistence", "Command and Control"}
	j.Threat.Technique.ID, j.Threat.Technique.Name = TechniqueID, "Traffic Signaling"
	j.Threat.Technique.Subtechnique.ID, j.Threat.Technique.Subtechnique.Name = SubtechniqueID, "Port Knocking"
	j.Source = ecsEndpoint{IP: h.Src.String(), Port: h.SrcPort}
	j.Destination = ecsEndpoint{IP: h.Dst.String(), Port: h.Port}
	j.Host.Name = a.HostName
	j.Host.IP = []string{h.Dst.String()}
	j.Network.Transport = "tcp"
	j.Network.Type = "ipv4"
	if h.Dst.Is6() {
		j.Network.Type = "ipv6"
	}
	k := &j.Knockwatch
	k.Confidence = a.Confidence.String()
	k.Basis = "network"
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
	k.Handshake.SYN, k.Handshake.SYNACK, k.Handshake.ACK = jsonTime(h.SYN), jsonTime(h.SYNACK), jsonTime(h.ACK)
	k.PortLastClosed, k.PortLastOpen = jsonTime(h.PortLastClosed), jsonTime(h.PortLastOpen)
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
