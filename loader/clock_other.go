//go:build !linux

package loader

import (
	"time"

	"github.com/knockwatch/knockwatch/sensor"
)

// Off Linux there is no live sensor: only replay (unix ns) timestamps
// occur. These keep the package building for the portable replay engine.

// TAIClock reads ns as unix ns.
func TAIClock(ns uint64) time.Time { return time.Unix(0, int64(ns)).UTC() }

// MonotonicClock reads ns as unix ns.
var MonotonicClock sensor.Clock = TAIClock

func sign(v int64) int64 {
	if v < 0 {
		return -1
	}
	return 1
}

func (s *Sensor) programTime(t time.Time) uint64 { return uint64(t.UnixNano()) }
