package scenario

import (
	"net/netip"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/testsupport/pkt"
	"github.com/knockwatch/knockwatch/sensor"
)

// WantKnock describes an expected KNOCK record.
type WantKnock struct {
	Src, Dst netip.Addr
	Ports    []uint16 // nil: touches not checked
	Kinds    []sensor.TouchKind
	Times    []time.Duration // offsets from T0, checked when set
	Distinct int             // 0: not checked
	// Attempted and Epoch: 0 is not checked.
	Attempted int
	Epoch     uint32
}

// WantHS describes an expected HANDSHAKE record.
type WantHS struct {
	Src, Dst   netip.Addr
	Port       uint16
	LastClosed time.Duration // -1: never seen closed
	LastOpen   time.Duration // -1: never seen open
	Distinct   int           // 0: not checked
	// FirstOpen and OtherDone: 0 is not checked, Never never seen, else
	// the offset from T0.
	FirstOpen, OtherDone time.Duration
	// Attempted: 0 is not checked. Epoch: 0 is not checked, -1 must be 0
	// (the pair's knock was lost, its flag survived).
	Attempted int
	Epoch     int
	// Proven: the SYN-ACK was not seen (the client's ACK proved it).
	Proven bool
	// RemoteFlag and Sample must equal the record's.
	RemoteFlag, Sample bool
}

// Never marks a port-state time in WantHS that must be the zero time.
const Never = time.Duration(-1)

// Case is one row of the table both engines must pass.
type Case struct {
	Name string
	// Config changes BaseConfig for this case (nil: none).
	Config func(*sensor.Config)
	// Allow is the allowlist of source prefixes.
	Allow []netip.Prefix
	Steps []Step
	// Verdict of every packet (0: sensor.XDPDrop).
	Verdict    uint32
	Knocks     []WantKnock
	Handshakes []WantHS
	// Sweeps are the touches each sweep step finds (nil: not checked).
	Sweeps []int
	// Counters that must have exactly these values; the rest are free.
	Counters map[string]uint64
}

// BaseConfig is the configuration every case starts from: replay mode, a
// fixed hash seed, tables small enough to load fast and large enough that
// the cases' few pairs neither collide nor get evicted.
func BaseConfig() sensor.Config {
	cfg := sensor.DefaultConfig()
	cfg.Replay = true
	cfg.HashSeed = 0x2545f491
	cfg.PairSlots = 1 << 14
	cfg.PortSlots = 1 << 10
	cfg.Candidates = 1024
	cfg.Watches = 256
	cfg.RingBytes = 1 << 16
	return cfg
}

// ConfigOf returns BaseConfig changed by the case.
func (c Case) ConfigOf() sensor.Config {
	cfg := BaseConfig()
	if c.Config != nil {
		c.Config(&cfg)
	}
	return cfg
}

// Check compares an engine's outcome of c.Steps with the case.
func (c Case) Check(t testing.TB, o Outcome) {
	t.Helper()
	want := uint32(sensor.XDPDrop)
	if c.Verdict != 0 {
		want = c.Verdict
	}
	for i, v := range o.Verdicts {
		if v != want {
			t.Errorf("verdict of packet %d: %d, want %d", i, v, want)
		}
	}
	if got := o.Counters["packets"]; got != uint64(o.Packets) {
		t.Errorf("counter packets = %d, want %d", got, o.Packets)
	}
	CheckKnocks(t, o.Knocks(), c.Knocks)
	CheckHandshakes(t, o.Handshakes(), c.Handshakes)
	if c.Sweeps != nil && !equalInts(o.Sweeps, c.Sweeps) {
		t.Errorf("sweeps found %v touches, want %v", o.Sweeps, c.Sweeps)
	}
	for name, n := range c.Counters {
		if o.Counters[name] != n {
			t.Errorf("counter %s = %d, want %d", name, o.Counters[name], n)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// CheckKnocks compares KNOCK records with expectations, in order.
func CheckKnocks(t testing.TB, got []*sensor.Knock, want []WantKnock) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d KNOCK records, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Src != w.Src || g.Dst != w.Dst {
			t.Errorf("knock %d: %v -> %v, want %v -> %v", i, g.Src, g.Dst, w.Src, w.Dst)
		}
		if w.Distinct != 0 && g.Distinct != w.Distinct {
			t.Errorf("knock %d: distinct %d, want %d", i, g.Distinct, w.Distinct)
		}
		if w.Attempted != 0 && g.Attempted != w.Attempted {
			t.Errorf("knock %d: attempted %d, want %d", i, g.Attempted, w.Attempted)
		}
		if w.Epoch != 0 && g.Epoch != w.Epoch {
			t.Errorf("knock %d: epoch %d, want %d", i, g.Epoch, w.Epoch)
		}
		if w.Ports == nil {
			continue
		}
		if len(g.Touches) != len(w.Ports) {
			t.Fatalf("knock %d: touches %+v, want ports %v", i, g.Touches, w.Ports)
		}
		for j, tc := range g.Touches {
			if tc.Port != w.Ports[j] || (w.Kinds != nil && tc.Kind != w.Kinds[j]) {
				t.Errorf("knock %d touch %d: %d/%v, want %d/%v", i, j, tc.Port, tc.Kind, w.Ports[j], w.Kinds[j])
			}
			if w.Times != nil && !tc.Time.Equal(T0.Add(w.Times[j])) {
				t.Errorf("knock %d touch %d: time %v, want %v", i, j, tc.Time, T0.Add(w.Times[j]))
			}
		}
	}
}

// CheckHandshakes compares HANDSHAKE records with expectations, in order.
func CheckHandshakes(t testing.TB, got []*sensor.Handshake, want []WantHS) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d HANDSHAKE records, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Src != w.Src || g.Dst != w.Dst || g.Port != w.Port {
			t.Errorf("handshake %d: %v -> %v:%d, want %v -> %v:%d", i, g.Src, g.Dst, g.Port, w.Src, w.Dst, w.Port)
		}
		switch {
		case w.Proven && !g.SYNACK.IsZero():
			t.Errorf("handshake %d: SYN-ACK at %v, want none (proven by the ACK)", i, g.SYNACK)
		case w.Proven && !g.SYN.Before(g.ACK):
			t.Errorf("handshake %d: times out of order: %v %v", i, g.SYN, g.ACK)
		case !w.Proven && (!g.SYN.Before(g.ACK) || !g.SYNACK.Before(g.ACK) || g.SYNACK.Before(g.SYN.Add(-5*time.Millisecond))):
			// A SYN-ACK captured on a tap's other port may be stamped
			// before its SYN, by up to the answer skew.
			t.Errorf("handshake %d: times out of order: %v %v %v", i, g.SYN, g.SYNACK, g.ACK)
		}
		if w.Distinct != 0 && g.Distinct != w.Distinct {
			t.Errorf("handshake %d: distinct %d, want %d", i, g.Distinct, w.Distinct)
		}
		if w.Attempted != 0 && g.Attempted != w.Attempted {
			t.Errorf("handshake %d: attempted %d, want %d", i, g.Attempted, w.Attempted)
		}
		if (w.Epoch > 0 && g.Epoch != uint32(w.Epoch)) || (w.Epoch < 0 && g.Epoch != 0) {
			t.Errorf("handshake %d: epoch %d, want %d", i, g.Epoch, max(w.Epoch, 0))
		}
		checkStamp(t, "last closed", g.PortLastClosed, w.LastClosed)
		checkStamp(t, "last open", g.PortLastOpen, w.LastOpen)
		if g.RemoteFlag != w.RemoteFlag || g.Sample != w.Sample {
			t.Errorf("handshake %d: remote flag %v, sample %v, want %v, %v", i, g.RemoteFlag, g.Sample, w.RemoteFlag, w.Sample)
		}
		if w.FirstOpen != 0 {
			checkStamp(t, "first open", g.PortFirstOpen, w.FirstOpen)
		}
		if w.OtherDone != 0 {
			checkStamp(t, "first completed by another source", g.PortOtherDone, w.OtherDone)
		}
	}
}

func checkStamp(t testing.TB, what string, got time.Time, want time.Duration) {
	t.Helper()
	if want < 0 {
		if !got.IsZero() {
			t.Errorf("port %s = %v, want never", what, got)
		}
		return
	}
	if !got.Equal(T0.Add(want)) {
		t.Errorf("port %s = %v, want %v", what, got, T0.Add(want))
	}
}

var (
	rejKnock = WantKnock{Src: Attacker, Dst: Victim, Ports: []uint16{7000, 8000, 9000},
		Kinds: []sensor.TouchKind{sensor.TouchREJ, sensor.TouchREJ, sensor.TouchREJ},
		Times: []time.Duration{0, Sec(1), Sec(2)}}
	rej3 = []sensor.TouchKind{sensor.TouchREJ, sensor.TouchREJ, sensor.TouchREJ}
	s03  = []sensor.TouchKind{sensor.TouchS0, sensor.TouchS0, sensor.TouchS0}
)

// Table returns the cases both engines must pass. Every expectation is
// written from the packets, not from an engine's output.
func Table() []Case {
	a := Conv{Src: Attacker, Dst: Victim}
	b := Conv{Src: Bystander, Dst: Victim}
	a6 := Conv{Src: Attacker6, Dst: Victim6, Ext: []pkt.Ext{{Proto: 0, Len: 8}, {Proto: 60, Len: 16}}}
	vlan := Conv{Src: Attacker, Dst: Victim, VLANs: []uint16{42}}
	qinq := Conv{Src: Attacker, Dst: Victim, VLANs: []uint16{100, 42}}
	opts := Conv{Src: Attacker, Dst: Victim, IPOpts: 12}
	return append([]Case{
		{
			Name:     "REJ knock",
			Steps:    a.Knock3(),
			Knocks:   []WantKnock{rejKnock},
			Counters: map[string]uint64{"syn": 3, "rst": 3, "touch_rej": 3, "candidates": 1, "flags": 1, "backscatter": 0},
		},
		{
			// The S0 timeout (5 s) runs from an attempt's last
			// transmission: a retransmission (Windows sends its first
			// after 3 s) keeps it pending.
			Name: "S0 knock with retransmissions",
			Steps: []Step{
				a.SYN(0, 7000), a.SYN(Sec(3), 7000), // retransmission: one attempt, deadline 8 s
				a.SYN(Sec(4), 8000),   // second port: the pair is a candidate
				a.SYN(Sec(5), 9000),   // nothing due yet
				a.SYN(Sec(14), 10000), // ages 7000, 8000, 9000: third distinct port flags
			},
			Knocks: []WantKnock{{Src: Attacker, Dst: Victim, Ports: []uint16{7000, 8000, 9000},
				Kinds: s03, Times: []time.Duration{Sec(3), Sec(4), Sec(5)}, Distinct: 3}},
			Counters: map[string]uint64{"syn": 5, "syn_retrans": 1, "touch_s0": 3, "flags": 1, "candidates": 1},
		},
		{
			// A source that knocks with unanswered SYNs and goes quiet is
			// flagged by the sweep, not left pending forever.
			Name: "S0 knock found by the sweep",
			Steps: []Step{a.SYN(0, 7000), a.SYN(Sec(0.5), 8000), a.SYN(Sec(1), 9000),
				{At: Sec(2.5), Sweep: true}, // nothing is past the 5 s timeout
				{At: Sec(5.2), Sweep: true}, // 7000 is
				{At: Sec(10), Sweep: true},  // 8000 and 9000
				{At: Sec(20), Sweep: true},  // nothing left
			},
			Knocks: []WantKnock{{Src: Attacker, Dst: Victim, Ports: []uint16{7000, 8000, 9000},
				Kinds: s03, Times: []time.Duration{0, Sec(0.5), Sec(1)}}},
			Sweeps:   []int{0, 1, 2, 0},
			Counters: map[string]uint64{"touch_s0": 3, "flags": 1},
		},
		{
			Name:       "S0 knock by the sweep, then a connect",
			Steps:      Cat([]Step{a.SYN(0, 7000), a.SYN(Sec(0.5), 8000), a.SYN(Sec(1), 9000), {At: Sec(7), Sweep: true}}, a.Connect(Sec(8), 22)),
			Knocks:     []WantKnock{{Src: Attacker, Dst: Victim, Ports: []uint16{7000, 8000, 9000}, Kinds: s03}},
			Handshakes: []WantHS{{Src: Attacker, Dst: Victim, Port: 22, LastClosed: -1, LastOpen: -1}},
			Sweeps:     []int{3},
			Counters:   map[string]uint64{"touch_s0": 3, "handshakes": 1},
		},
		{
			Name:     "below threshold",
			Steps:    Cat(a.REJ(0, 7000), a.REJ(Sec(1), 8000), a.REJ(Sec(2), 8000)),
			Counters: map[string]uint64{"touch_rej": 3, "candidates": 1, "flags": 0},
		},
		{
			Name:     "outside the window",
			Steps:    Cat(a.REJ(0, 7000), a.REJ(Sec(20), 8000), a.REJ(Sec(40), 9000)),
			Counters: map[string]uint64{"touch_rej": 3, "flags": 0},
		},
		{
			Name:     "threshold and window from config",
			Config:   func(c *sensor.Config) { c.MinPorts = 4; c.Window = 5 * time.Second },
			Steps:    Cat(a.REJ(0, 7000), a.REJ(Sec(1), 8000), a.REJ(Sec(2), 9000), a.REJ(Sec(8), 9500)),
			Counters: map[string]uint64{"touch_rej": 4, "flags": 0},
		},
		{
			// A port from an earlier burst counts again in a new one, and
			// the KNOCK's distinct count is never below the window's.
			Name: "distinct across bursts",
			Steps: Cat(a.REJ(0, 7000), a.REJ(Sec(1), 7001),
				a.REJ(Sec(35), 7000), a.REJ(Sec(36), 7001), a.REJ(Sec(37), 7002)),
			Knocks: []WantKnock{{Src: Attacker, Dst: Victim, Distinct: 3}},
		},
		{
			Name: "open port mixed into a knock",
			Steps: Cat(a.REJ(0, 7000), a.Connect(Sec(0.5), 80), a.REJ(Sec(1), 8000),
				[]Step{a.SYN(Sec(1.5), 443), a.SYNACK(Sec(1.6), 443)}, a.REJ(Sec(2), 9000)),
			Knocks:   []WantKnock{rejKnock},
			Counters: map[string]uint64{"touch_rej": 3, "port_open": 2, "flags": 1, "touch_s0": 0},
		},
		{Name: "802.1Q", Steps: vlan.Knock3(), Knocks: []WantKnock{rejKnock}, Counters: map[string]uint64{"vlan": 6, "flags": 1}},
		{Name: "QinQ", Steps: qinq.Knock3(), Knocks: []WantKnock{rejKnock}, Counters: map[string]uint64{"vlan": 6, "flags": 1}},
		{Name: "IPv4 options", Steps: opts.Knock3(), Knocks: []WantKnock{rejKnock}, Counters: map[string]uint64{"ipv4": 6, "flags": 1}},
		{
			Name:     "IPv6 with extension headers",
			Steps:    a6.Knock3(),
			Knocks:   []WantKnock{{Src: Attacker6, Dst: Victim6, Ports: []uint16{7000, 8000, 9000}, Kinds: rej3}},
			Counters: map[string]uint64{"ipv6": 6, "flags": 1},
		},
		{
			Name:     "backscatter RSTs",
			Steps:    []Step{a.RST(0, 7000), a.RST(Sec(1), 8000), a.RST(Sec(2), 9000)}, // no SYNs seen
			Counters: map[string]uint64{"rst": 3, "backscatter": 3, "touch_rej": 0},
		},
		{
			Name: "RST with a wrong ack is not a touch",
			Steps: func() []Step {
				r := a.RST(Sec(0.1), 7000)
				r.P.Ack++
				return []Step{a.SYN(0, 7000), r}
			}(),
			Counters: map[string]uint64{"backscatter": 1, "touch_rej": 0},
		},
		{
			Name:     "allowlisted source",
			Allow:    []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
			Steps:    a.Knock3(),
			Counters: map[string]uint64{"touch_rej": 3, "allowlisted": 1, "flags": 0},
		},
		{
			Name:       "first handshake of a flagged source, then a repeat",
			Steps:      Cat(a.Knock3(), a.Connect(Sec(10), 4444), a.Connect(Sec(11), 4444)),
			Knocks:     []WantKnock{rejKnock},
			Handshakes: []WantHS{{Src: Attacker, Dst: Victim, Port: 4444, LastClosed: -1, LastOpen: -1}},
			Counters:   map[string]uint64{"handshakes": 1, "handshake_repeat": 1, "watch_started": 2},
		},
		{
			Name: "handshake to a port that was closed before",
			Steps: Cat(a.REJ(0, 7000), a.REJ(Sec(1), 8000), a.REJ(Sec(2), 4444),
				a.Connect(Sec(10), 4444)),
			Knocks:     []WantKnock{{Src: Attacker, Dst: Victim, Ports: []uint16{7000, 8000, 4444}, Kinds: rej3}},
			Handshakes: []WantHS{{Src: Attacker, Dst: Victim, Port: 4444, LastClosed: Sec(2), LastOpen: -1}},
		},
		{
			Name:       "first handshake by another source",
			Steps:      Cat(a.Knock3(), b.Connect(Sec(5), 4444), a.Connect(Sec(10), 4444)),
			Knocks:     []WantKnock{rejKnock},
			Handshakes: []WantHS{{Src: Attacker, Dst: Victim, Port: 4444, LastClosed: -1, LastOpen: Sec(5) + time.Millisecond}},
			Counters:   map[string]uint64{"port_open": 2},
		},
		{
			Name:       "port open all along",
			Steps:      Cat(b.Connect(0, 22), a.Knock3(), a.Connect(Sec(5), 22)),
			Knocks:     []WantKnock{rejKnock},
			Handshakes: []WantHS{{Src: Attacker, Dst: Victim, Port: 22, LastClosed: -1, LastOpen: time.Millisecond}},
		},
		{
			Name:     "incomplete handshake: SYN, SYN-ACK, RST",
			Steps:    Cat(a.Knock3(), []Step{a.SYN(Sec(10), 4444), a.SYNACK(Sec(10.1), 4444), a.RST(Sec(10.2), 4444)}),
			Knocks:   []WantKnock{rejKnock},
			Counters: map[string]uint64{"handshakes": 0},
		},
		{
			Name: "handshake with a wrong ack",
			Steps: func() []Step {
				bad := a.ACK(Sec(10.2), 4444)
				bad.P.Ack += 5
				return Cat(a.Knock3(), []Step{a.SYN(Sec(10), 4444), a.SYNACK(Sec(10.1), 4444), bad})
			}(),
			Knocks:   []WantKnock{rejKnock},
			Counters: map[string]uint64{"handshakes": 0, "handshake_bad_ack": 1},
		},
		{
			Name:     "handshake too slow",
			Steps:    Cat(a.Knock3(), []Step{a.SYN(Sec(5), 22), a.SYNACK(Sec(5.001), 22), a.ACK(Sec(40), 22)}),
			Knocks:   []WantKnock{rejKnock},
			Counters: map[string]uint64{"handshakes": 0, "handshake_bad_ack": 1},
		},
		{
			Name: "spoofed SYN-ACK does not open a port",
			Steps: func() []Step {
				sa := a.SYNACK(Sec(0.1), 80)
				sa.P.Ack = 12345
				return []Step{a.SYN(0, 80), sa}
			}(),
			Counters: map[string]uint64{"synack_unmatched": 1, "port_open": 0},
		},
		{
			// Its handshake is watched all the same — the first to a port
			// since it was last seen closed — so the port learns who
			// completed one first; no HANDSHAKE record goes out.
			Name:     "handshake of an unflagged source is not reported",
			Steps:    Cat(a.REJ(0, 7000), a.Connect(Sec(1), 4444)),
			Counters: map[string]uint64{"handshakes": 0, "watch_started": 1, "port_open": 1},
		},
		{
			Name: "non-first fragment",
			Steps: func() []Step {
				f := a.SYN(0, 7000)
				f.P.FragOffset = 100
				return []Step{f}
			}(),
			Counters: map[string]uint64{"fragment": 1, "syn": 0},
		},
		{
			Name:     "IPv6 fragment",
			Steps:    []Step{Conv{Src: Attacker6, Dst: Victim6, Ext: []pkt.Ext{{Proto: 44, Len: 8}}}.SYN(0, 7000)},
			Counters: map[string]uint64{"fragment": 1, "syn": 0},
		},
		{
			Name: "IPv6 with too many extension headers",
			Steps: []Step{Conv{Src: Attacker6, Dst: Victim6, Ext: []pkt.Ext{{Proto: 0, Len: 8}, {Proto: 60, Len: 8},
				{Proto: 43, Len: 8}, {Proto: 60, Len: 8}, {Proto: 60, Len: 8}}}.SYN(0, 7000)},
			Counters: map[string]uint64{"unknown_ext": 1, "syn": 0},
		},
		{
			Name:     "pass verdict",
			Config:   func(c *sensor.Config) { c.Pass = true },
			Steps:    []Step{a.SYN(0, 80)},
			Verdict:  sensor.XDPPass,
			Counters: map[string]uint64{"syn": 1},
		},
		{
			// The sweep frees a touch past the window: 40 minutes later
			// (beyond the 35 minutes its 32-bit microseconds read back)
			// it cannot come back as new and join a later burst.
			Name:     "old touch freed, not read back",
			Steps:    Cat(a.REJ(0, 7000), []Step{{At: Sec(31), Sweep: true}}, a.REJ(Sec(2400), 8000), a.REJ(Sec(2401), 9000)),
			Sweeps:   []int{0},
			Counters: map[string]uint64{"touch_rej": 3, "flags": 0, "candidates": 1},
		},
		{
			Name:       "scan: distinct count beyond the ring",
			Steps:      a.Scan(40, 4444),
			Knocks:     []WantKnock{{Src: Attacker, Dst: Victim}},
			Handshakes: []WantHS{{Src: Attacker, Dst: Victim, Port: 4444, LastClosed: -1, LastOpen: -1, Distinct: 40}},
			Counters:   map[string]uint64{"touch_rej": 40, "flags": 1, "handshakes": 1},
		},
	}, Attacks()...)
}
