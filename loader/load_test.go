package loader

import (
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/sensor"
)

// TestLoad loads the program with the defaults in both modes: the verifier
// must accept it, and it must not take long.
func TestLoad(t *testing.T) {
	for _, replay := range []bool{false, true} {
		start := time.Now()
		s := loadReplay(t, func(c *sensor.Config) { *c = sensor.DefaultConfig(); c.Replay = replay })
		t.Logf("replay=%v: loaded in %v", replay, time.Since(start))
		s.Close()
	}
}
