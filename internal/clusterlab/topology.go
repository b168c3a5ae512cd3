//go:build linux

package clusterlab

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"

	"github.com/knockwatch/knockwatch/internal/netns"
)

// Addresses of the two-path lab (private, inside the namespaces only).
var (
	AttackerIP = netip.MustParseAddr("10.205.0.66")
	HostIP     = netip.MustParseAddr("10.205.0.5")
)

// Interface names.
const (
	pathA = "pa" // attacker pa0 <-> host pa1: path A
	pathB = "pb"
	// CaptureA and CaptureB are the two taps' capture interfaces in the
	// SOC namespace.
	CaptureA = "capa"
	CaptureB = "capb"
)

// topology is two paths between an attacker and a host, each a switch
// with its host-side port mirrored (both directions) to a tap's capture
// interface:
//
//	attacker pa0 ── aa [bra] ha ── pa1 host    path A: ha mirrored to capa
//	attacker pb0 ── ab [brb] hb ── pb1 host    path B: hb mirrored to capb
//	                 (net namespace)            capa, capb, Kafka and every
//	                                            knockwatch process live in
//	                                            the SOC namespace
//
// Which path carries the pair's packets is a route (host routes in both
// namespaces), so moving it is what ECMP re-hashing or a failover does:
// the knock crosses tap A, the connection tap B. The mirrors sit on the
// switch, not on the endpoints' own interfaces, so the copies carry the
// checksums the wire carries (a copy taken at a sender's egress hook
// would still wait for its checksum offload).
//
// With a real Kafka cluster (rootSOC) the SOC side is this process's own
// namespace: the capture interfaces are created here (they go with the
// net namespace when it is removed) and the processes reach the brokers
// as any client of the machine does.
type topology struct {
	attacker, host, net *netns.Namespace
	soc                 *netns.Namespace // nil: this process's namespace
}

func newTopology(env *netns.Env, rootSOC bool) (*topology, error) {
	t := &topology{}
	var err error
	roles := []struct {
		dst  **netns.Namespace
		role string
	}{{&t.attacker, "attacker"}, {&t.host, "host"}, {&t.net, "net"}}
	if !rootSOC {
		roles = append(roles, struct {
			dst  **netns.Namespace
			role string
		}{&t.soc, "soc"})
	}
	for _, n := range roles {
		if *n.dst, err = env.Namespace(n.role); err != nil {
			return nil, fmt.Errorf("build two-tap topology: %w", err)
		}
	}
	steps := []func() error{
		func() error { return t.attacker.AddAddr("lo", netip.PrefixFrom(AttackerIP, 32)) },
		func() error { return t.host.AddAddr("lo", netip.PrefixFrom(HostIP, 32)) },
	}
	if !rootSOC {
		steps = append(steps,
			// The SOC side's own address: glibc resolves 127.0.0.1 for
			// librdkafka (kcat) only where some non-loopback IPv4 address
			// exists (AI_ADDRCONFIG). A veth pair of its own: not every
			// kernel has the dummy driver.
			func() error { return netns.Veth(t.soc, "soc0", t.soc, "soc1") },
			func() error { return t.soc.AddAddr("soc0", netip.MustParsePrefix("10.205.9.1/32")) },
			func() error { return t.soc.LinkUp("soc0") },
			func() error { return t.soc.LinkUp("soc1") })
	}
	var waits []nsIf
	for _, p := range []struct{ path, sw, span, capture string }{{pathA, "a", "spana", CaptureA}, {pathB, "b", "spanb", CaptureB}} {
		br, aPort, hPort := "br"+p.sw, "a"+p.sw, "h"+p.sw
		steps = append(steps,
			func() error { return t.net.AddBridge(br) },
			func() error { return netns.Veth(t.attacker, p.path+"0", t.net, aPort) },
			func() error { return netns.Veth(t.host, p.path+"1", t.net, hPort) },
			// Complete checksums, as on a wire: the sensors check them.
			func() error { return t.attacker.SetTxChecksum(p.path+"0", false) },
			func() error { return t.host.SetTxChecksum(p.path+"1", false) },
			func() error { return t.net.SetMaster(aPort, br) },
			func() error { return t.net.SetMaster(hPort, br) },
			func() error { return t.net.LinkUp(aPort) },
			func() error { return t.net.LinkUp(hPort) },
			func() error { return t.attacker.LinkUp(p.path + "0") },
			func() error { return t.host.LinkUp(p.path + "1") },
			func() error { return t.captureLink(p.span, p.capture) },
			func() error { return t.net.LinkUp(p.span) },
			func() error { return t.net.Mirror(hPort, p.span, netns.Both) },
		)
		waits = append(waits, nsIf{t.attacker, p.path + "0"}, nsIf{t.host, p.path + "1"}, nsIf{t.net, br},
			nsIf{t.net, aPort}, nsIf{t.net, hPort}, nsIf{t.net, p.span})
		if t.soc != nil {
			waits = append(waits, nsIf{t.soc, p.capture})
		}
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, fmt.Errorf("build two-tap topology: %w", err)
		}
	}
	for _, w := range waits {
		if err := w.ns.WaitUp(w.ifc, netns.UpTimeout); err != nil {
			return nil, fmt.Errorf("build two-tap topology: %w", err)
		}
	}
	if err := t.use(context.Background(), pathA); err != nil {
		return nil, err
	}
	return t, nil
}

// captureLink makes the span (in the net namespace) and capture (on the
// SOC side) ends of a tap and brings the capture end up.
func (t *topology) captureLink(span, capture string) error {
	if t.soc != nil {
		if err := netns.Veth(t.net, span, t.soc, capture); err != nil {
			return err
		}
		return t.soc.LinkUp(capture)
	}
	ctx := context.Background()
	if out, err := exec.CommandContext(ctx, "ip", "link", "add", capture, "type", "veth", "peer", "name", span, "netns", t.net.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip link add %s: %w: %s", capture, err, out)
	}
	if out, err := exec.CommandContext(ctx, "ip", "link", "set", capture, "up").CombinedOutput(); err != nil {
		return fmt.Errorf("ip link set %s up: %w: %s", capture, err, out)
	}
	return nil
}

type nsIf struct {
	ns  *netns.Namespace
	ifc string
}

// use routes the attacker-host pair over path (pathA or pathB), both ways.
func (t *topology) use(ctx context.Context, path string) error {
	if err := t.attacker.Run(ctx, "ip", "route", "replace", HostIP.String()+"/32", "dev", path+"0", "src", AttackerIP.String()); err != nil {
		return err
	}
	return t.host.Run(ctx, "ip", "route", "replace", AttackerIP.String()+"/32", "dev", path+"1", "src", HostIP.String())
}
