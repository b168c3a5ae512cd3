package loader

import (
	"testing"

	"github.com/knockwatch/knockwatch/internal/testsupport/scenario"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
	"github.com/knockwatch/knockwatch/sensor"
)

// Short names for the shared scenario builders (internal/testsupport/scenario).
type (
	step = scenario.Step
	conv = scenario.Conv
)

var (
	t0        = scenario.T0
	attacker  = scenario.Attacker
	victim    = scenario.Victim
	bystander = scenario.Bystander
	attacker6 = scenario.Attacker6
	victim6   = scenario.Victim6
	sec       = scenario.Sec
	cat       = scenario.Cat
	a         = conv{Src: attacker, Dst: victim}
)

// loadReplay loads the program in replay mode with the scenarios' base
// configuration, changed by mutate.
func loadReplay(t testing.TB, mutate func(*sensor.Config)) *Sensor {
	t.Helper()
	testenv.RequirePrivileged(t)
	cfg := scenario.BaseConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := Load(cfg, Options{})
	if err != nil {
		t.Fatalf("load: %+v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// replayer opens a Replayer on s, closed with the test.
func replayer(t testing.TB, s *Sensor) *Replayer {
	t.Helper()
	r, err := s.NewReplayer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// runSteps pushes the steps through the program and returns what it made
// of them.
func runSteps(t testing.TB, s *Sensor, steps []step) scenario.Outcome {
	t.Helper()
	return scenario.Play(t, replayer(t, s), steps)
}

// drain reads every record already in the ring buffer.
func drain(t testing.TB, rd *Reader) []sensor.Record {
	t.Helper()
	var recs []sensor.Record
	for rd.Pending() > 0 {
		r, err := rd.Read()
		if err != nil {
			t.Fatalf("read records: %v", err)
		}
		recs = append(recs, r)
	}
	return recs
}

func knocks(recs []sensor.Record) []*sensor.Knock { return scenario.Outcome{Records: recs}.Knocks() }

func handshakes(recs []sensor.Record) []*sensor.Handshake {
	return scenario.Outcome{Records: recs}.Handshakes()
}
