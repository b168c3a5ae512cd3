package correlate

import (
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// cpuTime returns the user+system CPU time of the process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkBaselineMapChurn is the floor to compare with: what tracking a
// new pair costs at the least (a 32-byte-key map insert, a 48-byte
// allocation, and the delete of an old key to keep the size steady), on
// the same machine in the same run.
func BenchmarkBaselineMapChurn(b *testing.B) {
	const size = 1 << 16
	m := make(map[[32]byte][]touch, size)
	var k [32]byte
	b.ReportAllocs()
	start, cpu0 := time.Now(), cpuTime()
	for i := 0; i < b.N; i++ {
		k[28], k[29], k[30], k[31] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
		m[k] = make([]touch, 3)
		if i >= size {
			j := i - size
			k[28], k[29], k[30], k[31] = byte(j>>24), byte(j>>16), byte(j>>8), byte(j)
			delete(m, k)
		}
	}
	el, cpu := time.Since(start), cpuTime()-cpu0
	b.ReportMetric(float64(b.N)/el.Seconds(), "items/s")
	if cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "items/cpu-s")
	}
}

// mixFeeder produces an endless evidence stream: per cycle of 8 items, 5
// knocks by new sources (3 touches each), one more knock touch by an
// earlier source, the first handshake of an earlier knocker (one in 8 of
// them alerts) and one inbound allow-rule change, over 4096 hosts. Event
// time advances by step per item. It is harsher than real traffic, where
// knocks, handshakes and firewall changes are far rarer than this.
type mixFeeder struct {
	e       *Engine
	step    time.Duration
	now     time.Time
	n       int
	touches [3]Touch
}

func (f *mixFeeder) addr(base byte, n int) netip.Addr {
	return netip.AddrFrom4([4]byte{base, byte(n >> 16), byte(n >> 8), byte(n)})
}

func (f *mixFeeder) next() error {
	f.n++
	f.now = f.now.Add(f.step)
	dst := f.addr(10, f.n%4096)
	switch f.n % 8 {
	case 0, 1, 2, 3, 4:
		for i := range f.touches {
			f.touches[i] = Touch{Port: uint16(1000 + i + f.n%7), Time: f.now.Add(time.Duration(i-3) * time.Second), Kind: TouchREJ}
		}
		return f.e.AddKnock(Knock{Src: f.addr(100, f.n), Dst: dst, Touches: f.touches[:]})
	case 5:
		f.touches[0] = Touch{Port: 4444, Time: f.now, Kind: TouchS0}
		return f.e.AddKnock(Knock{Src: f.addr(100, f.n-5), Dst: f.addr(10, (f.n-5)%4096), Touches: f.touches[:1]})
	case 6:
		h := handshakeAt(f.addr(100, f.n-6), f.addr(10, (f.n-6)%4096), 22, f.now.Add(30*time.Second))
		if f.n%64 == 6 {
			// One handshake in 8 shows the port opening: a medium alert.
			h.PortLastClosed = f.now.Add(-time.Minute)
		}
		return f.e.AddHandshake(h)
	default:
		c := ExposureChange{Time: f.now, HostIPs: []netip.Addr{dst}, Kind: ChangeRuleAdded, Ports: Ports(3389),
			Protocol: ProtocolTCP, Direction: DirectionInbound, Action: ActionAllow, Active: TriTrue,
			Channel: "Firewall", RecordID: uint64(f.n)}
		return f.e.AddChange(c)
	}
}

func benchFeed(b *testing.B, cfg Config, step time.Duration) {
	e, err := New(cfg, EmitterFunc(func(Alert) {}))
	if err != nil {
		b.Fatal(err)
	}
	f := &mixFeeder{e: e, step: step, now: t0}
	// Warm up to a steady state: a full retention of evidence (or the cap).
	for i := 0; i < 200_000; i++ {
		if err := f.next(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for i := 0; i < b.N; i++ {
		if err := f.next(); err != nil {
			b.Fatal(err)
		}
	}
	el, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "items/s")
	if cpu > 0 {
		// CPU time of the whole process (GC included): on a shared,
		// busy machine this is the honest "one core" figure.
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "items/cpu-s")
	}
	s := e.Stats()
	b.ReportMetric(float64(s.Pairs), "pairs")
}

// BenchmarkEvidenceMix: the realistic mix, event time 10 ms per item, so
// the retained state (~120k items) stays under the caps.
func BenchmarkEvidenceMix(b *testing.B) {
	benchFeed(b, DefaultConfig(), 10*time.Millisecond)
}

// BenchmarkEvidenceFloodAtCap: the same mix at 1 µs of event time per item
// with 65,536 pairs allowed: every new knock meets the pair cap, so this
// measures eviction under a flood.
func BenchmarkEvidenceFloodAtCap(b *testing.B) {
	cfg := DefaultConfig()
	cfg.MaxPairs = 1 << 16
	benchFeed(b, cfg, time.Microsecond)
}

// BenchmarkBytesPerPair measures the heap held per tracked (S, D) pair:
// 200,000 pairs with a 3-touch knock each, spread over 4096 hosts.
func BenchmarkBytesPerPair(b *testing.B) {
	const pairs = 200_000
	var total float64
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		e, err := New(DefaultConfig(), nil)
		if err != nil {
			b.Fatal(err)
		}
		f := &mixFeeder{e: e, now: t0}
		for n := 0; n < pairs; n++ {
			for j := range f.touches {
				f.touches[j] = Touch{Port: uint16(1000 + j), Time: t0.Add(time.Duration(n)*time.Microsecond + time.Duration(j)*time.Second), Kind: TouchREJ}
			}
			if err := e.AddKnock(Knock{Src: f.addr(100, n), Dst: f.addr(10, n%4096), Touches: f.touches[:]}); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if s := e.Stats(); s.Pairs != pairs {
			b.Fatalf("tracked %d pairs, want %d", s.Pairs, pairs)
		}
		total += float64(after.HeapAlloc-before.HeapAlloc) / pairs
		runtime.KeepAlive(e)
	}
	b.ReportMetric(total/float64(b.N), "bytes/pair")
}

// BenchmarkMixVersusFloor interleaves the floor (BaselineMapChurn's
// operation) and the engine (EvidenceMix's stream) in rounds of 20,000
// items each and reports the CPU-time ratio engine/floor per item, so that
// load changes on a shared machine hit both alike.
func BenchmarkMixVersusFloor(b *testing.B) {
	e, err := New(DefaultConfig(), EmitterFunc(func(Alert) {}))
	if err != nil {
		b.Fatal(err)
	}
	f := &mixFeeder{e: e, step: 10 * time.Millisecond, now: t0}
	for i := 0; i < 200_000; i++ {
		if err := f.next(); err != nil {
			b.Fatal(err)
		}
	}
	const size, round = 1 << 16, 20_000
	m := make(map[[32]byte][]touch, size)
	var k [32]byte
	floorOp := 0
	var floorCPU, engineCPU time.Duration
	items := 0
	b.ResetTimer()
	for items < b.N {
		c0 := cpuTime()
		for i := 0; i < round; i++ {
			n := floorOp
			k[28], k[29], k[30], k[31] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
			m[k] = make([]touch, 3)
			if n >= size {
				n -= size
				k[28], k[29], k[30], k[31] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
				delete(m, k)
			}
			floorOp++
		}
		c1 := cpuTime()
		for i := 0; i < round; i++ {
			if err := f.next(); err != nil {
				b.Fatal(err)
			}
		}
		c2 := cpuTime()
		floorCPU += c1 - c0
		engineCPU += c2 - c1
		items += round
	}
	b.StopTimer()
	if floorCPU > 0 && engineCPU > 0 {
		b.ReportMetric(float64(items)/engineCPU.Seconds(), "items/cpu-s")
		b.ReportMetric(float64(items)/floorCPU.Seconds(), "floor-ops/cpu-s")
		b.ReportMetric(engineCPU.Seconds()/floorCPU.Seconds(), "engine/floor")
	}
}
