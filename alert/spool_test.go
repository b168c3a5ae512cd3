package alert

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// segmentFiles lists the spool segment files of dir in order.
func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, segPrefix+"*"+segSuffix))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

// spoolWhileDown writes rs through a webhook whose receiver is down and
// closes it, leaving them in the spool at dir.
func spoolWhileDown(t *testing.T, dir string, rs []Record) {
	t.Helper()
	cfg := testConfig(t, "http://"+downAddr(t)+"/alerts", dir)
	cfg.CloseTimeout = 10e6
	w, err := NewWebhook(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// deliverSpool opens a webhook on dir with a working receiver and waits
// until n records were delivered.
func deliverSpool(t *testing.T, dir string, n int, more []Record) (*receiver, Stats) {
	t.Helper()
	rv := newReceiver(t)
	addr := downAddr(t)
	serveAt(t, addr, rv)
	w := mustWebhook(t, testConfig(t, "http://"+addr+"/alerts", dir))
	if more != nil {
		if err := w.Write(context.Background(), more); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "delivery", func() bool { return w.Stats().Delivered == uint64(n) })
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return rv, w.Stats()
}

// A crash in the middle of an append leaves a torn last frame: it is
// detected, skipped and counted; everything before it and everything
// written after the restart is delivered.
func TestSpoolTornTail(t *testing.T) {
	dir := t.TempDir()
	first := recs("torn", 10)
	spoolWhileDown(t, dir, first)
	segs := segmentFiles(t, dir)
	if len(segs) != 1 {
		t.Fatalf("segments: %v", segs)
	}
	torn := appendFrame(nil, rec("lost", "created"))[:20]
	f, err := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(torn)
	f.Close()

	after := recs("after", 3)
	rv, st := deliverSpool(t, dir, 13, after)
	if want := keys(slices.Concat(first, after)); !slices.Equal(rv.received(), want) {
		t.Fatalf("received %v\nwant %v", rv.received(), want)
	}
	if st.CorruptFrames != 1 || st.CorruptBytes != uint64(len(torn)) {
		t.Fatalf("torn frame not counted: %+v", st)
	}
}

// A damaged byte in the middle of the spool loses that record only (counted);
// the sender resynchronises on the next frame.
func TestSpoolCorruptMiddle(t *testing.T) {
	dir := t.TempDir()
	rs := recs("mid", 10)
	spoolWhileDown(t, dir, rs)
	seg := segmentFiles(t, dir)[0]
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	frame := len(appendFrame(nil, rs[0]))
	b[4*frame+frameHeaderSize+30] ^= 0x20 // inside the JSON of record 4
	if err := os.WriteFile(seg, b, 0o640); err != nil {
		t.Fatal(err)
	}
	rv, st := deliverSpool(t, dir, 9, nil)
	want := keys(slices.Delete(slices.Clone(rs), 4, 5))
	if !slices.Equal(rv.received(), want) {
		t.Fatalf("received %v\nwant %v", rv.received(), want)
	}
	if st.CorruptFrames != 1 || st.CorruptBytes != uint64(frame) {
		t.Fatalf("corruption not counted: %+v", st)
	}
}

// A damaged cursor file makes the spool start over from its oldest record:
// the receiver may see records again (at-least-once), nothing is lost.
func TestSpoolDamagedCursor(t *testing.T) {
	dir := t.TempDir()
	rv1, _ := deliverSpool(t, dir, 4, recs("cur", 4))
	if len(rv1.received()) != 4 {
		t.Fatal("first delivery")
	}
	if err := os.WriteFile(filepath.Join(dir, cursorName), []byte("garbage"), 0o640); err != nil {
		t.Fatal(err)
	}
	rv2, _ := deliverSpool(t, dir, 6, recs("new", 2))
	want := keys(slices.Concat(recs("cur", 4), recs("new", 2)))
	if !slices.Equal(rv2.received(), want) {
		t.Fatalf("received %v\nwant %v", rv2.received(), want)
	}
}

// Two sinks on one spool directory would interleave deliveries: the second
// is refused while the first holds it.
func TestSpoolLocked(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, "http://"+downAddr(t)+"/alerts", dir)
	w := mustWebhook(t, cfg)
	if _, err := NewWebhook(cfg); err == nil {
		t.Fatal("second webhook on a locked spool dir was opened")
	}
	w.Close()
	w2, err := NewWebhook(cfg)
	if err != nil {
		t.Fatalf("reopen after Close: %v", err)
	}
	w2.Close()
}

// readAll reads a spool from its cursor to the end, as the sender does.
func readAll(t testing.TB, s *spool) []Record {
	var out []Record
	s.mu.Lock()
	pos := s.cursor
	s.mu.Unlock()
	for range 1 << 16 {
		rs, next, err := s.read(pos, 3, 1<<20, 1<<20)
		if err != nil {
			t.Fatalf("read spool: %v", err)
		}
		if len(rs) == 0 && next == pos {
			return out
		}
		if before(next, pos) {
			t.Fatalf("spool position went back from %+v to %+v", pos, next)
		}
		out = append(out, rs...)
		pos = next
	}
	t.Fatal("spool read does not end")
	return nil
}

// FuzzSpoolDamage damages a spool segment of known records (a flipped byte,
// a truncation) and checks that exactly the undamaged records are read, in
// order, and that a damaged one is counted.
func FuzzSpoolDamage(f *testing.F) {
	f.Add(uint32(0), uint8(0), uint32(1<<31))
	f.Add(uint32(300), uint8(1), uint32(1<<31))
	f.Add(uint32(5), uint8(0x80), uint32(1000))
	f.Add(uint32(0), uint8(0), uint32(17))
	f.Fuzz(func(t *testing.T, flipAt uint32, mask uint8, cut uint32) {
		rs := recs("fz", 8)
		var seg []byte
		var ends []int
		for _, r := range rs {
			seg = appendFrame(seg, r)
			ends = append(ends, len(seg))
		}
		flip := int(flipAt) % len(seg)
		if mask != 0 {
			seg[flip] ^= mask
		}
		n := int(cut) % (len(seg) + 1)
		seg = seg[:n]
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segName(1)), seg, 0o640); err != nil {
			t.Fatal(err)
		}
		var c counters
		s, _, err := openSpool(dir, 1<<30, 1<<20, &c)
		if err != nil {
			t.Fatal(err)
		}
		defer s.close()
		got := readAll(t, s)

		var want []Record
		lost := false
		for i, end := range ends {
			start := end - len(appendFrame(nil, rs[i]))
			damaged := end > n || (mask != 0 && flip >= start && flip < end)
			if damaged {
				lost = lost || start < n
				continue
			}
			want = append(want, rs[i])
		}
		if !slices.Equal(keys(got), keys(want)) {
			t.Fatalf("read %v, want %v (flip %d^%#x, cut %d)", keys(got), keys(want), flip, mask, n)
		}
		if lost != (c.corruptFrames.Load() > 0) {
			t.Fatalf("damage counted %d, lost %v", c.corruptFrames.Load(), lost)
		}
		if s.records != int64(len(want)) {
			t.Fatalf("spool counted %d records at open, %d readable", s.records, len(want))
		}
	})
}

// FuzzFrameReader feeds arbitrary bytes to the frame reader: it never
// panics, never loops, always ends at the end of the region, and accounts
// for every byte as a frame or as skipped.
func FuzzFrameReader(f *testing.F) {
	two := appendFrame(appendFrame(nil, rec("a", "created")), rec("b", "upgraded"))
	f.Add(two)
	f.Add(two[:len(two)-3])
	f.Add(append([]byte("KWS1\xff\xff\xff\x7f"), two...))
	f.Add(append(append([]byte{}, two[5:]...), two...))
	f.Add([]byte("KWS1KWS1KWS1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// The spool reads segments through io.ReaderAt; FuzzSpoolDamage
		// covers the files, this target the parser at full speed.
		r := newFrameReader(bytes.NewReader(data), 0, int64(len(data)))
		var framed, skipped int64
		for i := 0; ; i++ {
			if i > len(data) {
				t.Fatal("reader does not end")
			}
			rec, _, sk, err := r.next()
			skipped += sk
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if rec.ID == "" || len(rec.JSON) == 0 {
				t.Fatalf("empty record %+v", rec)
			}
			framed += r.pos() - r.lastStart()
		}
		if framed+skipped != int64(len(data)) || r.pos() != int64(len(data)) {
			t.Fatalf("framed %d + skipped %d != %d bytes (pos %d)", framed, skipped, len(data), r.pos())
		}
	})
}
