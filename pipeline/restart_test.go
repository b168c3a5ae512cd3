package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// recordSink keeps what it was given; while down it refuses.
type recordSink struct {
	mu   sync.Mutex
	down bool
	got  []alert.Record
}

func (s *recordSink) Write(_ context.Context, recs []alert.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errors.New("sink down")
	}
	s.got = append(s.got, recs...)
	return nil
}

func (s *recordSink) Close() error { return nil }

func (s *recordSink) records() []alert.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]alert.Record(nil), s.got...)
}

// testClock is the pipeline's clock in these tests: the sample's time.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// process is one run of `knockwatch run` as far as the pipeline goes: the
// evidence log and the alert ledger in dir, a pipeline over them.
type process struct {
	log    *evidence.Log
	ledger *evidence.Ledger
	p      *Pipeline
	sink   *recordSink
}

func start(t *testing.T, dir string, clk *testClock, sinkDown bool) *process {
	t.Helper()
	lg, err := evidence.OpenLog(evidence.LogConfig{Dir: dir + "/evidence", MaxAge: 30 * time.Minute, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	ld, err := evidence.OpenLedger(evidence.LedgerConfig{Dir: dir + "/alerts", MaxAge: 2 * time.Hour, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	sink := &recordSink{down: sinkDown}
	p := newTestPipeline(t, sink, Config{Evidence: lg, Delivered: ld, Now: clk.now, FlushInterval: time.Millisecond, BatchSize: 1, CloseTimeout: 50 * time.Millisecond})
	if _, err := p.Rebuild(context.Background(), lg, clk.now()); err != nil {
		t.Fatal(err)
	}
	return &process{log: lg, ledger: ld, p: p, sink: sink}
}

// crash ends the process without the pipeline's final flush: what a
// kill -9 leaves is what the log and the ledger hold (their files are
// closed so the next process can lock them).
func (pr *process) crash() {
	pr.sink.mu.Lock()
	pr.sink.down = true // nothing more gets out
	pr.sink.mu.Unlock()
	_ = pr.log.Close()
	_ = pr.ledger.Close()
	// The pipeline's goroutine still retries the dead sink; stop it
	// without delivering (Close logs what was queued and lost).
	_ = pr.p.Close()
}

func (pr *process) stop(t *testing.T) {
	t.Helper()
	if err := pr.p.Close(); err != nil {
		t.Fatal(err)
	}
	pr.log.Close()
	pr.ledger.Close()
}

func highAlerts(t *testing.T, recs []alert.Record) int {
	t.Helper()
	n := 0
	for _, r := range recs {
		var a struct {
			Destination struct{ Port int } `json:"destination"`
			Knockwatch  struct{ Confidence string }
		}
		if err := json.Unmarshal(r.JSON, &a); err != nil {
			t.Fatal(err)
		}
		if a.Destination.Port != 450 || a.Knockwatch.Confidence != "high" {
			t.Fatalf("unexpected alert %s", r.JSON)
		}
		n++
	}
	return n
}

// A crash at every point between the knock and the alert's delivery,
// then a restart on the same state: the alert is delivered exactly once.
// (The lab test does the same with kill -9 of the real binary; this one
// shows the pipeline's part without privileges.)
func TestCrashAtEveryPointAlertsOnce(t *testing.T) {
	ctx := context.Background()
	knockAt := changeAt.Add(-4 * time.Second)
	steps := []struct {
		name string
		do   func(t *testing.T, p *Pipeline)
	}{
		{"knock", func(t *testing.T, p *Pipeline) {
			if err := p.AddKnock(ctx, knock(knockAt)); err != nil {
				t.Fatal(err)
			}
		}},
		{"event acknowledged", func(t *testing.T, p *Pipeline) {
			res := p.Handle(ctx, intake.Message{Transport: intake.TransportHTTP, Payload: payload(t), Received: changeAt.Add(20 * time.Second)})
			if res.Err != nil || res.Accepted != 15 {
				t.Fatalf("Handle: %+v", res)
			}
			if err := p.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}},
		{"handshake", func(t *testing.T, p *Pipeline) {
			if err := p.AddHandshake(ctx, handshake(changeAt.Add(30*time.Second), 450)); err != nil {
				t.Fatal(err)
			}
		}},
	}
	// crashAfter: how many steps the first process ran; heldAlert: its
	// sink was down (the alert made but not written when it died).
	for _, c := range []struct {
		name       string
		crashAfter int
		heldAlert  bool
	}{
		{"after the knock", 1, false},
		{"after the event's acknowledgement", 2, false},
		{"after the handshake, before the alert is written", 3, true},
		{"after the alert was written", 3, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			clk := &testClock{t: knockAt.Add(3 * time.Second)}
			first := start(t, dir, clk, c.heldAlert)
			for _, s := range steps[:c.crashAfter] {
				clk.set(clk.now().Add(10 * time.Second))
				s.do(t, first.p)
			}
			if c.crashAfter == 3 && !c.heldAlert {
				deadline := time.Now().Add(5 * time.Second)
				for len(first.sink.records()) == 0 && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
			}
			first.crash()
			clk.set(clk.now().Add(5 * time.Second))
			second := start(t, dir, clk, false)
			for _, s := range steps[c.crashAfter:] {
				clk.set(clk.now().Add(10 * time.Second))
				s.do(t, second.p)
			}
			second.stop(t)
			n1, n2 := highAlerts(t, first.sink.records()), highAlerts(t, second.sink.records())
			if n1+n2 != 1 {
				t.Fatalf("%d alerts before the crash + %d after = %d, want exactly 1", n1, n2, n1+n2)
			}
			st := second.p.Stats()
			if !st.Rebuilt || st.Replayed["knock"] != 1 {
				t.Fatalf("rebuild: %+v", st)
			}
			if c.crashAfter == 3 && !c.heldAlert && st.AlertsAlreadySent != 1 {
				t.Fatalf("the delivered alert was not recognised: %+v", st)
			}
			t.Logf("%s: alert delivered by the %s process", c.name, map[bool]string{true: "first", false: "restarted"}[n1 == 1])
		})
	}
}

// A medium alert delivered before the restart (the network alone showed
// the port opening), then the host event arrives after it: the restarted
// pipeline sends the high record as an upgrade of the same id, once.
func TestUpgradeAcrossRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	knockAt := changeAt.Add(-4 * time.Second)
	clk := &testClock{t: knockAt.Add(3 * time.Second)}
	first := start(t, dir, clk, false)
	if err := first.p.AddKnock(ctx, knock(knockAt)); err != nil {
		t.Fatal(err)
	}
	if err := first.p.AddHandshake(ctx, handshake(changeAt.Add(30*time.Second), 450)); err != nil {
		t.Fatal(err)
	}
	first.stop(t)
	got := first.sink.records()
	if len(got) != 1 || got[0].Action != "created" || !strings.Contains(string(got[0].JSON), `"confidence":"medium"`) {
		t.Fatalf("before the restart: %+v", got)
	}
	clk.set(changeAt.Add(time.Minute))
	second := start(t, dir, clk, false)
	res := second.p.Handle(ctx, intake.Message{Transport: intake.TransportHTTP, Payload: payload(t), Received: clk.now()})
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	second.stop(t)
	after := second.sink.records()
	if len(after) != 1 || after[0].ID != got[0].ID || after[0].Action != "upgraded" ||
		!strings.Contains(string(after[0].JSON), `"confidence":"high"`) {
		t.Fatalf("after the restart: %+v", after)
	}
	// A third start replays all of it and sends nothing.
	third := start(t, dir, clk, false)
	third.stop(t)
	if n := len(third.sink.records()); n != 0 || third.p.Stats().AlertsAlreadySent != 2 {
		t.Fatalf("third start sent %d records (already sent %d)", n, third.p.Stats().AlertsAlreadySent)
	}
}

// Evidence older than the rule's retention (plus lateness and skew) is not
// replayed: the rebuilt engine holds what the live one would hold.
func TestRebuildStartsAtRetention(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	knockAt := changeAt.Add(-4 * time.Second)
	clk := &testClock{t: knockAt.Add(3 * time.Second)}
	first := start(t, dir, clk, false)
	if err := first.p.AddKnock(ctx, knock(knockAt)); err != nil {
		t.Fatal(err)
	}
	first.stop(t)
	clk.set(knockAt.Add(first.p.cfg.Engine.Retention + first.p.cfg.Engine.SensorLateness + first.p.cfg.Engine.Skew + 3*time.Second))
	second := start(t, dir, clk, false)
	defer second.stop(t)
	if st := second.p.Stats(); st.Replayed["knock"] != 0 || second.log.Stats().Rebuild.Expired != 1 {
		t.Fatalf("a knock past retention was replayed: %+v %+v", st.Replayed, second.log.Stats().Rebuild)
	}
	if second.p.Engine().Stats().Pairs != 0 {
		t.Fatal("engine holds a pair after the rebuild")
	}
}

// failLog refuses every append, like a full disk.
type failLog struct{ appends int }

func (f *failLog) Append(context.Context, []evidence.Item) error {
	f.appends++
	return evidence.ErrNoSpace
}
func (f *failLog) Sync(context.Context) error { return nil }

// When the evidence log cannot store a change, the listener gets ErrBusy
// (no acknowledgement: the sender keeps the event and retries) but the
// engine has evaluated it; sensor records are evaluated too. Both are
// counted. The retry is recognised by the engine as the same record.
func TestEvidenceNotStored(t *testing.T) {
	ctx := context.Background()
	out := &syncBuffer{}
	fl := &failLog{}
	p := newTestPipeline(t, alert.NewStreamWriter(out, "test", false), Config{Evidence: fl})
	if err := p.AddKnock(ctx, knock(changeAt.Add(-4*time.Second))); !errors.Is(err, ErrNotStored) {
		t.Fatalf("AddKnock on a full disk: %v", err)
	}
	for range 2 {
		res := p.Handle(ctx, intake.Message{Transport: intake.TransportHTTP, Payload: payload(t), Received: changeAt.Add(20 * time.Second)})
		if !errors.Is(res.Err, intake.ErrBusy) || !errors.Is(res.Err, evidence.ErrNoSpace) {
			t.Fatalf("Handle on a full disk: %+v", res)
		}
	}
	if err := p.AddHandshake(ctx, handshake(changeAt.Add(30*time.Second), 450)); !errors.Is(err, ErrNotStored) {
		t.Fatal(err)
	}
	// The records the log refused were kept to the end: Close says they
	// are not stored.
	if err := p.Close(); !errors.Is(err, ErrNotStored) || !strings.Contains(err.Error(), "2 pieces of evidence") {
		t.Fatalf("close with the log still refusing: %v", err)
	}
	if n := strings.Count(out.String(), `"confidence":"high"`); n != 1 {
		t.Fatalf("%d high alerts while the log was failing, want 1 (detection goes on)", n)
	}
	st := p.Stats()
	es := p.Engine().Stats()
	if st.NotStored == 0 || st.Busy != 2 || es.Duplicates["change"] == 0 {
		t.Fatalf("pipeline %+v engine duplicates %v", st, es.Duplicates)
	}
}

// Think like the attacker: after a restart, re-sending the acknowledged
// host event and repeating the handshake's records (a forwarder replaying
// its queue, or an attacker with intake access hoping for a second,
// differently-timed alert to drown the first) gives nothing new: the
// rebuilt engine knows the record, the ledger knows the alert.
func TestResendAfterRestartGivesNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	knockAt := changeAt.Add(-4 * time.Second)
	clk := &testClock{t: knockAt.Add(3 * time.Second)}
	first := start(t, dir, clk, false)
	if err := first.p.AddKnock(ctx, knock(knockAt)); err != nil {
		t.Fatal(err)
	}
	if res := first.p.Handle(ctx, intake.Message{Transport: intake.TransportHTTP, Payload: payload(t), Received: changeAt.Add(20 * time.Second)}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if err := first.p.AddHandshake(ctx, handshake(changeAt.Add(30*time.Second), 450)); err != nil {
		t.Fatal(err)
	}
	first.stop(t)
	clk.set(changeAt.Add(time.Minute))
	second := start(t, dir, clk, false)
	if res := second.p.Handle(ctx, intake.Message{Transport: intake.TransportHTTP, Payload: payload(t), Received: clk.now()}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if err := second.p.AddHandshake(ctx, handshake(changeAt.Add(30*time.Second), 450)); err != nil {
		t.Fatal(err)
	}
	if err := second.p.AddKnock(ctx, knock(knockAt)); err != nil {
		t.Fatal(err)
	}
	second.stop(t)
	if n1, n2 := len(first.sink.records()), len(second.sink.records()); n1 != 1 || n2 != 0 {
		t.Fatalf("alerts: %d before, %d after the re-send; want 1 and 0", n1, n2)
	}
	if es := second.p.Engine().Stats(); es.Duplicates["change"] == 0 || es.Duplicates["handshake"] == 0 {
		t.Fatalf("re-sent evidence not recognised: %+v", es.Duplicates)
	}
}

// Think like the attacker: flooding evidence until the log's size bound
// removes the segment with the knock does not blind the running engine
// (it keeps the knock in memory under its own class-ordered caps); the
// removal is counted, so the operator sees that a restart now could not
// rebuild it.
func TestLogFloodDoesNotBlindLiveEngine(t *testing.T) {
	ctx := context.Background()
	knockAt := changeAt.Add(-4 * time.Second)
	clk := &testClock{t: knockAt.Add(3 * time.Second)}
	lg, err := evidence.OpenLog(evidence.LogConfig{Dir: t.TempDir(), MaxAge: time.Hour, MaxBytes: 64 << 10, SegmentBytes: 16 << 10, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	sink := &recordSink{}
	p := newTestPipeline(t, sink, Config{Evidence: lg, Now: clk.now, FlushInterval: time.Millisecond})
	if err := p.AddKnock(ctx, knock(knockAt)); err != nil {
		t.Fatal(err)
	}
	// Knocks of 3,000 spoofed sources on the same host.
	for i := range 3000 {
		k := knock(knockAt.Add(time.Duration(i) * time.Millisecond))
		k.Src = netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)})
		if err := p.AddKnock(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	st := lg.Stats()
	if st.RemovedSegments[evidence.ReasonSize] == 0 || st.Bytes > 64<<10 {
		t.Fatalf("the flood did not reach the size bound: %+v", st)
	}
	if res := p.Handle(ctx, intake.Message{Transport: intake.TransportHTTP, Payload: payload(t), Received: changeAt.Add(20 * time.Second)}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if err := p.AddHandshake(ctx, handshake(changeAt.Add(30*time.Second), 450)); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if n := highAlerts(t, sink.records()); n != 1 {
		t.Fatalf("%d alerts after the flood, want the attacker's", n)
	}
}

// The Firewall 2004 that replaced a Security 4946 of its rule change, and
// the forwarder each came from, survive a restart: the rebuilt engine
// holds one change, not the port-less 4946 beside the 2004 (which could
// give a medium alert the 2004 contradicts), and the stored changes still
// name their forwarder (fair eviction after a restart).
func TestReplacementAndOriginAcrossRestart(t *testing.T) {
	ctx := context.Background()
	const ruleID = "{5E1A2B3C-0000-4000-8000-000000000450}"
	fw := eventXML("Microsoft-Windows-Windows Firewall With Advanced Security/Firewall", 2004, 811, changeAt,
		"RuleId", ruleID, "RuleName", "updater", "Direction", "1", "Protocol", "6", "LocalPorts", "450", "Action", "3",
		"Active", "1", "ModifyingUser", "S-1-5-21-1-2-3-1001", "ModifyingApplication", `C:\Windows\System32\netsh.exe`)
	sec := eventXML("Security", 4946, 99001, changeAt.Add(2*time.Millisecond),
		"ProfileChanged", "All", "RuleId", ruleID, "RuleName", "updater")
	dir := t.TempDir()
	clk := &testClock{t: changeAt.Add(10 * time.Second)}
	first := start(t, dir, clk, false)
	for _, payload := range [][]byte{sec, fw} {
		res := first.p.Handle(ctx, intake.Message{Transport: intake.TransportHTTP, Payload: payload, Received: clk.now(),
			Remote: "192.0.2.10:50123", Meta: map[string]string{intake.MetaTokenName: "wec01"}})
		if res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	if err := first.p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := first.p.Engine().Stats().Changes; n != 1 {
		t.Fatalf("before the restart: %d changes", n)
	}
	first.stop(t)

	clk.set(clk.now().Add(5 * time.Second))
	second := start(t, dir, clk, false)
	defer second.stop(t)
	if st := second.p.Engine().Stats(); st.Changes != 1 || st.ChangesReplaced != 1 {
		t.Fatalf("after the restart: %d changes, %d replaced, want 1 and 1", st.Changes, st.ChangesReplaced)
	}
	var origins []string
	if _, err := second.log.Replay(time.Time{}, func(it evidence.Item) error {
		if it.Change != nil {
			origins = append(origins, it.Change.Origin)
			if it.Change.EventID == 2004 && (it.Change.Replaces == nil || it.Change.Replaces.RecordID != 99001) {
				t.Errorf("stored 2004 lost its Replaces: %+v", it.Change.Replaces)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(origins) != 2 || origins[0] != "token:wec01@192.0.2.10" || origins[1] != origins[0] {
		t.Fatalf("stored origins %q", origins)
	}
}

// alertSummary is what an analyst reads first of each alert record: port,
// confidence, action and the Windows event it cites.
func alertSummary(t *testing.T, recs []alert.Record) []string {
	t.Helper()
	var out []string
	for _, r := range recs {
		var a struct {
			Destination struct{ Port int } `json:"destination"`
			Event       struct{ Action string }
			Knockwatch  struct {
				Confidence string
				Change     *struct {
					EventID  int    `json:"event_id"`
					RecordID uint64 `json:"record_id"`
				}
			}
		}
		if err := json.Unmarshal(r.JSON, &a); err != nil {
			t.Fatal(err)
		}
		s := fmt.Sprintf("%d %s %s", a.Destination.Port, a.Knockwatch.Confidence, a.Event.Action)
		if c := a.Knockwatch.Change; c != nil {
			s += fmt.Sprintf(" %d/%d", c.EventID, c.RecordID)
		}
		out = append(out, s)
	}
	return out
}

// The Security 4946 that a Firewall 2004 replaced (Replaces) is sent again
// after a restart — a forwarder re-sending its queue, a WEC re-delivering.
// The restarted decoder has neither its record id nor the join state that
// made it redundant, so it emits the port-less 4946 again. It must not come
// back beside the 2004: a port-less change gives a medium alert for every
// port, so a knock followed by a connection to a port the 2004 does not
// open would alert only because of the restart. The alerts must be those
// of the same events in one process.
func TestReplacedRecordResentAfterRestart(t *testing.T) {
	ctx := context.Background()
	const ruleID = "{5E1A2B3C-0000-4000-8000-000000000450}"
	fw := eventXML("Microsoft-Windows-Windows Firewall With Advanced Security/Firewall", 2004, 811, changeAt,
		"RuleId", ruleID, "RuleName", "updater", "Direction", "1", "Protocol", "6", "LocalPorts", "450", "Action", "3",
		"Active", "1", "ModifyingUser", "S-1-5-21-1-2-3-1001", "ModifyingApplication", `C:\Windows\System32\netsh.exe`)
	sec := eventXML("Security", 4946, 99001, changeAt.Add(2*time.Millisecond),
		"ProfileChanged", "All", "RuleId", ruleID, "RuleName", "updater")
	// The attacker connects to a port the rule does not open (451, never
	// seen closed: no network-only medium alert either), then to 450.
	attack := func(p *Pipeline) {
		t.Helper()
		if err := p.AddKnock(ctx, knock(changeAt.Add(-4*time.Second))); err != nil {
			t.Fatal(err)
		}
		other := handshake(changeAt.Add(20*time.Second), 451)
		other.PortLastClosed = time.Time{}
		for _, h := range []any{other, handshake(changeAt.Add(30*time.Second), 450)} {
			if err := p.AddHandshake(ctx, h.(*sensor.Handshake)); err != nil {
				t.Fatal(err)
			}
		}
	}
	handle := func(p *Pipeline, payloads ...[]byte) {
		t.Helper()
		for _, pl := range payloads {
			if res := p.Handle(ctx, intake.Message{Transport: intake.TransportHTTP, Payload: pl, Received: changeAt.Add(10 * time.Second)}); res.Err != nil {
				t.Fatal(res.Err)
			}
		}
		if err := p.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	clk := &testClock{t: changeAt.Add(10 * time.Second)}

	// Reference: one process sees the same events.
	one := start(t, t.TempDir(), clk, false)
	handle(one.p, sec, fw, sec)
	attack(one.p)
	one.stop(t)
	want := alertSummary(t, one.sink.records())

	dir := t.TempDir()
	first := start(t, dir, clk, false)
	handle(first.p, sec, fw)
	first.stop(t)
	second := start(t, dir, clk, false)
	handle(second.p, sec)
	if n := second.p.Engine().Stats().Changes; n != 1 {
		t.Errorf("after the re-sent 4946 the engine holds %d changes, want the 2004 alone", n)
	}
	attack(second.p)
	second.stop(t)
	if got := alertSummary(t, second.sink.records()); !reflect.DeepEqual(got, want) {
		t.Fatalf("alerts after the restart and the re-sent 4946:\n  %q\nwant those of one process:\n  %q", got, want)
	}
	t.Logf("alerts in both: %q", want)
}
