package loader

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink/nl"

	"github.com/knockwatch/knockwatch/internal/netns"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
	"github.com/knockwatch/knockwatch/sensor"
)

// The integration tests run the real program, attached in native mode to a
// veth in a sensor namespace that receives a span copy of a host's link,
// while real TCP stacks in other namespaces knock and connect.

// liveS0Timeout keeps the S0 scenarios short.
const liveS0Timeout = 200 * time.Millisecond

var knockPorts = []uint16{7000, 8000, 9000}

// live is one lab: a fresh topology and a live sensor on its span.
type live struct {
	topo *netns.Topology
	s    *Sensor
	rd   *Reader
	ctx  context.Context
}

// newLive builds a topology (tap: the host's two directions on two capture
// interfaces) and loads the program in live mode, attached natively to
// every capture interface: one program, one set of maps.
func newLive(t *testing.T, tap bool, mutate ...func(*sensor.Config)) *live {
	t.Helper()
	testenv.RequirePrivileged(t)
	env, err := netns.NewEnv("kwitest")
	if err != nil {
		t.Fatal(err)
	}
	// Registered before anything exists: runs last, removes everything.
	t.Cleanup(func() {
		if err := env.Close(); err != nil {
			t.Errorf("remove namespaces: %v", err)
		}
		out, err := exec.Command("ip", "netns", "list").CombinedOutput()
		if err != nil {
			t.Errorf("ip netns list: %v: %s", err, out)
		}
		for _, n := range env.Namespaces() {
			if _, err := os.Stat(n.Path()); err == nil || strings.Contains(string(out), n.Name) {
				t.Errorf("namespace %s left behind", n.Name)
			}
		}
	})
	t.Cleanup(env.CloseOnSignal())
	topo, err := env.NewTopology(netns.TopologyConfig{Tap: tap})
	if err != nil {
		t.Fatal(err)
	}

	cfg := sensor.DefaultConfig()
	cfg.S0Timeout = liveS0Timeout
	cfg.PairSlots = 1 << 12
	// The default port table: with a random hash seed, two of a test's
	// few ports of one host would share a slot (and one lose its history
	// to the other) in ~0.3% of runs at 1,024 slots, ~0.005% at 65,536.
	// The tests that want collisions ask for tiny tables themselves.
	cfg.PortSlots = 1 << 16
	cfg.Candidates = 1024
	cfg.Watches = 256
	cfg.RingBytes = 1 << 16
	for _, m := range mutate {
		m(&cfg)
	}
	var s *Sensor
	err = topo.Sensor.Do(func() error {
		var err error
		if s, err = Load(cfg, Options{}); err != nil {
			return err
		}
		for _, ifc := range topo.CaptureIfaces {
			mode, err := s.Attach(ifc, sensor.ModeNative)
			if err != nil {
				return err
			}
			if mode != sensor.ModeNative {
				return fmt.Errorf("attached to %s in %s mode, want native", ifc, mode)
			}
		}
		return nil
	})
	if s != nil {
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("close sensor: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatalf("load and attach in %s: %v", topo.Sensor.Name, err)
	}
	for _, ifc := range topo.CaptureIfaces {
		l, err := topo.Sensor.Netlink().LinkByName(ifc)
		if err != nil {
			t.Fatal(err)
		}
		if x := l.Attrs().Xdp; x == nil || !x.Attached || x.AttachMode != nl.XDP_ATTACHED_DRV {
			t.Fatalf("%s: XDP state %+v, want a driver-mode (native) program", ifc, x)
		}
	}
	rd, err := s.NewReader()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return &live{topo: topo, s: s, rd: rd, ctx: ctx}
}

// ipOf picks an endpoint's address in the family of the test.
func ipOf(ep netns.Endpoint, v6 bool) netip.Addr {
	if v6 {
		return ep.IP6
	}
	return ep.IP
}

// dial connects from ep to dst:port with the given timeout.
func (l *live) dial(ep netns.Endpoint, dst netip.Addr, port uint16, timeout time.Duration) (net.Conn, error) {
	return ep.NS.Dial(l.ctx, &net.Dialer{Timeout: timeout}, "tcp", netip.AddrPortFrom(dst, port).String())
}

// open starts a listener on the host on a fresh port and returns it with
// the port; accepted connections are kept open until the test ends.
func (l *live) open(t *testing.T, addr netip.Addr) (net.Listener, uint16) {
	t.Helper()
	ln, err := l.topo.Host.NS.Listen(l.ctx, "tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return ln, uint16(ln.Addr().(*net.TCPAddr).Port)
}

// connect completes a handshake from ep to the host's port and keeps the
// connection open until the test ends (no FIN or RST in the counters).
func (l *live) connect(t *testing.T, ep netns.Endpoint, dst netip.Addr, port uint16) *net.TCPConn {
	t.Helper()
	c, err := l.dial(ep, dst, port, 2*time.Second)
	if err != nil {
		t.Fatalf("connect %s -> %v:%d: %v", ep.NS.Role, dst, port, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// records waits until the ring buffer has delivered at least n records
// (or the time is up), then keeps reading briefly so that an unexpected
// extra record is caught too.
func (l *live) records(t *testing.T, n int) []sensor.Record {
	t.Helper()
	var recs []sensor.Record
	deadline := time.Now().Add(3 * time.Second)
	for {
		if len(recs) >= n {
			if extra := time.Now().Add(150 * time.Millisecond); extra.Before(deadline) {
				deadline = extra
			}
		}
		l.rd.SetDeadline(deadline)
		r, err := l.rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if len(recs) < n {
				c, _ := l.s.Counters()
				t.Logf("%d of %d records; counters: %v", len(recs), n, c)
			}
			return recs
		}
		if err != nil {
			t.Fatalf("read records: %v", err)
		}
		t.Logf("record %T %+v", r, r)
		recs = append(recs, r)
	}
}

// nearNow checks that a record time is wall-clock time of this test.
func nearNow(t *testing.T, what string, ts, start time.Time) {
	t.Helper()
	const slack = 2 * time.Second
	if ts.IsZero() || ts.Before(start.Add(-slack)) || ts.After(time.Now().Add(slack)) {
		t.Errorf("%s = %v: not within %v of the test's run [%v, %v]", what, ts, slack, start.UTC(), time.Now().UTC())
	}
}

func checkKnock(t *testing.T, recs []sensor.Record, src, dst netip.Addr, kind sensor.TouchKind, start time.Time) {
	t.Helper()
	ks := knocks(recs)
	if len(ks) != 1 {
		t.Fatalf("%d KNOCK records, want 1: %s", len(ks), dump(recs))
	}
	k := ks[0]
	if k.Src != src || k.Dst != dst {
		t.Errorf("KNOCK %v -> %v, want %v -> %v", k.Src, k.Dst, src, dst)
	}
	if len(k.Touches) != len(knockPorts) {
		t.Fatalf("KNOCK has %d touches, want %d: %+v", len(k.Touches), len(knockPorts), k.Touches)
	}
	for i, tc := range k.Touches {
		if tc.Port != knockPorts[i] || tc.Kind != kind {
			t.Errorf("touch %d: %d/%v, want %d/%v", i, tc.Port, tc.Kind, knockPorts[i], kind)
		}
		nearNow(t, fmt.Sprintf("touch %d time", i), tc.Time, start)
		// Equal times are fine (a coarse live clock stamps a whole tick
		// alike); a touch stamped before the one sent earlier is not.
		if i > 0 && tc.Time.Before(k.Touches[i-1].Time) {
			t.Errorf("touch %d at %v before touch %d at %v", i, tc.Time, i-1, k.Touches[i-1].Time)
		}
	}
	if k.Distinct != len(knockPorts) {
		t.Errorf("KNOCK distinct %d, want %d", k.Distinct, len(knockPorts))
	}
	nearNow(t, "KNOCK flag time", k.FlagTime, start)
	if last := k.Touches[len(k.Touches)-1].Time; k.FlagTime.Before(last) {
		t.Errorf("flagged at %v, before the last touch at %v", k.FlagTime, last)
	}
}

// wantHandshake is what the HANDSHAKE record must say.
type wantHandshake struct {
	src, dst    netip.Addr
	conn        *net.TCPConn
	port        uint16
	openAfter   time.Time // zero: the port was never seen open before
	openBefore  time.Time
	knockFlagAt time.Time
}

func checkHandshake(t *testing.T, recs []sensor.Record, w wantHandshake, start time.Time) {
	t.Helper()
	hs := handshakes(recs)
	if len(hs) != 1 {
		t.Fatalf("%d HANDSHAKE records, want 1: %s", len(hs), dump(recs))
	}
	h := hs[0]
	sport := uint16(w.conn.LocalAddr().(*net.TCPAddr).Port)
	if h.Src != w.src || h.Dst != w.dst || h.Port != w.port || h.SrcPort != sport {
		t.Errorf("HANDSHAKE %v:%d -> %v:%d, want %v:%d -> %v:%d", h.Src, h.SrcPort, h.Dst, h.Port, w.src, sport, w.dst, w.port)
	}
	nearNow(t, "SYN time", h.SYN, start)
	nearNow(t, "SYN-ACK time", h.SYNACK, start)
	nearNow(t, "ACK time", h.ACK, start)
	if h.SYNACK.Before(h.SYN) || h.ACK.Before(h.SYNACK) {
		t.Errorf("handshake times out of order: SYN %v, SYN-ACK %v, ACK %v", h.SYN, h.SYNACK, h.ACK)
	}
	if h.SYN.Before(w.knockFlagAt) {
		t.Errorf("handshake SYN at %v before the knock was flagged at %v", h.SYN, w.knockFlagAt)
	}
	if !h.PortLastClosed.IsZero() {
		t.Errorf("port last seen closed at %v, want never", h.PortLastClosed)
	}
	if w.openAfter.IsZero() {
		// The attacker was first: nothing was known of the port open.
		for _, v := range []struct {
			name string
			ts   time.Time
		}{{"first seen open", h.PortFirstOpen}, {"last seen open", h.PortLastOpen}, {"first completed by another", h.PortOtherDone}} {
			if !v.ts.IsZero() {
				t.Errorf("port %s at %v, want never (the attacker was first)", v.name, v.ts)
			}
		}
	} else {
		// Another client connected first. Its times come from the precise
		// clock and the attacker's SYN from the coarse one, so they are
		// checked against the test's own clock, not against the SYN.
		for _, v := range []struct {
			name string
			ts   time.Time
		}{{"first seen open", h.PortFirstOpen}, {"last seen open", h.PortLastOpen}, {"first completed by another", h.PortOtherDone}} {
			if v.ts.Before(w.openAfter) || v.ts.After(w.openBefore) || v.ts.After(h.ACK) {
				t.Errorf("port %s at %v, want the other client's connection in [%v, %v], before the ACK %v",
					v.name, v.ts, w.openAfter, w.openBefore, h.ACK)
			}
		}
	}
	if h.Distinct != len(knockPorts) {
		t.Errorf("HANDSHAKE distinct %d, want %d", h.Distinct, len(knockPorts))
	}
}

func dump(recs []sensor.Record) string {
	s := ""
	for _, r := range recs {
		s += fmt.Sprintf("\n  %T %+v", r, r)
	}
	return s
}

// checkCounters compares the counters the traffic determines exactly.
func (l *live) checkCounters(t *testing.T, want map[string]uint64) {
	t.Helper()
	c, err := l.s.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"backscatter", "synack_unmatched", "handshake_bad_ack", "ringbuf_full",
		"map_insert_fail", "bad_flags", "truncated", "bad_header", "fragment", "no_meta", "pending_evicted", "slot_takeover"} {
		if _, ok := want[name]; !ok {
			want[name] = 0
		}
	}
	for name, v := range want {
		if c[name] != v {
			t.Errorf("counter %s = %d, want %d", name, c[name], v)
		}
	}
	if c["tcp"] != c["ipv4"]+c["ipv6"] {
		t.Errorf("tcp %d != ipv4 %d + ipv6 %d", c["tcp"], c["ipv4"], c["ipv6"])
	}
	if c["packets"] < c["tcp"]+c["non_ip"]+c["non_tcp"] {
		t.Errorf("packets %d < tcp %d + non_ip %d + non_tcp %d", c["packets"], c["tcp"], c["non_ip"], c["non_tcp"])
	}
	if c["bytes"] < 54*c["tcp"] {
		t.Errorf("bytes %d: fewer than 54 per TCP packet (%d)", c["bytes"], c["tcp"])
	}
	if t.Failed() {
		t.Logf("counters: %v", c)
	}
}

// hostFirewall makes the host drop every inbound SYN (no RST, as Windows
// Firewall does by default) except to ports in the set @allowed.
const hostFirewall = `
table inet kwtest {
	set allowed { type inet_service; }
	chain input {
		type filter hook input priority filter; policy accept;
		tcp flags & (syn | ack) == syn tcp dport != @allowed drop
	}
}
`

// allow adds port to the host firewall's allowed set (the "rule added").
func (l *live) allow(t *testing.T, port uint16) {
	t.Helper()
	if err := l.topo.Host.NS.Nft(l.ctx, fmt.Sprintf("add element inet kwtest allowed { %d }\n", port)); err != nil {
		t.Fatal(err)
	}
}

func TestIntegrationNetns(t *testing.T) {
	testenv.RequirePrivileged(t)

	// REJ: the host answers the knocks with RSTs; the attacker then
	// connects to a port that just opened. Over IPv4 and IPv6 on a span
	// port, and over IPv4 on a tap whose two directions arrive on two
	// interfaces (SYNs on one, RSTs and SYN-ACKs on the other).
	for _, tc := range []struct {
		name    string
		v6, tap bool
	}{{"REJ/IPv4", false, false}, {"REJ/IPv6", true, false}, {"REJ/tap", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLive(t, tc.tap)
			att, host := ipOf(l.topo.Attacker, tc.v6), ipOf(l.topo.Host, tc.v6)
			start := time.Now()
			for _, p := range knockPorts {
				_, err := l.dial(l.topo.Attacker, host, p, 2*time.Second)
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Fatalf("dial closed port %d: %v, want connection refused", p, err)
				}
			}
			_, port := l.open(t, host)
			c := l.connect(t, l.topo.Attacker, host, port)
			recs := l.records(t, 2)
			checkKnock(t, recs, att, host, sensor.TouchREJ, start)
			if t.Failed() {
				return
			}
			checkHandshake(t, recs, wantHandshake{src: att, dst: host, conn: c, port: port,
				knockFlagAt: knocks(recs)[0].FlagTime}, start)
			l.checkCounters(t, map[string]uint64{
				"syn": 4, "rst": 3, "synack": 1, "touch_rej": 3, "touch_s0": 0, "syn_retrans": 0,
				"port_open": 1, "candidates": 1, "flags": 1, "watch_started": 1, "handshakes": 1,
				"handshake_repeat": 0, "tcp": 9, "allowlisted": 0,
			})
		})
	}

	// S0: the host's firewall drops the knocks silently; the attacker's
	// short dials time out, and each next SYN of the pair ages the previous
	// one into an S0 touch. A benign client connects to the new port before
	// the attacker does, which the HANDSHAKE must show. Once more with the
	// coarse live clock (CLOCK_MONOTONIC_COARSE mapped to UTC).
	for _, coarse := range []bool{false, true} {
		name := "S0/firewall"
		if coarse {
			name += "/coarse-clock"
		}
		t.Run(name, func(t *testing.T) {
			l := newLive(t, false, func(c *sensor.Config) { c.CoarseClock = coarse })
			att, host := l.topo.Attacker.IP, l.topo.Host.IP
			if err := l.topo.Host.NS.Nft(l.ctx, hostFirewall); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for _, p := range knockPorts {
				_, err := l.dial(l.topo.Attacker, host, p, liveS0Timeout+100*time.Millisecond)
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatalf("dial dropped port %d: %v, want a timeout", p, err)
				}
			}
			_, port := l.open(t, host)
			l.allow(t, port)
			before := time.Now()
			l.connect(t, l.topo.Client, host, port)
			after := time.Now()
			c := l.connect(t, l.topo.Attacker, host, port)
			recs := l.records(t, 2)
			checkKnock(t, recs, att, host, sensor.TouchS0, start)
			if t.Failed() {
				return
			}
			checkHandshake(t, recs, wantHandshake{src: att, dst: host, conn: c, port: port,
				openAfter: before.Add(-time.Second), openBefore: after.Add(time.Second),
				knockFlagAt: knocks(recs)[0].FlagTime}, start)
			l.checkCounters(t, map[string]uint64{
				"syn": 5, "rst": 0, "synack": 2, "touch_rej": 0, "touch_s0": 3, "syn_retrans": 0,
				// Two watches: the other client's (the port's first
				// connection since it opened) and the attacker's.
				"port_open": 2, "candidates": 1, "flags": 1, "watch_started": 2, "handshakes": 1,
				"tcp": 5 + 2 + 2, // SYNs, SYN-ACKs, completing ACKs
			})
		})
	}

	// The Debian knock client against the same firewall: three SYNs 100 ms
	// apart, then silence. No later SYN of the pair ages the knocks: the
	// userspace sweep (SweepEvery, as `knockwatch run` drives it) does, and
	// the KNOCK arrives before the port opens; then the attacker connects.
	t.Run("S0/knock-client/sweep", func(t *testing.T) {
		knock := lookTool(t, "knock", "knockd")
		l := newLive(t, false)
		att, host := l.topo.Attacker.IP, l.topo.Host.IP
		if err := l.topo.Host.NS.Nft(l.ctx, hostFirewall); err != nil {
			t.Fatal(err)
		}
		sweepCtx, stopSweep := context.WithCancel(l.ctx)
		var sweeping sync.WaitGroup
		sweeping.Add(1)
		go func() {
			defer sweeping.Done()
			l.s.SweepEvery(sweepCtx, 50*time.Millisecond, func(err error) { t.Errorf("sweep: %v", err) })
		}()
		defer sweeping.Wait()
		defer stopSweep()

		start := time.Now()
		args := []string{"-4", "-d", "100", host.String()}
		for _, p := range knockPorts {
			args = append(args, fmt.Sprint(p))
		}
		if err := l.topo.Attacker.NS.Run(l.ctx, knock, args...); err != nil {
			t.Fatal(err)
		}
		recs := l.records(t, 1)
		checkKnock(t, recs, att, host, sensor.TouchS0, start)
		if t.Failed() {
			return
		}
		flagAt := knocks(recs)[0].FlagTime
		_, port := l.open(t, host)
		l.allow(t, port)
		c := l.connect(t, l.topo.Attacker, host, port)
		recs = l.records(t, 1)
		checkHandshake(t, recs, wantHandshake{src: att, dst: host, conn: c, port: port, knockFlagAt: flagAt}, start)
		l.checkCounters(t, map[string]uint64{
			"syn": 4, "rst": 0, "synack": 1, "touch_s0": 3, "touch_rej": 0, "port_open": 1,
			"flags": 1, "watch_started": 1, "handshakes": 1, "tcp": 4 + 1 + 1,
		})
	})

	// A benign nmap connect scan (ports in order, the open one last) flags
	// too, as the sensor cannot know intent; but the HANDSHAKE carries how
	// many distinct closed ports were touched before it: hundreds, not a
	// knock's handful, which is how userspace tells a scan from a knock.
	t.Run("scan/nmap", func(t *testing.T) {
		nmap := lookTool(t, "nmap", "nmap")
		l := newLive(t, false)
		cli, host := l.topo.Client.IP, l.topo.Host.IP
		_, port := l.open(t, host)
		start := time.Now()
		const closed = 300
		if err := l.topo.Client.NS.Run(l.ctx, nmap, "-sT", "-n", "-Pn", "-r", "-p", fmt.Sprintf("1-%d,%d", closed, port), host.String()); err != nil {
			t.Fatal(err)
		}
		recs := l.records(t, 2)
		ks, hs := knocks(recs), handshakes(recs)
		if len(ks) != 1 || len(hs) != 1 {
			t.Fatalf("%d KNOCK and %d HANDSHAKE records, want 1 and 1: %s", len(ks), len(hs), dump(recs))
		}
		if k := ks[0]; k.Src != cli || k.Dst != host || len(k.Touches) != 3 || k.Touches[0].Port != 1 || k.Touches[2].Port != 3 {
			t.Errorf("KNOCK %+v: want %v -> %v flagged at the third port of the scan (1, 2, 3)", k, cli, host)
		}
		h := hs[0]
		if h.Src != cli || h.Dst != host || h.Port != port {
			t.Errorf("HANDSHAKE %v -> %v:%d, want %v -> %v:%d", h.Src, h.Dst, h.Port, cli, host, port)
		}
		nearNow(t, "SYN time", h.SYN, start)
		// nmap connects in parallel: a few closed ports may still be in
		// flight when the open one answers.
		if h.Distinct < closed*2/3 {
			t.Errorf("HANDSHAKE distinct %d, want most of the %d closed ports scanned", h.Distinct, closed)
		}
		c, err := l.s.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if c["touch_rej"] < closed*2/3 || c["flags"] != 1 || c["handshakes"] != 1 || c["ringbuf_full"] != 0 || c["map_insert_fail"] != 0 {
			t.Errorf("counters %v: want most of %d REJ touches, 1 flag, 1 handshake, no ring or map failures", c, closed)
		}
	})
}

// lookTool finds an external program the test drives; missing, it fails
// the test where privileged tests must run (CI) and skips it elsewhere.
func lookTool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv(testenv.RequirePrivilegedEnv) != "" {
			t.Fatalf("%s not installed (apt-get install %s): %v", name, pkg, err)
		}
		t.Skipf("%s not installed (apt-get install %s)", name, pkg)
	}
	return path
}
