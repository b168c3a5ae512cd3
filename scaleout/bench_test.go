package scaleout

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents"
)

// benchInput is b.N attacks as the roles hand them to the pipeline: a
// sensor's KNOCK and HANDSHAKE records, an intake's decoded change.
type benchInput struct {
	knocks     []*sensor.Knock
	changes    []*winevents.ExposureChange
	handshakes []*sensor.Handshake
	ids        []string
}

func makeBenchInput(n int) benchInput {
	t0 := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	var in benchInput
	for i := range n {
		a := attackN(i, t0.Add(time.Duration(i)*time.Millisecond))
		k := &sensor.Knock{Src: a.src, Dst: a.dst, Distinct: 3, Attempted: 3, Epoch: 1, FlagTime: a.t0.Add(2 * time.Second)}
		for j, p := range []uint16{7000, 8000, 9000} {
			k.Touches = append(k.Touches, sensor.Touch{Port: p, Time: a.t0.Add(time.Duration(j) * time.Second), Kind: sensor.TouchREJ})
		}
		ack := a.t0.Add(40 * time.Second)
		in.knocks = append(in.knocks, k)
		in.changes = append(in.changes, &winevents.ExposureChange{Time: a.t0.Add(10 * time.Second), Host: fmt.Sprintf("WIN-%d", i),
			HostIPs: []netip.Addr{a.dst}, Kind: winevents.KindRuleAdded, Ports: winevents.PortSet{Ranges: []winevents.PortRange{{Lo: a.port, Hi: a.port}}},
			Protocol: winevents.ProtoTCP, Direction: winevents.DirIn, Action: winevents.ActionAllow, Active: true, RuleName: "updater",
			Source: winevents.SourceRef{Format: winevents.FormatXML, Channel: "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall",
				EventID: 2004, RecordID: uint64(i + 1), Time: a.t0.Add(10 * time.Second)}})
		in.handshakes = append(in.handshakes, &sensor.Handshake{Src: a.src, Dst: a.dst, SrcPort: 50000, Port: a.port,
			SYN: ack.Add(-2 * time.Millisecond), SYNACK: ack.Add(-time.Millisecond), ACK: ack})
		in.ids = append(in.ids, a.id())
	}
	return in
}

// latencies collects when each alert id was first seen.
type latencies struct {
	mu   sync.Mutex
	sent map[string]time.Time
	seen map[string]time.Duration
	all  chan struct{}
	want int
}

func newLatencies(want int) *latencies {
	return &latencies{sent: map[string]time.Time{}, seen: map[string]time.Duration{}, all: make(chan struct{}), want: want}
}

func (l *latencies) sentAt(id string, t time.Time) {
	l.mu.Lock()
	l.sent[id] = t
	l.mu.Unlock()
}

func (l *latencies) saw(id string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, dup := l.seen[id]; dup {
		return
	}
	l.seen[id] = at.Sub(l.sent[id])
	if len(l.seen) == l.want {
		close(l.all)
	}
}

func (l *latencies) report(b *testing.B, items int, elapsed time.Duration) {
	l.mu.Lock()
	ds := make([]time.Duration, 0, len(l.seen))
	for _, d := range l.seen {
		ds = append(ds, d)
	}
	l.mu.Unlock()
	slices.Sort(ds)
	b.ReportMetric(float64(items)/elapsed.Seconds(), "items/s")
	if len(ds) > 0 {
		b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "p50-alert-ms")
		b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds())/1000, "p99-alert-ms")
	}
	b.ReportMetric(0, "ns/op")
}

// feed hands one attack after another to the pipeline as the roles do:
// the knock (sensor), the change (intake), the handshake (sensor).
func feed(b *testing.B, p *pipeline.Pipeline, in benchInput, lat *latencies) {
	ctx := context.Background()
	for i := range in.knocks {
		if err := p.AddRecords(ctx, []sensor.Record{in.knocks[i]}); err != nil {
			b.Fatal(err)
		}
		if err := p.AddChange(in.changes[i]); err != nil {
			b.Fatal(err)
		}
		lat.sentAt(in.ids[i], time.Now())
		if err := p.AddRecords(ctx, []sensor.Record{in.handshakes[i]}); err != nil {
			b.Fatal(err)
		}
	}
}

// timeSink is the embedded box's alert sink: it notes when each alert is
// written.
type timeSink struct{ lat *latencies }

func (s timeSink) Write(_ context.Context, recs []alert.Record) error {
	now := time.Now()
	for _, r := range recs {
		s.lat.saw(r.ID, now)
	}
	return nil
}

func (timeSink) Close() error { return nil }

// BenchmarkEndToEnd: b.N attacks (knock, change, handshake: 3 evidence
// items each) from the pipeline's input to the alert, through the
// embedded box (evidence log on disk, fsync per batch, the engine in the
// process) and through Kafka with 1 and 3 correlators (the sensor's and
// intake's store-only pipeline producing with acks=all, correlators in
// transactions, the alert read back from the alert topic read_committed).
// items/s counts evidence items until the last alert; the latency is from
// handing the handshake over to seeing its alert. The Kafka runs use the
// fake cluster (kfake, three brokers over loopback TCP in this process):
// its figures are knockwatch's overhead with a broker that replicates
// nothing, not a broker's performance.
func BenchmarkEndToEnd(b *testing.B) {
	b.Run("embedded", func(b *testing.B) {
		in := makeBenchInput(b.N)
		lat := newLatencies(b.N)
		lg, err := evidence.OpenLog(evidence.LogConfig{Dir: b.TempDir(), MaxAge: 30 * time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		defer lg.Close()
		p, err := pipeline.New(pipeline.Config{Engine: correlate.DefaultConfig(), Evidence: lg, FlushInterval: 5 * time.Millisecond}, timeSink{lat}, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		start := time.Now()
		feed(b, p, in, lat)
		<-lat.all
		elapsed := time.Since(start)
		b.StopTimer()
		_ = p.Close()
		lat.report(b, 3*b.N, elapsed)
	})
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("kafka-%d-correlators", n), func(b *testing.B) {
			k := startKafka(b, "")
			cfg := testConfig(b, k, "bench")
			ensure(b, cfg)
			var cs []*Correlator
			for range n {
				cs = append(cs, newCorrelator(b, cfg))
			}
			defer func() {
				for _, c := range cs {
					_ = c.Close()
				}
			}()
			prod := newProducer(b, cfg)
			p, err := pipeline.New(pipeline.Config{Engine: correlate.DefaultConfig(), StoreOnly: true, Evidence: prod}, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			in := makeBenchInput(b.N)
			lat := newLatencies(b.N)
			cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.ConsumeTopics(cfg.Topics.Alerts),
				kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(20*time.Millisecond))
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				for ctx.Err() == nil {
					fs := cl.PollFetches(ctx)
					now := time.Now()
					fs.EachRecord(func(r *kgo.Record) { lat.saw(string(r.Key), now) })
				}
			}()
			// The group settles before the clock starts.
			warm := attackN(1<<20-1, time.Now().Add(-10*time.Minute))
			appendSync(b, prod, warm.knock(), warm.change(1<<40), warm.handshake())
			time.Sleep(time.Second)
			b.ResetTimer()
			start := time.Now()
			feed(b, p, in, lat)
			select {
			case <-lat.all:
			case <-time.After(2 * time.Minute):
				b.Fatalf("%d of %d alerts after 2 min", len(lat.seen), b.N)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			lat.report(b, 3*b.N, elapsed)
		})
	}
}

// BenchmarkFlaggedPairs: the memory a correlator holds per flagged pair
// (a knock waiting for its change and handshake) in a partition's engine,
// and per other sensor's flag in a sensor's RemoteFlags table (userspace;
// the program's flags_in entry is kernel memory on top). b.N distinct
// pairs; the sizing table of docs/SCALE-OUT.md is derived from it.
func BenchmarkFlaggedPairs(b *testing.B) {
	b.Run("correlator-engine", func(b *testing.B) {
		cfg := correlate.DefaultConfig()
		cfg.MaxPairs = max(b.N, 1)
		e, err := correlate.New(cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now().Add(-time.Minute)
		before := heapInUse()
		b.ResetTimer()
		for i := range b.N {
			it := attackN(i, t0).knock()
			if err := e.AddKnock(*it.Knock); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if got := e.Stats().Pairs; got != b.N {
			b.Fatalf("%d pairs held, want %d", got, b.N)
		}
		per := float64(heapInUse()-before) / float64(b.N)
		b.ReportMetric(per, "B/pair")
		b.ReportMetric(float64(1<<30)/per, "pairs/GiB")
		runtime.KeepAlive(e)
	})
	b.Run("remote-flags", func(b *testing.B) {
		tab := NewRemoteFlags(nopTarget{}, b.N+b.N/7+8, time.Hour)
		now := time.Now()
		before := heapInUse()
		b.ResetTimer()
		for i := range b.N {
			a := attackN(i, now)
			if err := tab.Set(a.src, a.dst, now.Add(time.Minute), now); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if st := tab.Stats(); st.Set != uint64(b.N) {
			b.Fatalf("stats %+v", st)
		}
		b.ReportMetric(float64(heapInUse()-before)/float64(b.N), "B/flag")
		runtime.KeepAlive(tab)
	})
}

type nopTarget struct{}

func (nopTarget) SetRemoteFlag(netip.Addr, netip.Addr, time.Time) error { return nil }
func (nopTarget) PruneRequests(time.Time) (int, int, error)             { return 0, 0, nil }

func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}
