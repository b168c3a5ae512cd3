package intake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	lumberclient "github.com/elastic/go-lumber/client/v2"
	"go.uber.org/zap/zaptest"
)

// durableRecorder is a recorder with a Sync (an evidence log): while
// failing > 0 its Sync fails; durable is how many messages were handled
// when a Sync last succeeded, so a test can tell whether an
// acknowledgement came after the Sync that covered it.
type durableRecorder struct {
	*recorder
	smu     sync.Mutex
	failing int
	syncs   int
	durable int
}

var errDiskFull = errors.New("no space left on device")

func (d *durableRecorder) Sync(context.Context) error {
	n := len(d.messages())
	d.smu.Lock()
	defer d.smu.Unlock()
	d.syncs++
	if d.failing > 0 {
		d.failing--
		return errDiskFull
	}
	d.durable = n
	return nil
}

func (d *durableRecorder) state() (syncs, durable int) {
	d.smu.Lock()
	defer d.smu.Unlock()
	return d.syncs, d.durable
}

func (d *durableRecorder) setFailing(n int) {
	d.smu.Lock()
	d.failing = n
	d.smu.Unlock()
}

// HTTP answers 202 only after the handler's Sync covered the events; a
// failing Sync is a 503 with Retry-After, counted not_durable.
func TestHTTPAcknowledgesOnlyDurable(t *testing.T) {
	d := &durableRecorder{recorder: newRecorder(), failing: 1}
	srv, err := NewHTTPServer(HTTPConfig{Addr: "127.0.0.1:0", Token: "t0ken"}, d, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	post := func() *http.Response {
		req, _ := http.NewRequest(http.MethodPost, "http://"+srv.Addr().String()+"/v1/events", bytes.NewReader([]byte(`{"EventID":5154}`)))
		req.Header.Set("Authorization", "Bearer t0ken")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := post(); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("sync failing: %d (Retry-After %q), want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp := post(); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("sync working: %d, want 202", resp.StatusCode)
	}
	if syncs, durable := d.state(); syncs != 2 || durable != 2 {
		t.Fatalf("syncs %d, durable %d: the 202 came before its sync", syncs, durable)
	}
	if st := srv.Stats(); st.Dropped[ReasonNotDurable] != 1 || st.Dropped[ReasonBusy] != 0 {
		t.Fatalf("dropped %v", st.Dropped)
	}
}

// Beats withholds the ACK while the handler's Sync fails and sends it once
// a Sync succeeded after every event of the window was handled.
func TestBeatsAckWaitsForSync(t *testing.T) {
	d := &durableRecorder{recorder: newRecorder(), failing: 3}
	srv := startBeats(t, BeatsConfig{Keepalive: 50 * time.Millisecond}, d)
	cl, err := lumberclient.SyncDial(srv.Addr().String(), lumberclient.JSONEncoder(rawEncoder), lumberclient.Timeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	n, err := cl.Send(lumberBatch([][]byte{[]byte(`{"n":1}`), []byte(`{"n":2}`), []byte(`{"n":3}`)}))
	if err != nil || n != 3 {
		t.Fatalf("acked %d: %v", n, err)
	}
	syncs, durable := d.state()
	if syncs != 4 || durable != 3 {
		t.Fatalf("ACK after %d syncs with %d events durable, want 4 syncs covering 3", syncs, durable)
	}
	if st := srv.Stats(); st.Dropped[ReasonNotDurable] != 1 || st.Accepted != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// The file follower saves a position only after a Sync covered what it
// passed; while Sync fails, the saved position stays where it was (the
// records are read again after a restart, never skipped).
func TestFilePositionOnlyWhenDurable(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "events.json")
	state := filepath.Join(t.TempDir(), "state.json")
	appendFile(t, logPath, line(1)+"\n")
	d := &durableRecorder{recorder: newRecorder()}
	ff := follow(t, FileConfig{Paths: []string{logPath}, StatePath: state}, d)
	d.wait(t, 1)
	offset := func() int64 {
		var sf stateFile
		b, err := os.ReadFile(state)
		if err != nil || json.Unmarshal(b, &sf) != nil || len(sf.Files) != 1 {
			return -1
		}
		return sf.Files[0].Offset
	}
	eventually(t, "first position saved", func() bool { return offset() == int64(len(line(1))+1) })
	d.setFailing(1 << 30)
	appendFile(t, logPath, line(2)+"\n")
	d.wait(t, 2)
	eventually(t, "not_durable counted", func() bool { return ff.Stats().Dropped[ReasonNotDurable] > 0 })
	if got := offset(); got != int64(len(line(1))+1) {
		t.Fatalf("position %d saved while the handler could not make the record durable", got)
	}
	if err := ff.Close(); err == nil {
		t.Fatal("Close saved the positions although Sync failed")
	}
	if got := offset(); got != int64(len(line(1))+1) {
		t.Fatalf("Close saved position %d", got)
	}
	d.setFailing(0)
	d2 := &durableRecorder{recorder: newRecorder()}
	ff2 := follow(t, FileConfig{Paths: []string{logPath}, StatePath: state}, d2)
	defer ff2.Close()
	msgs := d2.wait(t, 1)
	if string(msgs[0].Payload) != line(2) {
		t.Fatalf("after the restart: %s, want the record that was never durable", msgs[0].Payload)
	}
}
