package gotwin

import (
	"net/netip"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/sensor"
)

// TestTwinScenarios checks the twin's own outcome of the shared scenarios
// (unprivileged: the differential test holds the program to the same).
func TestTwinScenarios(t *testing.T) {
	a := conv{src: attacker, dst: victim}
	b := conv{src: bystander, dst: victim}
	sc := scenarios(a, b)
	tests := []struct {
		name       string
		knockPorts []uint16 // nil: no knock
		kinds      []sensor.TouchKind
		hsPort     uint16 // 0: no handshake
		lastClosed bool
		lastOpen   bool
		counters   map[string]uint64
	}{
		{name: "knock REJ", knockPorts: []uint16{7000, 8000, 9000}, kinds: []sensor.TouchKind{1, 1, 1},
			counters: map[string]uint64{"syn": 3, "rst": 3, "touch_rej": 3, "candidates": 1, "flags": 1}},
		{name: "knock REJ, connect", knockPorts: []uint16{7000, 8000, 9000}, hsPort: 22,
			counters: map[string]uint64{"watch_started": 1, "handshakes": 1, "port_open": 1}},
		{name: "knock S0 with retransmissions", knockPorts: []uint16{7000, 8000, 9000}, kinds: []sensor.TouchKind{2, 2, 2},
			counters: map[string]uint64{"syn": 5, "syn_retrans": 1, "touch_s0": 3, "flags": 1}},
		{name: "knock S0 by sweep", knockPorts: []uint16{7000, 8000, 9000}, hsPort: 22, counters: map[string]uint64{"touch_s0": 3}},
		{name: "knock, other source first", knockPorts: []uint16{7000, 8000, 9000}, hsPort: 22, lastOpen: true},
		{name: "knock, port open all along", knockPorts: []uint16{7000, 8000, 9000}, hsPort: 22, lastOpen: true},
		{name: "knock, incomplete handshake", knockPorts: []uint16{7000, 8000, 9000}, counters: map[string]uint64{"handshakes": 0}},
		{name: "knock, wrong ack", knockPorts: []uint16{7000, 8000, 9000}, counters: map[string]uint64{"handshake_bad_ack": 1}},
		{name: "knock, repeated connect", knockPorts: []uint16{7000, 8000, 9000}, hsPort: 22, counters: map[string]uint64{"handshake_repeat": 1}},
		{name: "knock, handshake too slow", knockPorts: []uint16{7000, 8000, 9000}, counters: map[string]uint64{"handshakes": 0}},
		{name: "below threshold", counters: map[string]uint64{"touch_rej": 3, "candidates": 1, "flags": 0}},
		{name: "too slow", counters: map[string]uint64{"touch_rej": 3, "flags": 0}},
		{name: "backscatter", counters: map[string]uint64{"backscatter": 3, "touch_rej": 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			steps, ok := sc[tc.name]
			if !ok {
				t.Fatalf("no scenario %q", tc.name)
			}
			o := runTwin(t, testConfig(), steps)
			var ks []*sensor.Knock
			var hs []*sensor.Handshake
			for _, r := range o.records {
				switch r := r.(type) {
				case *sensor.Knock:
					ks = append(ks, r)
				case *sensor.Handshake:
					hs = append(hs, r)
				}
			}
			if tc.knockPorts == nil {
				if len(ks) != 0 {
					t.Fatalf("want no knock, got %+v", ks)
				}
			} else {
				if len(ks) != 1 {
					t.Fatalf("want one knock, got %d", len(ks))
				}
				k := ks[0]
				if k.Src != attacker || k.Dst != victim || len(k.Touches) != len(tc.knockPorts) {
					t.Fatalf("knock %+v", k)
				}
				for i, p := range tc.knockPorts {
					if k.Touches[i].Port != p || (tc.kinds != nil && k.Touches[i].Kind != tc.kinds[i]) {
						t.Fatalf("touch %d: %+v, want port %d", i, k.Touches[i], p)
					}
				}
			}
			if tc.hsPort == 0 {
				if len(hs) != 0 {
					t.Fatalf("want no handshake, got %+v", hs[0])
				}
			} else {
				if len(hs) != 1 || hs[0].Port != tc.hsPort || hs[0].Src != attacker {
					t.Fatalf("handshakes %+v", hs)
				}
				if hs[0].PortLastOpen.IsZero() == tc.lastOpen || hs[0].PortLastClosed.IsZero() == tc.lastClosed {
					t.Fatalf("port state before the handshake: closed %v open %v", hs[0].PortLastClosed, hs[0].PortLastOpen)
				}
			}
			for name, want := range tc.counters {
				if got := o.counters[name]; got != want {
					t.Errorf("counter %s = %d, want %d", name, got, want)
				}
			}
		})
	}
}

func TestTwinAllowlist(t *testing.T) {
	tw, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.SetAllowlist([]netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}); err != nil {
		t.Fatal(err)
	}
	a := conv{src: attacker, dst: victim}
	for _, st := range cat(a.rej(0, 7000), a.rej(sec(1), 8000), a.rej(sec(2), 9000)) {
		tw.Run(st.bytes(), t0.Add(st.at))
	}
	if r := tw.Records(); len(r) != 0 {
		t.Fatalf("allowlisted source flagged: %+v", r)
	}
	if c := tw.Counters(); c["allowlisted"] != 1 || c["flags"] != 0 {
		t.Fatalf("counters %v", c)
	}
}

func TestTwinCounterNames(t *testing.T) {
	if numCounters != len(sensor.CounterNames) {
		t.Fatalf("twin has %d counters, loader names %d", numCounters, len(sensor.CounterNames))
	}
}

func TestTwinRingFull(t *testing.T) {
	cfg := testConfig()
	cfg.RingBytes = 4096 // 13 KNOCK records of 312 bytes fit in 4095
	tw, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		a := conv{src: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), dst: victim}
		for _, st := range cat(a.rej(0, 7000), a.rej(sec(1), 8000), a.rej(sec(2), 9000)) {
			tw.Run(st.bytes(), t0.Add(st.at+time.Duration(i)*time.Millisecond))
		}
	}
	c := tw.Counters()
	if n := len(tw.Records()); n != 13 || c["ringbuf_full"] != 7 || c["flags"] != 20 {
		t.Fatalf("records %d, counters %v", n, c)
	}
}

func TestParseOutcomes(t *testing.T) {
	good := conv{src: attacker, dst: victim}.syn(0, 80).bytes()
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
