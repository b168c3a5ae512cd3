package alert

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// The file sink appends (keeps what was there), creates with mode 0640,
// writes one line per record, and what Write returned is on disk when the
// file is opened again.
func TestWriterAppendsAndSyncs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alerts.jsonl")
	if err := os.WriteFile(path, []byte(`{"earlier":true}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(WriterConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	a, b := recs("w1", 3), recs("w2", 2)
	if err := w.Write(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	// Read back through a separate open before Close: the batches were
	// synced by Write, not by Close.
	lines := readLines(t, path)
	want := []string{`{"earlier":true}`}
	for _, r := range slices.Concat(a, b) {
		want = append(want, string(r.JSON))
	}
	if !slices.Equal(lines, want) {
		t.Fatalf("file holds\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(context.Background(), a); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	if st := w.Stats(); st.Written != 5 || st.Delivered != 5 || st.Errors != 0 || st.Name != "file:"+path {
		t.Fatalf("stats %+v", st)
	}

	// Reopen appends after what is there.
	w2, err := NewWriter(WriterConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := w2.Write(context.Background(), recs("w3", 1)); err != nil {
		t.Fatal(err)
	}
	w2.Close()
	if lines := readLines(t, path); len(lines) != 7 || lines[6] != string(recs("w3", 1)[0].JSON) {
		t.Fatalf("after reopen: %d lines", len(lines))
	}
}

func TestWriterCreateMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.jsonl")
	w, err := NewWriter(WriterConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm&^0o640 != 0 {
		t.Fatalf("alert file created with mode %v, want at most 0640", perm)
	}
}

// Invalid records are reported and counted; the valid ones of the batch are
// written. A multi-line object is compacted to one line.
func TestWriterInvalidRecords(t *testing.T) {
	var buf bytes.Buffer
	w := NewStreamWriter(&buf, "buf", false)
	multi := Record{ID: "m", Action: "created", JSON: []byte("{\n  \"event\": {\"id\": \"m\"}\n}\n")}
	batch := []Record{
		rec("good-1", "created"),
		{ID: "", JSON: []byte(`{"a":1}`)},
		{ID: "notjson", JSON: []byte(`{"a":`)},
		{ID: "array", JSON: []byte(`[1,2]`)},
		multi,
		rec("good-2", "created"),
	}
	err := w.Write(context.Background(), batch)
	if !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("err = %v, want ErrInvalidRecord", err)
	}
	for _, s := range []string{"empty id", `"notjson"`, `"array"`} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}
	want := strings.Join([]string{string(batch[0].JSON), `{"event":{"id":"m"}}`, string(batch[5].JSON)}, "\n") + "\n"
	if buf.String() != want {
		t.Fatalf("wrote\n%s\nwant\n%s", buf.String(), want)
	}
	if st := w.Stats(); st.Invalid != 3 || st.Written != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestWriterPretty(t *testing.T) {
	var buf bytes.Buffer
	w := NewStreamWriter(&buf, "", true)
	if err := w.Write(context.Background(), recs("p", 2)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "\n  \"event\": {\n") || strings.Count(out, "\n\n") != 2 {
		t.Fatalf("not indented:\n%s", out)
	}
	dec := json.NewDecoder(strings.NewReader(out))
	for i := range 2 {
		var v map[string]any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("object %d: %v", i, err)
		}
	}
}

// Concurrent writers never interleave inside a line.
func TestWriterConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.jsonl")
	w, err := NewWriter(WriterConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				if err := w.Write(context.Background(), recs(fmt.Sprintf("g%d-%02d", g, i), 3)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	w.Close()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if !json.Valid(sc.Bytes()) {
			t.Fatalf("line %d is not JSON: %q", n, sc.Text())
		}
		n++
	}
	if n != 8*20*3 {
		t.Fatalf("%d lines, want %d", n, 8*20*3)
	}
}

// Reopen follows log rotation: after the file was moved away, new records
// go to a new file at the configured path.
func TestWriterReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.jsonl")
	w, err := NewWriter(WriterConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write(context.Background(), recs("old", 1))
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	w.Write(context.Background(), recs("new", 1))
	if l := readLines(t, path); len(l) != 1 || !strings.Contains(l[0], "new-000") {
		t.Fatalf("new file: %q", l)
	}
	if l := readLines(t, path+".1"); len(l) != 1 || !strings.Contains(l[0], "old-000") {
		t.Fatalf("rotated file: %q", l)
	}
}

func TestWriterConfigErrors(t *testing.T) {
	if _, err := NewWriter(WriterConfig{}); err == nil {
		t.Fatal("empty path accepted")
	}
	if _, err := NewWriter(WriterConfig{Path: filepath.Join(t.TempDir(), "missing", "a.jsonl")}); err == nil {
		t.Fatal("path in a missing directory accepted")
	}
	w, err := NewWriter(WriterConfig{Path: StdoutPath})
	if err != nil || w.Stats().Name != "stdout" {
		t.Fatalf("stdout writer: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// One failing sink (a writer on a pipe nobody reads) does not keep the
// batch from the others, nor fail the write while a durable sink (the file)
// took it: the failing sink keeps the records in its backlog.
func TestFanout(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	pr.Close()
	broken := NewStreamWriter(pw, "broken-pipe", false)
	defer pw.Close()
	path := filepath.Join(t.TempDir(), "f.jsonl")
	file, err := NewWriter(WriterConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	mem := NewStreamWriter(&buf, "mem", false)
	f := NewFanout(broken, file, mem)

	rs := recs("fan", 4)
	if err := f.Write(context.Background(), rs); err != nil {
		t.Fatalf("fan-out error %v: the file (durable) took the batch", err)
	}
	if l := readLines(t, path); len(l) != 4 {
		t.Fatalf("file sink got %d lines", len(l))
	}
	if strings.Count(buf.String(), "\n") != 4 {
		t.Fatalf("memory sink got %q", buf.String())
	}
	st := StatsOf(f)
	if len(st) != 4 || st[0].Kind != "fanout" || st[0].Errors != 1 || st[1].Errors != 1 || st[1].Backlog != 4 ||
		st[2].Written != 4 || st[2].Backlog != 0 || st[3].Written != 4 {
		t.Fatalf("stats %+v", st)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Write(context.Background(), rs); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
}
