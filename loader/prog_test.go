package loader

import (
	"math/rand/v2"
	"net/netip"

	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/knockwatch/knockwatch/internal/testsupport/pkt"
	"github.com/knockwatch/knockwatch/sensor"
)

// wantKnock describes an expected KNOCK record.
type wantKnock struct {
	src, dst netip.Addr
	ports    []uint16
	kinds    []sensor.TouchKind
	times    []time.Duration // offsets from t0, only checked when set
}

// wantHS describes an expected HANDSHAKE record.
type wantHS struct {
	src, dst   netip.Addr
	port       uint16
	lastClosed time.Duration // -1: never seen closed
	lastOpen   time.Duration // -1: never seen open
	distinct   int           // 0: not checked
}

var (
	a  = conv{src: attacker, dst: victim}
	b  = conv{src: bystander, dst: victim}
	a6 = conv{src: attacker6, dst: victim6, ext: []pkt.Ext{{Proto: 0, Len: 8}, {Proto: 60, Len: 16}}}
)

func sec(n float64) time.Duration { return time.Duration(n * float64(time.Second)) }

func TestProgramTable(t *testing.T) {
	vlan := conv{src: attacker, dst: victim, vlans: []uint16{42}}
	qinq := conv{src: attacker, dst: victim, vlans: []uint16{100, 42}}
	opts := conv{src: attacker, dst: victim, ipopts: 12}
	knock3 := func(c conv) []step { return cat(c.rej(0, 7000), c.rej(sec(1), 8000), c.rej(sec(2), 9000)) }
	rejKnock := wantKnock{src: attacker, dst: victim, ports: []uint16{7000, 8000, 9000},
		kinds: []sensor.TouchKind{sensor.TouchREJ, sensor.TouchREJ, sensor.TouchREJ}, times: []time.Duration{0, sec(1), sec(2)}}

	tests := []struct {
		name     string
		cfg      func(*sensor.Config)
		allow    []string
		steps    []step
		verdict  uint32
		knocks   []wantKnock
		hs       []wantHS
		counters map[string]uint64
	}{
		{
			name:     "REJ knock",
			steps:    knock3(a),
			knocks:   []wantKnock{rejKnock},
			counters: map[string]uint64{"syn": 3, "rst": 3, "touch_rej": 3, "candidates": 1, "flags": 1, "backscatter": 0},
		},
		{
			name: "S0 knock with retransmissions",
			steps: []step{
				a.syn(0, 7000), a.syn(sec(1), 7000), // retransmission: one touch
				a.syn(sec(3), 8000),  // ages 7000 into S0
				a.syn(sec(6), 9000),  // ages 8000
				a.syn(sec(9), 10000), // ages 9000: third distinct port flags
			},
			knocks: []wantKnock{{src: attacker, dst: victim, ports: []uint16{7000, 8000, 9000},
				kinds: []sensor.TouchKind{sensor.TouchS0, sensor.TouchS0, sensor.TouchS0}, times: []time.Duration{0, sec(3), sec(6)}}},
			counters: map[string]uint64{"syn": 5, "syn_retrans": 1, "touch_s0": 3, "flags": 1},
		},
		{
			name:     "below threshold",
			steps:    cat(a.rej(0, 7000), a.rej(sec(1), 8000), a.rej(sec(2), 8000)),
			counters: map[string]uint64{"touch_rej": 3, "candidates": 1, "flags": 0},
		},
		{
			name:     "outside the window",
			steps:    cat(a.rej(0, 7000), a.rej(sec(20), 8000), a.rej(sec(40), 9000)),
			counters: map[string]uint64{"touch_rej": 3, "flags": 0},
		},
		{
			name:     "threshold and window from config",
			cfg:      func(c *sensor.Config) { c.MinPorts = 4; c.Window = 5 * time.Second },
			steps:    cat(a.rej(0, 7000), a.rej(sec(1), 8000), a.rej(sec(2), 9000), a.rej(sec(8), 9500)),
			counters: map[string]uint64{"touch_rej": 4, "flags": 0},
		},
		{
			name: "open port mixed into a knock",
			steps: cat(a.rej(0, 7000), a.connect(sec(0.5), 80), a.rej(sec(1), 8000),
				[]step{a.syn(sec(1.5), 443), a.synack(sec(1.6), 443)}, a.rej(sec(2), 9000)),
			knocks:   []wantKnock{rejKnock},
			counters: map[string]uint64{"touch_rej": 3, "port_open": 2, "flags": 1, "touch_s0": 0},
		},
		{name: "802.1Q", steps: knock3(vlan), knocks: []wantKnock{rejKnock}, counters: map[string]uint64{"vlan": 6, "flags": 1}},
		{name: "QinQ", steps: knock3(qinq), knocks: []wantKnock{rejKnock}, counters: map[string]uint64{"vlan": 6, "flags": 1}},
		{name: "IPv4 options", steps: knock3(opts), knocks: []wantKnock{rejKnock}, counters: map[string]uint64{"ipv4": 6, "flags": 1}},
		{
			name:  "IPv6 with extension headers",
			steps: knock3(a6),
			knocks: []wantKnock{{src: attacker6, dst: victim6, ports: []uint16{7000, 8000, 9000},
				kinds: []sensor.TouchKind{sensor.TouchREJ, sensor.TouchREJ, sensor.TouchREJ}}},
			counters: map[string]uint64{"ipv6": 6, "flags": 1},
		},
		{
			name: "backscatter RSTs",
			steps: []step{
				a.rst(0, 7000), a.rst(sec(1), 8000), a.rst(sec(2), 9000), // no SYNs seen
			},
			counters: map[string]uint64{"rst": 3, "backscatter": 3, "touch_rej": 0},
		},
		{
			name: "RST with a wrong ack is not a touch",
			steps: func() []step {
				r := a.rst(sec(0.1), 7000)
				r.p.Ack++
				return []step{a.syn(0, 7000), r}
			}(),
			counters: map[string]uint64{"backscatter": 1, "touch_rej": 0},
		},
		{
			name:     "allowlisted source",
			allow:    []string{"198.51.100.0/24"},
			steps:    knock3(a),
			counters: map[string]uint64{"touch_rej": 3, "allowlisted": 1, "flags": 0},
		},
		{
			name:     "first handshake of a flagged source",
			steps:    cat(knock3(a), a.connect(sec(10), 4444), a.connect(sec(11), 4444)),
			knocks:   []wantKnock{rejKnock},
			hs:       []wantHS{{src: attacker, dst: victim, port: 4444, lastClosed: -1, lastOpen: -1}},
			counters: map[string]uint64{"handshakes": 1, "handshake_repeat": 1, "watch_started": 2},
		},
		{
			name: "handshake to a port that was closed before",
			steps: cat(a.rej(0, 7000), a.rej(sec(1), 8000), a.rej(sec(2), 4444),
				a.connect(sec(10), 4444)),
			knocks: []wantKnock{{src: attacker, dst: victim, ports: []uint16{7000, 8000, 4444},
				kinds: []sensor.TouchKind{sensor.TouchREJ, sensor.TouchREJ, sensor.TouchREJ}}},
			hs: []wantHS{{src: attacker, dst: victim, port: 4444, lastClosed: sec(2), lastOpen: -1}},
		},
		{
			name:     "first handshake by another source",
			steps:    cat(knock3(a), b.connect(sec(5), 4444), a.connect(sec(10), 4444)),
			knocks:   []wantKnock{rejKnock},
			hs:       []wantHS{{src: attacker, dst: victim, port: 4444, lastClosed: -1, lastOpen: sec(5) + time.Millisecond}},
			counters: map[string]uint64{"port_open": 2},
		},
		{
			name:     "incomplete handshake: SYN, SYN-ACK, RST",
			steps:    cat(knock3(a), []step{a.syn(sec(10), 4444), a.synack(sec(10.1), 4444), a.rst(sec(10.2), 4444)}),
			knocks:   []wantKnock{rejKnock},
			counters: map[string]uint64{"handshakes": 0},
		},
		{
			name: "handshake with a wrong ack",
			steps: func() []step {
				bad := a.ack(sec(10.2), 4444)
				bad.p.Ack += 5
				return cat(knock3(a), []step{a.syn(sec(10), 4444), a.synack(sec(10.1), 4444), bad})
			}(),
			knocks:   []wantKnock{rejKnock},
			counters: map[string]uint64{"handshakes": 0, "handshake_bad_ack": 1},
		},
		{
			name: "spoofed SYN-ACK does not open a port",
			steps: func() []step {
				sa := a.synack(sec(0.1), 80)
				sa.p.Ack = 12345
				return []step{a.syn(0, 80), sa}
			}(),
			counters: map[string]uint64{"synack_unmatched": 1, "port_open": 0},
		},
		{
			name:     "handshake of an unflagged source is not reported",
			steps:    cat(a.rej(0, 7000), a.connect(sec(1), 4444)),
			counters: map[string]uint64{"handshakes": 0, "watch_started": 0, "port_open": 1},
		},
		{
			name: "non-first fragment",
			steps: func() []step {
				f := a.syn(0, 7000)
				f.p.FragOffset = 100
				return []step{f}
			}(),
			counters: map[string]uint64{"fragment": 1, "syn": 0},
		},
		{
			name: "IPv6 fragment",
			steps: func() []step {
				c := conv{src: attacker6, dst: victim6, ext: []pkt.Ext{{Proto: 44, Len: 8}}}
				return []step{c.syn(0, 7000)}
			}(),
			counters: map[string]uint64{"fragment": 1, "syn": 0},
		},
		{
			name: "IPv6 with too many extension headers",
			steps: func() []step {
				c := conv{src: attacker6, dst: victim6, ext: []pkt.Ext{{Proto: 0, Len: 8}, {Proto: 60, Len: 8}, {Proto: 43, Len: 8}, {Proto: 60, Len: 8}, {Proto: 60, Len: 8}}}
				return []step{c.syn(0, 7000)}
			}(),
			counters: map[string]uint64{"unknown_ext": 1, "syn": 0},
		},
		{
			name:     "pass verdict",
			cfg:      func(c *sensor.Config) { c.Pass = true },
			steps:    []step{a.syn(0, 80)},
			verdict:  sensor.XDPPass,
			counters: map[string]uint64{"syn": 1},
		},
		{
			name:     "scan: distinct count beyond the ring",
			steps:    scan(a, 40, 4444),
			knocks:   []wantKnock{{src: attacker, dst: victim}},
			hs:       []wantHS{{src: attacker, dst: victim, port: 4444, lastClosed: -1, lastOpen: -1, distinct: 40}},
			counters: map[string]uint64{"touch_rej": 40, "flags": 1, "handshakes": 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := loadReplay(t, tt.cfg)
			if tt.allow != nil {
				var ps []netip.Prefix
				for _, p := range tt.allow {
					ps = append(ps, netip.MustParsePrefix(p))
				}
				if err := s.SetAllowlist(ps); err != nil {
					t.Fatal(err)
				}
			}
			recs, verdict := runSteps(t, s, tt.steps)
			want := uint32(sensor.XDPDrop)
			if tt.verdict != 0 {
				want = tt.verdict
			}
			if verdict != want {
				t.Errorf("verdict %d, want %d", verdict, want)
			}
			checkKnocks(t, knocks(recs), tt.knocks)
			checkHandshakes(t, handshakes(recs), tt.hs)
			got, err := s.Counters()
			if err != nil {
				t.Fatal(err)
			}
			if got["packets"] != uint64(len(tt.steps)) {
				t.Errorf("packets = %d, want %d", got["packets"], len(tt.steps))
			}
			// BPF_PROG_RUN runs XDP as received on the namespace's
			// loopback (ifindex 1): its per-interface counters see every
			// packet too.
			ifc, err := s.InterfaceCounters(1)
			if err != nil {
				t.Fatal(err)
			}
			if ifc["packets"] != got["packets"] || ifc["tcp"] != got["tcp"] || ifc["bytes"] != got["bytes"] {
				t.Errorf("interface counters %v disagree with the global ones %v", ifc, got)
			}
			for name, n := range tt.counters {
				if got[name] != n {
					t.Errorf("counter %s = %d, want %d", name, got[name], n)
				}
			}
		})
	}
}

// scan touches n closed ports in one second, then connects to open.
func scan(c conv, n int, open uint16) []step {
	var out []step
	for i := range n {
		out = append(out, c.rej(time.Duration(i)*10*time.Millisecond, uint16(1000+i))...)
	}
	return append(out, c.connect(sec(2), open)...)
}

func checkKnocks(t *testing.T, got []*sensor.Knock, want []wantKnock) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d KNOCK records, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Src != w.src || g.Dst != w.dst {
			t.Errorf("knock %d: %v -> %v, want %v -> %v", i, g.Src, g.Dst, w.src, w.dst)
		}
		if w.ports == nil {
			continue
		}
		if len(g.Touches) != len(w.ports) {
			t.Fatalf("knock %d: touches %+v, want ports %v", i, g.Touches, w.ports)
		}
		for j, tc := range g.Touches {
			if tc.Port != w.ports[j] || tc.Kind != w.kinds[j] {
				t.Errorf("knock %d touch %d: %d/%v, want %d/%v", i, j, tc.Port, tc.Kind, w.ports[j], w.kinds[j])
			}
			if w.times != nil && !tc.Time.Equal(t0.Add(w.times[j])) {
				t.Errorf("knock %d touch %d: time %v, want %v", i, j, tc.Time, t0.Add(w.times[j]))
			}
		}
	}
}

func checkHandshakes(t *testing.T, got []*sensor.Handshake, want []wantHS) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d HANDSHAKE records, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Src != w.src || g.Dst != w.dst || g.Port != w.port {
			t.Errorf("handshake %d: %v -> %v:%d, want %v -> %v:%d", i, g.Src, g.Dst, g.Port, w.src, w.dst, w.port)
		}
		if !g.SYN.Before(g.SYNACK) || !g.SYNACK.Before(g.ACK) {
			t.Errorf("handshake %d: times out of order: %v %v %v", i, g.SYN, g.SYNACK, g.ACK)
		}
		if w.distinct != 0 && g.Distinct != w.distinct {
			t.Errorf("handshake %d: distinct %d, want %d", i, g.Distinct, w.distinct)
		}
		checkStamp(t, "last closed", g.PortLastClosed, w.lastClosed)
		checkStamp(t, "last open", g.PortLastOpen, w.lastOpen)
	}
}

func checkStamp(t *testing.T, what string, got time.Time, want time.Duration) {
	t.Helper()
	if want < 0 {
		if !got.IsZero() {
			t.Errorf("port %s = %v, want never", what, got)
		}
		return
	}
	if !got.Equal(t0.Add(want)) {
		t.Errorf("port %s = %v, want %v", what, got, t0.Add(want))
	}
}

// TestTruncatedAndGarbage cuts a valid packet at every length and feeds
// random bytes: nothing may be counted as TCP that is not whole, and the
// program must never fail.
func TestTruncatedAndGarbage(t *testing.T) {
	s := loadReplay(t, nil)
	run, err := s.NewRunner()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []conv{a, a6, {src: attacker, dst: victim, vlans: []uint16{1, 2}, ipopts: 8}} {
		full := c.syn(0, 7000).p.Bytes()
		for n := 14; n < len(full); n++ {
			if _, err := run.Run(full[:n], t0); err != nil {
				t.Fatalf("len %d: %v", n, err)
			}
		}
	}
	got, _ := s.Counters()
	if got["tcp"] != 0 || got["syn"] != 0 {
		t.Errorf("truncated packets parsed as TCP: %v", got)
	}
	if got["truncated"] == 0 {
		t.Errorf("no truncation counted: %v", got)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, 14+rng.IntN(120))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if rng.IntN(2) == 0 {
			b[12], b[13] = 0x08, 0x00
		}
		if _, err := run.Run(b, t0); err != nil {
			t.Fatal(err)
		}
	}
	got, _ = s.Counters()
	parsed := got["non_ip"] + got["non_tcp"] + got["truncated"] + got["fragment"] + got["unknown_ext"] + got["bad_header"] + got["tcp"]
	if parsed != got["packets"] {
		t.Errorf("parse outcomes %d do not add up to packets %d: %v", parsed, got["packets"], got)
	}
}

// TestNoMetadata: replay mode without the timestamp is counted, not guessed.
func TestNoMetadata(t *testing.T) {
	s := loadReplay(t, nil)
	if _, err := s.Program().Run(&ebpf.RunOptions{Data: a.syn(0, 80).p.Bytes()}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Counters()
	if got["no_meta"] != 1 || got["syn"] != 0 {
		t.Errorf("counters %v, want no_meta=1 syn=0", got)
	}
}

// TestSweep: a source that knocks with unanswered SYNs and goes quiet is
// flagged by userspace's sweep, not left pending forever.
func TestSweep(t *testing.T) {
	s := loadReplay(t, nil)
	rd, err := s.NewReader()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	run, _ := s.NewRunner()
	for _, st := range []step{a.syn(0, 7000), a.syn(sec(0.5), 8000), a.syn(sec(1), 9000)} {
		if _, err := run.Run(st.p.Bytes(), t0.Add(st.at)); err != nil {
			t.Fatal(err)
		}
	}
	// Before the timeout nothing ages.
	if n, err := s.Sweep(t0.Add(sec(2.5))); err != nil || n != 1 {
		t.Fatalf("sweep at 2.5s: %d touches, %v; want 1 (port 7000)", n, err)
	}
	if n, err := s.Sweep(t0.Add(sec(10))); err != nil || n != 2 {
		t.Fatalf("sweep at 10s: %d touches, %v; want 2", n, err)
	}
	if n, _ := s.Sweep(t0.Add(sec(20))); n != 0 {
		t.Fatalf("second sweep found %d touches again", n)
	}
	checkKnocks(t, knocks(drain(t, rd)), []wantKnock{{src: attacker, dst: victim, ports: []uint16{7000, 8000, 9000},
		kinds: []sensor.TouchKind{sensor.TouchS0, sensor.TouchS0, sensor.TouchS0}, times: []time.Duration{0, sec(0.5), sec(1)}}})
}

// TestDistinctAcrossBursts: a port touched in an earlier burst counts again
// in a new one, and the KNOCK's distinct count is never below the window's.
func TestDistinctAcrossBursts(t *testing.T) {
	s := loadReplay(t, nil)
	recs, _ := runSteps(t, s, cat(a.rej(0, 7000), a.rej(sec(1), 7001),
		a.rej(sec(35), 7000), a.rej(sec(36), 7001), a.rej(sec(37), 7002)))
	ks := knocks(recs)
	if len(ks) != 1 {
		t.Fatalf("%d knocks, want 1", len(ks))
	}
	if ks[0].Distinct != 3 {
		t.Errorf("distinct = %d, want 3", ks[0].Distinct)
	}
}
