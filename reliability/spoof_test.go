//go:build linux

package reliability

import (
	"net/netip"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/testsupport/pkt"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
	"github.com/knockwatch/knockwatch/loader"
	"github.com/knockwatch/knockwatch/sensor"
)

// Spoofing resistance through the real XDP program (BPF_PROG_RUN, replay
// mode, loader's public API): packets forged by someone who could not see
// the real SYN (wrong ack numbers) must not create or complete evidence,
// and must not destroy the real evidence either. loader/prog_test.go covers
// single packets (an RST with a wrong ack is backscatter, a SYN-ACK with a
// wrong ack does not mark the port open, a final ACK with a wrong ack does
// not complete a handshake); these are the sequences around them.

var (
	spAttacker = netip.MustParseAddr("198.51.100.66")
	spVictim   = netip.MustParseAddr("10.0.0.50")
	spT0       = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

type spStep struct {
	at time.Duration
	p  pkt.TCP
}

func spISN(port uint16) uint32 { return 0x20000000 + uint32(port)*104729 }

const spServerISN = 0x50000000

// Packets of the attacker's conversation with the victim on port.
func spSYN(at time.Duration, port uint16) spStep {
	return spStep{at, pkt.TCP{Src: spAttacker, Dst: spVictim, SPort: 41000 + port%20000, DPort: port, Flags: pkt.SYN, Seq: spISN(port)}}
}

// spFromVictim is victim:port -> attacker with ack (right: spISN(port)+1).
func spFromVictim(at time.Duration, port uint16, flags uint8, ack uint32) spStep {
	return spStep{at, pkt.TCP{Src: spVictim, Dst: spAttacker, SPort: port, DPort: 41000 + port%20000, Flags: flags,
		Seq: spServerISN, Ack: ack}}
}

// spACK is the attacker's ACK of a SYN-ACK whose seq was serverISN.
func spACK(at time.Duration, port uint16, serverISN uint32) spStep {
	return spStep{at, pkt.TCP{Src: spAttacker, Dst: spVictim, SPort: 41000 + port%20000, DPort: port, Flags: pkt.ACK,
		Seq: spISN(port) + 1, Ack: serverISN + 1}}
}

func spRight(port uint16) uint32 { return spISN(port) + 1 }

// spKnock: three REJ touches.
func spKnock(start time.Duration) []spStep {
	var out []spStep
	for i, port := range []uint16{7001, 8002, 9003} {
		at := start + time.Duration(i)*time.Second
		out = append(out, spSYN(at, port), spFromVictim(at+time.Millisecond, port, pkt.RST|pkt.ACK, spRight(port)))
	}
	return out
}

// runSpoof pushes steps through a fresh replay-mode sensor and returns the
// records and the counters.
func runSpoof(t *testing.T, steps []spStep) ([]sensor.Record, sensor.Counters) {
	t.Helper()
	testenv.RequirePrivileged(t)
	cfg := sensor.DefaultConfig()
	cfg.Replay = true
	s, err := loader.Load(cfg, loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rd, err := s.NewReader()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	run, err := s.NewRunner()
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range steps {
		if _, err := run.Run(st.p.Bytes(), spT0.Add(st.at)); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	var recs []sensor.Record
	for rd.Pending() > 0 {
		r, err := rd.Read()
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	c, err := s.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return recs, c
}

func records(recs []sensor.Record) (knocks []*sensor.Knock, hs []*sensor.Handshake) {
	for _, r := range recs {
		switch r := r.(type) {
		case *sensor.Knock:
			knocks = append(knocks, r)
		case *sensor.Handshake:
			hs = append(hs, r)
		}
	}
	return knocks, hs
}

func TestSpoofedPacketsCreateNoEvidence(t *testing.T) {
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	const port = 4444
	cases := []struct {
		name       string
		steps      []spStep
		knocks     int
		handshakes int
		wantKinds  []sensor.TouchKind // of the knock's touches
		counters   map[string]uint64  // lower bounds
		zero       []string           // counters that must stay 0
	}{
		{
			name: "forged RSTs with wrong acks over five closed ports make no REJ knock",
			steps: func() []spStep {
				var out []spStep
				for i, p := range []uint16{7001, 8002, 9003, 10004, 11005} {
					at := sec(float64(i) * 0.2)
					// the attacker's SYNs are answered (before the S0 timeout) only by forgeries
					out = append(out, spSYN(at, p), spFromVictim(at+time.Millisecond, p, pkt.RST|pkt.ACK, spRight(p)+7))
				}
				return out
			}(),
			counters: map[string]uint64{"backscatter": 5},
			zero:     []string{"touch_rej", "flags"},
		},
		{
			name: "a forged RST before the real one does not steal the touch",
			steps: func() []spStep {
				var out []spStep
				for i, p := range []uint16{7001, 8002, 9003} {
					at := sec(float64(i))
					out = append(out, spSYN(at, p),
						spFromVictim(at+time.Millisecond, p, pkt.RST|pkt.ACK, spRight(p)^0xffff),
						spFromVictim(at+2*time.Millisecond, p, pkt.RST|pkt.ACK, spRight(p)))
				}
				return out
			}(),
			knocks: 1, wantKinds: []sensor.TouchKind{sensor.TouchREJ, sensor.TouchREJ, sensor.TouchREJ},
			counters: map[string]uint64{"backscatter": 3, "touch_rej": 3, "flags": 1},
		},
		{
			name: "a forged SYN-ACK (wrong ack) and an ACK of it complete no handshake of a flagged source",
			steps: append(spKnock(0),
				spSYN(sec(10), port),
				spFromVictim(sec(10)+time.Millisecond, port, pkt.SYN|pkt.ACK, spRight(port)+1000),
				spACK(sec(10)+2*time.Millisecond, port, spServerISN)),
			knocks:   1,
			zero:     []string{"handshakes", "port_open"},
			counters: map[string]uint64{"synack_unmatched": 1},
		},
		{
			name: "a forged SYN-ACK does not stop the real handshake from being reported",
			steps: append(spKnock(0),
				spSYN(sec(10), port),
				spFromVictim(sec(10)+time.Millisecond, port, pkt.SYN|pkt.ACK, spRight(port)+1000),
				spFromVictim(sec(10)+2*time.Millisecond, port, pkt.SYN|pkt.ACK, spRight(port)),
				spACK(sec(10)+3*time.Millisecond, port, spServerISN)),
			knocks: 1, handshakes: 1,
		},
		{
			name: "a forged RST (wrong ack) inside the handshake does not suppress it",
			steps: append(spKnock(0),
				spSYN(sec(10), port),
				spFromVictim(sec(10)+time.Millisecond, port, pkt.SYN|pkt.ACK, spRight(port)),
				spFromVictim(sec(10)+2*time.Millisecond, port, pkt.RST|pkt.ACK, spRight(port)+99),
				spACK(sec(10)+3*time.Millisecond, port, spServerISN)),
			knocks: 1, handshakes: 1,
		},
		{
			name: "forged RSTs answering nothing frame no one",
			steps: func() []spStep {
				var out []spStep
				for i := range 64 {
					p := uint16(7000 + i)
					out = append(out, spFromVictim(sec(float64(i)*0.01), p, pkt.RST|pkt.ACK, spRight(p)))
				}
				return out
			}(),
			counters: map[string]uint64{"backscatter": 64},
			zero:     []string{"touch_rej", "candidates", "flags"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			recs, ctr := runSpoof(t, c.steps)
			knocks, hs := records(recs)
			if len(knocks) != c.knocks || len(hs) != c.handshakes {
				t.Fatalf("%d knocks and %d handshakes, want %d and %d (counters %v)", len(knocks), len(hs), c.knocks, c.handshakes, nonZero(ctr))
			}
			if c.wantKinds != nil {
				if len(knocks[0].Touches) != len(c.wantKinds) {
					t.Fatalf("touches %+v", knocks[0].Touches)
				}
				for i, k := range c.wantKinds {
					if knocks[0].Touches[i].Kind != k {
						t.Errorf("touch %d kind %v, want %v", i, knocks[0].Touches[i].Kind, k)
					}
				}
			}
			for _, h := range hs {
				if h.Src != spAttacker || h.Port != port {
					t.Errorf("handshake %+v", h)
				}
			}
			for k, v := range c.counters {
				if ctr[k] < v {
					t.Errorf("counter %s = %d, want >= %d (%v)", k, ctr[k], v, nonZero(ctr))
				}
			}
			for _, k := range c.zero {
				if _, ok := ctr[k]; !ok {
					t.Fatalf("no counter %q (%v)", k, sensor.CounterNames)
				}
				if ctr[k] != 0 {
					t.Errorf("counter %s = %d, want 0 (%v)", k, ctr[k], nonZero(ctr))
				}
			}
			t.Logf("RESULT %s: %d knocks, %d handshakes, counters %v", c.name, len(knocks), len(hs), nonZero(ctr))
		})
	}
}
