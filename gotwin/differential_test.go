package gotwin

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/testsupport/scenario"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
	"github.com/knockwatch/knockwatch/loader"
	"github.com/knockwatch/knockwatch/sensor"
)

// kernel is the real program loaded with cfg.
type kernel struct {
	cfg sensor.Config
	s   *loader.Sensor
	rp  *loader.Replayer
}

// sharedKernels are loaded once per test binary: [0] with testConfig
// (as live), [1] with replayConfig.
var sharedKernels [2]*kernel

func loadKernel(t testing.TB, replay bool) *kernel {
	t.Helper()
	i, cfg := 0, testConfig()
	if replay {
		i, cfg = 1, replayConfig()
	}
	if sharedKernels[i] == nil {
		sharedKernels[i] = newKernel(t, cfg)
	}
	return sharedKernels[i]
}

// newKernel loads the program with cfg.
func newKernel(t testing.TB, cfg sensor.Config) *kernel {
	t.Helper()
	testenv.RequirePrivileged(t)
	s, err := loader.Load(cfg, loader.Options{})
	if err != nil {
		t.Fatalf("load: %+v", err)
	}
	k := &kernel{cfg: cfg, s: s}
	if k.rp, err = s.NewReplayer(); err != nil {
		t.Fatal(err)
	}
	return k
}

// reset empties every state table, the gates, the counters and the ring.
func (k *kernel) reset(t testing.TB) {
	t.Helper()
	if err := k.s.Reset(); err != nil {
		t.Fatal(err)
	}
	if _, err := k.rp.Records(); err != nil {
		t.Fatal(err)
	}
}

// play resets the program's state and plays steps through it.
func (k *kernel) play(t testing.TB, steps []scenario.Step) scenario.Outcome {
	t.Helper()
	k.reset(t)
	return scenario.Play(t, k.rp, steps)
}

func checkSame(t *testing.T, k *kernel, data []byte) scenario.Outcome {
	t.Helper()
	steps := scenario.DecodeOps(data)
	ko := k.play(t, steps)
	g := runTwin(t, k.cfg, steps)
	if d := scenario.Compare(ko, g); d != "" {
		t.Fatalf("xdp and go engines differ on ops %x:\n%s", data, d)
	}
	return ko
}

// seeds are op sequences that reach every record kind.
var seeds = [][]byte{
	// REJ knock on 3 ports, then a connect to a fourth.
	{0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 1, 10, 2, 0, 1, 0, 0, 0, 2, 10, 2, 0, 2, 0, 0, 0, 9, 40, 3, 0, 9, 0, 4, 0, 9, 0},
	// S0 knock, then a sweep.
	{0, 0, 0, 0, 0, 0, 1, 50, 0, 0, 2, 50, 0, 0, 3, 50, 0, 0, 4, 50, 8, 0, 0, 60},
	// IPv6 with extension headers, REJ knock and connect.
	{0, 0x68, 0, 1, 2, 0x68, 0, 0, 0, 0x68, 1, 10, 2, 0x68, 1, 0, 0, 0x68, 2, 10, 2, 0x68, 2, 0, 0, 0x68, 9, 40, 3, 0x68, 9, 0, 4, 0x68, 9, 0},
	// Garbage and truncation.
	{7, 0, 30, 0, 0x45, 0, 0, 40, 5, 1, 2, 3, 0, 0x11, 5, 6, 7, 1, 2, 0, 9, 0, 3, 17, 10, 0, 0x40, 0, 10, 8, 0xc0, 3},
}

// TestDifferential pushes generated packet sequences through the XDP
// program (BPF_PROG_RUN, replay mode) and the twin: records (in order),
// counters, verdicts and sweep results must be identical.
func TestDifferential(t *testing.T) {
	ks := [2]*kernel{loadKernel(t, false), loadKernel(t, true)}
	for i, s := range seeds {
		t.Run(fmt.Sprintf("seed%d", i), func(t *testing.T) {
			checkSame(t, ks[0], s)
			checkSame(t, ks[1], s)
		})
	}
	// What the generated inputs reached, so the test cannot pass by
	// exercising nothing. (Live candidates pushed out, cand_evicted, need
	// a crowd within one window: TestDifferentialTable's rows do it.)
	reached := sensor.Counters{}
	var knocks, handshakes int
	defer func() {
		if t.Failed() {
			return
		}
		t.Logf("reached: %d knocks, %d handshakes, counters %v", knocks, handshakes, reached)
		for _, name := range []string{"touch_rej", "touch_s0", "slot_takeover", "pending_evicted", "syn_retrans",
			"backscatter", "synack_unmatched", "port_open", "handshake_bad_ack", "watch_started", "handshake_repeat",
			"bad_csum", "ringbuf_full", "touch_rstos0", "answer_early", "ack_proof", "candidates", "knock_deferred", "attempted", "remote_flag", "samples",
			"truncated", "fragment", "unknown_ext", "bad_header", "non_ip", "non_tcp", "bad_flags", "vlan", "ipv6", "port_slot_takeover"} {
			if reached[name] == 0 {
				t.Errorf("no generated input reached counter %s", name)
			}
		}
		if knocks == 0 || handshakes == 0 {
			t.Errorf("generated inputs produced %d knocks and %d handshakes", knocks, handshakes)
		}
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	n := 300
	if testing.Short() {
		n = 50
	}
	for i := 0; i < n; i++ {
		data := make([]byte, 4*(20+rng.IntN(200)))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		// Bias towards the state machine: most ops are SYN/REJ/RST/
		// SYN-ACK/ACK/connect within a few conversations, few ports and
		// short steps.
		convs := []byte{byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())}
		for j := 0; j+3 < len(data); j += 4 {
			if rng.IntN(4) != 0 {
				data[j] = []byte{0, 1, 1, 2, 3, 4, 12, 12, 5, 6, 14, 15}[rng.IntN(12)] | data[j]&0x80
				data[j+1] = convs[rng.IntN(len(convs))]
				data[j+2] &= 0xa3
				data[j+3] %= 40
			}
		}
		t.Run(fmt.Sprintf("gen%d", i), func(t *testing.T) {
			o := checkSame(t, ks[i%2], data)
			for name, v := range o.Counters {
				reached[name] += v
			}
			for _, r := range o.Records {
				switch r.(type) {
				case *sensor.Knock:
					knocks++
				case *sensor.Handshake:
					handshakes++
				}
			}
		})
	}
}

// TestDifferentialTable runs every row of the shared table through both
// engines with the row's configuration: records, counters, verdicts and
// sweep results must be identical (beyond what the row checks).
func TestDifferentialTable(t *testing.T) {
	base := newKernel(t, scenario.BaseConfig())
	defer base.s.Close()
	for _, c := range scenario.Table() {
		t.Run(c.Name, func(t *testing.T) {
			kk := base
			if c.Config != nil {
				kk = newKernel(t, c.ConfigOf())
				defer kk.s.Close()
			}
			if err := kk.s.SetAllowlist(c.Allow); err != nil {
				t.Fatal(err)
			}
			defer kk.s.SetAllowlist(nil)
			ko := kk.play(t, c.Steps)
			g := runTwin(t, c.ConfigOf(), c.Steps, c.Allow...)
			if d := scenario.Compare(ko, g); d != "" {
				t.Fatalf("engines differ:\n%s", d)
			}
		})
	}
}

// TestDifferentialAllowlist checks the allowlist (an LPM trie in the
// program, prefix matching in the twin) on generated inputs.
func TestDifferentialAllowlist(t *testing.T) {
	k := loadKernel(t, false)
	allow := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8::/64"),
		netip.MustParsePrefix("198.18.0.0/17"), netip.MustParsePrefix("192.0.2.1/32")}
	if err := k.s.SetAllowlist(allow); err != nil {
		t.Fatal(err)
	}
	defer k.s.SetAllowlist(nil)
	rng := rand.New(rand.NewPCG(3, 4))
	var allowlisted uint64
	for i := 0; i < 60; i++ {
		data := make([]byte, 4*(20+rng.IntN(150)))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		convs := []byte{byte(rng.Uint32()), byte(rng.Uint32())}
		for j := 0; j+3 < len(data); j += 4 {
			data[j] = []byte{0, 1, 1, 1, 12}[rng.IntN(5)]
			data[j+1] = convs[rng.IntN(2)]
			data[j+2] &= 0x87
			data[j+3] %= 30
		}
		steps := append(scenario.DecodeOps(seeds[0]), scenario.DecodeOps(data)...)
		ko := k.play(t, steps)
		g := runTwin(t, testConfig(), steps, allow...)
		if d := scenario.Compare(ko, g); d != "" {
			t.Fatalf("engines differ with an allowlist on ops %x:\n%s", data, d)
		}
		allowlisted += ko.Counters["allowlisted"]
	}
	if allowlisted == 0 {
		t.Fatal("no generated input reached an allowlisted flag")
	}
}

func FuzzDifferential(f *testing.F) {
	ks := [2]*kernel{loadKernel(f, false), loadKernel(f, true)}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSame(t, ks[0], data)
		checkSame(t, ks[1], data)
	})
}

// TestDifferentialDestinations checks syn_dsts (a hash map and an LPM trie
// in the program, a Go map and prefix matching in the twin) on generated
// inputs: counters, records and the table's contents must be identical.
// The table holds 2 hosts while the networks hold 3 of the generated
// destinations, so a full table is compared too.
func TestDifferentialDestinations(t *testing.T) {
	cfg := testConfig()
	cfg.SYNDestinations = 2
	k := newKernel(t, cfg)
	defer k.s.Close()
	nets := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("2001:db8:1::/64")}
	if err := k.s.SetDestinationNets(nets); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	var added, full uint64
	for i := 0; i < 60; i++ {
		data := make([]byte, 4*(20+rng.IntN(150)))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		for j := 0; j+3 < len(data); j += 4 {
			data[j] = []byte{0, 1, 1, 3, 12}[rng.IntN(5)] | data[j]&0x80
			data[j+3] %= 200 // steps long enough to cross the once-a-second refresh
		}
		steps := scenario.DecodeOps(data)
		ko := k.play(t, steps)
		tw, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.SetDestinationNets(nets); err != nil {
			t.Fatal(err)
		}
		g := scenario.Play(t, engine{tw}, steps)
		if d := scenario.Compare(ko, g); d != "" {
			t.Fatalf("engines differ with destination networks on ops %x:\n%s", data, d)
		}
		end := scenario.T0.Add(time.Hour)
		kd, err := k.s.SYNDestinations(end, 2*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		gd, _ := tw.SYNDestinations(end, 2*time.Hour)
		sortDst := func(d []sensor.Destination) {
			slices.SortFunc(d, func(a, b sensor.Destination) int { return a.Addr.Compare(b.Addr) })
		}
		sortDst(kd)
		sortDst(gd)
		if !slices.Equal(kd, gd) {
			t.Fatalf("syn_dsts differ on ops %x:\nxdp %v\ngo  %v", data, kd, gd)
		}
		for _, d := range kd {
			if !slices.ContainsFunc(nets, func(p netip.Prefix) bool { return p.Contains(d.Addr) }) {
				t.Fatalf("%v recorded outside the networks", d.Addr)
			}
		}
		added += ko.Counters["syn_dst_new"]
		full += ko.Counters["syn_dst_full"]
	}
	if added == 0 || full == 0 {
		t.Fatalf("generated inputs reached syn_dst_new %d, syn_dst_full %d: want both", added, full)
	}
}
