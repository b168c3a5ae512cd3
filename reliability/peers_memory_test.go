package reliability

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// compressedWindow renders one Lumberjack v2 window of Winlogbeat-shaped
// events (Security 4624, the bulk of a real stream) of about size bytes,
// compressed in one frame as Winlogbeat does (zlib, best compression).
func compressedWindow(t testing.TB, size int) (frame []byte, events uint32, inflated int) {
	t.Helper()
	var raw bytes.Buffer
	now := time.Now()
	var ev []byte
	for raw.Len() < size {
		events++
		ev = logon(ev[:0], hostName(int(events)%numHosts), uint64(events), now)
		raw.WriteString("2J")
		_ = binary.Write(&raw, binary.BigEndian, events)
		_ = binary.Write(&raw, binary.BigEndian, uint32(len(ev)))
		raw.Write(ev)
	}
	var z bytes.Buffer
	zw, err := zlib.NewWriterLevel(&z, zlib.BestCompression)
	must(t, err)
	_, _ = zw.Write(raw.Bytes())
	must(t, zw.Close())
	var out bytes.Buffer
	out.WriteString("2W")
	_ = binary.Write(&out, binary.BigEndian, events)
	out.WriteString("2C")
	_ = binary.Write(&out, binary.BigEndian, uint32(z.Len()))
	out.Write(z.Bytes())
	return out.Bytes(), events, raw.Len()
}

// heapSampler records the largest heap in use while it runs.
type heapSampler struct {
	peak atomic.Uint64
	stop chan struct{}
	done chan struct{}
}

func sampleHeap(every time.Duration) *heapSampler {
	h := &heapSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > h.peak.Load() {
				h.peak.Store(ms.HeapInuse)
			}
			select {
			case <-h.stop:
				return
			case <-time.After(every):
			}
		}
	}()
	return h
}

func (h *heapSampler) end() uint64 {
	close(h.stop)
	<-h.done
	return h.peak.Load()
}

// The intake's share of the worst-case memory (docs/RELIABILITY.md,
// "Worst-case memory"): the memory budget, twice over for the garbage
// collector's pacing (GOGC=100 lets the heap reach twice the live set
// between collections), plus the fixed cost of every connection the
// default configuration allows (bufio, zlib and TLS state). The whole
// process adds the engine's and decoder's caps to this.
const (
	beatsConnFixed   = 160 << 10 // bufio 32 KiB, zlib inflater ~45 KiB, TLS buffers, goroutine stacks
	intakeWorstCase  = 2*intake.DefaultMemoryBudget + intake.DefaultBeatsMaxConns*beatsConnFixed + 64<<20
	memoryTestWindow = 12 << 20
)

// As many Beats connections as the default configuration allows (64)
// send highly compressed windows at once (12 MiB of Winlogbeat-shaped JSON
// in about 200 KiB each; each connection would hold 10 MiB chunks): the
// memory budget makes them wait, the heap stays under the intake's
// documented worst case, and every event is still acknowledged and counted.
func TestHostilePeerCompressedWindowsHeapBounded(t *testing.T) {
	conns := intake.DefaultBeatsMaxConns
	if testing.Short() {
		conns /= 2
	}
	frame, events, inflated := compressedWindow(t, memoryTestWindow)
	log := testLogger(t)
	sink, _ := fileSink(t)
	p := newPipeline(t, sink, pipeline.Config{}, log)
	defer p.Close()
	budget := intake.NewMemoryBudget(intake.DefaultMemoryBudget)
	bs, err := intake.NewBeatsServer(intake.BeatsConfig{Addr: "127.0.0.1:0", Budget: budget, Timeout: 2 * time.Minute}, p, log)
	must(t, err)
	defer bs.Close()
	// `knockwatch run` leaves the collector at its defaults: so does the test.
	debug.SetGCPercent(100)
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	hs := sampleHeap(5 * time.Millisecond)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", bs.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
			if _, err := c.Write(frame); err != nil {
				errs <- err
				return
			}
			errs <- readACKs(bufio.NewReader(c), events)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	peak := hs.end()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a window was not acknowledged: %v", err)
		}
	}
	grew := peak - min(peak, base.HeapInuse)
	st, bst := bs.Stats(), budget.Stats()
	if st.Received != uint64(conns)*uint64(events) {
		t.Fatalf("handled %d events, want %d", st.Received, uint64(conns)*uint64(events))
	}
	if grew > intakeWorstCase {
		t.Fatalf("heap grew by %d MiB under %d compressed windows, over the documented intake worst case of %d MiB",
			grew>>20, conns, intakeWorstCase>>20)
	}
	if bst.Peak > intake.DefaultMemoryBudget {
		t.Fatalf("budget held %d bytes at most, over its %d", bst.Peak, intake.DefaultMemoryBudget)
	}
	t.Logf("RESULT %d Beats connections each sending a %d KiB compressed window of %d MiB (%d events): all acknowledged in %v; "+
		"heap in use %d MiB before, peak %d MiB (+%d MiB; documented intake worst case %d MiB); budget peak %d MiB of %d, %d waits",
		conns, len(frame)>>10, inflated>>20, events, elapsed.Round(time.Millisecond), base.HeapInuse>>20, peak>>20, grew>>20,
		intakeWorstCase>>20, bst.Peak>>20, bst.Capacity>>20, bst.Waits)
}
