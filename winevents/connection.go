package winevents

import (
	"net/netip"
	"strings"
)

// Host-side connection evidence: Security 5156 inbound and Sysmon 3 with
// Initiated=false. Which of Source/Dest is the local side differs between
// Windows versions for 5156, so it is decided by the host's addresses
// (host.ip from Winlogbeat when it names the source computer, addresses
// learned from listeners and earlier connections), then by a port the host
// is known to listen on, then by the dynamic port range (the peer of an
// inbound connection normally uses an ephemeral port), and for Sysmon 3 by
// its Initiated=false meaning (destination is local). Undecided connections
// are emitted with LocalSideBy "unknown".

type endpoint struct {
	addr netip.Addr
	port uint16
}

func (s *state) wfpConnection(h *hostState, r *record, emit func(ExposureChange)) {
	if strings.TrimSpace(r.get("Direction")) != codeDirInbound {
		return
	}
	src := endpoint{parseAddr(r.get("SourceAddress")), portOrZero(r.get("SourcePort"))}
	dst := endpoint{parseAddr(r.get("DestAddress")), portOrZero(r.get("DestPort"))}
	c := baseChange(r)
	c.Application = r.get("Application")
	if pid, ok := parseUint(r.get("ProcessID"), 32); ok {
		c.ProcessID = uint32(pid)
	}
	c.FilterID, _ = parseUint(r.get("FilterRTID"), 64)
	c.Layer = layerText(r.get("LayerName"))
	proto := parseProtocol(r.get("Protocol"))
	s.connection(h, r, &c, proto, src, dst, false, emit)
}

func (s *state) sysmonEvent(h *hostState, r *record, emit func(ExposureChange)) {
	if !strings.EqualFold(strings.TrimSpace(r.get("Initiated")), "false") {
		return
	}
	src := endpoint{parseAddr(r.get("SourceIp")), portOrZero(r.get("SourcePort"))}
	dst := endpoint{parseAddr(r.get("DestinationIp")), portOrZero(r.get("DestinationPort"))}
	c := baseChange(r)
	c.Application = r.get("Image")
	if pid, ok := parseUint(r.get("ProcessId"), 32); ok {
		c.ProcessID = uint32(pid)
	}
	proto := parseProtocol(r.get("Protocol"))
	if t, ok := parseUTCTime(r.get("UtcTime")); ok {
		c.Observed = t
	}
	s.connection(h, r, &c, proto, src, dst, true, emit)
}

func (s *state) connection(h *hostState, r *record, c *ExposureChange, proto Protocol, src, dst endpoint, sysmon bool, emit func(ExposureChange)) {
	c.Kind = KindConnection
	c.Protocol = proto
	c.Direction = DirIn
	c.Action = ActionAllow
	c.Active = true
	local, remote, by := dst, src, ""
	listens := func(e endpoint) bool {
		_, ok := h.listening.get(uint32(proto)<<16 | uint32(e.port))
		return ok
	}
	// Sysmon writes the reverse-resolved name of each side; the side named
	// like the computer is local. Which of Source/Destination is local for
	// Initiated=false differs between Sysmon versions, so that is the last
	// resort, after the dynamic port range.
	named := func(name string) bool { return sysmon && sameComputer(name, r.computer) }
	srcNamed, dstNamed := named(r.get("SourceHostname")), named(r.get("DestinationHostname"))
	switch {
	case h.isLocalIP(dst.addr, r.hostIPs) && !h.isLocalIP(src.addr, r.hostIPs):
		by = "host_ip"
	case h.isLocalIP(src.addr, r.hostIPs) && !h.isLocalIP(dst.addr, r.hostIPs):
		local, remote, by = src, dst, "host_ip"
	case listens(dst) && !listens(src):
		by = "listener"
	case listens(src) && !listens(dst):
		local, remote, by = src, dst, "listener"
	case dstNamed && !srcNamed:
		by = "sysmon_hostname"
	case srcNamed && !dstNamed:
		local, remote, by = src, dst, "sysmon_hostname"
	case ephemeral(src.port) && !ephemeral(dst.port) && dst.port != 0:
		by = "ephemeral_port"
	case ephemeral(dst.port) && !ephemeral(src.port) && src.port != 0:
		local, remote, by = src, dst, "ephemeral_port"
	case sysmon:
		by = "sysmon_initiated"
	default:
		by = "unknown"
	}
	// Only evidence that cannot be steered from outside teaches the host's
	// addresses (they go into every change of the host): an address that is
	// already the host's, or the socket it listens on. A reverse-resolved
	// name is the peer's PTR record, a port range a convention, and Sysmon's
	// orientation a version detail; learning from them once filed a client's
	// address as a domain controller's.
	if by == "host_ip" || by == "listener" {
		h.learnIP(local.addr)
	}
	c.LocalAddress, c.RemoteAddress, c.RemotePort = local.addr, remote.addr, remote.port
	if local.port != 0 {
		c.Ports = SinglePort(local.port)
	}
	c.LocalSideBy = by
	emit(*c)
}

func portOrZero(s string) uint16 {
	p, _ := parsePortField(s)
	return p
}

// serviceEvent handles System 7045 (service installed) and 7036 (service
// entered the running state): weak evidence without a port.
func serviceEvent(r *record, emit func(ExposureChange)) {
	c := baseChange(r)
	c.Kind = KindService
	c.Active = true
	switch r.eventID {
	case 7045:
		c.Service = r.get("ServiceName")
		c.Application = r.get("ImagePath")
		c.Setting = strings.TrimSpace("start type " + r.get("StartType"))
		if acct := r.get("AccountName"); acct != "" {
			c.Setting += ", account " + acct
		}
	case 7036:
		if !strings.EqualFold(strings.TrimSpace(r.get("param2")), "running") {
			return
		}
		c.Service = r.get("param1")
	}
	emit(c)
}

// sameComputer reports whether name (a reverse-resolved host name as Sysmon
// writes it) names computer: equal ignoring case, or the same first label
// when only one of them is qualified ("HR001" and "HR001.shire.com").
func sameComputer(name, computer string) bool {
	name, computer = strings.TrimSpace(name), strings.TrimSpace(computer)
	if name == "" || name == "-" || computer == "" {
		return false
	}
	if strings.EqualFold(name, computer) {
		return true
	}
	nShort, nRest, nQual := strings.Cut(name, ".")
	cShort, _, cQual := strings.Cut(computer, ".")
	return nQual != cQual && nRest != "" == nQual && strings.EqualFold(nShort, cShort)
}
