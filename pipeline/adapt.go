package pipeline

import (
	"net/netip"

	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents"
)

// Reasons an exposure change is not fed to the engine, counted in
// Stats.ChangesSkipped.
const (
	// SkipConnection: host-side evidence of an inbound connection (5156,
	// Sysmon 3) is not a change of exposure.
	SkipConnection = "connection"
	// SkipAppPackage: a rule Windows itself wrote for an AppX package
	// (the logon churn); it applies only inside the app container.
	SkipAppPackage = "app_package_rule"
	// SkipBindOnly: a TCP socket that is only bound (5158) is not
	// reachable until it listens (5154 follows).
	SkipBindOnly = "tcp_bind_only"
	// SkipUnknownKind: a kind this version of the pipeline does not map.
	SkipUnknownKind = "unknown_kind"
)

// KnockFromLoader converts a sensor KNOCK record to the engine's Knock.
// Attempts (SYNs the sensor pushed out undecided) are not closed touches:
// they stay out of Touches and count in Attempted. Touch kinds the engine
// does not know are passed as zero, which the engine rejects (and counts)
// instead of guessing.
func KnockFromLoader(k *sensor.Knock) correlate.Knock {
	out := correlate.Knock{
		Src:            k.Src,
		Dst:            k.Dst,
		DistinctClosed: k.Distinct,
		Attempted:      k.Attempted,
		Epoch:          k.Epoch,
		Touches:        make([]correlate.Touch, 0, len(k.Touches)),
	}
	for _, t := range k.Touches {
		if t.Kind == sensor.TouchAttempt {
			continue
		}
		out.Touches = append(out.Touches, correlate.Touch{Port: t.Port, Time: t.Time, Kind: touchKind(t.Kind)})
	}
	return out
}

func touchKind(k sensor.TouchKind) correlate.TouchKind {
	switch k {
	case sensor.TouchREJ:
		return correlate.TouchREJ
	case sensor.TouchS0:
		return correlate.TouchS0
	case sensor.TouchRSTOS0:
		return correlate.TouchRSTOS0
	}
	return 0
}

// HandshakeFromLoader converts a sensor HANDSHAKE record to the engine's
// Handshake.
func HandshakeFromLoader(h *sensor.Handshake) correlate.Handshake {
	return correlate.Handshake{
		Src:            h.Src,
		Dst:            h.Dst,
		SrcPort:        h.SrcPort,
		Port:           h.Port,
		SYN:            h.SYN,
		SYNACK:         h.SYNACK,
		ACK:            h.ACK,
		PortLastClosed: h.PortLastClosed,
		PortFirstOpen:  h.PortFirstOpen,
		PortLastOpen:   h.PortLastOpen,
		PortOtherDone:  h.PortOtherDone,
		DistinctClosed: h.Distinct,
		Attempted:      h.Attempted,
		Epoch:          h.Epoch,
		RemoteFlag:     h.RemoteFlag,
	}
}

// ChangeFromWinevents converts a decoded exposure change to the engine's
// ExposureChange. ok is false, with the reason (a Skip constant), for
// changes that must not reach the engine.
func ChangeFromWinevents(c *winevents.ExposureChange) (out correlate.ExposureChange, ok bool, skip string) {
	kind, active, reason := changeKind(c)
	if reason != "" {
		return out, false, reason
	}
	out = correlate.ExposureChange{
		Time:                 c.Time,
		Host:                 c.Host,
		HostIPs:              hostIPs(c),
		Kind:                 kind,
		Ports:                portSet(c.Ports),
		Protocol:             correlate.Protocol(c.Protocol),
		Direction:            direction(c.Direction),
		Action:               action(c.Action),
		Active:               active,
		RuleID:               c.RuleID,
		RuleName:             c.RuleName,
		Application:          c.Application,
		Service:              c.Service,
		ModifyingUser:        c.ModifyingUser,
		ModifyingApplication: c.ModifyingApplication,
		ProcessID:            c.ProcessID,
		EventID:              c.Source.EventID,
		Channel:              c.Source.Channel,
		RecordID:             c.Source.RecordID,
	}
	if r := c.Replaces; r != nil {
		out.Replaces = &correlate.ChangeRef{Channel: r.Channel, EventID: r.EventID, RecordID: r.RecordID}
	}
	return out, true, ""
}

// changeKind maps the kind and decides Active. Rule events from the
// Firewall channel carry Active; Security 4946/4947 do not (winevents leaves
// it false), so there an inactive flag means "not reported" unless a join
// with a Firewall-channel or WFP record supplied it (Joined).
func changeKind(c *winevents.ExposureChange) (correlate.ChangeKind, correlate.Tri, string) {
	switch c.Kind {
	case winevents.KindRuleAdded, winevents.KindRuleModified, winevents.KindRuleEnabled:
		if c.WindowsManaged && c.AppPackageRule {
			return 0, 0, SkipAppPackage
		}
		k := correlate.ChangeRuleAdded
		switch c.Kind {
		case winevents.KindRuleModified:
			k = correlate.ChangeRuleModified
		case winevents.KindRuleEnabled:
			k = correlate.ChangeRuleEnabled
		}
		return k, ruleActive(c), ""
	case winevents.KindRuleDeleted:
		return correlate.ChangeRuleDeleted, correlate.TriFalse, ""
	case winevents.KindListener:
		if c.Layer == "bind" && c.Protocol == winevents.ProtoTCP {
			return 0, 0, SkipBindOnly
		}
		return correlate.ChangeListener, correlate.TriTrue, ""
	case winevents.KindFirewallDisabled:
		return correlate.ChangeFirewallDisabled, correlate.TriTrue, ""
	case winevents.KindService:
		return correlate.ChangeServiceStarted, correlate.TriTrue, ""
	case winevents.KindConnection:
		return 0, 0, SkipConnection
	}
	return 0, 0, SkipUnknownKind
}

func ruleActive(c *winevents.ExposureChange) correlate.Tri {
	if c.Active {
		return correlate.TriTrue
	}
	if c.Source.Channel == "Security" && c.Joined == nil {
		switch c.Source.EventID {
		case 4946, 4947:
			return correlate.TriUnknown
		}
	}
	return correlate.TriFalse
}

// hostIPs returns the host's addresses from the event and, for a listener
// bound to one specific address, that address (it is the host's own).
func hostIPs(c *winevents.ExposureChange) []netip.Addr {
	ips := c.HostIPs
	if c.Kind == winevents.KindListener && usableHostIP(c.LocalAddress) {
		la := c.LocalAddress.Unmap()
		for _, ip := range ips {
			if ip.Unmap() == la {
				return ips
			}
		}
		ips = append(append(make([]netip.Addr, 0, len(ips)+1), ips...), la)
	}
	return ips
}

func usableHostIP(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast()
}

// portSet keeps the ports that are known. Keywords with a fixed meaning
// are already in Ranges; keywords resolved at run time (Unresolved) name no
// port we can match, so a set of only those is "no port known".
func portSet(p winevents.PortSet) correlate.PortSet {
	if p.Any {
		return correlate.AnyPort
	}
	if len(p.Ranges) == 0 {
		return correlate.PortSet{}
	}
	out := correlate.PortSet{Ranges: make([]correlate.PortRange, len(p.Ranges))}
	for i, r := range p.Ranges {
		out.Ranges[i] = correlate.PortRange{Lo: r.Lo, Hi: r.Hi}
	}
	return out
}

func direction(d winevents.Direction) correlate.Direction {
	switch d {
	case winevents.DirIn:
		return correlate.DirectionInbound
	case winevents.DirOut:
		return correlate.DirectionOutbound
	}
	return correlate.DirectionUnknown
}

func action(a winevents.Action) correlate.Action {
	switch a {
	case winevents.ActionAllow:
		return correlate.ActionAllow
	case winevents.ActionBlock:
		return correlate.ActionBlock
	}
	return correlate.ActionUnknown
}
