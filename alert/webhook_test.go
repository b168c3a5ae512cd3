package alert

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// The receiver is down (nothing listens), then answers 503, then accepts:
// every record arrives exactly once, in the order written.
func TestWebhookOutageThenRecovery(t *testing.T) {
	ctx := context.Background()
	addr := downAddr(t)
	w := mustWebhook(t, testConfig(t, "http://"+addr+"/alerts", t.TempDir()))

	var want []Record
	for b := range 5 {
		batch := recs(fmt.Sprintf("down%d", b), 6)
		if err := w.Write(ctx, batch); err != nil {
			t.Fatalf("Write during outage: %v", err)
		}
		want = append(want, batch...)
	}
	waitFor(t, "failed attempts against a closed port", func() bool { return w.Stats().Errors >= 3 })
	if st := w.Stats(); st.SpooledRecords != 30 || st.Delivered != 0 || st.Written != 30 {
		t.Fatalf("during outage: %+v", st)
	}

	rv := newReceiver(t)
	rv.status.Store(http.StatusServiceUnavailable)
	serveAt(t, addr, rv)
	waitFor(t, "503 answers", func() bool { return rv.requests.Load() >= 3 })
	more := recs("late", 4)
	if err := w.Write(ctx, more); err != nil {
		t.Fatal(err)
	}
	want = append(want, more...)
	rv.status.Store(0)

	waitFor(t, "delivery", func() bool { return w.Stats().Delivered == uint64(len(want)) })
	if got := rv.received(); !slices.Equal(got, keys(want)) {
		t.Fatalf("received %v\nwant %v", got, keys(want))
	}
	st := w.Stats()
	if st.SpooledRecords != 0 || st.SpooledBytes != 0 || st.Retries == 0 || st.DeadLettered != 0 {
		t.Fatalf("after recovery: %+v", st)
	}
}

// A restart of the sink in the middle of an outage loses nothing and sends
// nothing twice, also not the records delivered before the outage.
func TestWebhookRestartDuringOutage(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	rv := newReceiver(t)
	addr := downAddr(t)
	srv := serveAt(t, addr, rv)
	cfg := testConfig(t, "http://"+addr+"/alerts", dir)
	cfg.SegmentBytes = 1 << 10 // several segments, removed as they are delivered

	w1, err := NewWebhook(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := recs("a", 10)
	if err := w1.Write(ctx, a); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "first delivery", func() bool { return w1.Stats().Delivered == 10 })

	rv.status.Store(http.StatusBadGateway)
	b := recs("b", 10)
	for _, r := range b {
		if err := w1.Write(ctx, []Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "failures", func() bool { return w1.Stats().Errors >= 2 })
	if err := w1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := w1.Write(ctx, recs("x", 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close: %v, want ErrClosed", err)
	}
	srv.Close() // now the port is closed entirely

	w2, err := NewWebhook(cfg)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if st := w2.Stats(); st.SpooledRecords != 10 {
		t.Fatalf("reopened spool holds %d records, want 10", st.SpooledRecords)
	}
	c := recs("c", 10)
	if err := w2.Write(ctx, c); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "failures after restart", func() bool { return w2.Stats().Errors >= 2 })
	rv.status.Store(0)
	serveAt(t, addr, rv)
	waitFor(t, "delivery after restart", func() bool { return w2.Stats().Delivered == 20 })
	if err := w2.Close(); err != nil {
		t.Fatal(err)
	}

	want := keys(slices.Concat(a, b, c))
	if got := rv.received(); !slices.Equal(got, want) {
		t.Fatalf("received %v\nwant %v", got, want)
	}
	// A third start finds nothing to send.
	w3 := mustWebhook(t, cfg)
	if st := w3.Stats(); st.SpooledRecords != 0 || st.SpooledBytes != 0 {
		t.Fatalf("after full delivery the spool holds %+v", st)
	}
	if err := w3.Close(); err != nil {
		t.Fatal(err)
	}
	if got := rv.received(); len(got) != len(want) {
		t.Fatalf("records sent again after restart: %d, want %d", len(got), len(want))
	}
	if segs := segmentFiles(t, dir); len(segs) > 1 {
		t.Fatalf("delivered segments left on disk: %v", segs)
	}
}

// Close delivers what is spooled when the receiver is up.
func TestWebhookCloseFlushes(t *testing.T) {
	rv := newReceiver(t)
	addr := downAddr(t)
	serveAt(t, addr, rv)
	w, err := NewWebhook(testConfig(t, "http://"+addr+"/alerts", t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	rs := recs("flush", 40)
	for i := 0; i < len(rs); i += 4 {
		if err := w.Write(context.Background(), rs[i:i+4]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := rv.received(); !slices.Equal(got, keys(rs)) {
		t.Fatalf("after Close the receiver has %d of %d records", len(got), len(rs))
	}
	if st := w.Stats(); st.SpooledRecords != 0 || st.Delivered != 40 {
		t.Fatalf("after Close: %+v", st)
	}
}

// A 400 for a batch isolates the rejected record: it goes to the dead-letter
// file, the others are delivered in order, and delivery goes on.
func TestWebhookDeadLetter(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	rv := newReceiver(t)
	rv.reject["bad-1"] = true
	addr := downAddr(t)
	serveAt(t, addr, rv)
	cfg := testConfig(t, "http://"+addr+"/alerts", dir)
	cfg.BatchRecords = 100
	w := mustWebhook(t, cfg)

	first := []Record{rec("ok-1", "created"), rec("ok-2", "created"), rec("bad-1", "created"), rec("ok-3", "created"), rec("ok-2", "upgraded")}
	if err := w.Write(ctx, first); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "dead letter", func() bool { st := w.Stats(); return st.Delivered == 4 && st.DeadLettered == 1 })
	later := recs("later", 5)
	if err := w.Write(ctx, later); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery after the dead letter", func() bool { return w.Stats().Delivered == 9 })
	want := []string{"ok-1/created", "ok-2/created", "ok-3/created", "ok-2/upgraded"}
	want = append(want, keys(later)...)
	if got := rv.received(); !slices.Equal(got, want) {
		t.Fatalf("received %v\nwant %v", got, want)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	f, err := os.Open(filepath.Join(dir, "dead-letter.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []deadLetterLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l deadLetterLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("dead-letter line %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	if len(lines) != 1 || lines[0].ID != "bad-1" || lines[0].Status != 400 || string(lines[0].Record) != string(first[2].JSON) {
		t.Fatalf("dead-letter file: %+v", lines)
	}
}

// Statuses: which are retried and which dead-lettered.
func TestWebhookStatusClasses(t *testing.T) {
	for _, tc := range []struct {
		status     int
		retryExtra []int
		retried    bool
	}{
		{http.StatusRequestTimeout, nil, true},
		{http.StatusTooManyRequests, nil, true},
		{http.StatusInternalServerError, nil, true},
		{http.StatusServiceUnavailable, nil, true},
		{http.StatusGatewayTimeout, nil, true},
		{http.StatusFound, nil, true},
		{http.StatusBadRequest, nil, false},
		{http.StatusUnauthorized, nil, false},
		{http.StatusUnauthorized, []int{401}, true},
		{http.StatusNotFound, nil, false},
		{http.StatusRequestEntityTooLarge, nil, false},
		{http.StatusUnprocessableEntity, nil, false},
	} {
		t.Run(fmt.Sprint(tc.status, tc.retryExtra), func(t *testing.T) {
			rv := newReceiver(t)
			rv.status.Store(int32(tc.status))
			addr := downAddr(t)
			serveAt(t, addr, rv)
			cfg := testConfig(t, "http://"+addr+"/alerts", t.TempDir())
			cfg.RetryStatuses = tc.retryExtra
			w := mustWebhook(t, cfg)
			if err := w.Write(context.Background(), recs("s", 2)); err != nil {
				t.Fatal(err)
			}
			if tc.retried {
				waitFor(t, "retries", func() bool { return w.Stats().Retries >= 3 })
				rv.status.Store(0)
				waitFor(t, "delivery", func() bool { return w.Stats().Delivered == 2 })
				if st := w.Stats(); st.DeadLettered != 0 {
					t.Fatalf("retryable status dead-lettered: %+v", st)
				}
				return
			}
			waitFor(t, "dead letters", func() bool { return w.Stats().DeadLettered == 2 })
			if st := w.Stats(); st.Delivered != 0 || st.Retries != 0 || st.SpooledRecords != 0 {
				t.Fatalf("rejected status: %+v", st)
			}
		})
	}
}

// A full spool refuses whole batches with ErrSpoolFull and counts them; it
// accepts again once the receiver drained it.
func TestWebhookSpoolFull(t *testing.T) {
	ctx := context.Background()
	addr := downAddr(t)
	cfg := testConfig(t, "http://"+addr+"/alerts", t.TempDir())
	cfg.MaxSpoolBytes = 8 << 10
	cfg.SegmentBytes = 1 << 10
	w := mustWebhook(t, cfg)

	var accepted []Record
	refusedAt := -1
	for i := range 200 {
		batch := recs(fmt.Sprintf("f%03d", i), 2)
		err := w.Write(ctx, batch)
		if errors.Is(err, ErrSpoolFull) {
			refusedAt = i
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		accepted = append(accepted, batch...)
	}
	if refusedAt < 0 {
		t.Fatal("spool never filled")
	}
	// Still full: refused again, counted again.
	if err := w.Write(ctx, recs("again", 3)); !errors.Is(err, ErrSpoolFull) {
		t.Fatalf("second write to a full spool: %v", err)
	}
	st := w.Stats()
	if st.Refused != 5 || st.Written != uint64(len(accepted)) || st.SpooledRecords != uint64(len(accepted)) ||
		st.SpoolDiskBytes > uint64(cfg.MaxSpoolBytes) || st.SpoolCapacityBytes != uint64(cfg.MaxSpoolBytes) {
		t.Fatalf("full spool stats: %+v (accepted %d)", st, len(accepted))
	}

	rv := newReceiver(t)
	serveAt(t, addr, rv)
	waitFor(t, "drain", func() bool { return w.Stats().Delivered == uint64(len(accepted)) })
	if got := rv.received(); !slices.Equal(got, keys(accepted)) {
		t.Fatalf("received %d records, want the %d accepted in order", len(got), len(accepted))
	}
	if st := w.Stats(); st.SpoolDiskBytes > uint64(cfg.SegmentBytes) {
		t.Fatalf("delivered segments not removed: %+v", st)
	}
	if err := w.Write(ctx, recs("after", 2)); err != nil {
		t.Fatalf("write after drain: %v", err)
	}
	waitFor(t, "delivery after drain", func() bool { return w.Stats().Delivered == uint64(len(accepted)+2) })
}

// Concurrent writers with a flaky receiver: everything arrives once, and
// each writer's records in its order.
func TestWebhookConcurrentWrites(t *testing.T) {
	rv := newReceiver(t)
	rv.failEvery.Store(4)
	addr := downAddr(t)
	serveAt(t, addr, rv)
	cfg := testConfig(t, "http://"+addr+"/alerts", t.TempDir())
	cfg.SegmentBytes = 4 << 10
	w := mustWebhook(t, cfg)

	const writers, writes = 8, 25
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range writes {
				batch := []Record{rec(fmt.Sprintf("g%d-%03d-a", g, i), "created"), rec(fmt.Sprintf("g%d-%03d-b", g, i), "created")}
				if err := w.Write(context.Background(), batch); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	total := writers * writes * 2
	waitFor(t, "delivery", func() bool { return w.Stats().Delivered == uint64(total) })
	got := rv.received()
	if len(got) != total {
		t.Fatalf("received %d, want %d", len(got), total)
	}
	last := map[string]string{}
	for _, k := range got {
		if rv.seen[k] != 1 {
			t.Fatalf("%s received %d times", k, rv.seen[k])
		}
		g := k[:2]
		if k <= last[g] {
			t.Fatalf("writer %s out of order: %s after %s", g, k, last[g])
		}
		last[g] = k
	}
}

// A request that hangs is cut by RequestTimeout and retried.
func TestWebhookRequestTimeout(t *testing.T) {
	rv := newReceiver(t)
	rv.hang.Store(true)
	addr := downAddr(t)
	serveAt(t, addr, rv)
	cfg := testConfig(t, "http://"+addr+"/alerts", t.TempDir())
	cfg.RequestTimeout = 50 * time.Millisecond
	w := mustWebhook(t, cfg)
	if err := w.Write(context.Background(), recs("t", 3)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "timeouts", func() bool { return w.Stats().Retries >= 2 })
	rv.hang.Store(false)
	waitFor(t, "delivery", func() bool { return w.Stats().Delivered == 3 })
}

// Close is bounded by CloseTimeout even while the receiver hangs and the
// request timeout is long; the undelivered records stay in the spool.
func TestWebhookBoundedClose(t *testing.T) {
	rv := newReceiver(t)
	rv.hang.Store(true)
	addr := downAddr(t)
	serveAt(t, addr, rv)
	cfg := testConfig(t, "http://"+addr+"/alerts", t.TempDir())
	cfg.RequestTimeout = time.Hour
	cfg.CloseTimeout = 100 * time.Millisecond
	w := mustWebhook(t, cfg)
	if err := w.Write(context.Background(), recs("u", 2)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a hanging request", func() bool { return rv.requests.Load() >= 1 })
	done := make(chan error, 1)
	go func() { done <- w.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Close did not return while the receiver hangs")
	}
	if st := w.Stats(); st.SpooledRecords != 2 || st.Delivered != 0 {
		t.Fatalf("after close: %+v", st)
	}
}
