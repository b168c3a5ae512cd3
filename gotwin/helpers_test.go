package gotwin

import (
	"net/netip"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/testsupport/scenario"
	"github.com/knockwatch/knockwatch/sensor"
)

// engine drives a Twin as a scenario.Engine (the twin cannot fail).
type engine struct{ *Twin }

func (e engine) Run(frame []byte, ts time.Time) (uint32, error) { return e.Twin.Run(frame, ts), nil }
func (e engine) Sweep(now time.Time) (int, error)               { return e.Twin.Sweep(now), nil }
func (e engine) Records() ([]sensor.Record, error)              { return e.Twin.Records(), nil }
func (e engine) Counters() (sensor.Counters, error)             { return e.Twin.Counters(), nil }

// testConfig is the configuration both engines run generated inputs with:
// small direct-mapped tables (collisions and takeovers happen) and LRU
// tables large enough that nothing is evicted (the kernel's LRU is
// approximate, see the package doc).
func testConfig() sensor.Config {
	cfg := scenario.BaseConfig()
	cfg.PairSlots = 64
	cfg.PortSlots = 64
	cfg.Candidates = 4096
	cfg.Flagged = 4096
	cfg.Watches = 4096
	return cfg
}

// runTwin plays steps through a new twin made with cfg and allow.
func runTwin(t testing.TB, cfg sensor.Config, steps []scenario.Step, allow ...netip.Prefix) scenario.Outcome {
	t.Helper()
	tw, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.SetAllowlist(allow); err != nil {
		t.Fatal(err)
	}
	o := scenario.Play(t, engine{tw}, steps)
	if c, f, w := tw.Evictions(); c+f+w != 0 {
		t.Fatalf("twin evicted LRU entries (%d/%d/%d): size the test's tables up", c, f, w)
	}
	return o
}
