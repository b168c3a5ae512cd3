//go:build linux

package netns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

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
