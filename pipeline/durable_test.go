package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	lumberclient "github.com/elastic/go-lumber/client/v2"
	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// diskModel is an evidence log as the pipeline sees it (EvidenceLog): an
// append is volatile (in the page cache) until a Sync makes it durable; a
// failed append (a full disk) stores nothing; a failed Sync (an fsync
// error) makes nothing durable, and the log keeps what it covered to make
// it durable at a later Sync (evidence.Log writes it again: the kernel may
// drop dirty pages whose write-back failed; TestFsyncFailsOnceRestart runs
// the real log on such a disk). After a crash only what was durable is
// replayed.
type diskModel struct {
	mu                 sync.Mutex
	volatile, durable  []evidence.Item
	failAppend         int // the next appends that fail
	failSync           int // the next syncs with something volatile that fail
	appends, syncFails int
}

var errModelIO = errors.New("input/output error (modelled fsync failure)")

func (d *diskModel) Append(_ context.Context, items []evidence.Item) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.appends++
	if d.failAppend > 0 {
		d.failAppend--
		return fmt.Errorf("append evidence: %w", evidence.ErrNoSpace)
	}
	d.volatile = append(d.volatile, items...)
	return nil
}

func (d *diskModel) Sync(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failSync > 0 && len(d.volatile) > 0 {
		d.failSync--
		d.syncFails++
		return fmt.Errorf("sync evidence log: %w", errModelIO)
	}
	d.durable = append(d.durable, d.volatile...)
	d.volatile = nil
	return nil
}

// Replay replays what survives a crash: the durable items.
func (d *diskModel) Replay(_ time.Time, fn func(evidence.Item) error) (evidence.ReplayStats, error) {
	d.mu.Lock()
	items := append([]evidence.Item(nil), d.durable...)
	d.mu.Unlock()
	var rs evidence.ReplayStats
	for _, it := range items {
		rs.Read++
		rs.Replayed++
		if err := fn(it); err != nil {
			return rs, err
		}
	}
	return rs, nil
}

// counts returns the model's counters (the pipeline's syncer uses it
// concurrently).
func (d *diskModel) counts() (appends, failAppend, failSync, syncFails int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.appends, d.failAppend, d.failSync, d.syncFails
}

// durableRecords counts the durable changes of Windows record id.
func (d *diskModel) durableRecords(id uint64) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, it := range d.durable {
		if it.Change != nil && it.Change.RecordID == id {
			n++
		}
	}
	return n
}

// deliver is what an acknowledging listener (HTTP) does with m: Handle,
// then Sync, and acknowledge (202) only when both succeeded.
func deliver(ctx context.Context, p *Pipeline, m intake.Message) (acked bool, err error) {
	res := p.Handle(ctx, m)
	if res.Err != nil {
		return false, res.Err
	}
	if err := p.Sync(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// An event with a Windows record id whose first delivery could not be made
// durable (a full disk refuses the append; an fsync error loses it) is
// offered again by its forwarder. The decoder has seen its record id, so
// the retry decodes to nothing new: it must still be acknowledged only once
// the change is durable, and a crash right after the acknowledgement must
// not lose it (the rebuilt engine alerts high on the knock and handshake
// that reach only the second process).
func TestNotDurableRetryIsStored(t *testing.T) {
	fw := eventXML("Microsoft-Windows-Windows Firewall With Advanced Security/Firewall", 2004, 811, changeAt,
		"RuleId", "{5E1A2B3C-0000-4000-8000-000000000450}", "RuleName", "updater", "Direction", "1", "Protocol", "6",
		"LocalPorts", "450", "Action", "3", "Active", "1", "ModifyingUser", "S-1-5-21-1-2-3-1001",
		"ModifyingApplication", `C:\Windows\System32\netsh.exe`)
	for _, tc := range []struct {
		name                 string
		failAppend, failSync int
	}{
		{"append refused (full disk)", 1, 0},
		{"append refused twice", 2, 0},
		{"fsync failed", 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			disk := &diskModel{failAppend: tc.failAppend, failSync: tc.failSync}
			clk := &testClock{t: changeAt.Add(10 * time.Second)}
			sink := &recordSink{}
			first := newTestPipeline(t, sink, Config{Evidence: disk, Now: clk.now, FlushInterval: time.Millisecond})
			m := intake.Message{Transport: intake.TransportHTTP, Payload: fw, Received: clk.now()}
			acked := false
			for attempt := 1; attempt <= 5 && !acked; attempt++ {
				var err error
				acked, err = deliver(ctx, first, m)
				if acked {
					if n := disk.durableRecords(811); n == 0 {
						appends, _, _, syncFails := disk.counts()
						t.Fatalf("attempt %d acknowledged while the change is not durable (%d appends, %d failed syncs)",
							attempt, appends, syncFails)
					}
					break
				}
				if !errors.Is(err, intake.ErrNotDurable) && !errors.Is(err, ErrNotStored) {
					t.Fatalf("attempt %d: %v, want not durable", attempt, err)
				}
				if attempt == 1 && tc.failAppend > 0 && first.Stats().Unstored == 0 {
					t.Errorf("the change the engine evaluated is not waiting to be stored again: %+v", first.Stats())
				}
			}
			if !acked {
				t.Fatal("never acknowledged once the disk worked again")
			}
			if st := first.Stats(); st.Unstored != 0 || st.UnstoredBytes != 0 {
				t.Errorf("after the acknowledgement %d items (%d bytes) still wait", st.Unstored, st.UnstoredBytes)
			}
			// kill -9 right after the acknowledgement.
			_ = first.Close()

			second := newTestPipeline(t, sink, Config{Evidence: disk, Now: clk.now, FlushInterval: time.Millisecond})
			if _, err := second.Rebuild(ctx, disk, clk.now()); err != nil {
				t.Fatal(err)
			}
			if err := second.AddKnock(ctx, knock(changeAt.Add(-4*time.Second))); err != nil {
				t.Fatal(err)
			}
			if err := second.AddHandshake(ctx, handshake(changeAt.Add(30*time.Second), 450)); err != nil {
				t.Fatal(err)
			}
			if err := second.Close(); err != nil {
				t.Fatal(err)
			}
			if n := highAlerts(t, sink.records()); n != 1 {
				t.Fatalf("%d high alerts after the restart, want 1: the acknowledged change was lost", n)
			}
		})
	}
}

// winlogbeat2004 is a Winlogbeat 8 event: a Firewall 2004 opening TCP 450
// on WORKSTATION5, record id 812.
const winlogbeat2004 = `{"@timestamp":"2020-10-21T12:19:04.518Z","event":{"code":"2004","kind":"event",` +
	`"provider":"Microsoft-Windows-Windows Firewall With Advanced Security"},"host":{"name":"wec01"},` +
	`"agent":{"type":"winlogbeat","version":"8.11.0"},"winlog":{"event_id":2004,` +
	`"channel":"Microsoft-Windows-Windows Firewall With Advanced Security/Firewall",` +
	`"provider_name":"Microsoft-Windows-Windows Firewall With Advanced Security",` +
	`"computer_name":"WORKSTATION5.theshire.local","record_id":812,"api":"wineventlog","event_data":{` +
	`"RuleId":"{5E1A2B3C-0000-4000-8000-000000000812}","RuleName":"updater","Origin":"1","Direction":"1",` +
	`"Protocol":"6","LocalPorts":"450","RemotePorts":"*","Action":"3","Profiles":"2147483647","Active":"1",` +
	`"ModifyingUser":"S-1-5-21-1-2-3-500","ModifyingApplication":"C:\\Windows\\System32\\netsh.exe"}},` +
	`"message":"A rule has been added"}`

// The same through each acknowledging listener: the first delivery of an
// event with a record id cannot be made durable (the append is refused, or
// the fsync after it fails and loses it); the listener's own retry (Beats
// and files offer the message again) or the forwarder's re-send (HTTP 503)
// decodes to a duplicate. The acknowledgement — HTTP 202, the Beats ACK,
// the followed file's saved position — comes only once the change is
// durable.
func TestNotDurableRetryStoredOverListeners(t *testing.T) {
	for _, fail := range []struct {
		name                 string
		failAppend, failSync int
	}{{"append refused", 1, 0}, {"fsync failed", 0, 1}} {
		for _, tr := range []struct {
			name string
			// deliver sends the event and returns once it was
			// acknowledged, or fails the test.
			deliver func(t *testing.T, p *Pipeline, disk *diskModel)
		}{
			{"http", deliverHTTP}, {"beats", deliverBeats}, {"file", deliverFile},
		} {
			t.Run(fail.name+"/"+tr.name, func(t *testing.T) {
				disk := &diskModel{failAppend: fail.failAppend, failSync: fail.failSync}
				if tr.name == "http" && fail.failSync > 0 {
					// Every sync fails until the first answer: the
					// background sync every append now kicks must not
					// take the one failure before the listener's Sync
					// (deliverHTTP heals the disk after the 503).
					disk.failSync = 1 << 30
				}
				p := newTestPipeline(t, &recordSink{}, Config{Evidence: disk, FlushInterval: time.Millisecond})
				defer p.Close()
				tr.deliver(t, p, disk)
				appends, failAppend, failSync, syncFails := disk.counts()
				if appends == 0 || (failAppend+failSync) != 0 {
					t.Fatalf("the failure was not met: %d appends, failures left %d/%d", appends, failAppend, failSync)
				}
				if n := disk.durableRecords(812); n == 0 {
					t.Fatalf("acknowledged while the change is not durable (%d appends, %d failed syncs)", appends, syncFails)
				}
			})
		}
	}
}

func deliverHTTP(t *testing.T, p *Pipeline, disk *diskModel) {
	srv, err := intake.NewHTTPServer(intake.HTTPConfig{Addr: "127.0.0.1:0"}, p, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	url := "http://" + srv.Addr().String() + "/v1/events"
	var codes []int
	for range 5 {
		resp, err := http.Post(url, "application/json", strings.NewReader(winlogbeat2004))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == http.StatusAccepted {
			break
		}
		disk.mu.Lock()
		if disk.failSync > 1 {
			disk.failSync = 0 // the disk works again
		}
		disk.mu.Unlock()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("answers %v, want 503 until durable, then 202", codes)
		}
	}
	if codes[0] != http.StatusServiceUnavailable || codes[len(codes)-1] != http.StatusAccepted {
		t.Fatalf("answers %v, want 503 then 202", codes)
	}
}

func deliverBeats(t *testing.T, p *Pipeline, _ *diskModel) {
	srv, err := intake.NewBeatsServer(intake.BeatsConfig{Addr: "127.0.0.1:0", Keepalive: 50 * time.Millisecond}, p, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cl, err := lumberclient.SyncDial(srv.Addr().String(), lumberclient.JSONEncoder(func(v any) ([]byte, error) { return v.([]byte), nil }),
		lumberclient.Timeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if n, err := cl.Send([]any{[]byte(winlogbeat2004)}); err != nil || n != 1 {
		t.Fatalf("window acknowledged %d of 1: %v", n, err)
	}
}

func deliverFile(t *testing.T, p *Pipeline, _ *diskModel) {
	dir := t.TempDir()
	path, state := filepath.Join(dir, "events.json"), filepath.Join(dir, "positions.json")
	line := winlogbeat2004 + "\n"
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	ff, err := intake.NewFileFollower(intake.FileConfig{Paths: []string{path}, StatePath: state, PollInterval: 10 * time.Millisecond}, p, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer ff.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var sf struct {
			Files []struct{ Offset int64 } `json:"files"`
		}
		if b, err := os.ReadFile(state); err == nil && json.Unmarshal(b, &sf) == nil && len(sf.Files) == 1 &&
			sf.Files[0].Offset == int64(len(line)) {
			return // the position past the event is saved: acknowledged
		}
		if time.Now().After(deadline) {
			t.Fatal("the file position was never saved")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Think like the attacker: with the disk full, a forwarder floods new
// events (each with a fresh record id) hoping the kept changes grow without
// bound. At Config.MaxUnstored payloads are refused unread — counted, not
// decoded, not acknowledged — and once the log works again the kept
// changes are stored and events are taken again.
func TestUnstoredBounded(t *testing.T) {
	ctx := context.Background()
	disk := &diskModel{failAppend: 1 << 30}
	p := newTestPipeline(t, &recordSink{}, Config{Evidence: disk, MaxUnstored: 4 << 10})
	defer p.Close()
	rule := func(record int) []byte {
		return eventXML("Microsoft-Windows-Windows Firewall With Advanced Security/Firewall", 2004, record, changeAt,
			"RuleId", fmt.Sprintf("{flood-%d}", record), "RuleName", strings.Repeat("r", 400), "Direction", "1", "Protocol", "6",
			"LocalPorts", "450", "Action", "3", "Active", "1")
	}
	refused := 0
	for i := range 100 {
		res := p.Handle(ctx, intake.Message{Transport: intake.TransportHTTP, Payload: rule(1000 + i), Received: changeAt})
		if !errors.Is(res.Err, intake.ErrNotDurable) {
			t.Fatalf("event %d on a full disk: %+v", i, res)
		}
		if st := p.Stats(); st.UnstoredBytes > 4<<10+1024 {
			t.Fatalf("kept changes grew to %d bytes, over the 4 KiB bound by more than one change", st.UnstoredBytes)
		}
		if p.Stats().UnstoredFull > uint64(refused) {
			refused++
		}
	}
	st, ds := p.Stats(), p.Decoder().Stats()
	if refused == 0 || st.UnstoredFull != uint64(refused) {
		t.Fatalf("the bound was never hit: %+v", st)
	}
	if read := ds.ByFormat["xml"].Read; read != uint64(100-refused) {
		t.Fatalf("decoder read %d records, want %d: refused payloads must not be decoded", read, 100-refused)
	}
	// Room again: the kept changes are stored, events are taken again.
	disk.mu.Lock()
	disk.failAppend = 0
	disk.mu.Unlock()
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if res := p.Handle(ctx, intake.Message{Transport: intake.TransportHTTP, Payload: rule(2000), Received: changeAt}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	disk.mu.Lock() // the syncer syncs too
	n := len(disk.durable)
	disk.mu.Unlock()
	if n != 100-refused+1 {
		t.Fatalf("%d changes durable, want the %d evaluated", n, 100-refused+1)
	}
}
