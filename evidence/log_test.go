package evidence

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
)

// fakeClock is a settable clock for the age bound.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

func openTestLog(t *testing.T, cfg LogConfig) (*Log, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	cfg.Logger = zap.New(core)
	if cfg.MaxAge == 0 {
		cfg.MaxAge = 21 * time.Minute
	}
	l, err := OpenLog(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, logs
}

// mix returns n items of every kind, event times one second apart from at.
func mix(n int, at time.Time) []Item {
	var out []Item
	for i := range n {
		ti := at.Add(time.Duration(i) * time.Second)
		src := fmt.Sprintf("198.51.100.%d", i%250+1)
		switch i % 3 {
		case 0:
			out = append(out, knockItem(src, "10.0.0.5", ti.Add(-3*time.Second), 7000, 8000, 9000))
		case 1:
			out = append(out, changeItem("WIN-LAB01", 4444, ti, uint64(i)))
		default:
			out = append(out, handshakeItem(src, "10.0.0.5", 4444, ti))
		}
	}
	return out
}

func replayAll(t *testing.T, l *Log, since time.Time) ([]Item, ReplayStats) {
	t.Helper()
	var got []Item
	rs, err := l.Replay(since, func(it Item) error { got = append(got, it); return nil })
	if err != nil {
		t.Fatal(err)
	}
	return got, rs
}

func sameItems(t *testing.T, got, want []Item) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d items, want %d", len(got), len(want))
	}
	for i := range want {
		w := want[i]
		normalize(&w)
		if !reflect.DeepEqual(got[i], w) {
			t.Fatalf("item %d:\n got %+v\nwant %+v", i, show(got[i]), show(w))
		}
	}
}

// Appended batches come back in order after a close and a reopen; the
// replay start skips what is older in event time; appends after the reopen
// go to a new segment.
func TestLogAppendReplayReopen(t *testing.T) {
	dir := t.TempDir()
	items := mix(30, t0)
	l, _ := openTestLog(t, LogConfig{Dir: dir})
	ctx := context.Background()
	for i := 0; i < len(items); i += 7 {
		if err := l.Append(ctx, items[i:min(i+7, len(items))]); err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	st := l.Stats()
	if st.Records != 30 || st.Segments != 1 || st.Appended["knock"] != 10 || st.Appended["change"] != 10 || st.Appended["handshake"] != 10 {
		t.Fatalf("stats after appends: %+v", st)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, _ := openTestLog(t, LogConfig{Dir: dir})
	got, rs := replayAll(t, l2, time.Time{})
	sameItems(t, got, items)
	if rs.Read != 30 || rs.Replayed != 30 || rs.Expired != 0 {
		t.Fatalf("replay stats %+v", rs)
	}
	// From the 20th second: items 20..29 (a knock's event time is its last
	// touch, one second before its slot: the knock of slot 21 is at 20 s).
	got, rs = replayAll(t, l2, t0.Add(20*time.Second))
	if rs.Expired != 20 || len(got) != 10 || !got[0].Time().Equal(t0.Add(20*time.Second)) || got[1].Kind() != KindKnock {
		t.Fatalf("since 20 s: %d items (first %v), %+v", len(got), got[0].Time(), rs)
	}
	more := mix(3, t0.Add(time.Minute))
	if err := l2.Append(ctx, more); err != nil {
		t.Fatal(err)
	}
	if st := l2.Stats(); st.Segments != 2 || st.Records != 33 {
		t.Fatalf("after reopen and append: %d segments %d records, want a new segment", st.Segments, st.Records)
	}
	got, _ = replayAll(t, l2, time.Time{})
	sameItems(t, got, append(append([]Item{}, items...), more...))
}

// A power cut in the middle of an append leaves a torn last record: the
// reopened log says so in its log and counters, replays every record
// before it and appends after it in a new segment.
func TestLogTornLastRecord(t *testing.T) {
	dir := t.TempDir()
	items := mix(10, t0)
	l, _ := openTestLog(t, LogConfig{Dir: dir})
	if err := l.Append(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	l.Close()
	seg := filepath.Join(dir, segName(0))
	extra := mix(1, t0.Add(time.Hour))
	frameBytes := logFormat.Append(nil, mustAppend(t, extra[0]))
	f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	torn := frameBytes[:len(frameBytes)/2]
	if _, err := f.Write(torn); err != nil {
		t.Fatal(err)
	}
	f.Close()

	l2, logs := openTestLog(t, LogConfig{Dir: dir})
	st := l2.Stats()
	if st.TornSegments != 1 || st.CorruptFrames != 1 || st.CorruptBytes != uint64(len(torn)) || st.Records != 10 {
		t.Fatalf("torn record not counted: %+v", st)
	}
	if e := logs.FilterMessageSnippet("torn record").All(); len(e) != 1 || !strings.Contains(e[0].Message, segName(0)) {
		t.Fatalf("no clear message for the torn record: %v", logs.All())
	}
	got, _ := replayAll(t, l2, time.Time{})
	sameItems(t, got, items)
	if err := l2.Append(context.Background(), extra); err != nil {
		t.Fatal(err)
	}
	got, _ = replayAll(t, l2, time.Time{})
	sameItems(t, got, append(append([]Item{}, items...), extra...))
	if l2.Stats().Segments != 2 {
		t.Fatal("the torn segment was appended to")
	}
}

// Bytes damaged in the middle of a segment cost that record only: the
// records after it are read, the damage counted.
func TestLogCRCDamage(t *testing.T) {
	dir := t.TempDir()
	items := mix(9, t0)
	l, _ := openTestLog(t, LogConfig{Dir: dir})
	for _, it := range items {
		if err := l.Append(context.Background(), []Item{it}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	seg := filepath.Join(dir, segName(0))
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	// The fifth record starts after the frames of the first four.
	off := 0
	for _, it := range items[:4] {
		off += len(logFormat.Append(nil, mustAppend(t, it)))
	}
	b[off+20] ^= 0x5a
	if err := os.WriteFile(seg, b, 0o640); err != nil {
		t.Fatal(err)
	}
	l2, logs := openTestLog(t, LogConfig{Dir: dir})
	got, _ := replayAll(t, l2, time.Time{})
	sameItems(t, got, append(append([]Item{}, items[:4]...), items[5:]...))
	st := l2.Stats()
	if st.CorruptFrames != 1 || st.TornSegments != 0 {
		t.Fatalf("damage not counted: %+v", st)
	}
	if len(logs.FilterMessageSnippet("damaged").All()) != 1 {
		t.Fatalf("no message for the damage: %v", logs.All())
	}
}

// Segments roll at SegmentBytes; the replay reads them all in order.
func TestLogSegmentRollover(t *testing.T) {
	dir := t.TempDir()
	items := mix(120, t0)
	one := len(logFormat.Append(nil, mustAppend(t, items[1]))) // a change, the largest kind
	l, _ := openTestLog(t, LogConfig{Dir: dir, MaxBytes: 1 << 20, SegmentBytes: int64(10 * one)})
	for i := 0; i < len(items); i += 4 {
		if err := l.Append(context.Background(), items[i:i+4]); err != nil {
			t.Fatal(err)
		}
	}
	st := l.Stats()
	if want := int(st.AppendedBytes) / (10 * one); st.Segments < want || st.Segments < 5 || st.Records != 120 {
		t.Fatalf("%d segments for %d records (%d bytes) in segments of %d bytes", st.Segments, st.Records, st.AppendedBytes, 10*one)
	}
	entries, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	if len(entries) != st.Segments {
		t.Fatalf("%d files, %d segments", len(entries), st.Segments)
	}
	for _, e := range entries {
		if fi, _ := os.Stat(e); fi.Size() > int64(10*one) {
			t.Fatalf("%s has %d bytes, over the segment size %d", e, fi.Size(), 10*one)
		}
	}
	got, _ := replayAll(t, l, time.Time{})
	sameItems(t, got, items)
}

// Retention: Maintain removes the closed segments whose newest evidence is
// older than MaxAge, keeps the rest, and closes a long-open segment so it
// can age out too; a host clock far in the future pins a segment for at
// most an hour past its arrival.
func TestLogRetention(t *testing.T) {
	dir := t.TempDir()
	clk := &fakeClock{t: t0}
	maxAge := 20 * time.Minute
	l, _ := openTestLog(t, LogConfig{Dir: dir, MaxAge: maxAge, Now: clk.now})
	ctx := context.Background()
	appendAt := func(at time.Time, n int) {
		clk.set(at)
		for _, it := range mix(n, at) {
			it.Arrival = at
			if err := l.Append(ctx, []Item{it}); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendAt(t0, 6)                    // newest event t0+5s
	appendAt(t0.Add(6*time.Minute), 6) // the segment rolled: open for MaxAge/4
	appendAt(t0.Add(12*time.Minute), 6)
	// A change from a host whose clock is a year ahead.
	clk.set(t0.Add(13 * time.Minute))
	future := changeItem("WIN-FUTURE", 4444, t0.AddDate(1, 0, 0), 99)
	future.Arrival = t0.Add(13 * time.Minute)
	if err := l.Append(ctx, []Item{future}); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Segments != 3 {
		t.Fatalf("%d segments, want 3 (rolled every MaxAge/4)", st.Segments)
	}
	l.Maintain(t0.Add(20 * time.Minute)) // nothing older than 20 min yet
	if st := l.Stats(); st.Segments != 3 || st.RemovedSegments[ReasonAge] != 0 {
		t.Fatalf("removed too early: %+v", st)
	}
	clk.set(t0.Add(25 * time.Minute))
	l.Maintain(clk.now()) // the first segment's newest is t0+5s, the second's t0+6m5s
	st := l.Stats()
	if st.Segments != 2 || st.RemovedSegments[ReasonAge] != 1 || st.RemovedRecords[ReasonAge] != 6 {
		t.Fatalf("after 25 min: %+v", st)
	}
	got, _ := replayAll(t, l, time.Time{})
	if len(got) != 13 || got[0].Arrival.Before(t0.Add(6*time.Minute)) {
		t.Fatalf("after removal: %d items from %v", len(got), got[0].Arrival)
	}
	// The active segment (12 min, with the future change) is closed once
	// open for MaxAge/4 and removed an hour past the future change's
	// arrival plus MaxAge at the latest.
	clk.set(t0.Add(13*time.Minute + time.Hour + maxAge + time.Second))
	l.Maintain(clk.now()) // closes it
	l.Maintain(clk.now()) // removes both
	if st := l.Stats(); st.Segments != 0 || st.RemovedSegments[ReasonAge] != 3 {
		t.Fatalf("future-stamped segment kept: %+v", st)
	}
	// The log keeps working after everything aged out.
	appendAt(clk.now(), 3)
	if got, _ := replayAll(t, l, time.Time{}); len(got) != 3 {
		t.Fatalf("%d items after re-use", len(got))
	}
}

// At the size bound the oldest segment goes, counted and logged; the log
// never exceeds the bound by more than one batch.
func TestLogSizeBound(t *testing.T) {
	dir := t.TempDir()
	items := mix(300, t0)
	one := len(logFormat.Append(nil, mustAppend(t, items[1])))
	maxBytes := int64(40 * one)
	l, logs := openTestLog(t, LogConfig{Dir: dir, MaxBytes: maxBytes, SegmentBytes: maxBytes / 4})
	for i := 0; i < len(items); i += 2 {
		if err := l.Append(context.Background(), items[i:i+2]); err != nil {
			t.Fatal(err)
		}
		if st := l.Stats(); st.Bytes > maxBytes {
			t.Fatalf("log at %d bytes over its bound %d", st.Bytes, maxBytes)
		}
	}
	st := l.Stats()
	if st.RemovedSegments[ReasonSize] == 0 || st.RemovedRecords[ReasonSize] == 0 || st.Records+int64(st.RemovedRecords[ReasonSize]) != 300 {
		t.Fatalf("size bound: %+v", st)
	}
	if len(logs.FilterMessageSnippet("size bound").All()) != 1 {
		t.Fatalf("want one (rate-limited) warning: %v", logs.All())
	}
	got, _ := replayAll(t, l, time.Time{})
	sameItems(t, got, items[300-int(st.Records):])
}

// FsyncBatch: Sync fsyncs, and concurrent appenders share fsyncs (group
// commit). FsyncOff: Sync returns at once without an fsync.
func TestLogFsyncPolicy(t *testing.T) {
	ctx := context.Background()
	l, _ := openTestLog(t, LogConfig{Dir: t.TempDir()})
	const writers, each = 8, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := l.Append(ctx, mix(1, t0.Add(time.Duration(w*each+i)*time.Second))); err != nil {
					t.Error(err)
					return
				}
				if err := l.Sync(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st := l.Stats()
	if st.Records != writers*each || st.Fsyncs == 0 || st.Fsyncs > writers*each {
		t.Fatalf("batch policy: %d records, %d fsyncs", st.Records, st.Fsyncs)
	}
	t.Logf("%d syncs of %d writers took %d fsyncs", writers*each, writers, st.Fsyncs)
	if err := l.Sync(ctx); err != nil || l.Stats().Fsyncs != st.Fsyncs {
		t.Fatal("a Sync with nothing new fsynced")
	}

	off, _ := openTestLog(t, LogConfig{Dir: t.TempDir(), Fsync: FsyncOff})
	if err := off.Append(ctx, mix(3, t0)); err != nil {
		t.Fatal(err)
	}
	if err := off.Sync(ctx); err != nil || off.Stats().Fsyncs != 0 {
		t.Fatalf("FsyncOff fsynced: %v %+v", err, off.Stats())
	}
}

// A second process on the same directory is refused with a clear error.
func TestLogLocked(t *testing.T) {
	dir := t.TempDir()
	openTestLog(t, LogConfig{Dir: dir})
	_, err := OpenLog(LogConfig{Dir: dir, MaxAge: time.Minute})
	if err == nil || !strings.Contains(err.Error(), "another knockwatch run") {
		t.Fatalf("second open: %v", err)
	}
	for _, bad := range []LogConfig{{MaxAge: time.Minute}, {Dir: dir}, {Dir: dir, MaxAge: time.Minute, Fsync: "always"},
		{Dir: dir, MaxAge: time.Minute, MaxBytes: 100, SegmentBytes: 50}} {
		if _, err := OpenLog(bad); err == nil {
			t.Errorf("%+v opened", bad)
		}
	}
}

// A full disk: the append fails with ErrNoSpace and is counted (nothing of
// the batch is in the log), the log reopens on the full disk without
// writing, and once there is room again appends work and replay returns
// exactly what was appended successfully. A real tmpfs of 256 KiB.
func TestLogFullDisk(t *testing.T) {
	testenv.RequirePrivileged(t)
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=256k"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	dir := filepath.Join(mnt, "evidence")
	ctx := context.Background()
	l, err := OpenLog(LogConfig{Dir: dir, MaxAge: time.Hour, MaxBytes: 1 << 30, SegmentBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var ok []Item
	var full error
	for i := 0; full == nil && i < 100000; i++ {
		batch := mix(8, t0.Add(time.Duration(i)*time.Minute))
		if err := l.Append(ctx, batch); err != nil {
			full = err
			break
		}
		if err := l.Sync(ctx); err != nil {
			full = err
			break
		}
		ok = append(ok, batch...)
	}
	if !errors.Is(full, ErrNoSpace) || !strings.Contains(full.Error(), "no space left") {
		t.Fatalf("full disk: %v", full)
	}
	if st := l.Stats(); st.Errors[ReasonNoSpace] == 0 {
		t.Fatalf("no-space not counted: %+v", st)
	}
	// Still full: a new batch fails again, the log does not break.
	if err := l.Append(ctx, mix(8, t0)); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("second append on the full disk: %v", err)
	}
	l.Close()
	// Reopen on the full disk (a restart): it reads, it does not write.
	l2, err := OpenLog(LogConfig{Dir: dir, MaxAge: time.Hour, MaxBytes: 1 << 30, SegmentBytes: 64 << 20})
	if err != nil {
		t.Fatalf("reopen on a full disk: %v", err)
	}
	defer l2.Close()
	got, _ := replayAll(t, l2, time.Time{})
	sameItems(t, got, ok)
	// Free room (another file on the same file system goes).
	if err := os.Remove(filepath.Join(dir, segName(0))); err != nil {
		t.Fatal(err)
	}
	more := mix(8, t0.AddDate(0, 0, 1))
	if err := l2.Append(ctx, more); err != nil {
		t.Fatalf("append after room was made: %v", err)
	}
	if err := l2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ = replayAll(t, l2, time.Time{})
	if len(got) == 0 || !reflect.DeepEqual(got[len(got)-8:], normalized(more)) {
		t.Fatalf("after recovery: %d items", len(got))
	}
}

func normalized(items []Item) []Item {
	out := make([]Item, len(items))
	for i, it := range items {
		normalize(&it)
		out[i] = it
	}
	return out
}

// The ledger remembers the best rank per id across a reopen, forgets what
// is older than its max age, and skips a torn last mark.
func TestLedger(t *testing.T) {
	dir := t.TempDir()
	clk := &fakeClock{t: t0}
	open := func() *Ledger {
		l, err := OpenLedger(LedgerConfig{Dir: dir, MaxAge: time.Hour, Now: clk.now})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	ctx := context.Background()
	l := open()
	if err := l.Record(ctx, []Mark{{ID: "a", Action: "created", Rank: 2, Time: t0}, {ID: "b", Action: "created", Rank: 5, Time: t0}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Record(ctx, []Mark{{ID: "a", Action: "upgraded", Rank: 5, Time: t0.Add(time.Minute)}, {Action: "no id"}}); err != nil {
		t.Fatal(err)
	}
	if r, ok := l.Rank("a"); !ok || r != 5 {
		t.Fatalf("a: %d %v", r, ok)
	}
	l.Close()
	f, err := os.OpenFile(filepath.Join(dir, segName(0)), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	fr := ledgerFormat.Append(nil, appendMark(nil, Mark{ID: "c", Action: "created", Rank: 5, Time: t0}))
	_, _ = f.Write(fr[:len(fr)-2])
	f.Close()
	l = open()
	defer l.Close()
	for id, want := range map[string]int{"a": 5, "b": 5} {
		if r, ok := l.Rank(id); !ok || r != want {
			t.Errorf("%s after reopen: %d %v", id, r, ok)
		}
	}
	if _, ok := l.Rank("c"); ok {
		t.Error("torn mark read")
	}
	if st := l.Stats(); st.Entries != 2 || st.CorruptFrames != 1 {
		t.Errorf("stats %+v", st)
	}
	clk.set(t0.Add(2 * time.Hour))
	if err := l.Record(ctx, []Mark{{ID: "d", Action: "created", Rank: 3, Time: clk.now()}}); err != nil {
		t.Fatal(err)
	}
	l.Maintain(clk.now())
	if _, ok := l.Rank("a"); ok {
		t.Error("a not forgotten after its max age")
	}
	if r, ok := l.Rank("d"); !ok || r != 3 {
		t.Error("d forgotten")
	}
}
