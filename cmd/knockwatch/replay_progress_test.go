//go:build linux

package main

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"golang.org/x/sys/unix"

	"github.com/knockwatch/knockwatch/internal/testsupport/pkt"
)

// openPTY opens a pseudo-terminal pair: what is written to the returned
// terminal can be read from the returned reader.
func openPTY(t *testing.T) (term *os.File, read func() string) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	term, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	var mu sync.Mutex
	var got bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			mu.Lock()
			got.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { term.Close(); master.Close(); <-done })
	return term, func() string {
		time.Sleep(100 * time.Millisecond) // let the reader drain the pty
		mu.Lock()
		defer mu.Unlock()
		return got.String()
	}
}

// bigCapture writes a capture of n SYNs to distinct ports (no knock: the
// sources differ), enough for the replay to report progress mid-way.
func bigCapture(t *testing.T, n int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "big.pcap")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 20, 14, 0, 0, 0, time.UTC)
	dst := netip.MustParseAddr("10.0.0.5")
	for i := range n {
		src := netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})
		b := pkt.TCP{Src: src, Dst: dst, SPort: 40000, DPort: uint16(1 + i%60000), Flags: pkt.SYN, Seq: uint32(i)}.Bytes()
		ci := gopacket.CaptureInfo{Timestamp: t0.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(b), Length: len(b)}
		if err := w.WritePacket(ci, b); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func fastProgress(t *testing.T) {
	d, e := progressDelay, progressEvery
	progressDelay, progressEvery = 0, 0
	t.Cleanup(func() { progressDelay, progressEvery = d, e })
}

// TestReplayProgressOnTerminal: with stderr on a terminal (a real pty),
// replay shows how far it is — bytes of the total, packets/s, elapsed,
// the rest, alerts so far — updating in place, and erases the line
// before the summary.
func TestReplayProgressOnTerminal(t *testing.T) {
	fastProgress(t)
	term, read := openPTY(t)
	dir := filepath.Join(corpus, "pos_rej_knock")
	var out bytes.Buffer
	err := run(context.Background(), []string{"replay", "--engine", "go", "--pcap", bigCapture(t, 40000),
		"--pcap", filepath.Join(dir, "capture.pcap"), "--events", filepath.Join(dir, "events.xml"),
		"--hosts", filepath.Join(corpus, "hosts")}, &out, term)
	if err != nil {
		t.Fatal(err)
	}
	got := read()
	lines := strings.Split(got, "\r")
	var updates []string
	for _, l := range lines {
		if strings.Contains(l, "packets/s  elapsed") {
			updates = append(updates, l)
		}
	}
	if len(updates) < 2 {
		t.Fatalf("want updates during the replay and at its end, got %d:\n%q", len(updates), got)
	}
	for _, w := range []string{" of ", "MiB", "%)", "packets/s", "elapsed", "left", "alerts"} {
		if !strings.Contains(updates[0], w) {
			t.Errorf("progress line lacks %q: %q", w, updates[0])
		}
	}
	if !strings.Contains(updates[0], "left ~") || strings.Contains(updates[0], "(100.0%)") {
		t.Errorf("first update is not mid-way: %q", updates[0])
	}
	final := updates[len(updates)-1]
	if !strings.Contains(final, "(100.0%)") || !strings.Contains(final, "alerts 1") || !strings.Contains(final, "left 0s") {
		t.Errorf("final update: %q", final)
	}
	i, j := strings.LastIndex(got, "\r\x1b[K"), strings.Index(got, "summary:")
	if i < 0 || j < i {
		t.Errorf("progress not erased before the summary:\n%q", got)
	}
	if strings.Count(out.String(), "\n") != 1 {
		t.Errorf("stdout holds more than the alert:\n%s", out.String())
	}
}

// TestReplayNoProgressOffTerminal: to a file, a pipe or /dev/null stderr
// gets the summary only, however long the replay.
func TestReplayNoProgressOffTerminal(t *testing.T) {
	fastProgress(t)
	capture := bigCapture(t, 40000)
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	if isTerminal(devnull) {
		t.Fatal("/dev/null taken for a terminal")
	}
	file, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var piped bytes.Buffer
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(&piped, r); close(copied) }()
	for name, stderr := range map[string]*os.File{"file": file, "pipe": w} {
		if err := run(context.Background(), []string{"replay", "--engine", "go", "--pcap", capture}, io.Discard, stderr); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	w.Close()
	<-copied
	written, err := os.ReadFile(file.Name())
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]string{"file": string(written), "pipe": piped.String()} {
		if !strings.Contains(s, "summary:") {
			t.Errorf("%s: no summary:\n%s", name, s)
		}
		if strings.ContainsAny(s, "\r\x1b") || strings.Contains(s, "packets/s  elapsed") {
			t.Errorf("%s: progress written off a terminal:\n%q", name, s)
		}
	}
}

// TestProgressLine checks the figures of one state.
func TestProgressLine(t *testing.T) {
	l := progressLine(replayProgressState(3<<30, 12<<30, 6_000_000), 2*time.Minute, 4)
	for _, w := range []string{"[#####               ]", "3.0 GiB of 12.0 GiB (25.0%)", "50.0k packets/s", "elapsed 2m0s", "left ~6m0s", "alerts 4"} {
		if !strings.Contains(l, w) {
			t.Errorf("%q lacks %q", l, w)
		}
	}
}
