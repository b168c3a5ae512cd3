package replay

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func readAll(t *testing.T, path string) (frames [][]byte, times []time.Time, c *Capture) {
	t.Helper()
	c, err := OpenCapture(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for {
		f, ts, ok, err := c.Next()
		if errors.Is(err, io.EOF) {
			return frames, times, c
		}
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			frames = append(frames, append([]byte(nil), f...))
			times = append(times, ts)
		}
	}
}

// Every link type of the corpus yields the same Ethernet frames' IP
// layer and the same times as the plain Ethernet capture of the same case.
func TestCaptureFormats(t *testing.T) {
	ref, refTimes, _ := readAll(t, filepath.Join(corpusDir, "pos_rej_knock", "capture.pcap"))
	if len(ref) != 30 {
		t.Fatalf("reference capture has %d frames", len(ref))
	}
	for _, path := range []string{"pos_clock_skew/capture.pcap", "pos_late_host_event/capture.pcap", "pos_s0_knock/capture.pcap.gz",
		"pos_ipv6/capture.pcapng", "pos_vlan/capture.pcap", "neg_no_change/capture.pcap"} {
		fr, times, _ := readAll(t, filepath.Join(corpusDir, path))
		if len(fr) == 0 {
			t.Fatalf("%s: no frames", path)
		}
		for i, f := range fr {
			if len(f) < 14 || (f[12] != 0x08 && f[12] != 0x81 && f[12] != 0x86) {
				t.Fatalf("%s frame %d: not Ethernet with IP or VLAN: % x", path, i, f[:min(len(f), 16)])
			}
			if i > 0 && times[i].Before(times[i-1]) {
				t.Fatalf("%s: times go back at %d", path, i)
			}
		}
	}
	// Raw IP and cooked captures of the same flows as the reference
	// (clock skew, late event: same knock, other connect time) carry the
	// same first frames byte for byte after the Ethernet header.
	raw, rawTimes, _ := readAll(t, filepath.Join(corpusDir, "pos_clock_skew", "capture.pcap"))
	for i := 0; i < 10; i++ {
		if string(raw[i][14:]) != string(ref[i][14:]) || !rawTimes[i].Equal(refTimes[i]) {
			t.Fatalf("raw IP frame %d differs from the Ethernet capture", i)
		}
	}
}

func TestCaptureCutShort(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(corpusDir, "pos_rej_knock", "capture.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cut.pcap")
	os.WriteFile(path, b[:len(b)-10], 0o644)
	eng, _, err := NewEngine(EngineGo, testSensorConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Run(context.Background(), Options{Captures: []string{path}, Engine: eng, Sink: &nopSink{}})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Packets != 29 || len(sum.CutShort) != 1 {
		t.Fatalf("packets %d, cut short %v", sum.Packets, sum.CutShort)
	}
}

func TestCaptureLoopbackAndErrors(t *testing.T) {
	dir := t.TempDir()
	// LINKTYPE_NULL: a 4-byte host-order address family, then IPv4.
	ref, _, _ := readAll(t, filepath.Join(corpusDir, "pos_rej_knock", "capture.pcap"))
	var b []byte
	hdr := make([]byte, 24)
	binary.LittleEndian.PutUint32(hdr[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(hdr[4:], 2)
	binary.LittleEndian.PutUint16(hdr[6:], 4)
	binary.LittleEndian.PutUint32(hdr[16:], 65535)
	binary.LittleEndian.PutUint32(hdr[20:], 0)
	b = append(b, hdr...)
	for _, f := range ref {
		d := append([]byte{2, 0, 0, 0}, f[14:]...)
		rec := make([]byte, 16)
		binary.LittleEndian.PutUint32(rec[0:], 1700000000)
		binary.LittleEndian.PutUint32(rec[8:], uint32(len(d)))
		binary.LittleEndian.PutUint32(rec[12:], uint32(len(d)))
		b = append(append(b, rec...), d...)
	}
	path := filepath.Join(dir, "lo.pcap")
	os.WriteFile(path, b, 0o644)
	fr, _, _ := readAll(t, path)
	if len(fr) != len(ref) || string(fr[0][14:]) != string(ref[0][14:]) || fr[0][12] != 0x08 {
		t.Fatalf("loopback capture: %d frames", len(fr))
	}
	// A corrupt record length is an error naming the file.
	binary.LittleEndian.PutUint32(b[24+8:], 1<<30)
	bad := filepath.Join(dir, "bad.pcap")
	os.WriteFile(bad, b, 0o644)
	eng, _, _ := NewEngine(EngineGo, testSensorConfig(), nil)
	if _, err := Run(context.Background(), Options{Captures: []string{bad}, Engine: eng, Sink: &nopSink{}}); err == nil {
		t.Fatal("corrupt capture read without error")
	}
	// Not a capture.
	if _, err := OpenCapture(filepath.Join(corpusDir, "hosts")); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("hosts file opened as a capture: %v", err)
	}
}
