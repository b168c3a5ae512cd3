package replay

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/testsupport/scenario"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
	"github.com/knockwatch/knockwatch/sensor"
)

// The end-to-end half of issue 11's attack table: each attack of
// scenario.Attacks that ends in a connection to the newly opened port
// 4444, with the Windows Firewall event that opened it (a 2004, 0.2 s
// before each connection), replayed through `knockwatch replay`'s
// path — capture file, event file, engine, pipeline, correlation rule —
// on both engines. What each must give is written from the attack, not
// from a run: one high alert per use of the knock, none for the scan of a
// filtered host or when someone else connected first.
var attackAlerts = map[string]int{
	"attack: knock used again two minutes later":                2,
	"attack: knock used again an hour later":                    2,
	"attack: nine open ports first, then the new one":           1,
	"attack: own half-open probe of the new port":               1,
	"attack: SYN-ACK to a spoofed source before the connection": 1,
	"attack control: another source completes first":            0,
	"attack: SYN scan of a filtered host, then a connect":       0,
	"attack: answers before their SYNs":                         1,
	"attack: S0 knock, then an immediate connection":            1,
	"attack: one-way tap, the ACK proves the handshake":         1,
	"attack: the candidate pushed out, the flag survives":       1,
}

// e2eBase is the capture time the end-to-end attacks start at (the
// scenario offsets are from scenario.T0; pcaps are written from ct0).
func writeAttack(t *testing.T, dir string, steps []scenario.Step, opens []time.Duration) (pcapPath, eventsPath string) {
	t.Helper()
	var fs []frame
	for _, st := range steps {
		if st.Sweep {
			continue // replay sweeps by itself, every second of capture time
		}
		fs = append(fs, frame{at: st.At, p: st.P})
	}
	pcapPath = filepath.Join(dir, "capture.pcap")
	if err := os.WriteFile(pcapPath, writePcap(t, fs, 1, true, false), 0o644); err != nil {
		t.Fatal(err)
	}
	var ev strings.Builder
	ev.WriteString("<Events>\n")
	for i, at := range opens {
		ev.WriteString(eventXML(fwEvent{id: 2004, at: at, host: "WS01.corp.example", record: 81000 + i,
			rule: "Remote Support 4444", port: "4444", direction: 1, action: 3}))
		ev.WriteString("\n")
	}
	ev.WriteString("</Events>\n")
	eventsPath = filepath.Join(dir, "events.xml")
	if err := os.WriteFile(eventsPath, []byte(ev.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return pcapPath, eventsPath
}

// opensBefore returns, for every SYN of the attacker to port 4444 that
// starts a use of the knock, the time 0.2 s
// before it (when the rule is added).
func opensBefore(c scenario.Case) []time.Duration {
	var out []time.Duration
	seen := map[time.Duration]bool{}
	for _, st := range c.Steps {
		p := st.P
		if st.Sweep || p.Src != scenario.Attacker || p.DPort != 4444 || p.Flags != 0x02 || seen[st.At] {
			continue
		}
		// One rule event per use: a SYN within a second of the last one
		// is the same use (a probe, then the connection).
		if len(out) > 0 && st.At-out[len(out)-1] < 2*time.Second {
			continue
		}
		seen[st.At] = true
		out = append(out, st.At-200*time.Millisecond)
	}
	return out
}

func e2eEngines() []string { return []string{EngineGo, EngineXDP} }

func TestAttacksEndToEnd(t *testing.T) {
	cases := map[string]scenario.Case{}
	for _, c := range scenario.Attacks() {
		cases[c.Name] = c
	}
	for name, want := range attackAlerts {
		c, ok := cases[name]
		if !ok {
			t.Fatalf("attack %q is not in scenario.Attacks", name)
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			pcapPath, eventsPath := writeAttack(t, dir, c.Steps, opensBefore(c))
			scfg := c.ConfigOf()
			scfg.Replay = false // NewEngine sets it
			for _, kind := range e2eEngines() {
				t.Run(kind, func(t *testing.T) {
					if kind == EngineXDP {
						testenv.RequirePrivileged(t)
					}
					got, sum := replayFiles(t, kind, scfg, []string{pcapPath}, []string{eventsPath}, filepath.Join(corpusDir, "hosts"))
					high := 0
					for _, a := range got {
						if a.Source != scenario.Attacker.String() || a.Dest != scenario.Victim.String() || a.Port != 4444 {
							t.Errorf("alert %+v: not the attacker's connection to 4444", a)
						}
						if a.Confidence == "high" {
							high++
						}
					}
					if high != want || len(got) != want {
						t.Fatalf("%d alerts (%d high), want %d high: %+v\nsummary: %d knocks, %d handshakes, counters %v",
							len(got), high, want, got, sum.Knocks, sum.Handshakes, sum.Counters)
					}
				})
			}
		})
	}
}

// TestFloodAttacksEndToEnd: a knock of dropped SYNs inside a 300,000/s
// random-source SYN flood, and a knock among 100,000 spoofed REJ knocks in
// 10 s, each followed by the rule and the connection, alert high end to
// end. The captures hold the packets that share the attacker's buckets
// (scenario.FloodTrial, SpoofedKnocks: exactly what decides the attacker's
// fate; gotwin's TestFloodFilterExact and TestSpoofedKnocks hold the
// filtered and the full runs equal); random hash seeds.
func TestFloodAttacksEndToEnd(t *testing.T) {
	rng := rand.New(rand.NewPCG(uint64(scenario.RandomSeed()), uint64(scenario.RandomSeed())))
	cfg := sensor.DefaultConfig()
	cfg.HashSeed = scenario.RandomSeed()
	tables := cfg.Tables()
	a := scenario.Conv{}

	ft := scenario.NewFloodTrial(rng, 300_000, false)
	flood := slices.Collect(ft.Steps(0, true, cfg.HashSeed, tables.PairBuckets))
	a.Src, a.Dst = ft.Attacker, scenario.Victim
	connectAt := ft.KnockAt + 2*ft.Gap + 300*time.Millisecond // knock && ssh: before the S0 timeout
	flood = append(flood, a.Connect(connectAt, 4444)...)

	sk := scenario.NewSpoofedKnocks(rng, 100_000)
	spoofed := slices.Collect(sk.Steps(true, cfg.HashSeed, tables))

	for _, tc := range []struct {
		name     string
		attacker string
		steps    []scenario.Step
		open     time.Duration
	}{
		{"S0 knock in a SYN flood, then an immediate connection", ft.Attacker.String(), flood, connectAt - 100*time.Millisecond},
		{"REJ knock among 100,000 spoofed knocks", sk.Attacker.String(), spoofed, sk.ConnectAt - 500*time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			slices.SortStableFunc(tc.steps, func(x, y scenario.Step) int { return int(x.At - y.At) })
			pcapPath, eventsPath := writeAttack(t, t.TempDir(), tc.steps, []time.Duration{tc.open})
			for _, kind := range e2eEngines() {
				t.Run(kind, func(t *testing.T) {
					if kind == EngineXDP {
						testenv.RequirePrivileged(t)
					}
					got, sum := replayFiles(t, kind, cfg, []string{pcapPath}, []string{eventsPath}, filepath.Join(corpusDir, "hosts"))
					var mine []wantAlert
					for _, al := range got {
						if al.Source == tc.attacker {
							mine = append(mine, al)
						}
					}
					if len(mine) != 1 || mine[0].Confidence != "high" || mine[0].Port != 4444 {
						t.Fatalf("hash seed %#x: the attacker's alerts %+v (all %d), want one high to 4444\nsummary: %d knocks, %d handshakes, counters %s",
							cfg.HashSeed, mine, len(got), sum.Knocks, sum.Handshakes, fmt.Sprint(sum.Counters))
					}
				})
			}
		})
	}
}
