package loader

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/knockwatch/knockwatch/sensor"
)

// Reader reads typed records from the program's ring buffer. Close
// unblocks a pending Read, which then returns ErrClosed.
type Reader struct {
	rd    *ringbuf.Reader
	clock sensor.Clock
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
func (s *Sensor) Clock() sensor.Clock {
	if s.cfg.Replay {
		return sensor.UnixClock
	}
	return MonotonicClock
}

// Read blocks until a record arrives. Records that do not decode are
// counted (Malformed) and skipped: they would mean C/Go drift.
func (r *Reader) Read() (sensor.Record, error) {
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
