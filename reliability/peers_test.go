package reliability

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/internal/binding"
	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// Hostile peers (issue 16): forwarders, hosts and clients that play by the
// protocol and aim at the sensor. Every test goes through the real
// listeners into the real decoder, pipeline, engine and sinks, wired as
// `knockwatch run` wires them; docs/RELIABILITY.md lists the figures.

const (
	tokWEC   = "wec01-token-0123456789"
	tokRogue = "rogue-token-0123456789"
)

// peerEnv is an HTTP listener with two named tokens ("wec01", the real
// collector, and "rogue", a compromised forwarder) in front of a pipeline
// writing to an alert file.
type peerEnv struct {
	p      *pipeline.Pipeline
	http   *intake.HTTPServer
	url    string
	alerts string
	client *http.Client
}

func newPeerEnv(t *testing.T, pcfg pipeline.Config, hcfg intake.HTTPConfig) *peerEnv {
	log := testLogger(t)
	sink, path := fileSink(t)
	p := newPipeline(t, sink, pcfg, log)
	t.Cleanup(func() { _ = p.Close() })
	hcfg.Addr = "127.0.0.1:0"
	hcfg.Tokens = map[string]string{"wec01": tokWEC, "rogue": tokRogue}
	hs, err := intake.NewHTTPServer(hcfg, p, log)
	must(t, err)
	t.Cleanup(func() { _ = hs.Close() })
	return &peerEnv{p: p, http: hs, url: "http://" + hs.Addr().String() + intake.EventsPath, alerts: path,
		client: &http.Client{Timeout: 60 * time.Second}}
}

// send posts events (JSON lines) with token and requires a 202 that
// accepted them all.
func (e *peerEnv) send(t *testing.T, token string, events ...[]byte) {
	t.Helper()
	status, body, err := postAs(e.client, e.url, token, jsonLines(events))
	if err != nil || status != http.StatusAccepted || !strings.Contains(body, fmt.Sprintf(`"accepted":%d,`, len(events))) {
		t.Fatalf("post %d events: %d %.200s %v", len(events), status, body, err)
	}
}

// flood posts n rule-added events for host in bodies under the 10 MiB
// limit; event i is at at+i µs on port 10000+i.
func (e *peerEnv) flood(t *testing.T, token, host string, firstRecord uint64, at time.Time, n int) {
	t.Helper()
	var body []byte
	count := 0
	flush := func() {
		if count == 0 {
			return
		}
		status, resp, err := postAs(e.client, e.url, token, body)
		if err != nil || status != http.StatusAccepted {
			t.Fatalf("flood body: %d %.200s %v", status, resp, err)
		}
		body, count = body[:0], 0
	}
	for i := range n {
		body = ruleAdded(body, host, firstRecord+uint64(i), at.Add(time.Duration(i)*time.Microsecond), uint16(10000+i%50000))
		body = append(body, '\n')
		if count++; len(body) > 9<<20 {
			flush()
		}
	}
	flush()
}

// The victim's alert (knock, real Firewall 2004, handshake) is still high
// after a flood of more rule changes than the change table holds (65,536
// by default), each usable by a knock the flooder made on its host with
// three RST-answered SYNs: whether the flood names another host or the
// victim's own, comes from the victim's forwarder or another, before or
// after the real change.
func TestHostilePeerChangeFloodKeepsVictimAlert(t *testing.T) {
	const floodN = 70_000
	cases := []struct {
		name        string
		floodHost   int // host index the flood names
		floodToken  string
		floodBefore bool
	}{
		{"flood names another host, same forwarder", 1, tokWEC, false},
		{"flood names the victim's host, another forwarder, before the real change", 0, tokRogue, true},
		{"flood names the victim's host, same forwarder, after the real change", 0, tokWEC, false},
	}
	for ci, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newPeerEnv(t, pipeline.Config{}, intake.HTTPConfig{})
			ctx := context.Background()
			now := time.Now().Truncate(time.Millisecond)
			e.p.Advance(now)
			at := now.Add(-time.Minute)
			// The flooder knocks on the host its flood names: 3 RST-answered SYNs.
			fk := &sensor.Knock{Src: attackerAddr(20), Dst: hostAddr(c.floodHost), Distinct: 3, FlagTime: at.Add(2 * time.Second)}
			for j, port := range []uint16{6001, 6002, 6003} {
				fk.Touches = append(fk.Touches, sensor.Touch{Port: port, Time: at.Add(time.Duration(j) * time.Second), Kind: sensor.TouchREJ})
			}
			must(t, e.p.AddKnock(ctx, fk))
			must(t, e.p.AddKnock(ctx, knock(0, at)))
			realChange := ruleAdded(nil, hostName(0), 77, at.Add(5*time.Second), 4444)
			floodAt := at.Add(4 * time.Second)
			if c.floodBefore {
				e.flood(t, c.floodToken, hostName(c.floodHost), 1_000_000, floodAt, floodN)
				e.send(t, tokWEC, realChange)
			} else {
				e.send(t, tokWEC, realChange)
				e.flood(t, c.floodToken, hostName(c.floodHost), 1_000_000, floodAt, floodN)
			}
			must(t, e.p.AddHandshake(ctx, handshake(0, at.Add(30*time.Second), 4444)))
			must(t, e.p.Flush(ctx))
			victim := readAlerts(t, e.alerts)
			if len(victim) != 1 || victim[0].Knockwatch.Confidence != "high" || victim[0].Knockwatch.Change == nil ||
				victim[0].Knockwatch.Change.RecordID != 77 {
				t.Fatalf("victim's alert lost or weakened under the flood: %+v", victim)
			}
			es := e.p.Engine().Stats()
			if es.Changes > correlate.DefaultConfig().MaxChanges || es.Evicted["changes"] < floodN-uint64(correlate.DefaultConfig().MaxChanges) {
				t.Fatalf("change cap: %d stored, %d evicted", es.Changes, es.Evicted["changes"])
			}
			if len(es.TopEvictedHosts) == 0 || !strings.EqualFold(es.TopEvictedHosts[0].Key, hostName(c.floodHost)) {
				t.Fatalf("top evicted hosts %v, want %s first", es.TopEvictedHosts, hostName(c.floodHost))
			}
			t.Logf("RESULT change flood %d (%s): %d changes, cap %d; alert %s on record 77; evicted %v by reason %v; top hosts %v; top forwarders %v",
				ci, c.name, floodN, correlate.DefaultConfig().MaxChanges, victim[0].Knockwatch.Confidence, es.Evicted["changes"],
				es.EvictedByReason["changes"], es.TopEvictedHosts[:1], es.TopEvictedOrigins[:min(2, len(es.TopEvictedOrigins))])
		})
	}
}

// A forged record that claims the victim's computer and its next Firewall
// record id (a harmless rule, sent by a compromised forwarder) must not
// make the real 2004 that follows a duplicate: the real change is kept and
// the alert is high, with the conflict counted; with a binding the forged
// record is refused outright and counted.
func TestHostilePeerForgedRecordKeepsRealChange(t *testing.T) {
	forgeries := []struct {
		name   string
		forged func(at time.Time) []byte
	}{
		{"outbound rule", func(at time.Time) []byte {
			return bytes.Replace(ruleAdded(nil, hostName(0), 77, at, 4444), []byte(`"Direction":"1"`), []byte(`"Direction":"2"`), 1)
		}},
		{"inbound rule for another port", func(at time.Time) []byte { return ruleAdded(nil, hostName(0), 77, at, 9999) }},
	}
	for _, bound := range []bool{false, true} {
		for _, f := range forgeries {
			name := f.name + ", no binding"
			pcfg := pipeline.Config{}
			if bound {
				name = f.name + ", rogue bound to its own host"
				pol, err := binding.New(binding.Config{Bindings: []binding.Binding{
					{Name: "wec01", Token: "wec01", Hosts: []string{"*.corp.example"}},
					{Name: "rogue", Token: "rogue", Hosts: []string{strings.ToLower(hostName(9))}},
				}})
				must(t, err)
				pcfg.Bindings = pol
			}
			t.Run(name, func(t *testing.T) {
				e := newPeerEnv(t, pcfg, intake.HTTPConfig{})
				ctx := context.Background()
				now := time.Now().Truncate(time.Millisecond)
				e.p.Advance(now)
				at := now.Add(-time.Minute)
				must(t, e.p.AddKnock(ctx, knock(0, at)))
				status, body, err := postAs(e.client, e.url, tokRogue, f.forged(at.Add(4*time.Second)))
				want := `"accepted":1,"rejected":0`
				if bound {
					want = `"accepted":0,"rejected":1` // the rogue forwarder may not speak for the victim
				}
				if err != nil || status != http.StatusAccepted || !strings.Contains(body, want) {
					t.Fatalf("forged record: %d %s %v, want 202 %s", status, body, err, want)
				}
				e.send(t, tokWEC, ruleAdded(nil, hostName(0), 77, at.Add(5*time.Second), 4444))
				must(t, e.p.AddHandshake(ctx, handshake(0, at.Add(30*time.Second), 4444)))
				must(t, e.p.Flush(ctx))
				alerts := readAlerts(t, e.alerts)
				if len(alerts) != 1 || alerts[0].Knockwatch.Confidence != "high" || alerts[0].Knockwatch.Change == nil ||
					alerts[0].Knockwatch.Change.Ports != "4444" {
					t.Fatalf("the real change was lost to the forgery: %+v", alerts)
				}
				ds := e.p.Decoder().Stats()
				if bound {
					if ds.Rejected["host_not_allowed"] != 1 || pcfg.Bindings.Stats().Refused["rogue"] != 1 {
						t.Fatalf("forgery not refused by the binding: %+v %+v", ds.Rejected, pcfg.Bindings.Stats())
					}
				} else if ds.DedupeConflicts != 1 {
					t.Fatalf("conflict not counted: %+v", ds)
				}
				t.Logf("RESULT forged pre-claim (%s): alert high on the real rule (port 4444); decoder conflicts %d, host_not_allowed %d",
					name, ds.DedupeConflicts, ds.Rejected["host_not_allowed"])
			})
		}
	}
}

// With a file sink and a webhook whose spool is full (and whose receiver
// is down), every alert is in the file exactly once, events are still
// accepted (no 429) and the sensor never waits; the webhook's backlog is
// counted and bounded.
func TestHostilePeerWebhookSpoolFullFileOnce(t *testing.T) {
	log := testLogger(t)
	w, path := fileSink(t)
	down := reservePort(t) // nothing listens there: connection refused
	hook, err := alert.NewWebhook(alert.WebhookConfig{URL: "http://" + down + "/alerts", SpoolDir: t.TempDir(),
		MaxSpoolBytes: 16 << 10, SegmentBytes: 4 << 10, Logger: log})
	must(t, err)
	const maxBacklog = 8
	fan := alert.NewFanoutConfig(alert.FanoutConfig{MaxBacklog: maxBacklog, Logger: log}, w, hook)
	// A small queue: a fan-out that failed as a whole would fill it (429)
	// within a few alerts.
	p := newPipeline(t, fan, pipeline.Config{FlushInterval: 20 * time.Millisecond, MaxQueued: 8, BatchSize: 2}, log)
	defer p.Close()
	hs, err := intake.NewHTTPServer(intake.HTTPConfig{Addr: "127.0.0.1:0", Token: tokWEC}, p, log)
	must(t, err)
	defer hs.Close()
	url := "http://" + hs.Addr().String() + intake.EventsPath
	client := &http.Client{Timeout: 30 * time.Second}
	ctx := context.Background()
	start := time.Now().Add(-10 * time.Minute).Truncate(time.Millisecond)
	const n = numHosts
	refused := 0
	for i := range n {
		at := start.Add(time.Duration(i) * time.Second)
		must(t, p.AddKnock(ctx, knock(i, at)))
		status, body, err := postAs(client, url, tokWEC, ruleAdded(nil, hostName(i), 9_000_000+uint64(i), at.Add(5*time.Second), 4444))
		if err != nil || status != http.StatusAccepted {
			refused++
			t.Errorf("event %d: %d %s %v", i, status, body, err)
		}
		t0 := time.Now()
		must(t, p.AddHandshake(ctx, handshake(i, at.Add(10*time.Second), 4444)))
		if d := time.Since(t0); d > time.Second {
			t.Errorf("the sensor's record waited %v", d)
		}
		time.Sleep(30 * time.Millisecond) // a few flushes: each would have re-written a failed batch
	}
	eventually(t, "every alert written", func() bool { return p.Stats().AlertsQueued == 0 && p.Stats().AlertsEmitted == n })
	time.Sleep(300 * time.Millisecond)
	seen := map[string]int{}
	for _, a := range readAlerts(t, path) {
		seen[a.Event.ID+"/"+a.Event.Action]++
	}
	for k, c := range seen {
		if c != 1 {
			t.Errorf("alert %s is %d times in the file", k, c)
		}
	}
	if len(seen) != n {
		t.Fatalf("file holds %d distinct alerts, want %d", len(seen), n)
	}
	st := alert.StatsOf(fan)
	var hs0 alert.Stats
	for _, s := range st {
		if s.Kind == "webhook" {
			hs0 = s
		}
	}
	ps := p.Stats()
	if hs0.Refused == 0 || hs0.Backlog > maxBacklog || hs0.Backlog+hs0.BacklogDropped+hs0.Written < n || ps.Waits != 0 || ps.Busy != 0 || refused != 0 {
		t.Fatalf("webhook %+v; pipeline waits %d busy %d; events refused %d", hs0, ps.Waits, ps.Busy, refused)
	}
	t.Logf("RESULT webhook spool full (16 KiB) and receiver down: %d alerts, each once in the file; %d events accepted, 0 refused; "+
		"sensor waits 0; webhook spooled %d, refused %d writes' records, backlog %d (bound %d), dropped from the backlog %d",
		n, n, hs0.Written, hs0.Refused, hs0.Backlog, maxBacklog, hs0.BacklogDropped)
}

// An admin application named by its base name (the documented example,
// ccmexec.exe) does not suppress the attacker's renamed tool in a
// user-writable directory; the real agent under C:\Windows stays
// suppressed.
func TestHostilePeerRenamedToolNotSuppressed(t *testing.T) {
	ec := correlate.DefaultConfig()
	ec.Suppression.AdminApplications = []string{"ccmexec.exe"}
	e := newPeerEnv(t, pipeline.Config{Engine: ec}, intake.HTTPConfig{})
	ctx := context.Background()
	now := time.Now().Truncate(time.Millisecond)
	e.p.Advance(now)
	at := now.Add(-2 * time.Minute)
	for i, app := range []string{`C:\\Users\\Public\\Downloads\\ccmexec.exe`, `C:\\Windows\\CCM\\CcmExec.exe`} {
		ev := bytes.Replace(ruleAdded(nil, hostName(i), 5000+uint64(i), at.Add(5*time.Second), 4444),
			[]byte(`C:\\Windows\\System32\\netsh.exe`), []byte(app), 1)
		must(t, e.p.AddKnock(ctx, knock(i, at)))
		e.send(t, tokWEC, ev)
		must(t, e.p.AddHandshake(ctx, handshake(i, at.Add(10*time.Second), 4444)))
	}
	must(t, e.p.Flush(ctx))
	alerts := readAlerts(t, e.alerts)
	if len(alerts) != 1 || alerts[0].Knockwatch.Confidence != "high" || alerts[0].Knockwatch.Change == nil ||
		!strings.Contains(alerts[0].Knockwatch.Change.ModifyingApplication, `Downloads`) {
		t.Fatalf("alerts %+v: want one high alert, for the renamed tool", alerts)
	}
	if s := e.p.Engine().Stats(); s.Suppressed[correlate.ReasonAdminActor] != 1 {
		t.Fatalf("the real agent's change was not suppressed: %v", s.Suppressed)
	}
	t.Logf("RESULT renamed tool: C:\\Users\\Public\\Downloads\\ccmexec.exe -> alert high; C:\\Windows\\CCM\\CcmExec.exe -> suppressed (admin_actor)")
}
