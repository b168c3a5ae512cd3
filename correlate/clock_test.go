package correlate

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/ecs"
)

// behind90 is the change of the 90-s case: the host opened 22 at t0+12 s
// on the sensor's clock, and its clock, 90 s behind, wrote t0-78 s.
func behind90() ExposureChange { return ruleAdded(t0.Add(12*sec-90*sec), Ports(22), 7001) }

func clock90(host string) *HostClock {
	return &HostClock{Host: host, Offset: -90 * sec, Samples: 5, Sources: 3, Spread: 4 * time.Millisecond,
		Measured: t0.Add(-time.Minute), Evidence: []ClockSample{{Src: other, SrcPort: 50000, Port: 445,
			HostTime: t0.Add(-time.Minute - 90*sec), SensorTime: t0.Add(-time.Minute), EventID: 5156, Channel: "Security", RecordID: 11}}}
}

// TestHostClockCorrects: a host 90 s behind alerts high once its clock is
// measured, whichever comes first (the clock or the evidence), and the
// alert carries the offset and its evidence under knockwatch.clock.
func TestHostClockCorrects(t *testing.T) {
	ack := t0.Add(25 * sec)
	for _, order := range []string{"clock first", "clock last", "clock between"} {
		t.Run(order, func(t *testing.T) {
			e, col := newTestEngine(t, nil)
			set := func() {
				if err := e.SetHostClock(victim, clock90("WS01.corp.example")); err != nil {
					t.Fatal(err)
				}
			}
			switch order {
			case "clock first":
				set()
				feed(t, e, knock3(), behind90(), handshakeAt(attacker, victim, 22, ack))
			case "clock last":
				feed(t, e, knock3(), behind90(), handshakeAt(attacker, victim, 22, ack))
				if n := len(col.all()); n != 0 {
					t.Fatalf("%d alerts before the clock is known: the 90 s are beyond the skew", n)
				}
				set()
			case "clock between":
				feed(t, e, knock3(), behind90())
				set()
				feed(t, e, handshakeAt(attacker, victim, 22, ack))
			}
			got := col.all()
			if len(got) != 1 || got[0].Confidence != ConfidenceHigh {
				t.Fatalf("records %v, want one high alert", summary(got))
			}
			c := got[0].Clock
			if c == nil || !c.Measured || !c.Applied || c.Offset != -90*sec || len(c.Evidence) != 1 {
				t.Fatalf("clock %+v", c)
			}
			if want := t0.Add(12 * sec); !c.ChangeTime.Equal(want) {
				t.Errorf("change time on the sensor clock %v, want %v", c.ChangeTime, want)
			}
			b, _ := json.Marshal(got[0])
			var j struct {
				Knockwatch struct {
					Clock map[string]any `json:"clock"`
				} `json:"knockwatch"`
			}
			if err := json.Unmarshal(b, &j); err != nil {
				t.Fatal(err)
			}
			if j.Knockwatch.Clock["offset"] != -90.0 || j.Knockwatch.Clock["applied"] != true {
				t.Errorf("knockwatch.clock %v", j.Knockwatch.Clock)
			}
			if e.Stats().AlertsClocked != 1 {
				t.Errorf("AlertsClocked %d", e.Stats().AlertsClocked)
			}
		})
	}
}

// TestHostClockOnlyAdds: a measurement, even a wrong (forged) one, never
// takes a match away: a change evaluated at its own time still matches.
// And it applies only to the host it was measured on.
func TestHostClockOnlyAdds(t *testing.T) {
	ack := t0.Add(25 * sec)
	e, col := newTestEngine(t, nil)
	// Someone made the sensor believe WS01 is 9 minutes ahead.
	forged := &HostClock{Host: "WS01", Offset: 9 * time.Minute, Samples: 3, Sources: 2}
	if err := e.SetHostClock(victim, forged); err != nil {
		t.Fatal(err)
	}
	feed(t, e, knock3(), ruleAdded(t0.Add(12*sec), Ports(22), 1), handshakeAt(attacker, victim, 22, ack))
	got := col.all()
	if len(got) != 1 || got[0].Confidence != ConfidenceHigh || got[0].Clock.Applied {
		t.Fatalf("records %v (clock %+v): the change's own time must still match", summary(got), got[0].Clock)
	}

	// A clock measured for another computer that claims the address does
	// not move this host's changes.
	e2, col2 := newTestEngine(t, nil)
	if err := e2.SetHostClock(victim, clock90("WS99")); err != nil {
		t.Fatal(err)
	}
	feed(t, e2, knock3(), behind90(), handshakeAt(attacker, victim, 22, ack))
	if n := len(col2.all()); n != 0 {
		t.Fatalf("%d alerts: WS99's clock applied to WS01's change", n)
	}
}

// TestHostClockBound: an offset beyond MaxClockOffset is refused and
// counted; clearing a clock takes the correction away for later evidence.
func TestHostClockBound(t *testing.T) {
	e, col := newTestEngine(t, func(c *Config) { c.MaxClockOffset = time.Minute })
	err := e.SetHostClock(victim, clock90("WS01"))
	if !errors.Is(err, ErrClockBound) {
		t.Fatalf("err %v, want ErrClockBound", err)
	}
	if e.Stats().ClockRefused != 1 || e.HostClockOf(victim) != nil {
		t.Fatalf("stats %+v", e.Stats())
	}
	feed(t, e, knock3(), behind90(), handshakeAt(attacker, victim, 22, t0.Add(25*sec)))
	if n := len(col.all()); n != 0 {
		t.Fatalf("%d alerts with a refused clock", n)
	}
	if _, err := New(Config{}, nil); err == nil {
		t.Fatal("zero config accepted")
	}
	cfg := DefaultConfig()
	cfg.MaxClockOffset = cfg.Retention + 1
	if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), "max clock offset") {
		t.Fatalf("err %v", err)
	}

	e3, col3 := newTestEngine(t, nil)
	if err := e3.SetHostClock(victim, clock90("WS01")); err != nil {
		t.Fatal(err)
	}
	if err := e3.SetHostClock(victim, nil); err != nil {
		t.Fatal(err)
	}
	feed(t, e3, knock3(), behind90(), handshakeAt(attacker, victim, 22, t0.Add(25*sec)))
	if n := len(col3.all()); n != 0 {
		t.Fatalf("%d alerts after the clock was cleared", n)
	}
}

// TestClockAlertIsECS: the record with knockwatch.clock validates.
func TestClockAlertIsECS(t *testing.T) {
	schema, err := ecs.Load("../testdata/ecs/ecs_flat_8.17.0.yml")
	if err != nil {
		t.Fatal(err)
	}
	e, col := newTestEngine(t, nil)
	if err := e.SetHostClock(victim, clock90("WS01")); err != nil {
		t.Fatal(err)
	}
	feed(t, e, knock3(), behind90(), handshakeAt(attacker, victim, 22, t0.Add(25*sec)))
	for _, a := range col.all() {
		b, _ := json.Marshal(a)
		for _, err := range schema.Validate(b, "knockwatch") {
			t.Errorf("%v in %s", err, b)
		}
	}
}
