package reliability

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	lumberclient "github.com/elastic/go-lumber/client/v2"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// Faults (issue 7, "Faults") that need no live sensor: a Beats forwarder
// whose connection breaks mid-window, mid-batch or before the ACK, and the
// alert webhook receiver down for KNOCKWATCH_OUTAGE_SECONDS (default 2; the
// issue's minute is `make soak`).

// cutConn breaks a forwarder's connection at a chosen point: after
// writeBudget bytes of the window (mid-window), or when the client starts
// waiting for the ACK, once waitBeforeClose returns (mid-batch or after the
// whole batch went through the server, so the ACK is lost).
type cutConn struct {
	net.Conn
	writeBudget     int // < 0: no cut while writing
	waitBeforeClose func()
	cut             atomic.Bool
}

var errCut = errors.New("connection cut by the test")

func (c *cutConn) Write(p []byte) (int, error) {
	if c.writeBudget >= 0 {
		if len(p) > c.writeBudget {
			n, _ := c.Conn.Write(p[:c.writeBudget])
			c.writeBudget = 0
			c.cut.Store(true)
			_ = c.Conn.Close()
			return n, errCut
		}
		c.writeBudget -= len(p)
	}
	return c.Conn.Write(p)
}

func (c *cutConn) Read(p []byte) (int, error) {
	if c.waitBeforeClose != nil && !c.cut.Load() {
		c.waitBeforeClose()
		c.cut.Store(true)
		_ = c.Conn.Close()
		return 0, errCut
	}
	return c.Conn.Read(p)
}

// TestBeatsDisconnectResendCountedOnce: a Winlogbeat-like forwarder sends
// windows and re-sends every window that was not acknowledged, over a
// connection the test breaks at random points: mid-window (nothing of it
// is handled), mid-batch (the server finishes handling the orphaned batch)
// and after the batch (the ACK is lost). Every event is handled at least
// once; every relevant event reaches the engine exactly once (the decoder
// drops the re-sent ones by computer, channel and record id), and exactly
// the re-sent relevant events are counted as duplicates.
func TestBeatsDisconnectResendCountedOnce(t *testing.T) {
	const windows, size = 40, 256
	log := testLogger(t)
	sink, _ := fileSink(t)
	p := newPipeline(t, sink, pipeline.Config{}, log)
	defer p.Close()
	srv, err := intake.NewBeatsServer(intake.BeatsConfig{Addr: "127.0.0.1:0"}, p, log)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	rng := rand.New(rand.NewPCG(7, 7))
	var relevantSent, relevantResentAfterHandling, attempts uint64
	cuts := map[string]int{}
	handledBy := func(n uint64) func() {
		return func() {
			eventually(t, "the server handling the window", func() bool { return srv.Stats().Received >= n })
		}
	}
	for w := range uint64(windows) {
		_, events, rel := renderBatch(w*size, size, false)
		relevantSent += rel
		batch := make([]any, len(events))
		for i, e := range events {
			batch[i] = e
		}
		for try := 0; ; try++ {
			if try > 10 {
				t.Fatalf("window %d never acknowledged", w)
			}
			attempts++
			raw, err := net.Dial("tcp", srv.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			base := srv.Stats().Received
			c := &cutConn{Conn: raw, writeBudget: -1}
			mode := "clean"
			if try < 2 { // at most two breaks per window, then it goes through
				switch rng.IntN(4) {
				case 1:
					mode, c.writeBudget = "mid-window", 10+rng.IntN(size*100)
				case 2:
					mode, c.waitBeforeClose = "mid-batch", handledBy(base+uint64(size/2))
				case 3:
					mode, c.waitBeforeClose = "ack-lost", handledBy(base+uint64(size))
				}
			}
			cl, err := lumberclient.NewSyncClientWithConn(c, lumberclient.JSONEncoder(rawEncoder), lumberclient.Timeout(20*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			n, err := cl.Send(batch)
			_ = cl.Close()
			if err == nil && n == size {
				if mode != "clean" && mode != "mid-window" {
					t.Fatalf("window %d acknowledged although the test cut the connection (%s)", w, mode)
				}
				break
			}
			cuts[mode]++
			if mode == "mid-batch" || mode == "ack-lost" {
				// the server goes on with the orphaned batch to its end
				eventually(t, "the orphaned batch handled", func() bool { return srv.Stats().Received >= base+size })
				relevantResentAfterHandling += rel
			}
		}
	}
	eventually(t, "every handled event counted", func() bool {
		st := srv.Stats()
		return st.Received == st.Accepted && st.ConnectionsOpen == 0
	})
	ds := p.Decoder().Stats()
	var relevant, dups uint64
	for _, f := range ds.ByFormat {
		relevant += f.Relevant
		dups += f.Duplicates
	}
	ps := p.Stats()
	if relevant != relevantSent || ps.In["change"] != relevantSent {
		t.Errorf("relevant events: sent %d, decoder counted %d unique, engine got %d: want all, once", relevantSent, relevant, ps.In["change"])
	}
	if dups != relevantResentAfterHandling {
		t.Errorf("decoder counted %d duplicates; %d relevant events were re-sent after the server had handled them", dups, relevantResentAfterHandling)
	}
	if es := p.Engine().Stats(); es.Duplicates["change"] != 0 {
		t.Errorf("engine saw %d duplicate changes: the decoder let re-sent events through", es.Duplicates["change"])
	}
	st := srv.Stats()
	if st.Received != uint64(windows*size)+uint64(cuts["mid-batch"]+cuts["ack-lost"])*size {
		t.Errorf("listener handled %d events: want every window once plus every window handled before its cut again", st.Received)
	}
	if cuts["mid-window"] == 0 || cuts["mid-batch"] == 0 || cuts["ack-lost"] == 0 {
		t.Fatalf("not every kind of cut happened: %v", cuts)
	}
	t.Logf("RESULT beats disconnects: %d windows of %d events in %d attempts, cuts %v; listener handled %d events; "+
		"%d relevant sent, %d counted once by decoder and engine, %d re-sent relevant dropped as duplicates; listener dropped %v",
		windows, size, attempts, cuts, st.Received, relevantSent, relevant, dups, nonZero(st.Dropped))
}

// receiver is the alert webhook's far end: it records every alert it got,
// by event.id and event.action.
type receiver struct {
	mu   sync.Mutex
	seen map[string]int
	reqs atomic.Uint64
}

func (rv *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rv.reqs.Add(1)
	b, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	rv.mu.Lock()
	defer rv.mu.Unlock()
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var a struct {
			Event struct{ ID, Action string } `json:"event"`
		}
		if err := json.Unmarshal([]byte(line), &a); err != nil || a.Event.ID == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		rv.seen[a.Event.ID+"/"+a.Event.Action]++
	}
	w.WriteHeader(http.StatusOK)
}

func (rv *receiver) snapshot() map[string]int {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	out := make(map[string]int, len(rv.seen))
	for k, v := range rv.seen {
		out[k] = v
	}
	return out
}

// serveReceiver serves rv on addr until the returned stop.
func serveReceiver(t *testing.T, addr string, rv *receiver) func() {
	t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the port was ours a moment ago
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rv, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }
}

// TestWebhookOutageThroughPipeline: alerts made by the engine while the
// webhook receiver is down (connection refused) are spooled on disk; the
// sensor is even restarted during the outage (the pipeline and its sinks
// closed and reopened on the same spool); once the receiver is back every
// alert arrives, each exactly once.
func TestWebhookOutageThroughPipeline(t *testing.T) {
	outage := time.Duration(envInt(t, "KNOCKWATCH_OUTAGE_SECONDS", 2)) * time.Second
	log := testLogger(t)
	rv := &receiver{seen: map[string]int{}}
	// reserve a port, then go down
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	spool := t.TempDir()
	open := func() (*pipeline.Pipeline, *alert.Webhook) {
		hook, err := alert.NewWebhook(alert.WebhookConfig{URL: "http://" + addr + "/alerts", SpoolDir: spool, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		w, _ := fileSink(t)
		return newPipeline(t, alert.NewFanout(w, hook), pipeline.Config{FlushInterval: 20 * time.Millisecond}, log), hook
	}
	ctx := context.Background()
	t0 := time.Now().Add(-10 * time.Minute).Truncate(time.Millisecond)
	// one alert per host: knock, rule added, first handshake
	makeAlerts := func(p *pipeline.Pipeline, from, to int) {
		for i := from; i < to; i++ {
			at := t0.Add(time.Duration(i) * time.Second)
			if err := p.AddKnock(ctx, knock(i, at)); err != nil {
				t.Fatal(err)
			}
			res := p.Handle(ctx, intake.Message{Transport: intake.TransportHTTP, Received: time.Now(),
				Payload: ruleAdded(nil, hostName(i), 5_000_000+uint64(i), at.Add(5*time.Second), 4444)})
			if res.Accepted != 1 || res.Err != nil {
				t.Fatalf("change %d: %+v", i, res)
			}
			if err := p.AddHandshake(ctx, handshake(i, at.Add(10*time.Second), 4444)); err != nil {
				t.Fatal(err)
			}
		}
	}
	start := time.Now()
	p, hook := open()
	makeAlerts(p, 0, numHosts/2)
	eventually(t, "delivery attempts failing", func() bool { return hook.Stats().Errors >= 1 })
	if err := p.Close(); err != nil { // restart during the outage
		t.Fatal(err)
	}
	first := p.Stats().AlertsWritten
	p, hook = open()
	defer p.Close()
	makeAlerts(p, numHosts/2, numHosts)
	eventually(t, "all alerts written", func() bool { return p.Stats().AlertsWritten == numHosts-first })
	if st := hook.Stats(); st.Delivered != 0 || st.SpooledRecords != numHosts {
		t.Fatalf("during the outage: delivered %d, spooled %d (want 0 and %d)", st.Delivered, st.SpooledRecords, numHosts)
	}
	if left := outage - time.Since(start); left > 0 {
		time.Sleep(left)
	}
	errorsDuringOutage := hook.Stats().Errors
	stop := serveReceiver(t, addr, rv)
	defer stop()
	deadline := time.Now().Add(alert.DefaultMaxBackoff + 10*time.Second)
	for hook.Stats().Delivered < numHosts && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	back := time.Since(start) - outage
	got := rv.snapshot()
	if len(got) != numHosts {
		t.Fatalf("receiver got %d distinct alerts, want %d (webhook %+v)", len(got), numHosts, hook.Stats())
	}
	for k, n := range got {
		if n != 1 {
			t.Errorf("alert %s delivered %d times", k, n)
		}
	}
	st := hook.Stats()
	if st.SpooledRecords != 0 || st.DeadLettered != 0 {
		t.Errorf("after recovery: spooled %d, dead-lettered %d", st.SpooledRecords, st.DeadLettered)
	}
	t.Logf("RESULT webhook outage: %s down (connection refused) with a restart in the middle; %d alerts spooled, %d failed attempts; "+
		"all %d delivered once %s after the receiver returned, in %d requests",
		outage, numHosts, errorsDuringOutage, numHosts, back.Round(time.Millisecond), rv.reqs.Load())
}
