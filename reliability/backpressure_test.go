package reliability

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"testing"
	"time"

	lumberclient "github.com/elastic/go-lumber/client/v2"

	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// TestIntakeBackpressureExplicit: while the alert sink fails (a disk error
// on the alert file) alerts stay queued; once the queue is at half its
// bound the listeners refuse events explicitly — HTTP 429 with Retry-After,
// Beats withholds the ACK — and count it; nothing is dropped. When the sink
// recovers every alert is written once and the refused events go through
// on retry.
func TestIntakeBackpressureExplicit(t *testing.T) {
	const alerts = 8
	log := testLogger(t)
	w, alertPath := fileSink(t)
	sink := &faultySink{Writer: w}
	sink.failing.Store(true)
	p := newPipeline(t, sink, pipeline.Config{MaxQueued: alerts, FlushInterval: 20 * time.Millisecond}, log)
	defer p.Close()
	hs, err := intake.NewHTTPServer(intake.HTTPConfig{Addr: "127.0.0.1:0"}, p, log)
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	bs, err := intake.NewBeatsServer(intake.BeatsConfig{Addr: "127.0.0.1:0", Keepalive: 100 * time.Millisecond}, p, log)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	url := "http://" + hs.Addr().String() + intake.EventsPath
	post := func(body []byte) (*http.Response, map[string]any) {
		t.Helper()
		resp, err := http.Post(url, "application/x-ndjson", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp, m
	}

	// alerts: host i's attacker knocks, host i opens 4444, the attacker connects
	ctx := context.Background()
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	var changes []byte
	for i := range alerts {
		if err := p.AddKnock(ctx, knock(i, t0)); err != nil {
			t.Fatal(err)
		}
		changes = append(ruleAdded(changes, hostName(i), 1_000_000+uint64(i), t0.Add(5*time.Second), 4444), '\n')
	}
	if resp, m := post(changes); resp.StatusCode != http.StatusAccepted || m["accepted"] != float64(alerts) {
		t.Fatalf("changes: %d %v", resp.StatusCode, m)
	}
	for i := range alerts {
		if err := p.AddHandshake(ctx, handshake(i, t0.Add(10*time.Second), 4444)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "all alerts queued behind the failing sink", func() bool { return p.Stats().AlertsQueued == alerts })

	// HTTP: explicit 429 with Retry-After, counted; nothing accepted
	var body []byte
	for n := range uint64(100) {
		body = append(logon(body, hostName(int(n%numHosts)), 2_000_000+n, time.Now()), '\n')
	}
	resp, _ := post(body)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("with the alert queue full: HTTP %d (Retry-After %q), want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if st := hs.Stats(); st.Dropped[intake.ReasonBusy] != 1 || st.Accepted != alerts {
		t.Fatalf("http stats after a 429: busy %d accepted %d", st.Dropped[intake.ReasonBusy], st.Accepted)
	}

	// Beats: the window is not acknowledged while the pipeline is busy
	var events []any
	for n := range uint64(50) {
		events = append(events, logon(nil, hostName(int(n%numHosts)), 3_000_000+n, time.Now()))
	}
	cl, err := lumberclient.SyncDial(bs.Addr().String(), lumberclient.JSONEncoder(rawEncoder), lumberclient.Timeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	acked := make(chan int, 1)
	go func() {
		n, err := cl.Send(events)
		if err != nil {
			n = -1
		}
		acked <- n
	}()
	busyBefore := p.Stats().Busy
	eventually(t, "the pipeline refusing the Beats events", func() bool { return p.Stats().Busy > busyBefore+2 })
	select {
	case n := <-acked:
		t.Fatalf("Beats window acknowledged (%d) while the pipeline refused its events", n)
	case <-time.After(300 * time.Millisecond):
	}

	// the sink recovers: every alert is written once, the refused events go in
	sink.failing.Store(false)
	select {
	case n := <-acked:
		if n != len(events) {
			t.Fatalf("Beats window: acked %d of %d after recovery", n, len(events))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Beats window never acknowledged after the sink recovered")
	}
	eventually(t, "HTTP accepted again", func() bool {
		resp, m := post(body)
		return resp.StatusCode == http.StatusAccepted && m["accepted"] == float64(100)
	})
	eventually(t, "alerts written", func() bool { return p.Stats().AlertsWritten == alerts })

	f, err := os.Open(alertPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ids := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var a struct {
			Event  struct{ ID string } `json:"event"`
			Source struct{ IP string } `json:"source"`
		}
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("alert line %q: %v", sc.Text(), err)
		}
		if prev, dup := ids[a.Event.ID]; dup {
			t.Errorf("alert %s written twice (%s, %s)", a.Event.ID, prev, a.Source.IP)
		}
		ids[a.Event.ID] = a.Source.IP
	}
	if len(ids) != alerts {
		t.Errorf("alert file has %d alerts, want %d: %v", len(ids), alerts, ids)
	}
	for i := range alerts {
		found := false
		for _, ip := range ids {
			found = found || ip == attackerAddr(i).String()
		}
		if !found {
			t.Errorf("no alert for attacker %s", attackerAddr(i))
		}
	}
	hst, bst, ps := hs.Stats(), bs.Stats(), p.Stats()
	if bst.Dropped[intake.ReasonBusy] == 0 || bst.Accepted != uint64(len(events)) {
		t.Errorf("beats: busy %d accepted %d, want the stall counted and %d accepted", bst.Dropped[intake.ReasonBusy], bst.Accepted, len(events))
	}
	if hst.Accepted != alerts+100 || hst.Dropped[intake.ReasonBusy] == 0 {
		t.Errorf("http: accepted %d busy %d", hst.Accepted, hst.Dropped[intake.ReasonBusy])
	}
	if ps.WriteErrors == 0 || sink.refused.Load() == 0 || ps.AlertsUndelivered != 0 {
		t.Errorf("pipeline: write errors %d (sink refused %d), undelivered %d", ps.WriteErrors, sink.refused.Load(), ps.AlertsUndelivered)
	}
	var read uint64
	for _, f := range p.Decoder().Stats().ByFormat {
		read += f.Read
	}
	if read != hst.Accepted+bst.Accepted {
		t.Errorf("decoder read %d events, listeners accepted %d", read, hst.Accepted+bst.Accepted)
	}
	t.Logf("RESULT backpressure: %d alerts held through %d failed sink writes and then written once; HTTP 429s %d, Beats stalls %d (pipeline refusals %d); all %d events accepted after recovery",
		alerts, ps.WriteErrors, hst.Dropped[intake.ReasonBusy], bst.Dropped[intake.ReasonBusy], ps.Busy, hst.Accepted+bst.Accepted)
}
