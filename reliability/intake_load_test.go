package reliability

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	lumberclient "github.com/elastic/go-lumber/client/v2"

	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// Event intake under load (issue 7, "Load"): a bounded, paced client offers
// KNOCKWATCH_SOAK_RATE events/s (default 100,000) for KNOCKWATCH_SOAK_SECONDS
// (default 5; `make soak` uses 30) to the real HTTP or Beats listener, wired
// to the real decoder, pipeline, correlation engine and alert file writer
// as `knockwatch run` wires them. Every event the listener accepted (202
// counts, Beats ACKs) must be counted by the listener, the decoder and the
// pipeline, none lost; every refusal must be explicit and counted.

const (
	httpBatch    = 500  // events per HTTP request (JSON lines)
	httpWorkers  = 8    // concurrent HTTP requests at most
	beatsBatch   = 2048 // events per Lumberjack window (Winlogbeat's bulk_max_size)
	beatsWorkers = 4    // Beats connections
)

// loadStats is what the client saw, in events.
type loadStats struct {
	Target   uint64 // events the schedule called for
	Offered  uint64 // events sent (first attempts)
	Behind   uint64 // events the schedule called for while every worker was busy: not offered
	Accepted uint64 // events the server confirmed (202 "accepted", Beats ACK)
	Rejected uint64 // events the server confirmed as rejected (202 "rejected")
	Relevant uint64 // relevant events among Accepted
	Refusals uint64 // explicit refusals (HTTP 429 responses; Beats windows re-sent)
	Errors   uint64 // transport errors or unexpected statuses (must be 0)
	Requests uint64 // confirmed requests / windows
	Elapsed  time.Duration
}

func (s loadStats) rate(n uint64) float64 { return float64(n) / s.Elapsed.Seconds() }

// pace calls send for batch numbers 0, 1, ... on the schedule of rate
// events/s in batches of size, with at most workers batches in flight; a
// batch due while all are busy is counted as Behind (the bounded client
// does not queue without limit).
func pace(d time.Duration, rate, size, workers int, st *loadStats, mu *sync.Mutex, send func(batch uint64)) {
	slots := make(chan uint64)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range slots {
				send(b)
			}
		}()
	}
	start := time.Now()
	interval := time.Duration(float64(time.Second) * float64(size) / float64(rate))
	for b := uint64(0); ; b++ {
		due := start.Add(time.Duration(b) * interval)
		if due.Sub(start) >= d {
			break
		}
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
		mu.Lock()
		st.Target += uint64(size)
		mu.Unlock()
		select {
		case slots <- b:
		default:
			mu.Lock()
			st.Behind += uint64(size)
			mu.Unlock()
		}
	}
	close(slots)
	wg.Wait()
	st.Elapsed = time.Since(start)
}

// renderBatch renders events first .. first+n-1 of the mix.
func renderBatch(first uint64, n int, lines bool) (body []byte, events [][]byte, relevant uint64) {
	at := time.Now()
	for i := range n {
		start := len(body)
		var rel bool
		body, rel = mixEvent(body, first+uint64(i), at)
		if rel {
			relevant++
		}
		if lines {
			body = append(body, '\n')
		} else {
			events = append(events, body[start:len(body):len(body)])
		}
	}
	return body, events, relevant
}

// checkChain asserts that what the client had confirmed is exactly what the
// listener, the decoder and the pipeline counted.
func checkChain(t *testing.T, st loadStats, ls intake.Stats, p *pipeline.Pipeline) {
	t.Helper()
	if st.Errors != 0 {
		t.Errorf("client saw %d events fail without an explicit answer", st.Errors)
	}
	if ls.Accepted != st.Accepted || ls.Rejected != st.Rejected {
		t.Errorf("listener counted accepted %d rejected %d; client was told %d and %d", ls.Accepted, ls.Rejected, st.Accepted, st.Rejected)
	}
	if st.Rejected != 0 {
		t.Errorf("%d valid events rejected", st.Rejected)
	}
	ds := p.Decoder().Stats()
	var read, relevant, skipped, dups, rejected, emitted uint64
	for _, f := range ds.ByFormat {
		read += f.Read
		relevant += f.Relevant
		skipped += f.Skipped
		dups += f.Duplicates
		rejected += f.Rejected
		emitted += f.Emitted
	}
	if read != st.Accepted+st.Rejected {
		t.Errorf("decoder read %d events; the listener confirmed %d: lost or invented events", read, st.Accepted+st.Rejected)
	}
	if relevant != st.Relevant || skipped != st.Accepted-st.Relevant || dups != 0 || rejected != 0 {
		t.Errorf("decoder: relevant %d (want %d) skipped %d (want %d) duplicates %d rejected %d",
			relevant, st.Relevant, skipped, st.Accepted-st.Relevant, dups, rejected)
	}
	ps := p.Stats()
	var skippedChanges uint64
	for _, n := range ps.ChangesSkipped {
		skippedChanges += n
	}
	if ps.In["change"]+skippedChanges != emitted || emitted != st.Relevant {
		t.Errorf("pipeline took %d changes (+%d skipped) of the decoder's %d (client: %d relevant)",
			ps.In["change"], skippedChanges, emitted, st.Relevant)
	}
	var refused uint64 // the reasons exist at 0 from the start
	for _, n := range ps.Rejected["change"] {
		refused += n
	}
	if refused != 0 {
		t.Errorf("engine rejected changes: %v", ps.Rejected["change"])
	}
	if es := p.Engine().Stats(); es.In["change"] != ps.In["change"] {
		t.Errorf("engine counted %d changes in, pipeline fed %d", es.In["change"], ps.In["change"])
	}
	// Everything acknowledged is in the evidence log, durable.
	if es := evidenceOf(p).Stats(); es.Appended["change"] != ps.In["change"] || ps.NotStored != 0 || es.Fsyncs == 0 {
		t.Errorf("evidence log stored %d changes (%d fsyncs), the engine took %d, %d not stored",
			es.Appended["change"], es.Fsyncs, ps.In["change"], ps.NotStored)
	}
	if ps.Payloads != ls.Received+ls.Dropped[intake.ReasonBusy] && ls.Transport == intake.TransportHTTP {
		t.Errorf("pipeline saw %d payloads; listener handed %d and had %d refused busy", ps.Payloads, ls.Received, ls.Dropped[intake.ReasonBusy])
	}
}

func report(t *testing.T, name string, rate int, st loadStats, ls intake.Stats, p *pipeline.Pipeline) {
	es := p.Engine().Stats()
	t.Logf("RESULT %s: %.1fs, target %d ev/s; offered %.0f ev/s (%.0f%% of target), accepted %.0f ev/s (%.1f%% of offered); "+
		"%d events accepted in %d requests, %d relevant; explicit refusals %d, client behind schedule %d events, errors %d; "+
		"listener dropped %v; engine changes %d, change cap hits %d, evicted %d; evidence log %d changes in %d fsyncs",
		name, st.Elapsed.Seconds(), rate, st.rate(st.Offered), 100*float64(st.Offered)/float64(st.Target),
		st.rate(st.Accepted), 100*float64(st.Accepted)/float64(max(st.Offered, 1)),
		st.Accepted, st.Requests, st.Relevant, st.Refusals, st.Behind, st.Errors,
		nonZero(ls.Dropped), es.Changes, es.CapHits["changes"], es.Evicted["changes"],
		evidenceOf(p).Stats().Appended["change"], evidenceOf(p).Stats().Fsyncs)
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// postEvents sends one HTTP batch until it is taken, honouring 429 (with a
// short pause instead of the full Retry-After, to keep the test fast).
func postEvents(client *http.Client, url string, body []byte, st *loadStats, mu *sync.Mutex, relevant uint64, n int) {
	for {
		resp, err := client.Post(url, "application/x-ndjson", bytes.NewReader(body))
		if err != nil {
			mu.Lock()
			st.Errors += uint64(n)
			mu.Unlock()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusAccepted:
			var r struct{ Accepted, Rejected uint64 }
			if err := json.Unmarshal(b, &r); err != nil || r.Accepted+r.Rejected != uint64(n) {
				mu.Lock()
				st.Errors += uint64(n)
				mu.Unlock()
				return
			}
			mu.Lock()
			st.Accepted += r.Accepted
			st.Rejected += r.Rejected
			st.Relevant += relevant
			st.Requests++
			mu.Unlock()
			return
		case http.StatusTooManyRequests:
			if resp.Header.Get("Retry-After") == "" {
				mu.Lock()
				st.Errors += uint64(n)
				mu.Unlock()
				return
			}
			mu.Lock()
			st.Refusals++
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		default:
			mu.Lock()
			st.Errors += uint64(n)
			mu.Unlock()
			return
		}
	}
}

func TestIntakeLoadHTTP(t *testing.T) {
	rate := envInt(t, "KNOCKWATCH_SOAK_RATE", 100000)
	d := soakDuration(t)
	log := testLogger(t)
	sink, _ := fileSink(t)
	p := newPipeline(t, sink, pipeline.Config{}, log)
	defer p.Close()
	srv, err := intake.NewHTTPServer(intake.HTTPConfig{Addr: "127.0.0.1:0", Token: "load-test-token"}, p, log)
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + srv.Addr().String() + intake.EventsPath
	tr := &http.Transport{MaxIdleConnsPerHost: httpWorkers, MaxConnsPerHost: httpWorkers}
	client := &http.Client{Transport: authTransport{tr, "load-test-token"}, Timeout: 30 * time.Second}
	var st loadStats
	var mu sync.Mutex
	pace(d, rate, httpBatch, httpWorkers, &st, &mu, func(b uint64) {
		body, _, rel := renderBatch(b*httpBatch, httpBatch, true)
		mu.Lock()
		st.Offered += httpBatch
		mu.Unlock()
		postEvents(client, url, body, &st, &mu, rel, httpBatch)
	})
	tr.CloseIdleConnections()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	ls := srv.Stats()
	report(t, "http", rate, st, ls, p)
	checkChain(t, st, ls, p)
	if ls.Received != st.Requests {
		t.Errorf("listener handed %d requests to the pipeline, client got %d answers of 202", ls.Received, st.Requests)
	}
	if ls.Dropped[intake.ReasonBusy] != st.Refusals {
		t.Errorf("listener counted %d busy, client got %d 429s", ls.Dropped[intake.ReasonBusy], st.Refusals)
	}
	if st.Accepted == 0 || st.Offered+st.Behind != st.Target {
		t.Errorf("offered %d + behind %d != target %d (accepted %d)", st.Offered, st.Behind, st.Target, st.Accepted)
	}
}

// authTransport adds the bearer token.
type authTransport struct {
	rt    http.RoundTripper
	token string
}

func (a authTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+a.token)
	return a.rt.RoundTrip(r)
}

func rawEncoder(v any) ([]byte, error) { return v.([]byte), nil }

// sendBeats sends one window until it is acknowledged; a failed window is
// re-sent on a new connection, as Winlogbeat does.
func sendBeats(addr string, cl **lumberclient.SyncClient, events [][]byte) (resent uint64, err error) {
	batch := make([]any, len(events))
	for i, e := range events {
		batch[i] = e
	}
	for attempt := 0; ; attempt++ {
		if *cl == nil {
			c, err := lumberclient.SyncDial(addr, lumberclient.JSONEncoder(rawEncoder), lumberclient.Timeout(30*time.Second))
			if err != nil {
				return resent, fmt.Errorf("dial beats: %w", err)
			}
			*cl = c
		}
		n, err := (*cl).Send(batch)
		if err == nil && n == len(batch) {
			return resent, nil
		}
		_ = (*cl).Close()
		*cl = nil
		if attempt >= 3 {
			return resent, fmt.Errorf("send window: acked %d of %d: %v", n, len(batch), err)
		}
		resent++
	}
}

func TestIntakeLoadBeats(t *testing.T) {
	rate := envInt(t, "KNOCKWATCH_SOAK_RATE", 100000)
	d := soakDuration(t)
	log := testLogger(t)
	sink, _ := fileSink(t)
	p := newPipeline(t, sink, pipeline.Config{}, log)
	defer p.Close()
	srv, err := intake.NewBeatsServer(intake.BeatsConfig{Addr: "127.0.0.1:0"}, p, log)
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr().String()
	var st loadStats
	var mu sync.Mutex
	clients := make(chan *lumberclient.SyncClient, beatsWorkers)
	for range beatsWorkers {
		clients <- nil
	}
	pace(d, rate, beatsBatch, beatsWorkers, &st, &mu, func(b uint64) {
		_, events, rel := renderBatch(b*beatsBatch, beatsBatch, false)
		mu.Lock()
		st.Offered += beatsBatch
		mu.Unlock()
		cl := <-clients
		resent, err := sendBeats(addr, &cl, events)
		clients <- cl
		mu.Lock()
		defer mu.Unlock()
		st.Refusals += resent
		if err != nil {
			st.Errors += beatsBatch
			return
		}
		st.Accepted += beatsBatch
		st.Relevant += rel
		st.Requests++
	})
	for range beatsWorkers {
		if cl := <-clients; cl != nil {
			_ = cl.Close()
		}
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	ls := srv.Stats()
	report(t, "beats", rate, st, ls, p)
	if st.Refusals != 0 {
		// a re-sent window is counted again by the listener (at-least-once)
		t.Errorf("%d windows had to be re-sent under plain load", st.Refusals)
	}
	checkChain(t, st, ls, p)
	if ls.Received != st.Accepted {
		t.Errorf("listener handed %d events to the pipeline, client got %d acknowledged", ls.Received, st.Accepted)
	}
}
