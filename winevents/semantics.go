package winevents

import (
	"net/netip"
	"strings"
)

// Semantics: what each relevant event means, as an ExposureChange before
// joins. The join state (join.go) then completes, reclassifies or
// suppresses it.

func baseChange(r *record) ExposureChange {
	return ExposureChange{Time: r.time, Host: r.computer, HostIPs: r.hostIPs, Source: r.source()}
}

// ruleFields fills the rule fields of a Firewall-channel rule event.
func ruleFields(r *record, c *ExposureChange) {
	c.RuleID = r.get("RuleId")
	c.RuleName = r.get("RuleName")
	switch strings.TrimSpace(r.get("Direction")) {
	case "1":
		c.Direction = DirIn
	case "2":
		c.Direction = DirOut
	}
	c.Protocol = parseProtocol(r.get("Protocol"))
	// Exporters such as NXLog omit empty fields: no LocalPorts is "".
	c.Ports, _ = ParsePortSet(r.get("LocalPorts"))
	switch strings.TrimSpace(r.get("Action")) {
	case "3", "Allow", "allow":
		c.Action = ActionAllow
	case "2", "4", "Block", "block":
		c.Action = ActionBlock
	}
	c.Active = strings.TrimSpace(r.get("Active")) == "1"
	c.Profiles = profilesText(r.get("Profiles"))
	c.Application = r.get("ApplicationPath")
	c.Service = r.get("ServiceName")
	modifierFields(r, c)
}

func modifierFields(r *record, c *ExposureChange) {
	c.ModifyingUser = r.get("ModifyingUser")
	c.ModifyingApplication = r.get("ModifyingApplication")
	c.Actor = classifyActor(c.ModifyingUser)
	c.WindowsManaged = c.Actor == ActorSystem && strings.EqualFold(baseName(c.ModifyingApplication), "svchost.exe")
	c.RuleGroup = r.get("EmbeddedContext")
	c.AppPackageRule = strings.HasPrefix(c.RuleGroup, "@{")
}

// profilesText renders the Profiles bit mask (1 domain, 2 private,
// 4 public; 2147483647 all) as text; text values pass through.
func profilesText(s string) string {
	n, ok := parseUint(s, 32)
	if !ok {
		return s
	}
	if n&7 == 7 {
		return "All"
	}
	var parts []string
	for _, p := range []struct {
		bit  uint64
		name string
	}{{1, "Domain"}, {2, "Private"}, {4, "Public"}} {
		if n&p.bit != 0 {
			parts = append(parts, p.name)
		}
	}
	return strings.Join(parts, ",")
}

// firewallSettingDisables reports whether a settings event (Firewall
// 2003/2082, Security 4950) turns filtering off for a profile: "Enable
// Windows (Defender) Firewall" (or type 1 = FW_PROFILE_CONFIG_ENABLE_FW) set
// to No/0/false/off, or the default inbound action set to allow.
func firewallSettingDisables(settingType, value string) bool {
	t := strings.ToLower(strings.TrimSpace(settingType))
	v := strings.ToLower(strings.TrimSpace(value))
	isEnable := t == "1" || (strings.HasPrefix(t, "enable windows") && strings.HasSuffix(t, "firewall"))
	if isEnable {
		switch v {
		case "no", "0", "false", "off", "0x0", "0x00000000", "disabled":
			return true
		}
		return false
	}
	if strings.Contains(t, "default inbound action") || strings.Contains(t, "default action for inbound") {
		return v == "allow" || v == "permit"
	}
	return false
}

// Windows audit message codes used by WFP events.
const (
	codeDirInbound   = "%%14592"
	codeDirOutbound  = "%%14593"
	codeLayerBind    = "%%14608"
	codeLayerListen  = "%%14609"
	codeLayerAccept  = "%%14610"
	codeLayerConnect = "%%14611"
	codeChangeAdd    = "%%16384"
	codeChangeDelete = "%%16385"
	codeActionBlock  = "%%16389"
	codeActionPermit = "%%16390"
)

func layerText(s string) string {
	switch strings.TrimSpace(s) {
	case codeLayerBind:
		return "bind"
	case codeLayerListen:
		return "listen"
	case codeLayerAccept:
		return "accept"
	case codeLayerConnect:
		return "connect"
	}
	return s
}

// wfpLayerDirection maps a 5447 LayerName to the direction it filters.
func wfpLayerDirection(layer string) Direction {
	l := strings.ToLower(layer)
	switch {
	case strings.Contains(l, "receive/accept"), strings.Contains(l, "listen"), strings.Contains(l, "inbound"):
		return DirIn
	case strings.Contains(l, "connect"), strings.Contains(l, "outbound"):
		return DirOut
	}
	return ""
}

// WFP condition keys in 5447 Conditions text.
const (
	condLocalPort  = "{0c1ba1af-5765-453f-af22-a8f791ac775b}" // FWPM_CONDITION_IP_LOCAL_PORT
	condIPProtocol = "{3971ef2b-623e-4f9a-8cb1-6e79b806b9a7}" // FWPM_CONDITION_IP_PROTOCOL
)

// parseConditions reads the local-port and protocol conditions of a 5447
// Conditions text: blocks of "Condition ID: {guid}", "Match value: ...",
// "Condition value: 0x01c2" (or "0x1388 - 0x1392" for "In range").
func parseConditions(s string) (ports PortSet, proto Protocol, ok bool) {
	for _, block := range strings.Split(s, "Condition ID:") {
		block = strings.TrimSpace(block)
		if block == "" {
			continue
		}
		id, rest, _ := strings.Cut(block, "\n")
		id = strings.ToLower(strings.TrimSpace(id))
		if id != condLocalPort && id != condIPProtocol {
			continue
		}
		_, val, found := strings.Cut(rest, "Condition value:")
		if !found {
			continue
		}
		val, _, _ = strings.Cut(strings.TrimSpace(val), "\n")
		val = strings.TrimSpace(val)
		lo, hi, isRange := strings.Cut(val, "-")
		a, okA := parseUint(strings.TrimSpace(lo), 16)
		if !okA {
			continue
		}
		b := a
		if isRange {
			var okB bool
			if b, okB = parseUint(strings.TrimSpace(hi), 16); !okB || b < a {
				continue
			}
		}
		if id == condLocalPort {
			ports = ports.Union(PortSet{Ranges: []PortRange{{uint16(a), uint16(b)}}})
			ok = true
		} else if a == b {
			proto = Protocol(a)
		}
	}
	return ports, proto, ok
}

// parseAddr parses an address field, ignoring "-" and zone suffixes.
func parseAddr(s string) netip.Addr {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '%'); i >= 0 {
		s = s[:i]
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

func parsePortField(s string) (uint16, bool) {
	n, ok := parseUint(s, 16)
	return uint16(n), ok
}

// ephemeral reports whether p is in the Windows dynamic port range.
func ephemeral(p uint16) bool { return p >= 49152 }

// baseName returns the last element of a Windows or POSIX path.
func baseName(p string) string {
	if i := strings.LastIndexAny(p, `\\/`); i >= 0 {
		return p[i+1:]
	}
	return p
}
