package loader

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/knockwatch/knockwatch/internal/testsupport/pkt"
	"github.com/knockwatch/knockwatch/sensor"
)

// resetState empties every state map and gate, so each fuzz input starts
// from a fresh program without paying a load.
func resetState(t testing.TB, s *Sensor) {
	t.Helper()
	for _, m := range []*ebpf.Map{s.objs.PairSlots, s.objs.PortSlots} {
		zero := make([]byte, m.ValueSize())
		for i := uint32(0); i < m.MaxEntries(); i++ {
			if err := m.Put(i, zero); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, m := range []*ebpf.Map{s.objs.Candidates, s.objs.Flagged, s.objs.Watch} {
		key := make([]byte, m.KeySize())
		for {
			if err := m.NextKey(nil, &key); err != nil {
				if errors.Is(err, ebpf.ErrKeyNotExist) {
					break
				}
				t.Fatal(err)
			}
			if err := m.Delete(key); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.objs.AnyFlagged.Set(uint32(0)); err != nil {
		t.Fatal(err)
	}
	if err := s.objs.WatchUntil.Set(uint64(0)); err != nil {
		t.Fatal(err)
	}
	if err := s.ResetCounters(); err != nil {
		t.Fatal(err)
	}
}

// fuzzOps turns fuzz bytes into packets: each 4-byte op picks a source,
// a destination, a port, a packet kind and a time step, so the fuzzer
// explores the state machine (retransmissions, answers to other SYNs,
// wrong acks, garbage) rather than only the parser.
func fuzzOps(data []byte) []step {
	srcs := []netip.Addr{attacker, bystander, attacker6, netip.MustParseAddr("192.0.2.1")}
	dsts := []netip.Addr{victim, victim6}
	var out []step
	var at time.Duration
	for len(data) >= 4 && len(out) < 256 {
		op, sel, port, dt := data[0], data[1], data[2], data[3]
		data = data[4:]
		at += time.Duration(dt) * 50 * time.Millisecond
		src := srcs[sel&3]
		dst := dsts[(sel>>2)&1]
		if src.Is4() != dst.Is4() {
			dst = map[bool]netip.Addr{true: victim, false: victim6}[src.Is4()]
		}
		c := conv{src: src, dst: dst}
		if sel&0x10 != 0 {
			c.vlans = []uint16{7}
		}
		p := uint16(7000 + int(port&15))
		var st step
		switch op % 8 {
		case 0, 1:
			st = c.syn(at, p)
		case 2:
			st = c.rst(at, p)
		case 3:
			st = c.synack(at, p)
		case 4:
			st = c.ack(at, p)
		case 5: // an answer with a wrong ack
			st = c.rst(at, p)
			st.p.Ack += uint32(sel)
		case 6: // retransmission with a new sequence number
			st = c.syn(at, p)
			st.p.Seq += uint32(port)
		case 7: // raw bytes as a packet
			n := min(int(port), len(data))
			raw := append([]byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00}, data[:n]...)
			data = data[n:]
			out = append(out, step{at: at, p: pkt.TCP{}, raw: raw})
			continue
		}
		out = append(out, st)
	}
	return out
}

func FuzzProgram(f *testing.F) {
	s := loadReplay(f, func(c *sensor.Config) {
		c.PairSlots = 64
		c.PortSlots = 64
		c.Candidates = 32
		c.Flagged = 16
		c.Watches = 16
	})
	rd, err := s.NewReader()
	if err != nil {
		f.Fatal(err)
	}
	defer rd.Close()
	run, err := s.NewRunner()
	if err != nil {
		f.Fatal(err)
	}
	// Seeds: a REJ knock then a connect; an S0 knock; noise.
	f.Add([]byte{0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 1, 10, 2, 0, 1, 0, 0, 0, 2, 10, 2, 0, 2, 0, 0, 0, 9, 40, 3, 0, 9, 0, 4, 0, 9, 0})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 1, 50, 0, 0, 2, 50, 0, 0, 3, 50, 0, 0, 4, 50})
	f.Add([]byte{7, 0, 30, 0, 0x45, 0, 0, 40, 5, 1, 2, 3, 0, 0x11, 5, 6, 7, 1, 2, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		resetState(t, s)
		steps := fuzzOps(data)
		for i, st := range steps {
			b := st.raw
			if b == nil {
				b = st.p.Bytes()
			}
			if len(b) < 14 {
				continue
			}
			if _, err := run.Run(b, t0.Add(st.at)); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
		if _, err := s.Sweep(t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		recs := drain(t, rd)
		c, err := s.Counters()
		if err != nil {
			t.Fatal(err)
		}
		checkInvariants(t, s.Config(), recs, c)
	})
}

// checkInvariants holds for any packet sequence.
func checkInvariants(t *testing.T, cfg sensor.Config, recs []sensor.Record, c sensor.Counters) {
	t.Helper()
	outcomes := c["non_ip"] + c["non_tcp"] + c["truncated"] + c["fragment"] + c["unknown_ext"] + c["bad_header"] + c["tcp"]
	if outcomes != c["packets"] {
		t.Errorf("parse outcomes %d != packets %d", outcomes, c["packets"])
	}
	if c["syn"]+c["synack"]+c["rst"]+c["bad_flags"] > c["tcp"] {
		t.Errorf("more classified TCP packets than TCP packets: %v", c)
	}
	if c["touch_rej"] > c["rst"] {
		t.Errorf("touch_rej %d > rst %d", c["touch_rej"], c["rst"])
	}
	if c["touch_s0"] > c["syn"] {
		t.Errorf("touch_s0 %d > syn %d", c["touch_s0"], c["syn"])
	}
	flagged := map[[2]netip.Addr]bool{}
	var nk, nh uint64
	for _, r := range recs {
		switch r := r.(type) {
		case *sensor.Knock:
			nk++
			key := [2]netip.Addr{r.Src, r.Dst}
			if flagged[key] {
				t.Errorf("%v -> %v flagged twice", r.Src, r.Dst)
			}
			flagged[key] = true
			// No flag without N distinct closed ports within W.
			newest := r.Touches[len(r.Touches)-1].Time
			ports := map[uint16]bool{}
			for _, tc := range r.Touches {
				if newest.Sub(tc.Time) <= cfg.Window {
					ports[tc.Port] = true
				}
			}
			if len(ports) < cfg.MinPorts {
				t.Errorf("knock %v -> %v with %d distinct ports in the window: %+v", r.Src, r.Dst, len(ports), r.Touches)
			}
		case *sensor.Handshake:
			nh++
			if !flagged[[2]netip.Addr{r.Src, r.Dst}] {
				t.Errorf("handshake of unflagged %v -> %v", r.Src, r.Dst)
			}
			if r.ACK.Before(r.SYNACK) || r.SYNACK.Before(r.SYN) {
				t.Errorf("handshake times out of order: %+v", r)
			}
		}
	}
	if lost := c["ringbuf_full"]; nk+lost < c["flags"] || nh+lost < c["handshakes"] {
		t.Errorf("records %d knocks / %d handshakes, counters %d / %d (lost %d)", nk, nh, c["flags"], c["handshakes"], lost)
	}
	if nk > c["flags"] || nh > c["handshakes"] {
		t.Errorf("more records than counted: %d/%d vs %d/%d", nk, nh, c["flags"], c["handshakes"])
	}
}
