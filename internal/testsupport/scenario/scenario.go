// Package scenario builds packet scenarios for the sensor's two engines —
// the XDP program run with BPF_PROG_RUN (loader) and its pure-Go twin
// (gotwin) — and holds the one table of cases both must pass: {name,
// packets, want verdict, records, counters}, after katran's test fixtures.
// It is test support: only tests import it.
//
// A Conv is one client->server conversation; its methods build the
// packets of a connection attempt (SYN, the server's RST or SYN-ACK, the
// completing ACK) with sequence numbers derived from the port, so answers
// ack the SYN they answer. A Step is one packet (or a sweep) at an offset
// from T0. Play pushes steps through an Engine and returns its Outcome;
// Case.Check compares an Outcome with the case's expectations, and Compare
// reports every difference between two engines' outcomes.
package scenario

import (
	"net/netip"
	"time"

	"github.com/knockwatch/knockwatch/internal/testsupport/pkt"
)

// T0 is the capture time every scenario starts from.
var T0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// Addresses of the scenarios.
var (
	Attacker  = netip.MustParseAddr("198.51.100.7")
	Victim    = netip.MustParseAddr("10.0.0.5")
	Bystander = netip.MustParseAddr("203.0.113.9")
	Attacker6 = netip.MustParseAddr("2001:db8::7")
	Victim6   = netip.MustParseAddr("2001:db8:1::5")
)

// Step is one packet at At after T0, a sweep of pending SYNs at At, or a
// request from userspace.
type Step struct {
	At    time.Duration
	P     pkt.TCP
	Raw   []byte   // when set, sent instead of P
	Sweep bool     // run the engine's sweep at At instead of a packet
	Req   *Request // when set, made instead of a packet
}

// Request is what userspace asks of the program: a flag another sensor
// raised for (Src, Dst) (RemoteFlag), or the next completed handshake to
// Dst (Sample), valid until Until after T0.
type Request struct {
	RemoteFlag bool
	Src, Dst   netip.Addr
	Until      time.Duration
}

// Bytes is the frame of the step.
func (s Step) Bytes() []byte {
	if s.Raw != nil {
		return s.Raw
	}
	return s.P.Bytes()
}

// Conv builds the packets of TCP connection attempts from Src to Dst.
type Conv struct {
	Src, Dst netip.Addr
	VLANs    []uint16
	Ext      []pkt.Ext
	IPOpts   int
}

func (c Conv) base(sport, dport uint16, flags uint8, seq, ack uint32, fromServer bool) pkt.TCP {
	p := pkt.TCP{Src: c.Src, Dst: c.Dst, SPort: sport, DPort: dport, Flags: flags, Seq: seq, Ack: ack,
		VLANs: c.VLANs, Ext: c.Ext, IPOptions: c.IPOpts, TCPOptions: 12}
	if fromServer {
		p.Src, p.Dst, p.SPort, p.DPort = c.Dst, c.Src, dport, sport
	}
	return p
}

// ISN is the client's initial sequence number for port.
func ISN(port uint16) uint32 { return 0x10000000 + uint32(port)*7919 }

// ServerISN is the server's initial sequence number in its SYN-ACKs.
const ServerISN = 0x70000000

// SPort is the client's source port for a connection to port.
func SPort(port uint16) uint16 { return 40000 + port%20000 }

// SYN is Src -> Dst:port SYN.
func (c Conv) SYN(at time.Duration, port uint16) Step {
	return Step{At: at, P: c.base(SPort(port), port, pkt.SYN, ISN(port), 0, false)}
}

// RST is Dst:port -> Src RST|ACK answering SYN(port).
func (c Conv) RST(at time.Duration, port uint16) Step {
	return Step{At: at, P: c.base(SPort(port), port, pkt.RST|pkt.ACK, 0, ISN(port)+1, true)}
}

// SYNACK is Dst:port -> Src SYN|ACK answering SYN(port).
func (c Conv) SYNACK(at time.Duration, port uint16) Step {
	return Step{At: at, P: c.base(SPort(port), port, pkt.SYN|pkt.ACK, ServerISN, ISN(port)+1, true)}
}

// ACK is Src -> Dst:port ACK completing the handshake of SYN(port).
func (c Conv) ACK(at time.Duration, port uint16) Step {
	return Step{At: at, P: c.base(SPort(port), port, pkt.ACK, ISN(port)+1, ServerISN+1, false)}
}

// ClientRST is Src -> Dst:port RST giving up SYN(port) (Zeek's RSTOS0
// when no answer was seen).
func (c Conv) ClientRST(at time.Duration, port uint16) Step {
	return Step{At: at, P: c.base(SPort(port), port, pkt.RST, ISN(port)+1, 0, false)}
}

// REJ is a REJ touch: SYN at `at`, RST 1 ms later.
func (c Conv) REJ(at time.Duration, port uint16) []Step {
	return []Step{c.SYN(at, port), c.RST(at+time.Millisecond, port)}
}

// Connect is a complete handshake starting at `at`.
func (c Conv) Connect(at time.Duration, port uint16) []Step {
	return []Step{c.SYN(at, port), c.SYNACK(at+time.Millisecond, port), c.ACK(at+2*time.Millisecond, port)}
}

// Knock3 is a REJ knock on 7000, 8000, 9000, one second apart.
func (c Conv) Knock3() []Step {
	return Cat(c.REJ(0, 7000), c.REJ(Sec(1), 8000), c.REJ(Sec(2), 9000))
}

// Scan touches n closed ports (from 1000) 10 ms apart, then connects to
// open two seconds after the start.
func (c Conv) Scan(n int, open uint16) []Step {
	var out []Step
	for i := range n {
		out = append(out, c.REJ(time.Duration(i)*10*time.Millisecond, uint16(1000+i))...)
	}
	return append(out, c.Connect(Sec(2), open)...)
}

// Cat concatenates step lists.
func Cat(parts ...[]Step) []Step {
	var out []Step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// Sec is n seconds.
func Sec(n float64) time.Duration { return time.Duration(n * float64(time.Second)) }
