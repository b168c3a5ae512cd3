package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// syncBuffer is a bytes.Buffer safe for the sink's writes and the test's
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const sample = "../testdata/winevents/otrf_cmd_netsh_fw_mod_open_ports.subset.jsonl"

var (
	attacker = netip.MustParseAddr("198.51.100.7")
	host     = netip.MustParseAddr("10.0.0.5")
	// The sample's netsh rule "atomic testing" opens TCP 450 on WORKSTATION5
	// at 2020-10-21T12:19:04.518Z (4946 joined with its 5447).
	changeAt = time.Date(2020, 10, 21, 12, 19, 4, 518e6, time.UTC)
)

func newTestPipeline(t *testing.T, sink alert.Sink, cfg Config) *Pipeline {
	t.Helper()
	inv, err := correlate.ParseHosts(strings.NewReader("10.0.0.5 workstation5.theshire.local\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Engine.MinPorts == 0 {
		cfg.Engine = correlate.DefaultConfig()
	}
	cfg.EngineOptions = append(cfg.EngineOptions, correlate.WithInventory(inv))
	p, err := New(cfg, sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func knock(at time.Time) *sensor.Knock {
	k := &sensor.Knock{Src: attacker, Dst: host, Distinct: 3, FlagTime: at.Add(2 * time.Second)}
	for i, port := range []uint16{7000, 8000, 9000} {
		k.Touches = append(k.Touches, sensor.Touch{Port: port, Time: at.Add(time.Duration(i) * time.Second), Kind: sensor.TouchREJ})
	}
	k.Touches[1].Kind = sensor.TouchS0
	return k
}

func handshake(at time.Time, port uint16) *sensor.Handshake {
	return &sensor.Handshake{
		Src: attacker, Dst: host, SrcPort: 51000, Port: port,
		SYN: at, SYNACK: at.Add(time.Millisecond), ACK: at.Add(2 * time.Millisecond),
		PortLastClosed: at.Add(-time.Minute), Distinct: 3,
	}
}

func payload(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(sample)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKnockEventHandshakeAlert is the end-to-end glue: a knock from the
// sensor, the real forwarded Windows events through Handle (as a listener
// calls it), and the handshake yield exactly one high alert line.
func TestKnockEventHandshakeAlert(t *testing.T) {
	out := &syncBuffer{}
	var lags []time.Duration
	p := newTestPipeline(t, alert.NewStreamWriter(out, "test", false), Config{
		ObserveLag: func(_ string, _ winevents.Format, lag time.Duration) { lags = append(lags, lag) },
	})
	ctx := context.Background()
	if err := p.AddKnock(ctx, knock(changeAt.Add(-4*time.Second))); err != nil {
		t.Fatal(err)
	}
	received := changeAt.Add(90 * time.Second)
	res := p.Handle(ctx, intake.Message{Transport: intake.TransportHTTP, Payload: payload(t), Received: received})
	if res.Err != nil || res.Accepted != 15 || res.Rejected != 0 {
		t.Fatalf("Handle = %+v, want 15 accepted", res)
	}
	if err := p.AddHandshake(ctx, handshake(changeAt.Add(2*time.Second), 450)); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 || lines[0] == "" {
		t.Fatalf("got %d alert lines, want 1:\n%s", len(lines), out.String())
	}
	var a struct {
		Rule        struct{ ID string } `json:"rule"`
		Source      struct{ IP string } `json:"source"`
		Destination struct {
			IP   string
			Port int
		} `json:"destination"`
		Host       struct{ Name string } `json:"host"`
		Knockwatch struct {
			Confidence string
			Change     map[string]any
		} `json:"knockwatch"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &a); err != nil {
		t.Fatalf("alert is not JSON: %v\n%s", err, lines[0])
	}
	if a.Rule.ID != "AN0842" || a.Source.IP != attacker.String() || a.Destination.IP != host.String() ||
		a.Destination.Port != 450 || a.Knockwatch.Confidence != "high" {
		t.Fatalf("unexpected alert: %s", lines[0])
	}
	if a.Knockwatch.Change == nil || !strings.Contains(lines[0], "atomic testing") {
		t.Fatalf("alert lacks the change evidence: %s", lines[0])
	}
	st := p.Stats()
	if st.AlertsWritten != 1 || st.Alerts["high"] != 1 || st.In["knock"] != 1 || st.In["handshake"] != 1 {
		t.Fatalf("stats = %+v", st)
	}
	// The rule_added and rule_deleted changes, 90 s and ~86 s late.
	if len(lags) != 2 || lags[0] != received.Sub(changeAt) {
		t.Fatalf("lags = %v", lags)
	}
}

func TestHandleUnreadableIsErr(t *testing.T) {
	p := newTestPipeline(t, alert.NewStreamWriter(&syncBuffer{}, "test", false), Config{})
	defer p.Close()
	res := p.Handle(context.Background(), intake.Message{Transport: intake.TransportHTTP, Payload: []byte("not an event")})
	if res.Err == nil || errors.Is(res.Err, intake.ErrBusy) {
		t.Fatalf("Handle(garbage) = %+v, want an unreadable error", res)
	}
	if st := p.Stats(); st.Unreadable != 1 || st.Payloads != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

// failingSink refuses writes until healed, then records what it got.
type failingSink struct {
	mu     sync.Mutex
	healed bool
	fails  int
	got    []alert.Record
}

func (f *failingSink) Write(_ context.Context, recs []alert.Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.healed {
		f.fails++
		return errors.New("receiver down")
	}
	f.got = append(f.got, recs...)
	return nil
}

func (f *failingSink) Close() error { return nil }

func (f *failingSink) failures() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fails
}

// TestBackpressureAndRetry: while the sink fails, alerts stay queued, event
// payloads get ErrBusy once the queue passes half its bound, sensor records
// wait at the bound, and once the sink heals everything is delivered.
func TestBackpressureAndRetry(t *testing.T) {
	sink := &failingSink{}
	p := newTestPipeline(t, sink, Config{MaxQueued: 4, BatchSize: 1, FlushInterval: time.Millisecond})
	ctx := context.Background()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// Each destination is its own network-only medium alert.
	alertFor := func(i int) {
		t.Helper()
		dst := netip.AddrFrom4([4]byte{10, 1, 0, byte(i + 1)})
		k := knock(base)
		k.Dst = dst
		if err := p.AddKnock(ctx, k); err != nil {
			t.Fatal(err)
		}
		h := handshake(base.Add(10*time.Second), 4444)
		h.Dst = dst
		if err := p.AddHandshake(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	alertFor(0)
	alertFor(1)
	if st := p.Stats(); st.AlertsQueued != 2 {
		t.Fatalf("queued = %d, want 2", st.AlertsQueued)
	}
	res := p.Handle(ctx, intake.Message{Transport: intake.TransportBeats, Payload: payload(t)})
	if !errors.Is(res.Err, intake.ErrBusy) {
		t.Fatalf("Handle with a full queue = %+v, want ErrBusy", res)
	}
	alertFor(2)
	alertFor(3)
	// At the bound a sensor record waits; a cancelled ctx ends the wait.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := p.AddKnock(cctx, knock(base)); !errors.Is(err, context.Canceled) {
		t.Fatalf("AddKnock at the bound = %v, want context.Canceled", err)
	}
	for sink.failures() < 2 {
		time.Sleep(time.Millisecond)
	}
	sink.mu.Lock()
	sink.healed = true
	sink.mu.Unlock()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if len(sink.got) != 4 {
		t.Fatalf("delivered %d alerts, want 4", len(sink.got))
	}
	st := p.Stats()
	if st.Busy != 1 || st.WriteErrors < 2 || st.AlertsUndelivered != 0 || st.Rejected["knock"]["cancelled"] != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

// TestCloseLogsUndelivered: a sink that never heals loses nothing silently.
func TestCloseLogsUndelivered(t *testing.T) {
	sink := &failingSink{}
	p := newTestPipeline(t, sink, Config{CloseTimeout: 50 * time.Millisecond})
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := p.AddKnock(context.Background(), knock(base)); err != nil {
		t.Fatal(err)
	}
	if err := p.AddHandshake(context.Background(), handshake(base.Add(10*time.Second), 4444)); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err == nil {
		t.Fatal("Close with an undelivered alert returned nil")
	}
	if st := p.Stats(); st.AlertsUndelivered != 1 {
		t.Fatalf("undelivered = %d, want 1", st.AlertsUndelivered)
	}
	if err := p.AddKnock(context.Background(), knock(base)); !errors.Is(err, ErrClosed) {
		t.Fatalf("AddKnock after Close = %v", err)
	}
}

func TestRejectedEvidenceCounted(t *testing.T) {
	p := newTestPipeline(t, alert.NewStreamWriter(&syncBuffer{}, "test", false), Config{})
	defer p.Close()
	k := knock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	k.Src = netip.Addr{}
	if err := p.AddKnock(context.Background(), k); !errors.Is(err, correlate.ErrInvalidAddr) {
		t.Fatalf("AddKnock without source = %v", err)
	}
	if err := p.AddRecord(context.Background(), nil); err == nil {
		t.Fatal("AddRecord(nil) = nil")
	}
	st := p.Stats()
	if st.Rejected["knock"]["invalid_addr"] != 1 || st.Rejected["record"]["unknown_type"] != 1 {
		t.Fatalf("rejected = %v", st.Rejected)
	}
}

// TestEmitAfterClose: evidence reaching the engine after Close (a caller
// that bypassed the pipeline) is not lost silently.
func TestEmitAfterClose(t *testing.T) {
	p := newTestPipeline(t, alert.NewStreamWriter(&syncBuffer{}, "test", false), Config{})
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := p.Engine().AddKnock(KnockFromLoader(knock(base))); err != nil {
		t.Fatal(err)
	}
	if err := p.Engine().AddHandshake(HandshakeFromLoader(handshake(base.Add(10*time.Second), 4444))); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.AlertsUndelivered != 1 || st.AlertsQueued != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

// TestHandleRefusesBrokenTimes: an event stamped far in the future of its
// arrival, or outside the representable range, is refused and counted by
// reason, never kept.
func TestHandleRefusesBrokenTimes(t *testing.T) {
	p := newTestPipeline(t, alert.NewStreamWriter(&syncBuffer{}, "test", false), Config{})
	raw, err := os.ReadFile("../testdata/winevents/psmths_2004_2071_2006_5156_examples.xml")
	if err != nil {
		t.Fatal(err)
	}
	ev := string(raw)
	i := strings.Index(ev, "<Event\n")
	ev = ev[i : i+strings.Index(ev[i:], "</Event>")+len("</Event>")]
	arrival := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for n, ts := range []string{"2026-11-27T15:00:00Z", "2999-01-01T00:00:00Z", "1601-01-01T00:00:00Z"} {
		payload := strings.Replace(ev, "2023-05-04T17:01:45.8409961Z", ts, 1)
		payload = strings.Replace(payload, "<EventRecordID>6661<", "<EventRecordID>"+strconv.Itoa(90000+n)+"<", 1)
		res := p.Handle(context.Background(), intake.Message{Transport: "http", Payload: []byte(payload), Received: arrival})
		if res.Accepted != 0 || res.Rejected == 0 {
			t.Errorf("%s: result %+v, want rejected", ts, res)
		}
	}
	got := p.Stats().Rejected["change"]
	if got["future_time"] != 2 || got["time_range"] != 1 {
		t.Errorf("rejections by reason = %v, want future_time 2, time_range 1", got)
	}
}

// eventXML renders a minimal forwarded Event XML record.
func eventXML(channel string, id, record int, at time.Time, data ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><EventID>%d</EventID>`+
		`<TimeCreated SystemTime="%s"/><EventRecordID>%d</EventRecordID><Channel>%s</Channel>`+
		`<Computer>WORKSTATION5.theshire.local</Computer></System><EventData>`, id, at.UTC().Format(time.RFC3339Nano), record, channel)
	for i := 0; i+1 < len(data); i += 2 {
		fmt.Fprintf(&b, `<Data Name="%s">%s</Data>`, data[i], data[i+1])
	}
	b.WriteString("</EventData></Event>")
	return []byte(b.String())
}

// TestFirewallSecurityEitherOrder: the Firewall 2004 and the Security 4946
// of one rule change, delivered in either order over a listener (WEF does
// not order channels), leave one change in the engine and one high alert
// whose evidence is the 2004.
func TestFirewallSecurityEitherOrder(t *testing.T) {
	const ruleID = "{5E1A2B3C-0000-4000-8000-000000000450}"
	fw := eventXML("Microsoft-Windows-Windows Firewall With Advanced Security/Firewall", 2004, 811, changeAt,
		"RuleId", ruleID, "RuleName", "updater", "Direction", "1", "Protocol", "6", "LocalPorts", "450", "Action", "3",
		"Active", "1", "ModifyingUser", "S-1-5-21-1-2-3-1001", "ModifyingApplication", `C:\Windows\System32\netsh.exe`)
	sec := eventXML("Security", 4946, 99001, changeAt.Add(2*time.Millisecond),
		"ProfileChanged", "All", "RuleId", ruleID, "RuleName", "updater")
	for _, order := range []struct {
		name   string
		first  []byte
		second []byte
	}{{"firewall first", fw, sec}, {"security first", sec, fw}} {
		t.Run(order.name, func(t *testing.T) {
			out := &syncBuffer{}
			p := newTestPipeline(t, alert.NewStreamWriter(out, "test", false), Config{})
			ctx := context.Background()
			if err := p.AddKnock(ctx, knock(changeAt.Add(-4*time.Second))); err != nil {
				t.Fatal(err)
			}
			for _, payload := range [][]byte{order.first, order.second} {
				if res := p.Handle(ctx, intake.Message{Transport: intake.TransportHTTP, Payload: payload, Received: changeAt.Add(time.Minute)}); res.Err != nil {
					t.Fatal(res.Err)
				}
			}
			if err := p.AddHandshake(ctx, handshake(changeAt.Add(2*time.Second), 450)); err != nil {
				t.Fatal(err)
			}
			if n := p.Engine().Stats().Changes; n != 1 {
				t.Errorf("engine holds %d changes, want 1", n)
			}
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], `"confidence":"high"`) || !strings.Contains(lines[0], `"event_id":2004`) {
				t.Fatalf("alerts:\n%s", out.String())
			}
			if s := p.Decoder().Stats(); s.Redundant != 1 {
				t.Errorf("decoder redundant = %d, want 1", s.Redundant)
			}
		})
	}
}
