package gotwin

import (
	"net/netip"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/testsupport/scenario"
	"github.com/knockwatch/knockwatch/sensor"
)

// TestTwinTable runs the table both engines share
// (internal/testsupport/scenario; loader's TestProgramTable runs the same
// rows through the XDP program) against the twin, unprivileged.
func TestTwinTable(t *testing.T) {
	for _, c := range scenario.Table() {
		t.Run(c.Name, func(t *testing.T) {
			c.Check(t, runTwin(t, c.ConfigOf(), c.Steps, c.Allow...))
		})
	}
}

func TestTwinCounterNames(t *testing.T) {
	if numCounters != len(sensor.CounterNames) {
		t.Fatalf("twin has %d counters, loader names %d", numCounters, len(sensor.CounterNames))
	}
}

func TestTwinRingFull(t *testing.T) {
	cfg := scenario.BaseConfig()
	cfg.RingBytes = 4096 // 12 KNOCK records of 312 bytes (+8 header) fit in 4095
	tw, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		a := scenario.Conv{Src: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), Dst: scenario.Victim}
		for _, st := range a.Knock3() {
			tw.Run(st.Bytes(), scenario.T0.Add(st.At+time.Duration(i)*time.Millisecond))
		}
	}
	c := tw.Counters()
	if n := len(tw.Records()); n != 12 || c["ringbuf_full"] != 8 || c["flags"] != 20 {
		t.Fatalf("records %d, counters %v", n, c)
	}
}

func TestParseOutcomes(t *testing.T) {
	good := scenario.Conv{Src: scenario.Attacker, Dst: scenario.Victim}.SYN(0, 80).Bytes()
	tests := []struct {
		name string
		b    []byte
		want int
	}{
		{"short ethernet", good[:10], parseTruncated},
		{"arp", append(append([]byte{}, good[:12]...), 0x08, 0x06, 0, 0), parseNonIP},
		{"ip header cut", good[:30], parseTruncated},
		{"tcp header cut", good[:40], parseTruncated},
		{"ok", good, parseOK},
	}
	for _, tc := range tests {
		var p packet
		if got := parse(tc.b, &p); got != tc.want {
			t.Errorf("%s: outcome %d, want %d", tc.name, got, tc.want)
		}
	}
}
