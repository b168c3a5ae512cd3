package intake

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func follow(t *testing.T, cfg FileConfig, h Handler) *FileFollower {
	t.Helper()
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 5 * time.Millisecond
	}
	ff, err := NewFileFollower(cfg, h, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return ff
}

func payloads(msgs []Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.Payload)
	}
	return out
}

func wantPayloads(t *testing.T, msgs []Message, want ...string) {
	t.Helper()
	got := payloads(msgs)
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

func line(n int) string { return fmt.Sprintf(`{"EventID":5154,"n":%d}`, n) }

func TestFileFollowRotation(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "events.jsonl")
	rec := newRecorder()
	ff := follow(t, FileConfig{Paths: []string{dir}, StatePath: filepath.Join(t.TempDir(), "state.json")}, rec)
	defer ff.Close()

	appendFile(t, log, line(1)+"\n"+line(2)+"\r\n\n"+`{"EventID":5154,"n":`)
	rec.wait(t, 2)
	appendFile(t, log, "3}\n") // the partial line is delivered only once complete
	wantPayloads(t, rec.wait(t, 3), line(1), line(2), line(3))

	// rename+create: the old file's tail and the new file, each exactly once
	appendFile(t, log, line(4)+"\n")
	if err := os.Rename(log, log+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, log+".1", line(5)+"\n") // the writer still had the old file open
	appendFile(t, log, line(6)+"\n")
	msgs := rec.wait(t, 6)
	got := strings.Join(payloads(msgs[3:]), "|")
	for _, n := range []int{4, 5, 6} {
		if strings.Count(got, line(n)) != 1 {
			t.Errorf("after rename: line %d seen %d times in %s", n, strings.Count(got, line(n)), got)
		}
	}

	// copytruncate: the file is copied away and truncated in place
	old, _ := os.ReadFile(log)
	if err := os.WriteFile(log+".2.gz", old, 0o644); err != nil { // compressed rotations are ignored
		t.Fatal(err)
	}
	if err := os.Truncate(log, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "truncation noticed", func() bool { return ff.Stats().Dropped[ReasonTruncated] == 1 })
	appendFile(t, log, line(7)+"\n")
	msgs = rec.wait(t, 7)
	wantPayloads(t, msgs[6:], line(7))
	if m := msgs[6]; m.Transport != TransportFile || m.Meta[MetaPath] != log || m.Meta[MetaOffset] != "0" {
		t.Errorf("message %+v", m)
	}
	// truncated and rewritten longer than before between two polls: the
	// fingerprint of the first bytes tells
	if err := os.WriteFile(log, []byte(line(8)+"\n"+line(9)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	msgs = rec.wait(t, 9)
	wantPayloads(t, msgs[7:], line(8), line(9))
	if n := len(rec.messages()); n != 9 {
		t.Errorf("%d messages, want 9", n)
	}
}

func TestFilePositionAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "nxlog.json")
	state := filepath.Join(t.TempDir(), "state.json")
	cfg := FileConfig{Paths: []string{filepath.Join(dir, "nxlog.json*")}, StatePath: state}
	appendFile(t, log, line(1)+"\n"+line(2)+"\n")
	rec := newRecorder()
	ff := follow(t, cfg, rec)
	rec.wait(t, 2)
	if err := ff.Close(); err != nil {
		t.Fatal(err)
	}
	var sf stateFile
	b, err := os.ReadFile(state)
	if err != nil || json.Unmarshal(b, &sf) != nil || len(sf.Files) != 1 || sf.Files[0].Offset != int64(2*len(line(1))+2) {
		t.Fatalf("state file %s: %v", b, err)
	}
	if tmp, _ := filepath.Glob(filepath.Join(filepath.Dir(state), ".*tmp*")); len(tmp) != 0 {
		t.Errorf("temporary state files left: %v", tmp)
	}

	// while stopped: more lines, then a rotation
	appendFile(t, log, line(3)+"\n")
	if err := os.Rename(log, log+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, log, line(4)+"\n")
	rec2 := newRecorder()
	ff2 := follow(t, cfg, rec2)
	defer ff2.Close()
	msgs := rec2.wait(t, 2)
	got := strings.Join(payloads(msgs), "|")
	if !strings.Contains(got, line(3)) || !strings.Contains(got, line(4)) || strings.Contains(got, line(1)) {
		t.Fatalf("after restart got %s", got)
	}

	// a saved position that does not match the file (inode reused by another
	// file) is not trusted: the file is read from its start
	if err := ff2.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(state)
	_ = json.Unmarshal(b, &sf)
	for i := range sf.Files {
		sf.Files[i].FPSum++
	}
	b, _ = json.Marshal(sf)
	if err := os.WriteFile(state, b, 0o600); err != nil {
		t.Fatal(err)
	}
	rec3 := newRecorder()
	ff3 := follow(t, cfg, rec3)
	rec3.wait(t, 4) // .1 from its start (1, 2, 3) and the new file (4)
	if err := ff3.Close(); err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(state, []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ff4, err := NewFileFollower(cfg, rec3, zaptest.NewLogger(t)); err == nil || !strings.Contains(err.Error(), state) {
		t.Errorf("corrupt state file: err %v", err)
		if err == nil {
			_ = ff4.Close()
		}
	}
}

func TestFileXMLEvents(t *testing.T) {
	dir := t.TempDir()
	sample := readTestdata(t, "mdecrevoisier_2004_any_any_rule_created.xml") // <?xml?><Events>, multi-line
	ev := bytes.TrimSpace(sample[bytes.Index(sample, []byte("<Event ")):bytes.LastIndex(sample, []byte("</Events>"))])
	rec := newRecorder()
	ff := follow(t, FileConfig{Paths: []string{filepath.Join(dir, "*.xml")}}, rec)
	defer ff.Close()
	appendFile(t, filepath.Join(dir, "a.xml"), string(sample))
	wev := filepath.Join(dir, "wevtutil.xml") // concatenated events, no root
	half := len(ev) / 2
	appendFile(t, wev, string(ev)+"\r\n"+string(ev[:half]))
	rec.wait(t, 2) // the half event stays pending
	appendFile(t, wev, string(ev[half:])+"\n")
	msgs := rec.wait(t, 3)
	for i, m := range msgs {
		if !bytes.Equal(m.Payload, ev) {
			t.Errorf("record %d: %.60q ... %.40q", i, m.Payload, m.Payload[max(0, len(m.Payload)-40):])
		}
	}
}

func TestFileLimitsAndBusy(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "x.jsonl")
	rec := newRecorder()
	rec.setBusy(3)
	appendFile(t, log, line(1)+"\n"+strings.Repeat("y", 300)+"\n"+line(2)+"\n"+strings.Repeat("z", 70000)+"\n"+line(3)+"\n")
	ff := follow(t, FileConfig{Paths: []string{log}, MaxRecordBytes: 100}, rec)
	defer ff.Close()
	wantPayloads(t, rec.wait(t, 3), line(1), line(2), line(3))
	eventually(t, "counters", func() bool {
		st := ff.Stats()
		return st.Dropped[ReasonTooLarge] == 2 && st.Dropped[ReasonBusy] == 1 && st.Accepted == 3 && st.ConnectionsOpen == 1
	})
	if _, err := NewFileFollower(FileConfig{}, rec, zaptest.NewLogger(t)); err == nil {
		t.Error("no paths accepted")
	}
	if _, err := NewFileFollower(FileConfig{Paths: []string{"[bad"}}, rec, zaptest.NewLogger(t)); err == nil {
		t.Error("bad glob accepted")
	}
}
