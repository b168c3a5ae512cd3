package loader

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Reader reads typed records from the program's ring buffer. Close
// unblocks a pending Read, which then returns ErrClosed.
type Reader struct {
	rd    *ringbuf.Reader
	clock Clock
	bad   atomic.Uint64
}

// ErrClosed is returned by Read after Close.
var ErrClosed = errors.New("reader closed")

// NewReader opens the ring buffer. Times are converted with the sensor's
// clock: unix ns in replay mode, CLOCK_TAI mapped to UTC in live mode.
func (s *Sensor) NewReader() (*Reader, error) {
	rd, err := ringbuf.NewReader(s.objs.Events)
	if err != nil {
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	return &Reader{rd: rd, clock: s.Clock()}, nil
}

// Clock returns the conversion from the program's timestamps to UTC.
func (s *Sensor) Clock() Clock {
	switch {
	case s.cfg.Replay:
		return UnixClock
	case s.cfg.CoarseClock:
		return MonotonicClock
	}
	return TAIClock
}

// MonotonicClock maps CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_coarse_ns
// reads its coarse variant) to UTC. The offset between the monotonic and
// real-time clocks is measured at most every 10 s and rounded to the
// microsecond, so timestamps from the same tick stay equal after
// conversion and keep their order.
var MonotonicClock Clock = (&monoClock{}).convert

type monoClock struct {
	mu  sync.Mutex
	off int64
	at  time.Time
}

func (c *monoClock) convert(ns uint64) time.Time {
	c.mu.Lock()
	if c.at.IsZero() || time.Since(c.at) > 10*time.Second {
		c.off = monoToReal() / int64(time.Microsecond) * int64(time.Microsecond)
		c.at = time.Now()
	}
	off := c.off
	c.mu.Unlock()
	return time.Unix(0, int64(ns)+off).UTC()
}

func monoToReal() int64 {
	var mono, real unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono) != nil || unix.ClockGettime(unix.CLOCK_REALTIME, &real) != nil {
		return 0
	}
	return real.Nano() - mono.Nano()
}

// TAIClock maps CLOCK_TAI nanoseconds (bpf_ktime_get_tai_ns) to UTC using
// the kernel's current TAI offset.
func TAIClock(ns uint64) time.Time {
	var tai, real unix.Timespec
	if unix.ClockGettime(unix.CLOCK_TAI, &tai) != nil || unix.ClockGettime(unix.CLOCK_REALTIME, &real) != nil {
		return time.Unix(0, int64(ns)).UTC()
	}
	off := real.Nano() - tai.Nano()
	// Round the offset to whole seconds: it is an integer number of leap
	// seconds, and the two reads above are a few ns apart.
	off = (off + sign(off)*int64(time.Second)/2) / int64(time.Second) * int64(time.Second)
	return time.Unix(0, int64(ns)+off).UTC()
}

func sign(v int64) int64 {
	if v < 0 {
		return -1
	}
	return 1
}

// Read blocks until a record arrives. Records that do not decode are
// counted (Malformed) and skipped: they would mean C/Go drift.
func (r *Reader) Read() (Record, error) {
	for {
		raw, err := r.rd.Read()
		if err != nil {
			if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return nil, ErrClosed
			}
			return nil, fmt.Errorf("read ring buffer: %w", err)
		}
		rec, err := DecodeRecord(raw.RawSample, r.clock)
		if err != nil {
			r.bad.Add(1)
			continue
		}
		return rec, nil
	}
}

// SetDeadline makes Read return os.ErrDeadlineExceeded after t (zero: no
// deadline); replay uses it to drain what is already there.
func (r *Reader) SetDeadline(t time.Time) { r.rd.SetDeadline(t) }

// Pending reports how many bytes of records wait in the ring buffer.
func (r *Reader) Pending() int { return r.rd.AvailableBytes() }

// Malformed counts records that failed to decode.
func (r *Reader) Malformed() uint64 { return r.bad.Load() }

// Close ends Read.
func (r *Reader) Close() error { return r.rd.Close() }
