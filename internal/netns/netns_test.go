package netns

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/knockwatch/knockwatch/internal/testenv"
)

// newEnv makes an Env whose Close is registered before anything is made.
func newEnv(t *testing.T, prefix string) *Env {
	t.Helper()
	testenv.RequirePrivileged(t)
	e, err := NewEnv(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close env: %v", err)
		}
	})
	return e
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// ipNetnsList is what `ip netns list` shows.
func ipNetnsList(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	return string(out)
}

func TestNamespaceLifecycle(t *testing.T) {
	e := newEnv(t, "kwnstest")
	a, err := e.Namespace("left")
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.Namespace("right")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a.Name, fmt.Sprintf("kwnstest-%d-", os.Getpid())) || !strings.HasSuffix(a.Name, "-left") {
		t.Errorf("name %q: want kwnstest-PID-RANDOM-left", a.Name)
	}
	if err := Veth(a, "v-left", b, "v-right"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		ns   *Namespace
		ifc  string
		addr string
	}{{a, "v-left", "192.0.2.1/24"}, {b, "v-right", "192.0.2.2/24"}, {a, "v-left", "2001:db8::1/64"}, {b, "v-right", "2001:db8::2/64"}} {
		if err := s.ns.AddAddr(s.ifc, netip.MustParsePrefix(s.addr)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.LinkUp("v-left"); err != nil {
		t.Fatal(err)
	}
	if err := b.LinkUp("v-right"); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		ns  *Namespace
		ifc string
	}{{a, "v-left"}, {b, "v-right"}, {a, "lo"}} {
		if err := w.ns.WaitUp(w.ifc, UpTimeout); err != nil {
			t.Fatal(err)
		}
	}
	list := ipNetnsList(t)
	for _, n := range []*Namespace{a, b} {
		if !strings.Contains(list, n.Name) {
			t.Errorf("ip netns list does not show %s:\n%s", n.Name, list)
		}
	}
	if err := a.Run(context.Background(), "ip", "link", "show", "v-left"); err != nil {
		t.Errorf("ip netns exec: %v", err)
	}

	// A TCP round trip across the veth, both address families.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, addr := range []string{"192.0.2.2", "[2001:db8::2]"} {
		l, err := b.Listen(ctx, "tcp", addr+":0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.Copy(c, c)
			c.Close()
		}()
		c, err := a.Dial(ctx, &net.Dialer{Timeout: 2 * time.Second}, "tcp", l.Addr().String())
		if err != nil {
			t.Fatalf("dial %v from %s: %v", l.Addr(), a.Name, err)
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("knock")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "knock" {
			t.Fatalf("echo: %q, %v", buf, err)
		}
		c.Close()
		l.Close()
	}
	// The caller's namespace has no such interface.
	if _, err := net.InterfaceByName("v-left"); err == nil {
		t.Error("v-left is visible outside its namespace")
	}

	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	for _, n := range []*Namespace{a, b} {
		if exists(n.Path()) {
			t.Errorf("%s still exists after Close", n.Path())
		}
	}
	if list := ipNetnsList(t); strings.Contains(list, e.id) {
		t.Errorf("ip netns list still shows the env's namespaces:\n%s", list)
	}
	if _, err := e.Namespace("late"); err == nil {
		t.Error("Namespace after Close: want an error")
	}
}

// TestDoRestoresThreads checks that Do moves its thread back: after many
// calls, every thread the runtime hands out is still in our namespace.
func TestDoRestoresThreads(t *testing.T) {
	e := newEnv(t, "kwnstest")
	n, err := e.Namespace("inside")
	if err != nil {
		t.Fatal(err)
	}
	orig, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	for i := 0; i < 20; i++ {
		err := n.Do(func() error {
			ifs, err := net.Interfaces()
			if err != nil {
				return err
			}
			if len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Flags&net.FlagUp == 0 {
				return fmt.Errorf("inside: interfaces %v, want only lo, up", ifs)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Do(func() error { return errors.New("boom") }); err == nil || err.Error() != "boom" {
		t.Errorf("Do error: got %v, want boom", err)
	}
	func() {
		defer func() {
			if p := recover(); p != "kaboom" {
				t.Errorf("Do panic: got %v, want kaboom", p)
			}
		}()
		n.Do(func() error { panic("kaboom") })
	}()
	errs := make(chan error, 64)
	for i := 0; i < cap(errs); i++ {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cur, err := vnetns.Get()
			if err != nil {
				errs <- err
				return
			}
			defer cur.Close()
			if !cur.Equal(orig) {
				errs <- fmt.Errorf("thread %d left in namespace %v", unix.Gettid(), cur)
				return
			}
			errs <- nil
		}()
	}
	for i := 0; i < cap(errs); i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestPartialFailureCleansUp(t *testing.T) {
	e := newEnv(t, "kwnstest")
	if _, err := e.Namespace("Bad-Role"); err == nil {
		t.Error("bad role accepted")
	}
	a, err := e.Namespace("one")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Namespace("one"); err == nil {
		t.Error("duplicate role accepted")
	}
	b, err := e.Namespace("two")
	if err != nil {
		t.Fatal(err)
	}
	if err := Veth(a, "ok0", b, "ok1"); err != nil {
		t.Fatal(err)
	}
	if err := Veth(a, "name-far-too-long-for-linux", b, "x"); err == nil {
		t.Error("veth with a 27-character name accepted")
	}
	if err := a.Mirror("ok0", "nosuch", Both); err == nil {
		t.Error("mirror to a missing interface accepted")
	}
	if err := e.Close(); err != nil {
		t.Fatalf("close after failures: %v", err)
	}
	for _, n := range []*Namespace{a, b} {
		if exists(n.Path()) {
			t.Errorf("%s left behind", n.Path())
		}
	}
}

// rootLinks lists the caller's interfaces.
func rootLinks(t *testing.T) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return strings.Join(names, ",")
}

func TestNewEnvRejectsBadPrefix(t *testing.T) {
	for _, p := range []string{"", "Kw", "kw-x", "1kw", "kw/x", "abcdefghijklmnopq"} {
		if _, err := NewEnv(p); err == nil {
			t.Errorf("prefix %q accepted", p)
		}
	}
}

// frame is the part of a captured TCP frame the mirror test checks.
type frame struct {
	src, dst     netip.Addr
	sport, dport uint16
	flags        uint8
}

// parseTCP decodes Ethernet + IPv4/IPv6 (no extension headers) + TCP.
func parseTCP(b []byte) (frame, bool) {
	if len(b) < 14 {
		return frame{}, false
	}
	et, p := binary.BigEndian.Uint16(b[12:]), b[14:]
	var f frame
	var l4 []byte
	switch {
	case et == 0x0800 && len(p) >= 20 && p[9] == 6:
		ihl := int(p[0]&0x0f) * 4
		f.src, _ = netip.AddrFromSlice(p[12:16])
		f.dst, _ = netip.AddrFromSlice(p[16:20])
		if len(p) < ihl {
			return frame{}, false
		}
		l4 = p[ihl:]
	case et == 0x86dd && len(p) >= 40 && p[6] == 6:
		f.src, _ = netip.AddrFromSlice(p[8:24])
		f.dst, _ = netip.AddrFromSlice(p[24:40])
		l4 = p[40:]
	default:
		return frame{}, false
	}
	if len(l4) < 14 {
		return frame{}, false
	}
	f.sport, f.dport, f.flags = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:]), l4[13]
	return f, true
}

// capture opens an AF_PACKET socket on ifname inside ns.
func capture(t *testing.T, ns *Namespace, ifname string) int {
	t.Helper()
	var fd int
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("capture on %s: %v", ifname, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// readFrames reads TCP frames from fd for the given time.
func readFrames(t *testing.T, fd int, d time.Duration) []frame {
	t.Helper()
	var out []frame
	buf := make([]byte, 4096)
	for end := time.Now().Add(d); ; {
		left := time.Until(end)
		if left <= 0 {
			return out
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			t.Fatal(err)
		}
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("read capture: %v", err)
		}
		if f, ok := parseTCP(buf[:n]); ok {
			out = append(out, f)
		}
	}
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// TestTopologyMirror builds the lab topology and checks, with packet
// sockets on the sensor's capture interfaces, that both directions of the
// host's traffic arrive there exactly once (span: both on cap0; tap: what
// the host receives on cap0, what it sends on cap1), and that traffic not
// touching the host does not.
func TestTopologyMirror(t *testing.T) {
	for _, tap := range []bool{false, true} {
		name := "span"
		if tap {
			name = "tap"
		}
		t.Run(name, func(t *testing.T) { testMirror(t, tap) })
	}
}

func testMirror(t *testing.T, tap bool) {
	e := newEnv(t, "kwnstest")
	rootBefore := rootLinks(t)
	topo, err := e.NewTopology(TopologyConfig{Tap: tap})
	if err != nil {
		t.Fatal(err)
	}
	if got := rootLinks(t); got != rootBefore {
		t.Errorf("the caller's namespace changed: links %s, were %s", got, rootBefore)
	}
	if got := len(e.Namespaces()); got != 5 {
		t.Fatalf("%d namespaces, want 5", got)
	}
	wantIfaces := []string{CaptureIface}
	if tap {
		wantIfaces = []string{CaptureIface, TapCaptureIface}
	}
	if fmt.Sprint(topo.CaptureIfaces) != fmt.Sprint(wantIfaces) || topo.CaptureIface != CaptureIface {
		t.Fatalf("capture interfaces %v (first %s), want %v", topo.CaptureIfaces, topo.CaptureIface, wantIfaces)
	}
	fds := map[string]int{}
	for _, ifc := range topo.CaptureIfaces {
		fds[ifc] = capture(t, topo.Sensor, ifc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := &net.Dialer{Timeout: 2 * time.Second}

	// Attacker -> host closed ports (RST back), over IPv4 and IPv6.
	for _, dst := range []netip.AddrPort{netip.AddrPortFrom(topo.Host.IP, 7000), netip.AddrPortFrom(topo.Host.IP6, 7001)} {
		_, err := topo.Attacker.NS.Dial(ctx, d, "tcp", dst.String())
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial closed port %v: %v, want connection refused", dst, err)
		}
	}
	// Client -> attacker: switched, never crosses the host's port.
	if _, err := topo.Client.NS.Dial(ctx, d, "tcp", netip.AddrPortFrom(topo.Attacker.IP, 7002).String()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("client -> attacker: %v, want connection refused", err)
	}
	// Client -> host open port: a full connection.
	l, err := topo.Host.NS.Listen(ctx, "tcp", netip.AddrPortFrom(topo.Host.IP, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := topo.Client.NS.Dial(ctx, d, "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Close()
	lport := uint16(l.Addr().(*net.TCPAddr).Port)

	time.Sleep(300 * time.Millisecond) // let the FINs through
	frames := map[string][]frame{}
	for ifc, fd := range fds {
		frames[ifc] = readFrames(t, fd, 50*time.Millisecond)
	}
	count := func(ifc string, src, dst netip.Addr, dport uint16, fromServer bool, flags uint8) int {
		n := 0
		for _, f := range frames[ifc] {
			p := f.dport
			if fromServer {
				p = f.sport
			}
			if f.src == src && f.dst == dst && p == dport && f.flags&(tcpSYN|tcpRST|tcpACK) == flags {
				n++
			}
		}
		return n
	}
	for _, w := range []struct {
		what       string
		src, dst   netip.Addr
		port       uint16
		fromServer bool
		flags      uint8
		mirrored   bool
	}{
		{"attacker SYN to 7000", topo.Attacker.IP, topo.Host.IP, 7000, false, tcpSYN, true},
		{"host RST from 7000", topo.Host.IP, topo.Attacker.IP, 7000, true, tcpRST | tcpACK, true},
		{"attacker SYN to 7001 over IPv6", topo.Attacker.IP6, topo.Host.IP6, 7001, false, tcpSYN, true},
		{"host RST from 7001 over IPv6", topo.Host.IP6, topo.Attacker.IP6, 7001, true, tcpRST | tcpACK, true},
		{"client SYN to the attacker (not the host's link)", topo.Client.IP, topo.Attacker.IP, 7002, false, tcpSYN, false},
		{"client SYN to the listener", topo.Client.IP, topo.Host.IP, lport, false, tcpSYN, true},
		{"host SYN-ACK", topo.Host.IP, topo.Client.IP, lport, true, tcpSYN | tcpACK, true},
	} {
		toHost := w.dst == topo.Host.IP || w.dst == topo.Host.IP6
		for _, ifc := range topo.CaptureIfaces {
			want := 0
			if w.mirrored && (!tap || (ifc == CaptureIface) == toHost) {
				want = 1
			}
			if got := count(ifc, w.src, w.dst, w.port, w.fromServer, w.flags); got != want {
				t.Errorf("%s: seen %d times on %s, want %d (%d TCP frames captured there)", w.what, got, ifc, want, len(frames[ifc]))
			}
		}
	}
	fins := 0
	for _, fs := range frames {
		for _, f := range fs {
			if f.flags&tcpFIN != 0 {
				fins++
			}
		}
	}
	if fins != 2 {
		t.Errorf("%d FINs captured from the closed connection, want 2", fins)
	}
}

// TestSweepRemovesOrphans leaves a namespace named after a dead process
// and checks that NewEnv removes it but not a live run's.
func TestSweepRemovesOrphans(t *testing.T) {
	live := newEnv(t, "kwnssweep")
	keep, err := live.Namespace("live")
	if err != nil {
		t.Fatal(err)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(RunDir, fmt.Sprintf("kwnssweep-%d-abcdef-lost", dead.Process.Pid))
	t.Cleanup(func() { removeNamed(orphan) })
	if err := createNamed(orphan); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(RunDir, fmt.Sprintf("kwnssweepx-%d-abcdef-lost", dead.Process.Pid))
	t.Cleanup(func() { removeNamed(other) })
	if err := createNamed(other); err != nil {
		t.Fatal(err)
	}
	e2, err := NewEnv("kwnssweep")
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if exists(orphan) {
		t.Errorf("orphan %s not swept", orphan)
	}
	if !exists(keep.Path()) {
		t.Errorf("live namespace %s swept", keep.Path())
	}
	if !exists(other) {
		t.Errorf("namespace of another prefix %s swept", other)
	}
}

// helperEnv names the variable that turns TestHelperProcess into a run
// that builds a topology and waits to be interrupted.
const helperEnv = "KW_NETNS_HELPER"

func TestHelperProcess(t *testing.T) {
	prefix := os.Getenv(helperEnv)
	if prefix == "" {
		t.Skip("helper for TestInterruptedRunLeavesNothing")
	}
	e, err := NewEnv(prefix)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	e.CloseOnSignal()
	if _, err := e.NewTopology(TopologyConfig{}); err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	for _, n := range e.Namespaces() {
		fmt.Println("ns", n.Name)
	}
	fmt.Println("ready")
	select {}
}

// TestInterruptedRunLeavesNothing interrupts a process holding a topology:
// SIGINT/SIGTERM remove it before the process dies; after SIGKILL the next
// NewEnv of the same prefix sweeps it.
func TestInterruptedRunLeavesNothing(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			prefix := "kwnsint" + strings.ToLower(strings.TrimPrefix(unix.SignalName(sig), "SIG"))
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
			cmd.Env = append(os.Environ(), helperEnv+"="+prefix)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); Sweep(prefix) })
			var names []string
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				line := sc.Text()
				if name, ok := strings.CutPrefix(line, "ns "); ok {
					names = append(names, name)
				}
				if strings.HasPrefix(line, "error:") {
					t.Fatal(line)
				}
				if line == "ready" {
					break
				}
			}
			if len(names) != 5 {
				t.Fatalf("helper made %d namespaces, want 5", len(names))
			}
			go io.Copy(io.Discard, out)
			if sig != syscall.SIGKILL && signal.Ignored(sig) {
				// Inherited as ignored (a background job): the helper must
				// leave it ignored, keep running and keep its namespaces.
				if err := cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
				time.Sleep(300 * time.Millisecond)
				if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
					t.Fatalf("helper died of an ignored %v: %v", sig, err)
				}
				for _, n := range names {
					if !exists(filepath.Join(RunDir, n)) {
						t.Fatalf("ignored %v removed %s", sig, n)
					}
				}
				t.Logf("%v is ignored in this process; checked that it stays ignored", sig)
				sig = syscall.SIGTERM
				if signal.Ignored(sig) {
					sig = syscall.SIGKILL
				}
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err = cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != sig {
				t.Errorf("helper exit: %v, want killed by %v", err, sig)
			}
			if sig == syscall.SIGKILL {
				for _, n := range names {
					if !exists(filepath.Join(RunDir, n)) {
						t.Fatalf("%s vanished without a handler", n)
					}
				}
				e := newEnv(t, prefix) // sweeps the dead run's namespaces
				_ = e
			}
			list := ipNetnsList(t)
			for _, n := range names {
				if exists(filepath.Join(RunDir, n)) || strings.Contains(list, n) {
					t.Errorf("%s left behind after %v", n, sig)
				}
			}
		})
	}
}
