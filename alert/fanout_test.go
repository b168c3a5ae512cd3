package alert

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// switchSink is a sink that fails while failing is set and otherwise
// records what it was given.
type switchSink struct {
	name    string
	durable bool
	failing atomic.Bool
	mu      sync.Mutex
	got     []string
}

var errInjected = errors.New("injected failure")

func (s *switchSink) Write(_ context.Context, rs []Record) error {
	if s.failing.Load() {
		return errInjected
	}
	s.mu.Lock()
	s.got = append(s.got, keys(rs)...)
	s.mu.Unlock()
	return nil
}
func (s *switchSink) Close() error  { return nil }
func (s *switchSink) Durable() bool { return s.durable }
func (s *switchSink) Stats() Stats  { return Stats{Name: s.name, Kind: "test"} }
func (s *switchSink) keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

func fileSinkAt(t *testing.T) (*Writer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "alerts.jsonl")
	w, err := NewWriter(WriterConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	return w, path
}

// A failing sink does not make the durable file repeat records, nor fail
// the writes; it gets every record once, in order, when it recovers.
func TestFanoutSinksFailIndependently(t *testing.T) {
	file, path := fileSinkAt(t)
	hook := &switchSink{name: "hook", durable: true}
	f := NewFanoutConfig(FanoutConfig{RetryInterval: 10 * time.Millisecond, MaxRetryInterval: 20 * time.Millisecond}, file, hook)
	defer f.Close()
	hook.failing.Store(true)
	var want []string
	for i := range 10 {
		rs := recs("b"+string(rune('a'+i)), 3)
		want = append(want, keys(rs)...)
		if err := f.Write(context.Background(), rs); err != nil {
			t.Fatalf("batch %d: %v (the file took it)", i, err)
		}
	}
	if l := readLines(t, path); len(l) != 30 {
		t.Fatalf("file has %d lines, want 30 (each record once)", len(l))
	}
	if st := StatsOf(f); st[2].Backlog != 30 {
		t.Fatalf("backlog %+v", st[2])
	}
	hook.failing.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for len(hook.keys()) < 30 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := hook.keys(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("recovered sink got %v, want every record once in order", got)
	}
	if st := StatsOf(f); st[2].Backlog != 0 {
		t.Fatalf("backlog after recovery %+v", st[2])
	}
}

// With no durable sink taking a batch the write fails (the caller keeps
// it); a sink that did take it does not take it again on the retry.
func TestFanoutNoDurableSinkRetriesWithoutDuplicates(t *testing.T) {
	var buf bytes.Buffer
	mem := NewStreamWriter(&buf, "stdout", false)
	hook := &switchSink{name: "hook", durable: true}
	f := NewFanout(mem, hook)
	defer f.Close()
	hook.failing.Store(true)
	rs := recs("x", 4)
	for range 3 {
		if err := f.Write(context.Background(), rs); err == nil || !strings.Contains(err.Error(), "write sink hook") {
			t.Fatalf("write with no durable sink: %v", err)
		}
	}
	hook.failing.Store(false)
	if err := f.Write(context.Background(), append(rs, recs("y", 2)...)); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(buf.String(), "\n"); n != 6 {
		t.Fatalf("stdout got %d lines over 4 writes of the same batch, want 6", n)
	}
	if got := hook.keys(); len(got) != 6 {
		t.Fatalf("hook got %v", got)
	}
}

// The backlog of a failing sink is bounded; what it drops is counted.
func TestFanoutBacklogBounded(t *testing.T) {
	file, _ := fileSinkAt(t)
	hook := &switchSink{name: "hook", durable: true}
	hook.failing.Store(true)
	f := NewFanoutConfig(FanoutConfig{MaxBacklog: 5, RetryInterval: time.Hour}, file, hook)
	defer f.Close()
	for i := range 4 {
		if err := f.Write(context.Background(), recs("z"+string(rune('a'+i)), 5)); err != nil {
			t.Fatal(err)
		}
	}
	st := StatsOf(f)
	if st[2].Backlog != 5 || st[2].BacklogDropped != 15 || st[1].Written != 20 {
		t.Fatalf("stats %+v", st)
	}
}
