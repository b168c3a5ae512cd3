package loader

// Benchmarks of the XDP program over BPF_PROG_RUN, against the empty
// program and the LRU reference (bpf/bench/lruref.c) measured in the same
// run. docs/benchmarks/xdp.md has the table and what every figure means.
//
// Every figure is the kernel's own measurement (the duration BPF_PROG_RUN
// returns), not Go's wall clock, which is dominated by the syscall. The
// sensor is loaded in live mode (the coarse clock on SYNs and RSTs, the
// precise one on SYN-ACKs), with the production sizes and a fixed seed.
//
// Three ways of running, stated per row:
//   - repeat: identical packets (benign traffic) run `repeat` times in one
//     syscall; the kernel returns the per-run mean.
//   - seq: a sequence of distinct packets (knock mix, floods) run one per
//     syscall (repeat=1). The kernel's duration then includes a fixed
//     per-call overhead (clock reads, bh disable/enable, run context) that
//     the repeat figures amortize away. The LRU reference and the empty
//     program run the same packets the same way, interleaved chunk by
//     chunk, so "x-lru" and "x-empty" compare like with like; "-net"
//     figures subtract the overhead (the empty program at repeat=1 minus
//     its per-run mean).
//   - batched: a flood without a syscall per packet: bpf/bench/feed.c
//     rewrites the buffer into the flood's next packet and tail-calls the
//     program under test, 1024 packets per syscall, as a NAPI batch runs
//     them. The floor is the feeder tail-calling the empty program.
//
// Floods and the knock mix start from full tables: 2 x PairSlots sources of
// an earlier flood (untimed) have filled the LRU reference past its
// capacity, so every insert evicts, and knockwatch's pair buckets, so
// every new pair takes an entry over. Every other table of knockwatch has
// been written once, and before the knock mix its ring buffer too: on the
// development VM the first write to a fresh page costs ~5 µs (warmMaps).
//
// Run: go test -run '^$' -bench . -benchtime 50000x ./loader/

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/knockwatch/knockwatch/internal/testsupport/pkt"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
	"github.com/knockwatch/knockwatch/sensor"
)

const (
	// lineRate10G is 10 GbE at 64-byte frames (plus preamble and gap).
	lineRate10G = 14.88 // Mpps
	// benchChunk is how many packets run before the reference and the
	// empty program run the same ones (interleaving keeps all three under
	// the same machine noise).
	benchChunk = 256
	// floorRepeat is the repeat count of the empty program's per-run mean
	// (its per-call overhead, ~100 ns, is then ~0.1 ns per run).
	floorRepeat = 1024
	// batchRepeat is the packets per syscall of the batched rows.
	batchRepeat = 1024
	// mixSources is how many sources knock per pass of the knock mix.
	mixSources = 1024
	// mixGroup sources are interleaved packet by packet.
	mixGroup = 64
	// fillFactor x PairSlots sources fill the tables before timing.
	fillFactor = 2
	// fillBase numbers the filling flood's sources apart from the timed ones.
	fillBase = 1 << 31
)

var benchSeed = uint32(0x9e3779b9)

// newLiveSensor loads a live-mode sensor with the default (production) sizes and
// a fixed hash seed, changed by mutate. The caller closes it.
func newLiveSensor(tb testing.TB, mutate func(*sensor.Config)) *Sensor {
	tb.Helper()
	testenv.RequirePrivileged(tb)
	cfg := sensor.DefaultConfig()
	cfg.HashSeed = benchSeed
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := Load(cfg, Options{})
	if err != nil {
		tb.Fatalf("load: %+v", err)
	}
	// As run sets it with coverage on (coverage.networks' default): every
	// SYN to the benchmarks' victim, 10.20.0.5, looks in syn_dsts.
	if err := s.SetDestinationNets(benchDstNets); err != nil {
		tb.Fatal(err)
	}
	return s
}

var benchDstNets = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("fc00::/7")}

// loadLive is newLiveSensor closed with the benchmark run.
func loadLive(b *testing.B, mutate func(*sensor.Config)) *Sensor {
	s := newLiveSensor(b, mutate)
	b.Cleanup(func() { s.Close() })
	return s
}

// runRepeat runs data `repeat` times in the kernel and returns the total
// kernel time (per-run mean times repeat).
func runRepeat(tb testing.TB, p *ebpf.Program, data []byte, repeat int) time.Duration {
	ret, d, err := p.Benchmark(data, repeat, nil)
	if err != nil {
		tb.Fatalf("BPF_PROG_RUN: %v", err)
	}
	if ret != sensor.XDPDrop {
		tb.Fatalf("verdict %d, want XDP_DROP", ret)
	}
	return d * time.Duration(repeat)
}

// counters reads the sensor's counters or fails the benchmark.
func counters(tb testing.TB, s *Sensor) sensor.Counters {
	tb.Helper()
	c, err := s.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func resetCounters(tb testing.TB, s *Sensor) {
	tb.Helper()
	if err := s.ResetCounters(); err != nil {
		tb.Fatal(err)
	}
}

// ---------------------------------------------------------------------------
// Packets.

// labeled is a packet with the role it plays, for the per-role profile.
type labeled struct {
	data  []byte
	label string
	// s0: a SYN that stays unanswered; afterS0: a SYN of a source whose
	// earlier SYN went unanswered, which must come after the S0 timeout on
	// the program's clock to decide it (benchKnockMix).
	s0, afterS0 bool
}

// benignPackets are ACK and data packets of established connections in
// both directions: IPv4, IPv4 with payload, IPv6, 802.1Q. No SYN, no RST.
func benignPackets() [][]byte {
	var out [][]byte
	for i := uint32(0); i < 4; i++ {
		cli := floodSrc(1000 + i)
		c := pkt.TCP{Src: cli, Dst: benchVictim, SPort: uint16(50000 + i), DPort: 443, Seq: 1000 * i, Ack: 7777, Flags: pkt.ACK}
		s := pkt.TCP{Src: benchVictim, Dst: cli, SPort: 443, DPort: uint16(50000 + i), Seq: 7777, Ack: 1000 * i, Flags: pkt.ACK | pkt.PSH, Payload: make([]byte, 512)}
		v6 := pkt.TCP{Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8:1::5"), SPort: uint16(50100 + i), DPort: 22, Seq: i, Ack: 9, Flags: pkt.ACK, TCPOptions: 12}
		vl := c
		vl.VLANs = []uint16{42}
		out = append(out, c.Bytes(), s.Bytes(), v6.Bytes(), vl.Bytes())
	}
	return out
}

// floodPackets returns count packets of a flood (feedS0 or feedREJ) from
// packet number first on: what the feeder makes of the same numbers.
func floodPackets(first uint64, count int, mode uint32) []labeled {
	out := make([]labeled, count)
	for k := range out {
		n := first + uint64(k)
		label := "syn"
		if mode == feedREJ && n&1 == 1 {
			label = "rst"
		}
		out[k] = labeled{data: floodFrame(n, mode), label: label}
	}
	return out
}

// knockSource is the packet sequence of one knocking source: 3-5 closed-port
// touches (REJ = SYN then RST, S0 = an unanswered SYN that the source's next
// SYN ages), then a complete handshake to an open port.
func knockSource(i uint32) []labeled {
	src := floodSrc(0x40000000 + i)
	touches := 3 + int(i%3)
	var out []labeled
	s0, after := false, false
	for j := 0; j < touches; j++ {
		dport := uint16(7000 + 1000*j + int(i%997))
		sport := uint16(30000 + j)
		seq := i*7919 + uint32(j)<<20
		syn := pkt.TCP{Src: src, Dst: benchVictim, SPort: sport, DPort: dport, Seq: seq, Flags: pkt.SYN, TCPOptions: 12}
		// The label says which touch this is and what it completes;
		// an S0 touch is decided by the source's next SYN.
		s0 = (int(i)+j)%3 == 0
		out = append(out, labeled{data: syn.Bytes(), label: fmt.Sprintf("syn t%d", j+1), s0: s0, afterS0: after})
		after = after || s0
		if s0 {
			continue // S0: never answered
		}
		r := pkt.TCP{Src: benchVictim, Dst: src, SPort: dport, DPort: sport, Ack: seq + 1, Flags: pkt.RST | pkt.ACK}
		out = append(out, labeled{data: r.Bytes(), label: fmt.Sprintf("rst t%d", j+1)})
	}
	seq := i * 104729
	c := pkt.TCP{Src: src, Dst: benchVictim, SPort: 31000, DPort: 443, Seq: seq, Flags: pkt.SYN, TCPOptions: 12}
	sa := pkt.TCP{Src: benchVictim, Dst: src, SPort: 443, DPort: 31000, Seq: 0x5000, Ack: seq + 1, Flags: pkt.SYN | pkt.ACK, TCPOptions: 12}
	ack := pkt.TCP{Src: src, Dst: benchVictim, SPort: 31000, DPort: 443, Seq: seq + 1, Ack: 0x5001, Flags: pkt.ACK}
	out = append(out, labeled{data: c.Bytes(), label: "hs syn", afterS0: after},
		labeled{data: sa.Bytes(), label: "hs synack"}, labeled{data: ack.Bytes(), label: "hs ack"})
	return out
}

// armPackets is a knock of three REJ touches and a handshake to an open
// port without its last ACK (which is the last packet).
func armPackets() []labeled {
	src := floodSrc(0x30000000)
	var out []labeled
	for j, port := range []uint16{7100, 7200, 7300} {
		seq := uint32(j) << 20
		syn := pkt.TCP{Src: src, Dst: benchVictim, SPort: uint16(30000 + j), DPort: port, Seq: seq, Flags: pkt.SYN}
		r := pkt.TCP{Src: benchVictim, Dst: src, SPort: port, DPort: uint16(30000 + j), Ack: seq + 1, Flags: pkt.RST | pkt.ACK}
		out = append(out, labeled{data: syn.Bytes()}, labeled{data: r.Bytes()})
	}
	c := pkt.TCP{Src: src, Dst: benchVictim, SPort: 31000, DPort: 443, Seq: 99, Flags: pkt.SYN}
	sa := pkt.TCP{Src: benchVictim, Dst: src, SPort: 443, DPort: 31000, Seq: 0x5000, Ack: 100, Flags: pkt.SYN | pkt.ACK}
	ack := pkt.TCP{Src: src, Dst: benchVictim, SPort: 31000, DPort: 443, Seq: 100, Ack: 0x5001, Flags: pkt.ACK}
	return append(out, labeled{data: c.Bytes()}, labeled{data: sa.Bytes()}, labeled{data: ack.Bytes()})
}

// knockPass returns the packets of mixSources knocking sources starting at
// source number first as steps: a step is one packet of each of mixGroup
// interleaved sources (source 0's first packet, source 1's first packet,
// ...). It also returns the expected touch counts.
func knockPass(first uint32) (steps [][]labeled, rej, s0 int) {
	for g := uint32(0); g < mixSources; g += mixGroup {
		var seqs [][]labeled
		for k := uint32(0); k < mixGroup; k++ {
			i := first + g + k
			seqs = append(seqs, knockSource(i))
			touches := 3 + int(i%3)
			for j := 0; j < touches; j++ {
				if (int(i)+j)%3 == 0 {
					s0++
				} else {
					rej++
				}
			}
		}
		for step := 0; ; step++ {
			var st []labeled
			for _, s := range seqs {
				if step < len(s) {
					st = append(st, s[step])
				}
			}
			if len(st) == 0 {
				break
			}
			steps = append(steps, st)
		}
	}
	return steps, rej, s0
}

// ---------------------------------------------------------------------------
// Measurement.

// seqStats accumulates kernel time of repeat=1 runs of the program, the
// reference (when there is one) and the empty program over the same packets.
type seqStats struct {
	prog, lru, empty, floor time.Duration
	n, floorN               int
	byLabel                 map[string]*labelStat
}

type labelStat struct {
	d, lru time.Duration
	n      int
}

// runSeq runs pkts through prog one per syscall, then the same chunk
// through lru (if not nil), then through the empty program, then the empty
// program's per-run mean; it adds the kernel durations to st.
func (st *seqStats) runSeq(tb testing.TB, prog, lru, empty *ebpf.Program, pkts []labeled) {
	if st.byLabel == nil {
		st.byLabel = map[string]*labelStat{}
	}
	for lo := 0; lo < len(pkts); lo += benchChunk {
		hi := min(lo+benchChunk, len(pkts))
		for _, p := range pkts[lo:hi] {
			d := runRepeat(tb, prog, p.data, 1)
			st.prog += d
			ls := st.byLabel[p.label]
			if ls == nil {
				ls = &labelStat{}
				st.byLabel[p.label] = ls
			}
			ls.d += d
			ls.n++
		}
		if lru != nil {
			for _, p := range pkts[lo:hi] {
				d := runRepeat(tb, lru, p.data, 1)
				st.lru += d
				st.byLabel[p.label].lru += d
			}
		}
		for _, p := range pkts[lo:hi] {
			st.empty += runRepeat(tb, empty, p.data, 1)
		}
		st.floor += runRepeat(tb, empty, pkts[lo].data, floorRepeat)
		st.floorN += floorRepeat
		st.n += hi - lo
	}
}

func nsPer(d time.Duration, n int) float64 { return float64(d.Nanoseconds()) / float64(n) }

// seqResult is what report computes.
type seqResult struct {
	ns, lru, empty, floor, overhead, net, lruNet float64
}

// report publishes the seq metrics (see the file comment) and returns them.
func (st *seqStats) report(b *testing.B) seqResult {
	r := seqResult{ns: nsPer(st.prog, st.n), empty: nsPer(st.empty, st.n), floor: nsPer(st.floor, st.floorN)}
	r.overhead = r.empty - r.floor
	r.net = r.ns - r.overhead
	b.ReportMetric(r.ns, "ns/pkt")
	if st.lru > 0 {
		r.lru = nsPer(st.lru, st.n)
		r.lruNet = r.lru - r.overhead
		b.ReportMetric(r.lru, "lru-ns/pkt")
		b.ReportMetric(r.ns/r.lru, "x-lru")
		b.ReportMetric(r.net/r.lruNet, "x-lru-net")
	}
	b.ReportMetric(r.empty, "empty-ns/pkt")
	b.ReportMetric(r.ns/r.empty, "x-empty")
	b.ReportMetric(r.floor, "floor-ns")
	b.ReportMetric(r.net, "net-ns/pkt")
	b.ReportMetric(r.net/r.floor, "x-empty-net")
	b.ReportMetric(1000/r.net, "Mpps/core")
	b.ReportMetric(100*1000/r.net/lineRate10G, "%10G")
	if st.n < 1000 {
		return r // Go's b.N=1 probe round: no profile
	}
	labels := make([]string, 0, len(st.byLabel))
	for l := range st.byLabel {
		labels = append(labels, l)
	}
	sort.Strings(labels)
	var sb strings.Builder
	fmt.Fprintf(&sb, "per role (repeat=1 kernel ns net of the %.1f ns call overhead; share of the program's time):\n", r.overhead)
	for _, l := range labels {
		ls := st.byLabel[l]
		m := nsPer(ls.d, ls.n) - r.overhead
		fmt.Fprintf(&sb, "  %-10s n=%-7d net %7.1f  x-floor %5.1f  share %4.1f%%", l, ls.n, m, m/r.floor,
			100*float64(ls.d)/float64(st.prog))
		if st.lru > 0 {
			lm := nsPer(ls.lru, ls.n) - r.overhead
			fmt.Fprintf(&sb, "  lru net %7.1f  x-lru-net %5.2f", lm, m/lm)
		}
		sb.WriteByte('\n')
	}
	profiles[b.Name()] = sb.String()
	return r
}

// profiles are the rows' per-role tables, printed after the rows (Go keeps
// only ten lines of a benchmark's log).
var profiles = map[string]string{}

// repStats accumulates per-run means of identical packets.
type repStats struct {
	prog, empty time.Duration
	n           int
}

// runRep runs each packet `per` times through prog, then through empty.
func (st *repStats) runRep(b *testing.B, prog, empty *ebpf.Program, pkts [][]byte, total int) {
	per := max(total/len(pkts), 1)
	for done := 0; done < total; {
		for _, p := range pkts {
			r := min(per, 1<<20, max(total-done, 1))
			st.prog += runRepeat(b, prog, p, r)
			st.empty += runRepeat(b, empty, p, r)
			st.n += r
			done += r
			if done >= total {
				break
			}
		}
	}
}

func (st *repStats) report(b *testing.B) float64 {
	ns := nsPer(st.prog, st.n)
	empty := nsPer(st.empty, st.n)
	b.ReportMetric(ns, "ns/pkt")
	b.ReportMetric(empty, "empty-ns/pkt")
	b.ReportMetric(ns/empty, "x-empty")
	b.ReportMetric(1000/ns, "Mpps/core")
	b.ReportMetric(100*1000/ns/lineRate10G, "%10G")
	return ns / empty
}

// ---------------------------------------------------------------------------
// Ratios against the targets (issue 11), collected from the rows and
// printed together at the end of BenchmarkXDP.

type ratio struct {
	row, measure string
	value        float64
	target       float64
}

var ratios = map[string]ratio{}

func setRatio(row, measure string, v, target float64) {
	ratios[row+" "+measure] = ratio{row, measure, v, target}
}

func ratioTable() string {
	keys := make([]string, 0, len(ratios))
	for k := range ratios {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	sb.WriteString("ratios measured in this run (targets: issue 11):\n")
	for _, k := range keys {
		r := ratios[k]
		verdict := "met"
		if r.value > r.target {
			verdict = "MISSED"
		}
		fmt.Fprintf(&sb, "  %-24s %-26s %6.2f   target <= %.1f: %s\n", r.row, r.measure, r.value, r.target, verdict)
	}
	return sb.String()
}

// ---------------------------------------------------------------------------
// Fixtures: loaded and filled once per row, kept across Go's b.N=1 probe
// round and the measured round (filling 2^21 sources takes seconds), closed
// at the end of BenchmarkXDP.

type closers []interface{ Close() error }

func (c closers) Close() error {
	var errs []error
	for i := len(c) - 1; i >= 0; i-- {
		errs = append(errs, c[i].Close())
	}
	return errors.Join(errs...)
}

var fixtures = map[string]any{}

func fixture[T interface{ Close() error }](name string, build func() T) T {
	if f, ok := fixtures[name]; ok {
		return f.(T)
	}
	f := build()
	fixtures[name] = f
	return f
}

func closeFixtures() {
	for name, f := range fixtures {
		f.(interface{ Close() error }).Close()
		delete(fixtures, name)
	}
}

// loadEmpty is newEmpty closed with the benchmark run.
func loadEmpty(b *testing.B) *ebpf.Program {
	p := newEmpty(b)
	b.Cleanup(func() { p.Close() })
	return p
}

// trio is knockwatch, the LRU reference of its pending tier's capacity and
// the empty program, each behind a feeder of the same flood mode, filled by
// fillFactor x PairSlots sources of that flood (numbered from fillBase).
type trio struct {
	closers
	s                          *Sensor
	lru                        *lruRef
	empty                      *ebpf.Program
	kwFeed, lruFeed, emptyFeed *feeder
	mode                       uint32
	// next is the number of the timed flood's next packet.
	next uint64
}

func newTrio(b *testing.B, mode uint32, mutate func(*sensor.Config)) *trio {
	b.Helper()
	t := &trio{mode: mode}
	t.s = newLiveSensor(b, mutate)
	t.closers = append(t.closers, t.s)
	t.lru = loadLRURef(b, t.s.Config().PairSlots)
	t.closers = append(t.closers, t.lru)
	t.empty = newEmpty(b)
	t.closers = append(t.closers, t.empty)
	t.kwFeed = loadFeeder(b, t.s.Program(), mode)
	t.lruFeed = loadFeeder(b, t.lru.Program(), mode)
	t.emptyFeed = loadFeeder(b, t.empty, mode)
	t.closers = append(t.closers, t.kwFeed, t.lruFeed, t.emptyFeed)
	warmMaps(b, t.s)
	// Fill both tables with an earlier flood of other sources.
	sources := fillFactor * int(t.s.Config().PairSlots)
	first, n := uint64(fillBase), sources
	if mode == feedREJ {
		first, n = 2*fillBase, 2*sources
	}
	for _, f := range []*feeder{t.kwFeed, t.lruFeed} {
		if err := f.seek(first); err != nil {
			b.Fatal(err)
		}
		f.fill(b, n)
	}
	// The reference is full: its first filling pair was evicted, its last
	// is there.
	if _, ok, err := t.lru.lookup(floodSrc(fillBase), benchVictim); err != nil || ok {
		b.Fatalf("LRU reference not filled past capacity (first pair still there: %v, %v)", ok, err)
	}
	if _, ok, err := t.lru.lookup(floodSrc(fillBase+uint32(sources)-1), benchVictim); err != nil || !ok {
		b.Fatalf("LRU reference lost its newest pair (%v)", err)
	}
	c := counters(b, t.s)
	b.Logf("filled by %d sources: knockwatch pending_evicted %d, slot_takeover %d, pair_full %d",
		sources, c["pending_evicted"], c["slot_takeover"], c["pair_full"])
	resetCounters(b, t.s)
	return t
}

// warmMaps writes every entry of the sensor's tables once (zeros: they
// stay empty). On this VM the first write to a page of a new map costs
// about 5 µs (the host backs guest memory lazily), which a running sensor
// paid long ago and the LRU reference pays while it is filled; without
// this, a knock mix's first use of each candidate bucket measures the host.
func warmMaps(tb testing.TB, s *Sensor) {
	tb.Helper()
	for _, m := range []*ebpf.Map{s.objs.Pairs, s.objs.Cands, s.objs.PortSlots, s.objs.Watches} {
		const chunk = 4096
		n := int(m.MaxEntries())
		keys := make([]uint32, min(chunk, n))
		// A slice of zero values of the map's value size.
		vals := reflect.MakeSlice(reflect.SliceOf(reflect.ArrayOf(int(m.ValueSize()), reflect.TypeFor[byte]())), len(keys), len(keys))
		for lo := 0; lo < n; lo += chunk {
			k := keys[:min(chunk, n-lo)]
			for i := range k {
				k[i] = uint32(lo + i)
			}
			if _, err := m.BatchUpdate(k, vals.Slice(0, len(k)).Interface(), nil); err != nil {
				tb.Fatalf("warm %v: %v", m, err)
			}
		}
	}
}

// align makes the timed flood go on with a SYN: a round that ended after a
// REJ flood's SYN leaves that SYN unanswered.
func (t *trio) align() {
	if t.mode == feedREJ && t.next&1 == 1 {
		t.next++
	}
}

// seekAll makes packet n the next of every feeder.
func (t *trio) seekAll(b *testing.B, n uint64) {
	for _, f := range []*feeder{t.kwFeed, t.lruFeed, t.emptyFeed} {
		if err := f.seek(n); err != nil {
			b.Fatal(err)
		}
	}
}

// checkFlood holds knockwatch to the flood's path: every SYN a new pair
// taking an entry over, every RST its SYN's REJ, no candidate, no flag.
func (t *trio) checkFlood(b *testing.B, packets int) sensor.Counters {
	c := counters(b, t.s)
	syns, rsts := uint64(packets), uint64(0)
	if t.mode == feedREJ {
		syns, rsts = uint64(packets+1)/2, uint64(packets)/2
	}
	few := syns/1000 + 1
	if c["syn"] < syns || c["candidates"] > few || c["flags"] != 0 || c["bad_csum"] != 0 ||
		c["touch_rej"] < rsts || c["touch_s0"] > few {
		b.Fatalf("flood took an unexpected path (%d SYNs, %d RSTs): %v", syns, rsts, c)
	}
	if syns > 0 {
		b.ReportMetric(float64(c["slot_takeover"])/float64(syns), "takeover/syn")
		b.ReportMetric(float64(c["pending_evicted"])/float64(syns), "evicted/syn")
	}
	return c
}

// ---------------------------------------------------------------------------
// Benchmarks.

// BenchmarkXDP measures the program per scenario against the empty program
// and the LRU reference in the same run. b.N is the number of packets.
func BenchmarkXDP(b *testing.B) {
	defer closeFixtures()
	clear(ratios)
	clear(profiles)
	b.Run("empty", func(b *testing.B) {
		// The floor itself, both ways: the per-run mean (repeat) and the
		// repeat=1 cost that the seq rows pay per packet.
		empty := loadEmpty(b)
		pkts := benignPackets()
		b.ResetTimer()
		var rep, one time.Duration
		var nRep, nOne int
		for done := 0; done < b.N; {
			r := min(floorRepeat, b.N-done)
			rep += runRepeat(b, empty, pkts[done%len(pkts)], r)
			nRep += r
			done += r
			for i := 0; i < min(r, benchChunk); i++ {
				one += runRepeat(b, empty, pkts[i%len(pkts)], 1)
				nOne++
			}
		}
		b.StopTimer()
		floor := nsPer(rep, nRep)
		b.ReportMetric(floor, "ns/pkt")
		b.ReportMetric(1, "x-empty")
		b.ReportMetric(nsPer(one, nOne), "repeat1-ns/pkt")
		b.ReportMetric(nsPer(one, nOne)-floor, "call-overhead-ns")
		b.ReportMetric(1000/floor, "Mpps/core")
		b.ReportMetric(100*1000/floor/lineRate10G, "%10G")
	})

	b.Run("benign", func(b *testing.B) {
		s := loadLive(b, nil)
		empty := loadEmpty(b)
		pkts := benignPackets()
		var st repStats
		b.ResetTimer()
		st.runRep(b, s.Program(), empty, pkts, b.N)
		b.StopTimer()
		setRatio("benign", "x-empty (repeat)", st.report(b), 1.5)
		// What the parse alone costs: the LRU reference parses with the
		// same parser and does nothing else with these packets.
		ref := loadLRURef(b, 1024)
		b.Cleanup(func() { ref.Close() })
		var pst repStats
		pst.runRep(b, ref.Program(), empty, pkts, b.N)
		b.ReportMetric(nsPer(pst.prog, pst.n), "parse-only-ns/pkt")
		b.ReportMetric(nsPer(pst.prog, pst.n)/nsPer(pst.empty, pst.n), "parse-only-x-empty")
		c := counters(b, s)
		if c["tcp"] < uint64(b.N) || c["syn"]+c["rst"] != 0 || (b.N >= 1000 && (c["vlan"] == 0 || c["ipv6"] == 0)) {
			b.Fatalf("benign packets took an unexpected path: %v", c)
		}
	})

	b.Run("benign-armed", func(b *testing.B) {
		// One unrelated pair has knocked (three REJ touches) and its
		// handshake is in flight (SYN and SYN-ACK seen, ACK not yet):
		// every ACK now looks for its watch.
		s := loadLive(b, func(c *sensor.Config) { c.HandshakeTimeout = 30 * time.Minute })
		empty := loadEmpty(b)
		arm := armPackets()
		for _, p := range arm[:len(arm)-1] {
			runRepeat(b, s.Program(), p.data, 1)
		}
		c := counters(b, s)
		if c["flags"] != 1 || c["watch_started"] == 0 || c["port_open"] != 1 {
			b.Fatalf("arming failed: %v", c)
		}
		pkts := benignPackets()
		var st repStats
		b.ResetTimer()
		st.runRep(b, s.Program(), empty, pkts, b.N)
		b.StopTimer()
		st.report(b)
		// Still armed at the end: the last ACK completes the watched
		// handshake and reports it.
		runRepeat(b, s.Program(), arm[len(arm)-1].data, 1)
		if c := counters(b, s); c["handshakes"] != 1 {
			b.Fatalf("the watch was not armed through the benchmark: %v", c)
		}
	})

	b.Run("knock-mix", func(b *testing.B) { benchKnockMix(b, false) })
	b.Run("knock-mix-batched", func(b *testing.B) { benchKnockMix(b, true) })

	for _, mode := range []uint32{feedREJ, feedS0} {
		name := "syn-flood-rst"
		if mode == feedS0 {
			name = "syn-flood-s0"
		}
		b.Run(name, func(b *testing.B) {
			// Every SYN a new random source, aimed at one host on a random
			// port (with feedREJ followed by the host's RST|ACK), one
			// packet per syscall, after the tables were filled.
			t := fixture(name, func() *trio { return newTrio(b, mode, nil) })
			t.align()
			pkts := floodPackets(t.next, b.N, mode)
			t.next += uint64(b.N)
			resetCounters(b, t.s)
			var st seqStats
			b.ResetTimer()
			st.runSeq(b, t.s.Program(), t.lru.Program(), t.empty, pkts)
			b.StopTimer()
			r := st.report(b)
			t.checkFlood(b, b.N)
			setRatio(name, "x-lru (seq)", r.ns/r.lru, 0.5)
			setRatio(name, "x-lru-net (seq)", r.net/r.lruNet, 0.5)
		})
		b.Run(name+"-batched", func(b *testing.B) {
			// The same flood, going on from where the row above left it,
			// without a syscall per packet (bpf/bench/feed.c).
			t := fixture(name, func() *trio { return newTrio(b, mode, nil) })
			t.align()
			t.seekAll(b, t.next)
			resetCounters(b, t.s)
			var prog, lru, empty int64
			b.ResetTimer()
			for done := 0; done < b.N; {
				r := min(batchRepeat, b.N-done)
				prog += t.kwFeed.run(b, r)
				lru += t.lruFeed.run(b, r)
				empty += t.emptyFeed.run(b, r)
				done += r
			}
			b.StopTimer()
			t.next += uint64(b.N)
			ns, lns, ens := float64(prog)/float64(b.N), float64(lru)/float64(b.N), float64(empty)/float64(b.N)
			reportBatched(b, ns, lns, ens)
			// A signal restarts a batch: the feeder's count goes on, so
			// more packets than b.N may have run; all were new sources.
			n, err := t.kwFeed.pos()
			if err != nil {
				b.Fatal(err)
			}
			t.checkFlood(b, int(n-(t.next-uint64(b.N))))
			t.next = max(t.next, n)
			setRatio(name, "x-lru (batched)", ns/lns, 0.5)
			setRatio(name, "x-lru-extra (batched)", (ns-ens)/(lns-ens), 0.5)
		})
	}
	names := make([]string, 0, len(profiles))
	for n := range profiles {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Printf("%s %s", n, profiles[n])
	}
	fmt.Print(ratioTable())
}

// reportBatched publishes a batched row's metrics: ns per packet of the
// program, the reference and the floor (the feeder tail-calling the empty
// program), all three including the feeder and its tail call.
func reportBatched(b *testing.B, ns, lns, ens float64) {
	b.ReportMetric(ns, "ns/pkt")
	b.ReportMetric(lns, "lru-ns/pkt")
	b.ReportMetric(ns/lns, "x-lru")
	b.ReportMetric(ens, "empty-ns/pkt")
	b.ReportMetric(ns/ens, "x-empty")
	b.ReportMetric(ns-ens, "extra-ns")
	b.ReportMetric(lns-ens, "lru-extra-ns")
	b.ReportMetric((ns-ens)/(lns-ens), "x-lru-extra")
	b.ReportMetric(1000/ns, "Mpps/core")
	b.ReportMetric(100*1000/ns/lineRate10G, "%10G")
}

// mixFix is the knock mix's fixture: a trio whose filling flood was S0,
// with an S0 timeout short enough for the mix's unanswered SYNs, and the
// sensor's ring buffer drained between passes.
type mixFix struct {
	*trio
	rd   *Reader
	next uint32 // the next knocking source
}

func (m *mixFix) Close() error { return errors.Join(m.rd.Close(), m.trio.Close()) }

// warmRing writes the whole ring buffer once, for the reason warmMaps
// writes the tables: knocks of three REJ touches from other sources, each
// a KNOCK record, drained as they come. Then the candidates and watches
// they made are wiped, so the timed mix finds the tiers as the fill left
// them.
func (m *mixFix) warmRing(b *testing.B) {
	b.Helper()
	knocks := int(m.s.Config().RingBytes)/binary.Size(knockwatchKnockRec{}) + 64
	var got uint64
	for k := 0; k < knocks; k++ {
		src := floodSrc(0x60000000 + uint32(k))
		for j, port := range []uint16{7100, 7200, 7300} {
			seq := uint32(k)<<8 | uint32(j)
			syn := pkt.TCP{Src: src, Dst: benchVictim, SPort: uint16(30000 + j), DPort: port, Seq: seq, Flags: pkt.SYN}
			r := pkt.TCP{Src: benchVictim, Dst: src, SPort: port, DPort: uint16(30000 + j), Ack: seq + 1, Flags: pkt.RST | pkt.ACK}
			runRepeat(b, m.s.Program(), syn.Bytes(), 1)
			runRepeat(b, m.s.Program(), r.Bytes(), 1)
		}
		if k%1024 == 1023 {
			got += drainRing(b, m.rd)
		}
	}
	got += drainRing(b, m.rd)
	if c := counters(b, m.s); got < uint64(knocks) || c["ringbuf_full"] != 0 {
		b.Fatalf("ring warm-up: %d of %d KNOCK records: %v", got, knocks, c)
	}
	warmMaps(b, m.s)
	resetCounters(b, m.s)
}

// coarseNow reads CLOCK_MONOTONIC_COARSE, the clock the program stamps SYNs
// with (bpf_ktime_get_coarse_ns).
func coarseNow(tb testing.TB) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts); err != nil {
		tb.Fatalf("read the coarse clock: %v", err)
	}
	return time.Duration(ts.Nano())
}

// benchKnockMix: passes of mixSources new sources each: 3-5 REJ/S0 touches
// then a handshake, 64 sources interleaved, through knockwatch, the LRU
// reference and the empty program, one packet per syscall, after the
// tables were filled by a flood. An S0 touch is decided by the source's
// next SYN once the S0 timeout (1 µs) has passed on the coarse clock, which
// moves once per scheduler tick: a step holding such a SYN waits (timer
// stopped, untimed) until the tick after the unanswered SYN's step.
func benchKnockMix(b *testing.B, batched bool) {
	m := fixture("knock-mix", func() *mixFix {
		t := newTrio(b, feedS0, func(c *sensor.Config) { c.S0Timeout = time.Microsecond })
		rd, err := t.s.NewReader()
		if err != nil {
			t.Close()
			b.Fatal(err)
		}
		m := &mixFix{trio: t, rd: rd}
		m.warmRing(b)
		return m
	})
	resetCounters(b, m.s)
	var st seqStats
	var bat struct{ prog, lru, empty int64 } // batched kernel time
	feeders := []*feeder{m.kwFeed, m.lruFeed, m.emptyFeed}
	var recs uint64
	full, left := 0, b.N
	var lastS0 time.Duration // coarse time after the last step with an unanswered SYN
	b.ResetTimer()
	for left > 0 {
		steps, rej, s0 := knockPass(m.next)
		m.next += mixSources
		b.StopTimer()
		before := counters(b, m.s)
		if batched {
			var all []labeled
			for _, step := range steps {
				all = append(all, step...)
			}
			for _, f := range feeders {
				f.setFrames(b, all)
			}
		}
		b.StartTimer()
		ran, at := 0, 0 // steps run whole; the first frame of the step
		for _, step := range steps {
			if len(step) > left {
				step = step[:left]
			}
			wait, unanswered := false, false
			for _, p := range step {
				wait = wait || p.afterS0
				unanswered = unanswered || p.s0
			}
			if wait {
				b.StopTimer()
				for coarseNow(b) <= lastS0 {
					time.Sleep(time.Millisecond)
				}
				b.StartTimer()
			}
			if batched {
				for i, f := range feeders {
					if err := f.seek(uint64(at)); err != nil {
						b.Fatal(err)
					}
					d := f.runList(b, len(step))
					switch i {
					case 0:
						bat.prog += d
					case 1:
						bat.lru += d
					default:
						bat.empty += d
					}
				}
				at += len(step)
				st.n += len(step)
			} else {
				st.runSeq(b, m.s.Program(), m.lru.Program(), m.empty, step)
			}
			if unanswered {
				lastS0 = coarseNow(b)
			}
			left -= len(step)
			if len(step) == len(steps[ran]) {
				ran++
			}
			if left == 0 {
				break
			}
		}
		b.StopTimer()
		n := drainRing(b, m.rd)
		if ran == len(steps) {
			// Every source must have knocked and shaken hands, every
			// touch counted.
			c := counters(b, m.s)
			d := func(k string) float64 { return float64(c[k] - before[k]) }
			if d("flags") < 0.99*mixSources || d("handshakes") < 0.99*mixSources ||
				d("touch_rej") < 0.99*float64(rej) || d("touch_s0") < 0.99*float64(s0) {
				b.Fatalf("a pass took an unexpected path (%d sources, %d REJ, %d S0): %v", mixSources, rej, s0, c)
			}
			full++
			recs += n
		}
		b.StartTimer()
	}
	b.StopTimer()
	if batched {
		ns, lns, ens := float64(bat.prog)/float64(st.n), float64(bat.lru)/float64(st.n), float64(bat.empty)/float64(st.n)
		reportBatched(b, ns, lns, ens)
		setRatio("knock-mix", "x-lru (batched)", ns/lns, 1.0)
		setRatio("knock-mix", "x-lru-extra (batched)", (ns-ens)/(lns-ens), 1.0)
	} else {
		r := st.report(b)
		setRatio("knock-mix", "x-lru (seq)", r.ns/r.lru, 1.0)
		setRatio("knock-mix", "x-lru-net (seq)", r.net/r.lruNet, 1.0)
	}
	if full > 0 {
		b.ReportMetric(float64(recs)/float64(full*mixSources), "records/src")
	}
	if c := counters(b, m.s); c["ringbuf_full"] != 0 || c["map_insert_fail"] != 0 {
		b.Fatalf("records lost: %v", c)
	}
}

// drainRing reads every record already in the ring buffer.
func drainRing(b *testing.B, rd *Reader) uint64 {
	var n uint64
	rd.SetDeadline(time.Now().Add(time.Millisecond))
	for {
		_, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return n
		}
		if err != nil {
			b.Fatalf("read records: %v", err)
		}
		n++
	}
}

// BenchmarkGoDecode decodes the same packets in userspace Go with gopacket's
// DecodingLayerParser (Ethernet, Dot1Q, IPv4, IPv6, TCP) and reads the
// fields the XDP program needs. Parsing only: no state, and no cost of
// getting the packet to userspace (AF_PACKET copy, syscalls) - a lower
// bound for a userspace sensor. x-empty divides by the empty XDP program's
// per-run mean measured in the same benchmark.
func BenchmarkGoDecode(b *testing.B) {
	sets := []struct {
		name string
		pkts func() [][]byte
	}{
		{"benign", benignPackets},
		{"knock-mix", func() [][]byte {
			steps, _, _ := knockPass(0)
			var out [][]byte
			for _, st := range steps {
				out = append(out, datas(st)...)
			}
			return out
		}},
		{"syn-flood-rst", func() [][]byte { return datas(floodPackets(0, 4096, feedREJ)) }},
	}
	for _, set := range sets {
		b.Run(set.name, func(b *testing.B) {
			empty := loadEmpty(b)
			pkts := set.pkts()
			var (
				eth   layers.Ethernet
				dot1q layers.Dot1Q
				ip4   layers.IPv4
				ip6   layers.IPv6
				tcp   layers.TCP
			)
			parser := gopacket.NewDecodingLayerParser(layers.LayerTypeEthernet, &eth, &dot1q, &ip4, &ip6, &tcp)
			parser.IgnoreUnsupported = true
			decoded := make([]gopacket.LayerType, 0, 8)
			var sink uint64
			// Like the kernel's timer, which stops while the test run
			// is rescheduled, count this thread's CPU time only: the
			// machine is shared and wall time includes waiting for a CPU.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu0 := threadCPU(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := parser.DecodeLayers(pkts[i%len(pkts)], &decoded); err != nil {
					b.Fatalf("decode: %v", err)
				}
				for _, lt := range decoded {
					switch lt {
					case layers.LayerTypeIPv4:
						sink += uint64(ip4.SrcIP[3]) + uint64(ip4.DstIP[3])
					case layers.LayerTypeIPv6:
						sink += uint64(ip6.SrcIP[15]) + uint64(ip6.DstIP[15])
					case layers.LayerTypeTCP:
						sink += uint64(tcp.SrcPort) + uint64(tcp.DstPort) + uint64(tcp.Seq) + uint64(tcp.Ack)
						if tcp.SYN {
							sink++
						}
					}
				}
			}
			b.StopTimer()
			ns := nsPer(threadCPU(b)-cpu0, b.N)
			floor := nsPer(runRepeat(b, empty, pkts[0], 1<<20), 1<<20)
			b.ReportMetric(ns, "ns/pkt")
			b.ReportMetric(ns/floor, "x-empty")
			b.ReportMetric(1000/ns, "Mpps/core")
			b.ReportMetric(100*1000/ns/lineRate10G, "%10G")
			if sink == 0 {
				b.Fatal("nothing decoded")
			}
		})
	}
}

// threadCPU is the calling thread's CPU time.
func threadCPU(b *testing.B) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatalf("read thread CPU time: %v", err)
	}
	return time.Duration(ts.Nano())
}

func datas(l []labeled) [][]byte {
	out := make([][]byte, len(l))
	for i, p := range l {
		out[i] = p.data
	}
	return out
}

// BenchmarkXDPProfile splits the cost of the flood and mix rows (see "Where
// the time goes" in docs/benchmarks/xdp.md): the kernel services a packet
// may pay, the same SYN repeated (everything hot), and the floods with
// tables small enough to stay in cache.
func BenchmarkXDPProfile(b *testing.B) {
	for _, h := range []struct {
		name string
		fn   asm.BuiltinFunc
	}{{"helper-ktime-ns", asm.FnKtimeGetNs}, {"helper-ktime-coarse", asm.FnKtimeGetCoarseNs}} {
		b.Run(h.name, func(b *testing.B) {
			prog := loadAsm(b, asm.Instructions{h.fn.Call(), asm.Mov.Imm(asm.R0, sensor.XDPDrop), asm.Return()})
			repeatVsEmpty(b, prog)
		})
	}
	b.Run("helper-spin-lock-unlock", func(b *testing.B) {
		testenv.RequirePrivileged(b)
		u32 := &btf.Int{Name: "u32", Size: 4}
		lock := &btf.Struct{Name: "bpf_spin_lock", Size: 4, Members: []btf.Member{{Name: "val", Type: u32}}}
		val := &btf.Struct{Name: "kw_locked", Size: 8, Members: []btf.Member{
			{Name: "lock", Type: lock}, {Name: "x", Type: u32, Offset: 32}}}
		m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "kw_lockbench", Type: ebpf.Array, KeySize: 4, ValueSize: 8,
			MaxEntries: 1, Key: u32, Value: val})
		if err != nil {
			b.Fatalf("create map: %v", err)
		}
		defer m.Close()
		prog := loadAsm(b, asm.Instructions{
			asm.StoreImm(asm.R10, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.Mov.Reg(asm.R6, asm.R0),
			asm.Mov.Reg(asm.R1, asm.R0),
			asm.FnSpinLock.Call(),
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.FnSpinUnlock.Call(),
			asm.Mov.Imm(asm.R0, sensor.XDPDrop).WithSymbol("out"),
			asm.Return(),
		})
		repeatVsEmpty(b, prog)
	})
	b.Run("syn-same-repeat", func(b *testing.B) {
		s := loadLive(b, nil)
		empty := loadEmpty(b)
		syn := floodFrame(0, feedS0)
		var st repStats
		b.ResetTimer()
		st.runRep(b, s.Program(), empty, [][]byte{syn}, b.N)
		b.StopTimer()
		st.report(b)
	})
	b.Run("cand-syn-same-repeat", func(b *testing.B) {
		// The same for a candidate's SYN (a pair with two ports): the
		// instructions of the candidate path, everything hot. Set
		// against the knock mix's per-role figures, the difference is
		// what cold memory costs there.
		s := loadLive(b, nil)
		empty := loadEmpty(b)
		src := floodSrc(77)
		first := pkt.TCP{Src: src, Dst: benchVictim, SPort: 30000, DPort: 7000, Seq: 1, Flags: pkt.SYN}.Bytes()
		syn := pkt.TCP{Src: src, Dst: benchVictim, SPort: 30001, DPort: 8000, Seq: 2, Flags: pkt.SYN}.Bytes()
		runRepeat(b, s.Program(), first, 1)
		runRepeat(b, s.Program(), syn, 1)
		if c := counters(b, s); c["candidates"] != 1 {
			b.Fatalf("no candidate: %v", c)
		}
		var st repStats
		b.ResetTimer()
		st.runRep(b, s.Program(), empty, [][]byte{syn}, b.N)
		b.StopTimer()
		st.report(b)
	})
	for _, tc := range []struct {
		name  string
		pairs uint32
		mode  uint32
	}{
		{"syn-flood-s0-small-tables", 1 << 10, feedS0},
		{"syn-flood-rst-small-tables", 1 << 10, feedREJ},
	} {
		b.Run(tc.name, func(b *testing.B) {
			// Pair buckets, port slots and the reference all fit in
			// cache: what is left is instructions.
			t := newTrio(b, tc.mode, func(c *sensor.Config) { c.PairSlots, c.PortSlots = tc.pairs, tc.pairs })
			defer t.Close()
			t.seekAll(b, 0)
			var prog, lru, empty int64
			b.ResetTimer()
			for done := 0; done < b.N; {
				r := min(batchRepeat, b.N-done)
				prog += t.kwFeed.run(b, r)
				lru += t.lruFeed.run(b, r)
				empty += t.emptyFeed.run(b, r)
				done += r
			}
			b.StopTimer()
			ns, lns, ens := float64(prog)/float64(b.N), float64(lru)/float64(b.N), float64(empty)/float64(b.N)
			b.ReportMetric(ns, "ns/pkt")
			b.ReportMetric(lns, "lru-ns/pkt")
			b.ReportMetric(ns/lns, "x-lru")
			b.ReportMetric(ns-ens, "extra-ns")
			b.ReportMetric(lns-ens, "lru-extra-ns")
		})
	}
}

// loadAsm loads a small XDP program for the helper probes.
func loadAsm(b *testing.B, insns asm.Instructions) *ebpf.Program {
	b.Helper()
	testenv.RequirePrivileged(b)
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "kw_probe", Type: ebpf.XDP, AttachType: ebpf.AttachXDP, Instructions: insns, License: "GPL"})
	if err != nil {
		b.Fatalf("load probe program: %+v", err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// repeatVsEmpty reports prog's per-run mean against the empty program's on
// a benign packet; "extra-ns" is the difference.
func repeatVsEmpty(b *testing.B, prog *ebpf.Program) {
	empty := loadEmpty(b)
	var st repStats
	b.ResetTimer()
	st.runRep(b, prog, empty, benignPackets()[:1], b.N)
	b.StopTimer()
	st.report(b)
	b.ReportMetric(nsPer(st.prog-st.empty, st.n), "extra-ns")
}
