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
// tables small enough that buckets fill, entries are taken over and
// candidates are pushed out, so the eviction orders are compared too.
func testConfig() sensor.Config {
	cfg := scenario.BaseConfig()
	cfg.PairSlots = 32
	cfg.PortSlots = 64
	cfg.Candidates = 8
	cfg.Watches = 64
	return cfg
}

// replayConfig is testConfig as `knockwatch replay --touches` runs it:
// the client's ACK proves an unseen answer, and every touch is a record.
func replayConfig() sensor.Config {
	cfg := testConfig()
	cfg.AckProof = true
	cfg.ReportTouches = true
	cfg.RingBytes = 4096 // fills: the ring's accounting (record sizes included) is compared too
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
	return scenario.Play(t, engine{tw}, steps)
}

func (e engine) SetRemoteFlag(src, dst netip.Addr, until time.Time) error {
	return e.Twin.SetRemoteFlag(src, dst, until)
}
func (e engine) RequestSample(host netip.Addr, until time.Time) error {
	return e.Twin.RequestSample(host, until)
}
