package evidence

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/correlate"
)

// mixGen produces the correlation benchmark's evidence mix as items: per
// cycle of 8, five knocks by new sources (3 touches each), one more touch
// by an earlier source, the first handshake of an earlier knocker and one
// inbound allow-rule change, over 4096 hosts; event time +step per item.
// It is correlate's BenchmarkEvidenceMix stream, so the engine-alone figure
// here is comparable with docs/benchmarks/correlate.md.
type mixGen struct {
	step time.Duration
	now  time.Time
	n    int
}

func benchAddr(base byte, n int) netip.Addr {
	return netip.AddrFrom4([4]byte{base, byte(n >> 16), byte(n >> 8), byte(n)})
}

func (g *mixGen) next() Item {
	g.n++
	g.now = g.now.Add(g.step)
	dst := benchAddr(10, g.n%4096)
	switch g.n % 8 {
	case 0, 1, 2, 3, 4:
		ts := make([]correlate.Touch, 3)
		for i := range ts {
			ts[i] = correlate.Touch{Port: uint16(1000 + i + g.n%7), Time: g.now.Add(time.Duration(i-3) * time.Second), Kind: correlate.TouchREJ}
		}
		return Item{Arrival: g.now, Knock: &correlate.Knock{Src: benchAddr(100, g.n), Dst: dst, Touches: ts}}
	case 5:
		return Item{Arrival: g.now, Knock: &correlate.Knock{Src: benchAddr(100, g.n-5), Dst: benchAddr(10, (g.n-5)%4096),
			Touches: []correlate.Touch{{Port: 4444, Time: g.now, Kind: correlate.TouchS0}}}}
	case 6:
		ack := g.now.Add(30 * time.Second)
		h := &correlate.Handshake{Src: benchAddr(100, g.n-6), Dst: benchAddr(10, (g.n-6)%4096), SrcPort: 40000, Port: 22,
			SYN: ack.Add(-2 * time.Millisecond), SYNACK: ack.Add(-time.Millisecond), ACK: ack}
		if g.n%64 == 6 {
			h.PortLastClosed = g.now.Add(-time.Minute)
		}
		return Item{Arrival: g.now, Handshake: h}
	}
	return Item{Arrival: g.now, Change: &correlate.ExposureChange{Time: g.now, HostIPs: []netip.Addr{dst}, Kind: correlate.ChangeRuleAdded,
		Ports: correlate.Ports(3389), Protocol: correlate.ProtocolTCP, Direction: correlate.DirectionInbound,
		Action: correlate.ActionAllow, Active: correlate.TriTrue, Channel: "Firewall", RecordID: uint64(g.n)}}
}

func feedEngine(e *correlate.Engine, items []Item) {
	for i := range items {
		it := &items[i]
		switch {
		case it.Knock != nil:
			_ = e.AddKnock(*it.Knock)
		case it.Handshake != nil:
			_ = e.AddHandshake(*it.Handshake)
		default:
			_ = e.AddChange(*it.Change)
		}
	}
}

// BenchmarkLogVersusEngine measures evidence items per second through the
// evidence log and the engine (what the pipeline does: Append a batch,
// feed the engine, Sync) beside the engine alone on the same items, in
// one run: four engines fed the same stream in interleaved rounds (the
// order rotating each round), so load changes on a shared machine hit all
// alike. "log-off" is FsyncOff. "log-fsync" is FsyncBatch as the live
// pipeline runs it under load: 4 concurrent senders (HTTP requests, Beats
// windows), each appending its batch, feeding the engine and waiting for
// the Sync that makes it durable before it is acknowledged; their Syncs
// share fsyncs. "log-fsync-seq" is the worst case, one sender that waits
// for each batch's fsync before sending the next. Sub-benchmarks vary the
// batch: what one HTTP request, one Beats window or one ring-buffer drain
// hands over at once. Reports items/s of each (all acknowledged) and the
// ratios of time to the engine alone.
func BenchmarkLogVersusEngine(b *testing.B) {
	for _, batch := range []int{64, 512, 2048} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) { benchLogVersusEngine(b, batch) })
	}
}

// senders is the number of concurrent senders of the log-fsync variant.
const senders = 4

func benchLogVersusEngine(b *testing.B, batch int) {
	ctx := context.Background()
	type variant struct {
		name string
		e    *correlate.Engine
		log  *Log
		dur  time.Duration
	}
	vs := []*variant{{name: "engine"}, {name: "log-off"}, {name: "log-fsync"}, {name: "log-fsync-seq"}}
	for i, v := range vs {
		e, err := correlate.New(correlate.DefaultConfig(), correlate.EmitterFunc(func(correlate.Alert) {}))
		if err != nil {
			b.Fatal(err)
		}
		v.e = e
		if i > 0 {
			fs := FsyncOff
			if i >= 2 {
				fs = FsyncBatch
			}
			l, err := OpenLog(LogConfig{Dir: b.TempDir(), MaxAge: time.Hour, MaxBytes: 8 << 30, SegmentBytes: 256 << 20, Fsync: fs})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			v.log = l
		}
	}
	run := func(v *variant, items []Item) {
		start := time.Now()
		if v.name == "log-fsync" {
			// Concurrent senders (HTTP connections, Beats windows): each
			// takes the next batch, appends it, feeds the engine and waits
			// for its Sync before taking another; their Syncs share
			// fsyncs (group commit).
			next := make(chan []Item)
			done := make(chan struct{})
			for range senders {
				go func() {
					defer func() { done <- struct{}{} }()
					for chunk := range next {
						if err := v.log.Append(ctx, chunk); err != nil {
							b.Error(err)
							return
						}
						feedEngine(v.e, chunk)
						if err := v.log.Sync(ctx); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			for i := 0; i < len(items); i += batch {
				next <- items[i:min(i+batch, len(items))]
			}
			close(next)
			for range senders {
				<-done
			}
			v.dur += time.Since(start)
			return
		}
		for i := 0; i < len(items); i += batch {
			chunk := items[i:min(i+batch, len(items))]
			if v.log != nil {
				if err := v.log.Append(ctx, chunk); err != nil {
					b.Fatal(err)
				}
			}
			feedEngine(v.e, chunk)
			if v.log != nil {
				if err := v.log.Sync(ctx); err != nil {
					b.Fatal(err)
				}
			}
		}
		v.dur += time.Since(start)
	}
	g := &mixGen{step: 10 * time.Millisecond, now: t0}
	round := max(16*batch, 16384)
	items := make([]Item, round)
	// Warm up to the engine's steady state (about a retention of evidence).
	for range 200_000 / round {
		for i := range items {
			items[i] = g.next()
		}
		for _, v := range vs {
			run(v, items)
		}
	}
	for _, v := range vs {
		v.dur = 0
	}
	b.ResetTimer()
	done := 0
	for r := 0; done < b.N; r++ {
		for i := range items {
			items[i] = g.next()
		}
		for k := range vs {
			run(vs[(r+k)%len(vs)], items)
		}
		done += round
	}
	b.StopTimer()
	for _, v := range vs {
		b.ReportMetric(float64(done)/v.dur.Seconds(), v.name+"-items/s")
	}
	for _, v := range vs[1:] {
		b.ReportMetric(v.dur.Seconds()/vs[0].dur.Seconds(), v.name+"/engine")
	}
	st := vs[2].log.Stats()
	b.ReportMetric(float64(st.AppendedBytes)/float64(st.Records), "bytes/item")
	b.ReportMetric(float64(st.Records)/float64(st.Fsyncs), "items/fsync")
}

// BenchmarkAppend is the log alone: one Append of a batch of 64 items
// (encode, CRC-32C, one write), without fsync.
func BenchmarkAppend(b *testing.B) {
	l, err := OpenLog(LogConfig{Dir: b.TempDir(), MaxAge: time.Hour, MaxBytes: 8 << 30, SegmentBytes: 256 << 20, Fsync: FsyncOff})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	g := &mixGen{step: 10 * time.Millisecond, now: t0}
	items := make([]Item, 64)
	for i := range items {
		items[i] = g.next()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(items) {
		if err := l.Append(context.Background(), items); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
}

// BenchmarkReplay reads the log back (the start-up rebuild without the
// engine): frames, CRC, decode.
func BenchmarkReplay(b *testing.B) {
	l, err := OpenLog(LogConfig{Dir: b.TempDir(), MaxAge: time.Hour, MaxBytes: 8 << 30, SegmentBytes: 256 << 20, Fsync: FsyncOff})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	g := &mixGen{step: 10 * time.Millisecond, now: t0}
	const n = 100_000
	items := make([]Item, 0, 1000)
	for range n / 1000 {
		items = items[:0]
		for range 1000 {
			items = append(items, g.next())
		}
		if err := l.Append(context.Background(), items); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	read := 0
	for read < b.N {
		rs, err := l.Replay(time.Time{}, func(Item) error { return nil })
		if err != nil || rs.Replayed != n {
			b.Fatalf("replayed %d: %v", rs.Replayed, err)
		}
		read += n
	}
	b.ReportMetric(float64(read)/b.Elapsed().Seconds(), "items/s")
}
