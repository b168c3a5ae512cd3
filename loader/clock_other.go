//go:build !linux

package loader

import (
	"time"

	"github.com/knockwatch/knockwatch/sensor"
)

// MonotonicClock reads ns as unix ns off Linux (nothing live runs there).
var MonotonicClock sensor.Clock = sensor.UnixClock

// programTime is unix ns off Linux (replay only).
func (s *Sensor) programTime(t time.Time) uint64 { return uint64(t.UnixNano()) }
