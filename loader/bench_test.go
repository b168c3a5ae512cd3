package loader

// Benchmarks of the XDP program over BPF_PROG_RUN (see
// docs/benchmarks/xdp.md for the table and what every figure means).
//
// Every figure is the kernel's own measurement (the duration
// BPF_PROG_TEST_RUN returns), not Go's wall clock, which is dominated by the
// syscall. The sensor is loaded in live mode (time from
// bpf_ktime_get_tai_ns): Program.Benchmark passes no XDP context, so a
// replay-mode sensor would only count "no_meta" and leave.
//
// Two ways of running, stated per row:
//   - repeat: identical packets (benign traffic, the empty program) run
//     `repeat` times in one syscall; the kernel returns the per-run mean.
//   - seq: sequences of distinct packets (knock mix, floods) run one packet
//     per syscall (repeat=1). The kernel's duration then includes a fixed
//     per-call overhead (two clock reads, bh disable/enable, run-context
//     setup) that the repeat figures amortize away. The empty program is run
//     the same way over the same packets, interleaved chunk by chunk, so
//     "x-empty" compares like with like; "net-ns/pkt" subtracts that
//     overhead (empty at repeat=1 minus empty per-run mean) and
//     "x-empty-net" divides by the empty per-run mean, which puts the
//     sequences on the same footing as the repeat rows.
//
// Run: go test -run '^$' -bench . -benchtime 50000x ./loader/

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
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
	// benchChunk is how many packets run before the empty program runs the
	// same ones (interleaving keeps both under the same machine noise).
	benchChunk = 256
	// floorRepeat is the repeat count of the empty program's per-run mean
	// (its fixed per-call overhead, ~100 ns, is then ~0.1 ns per run).
	floorRepeat = 1024
	// mixSources is how many sources knock per pass of the knock mix; the
	// candidate, flagged and watch maps are emptied between passes.
	mixSources = 1024
	// mixGroup sources are interleaved packet by packet.
	mixGroup = 64
)

var (
	benchVictim = netip.MustParseAddr("10.20.0.5")
	benchSeed   = uint32(0x9e3779b9)
)

// loadLive loads a fresh live-mode sensor with the default (production)
// sizes and a fixed hash seed.
func loadLive(b *testing.B, mutate func(*sensor.Config)) *Sensor {
	b.Helper()
	testenv.RequirePrivileged(b)
	cfg := sensor.DefaultConfig()
	cfg.HashSeed = benchSeed
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := Load(cfg, Options{})
	if err != nil {
		b.Fatalf("load: %+v", err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// loadEmpty loads the floor: `r0 = XDP_DROP; exit`, the same verdict as
// knockwatch's default.
func loadEmpty(b *testing.B) *ebpf.Program {
	b.Helper()
	testenv.RequirePrivileged(b)
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:       "kw_empty",
		Type:       ebpf.XDP,
		AttachType: ebpf.AttachXDP,
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, sensor.XDPDrop),
			asm.Return(),
		},
		License: "MIT",
	})
	if err != nil {
		b.Fatalf("load empty XDP program: %v", err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// runRepeat runs data `repeat` times in the kernel and returns the total
// kernel time (per-run mean times repeat).
func runRepeat(b *testing.B, p *ebpf.Program, data []byte, repeat int) time.Duration {
	ret, d, err := p.Benchmark(data, repeat, nil)
	if err != nil {
		b.Fatalf("BPF_PROG_RUN: %v", err)
	}
	if ret != sensor.XDPDrop {
		b.Fatalf("verdict %d, want XDP_DROP", ret)
	}
	return d * time.Duration(repeat)
}

// counters reads the sensor's counters or fails the benchmark.
func counters(b *testing.B, s *Sensor) sensor.Counters {
	b.Helper()
	c, err := s.Counters()
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// ---------------------------------------------------------------------------
// Packets.

// addrN returns a distinct, random-looking IPv4 address for every n < 2^32
// (a bijective mix), avoiding 0.x and the victim's 10.x.
func addrN(n uint32) netip.Addr {
	x := n*0x2c1b3c6d + 0x297a2d39
	x ^= x >> 15
	x *= 0x297a2d39 | 1
	x ^= x >> 12
	v := [4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)}
	if v[0] == 0 || v[0] == 10 || v[0] >= 224 {
		v[0] ^= 0x80 // still distinct: only the top bit flips, for these ranges alone
	}
	return netip.AddrFrom4(v)
}

// benignPackets are ACK and data packets of established connections in
// both directions: IPv4, IPv4 with payload, IPv6, 802.1Q. No SYN, no RST.
func benignPackets() [][]byte {
	var out [][]byte
	for i := uint32(0); i < 4; i++ {
		cli := addrN(1000 + i)
		c := pkt.TCP{Src: cli, Dst: benchVictim, SPort: uint16(50000 + i), DPort: 443, Seq: 1000 * i, Ack: 7777, Flags: pkt.ACK}
		s := pkt.TCP{Src: benchVictim, Dst: cli, SPort: 443, DPort: uint16(50000 + i), Seq: 7777, Ack: 1000 * i, Flags: pkt.ACK | pkt.PSH, Payload: make([]byte, 512)}
		v6 := pkt.TCP{Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8:1::5"), SPort: uint16(50100 + i), DPort: 22, Seq: i, Ack: 9, Flags: pkt.ACK, TCPOptions: 12}
		vl := c
		vl.VLANs = []uint16{42}
		out = append(out, c.Bytes(), s.Bytes(), v6.Bytes(), vl.Bytes())
	}
	return out
}

// labeled is a packet with the role it plays, for the per-role profile.
type labeled struct {
	data  []byte
	label string
}

// floodPackets returns n packets of a random-source SYN flood against one
// host at random ports: every SYN from a new source; with rst, each SYN is
// followed by the host's RST|ACK answering it (a closed port, Zeek REJ).
// first numbers the sources so that consecutive calls never repeat one.
func floodPackets(n int, first uint32, rst bool) []labeled {
	out := make([]labeled, 0, n)
	for i := first; len(out) < n; i++ {
		src := addrN(i)
		sport := uint16(1024 + i%60000)
		dport := uint16(1 + (i*2654435761)>>16%65535)
		seq := i * 0x01000193
		syn := pkt.TCP{Src: src, Dst: benchVictim, SPort: sport, DPort: dport, Seq: seq, Flags: pkt.SYN}
		out = append(out, labeled{syn.Bytes(), "syn"})
		if rst && len(out) < n {
			r := pkt.TCP{Src: benchVictim, Dst: src, SPort: dport, DPort: sport, Ack: seq + 1, Flags: pkt.RST | pkt.ACK}
			out = append(out, labeled{r.Bytes(), "rst"})
		}
	}
	return out
}

// knockSource is the packet sequence of one knocking source: 3-5 closed-port
// touches (REJ = SYN then RST, S0 = an unanswered SYN that the source's next
// SYN ages), then a complete handshake to an open port.
func knockSource(i uint32) []labeled {
	src := addrN(0x40000000 + i)
	touches := 3 + int(i%3)
	var out []labeled
	for j := 0; j < touches; j++ {
		dport := uint16(7000 + 1000*j + int(i%997))
		sport := uint16(30000 + j)
		seq := i*7919 + uint32(j)<<20
		syn := pkt.TCP{Src: src, Dst: benchVictim, SPort: sport, DPort: dport, Seq: seq, Flags: pkt.SYN, TCPOptions: 12}
		// The label says which touch this is and what it completes;
		// an S0 touch is detected by the source's next SYN.
		out = append(out, labeled{syn.Bytes(), fmt.Sprintf("syn t%d", j+1)})
		if (int(i)+j)%3 == 0 {
			continue // S0: never answered
		}
		r := pkt.TCP{Src: benchVictim, Dst: src, SPort: dport, DPort: sport, Ack: seq + 1, Flags: pkt.RST | pkt.ACK}
		out = append(out, labeled{r.Bytes(), fmt.Sprintf("rst t%d", j+1)})
	}
	seq := i * 104729
	c := pkt.TCP{Src: src, Dst: benchVictim, SPort: 31000, DPort: 443, Seq: seq, Flags: pkt.SYN, TCPOptions: 12}
	sa := pkt.TCP{Src: benchVictim, Dst: src, SPort: 443, DPort: 31000, Seq: 0x5000, Ack: seq + 1, Flags: pkt.SYN | pkt.ACK, TCPOptions: 12}
	ack := pkt.TCP{Src: src, Dst: benchVictim, SPort: 31000, DPort: 443, Seq: seq + 1, Ack: 0x5001, Flags: pkt.ACK}
	out = append(out, labeled{c.Bytes(), "hs syn"}, labeled{sa.Bytes(), "hs synack"}, labeled{ack.Bytes(), "hs ack"})
	return out
}

// knockPass returns the packets of mixSources knocking sources starting at
// source number first, interleaved mixGroup at a time (source 0's first
// packet, source 1's first packet, ...), and the expected touch counts.
func knockPass(first uint32) (pkts []labeled, rej, s0 int) {
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
			more := false
			for _, s := range seqs {
				if step < len(s) {
					pkts = append(pkts, s[step])
					more = true
				}
			}
			if !more {
				break
			}
		}
	}
	return pkts, rej, s0
}

// ---------------------------------------------------------------------------
// Measurement.

// seqStats accumulates kernel time of repeat=1 runs.
type seqStats struct {
	prog, empty, floor time.Duration
	n, floorN          int
	byLabel            map[string]*labelStat
}

type labelStat struct {
	d time.Duration
	n int
}

// runSeq runs pkts through prog one per syscall, then the same chunk through
// the empty program, then the empty program's per-run mean; it adds the
// kernel durations to st.
func (st *seqStats) runSeq(b *testing.B, prog, empty *ebpf.Program, pkts []labeled) {
	if st.byLabel == nil {
		st.byLabel = map[string]*labelStat{}
	}
	for lo := 0; lo < len(pkts); lo += benchChunk {
		hi := min(lo+benchChunk, len(pkts))
		for _, p := range pkts[lo:hi] {
			d := runRepeat(b, prog, p.data, 1)
			st.prog += d
			ls := st.byLabel[p.label]
			if ls == nil {
				ls = &labelStat{}
				st.byLabel[p.label] = ls
			}
			ls.d += d
			ls.n++
		}
		for _, p := range pkts[lo:hi] {
			st.empty += runRepeat(b, empty, p.data, 1)
		}
		st.floor += runRepeat(b, empty, pkts[lo].data, floorRepeat)
		st.floorN += floorRepeat
		st.n += hi - lo
	}
}

func nsPer(d time.Duration, n int) float64 { return float64(d.Nanoseconds()) / float64(n) }

// report publishes the seq metrics (see the file comment).
func (st *seqStats) report(b *testing.B) {
	ns := nsPer(st.prog, st.n)
	empty := nsPer(st.empty, st.n)
	floor := nsPer(st.floor, st.floorN)
	overhead := empty - floor
	net := ns - overhead
	b.ReportMetric(ns, "ns/pkt")
	b.ReportMetric(empty, "empty-ns/pkt")
	b.ReportMetric(ns/empty, "x-empty")
	b.ReportMetric(floor, "floor-ns")
	b.ReportMetric(net, "net-ns/pkt")
	b.ReportMetric(net/floor, "x-empty-net")
	b.ReportMetric(1000/net, "Mpps/core")
	b.ReportMetric(100*1000/net/lineRate10G, "%10G")
	if st.n < 1000 {
		return // Go's b.N=1 probe round: no profile
	}
	labels := make([]string, 0, len(st.byLabel))
	for l := range st.byLabel {
		labels = append(labels, l)
	}
	sort.Strings(labels)
	var sb strings.Builder
	fmt.Fprintf(&sb, "per role (raw repeat=1 kernel ns; net = raw - %.1f ns call overhead; share of total time):\n", overhead)
	for _, l := range labels {
		ls := st.byLabel[l]
		m := nsPer(ls.d, ls.n)
		fmt.Fprintf(&sb, "  %-10s n=%-7d raw %7.1f  net %7.1f  x-floor %5.1f  share %4.1f%%\n",
			l, ls.n, m, m-overhead, (m-overhead)/floor, 100*float64(ls.d)/float64(st.prog))
	}
	b.Log(sb.String())
}

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

func (st *repStats) report(b *testing.B) {
	ns := nsPer(st.prog, st.n)
	empty := nsPer(st.empty, st.n)
	b.ReportMetric(ns, "ns/pkt")
	b.ReportMetric(empty, "empty-ns/pkt")
	b.ReportMetric(ns/empty, "x-empty")
	b.ReportMetric(1000/ns, "Mpps/core")
	b.ReportMetric(100*1000/ns/lineRate10G, "%10G")
}

// ---------------------------------------------------------------------------
// Benchmarks.

// BenchmarkXDP measures the program per scenario against the empty program
// in the same run. b.N is the number of packets.
func BenchmarkXDP(b *testing.B) {
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
		st.report(b)
		c := counters(b, s)
		if c["tcp"] < uint64(b.N) || c["syn"]+c["rst"] != 0 || (b.N >= 1000 && (c["vlan"] == 0 || c["ipv6"] == 0)) {
			b.Fatalf("benign packets took an unexpected path: %v", c)
		}
	})

	b.Run("benign-armed", func(b *testing.B) {
		// One unrelated pair has knocked and its handshake is in flight
		// (SYN and SYN-ACK seen, ACK not yet): every ACK now checks the
		// watch map.
		s := loadLive(b, func(c *sensor.Config) { c.HandshakeTimeout = time.Hour; c.S0Timeout = time.Microsecond })
		empty := loadEmpty(b)
		arm := knockSource(7) // 4 touches, then a handshake: keep its final ACK back
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

	b.Run("knock-mix", func(b *testing.B) {
		// Passes of mixSources new sources each: 3-5 REJ/S0 touches then
		// a handshake, 64 sources interleaved. Between passes (timer
		// stopped) the ring buffer is drained, as the sensor's reader
		// would, and the candidate/flagged/watch maps are emptied so every
		// pass sees the same occupancy whatever b.N is.
		s := loadLive(b, func(c *sensor.Config) { c.S0Timeout = time.Microsecond })
		empty := loadEmpty(b)
		rd, err := s.NewReader()
		if err != nil {
			b.Fatal(err)
		}
		defer rd.Close()
		type pass struct{ end, rej, s0 int }
		var pkts []labeled
		var passes []pass
		for src := uint32(0); len(pkts) < b.N; src += mixSources {
			p, r, z := knockPass(src)
			pkts = append(pkts, p...)
			passes = append(passes, pass{len(pkts), r, z})
		}
		var st seqStats
		var prev sensor.Counters
		var recs uint64
		full := 0
		b.ResetTimer()
		for i, lo := 0, 0; lo < b.N; i++ {
			hi := min(passes[i].end, b.N)
			st.runSeq(b, s.Program(), empty, pkts[lo:hi])
			lo = hi
			b.StopTimer()
			n := drainRing(b, rd)
			c := counters(b, s)
			if hi == passes[i].end {
				// A complete pass: every source must have knocked and
				// shaken hands. A few may share a pair slot (birthday
				// collisions in 2^18 slots) and lose a touch; more than
				// 1% would mean the benchmark misses the knock path.
				d := func(k string) float64 { return float64(c[k] - prev[k]) }
				if d("flags") < 0.99*mixSources || d("handshakes") < 0.99*mixSources ||
					d("touch_rej") < 0.99*float64(passes[i].rej) || d("touch_s0") < 0.99*float64(passes[i].s0) {
					b.Fatalf("pass %d took an unexpected path (%d sources, %d REJ, %d S0): %v",
						i, mixSources, passes[i].rej, passes[i].s0, c)
				}
				full++
				recs += n
			}
			prev = c
			for _, m := range []*ebpf.Map{s.objs.Candidates, s.objs.Flagged, s.objs.Watch} {
				clearMap(b, m)
			}
			b.StartTimer()
		}
		b.StopTimer()
		st.report(b)
		if full > 0 {
			b.ReportMetric(float64(recs)/float64(full*mixSources), "records/src")
		}
		if c := counters(b, s); c["ringbuf_full"] != 0 || c["map_insert_fail"] != 0 {
			b.Fatalf("records lost: %v", c)
		}
	})

	for _, rst := range []bool{true, false} {
		name := "syn-flood-rst"
		if !rst {
			name = "syn-flood-s0"
		}
		b.Run(name, func(b *testing.B) {
			// Every packet a new random source; the pair table is first
			// filled by an earlier flood (every slot owned, with a
			// pending SYN), as it is after the first second of a real
			// flood, so each SYN takes a slot over.
			s := loadLive(b, nil)
			empty := loadEmpty(b)
			prewarm(b, s)
			if err := s.ResetCounters(); err != nil {
				b.Fatal(err)
			}
			pkts := floodPackets(b.N, 0, rst)
			var st seqStats
			b.ResetTimer()
			st.runSeq(b, s.Program(), empty, pkts)
			b.StopTimer()
			st.report(b)
			c := counters(b, s)
			syns := uint64((b.N + 1) / 2)
			if !rst {
				syns = uint64(b.N)
			}
			// A handful of flood sources may repeat one of the prewarm's
			// 2^18 sources (random addresses) and count a second touch.
			few := syns/1000 + 1
			if c["syn"] != syns || c["candidates"] > few || c["flags"] != 0 ||
				(rst && c["touch_rej"] != uint64(b.N/2)) || (!rst && c["touch_rej"]+c["touch_s0"] > few) {
				b.Fatalf("flood took an unexpected path: %v", c)
			}
			b.ReportMetric(float64(c["slot_takeover"])/float64(syns), "takeover/syn")
			b.ReportMetric(float64(c["pending_evicted"])/float64(syns), "evicted/syn")
		})
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

// clearMap deletes every entry of a hash map: one walk collects the keys
// (restarting the walk from nil after every delete would rescan the buckets
// each time), then they are deleted.
func clearMap(b *testing.B, m *ebpf.Map) {
	var keys [][]byte
	var prev []byte
	for {
		key := make([]byte, m.KeySize())
		var err error
		if prev == nil {
			err = m.NextKey(nil, &key)
		} else {
			err = m.NextKey(prev, &key)
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			b.Fatalf("walk %s: %v", m, err)
		}
		keys = append(keys, key)
		prev = key
	}
	for _, k := range keys {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			b.Fatalf("clear %s: %v", m, err)
		}
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
		{"knock-mix", func() [][]byte { p, _, _ := knockPass(0); return datas(p) }},
		{"syn-flood-rst", func() [][]byte { return datas(floodPackets(4096, 0, true)) }},
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
	out := make([]([]byte), len(l))
	for i, p := range l {
		out[i] = p.data
	}
	return out
}

// BenchmarkXDPProfile splits the cost of the flood rows (see "Where the
// time goes" in docs/benchmarks/xdp.md): the same SYN repeated in one
// syscall (everything hot: the path's instructions and its lock), and the
// S0 flood with tables small enough to stay in cache, against the default
// 2^18 pair slots and 2^16 port slots.
func BenchmarkXDPProfile(b *testing.B) {
	// The two kernel services every SYN/RST pays: the packet clock
	// (bpf_ktime_get_tai_ns, what live mode uses, against the jiffy-based
	// bpf_ktime_get_coarse_ns) and one bpf_spin_lock/unlock pair on an
	// array value (kw_on_syn and kw_on_rst take a pair slot's lock).
	for _, h := range []struct {
		name string
		fn   asm.BuiltinFunc
	}{{"helper-ktime-tai", asm.FnKtimeGetTaiNs}, {"helper-ktime-coarse", asm.FnKtimeGetCoarseNs}} {
		b.Run(h.name, func(b *testing.B) {
			prog := loadAsm(b, nil, asm.Instructions{h.fn.Call(), asm.Mov.Imm(asm.R0, sensor.XDPDrop), asm.Return()})
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
		prog := loadAsm(b, m, asm.Instructions{
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
		syn := floodPackets(1, 0, false)[0].data
		var st repStats
		b.ResetTimer()
		st.runRep(b, s.Program(), empty, [][]byte{syn}, b.N)
		b.StopTimer()
		st.report(b)
	})
	b.Run("syn-flood-s0-batched", func(b *testing.B) {
		// The S0 flood without a syscall per packet: a rewriter program
		// changes the source of one SYN in place before every run and
		// tail-calls knockwatch (or the empty program, for the floor).
		// Both figures include the rewriter and the tail call.
		s := loadLive(b, nil)
		empty := loadEmpty(b)
		kw := loadRewriter(b, s.Program())
		floor := loadRewriter(b, empty)
		syn := floodPackets(1, 0, false)[0].data
		// Each syscall starts from the packet as passed in: advance its
		// source past the ones the last call used.
		run := func(p *ebpf.Program, r int) time.Duration {
			d := runRepeat(b, p, syn, r)
			src := binary.BigEndian.Uint32(syn[26:])
			binary.BigEndian.PutUint32(syn[26:], src+uint32(r)*0x9e3779b1)
			return d
		}
		for i := 0; i < int(s.Config().PairSlots); i += 1 << 14 {
			run(kw, 1<<14) // the flood's first 2^18 SYNs fill the table
		}
		if err := s.ResetCounters(); err != nil {
			b.Fatal(err)
		}
		var st repStats
		b.ResetTimer()
		for done := 0; done < b.N; {
			r := min(floorRepeat, b.N-done)
			st.prog += run(kw, r)
			st.empty += run(floor, r)
			st.n += r
			done += r
		}
		b.StopTimer()
		st.report(b)
		b.ReportMetric(nsPer(st.prog-st.empty, st.n), "extra-ns")
		// A signal interrupting a batch makes cilium/ebpf restart the
		// syscall, which replays part of the batch: those runs count as
		// retransmissions (the cheaper path), so a few are tolerated.
		if c := counters(b, s); c["syn"] < uint64(b.N) || c["syn_retrans"] > c["syn"]/20 || c["candidates"] != 0 {
			b.Fatalf("batched flood took an unexpected path: %v", c)
		}
	})
	for _, tc := range []struct {
		name         string
		pairs, ports uint32
		prewarm, rst bool
	}{
		{"syn-flood-s0-small-tables", 1 << 10, 1 << 10, true, false},
		{"syn-flood-rst-small-tables", 1 << 10, 1 << 10, true, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := loadLive(b, func(c *sensor.Config) { c.PairSlots, c.PortSlots = tc.pairs, tc.ports })
			empty := loadEmpty(b)
			if tc.prewarm {
				prewarm(b, s)
			}
			pkts := floodPackets(b.N, 0, tc.rst)
			var st seqStats
			b.ResetTimer()
			st.runSeq(b, s.Program(), empty, pkts)
			b.StopTimer()
			st.report(b)
		})
	}
}

// loadAsm loads a small XDP program for the helper probes.
func loadAsm(b *testing.B, _ *ebpf.Map, insns asm.Instructions) *ebpf.Program {
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

// loadRewriter returns an XDP program that gives the packet a new IPv4
// source address (adds an odd constant to it, in place) and tail-calls
// target. BPF_PROG_RUN with repeat keeps the packet between runs, so
// `repeat` runs are `repeat` SYNs from distinct sources run back to back in
// one syscall, as a NIC's NAPI batch would run them: the program's code
// stays hot, the state of random sources does not.
func loadRewriter(b *testing.B, target *ebpf.Program) *ebpf.Program {
	b.Helper()
	jt, err := ebpf.NewMap(&ebpf.MapSpec{Name: "kw_jt", Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		b.Fatalf("create prog array: %v", err)
	}
	b.Cleanup(func() { jt.Close() })
	if err := jt.Put(uint32(0), target); err != nil {
		b.Fatalf("put target: %v", err)
	}
	const srcOff = 14 + 12 // Ethernet, then IPv4 saddr
	return loadAsm(b, jt, asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, srcOff+4),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
		asm.LoadMem(asm.R5, asm.R2, srcOff, asm.Word),
		asm.Add.Imm32(asm.R5, -1640531535), // 0x9e3779b1: odd, so 2^32 distinct sources
		asm.StoreMem(asm.R2, srcOff, asm.R5, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, jt.FD()),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, sensor.XDPDrop).WithSymbol("out"),
		asm.Return(),
	})
}

// prewarm runs as many flood SYNs as the sensor has pair slots (from
// sources the benchmarks do not use), batched through loadRewriter, so the
// table is full of owners with a pending SYN, as after the first moments
// of a real flood.
func prewarm(b *testing.B, s *Sensor) {
	b.Helper()
	rw := loadRewriter(b, s.Program())
	syn := pkt.TCP{Src: netip.MustParseAddr("100.64.0.1"), Dst: benchVictim, SPort: 4242, DPort: 8080, Seq: 1, Flags: pkt.SYN}.Bytes()
	runRepeat(b, rw, syn, int(s.Config().PairSlots))
	if err := s.ResetCounters(); err != nil {
		b.Fatal(err)
	}
}
