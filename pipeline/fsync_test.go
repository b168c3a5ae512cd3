package pipeline

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/internal/testsupport/faultdisk"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// startOn is start with the evidence log's and the ledger's fsyncs going
// through disks that can fail (nil: a working disk).
func startOn(t *testing.T, dir string, clk *testClock, evDisk, ledDisk *faultdisk.Disk) *process {
	t.Helper()
	lc := evidence.LogConfig{Dir: dir + "/evidence", MaxAge: 30 * time.Minute, Now: clk.now}
	gc := evidence.LedgerConfig{Dir: dir + "/alerts", MaxAge: 2 * time.Hour, Now: clk.now}
	if evDisk != nil {
		lc.SyncFile = evDisk.Sync
	}
	if ledDisk != nil {
		gc.SyncFile = ledDisk.Sync
	}
	lg, err := evidence.OpenLog(lc)
	if err != nil {
		t.Fatal(err)
	}
	ld, err := evidence.OpenLedger(gc)
	if err != nil {
		t.Fatal(err)
	}
	sink := &recordSink{}
	p := newTestPipeline(t, sink, Config{Evidence: lg, Delivered: ld, Now: clk.now, FlushInterval: time.Millisecond, BatchSize: 1, CloseTimeout: 50 * time.Millisecond})
	if _, err := p.Rebuild(context.Background(), lg, clk.now()); err != nil {
		t.Fatal(err)
	}
	return &process{log: lg, ledger: ld, p: p, sink: sink}
}

func waitUntil(t *testing.T, what string, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("timed out waiting for %s", what)
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// An fsync that fails once, then a power cut and a restart (Rebuild). Linux
// reports a failed write-back once and the next fsync succeeds without the
// lost pages (faultdisk zeroes them). Evidence: the background fsync after
// the knock fails; the event's Sync succeeds after it, so the listener
// acknowledges — the knock must then be durable too, and the restarted
// engine alerts on it. Ledger: the fsync of the alert's mark fails; the
// mark must still become durable, or the restarted engine sends the alert
// a second time.
func TestFsyncFailsOnceRestart(t *testing.T) {
	ctx := context.Background()
	knockAt := changeAt.Add(-4 * time.Second)
	for _, tc := range []struct{ name, fails string }{
		{"evidence fsync after the knock", "evidence"},
		{"evidence fsync of the event's delivery", "event"},
		{"ledger fsync after the alert", "ledger"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			clk := &testClock{t: knockAt.Add(3 * time.Second)}
			evDisk, ledDisk := faultdisk.New(), faultdisk.New()
			first := startOn(t, dir, clk, evDisk, ledDisk)

			if tc.fails == "evidence" {
				evDisk.FailNext(1)
			}
			if err := first.p.AddKnock(ctx, knock(knockAt)); err != nil {
				t.Fatal(err)
			}
			if tc.fails == "evidence" && !waitUntil(t, "the background fsync to fail", func() bool { return evDisk.Failed() == 1 }) {
				return
			}
			clk.set(changeAt.Add(20 * time.Second))
			if tc.fails == "event" {
				evDisk.FailNext(1)
			}
			acked := false
			for attempt := 0; attempt < 5 && !acked; attempt++ {
				var err error
				acked, err = deliver(ctx, first.p, intake.Message{Transport: intake.TransportHTTP, Payload: payload(t), Received: clk.now()})
				if err != nil {
					t.Logf("delivery %d not acknowledged: %v", attempt+1, err)
				}
			}
			if !acked {
				t.Fatal("the event was never acknowledged")
			}
			if tc.fails == "event" && evDisk.Failed() != 1 {
				t.Fatalf("%d fsyncs failed, want the event's", evDisk.Failed())
			}

			if tc.fails == "ledger" {
				ledDisk.FailNext(1)
			}
			clk.set(changeAt.Add(30 * time.Second))
			if err := first.p.AddHandshake(ctx, handshake(changeAt.Add(30*time.Second), 450)); err != nil {
				t.Fatal(err)
			}
			if !waitUntil(t, "the alert", func() bool { return len(first.sink.records()) == 1 }) {
				return
			}
			if err := first.p.Sync(ctx); err != nil {
				t.Fatalf("sync after the handshake: %v", err)
			}
			if tc.fails == "ledger" {
				// The mark's own fsync (the ledger's first) fails.
				waitUntil(t, "the ledger fsync to fail", func() bool { return ledDisk.Failed() == 1 })
			}
			// The alert's mark is fsynced: by Record, or after its failure
			// by a later sync (nothing else is fsynced in the ledger).
			waitUntil(t, "a good ledger fsync", func() bool { return ledDisk.Synced() > 0 })
			// kill -9 and a power cut: only what was fsynced survives.
			evDisk.PowerCut()
			ledDisk.PowerCut()
			first.crash()

			clk.set(changeAt.Add(time.Minute))
			second := startOn(t, dir, clk, nil, nil)
			second.stop(t)
			st := second.p.Stats()
			if st.Replayed["knock"] != 1 || st.Replayed["handshake"] != 1 || st.Replayed["change"] == 0 {
				t.Errorf("replayed %v, want the knock, the change and the handshake", st.Replayed)
			}
			n1, n2 := highAlerts(t, first.sink.records()), highAlerts(t, second.sink.records())
			if n1 != 1 || n2 != 0 {
				t.Errorf("high alerts: %d before the restart, %d after; want 1 and 0 (not lost, not repeated)", n1, n2)
			}
		})
	}
}

// A sensor record whose append failed (a full disk) is kept and appended
// again: nobody acknowledges it, but losing it loses the knock on restart.
func TestSensorRecordAppendRetried(t *testing.T) {
	ctx := context.Background()
	knockAt := changeAt.Add(-4 * time.Second)
	disk := &diskModel{failAppend: 1}
	clk := &testClock{t: knockAt.Add(3 * time.Second)}
	first := newTestPipeline(t, &recordSink{}, Config{Evidence: disk, Now: clk.now, FlushInterval: time.Millisecond})
	if err := first.AddKnock(ctx, knock(knockAt)); !errors.Is(err, ErrNotStored) {
		t.Fatalf("AddKnock with the append refused: %v", err)
	}
	if err := first.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	_ = first.Close()

	sink := &recordSink{}
	second := newTestPipeline(t, sink, Config{Evidence: disk, Now: clk.now, FlushInterval: time.Millisecond})
	if _, err := second.Rebuild(ctx, disk, clk.now()); err != nil {
		t.Fatal(err)
	}
	if res := second.Handle(ctx, intake.Message{Transport: intake.TransportHTTP, Payload: payload(t), Received: changeAt.Add(20 * time.Second)}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if err := second.AddHandshake(ctx, handshake(changeAt.Add(30*time.Second), 450)); err != nil {
		t.Fatal(err)
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	if n := highAlerts(t, sink.records()); n != 1 {
		t.Fatalf("%d high alerts after the restart, want 1: the knock whose append failed was lost", n)
	}
}

// Think like the attacker: while the disk refuses appends, a flood of
// sensor records (SYNs to closed ports from ever new sources) must neither
// grow memory without bound nor take the room of the changes a forwarder
// waits to have acknowledged. Kept sensor records stop at half of
// MaxUnstored (the rest is dropped, counted: evaluated, not stored); a
// change with a record id is still kept after the flood, and once the disk
// works everything kept is stored.
func TestSensorRecordsKeptBounded(t *testing.T) {
	ctx := context.Background()
	disk := &diskModel{failAppend: 1 << 30}
	const bound = 8 << 10
	p := newTestPipeline(t, &recordSink{}, Config{Evidence: disk, MaxUnstored: bound})
	defer p.Close()
	for i := range 500 {
		k := knock(changeAt.Add(-time.Duration(i) * time.Millisecond))
		k.Src = netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)})
		if err := p.AddKnock(ctx, k); !errors.Is(err, ErrNotStored) {
			t.Fatalf("knock %d on a full disk: %v", i, err)
		}
	}
	st := p.Stats()
	if st.UnstoredDropped == 0 || st.UnstoredBytes > bound/2 || st.Unstored == 0 {
		t.Fatalf("after the flood: %d kept (%d bytes), %d dropped; want at most %d bytes kept, the rest dropped",
			st.Unstored, st.UnstoredBytes, st.UnstoredDropped, bound/2)
	}
	kept := st.Unstored
	fw := eventXML("Microsoft-Windows-Windows Firewall With Advanced Security/Firewall", 2004, 933, changeAt,
		"RuleId", "{5E1A2B3C-0000-4000-8000-000000000933}", "RuleName", "updater", "Direction", "1", "Protocol", "6",
		"LocalPorts", "450", "Action", "3", "Active", "1")
	res := p.Handle(ctx, intake.Message{Transport: intake.TransportHTTP, Payload: fw, Received: changeAt})
	if !errors.Is(res.Err, intake.ErrNotDurable) {
		t.Fatalf("event on a full disk: %+v", res)
	}
	if st := p.Stats(); st.Unstored != kept+1 {
		t.Fatalf("the change was not kept after the flood: %d kept, want %d", st.Unstored, kept+1)
	}
	disk.mu.Lock()
	disk.failAppend = 0
	disk.mu.Unlock()
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Unstored != 0 || st.UnstoredBytes != 0 {
		t.Fatalf("after the disk works: %d kept (%d bytes)", st.Unstored, st.UnstoredBytes)
	}
	knocks := 0
	disk.mu.Lock()
	for _, it := range disk.durable {
		if it.Knock != nil {
			knocks++
		}
	}
	disk.mu.Unlock()
	if knocks != kept || disk.durableRecords(933) != 1 {
		t.Fatalf("durable: %d knocks (want the %d kept), change %d times", knocks, kept, disk.durableRecords(933))
	}
	t.Logf("500 knocks on a full disk: %d kept, %d dropped (counted); the change kept after them", kept, st.UnstoredDropped)
}
