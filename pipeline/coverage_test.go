package pipeline

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/coverage"
	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents"
)

// memLog is an evidence log in memory.
type memLog struct {
	mu    sync.Mutex
	items []evidence.Item
}

func (m *memLog) Append(_ context.Context, items []evidence.Item) error {
	m.mu.Lock()
	m.items = append(m.items, items...)
	m.mu.Unlock()
	return nil
}
func (m *memLog) Sync(context.Context) error { return nil }

func (m *memLog) kinds() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for _, it := range m.items {
		out[it.Kind().String()]++
	}
	return out
}

func newCoverage(t *testing.T) *coverage.Tracker {
	t.Helper()
	cov, err := coverage.New(coverage.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cov
}

var t1 = time.Date(2026, 11, 20, 14, 30, 0, 0, time.UTC)

// conn5156 is the host's 5156 of a connection from peer:sport to
// host:445, stamped by a clock off by off.
func conn5156(peer netip.Addr, sport uint16, at time.Time, off time.Duration, rec uint64) *winevents.ExposureChange {
	return &winevents.ExposureChange{Time: at.Add(off), Host: "WS01.corp.example", Kind: winevents.KindConnection,
		Protocol: winevents.ProtoTCP, Direction: winevents.DirIn, Action: winevents.ActionAllow, Active: true,
		Ports: winevents.SinglePort(445), LocalAddress: host, RemoteAddress: peer, RemotePort: sport, LocalSideBy: "ephemeral_port",
		Source: winevents.SourceRef{Format: winevents.FormatXML, Channel: "Security", EventID: 5156, RecordID: rec, Time: at.Add(off)}}
}

func clockSample(peer netip.Addr, sport uint16, at time.Time) *sensor.Handshake {
	return &sensor.Handshake{Src: peer, Dst: host, SrcPort: sport, Port: 445, SYN: at.Add(-time.Millisecond), SYNACK: at,
		ACK: at.Add(time.Millisecond), Sample: true}
}

// TestSamplesGoToCoverageOnly: a clock sample is coverage's: not knock
// evidence for the engine, not in the evidence log; connection events stay
// out of the engine too. Matched, they give the engine the host's clock.
func TestSamplesGoToCoverageOnly(t *testing.T) {
	lg := &memLog{}
	cov := newCoverage(t)
	p := newTestPipeline(t, alert.NewStreamWriter(&syncBuffer{}, "test", false), Config{Evidence: lg, Coverage: cov})
	defer p.Close()
	ctx := context.Background()
	for i := 0; i < 4; i++ {
		peer := netip.AddrFrom4([4]byte{10, 0, 0, byte(40 + i%2)})
		at := t1.Add(time.Duration(i) * 10 * time.Second)
		if err := p.AddChange(conn5156(peer, uint16(50000+i), at, -90*time.Second, uint64(100+i))); err != nil {
			t.Fatal(err)
		}
		if err := p.AddRecords(ctx, []sensor.Record{clockSample(peer, uint16(50000+i), at)}); err != nil {
			t.Fatal(err)
		}
	}
	if st := p.Engine().Stats(); st.In["handshake"] != 0 || st.In["change"] != 0 {
		t.Fatalf("engine took %v: samples and connection events are not evidence", st.In)
	}
	if k := lg.kinds(); k["handshake"] != 0 || k["change"] != 0 {
		t.Fatalf("evidence log holds %v", k)
	}
	if st := p.Stats(); st.Samples != 4 || st.ChangesSkipped[SkipConnection] != 4 {
		t.Fatalf("stats: samples %d, skipped %v", st.Samples, st.ChangesSkipped)
	}
	c := p.Engine().HostClockOf(host)
	if c == nil || c.Offset < -91*time.Second || c.Offset > -89*time.Second || c.Samples != 4 || c.Sources != 2 {
		t.Fatalf("engine clock %+v, want -90 s from 4 samples of 2 peers", c)
	}
}

// blindKnock is an S0-only knock of src on the host.
func blindKnock(src netip.Addr, at time.Time) *sensor.Knock {
	k := &sensor.Knock{Src: src, Dst: host, Distinct: 3}
	for i, port := range []uint16{7000, 8000, 9000} {
		k.Touches = append(k.Touches, sensor.Touch{Port: port, Time: at.Add(time.Duration(i) * time.Second), Kind: sensor.TouchS0})
	}
	return k
}

// TestBlindPathKnocksHeld: think like the attacker who makes the host's
// path look blind (unanswered SYNs to it from spoofed sources) so that
// their own knock is ignored. Knocks of unanswered touches to it are held,
// bounded, not lost: the knocker's handshake, seen with its SYN-ACK, shows
// the path answers and lets them through first, and the alert comes.
func TestBlindPathKnocksHeld(t *testing.T) {
	out := &syncBuffer{}
	cov := newCoverage(t)
	p := newTestPipeline(t, alert.NewStreamWriter(out, "test", false), Config{Coverage: cov})
	ctx := context.Background()
	// 5,000 spoofed sources knock the host with S0 touches.
	for i := 0; i < 5000; i++ {
		src := netip.AddrFrom4([4]byte{203, byte(i >> 16), byte(i >> 8), byte(i)})
		if err := p.AddRecords(ctx, []sensor.Record{blindKnock(src, t1.Add(-time.Minute))}); err != nil {
			t.Fatal(err)
		}
	}
	if blind, why := cov.Blind(host); !blind || why != "no_answers" {
		t.Fatalf("host blind %v %q", blind, why)
	}
	st := p.Stats()
	if st.KnocksHeld != maxHeldPerHost || st.KnocksHeldOverflow == 0 {
		t.Fatalf("held %d, overflow %d: want the per-host bound %d", st.KnocksHeld, st.KnocksHeldOverflow, maxHeldPerHost)
	}
	// Over the bound, the oldest went on to the engine: nothing is lost.
	if n := p.Engine().Stats().In["knock"]; n+uint64(st.KnocksHeld) != 5000 {
		t.Fatalf("the engine took %d knocks and %d are held, of 5000", n, st.KnocksHeld)
	}
	// The attacker's knock, held like the rest, then 200 more spoofed
	// knocks to push it out of the held ones: it goes to the engine.
	if err := p.AddRecords(ctx, []sensor.Record{blindKnock(attacker, t1)}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		src := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		if err := p.AddRecords(ctx, []sensor.Record{blindKnock(src, t1.Add(3*time.Second))}); err != nil {
			t.Fatal(err)
		}
	}
	// The host opens 4444.
	if err := p.Engine().AddChange(correlate.ExposureChange{Time: t1.Add(12 * time.Second), Host: "WS01", HostIPs: []netip.Addr{host},
		Kind: correlate.ChangeRuleAdded, Ports: correlate.Ports(4444), Protocol: correlate.ProtocolTCP,
		Direction: correlate.DirectionInbound, Action: correlate.ActionAllow, Active: correlate.TriTrue,
		EventID: 2004, Channel: "Firewall", RecordID: 1}); err != nil {
		t.Fatal(err)
	}
	// Its handshake: the SYN-ACK shows the path answers.
	if err := p.AddRecords(ctx, []sensor.Record{handshake(t1.Add(25*time.Second), 4444)}); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"confidence":"high"`) || !strings.Contains(out.String(), attacker.String()) {
		t.Fatalf("no high alert for the attacker: %s", out.String())
	}
	if st := p.Stats(); st.KnocksHeld != 0 {
		t.Fatalf("%d knocks still held after the path answered", st.KnocksHeld)
	}
}

// TestBlindPathREJKnockNotHeld: a knock with a REJ (the host's own RST)
// proves the path answers: never held.
func TestBlindPathREJKnockNotHeld(t *testing.T) {
	cov := newCoverage(t)
	p := newTestPipeline(t, alert.NewStreamWriter(&syncBuffer{}, "test", false), Config{Coverage: cov})
	defer p.Close()
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if err := p.AddRecords(ctx, []sensor.Record{blindKnock(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), t1)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.AddRecords(ctx, []sensor.Record{knock(t1)}); err != nil {
		t.Fatal(err)
	}
	if n := p.Engine().Stats().In["knock"]; n < 1 {
		t.Fatalf("the REJ knock was held")
	}
}
