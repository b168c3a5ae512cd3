package loader

import (
	"sync"
	"time"

	"github.com/knockwatch/knockwatch/sensor"
	"golang.org/x/sys/unix"
)

// programTime converts wall-clock t to the program's clock: unix ns in
// replay mode, CLOCK_MONOTONIC ns in live mode.
func (s *Sensor) programTime(t time.Time) uint64 {
	if s.cfg.Replay {
		return uint64(t.UnixNano())
	}
	return uint64(t.UnixNano() - monoToReal())
}

// MonotonicClock maps CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns, and
// its coarse variant bpf_ktime_get_coarse_ns) to UTC. The offset between the monotonic and
// real-time clocks is measured at most every 10 s and rounded to the
// microsecond, so timestamps from the same tick stay equal after
// conversion and keep their order.
var MonotonicClock sensor.Clock = (&monoClock{}).convert

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
