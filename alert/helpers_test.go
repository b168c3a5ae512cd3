package alert

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rec builds a small ECS-shaped alert record.
func rec(id, action string) Record {
	body := fmt.Sprintf(`{"@timestamp":"2026-11-27T17:00:00Z","event":{"kind":"alert","id":%q,"action":%q},"rule":{"id":"AN0842"},"source":{"ip":"192.0.2.7"},"destination":{"ip":"198.51.100.4","port":3389}}`, id, action)
	return Record{ID: id, Action: action, JSON: []byte(body)}
}

func recs(prefix string, n int) []Record {
	out := make([]Record, n)
	for i := range out {
		out[i] = rec(fmt.Sprintf("%s-%03d", prefix, i), "created")
	}
	return out
}

func keys(rs []Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID + "/" + r.Action
	}
	return out
}

// receiver is a real HTTP alert receiver: it parses the body (NDJSON or a
// JSON array), checks the ids header against the body and records the
// (id, action) pairs of every request it answered with 2xx.
type receiver struct {
	t        testing.TB
	status   atomic.Int32 // answer this status instead of accepting (0: accept)
	hang     atomic.Bool  // hold requests until the client gives up
	requests atomic.Int64
	// failEvery makes every n-th request fail with 503 (0: never).
	failEvery atomic.Int64
	wantAuth  string

	mu     sync.Mutex
	got    []string
	seen   map[string]int
	reject map[string]bool // ids answered with 400
}

func newReceiver(t testing.TB) *receiver {
	return &receiver{t: t, seen: map[string]int{}, reject: map[string]bool{}}
}

func (rv *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := rv.requests.Add(1)
	if rv.hang.Load() {
		// Read the body first: only then does the server notice the client
		// going away and cancel the request context.
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
		return
	}
	if rv.wantAuth != "" && r.Header.Get("Authorization") != rv.wantAuth {
		http.Error(w, "no", http.StatusUnauthorized)
		return
	}
	if s := rv.status.Load(); s != 0 {
		w.Header().Set("Retry-After", "0")
		http.Error(w, "receiver unavailable", int(s))
		return
	}
	if fe := rv.failEvery.Load(); fe > 0 && n%fe == 0 {
		http.Error(w, "flaky", http.StatusServiceUnavailable)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read", http.StatusBadRequest)
		return
	}
	var objs []json.RawMessage
	if r.Header.Get("Content-Type") == "application/json" {
		if err := json.Unmarshal(body, &objs); err != nil {
			rv.t.Errorf("receiver: body is not a JSON array: %v", err)
		}
	} else {
		if r.Header.Get("Content-Type") != "application/x-ndjson" || len(body) == 0 || body[len(body)-1] != '\n' {
			rv.t.Errorf("receiver: content type %q, body not newline-terminated", r.Header.Get("Content-Type"))
		}
		for _, line := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
			objs = append(objs, json.RawMessage(line))
		}
	}
	var pairs []string
	rejected := false
	for _, o := range objs {
		var a struct {
			Event struct{ ID, Action string } `json:"event"`
		}
		if err := json.Unmarshal(o, &a); err != nil {
			rv.t.Errorf("receiver: line is not JSON: %v: %q", err, o)
			continue
		}
		pairs = append(pairs, a.Event.ID+"/"+a.Event.Action)
		rv.mu.Lock()
		rejected = rejected || rv.reject[a.Event.ID]
		rv.mu.Unlock()
	}
	var hdr []string
	for _, p := range strings.Split(r.Header.Get(IDsHeader), ",") {
		id, action, _ := strings.Cut(p, "/")
		id, _ = url.QueryUnescape(id)
		action, _ = url.QueryUnescape(action)
		hdr = append(hdr, id+"/"+action)
	}
	if strings.Join(hdr, ",") != strings.Join(pairs, ",") || r.Header.Get(CountHeader) != fmt.Sprint(len(pairs)) {
		rv.t.Errorf("receiver: ids header %q / count %q do not match body %q", r.Header.Get(IDsHeader), r.Header.Get(CountHeader), pairs)
	}
	if rejected {
		http.Error(w, "schema violation", http.StatusBadRequest)
		return
	}
	rv.mu.Lock()
	for _, p := range pairs {
		rv.got = append(rv.got, p)
		rv.seen[p]++
	}
	rv.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

func (rv *receiver) received() []string {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return append([]string(nil), rv.got...)
}

// downAddr returns a loopback address nothing listens on (yet).
func downAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// serveAt starts h on addr (a port freed by downAddr).
func serveAt(t testing.TB, addr string, h http.Handler) *httptest.Server {
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// testConfig is a webhook configuration with short backoffs for tests.
func testConfig(t testing.TB, url, dir string) WebhookConfig {
	return WebhookConfig{
		URL:            url,
		SpoolDir:       dir,
		BatchRecords:   7,
		RequestTimeout: 2 * time.Second,
		InitialBackoff: 2 * time.Millisecond,
		MaxBackoff:     20 * time.Millisecond,
		CloseTimeout:   500 * time.Millisecond,
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func mustWebhook(t testing.TB, cfg WebhookConfig) *Webhook {
	t.Helper()
	w, err := NewWebhook(cfg)
	if err != nil {
		t.Fatalf("NewWebhook: %v", err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}
