package replay

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/testsupport/pkt"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents"
)

// The replay benchmark generates large captures into a temporary directory
// (never committed), then times `knockwatch replay` with each engine and
// `tshark -r FILE -Y 'tcp.flags.syn==1 || tcp.flags.reset==1'` on the same
// file, all as child processes so that their peak RSS can be read:
//
//	go test ./replay -run '^$' -bench BenchmarkReplay -benchtime 1x -timeout 60m
//
// KNOCKWATCH_BENCH_PACKETS sets the large capture's size (default 10M; the
// small one is a fifth of it), KNOCKWATCH_BENCH_DIR keeps the files.

// genCapture writes a capture of n packets: established flows' data and
// ACKs, handshakes, SYNs answered by RSTs from random sources, unanswered
// SYNs, knocks followed by a connect, UDP and ARP. Time advances 10 µs per
// packet (100k packets per capture-second).
func genCapture(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	hdr := make([]byte, 24)
	binary.LittleEndian.PutUint32(hdr[0:], 0xa1b23c4d)
	binary.LittleEndian.PutUint16(hdr[4:], 2)
	binary.LittleEndian.PutUint16(hdr[6:], 4)
	binary.LittleEndian.PutUint32(hdr[16:], 65535)
	binary.LittleEndian.PutUint32(hdr[20:], 1)
	w.Write(hdr)
	rng := rand.New(rand.NewPCG(7, 11))
	servers := []netip.Addr{ws01, ws02, netip.MustParseAddr("10.0.0.7"), netip.MustParseAddr("10.0.0.8")}
	ts := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	rec := make([]byte, 16)
	put := func(b []byte) {
		binary.LittleEndian.PutUint32(rec[0:], uint32(ts.Unix()))
		binary.LittleEndian.PutUint32(rec[4:], uint32(ts.Nanosecond()))
		binary.LittleEndian.PutUint32(rec[8:], uint32(len(b)))
		binary.LittleEndian.PutUint32(rec[12:], uint32(len(b)))
		w.Write(rec)
		w.Write(b)
		ts = ts.Add(10 * time.Microsecond)
		n--
	}
	// Long-lived flows (SMB-like): the client sends data, the server
	// ACKs it; sequence numbers advance as in a real capture, so tshark's
	// TCP analysis sees an ordinary conversation.
	payload := make([]byte, 1200)
	type dataFlow struct {
		data, ack []byte // templates; seq/ack patched per packet
		seq       uint32
		n         uint32
	}
	var flows []*dataFlow
	for i := 0; i < 64; i++ {
		c := flow{src: netip.AddrFrom4([4]byte{10, 1, byte(i >> 4), byte(i)}), dst: servers[i%4]}
		p := c.pk(50000+uint16(i), 445, pkt.ACK|pkt.PSH, uint32(i)*1000, 77, false)
		p.Payload = payload[:100+i*17]
		flows = append(flows, &dataFlow{data: p.Bytes(), ack: c.pk(50000+uint16(i), 445, pkt.ACK, 77, uint32(i)*1000, true).Bytes(),
			seq: uint32(i) * 1000, n: uint32(len(p.Payload))})
	}
	const tcpOff = 14 + 20
	udp := flow{src: ws02, dst: netip.MustParseAddr("10.0.0.53")}.pk(5353, 53, 0, 0, 0, false).Bytes()
	udp[14+9] = 17
	arp := append(append([]byte{}, udp[:12]...), 0x08, 0x06)
	arp = append(arp, make([]byte, 28)...)
	for n > 0 {
		switch r := rng.IntN(100); {
		case r < 78:
			fl := flows[rng.IntN(len(flows))]
			if rng.IntN(2) == 0 {
				binary.BigEndian.PutUint32(fl.data[tcpOff+4:], fl.seq)
				pkt.FixChecksums(fl.data)
				fl.seq += fl.n
				put(fl.data)
			} else {
				binary.BigEndian.PutUint32(fl.ack[tcpOff+8:], fl.seq)
				pkt.FixChecksums(fl.ack)
				put(fl.ack)
			}
		case r < 86: // a handshake to an open port
			c := flow{src: netip.AddrFrom4([4]byte{10, 2, byte(rng.IntN(256)), byte(rng.IntN(256))}), dst: servers[rng.IntN(4)]}
			for _, fr := range c.connect(0, 443)[:3] {
				put(fr.p.Bytes())
			}
		case r < 94: // a closed port answered by RST, random source (scan / flood)
			c := flow{src: netip.AddrFrom4([4]byte{198, 18, byte(rng.IntN(256)), byte(rng.IntN(256))}), dst: servers[rng.IntN(4)]}
			for _, fr := range c.rej(0, uint16(1+rng.IntN(1024))) {
				put(fr.p.Bytes())
			}
		case r < 97: // an unanswered SYN
			c := flow{src: netip.AddrFrom4([4]byte{198, 19, byte(rng.IntN(256)), byte(rng.IntN(256))}), dst: servers[rng.IntN(4)]}
			put(c.s0(0, uint16(1+rng.IntN(1024)))[0].p.Bytes())
		case r < 98: // a knock and a connect
			c := flow{src: netip.AddrFrom4([4]byte{203, 0, 113, byte(rng.IntN(256))}), dst: servers[rng.IntN(4)]}
			for _, fr := range frames(c.rej(0, 7000), c.rej(time.Millisecond, 8000), c.rej(2*time.Millisecond, 9000), c.connect(3*time.Millisecond, 4444)[:3]) {
				put(fr.p.Bytes())
			}
		case r < 99:
			put(udp)
		default:
			put(arp)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

type benchFiles struct {
	dir          string
	bin          string
	small, large string
	nSmall       int
	nLarge       int
	err          error
}

var (
	benchOnce sync.Once
	bf        benchFiles
)

func setupBench(b *testing.B) *benchFiles {
	benchOnce.Do(func() {
		n := 10_000_000
		if v := os.Getenv("KNOCKWATCH_BENCH_PACKETS"); v != "" {
			if n, bf.err = strconv.Atoi(v); bf.err != nil {
				return
			}
		}
		bf.nLarge, bf.nSmall = n, n/5
		bf.dir = os.Getenv("KNOCKWATCH_BENCH_DIR")
		if bf.dir == "" {
			if bf.dir, bf.err = os.MkdirTemp("", "knockwatch-replay-bench"); bf.err != nil {
				return
			}
		}
		bf.bin = filepath.Join(bf.dir, "knockwatch")
		out, err := exec.Command("go", "build", "-o", bf.bin, "github.com/knockwatch/knockwatch/cmd/knockwatch").CombinedOutput()
		if err != nil {
			bf.err = fmt.Errorf("build knockwatch: %v: %s", err, out)
			return
		}
		bf.small = filepath.Join(bf.dir, fmt.Sprintf("bench-%d.pcap", bf.nSmall))
		bf.large = filepath.Join(bf.dir, fmt.Sprintf("bench-%d.pcap", bf.nLarge))
		for _, c := range []struct {
			path string
			n    int
		}{{bf.small, bf.nSmall}, {bf.large, bf.nLarge}} {
			if st, err := os.Stat(c.path); err == nil && st.Size() > 0 {
				continue
			}
			if bf.err = genCapture(c.path, c.n); bf.err != nil {
				return
			}
		}
	})
	if bf.err != nil {
		b.Fatal(bf.err)
	}
	return &bf
}

// runChild runs a command and returns its wall time and peak RSS (bytes).
func runChild(b *testing.B, name string, args ...string) (time.Duration, int64) {
	b.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdout = nil
	stderr := &limitedBuffer{max: 8 << 10}
	cmd.Stderr = stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, stderr.b)
	}
	d := time.Since(start)
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	var rss int64
	if ru != nil {
		rss = ru.Maxrss * 1024
	}
	return d, rss
}

type limitedBuffer struct {
	b   []byte
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

var (
	benchMu      sync.Mutex
	benchResults = map[string]float64{} // packets/s by runner
)

// BenchmarkReplay reports packets/s and peak RSS of each engine on the
// large capture, peak RSS on the small one, and tshark's packets/s on the
// large one; the ratios come out in the last sub-benchmark's log.
func BenchmarkReplay(b *testing.B) {
	f := setupBench(b)
	for _, eng := range []string{EngineGo, EngineXDP} {
		b.Run("engine="+eng, func(b *testing.B) {
			if eng == EngineXDP && os.Geteuid() != 0 {
				b.Skip("xdp engine needs root")
			}
			_, rssSmall := runChild(b, f.bin, "replay", "--engine", eng, "--pcap", f.small)
			var total time.Duration
			var rss int64
			for i := 0; i < b.N; i++ {
				d, r := runChild(b, f.bin, "replay", "--engine", eng, "--pcap", f.large)
				total += d
				rss = max(rss, r)
			}
			pps := float64(f.nLarge) * float64(b.N) / total.Seconds()
			b.ReportMetric(pps, "packets/s")
			b.ReportMetric(float64(rss)/(1<<20), "MiB-maxrss")
			b.ReportMetric(float64(rssSmall)/(1<<20), "MiB-maxrss-small")
			benchMu.Lock()
			benchResults[eng] = pps
			benchMu.Unlock()
			b.Logf("%s: %.0f packets/s on %d packets; max RSS %.1f MiB (%d packets: %.1f MiB)",
				eng, pps, f.nLarge, float64(rss)/(1<<20), f.nSmall, float64(rssSmall)/(1<<20))
		})
	}
	b.Run("tshark", func(b *testing.B) {
		if _, err := exec.LookPath("tshark"); err != nil {
			b.Skip("tshark not installed")
		}
		var total time.Duration
		for i := 0; i < b.N; i++ {
			d, _ := runChild(b, "tshark", "-r", f.large, "-Y", "tcp.flags.syn==1 || tcp.flags.reset==1")
			total += d
		}
		pps := float64(f.nLarge) * float64(b.N) / total.Seconds()
		b.ReportMetric(pps, "packets/s")
		benchMu.Lock()
		benchResults["tshark"] = pps
		for _, eng := range []string{EngineGo, EngineXDP} {
			if v, ok := benchResults[eng]; ok {
				b.Logf("ratio %s/tshark: %.1fx", eng, v/pps)
			}
		}
		benchMu.Unlock()
	})
}

// BenchmarkEngine is the in-process cost per packet of each engine on a
// pre-read slice of the small capture's first packets (no file I/O).
func BenchmarkEngine(b *testing.B) {
	path := filepath.Join(b.TempDir(), "engine.pcap")
	const n = 200_000
	if err := genCapture(path, n); err != nil {
		b.Fatal(err)
	}
	c, err := OpenCapture(path)
	if err != nil {
		b.Fatal(err)
	}
	var frames [][]byte
	var times []time.Time
	for {
		fr, ts, ok, err := c.Next()
		if err != nil {
			break
		}
		if ok {
			frames = append(frames, append([]byte(nil), fr...))
			times = append(times, ts)
		}
	}
	c.Close()
	for _, kind := range []string{EngineGo, EngineXDP} {
		b.Run(kind, func(b *testing.B) {
			if kind == EngineXDP && os.Geteuid() != 0 {
				b.Skip("xdp engine needs root")
			}
			eng, _, err := NewEngine(kind, testSensorConfig(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer eng.Close()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				j := i % len(frames)
				if err := eng.Run(frames[j], times[j]); err != nil {
					b.Fatal(err)
				}
				if err := eng.Drain(func(sensor.Record) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// nopSink counts what replay hands over.
type nopSink struct{ records, changes int }

func (n *nopSink) AddRecord(context.Context, sensor.Record) error { n.records++; return nil }
func (n *nopSink) AddChange(*winevents.ExposureChange) error      { n.changes++; return nil }

// BenchmarkRun replays a generated 1M-packet capture in-process (file
// reading, merging, sweeping and the engine, without the correlation
// engine): ns/op is per packet.
func BenchmarkRun(b *testing.B) {
	const n = 1_000_000
	path := filepath.Join(b.TempDir(), "run.pcap")
	if err := genCapture(path, n); err != nil {
		b.Fatal(err)
	}
	for _, kind := range []string{EngineGo, EngineXDP} {
		b.Run(kind, func(b *testing.B) {
			if kind == EngineXDP && os.Geteuid() != 0 {
				b.Skip("xdp engine needs root")
			}
			eng, _, err := NewEngine(kind, sensor.DefaultConfig(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer eng.Close()
			b.ResetTimer()
			var packets int64
			for i := 0; i < b.N; i += n {
				sum, err := Run(context.Background(), Options{Captures: []string{path}, Engine: eng, Sink: &nopSink{}})
				if err != nil {
					b.Fatal(err)
				}
				packets += sum.Packets
			}
			b.ReportMetric(float64(packets)/b.Elapsed().Seconds(), "packets/s")
		})
	}
}
