package loader

import (
	"net/netip"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/testsupport/pkt"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
	"github.com/knockwatch/knockwatch/sensor"
)

// t0 is the capture time every scenario starts from.
var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

var (
	attacker  = netip.MustParseAddr("198.51.100.7")
	victim    = netip.MustParseAddr("10.0.0.5")
	bystander = netip.MustParseAddr("203.0.113.9")
	attacker6 = netip.MustParseAddr("2001:db8::7")
	victim6   = netip.MustParseAddr("2001:db8:1::5")
)

// loadReplay loads the program in replay mode with a fixed hash seed.
func loadReplay(t testing.TB, mutate func(*sensor.Config)) *Sensor {
	t.Helper()
	testenv.RequirePrivileged(t)
	cfg := sensor.DefaultConfig()
	cfg.Replay = true
	cfg.HashSeed = 0x2545f491
	cfg.PairSlots = 1 << 12
	cfg.PortSlots = 1 << 10
	cfg.Candidates = 1024
	cfg.Flagged = 256
	cfg.Watches = 256
	cfg.RingBytes = 1 << 16
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := Load(cfg, Options{})
	if err != nil {
		t.Fatalf("load: %+v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// step is one packet at an offset from t0.
type step struct {
	at  time.Duration
	p   pkt.TCP
	raw []byte // when set, sent instead of p
}

// conv builds the packets of TCP connection attempts from src to dst.
type conv struct {
	src, dst netip.Addr
	vlans    []uint16
	ext      []pkt.Ext
	ipopts   int
}

func (c conv) base(sport, dport uint16, flags uint8, seq, ack uint32, fromServer bool) pkt.TCP {
	p := pkt.TCP{Src: c.src, Dst: c.dst, SPort: sport, DPort: dport, Flags: flags, Seq: seq, Ack: ack,
		VLANs: c.vlans, Ext: c.ext, IPOptions: c.ipopts, TCPOptions: 12}
	if fromServer {
		p.Src, p.Dst, p.SPort, p.DPort = c.dst, c.src, dport, sport
	}
	return p
}

func isn(port uint16) uint32 { return 0x10000000 + uint32(port)*7919 }

// syn is S -> D:port SYN from a source port derived from port.
func (c conv) syn(at time.Duration, port uint16) step {
	return step{at: at, p: c.base(40000+port%20000, port, pkt.SYN, isn(port), 0, false)}
}

// rst is D:port -> S RST|ACK answering syn(port).
func (c conv) rst(at time.Duration, port uint16) step {
	return step{at: at, p: c.base(40000+port%20000, port, pkt.RST|pkt.ACK, 0, isn(port)+1, true)}
}

func (c conv) synack(at time.Duration, port uint16) step {
	return step{at: at, p: c.base(40000+port%20000, port, pkt.SYN|pkt.ACK, 0x70000000, isn(port)+1, true)}
}

func (c conv) ack(at time.Duration, port uint16) step {
	return step{at: at, p: c.base(40000+port%20000, port, pkt.ACK, isn(port)+1, 0x70000000+1, false)}
}

// rej is a REJ touch: SYN at `at`, RST 1 ms later.
func (c conv) rej(at time.Duration, port uint16) []step {
	return []step{c.syn(at, port), c.rst(at+time.Millisecond, port)}
}

// connect is a complete handshake starting at `at`.
func (c conv) connect(at time.Duration, port uint16) []step {
	return []step{c.syn(at, port), c.synack(at+time.Millisecond, port), c.ack(at+2*time.Millisecond, port)}
}

func cat(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// runSteps pushes the steps through the program and returns the records it
// sent, in order, and the verdict of the last packet.
func runSteps(t testing.TB, s *Sensor, steps []step) ([]sensor.Record, uint32) {
	t.Helper()
	rd, err := s.NewReader()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	run, err := s.NewRunner()
	if err != nil {
		t.Fatal(err)
	}
	var verdict uint32
	for i, st := range steps {
		b := st.raw
		if b == nil {
			b = st.p.Bytes()
		}
		v, err := run.Run(b, t0.Add(st.at))
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		verdict = v
	}
	return drain(t, rd), verdict
}

// drain reads every record already in the ring buffer.
func drain(t testing.TB, rd *Reader) []sensor.Record {
	t.Helper()
	var recs []sensor.Record
	for rd.Pending() > 0 {
		r, err := rd.Read()
		if err != nil {
			t.Fatalf("read records: %v", err)
		}
		recs = append(recs, r)
	}
	return recs
}

func knocks(recs []sensor.Record) []*sensor.Knock {
	var out []*sensor.Knock
	for _, r := range recs {
		if k, ok := r.(*sensor.Knock); ok {
			out = append(out, k)
		}
	}
	return out
}

func handshakes(recs []sensor.Record) []*sensor.Handshake {
	var out []*sensor.Handshake
	for _, r := range recs {
		if h, ok := r.(*sensor.Handshake); ok {
			out = append(out, h)
		}
	}
	return out
}
