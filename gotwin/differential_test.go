package gotwin

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
	"github.com/knockwatch/knockwatch/loader"
	"github.com/knockwatch/knockwatch/sensor"
)

// kernel is the real program loaded once per test binary, with what it
// takes to reset its state between inputs without paying a load.
type kernel struct {
	s    *loader.Sensor
	run  *loader.Runner
	rd   *loader.Reader
	maps map[string]*ebpf.Map
}

var sharedKernel *kernel

func loadKernel(t testing.TB) *kernel {
	t.Helper()
	testenv.RequirePrivileged(t)
	if sharedKernel != nil {
		return sharedKernel
	}
	s, err := loader.Load(testConfig(), loader.Options{})
	if err != nil {
		t.Fatalf("load: %+v", err)
	}
	k := &kernel{s: s, maps: map[string]*ebpf.Map{}}
	if k.run, err = s.NewRunner(); err != nil {
		t.Fatal(err)
	}
	if k.rd, err = s.NewReader(); err != nil {
		t.Fatal(err)
	}
	// The sensor does not export its state maps; reach them through the
	// program's map IDs (root only, as the test is).
	info, err := s.Program().Info()
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := info.MapIDs()
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			t.Fatal(err)
		}
		mi, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		name := mi.Name
		if strings.HasSuffix(name, ".bss") {
			name = ".bss"
		}
		k.maps[name] = m
	}
	for _, name := range []string{"pair_slots", "port_slots", "candidates", "flagged", "watch", ".bss"} {
		if k.maps[name] == nil {
			t.Fatalf("map %s not found among the program's maps %v", name, k.maps)
		}
	}
	sharedKernel = k
	return k
}

// reset empties every state map, the gates and the counters.
func (k *kernel) reset(t testing.TB) {
	t.Helper()
	for _, name := range []string{"pair_slots", "port_slots", ".bss"} {
		m := k.maps[name]
		zero := make([]byte, m.ValueSize())
		for i := uint32(0); i < m.MaxEntries(); i++ {
			if err := m.Put(i, zero); err != nil {
				t.Fatalf("reset %s: %v", name, err)
			}
		}
	}
	for _, name := range []string{"candidates", "flagged", "watch"} {
		m := k.maps[name]
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
	if err := k.s.ResetCounters(); err != nil {
		t.Fatal(err)
	}
	k.drain(t)
}

func (k *kernel) drain(t testing.TB) []sensor.Record {
	t.Helper()
	var recs []sensor.Record
	if k.rd.Pending() > 0 {
		// Read skips records that do not decode; never block on one.
		k.rd.SetDeadline(time.Now().Add(5 * time.Second))
	}
	for k.rd.Pending() > 0 {
		r, err := k.rd.Read()
		if err != nil {
			t.Fatalf("read records: %v", err)
		}
		recs = append(recs, r)
	}
	return recs
}

// outcome is what one engine made of a step sequence.
type outcome struct {
	records  []sensor.Record
	counters sensor.Counters
	verdicts []uint32
	sweeps   []int
}

func runKernel(t testing.TB, k *kernel, steps []step) outcome {
	t.Helper()
	k.reset(t)
	var o outcome
	for i, st := range steps {
		if st.sweep {
			n, err := k.s.Sweep(t0.Add(st.at))
			if err != nil {
				t.Fatalf("step %d: sweep: %v", i, err)
			}
			o.sweeps = append(o.sweeps, n)
			continue
		}
		b := st.bytes()
		if len(b) < 14 {
			continue // BPF_PROG_RUN refuses frames shorter than Ethernet
		}
		v, err := k.run.Run(b, t0.Add(st.at))
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		o.verdicts = append(o.verdicts, v)
	}
	var err error
	if o.counters, err = k.s.Counters(); err != nil {
		t.Fatal(err)
	}
	o.records = k.drain(t)
	return o
}

func runTwin(t testing.TB, cfg sensor.Config, steps []step, allow ...netip.Prefix) outcome {
	t.Helper()
	tw, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.SetAllowlist(allow); err != nil {
		t.Fatal(err)
	}
	var o outcome
	for _, st := range steps {
		if st.sweep {
			o.sweeps = append(o.sweeps, tw.Sweep(t0.Add(st.at)))
			continue
		}
		b := st.bytes()
		if len(b) < 14 {
			continue
		}
		o.verdicts = append(o.verdicts, tw.Run(b, t0.Add(st.at)))
	}
	o.counters = tw.Counters()
	o.records = tw.Records()
	if c, f, w := tw.Evictions(); c+f+w != 0 {
		t.Fatalf("twin evicted LRU entries (%d/%d/%d): size the test's tables up", c, f, w)
	}
	return o
}

// compare reports every difference between the kernel's and the twin's
// outcome; "" when they agree.
func compare(k, g outcome) string {
	var b strings.Builder
	for _, name := range sensor.CounterNames {
		if k.counters[name] != g.counters[name] {
			fmt.Fprintf(&b, "counter %s: xdp %d, go %d\n", name, k.counters[name], g.counters[name])
		}
	}
	if !reflect.DeepEqual(k.verdicts, g.verdicts) {
		fmt.Fprintf(&b, "verdicts differ\n")
	}
	if !reflect.DeepEqual(k.sweeps, g.sweeps) {
		fmt.Fprintf(&b, "sweep results: xdp %v, go %v\n", k.sweeps, g.sweeps)
	}
	n := max(len(k.records), len(g.records))
	for i := 0; i < n; i++ {
		var kr, gr sensor.Record
		if i < len(k.records) {
			kr = k.records[i]
		}
		if i < len(g.records) {
			gr = g.records[i]
		}
		if !reflect.DeepEqual(kr, gr) {
			fmt.Fprintf(&b, "record %d:\n  xdp %s\n  go  %s\n", i, show(kr), show(gr))
		}
	}
	return b.String()
}

func show(r sensor.Record) string {
	switch r := r.(type) {
	case *sensor.Knock:
		return fmt.Sprintf("KNOCK %+v", *r)
	case *sensor.Handshake:
		return fmt.Sprintf("HANDSHAKE %+v", *r)
	}
	return "none"
}

func checkSame(t *testing.T, k *kernel, data []byte) outcome {
	t.Helper()
	steps := decodeOps(data)
	ko := runKernel(t, k, steps)
	g := runTwin(t, testConfig(), steps)
	if d := compare(ko, g); d != "" {
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
	k := loadKernel(t)
	for i, s := range seeds {
		t.Run(fmt.Sprintf("seed%d", i), func(t *testing.T) { checkSame(t, k, s) })
	}
	// What the generated inputs reached, so the test cannot pass by
	// exercising nothing.
	reached := sensor.Counters{}
	var knocks, handshakes int
	defer func() {
		if t.Failed() {
			return
		}
		t.Logf("reached: %d knocks, %d handshakes, counters %v", knocks, handshakes, reached)
		for _, name := range []string{"touch_rej", "touch_s0", "slot_takeover", "pending_evicted", "syn_retrans",
			"backscatter", "synack_unmatched", "port_open", "handshake_bad_ack", "watch_started", "handshake_repeat",
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
				data[j] = []byte{0, 1, 1, 2, 3, 4, 12, 12, 5, 6}[rng.IntN(10)] | data[j]&0x80
				data[j+1] = convs[rng.IntN(len(convs))]
				data[j+2] &= 0x83
				data[j+3] %= 40
			}
		}
		t.Run(fmt.Sprintf("gen%d", i), func(t *testing.T) {
			o := checkSame(t, k, data)
			for name, v := range o.counters {
				reached[name] += v
			}
			for _, r := range o.records {
				if _, ok := r.(*sensor.Knock); ok {
					knocks++
				} else {
					handshakes++
				}
			}
		})
	}
}

// TestDifferentialScenarios runs named scenarios through both engines.
func TestDifferentialScenarios(t *testing.T) {
	k := loadKernel(t)
	a := conv{src: attacker, dst: victim}
	b := conv{src: bystander, dst: victim}
	for name, steps := range scenarios(a, b) {
		t.Run(name, func(t *testing.T) {
			ko := runKernel(t, k, steps)
			g := runTwin(t, testConfig(), steps)
			if d := compare(ko, g); d != "" {
				t.Fatalf("engines differ:\n%s", d)
			}
			if len(ko.records) == 0 && strings.HasPrefix(name, "knock") {
				t.Fatalf("scenario %s produced no records", name)
			}
		})
	}
}

// TestDifferentialAllowlist checks the allowlist (an LPM trie in the
// program, prefix matching in the twin) on generated inputs.
func TestDifferentialAllowlist(t *testing.T) {
	k := loadKernel(t)
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
		steps := append(decodeOps(seeds[0]), decodeOps(data)...)
		ko := runKernel(t, k, steps)
		g := runTwin(t, testConfig(), steps, allow...)
		if d := compare(ko, g); d != "" {
			t.Fatalf("engines differ with an allowlist on ops %x:\n%s", data, d)
		}
		allowlisted += ko.counters["allowlisted"]
	}
	if allowlisted == 0 {
		t.Fatal("no generated input reached an allowlisted flag")
	}
}

func FuzzDifferential(f *testing.F) {
	k := loadKernel(f)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkSame(t, k, data) })
}
