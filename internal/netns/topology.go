//go:build linux

package netns

import (
	"fmt"
	"net/netip"
	"time"
)

// Interface names used by a Topology.
const (
	// EndpointIface is the one interface of the attacker, client and host.
	EndpointIface = "eth0"
	// BridgeIface is the switch's bridge.
	BridgeIface = "br0"
	// HostPort is the switch port the host hangs off; it is mirrored.
	HostPort = "sw-host"
	// SpanIface is the switch's span (mirror destination) port.
	SpanIface = "span0"
	// CaptureIface is the sensor's interface at the far end of the span.
	CaptureIface = "cap0"
	// TapSpanIface and TapCaptureIface are the second mirror port and
	// capture interface of a tap topology (see TopologyConfig.Tap).
	TapSpanIface    = "span1"
	TapCaptureIface = "cap1"
	// OneWaySpanIface and OneWayCaptureIface carry one direction of a
	// second server's link (see TopologyConfig.OneWay).
	OneWaySpanIface    = "span2"
	OneWayCaptureIface = "cap2"
)

// TopologyConfig sets a Topology's addresses. The zero value picks the
// defaults of DefaultTopologyConfig.
type TopologyConfig struct {
	// Subnet4 and Subnet6 hold every endpoint; the host is .5 (::5), the
	// attacker .66 (::66) and the client .20 (::20).
	Subnet4 netip.Prefix
	Subnet6 netip.Prefix
	// Tap splits the mirror the way a passive tap does: what the host
	// receives goes to cap0, what it sends to cap1 (over span0 and span1).
	// The default is one span port carrying both directions to cap0.
	Tap bool
	// OneWay adds a second server (Files, .6) whose switch port is
	// mirrored to a second capture interface, cap2, in one direction
	// only: what the server receives, never what it sends, as from a tap
	// whose other port is not attached.
	OneWay bool
}

// DefaultTopologyConfig returns 10.203.0.0/24 and fd6b:7763::/64: private
// ranges that live only inside the namespaces.
func DefaultTopologyConfig() TopologyConfig {
	return TopologyConfig{
		Subnet4: netip.MustParsePrefix("10.203.0.0/24"),
		Subnet6: netip.MustParsePrefix("fd6b:7763::/64"),
	}
}

// Endpoint is a namespace with one interface (eth0) on the switch.
type Endpoint struct {
	NS  *Namespace
	IP  netip.Addr // IPv4
	IP6 netip.Addr
	// Port is the endpoint's port on the switch.
	Port string
}

// Topology is the lab network, one switch with a span port:
//
//	attacker eth0 ─┐
//	client   eth0 ─┼─ br0 (switch) ── sw-host ── eth0 host
//	               │        sw-host ingress+egress ⇒ span0 ── cap0 (sensor)
//
// Every packet the host sends or receives is mirrored, once, to the
// sensor's capture interface cap0, which has no address: the sensor sees
// copies, as on a real span port. With TopologyConfig.Tap the two
// directions arrive on two interfaces instead (cap0: to the host, cap1:
// from the host), as from a passive tap. Traffic between the attacker and
// the client does not reach the mirror.
//
// Native (driver) XDP works on the capture veths as they are: a program
// attached to cap0 runs in the veth's NAPI poll on every mirrored frame.
// It needs no program on the peer (span0) and no GRO setting; those only
// matter for XDP_REDIRECT into a veth. While it is attached, the peer's MTU
// is capped (about 3.5 kB for a program without multi-buffer support;
// larger fails with ERANGE), and large GSO frames are segmented before
// they reach it.
type Topology struct {
	Env                    *Env
	Attacker, Client, Host Endpoint
	// Files is the second server of a OneWay topology (NS nil otherwise).
	Files            Endpoint
	Switch, Sensor   *Namespace
	Subnet4, Subnet6 netip.Prefix
	// CaptureIface is the sensor's first (in span mode only) capture
	// interface; CaptureIfaces lists all of them.
	CaptureIface  string
	CaptureIfaces []string
	// MirrorPort is the mirrored switch port (the host's link).
	MirrorPort string
}

// NewTopology builds the lab network in e. On failure, what was made stays
// recorded in e, and e.Close removes it.
func (e *Env) NewTopology(cfg TopologyConfig) (*Topology, error) {
	def := DefaultTopologyConfig()
	if !cfg.Subnet4.IsValid() {
		cfg.Subnet4 = def.Subnet4
	}
	if !cfg.Subnet6.IsValid() {
		cfg.Subnet6 = def.Subnet6
	}
	if !cfg.Subnet4.Addr().Is4() || cfg.Subnet4.Bits() > 24 {
		return nil, fmt.Errorf("build topology: subnet4 %v: want an IPv4 prefix of /24 or wider", cfg.Subnet4)
	}
	if !cfg.Subnet6.Addr().Is6() || cfg.Subnet6.Addr().Is4In6() || cfg.Subnet6.Bits() > 120 {
		return nil, fmt.Errorf("build topology: subnet6 %v: want an IPv6 prefix of /120 or wider", cfg.Subnet6)
	}
	t := &Topology{Env: e, Subnet4: cfg.Subnet4.Masked(), Subnet6: cfg.Subnet6.Masked(),
		CaptureIface: CaptureIface, MirrorPort: HostPort}
	var err error
	if t.Switch, err = e.Namespace("switch"); err != nil {
		return nil, fmt.Errorf("build topology: %w", err)
	}
	if err := t.Switch.AddBridge(BridgeIface); err != nil {
		return nil, fmt.Errorf("build topology: %w", err)
	}
	for _, ep := range []struct {
		dst  *Endpoint
		role string
		host byte
	}{{&t.Host, "host", 5}, {&t.Attacker, "attacker", 66}, {&t.Client, "client", 20}} {
		if *ep.dst, err = t.endpoint(ep.role, ep.host); err != nil {
			return nil, fmt.Errorf("build topology: %w", err)
		}
	}
	endpoints := []Endpoint{t.Host, t.Attacker, t.Client}
	if cfg.OneWay {
		if t.Files, err = t.endpoint("files", 6); err != nil {
			return nil, fmt.Errorf("build topology: %w", err)
		}
		endpoints = append(endpoints, t.Files)
	}
	if t.Sensor, err = e.Namespace("sensor"); err != nil {
		return nil, fmt.Errorf("build topology: %w", err)
	}
	type mirror struct {
		port, span, capture string
		dir                 Direction
	}
	mirrors := []mirror{{HostPort, SpanIface, CaptureIface, Both}}
	if cfg.Tap {
		// Egress of the host's switch port is what the host receives.
		mirrors = []mirror{{HostPort, SpanIface, CaptureIface, Egress}, {HostPort, TapSpanIface, TapCaptureIface, Ingress}}
	}
	if cfg.OneWay {
		// What the file server receives, never what it sends.
		mirrors = append(mirrors, mirror{t.Files.Port, OneWaySpanIface, OneWayCaptureIface, Egress})
	}
	for _, m := range mirrors {
		if err := steps(
			func() error { return Veth(t.Switch, m.span, t.Sensor, m.capture) },
			func() error { return t.Switch.LinkUp(m.span) },
			func() error { return t.Sensor.LinkUp(m.capture) },
			func() error { return t.Switch.Mirror(m.port, m.span, m.dir) },
		); err != nil {
			return nil, fmt.Errorf("build topology: %w", err)
		}
		t.CaptureIfaces = append(t.CaptureIfaces, m.capture)
	}
	// Every link must pass packets before the topology is handed out.
	type nsIf struct {
		ns  *Namespace
		ifc string
	}
	waits := []nsIf{{t.Switch, BridgeIface}}
	for _, ep := range endpoints {
		waits = append(waits, nsIf{ep.NS, EndpointIface}, nsIf{t.Switch, ep.Port})
	}
	for _, m := range mirrors {
		waits = append(waits, nsIf{t.Switch, m.span}, nsIf{t.Sensor, m.capture})
	}
	for _, w := range waits {
		if err := w.ns.WaitUp(w.ifc, UpTimeout); err != nil {
			return nil, fmt.Errorf("build topology: %w", err)
		}
	}
	return t, nil
}

// UpTimeout bounds the wait for a topology's links to come up.
const UpTimeout = 10 * time.Second

// endpoint makes a namespace for role with eth0 on the switch, addressed
// .host in both subnets.
func (t *Topology) endpoint(role string, host byte) (Endpoint, error) {
	ns, err := t.Env.Namespace(role)
	if err != nil {
		return Endpoint{}, err
	}
	ep := Endpoint{NS: ns, IP: withHost(t.Subnet4.Addr(), host), IP6: withHost(t.Subnet6.Addr(), host), Port: "sw-" + role}
	if err := steps(
		func() error { return Veth(ns, EndpointIface, t.Switch, ep.Port) },
		// Complete checksums, as on a wire: the sensor checks them.
		func() error { return ns.SetTxChecksum(EndpointIface, false) },
		func() error { return t.Switch.SetMaster(ep.Port, BridgeIface) },
		func() error { return t.Switch.LinkUp(ep.Port) },
		func() error { return ns.AddAddr(EndpointIface, netip.PrefixFrom(ep.IP, t.Subnet4.Bits())) },
		func() error { return ns.AddAddr(EndpointIface, netip.PrefixFrom(ep.IP6, t.Subnet6.Bits())) },
		func() error { return ns.LinkUp(EndpointIface) },
	); err != nil {
		return Endpoint{}, err
	}
	return ep, nil
}

// steps runs fns in order and stops at the first error.
func steps(fns ...func() error) error {
	for _, fn := range fns {
		if err := fn(); err != nil {
			return err
		}
	}
	return nil
}

// withHost sets the last byte of a network address.
func withHost(a netip.Addr, host byte) netip.Addr {
	b := a.AsSlice()
	b[len(b)-1] = host
	out, _ := netip.AddrFromSlice(b)
	return out
}

// Close removes the whole topology (the Env's namespaces).
func (t *Topology) Close() error { return t.Env.Close() }
