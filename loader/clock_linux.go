package loader

import (
	"sync"
	"time"

	"github.com/knockwatch/knockwatch/sensor"
	"golang.org/x/sys/unix"
)

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

// programTime converts wall-clock t to the program's clock: unix ns in
// replay mode, CLOCK_MONOTONIC or CLOCK_TAI ns in live mode.
func (s *Sensor) programTime(t time.Time) uint64 {
	if s.cfg.Replay {
		return uint64(t.UnixNano())
	}
	if s.cfg.CoarseClock {
		return uint64(t.UnixNano() - monoToReal())
	}
	var tai, real unix.Timespec
	if unix.ClockGettime(unix.CLOCK_TAI, &tai) != nil || unix.ClockGettime(unix.CLOCK_REALTIME, &real) != nil {
		return uint64(t.UnixNano())
	}
	off := tai.Nano() - real.Nano()
	off = (off + sign(off)*int64(time.Second)/2) / int64(time.Second) * int64(time.Second)
	return uint64(t.UnixNano() + off)
}

// MonotonicClock maps CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_coarse_ns
// reads its coarse variant) to UTC. The offset between the monotonic and
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
