package evidence

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knockwatch/knockwatch/internal/testsupport/faultdisk"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
)

// powerCut ends l as a power cut would: nothing it fsyncs from now on
// survives (Close's own fsync fails and loses what it covered), then the
// directory is opened again on a working disk.
func powerCut(t *testing.T, l *Log, disk *faultdisk.Disk) *Log {
	t.Helper()
	disk.PowerCut()
	_ = l.Close()
	l2, _ := openTestLog(t, LogConfig{Dir: l.Dir(), MaxAge: l.Config().MaxAge})
	return l2
}

// An fsync that fails once: Linux reports the failed write-back once, drops
// the pages it could not write, and the next fsync of the file succeeds
// without them. Every batch appended before a Sync that returned nil must
// come back after a power cut, exactly once and in order — the batch the
// failed fsync covered too, because a later Sync succeeded after it. Sync
// keeps failing while the range the failures lost cannot be written again.
func TestLogFsyncFailsOnce(t *testing.T) {
	for _, fails := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d failures", fails), func(t *testing.T) {
			ctx := context.Background()
			disk := faultdisk.New()
			l, _ := openTestLog(t, LogConfig{Dir: t.TempDir(), MaxAge: time.Hour, SyncFile: disk.Sync})
			a, b, c := mix(6, t0), mix(6, t0.Add(time.Minute)), mix(6, t0.Add(2*time.Minute))
			if err := l.Append(ctx, a); err != nil {
				t.Fatal(err)
			}
			if err := l.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if err := l.Append(ctx, b); err != nil {
				t.Fatal(err)
			}
			disk.FailNext(fails)
			for i := range fails {
				err := l.Sync(ctx)
				if !errors.Is(err, syscall.EIO) {
					t.Fatalf("sync %d with its fsync failing: %v, want EIO", i+1, err)
				}
				t.Logf("failed sync %d: %v", i+1, err)
			}
			if err := l.Append(ctx, c); err != nil {
				t.Fatal(err)
			}
			if err := l.Sync(ctx); err != nil {
				t.Fatalf("sync once the disk works: %v", err)
			}
			st := l.Stats()
			if st.Errors[ReasonIO] != uint64(fails) || st.Cut < uint64(fails) || st.Rewritten != uint64(len(b)*fails) || st.Unsynced != 0 || st.UnsyncedBytes != 0 {
				t.Errorf("stats after %d failures and a good sync: errors %v, cut %d, rewritten %d, unsynced %d (%d bytes)",
					fails, st.Errors, st.Cut, st.Rewritten, st.Unsynced, st.UnsyncedBytes)
			}
			l2 := powerCut(t, l, disk)
			got, _ := replayAll(t, l2, time.Time{})
			sameItems(t, got, append(append(append([]Item(nil), a...), b...), c...))
		})
	}
}

// Think like the attacker (or a dying disk): while fsyncs keep failing, a
// flood of evidence does not grow the kept tail without bound. At
// MaxUnsynced an append first tries an fsync, and when that fails too it is
// refused (ErrUnsynced, counted): nothing of it is in the log, the caller
// keeps it. What was accepted comes back once the disk works.
func TestLogUnsyncedBound(t *testing.T) {
	ctx := context.Background()
	disk := faultdisk.New()
	l, _ := openTestLog(t, LogConfig{Dir: t.TempDir(), MaxAge: time.Hour, MaxUnsynced: 8 << 10, SyncFile: disk.Sync})
	disk.FailNext(1 << 30)
	var ok []Item
	refused := 0
	for i := range 200 {
		batch := mix(3, t0.Add(time.Duration(i)*time.Minute))
		err := l.Append(ctx, batch)
		switch {
		case err == nil:
			ok = append(ok, batch...)
		case errors.Is(err, ErrUnsynced) && errors.Is(err, syscall.EIO):
			refused++
		default:
			t.Fatalf("append %d: %v", i, err)
		}
		if st := l.Stats(); st.UnsyncedBytes > 8<<10 {
			t.Fatalf("the kept tail grew to %d bytes, over its 8 KiB bound", st.UnsyncedBytes)
		}
	}
	st := l.Stats()
	if refused == 0 || st.Errors[ReasonUnsynced] != uint64(refused) || st.Unsynced != len(ok) {
		t.Fatalf("%d refused; stats %v, %d unsynced of %d accepted", refused, st.Errors, st.Unsynced, len(ok))
	}
	if err := l.Sync(ctx); err == nil {
		t.Fatal("sync succeeded on a failing disk")
	}
	disk.Heal()
	if err := l.Sync(ctx); err != nil {
		t.Fatalf("sync once the disk works: %v", err)
	}
	more := mix(3, t0.AddDate(0, 0, 1))
	if err := l.Append(ctx, more); err != nil {
		t.Fatalf("append once the disk works: %v", err)
	}
	if err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	l2 := powerCut(t, l, disk)
	got, _ := replayAll(t, l2, time.Time{})
	sameItems(t, got, append(ok, more...))
}

// The same with concurrent writers and fsyncs failing at random moments
// (seeded, logged): an item whose Sync returned nil after its Append is in
// the log after a power cut, and no item is there twice.
func TestLogFsyncFailuresConcurrent(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	ctx := context.Background()
	disk := faultdisk.New()
	l, _ := openTestLog(t, LogConfig{Dir: t.TempDir(), MaxAge: time.Hour, SegmentBytes: 16 << 10, MaxBytes: 1 << 30, SyncFile: disk.Sync})
	const writers, each = 4, 150
	var mu sync.Mutex
	acked := map[uint64]bool{}
	stop := make(chan struct{})
	injected := make(chan int)
	go func() {
		n := 0
		defer func() { injected <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(rng.IntN(2000)) * time.Microsecond):
				disk.FailNext(1)
				n++
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := uint64(w*each + i + 1)
				if err := l.Append(ctx, []Item{changeItem("WIN-LAB01", 4444, t0.Add(time.Duration(id)*time.Second), id)}); err != nil {
					continue // not promised
				}
				if err := l.Sync(ctx); err == nil {
					mu.Lock()
					acked[id] = true
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	n := <-injected
	l2 := powerCut(t, l, disk)
	seen := map[uint64]int{}
	if _, err := l2.Replay(time.Time{}, func(it Item) error { seen[it.Change.RecordID]++; return nil }); err != nil {
		t.Fatal(err)
	}
	for id := range acked {
		if seen[id] == 0 {
			t.Errorf("item %d: its Sync returned nil, but it is not in the log after the power cut", id)
		}
	}
	for id, k := range seen {
		if k > 1 {
			t.Errorf("item %d is in the log %d times", id, k)
		}
	}
	t.Logf("%d of %d items acknowledged, %d failed fsyncs (%d injected), %d in the log", len(acked), writers*each, disk.Failed(), n, len(seen))
	if disk.Failed() == 0 {
		t.Fatal("no fsync failed: the test did not test anything")
	}
}

// The alert ledger: a mark whose fsync failed is not lost when a later
// Record's fsync succeeds (a restart would send that alert again).
func TestLedgerFsyncFailsOnce(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	disk := faultdisk.New()
	l, err := OpenLedger(LedgerConfig{Dir: dir, MaxAge: time.Hour, Now: func() time.Time { return t0 }, SyncFile: disk.Sync})
	if err != nil {
		t.Fatal(err)
	}
	mark := func(id string) []Mark { return []Mark{{ID: id, Action: "created", Rank: 5, Time: t0}} }
	if err := l.Record(ctx, mark("a")); err != nil {
		t.Fatal(err)
	}
	disk.FailNext(1)
	if err := l.Record(ctx, mark("b")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("record with its fsync failing: %v", err)
	}
	if err := l.Record(ctx, mark("c")); err != nil {
		t.Fatal(err)
	}
	disk.FailNext(1)
	if err := l.Record(ctx, mark("d")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("record with its fsync failing: %v", err)
	}
	if st := l.Stats(); st.Unsynced != 1 || st.Errors != 2 {
		t.Errorf("stats after the failure: %+v", st)
	}
	// No further alert: Sync (the pipeline calls it every second) makes
	// the mark good.
	if err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Unsynced != 0 {
		t.Errorf("stats after a good sync: %+v", st)
	}
	disk.PowerCut()
	_ = l.Close()
	l2, err := OpenLedger(LedgerConfig{Dir: dir, MaxAge: time.Hour, Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	for _, id := range []string{"a", "b", "c", "d"} {
		if _, ok := l2.Rank(id); !ok {
			t.Errorf("mark %s lost: a restart sends that alert again", id)
		}
	}
}

// A write error (a real full tmpfs) in the middle of unsynced appends:
// once there is room, Sync succeeds, and every batch whose Append returned
// nil is in the log once — the segment the failed write left is cut back to
// what was fsynced and its unsynced tail written again, not kept twice.
func TestLogWriteErrorThenSync(t *testing.T) {
	testenv.RequirePrivileged(t)
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=256k"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 128<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	disk := faultdisk.New()
	l, _ := openTestLog(t, LogConfig{Dir: filepath.Join(mnt, "evidence"), MaxAge: time.Hour, SyncFile: disk.Sync})
	first := mix(6, t0)
	if err := l.Append(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	ok := append([]Item(nil), first...)
	var full error
	for i := 1; i < 10000; i++ {
		batch := mix(6, t0.Add(time.Duration(i)*time.Minute))
		if full = l.Append(ctx, batch); full != nil {
			break
		}
		ok = append(ok, batch...)
	}
	if !errors.Is(full, ErrNoSpace) {
		t.Fatalf("filling the disk: %v", full)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(ctx); err != nil {
		t.Fatalf("sync once there is room: %v", err)
	}
	l2 := powerCut(t, l, disk)
	got, _ := replayAll(t, l2, time.Time{})
	sameItems(t, got, ok)
}

// The ledger on a full disk (a real tmpfs): marks whose append failed are
// kept in memory and written by the next Sync once there is room.
func TestLedgerAppendFailsThenSync(t *testing.T) {
	testenv.RequirePrivileged(t)
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	dir := filepath.Join(mnt, "alerts")
	ctx := context.Background()
	l, err := OpenLedger(LedgerConfig{Dir: dir, MaxAge: time.Hour, Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.Write(make([]byte, 60<<10)) // leaves one page
	f.Close()
	var ids []string
	var failed error
	for i := 0; failed == nil && i < 10000; i++ {
		id := fmt.Sprintf("alert-%04d", i)
		ids = append(ids, id)
		failed = l.Record(ctx, []Mark{{ID: id, Action: "created", Rank: 5, Time: t0}})
	}
	if !errors.Is(failed, ErrNoSpace) {
		t.Fatalf("filling the disk: %v", failed)
	}
	if st := l.Stats(); st.Unsynced == 0 {
		t.Fatalf("the refused mark is not kept: %+v", st)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(ctx); err != nil {
		t.Fatalf("sync once there is room: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, err := OpenLedger(LedgerConfig{Dir: dir, MaxAge: time.Hour, Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	for _, id := range ids {
		if _, ok := l2.Rank(id); !ok {
			t.Fatalf("mark %s lost", id)
		}
	}
	t.Logf("%d marks, the last refused by the full disk, all recorded after the sync", len(ids))
}
