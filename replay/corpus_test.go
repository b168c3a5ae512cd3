package replay

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/sensor"
)

// memSink keeps alert records in memory.
type memSink struct {
	mu   sync.Mutex
	recs []alert.Record
}

func (m *memSink) Write(_ context.Context, recs []alert.Record) error {
	m.mu.Lock()
	m.recs = append(m.recs, recs...)
	m.mu.Unlock()
	return nil
}
func (m *memSink) Close() error { return nil }

// alertLine is the part of an ECS alert the corpus checks.
type alertLine struct {
	Event struct {
		Action string `json:"action"`
	} `json:"event"`
	Source      struct{ IP string } `json:"source"`
	Destination struct {
		IP   string `json:"ip"`
		Port uint16 `json:"port"`
	} `json:"destination"`
	Knockwatch struct {
		Confidence string `json:"confidence"`
		Suppressed bool   `json:"suppressed"`
	} `json:"knockwatch"`
}

// testSensorConfig is the default configuration with smaller tables, so
// the xdp engine loads quickly; the corpus has a handful of pairs.
func testSensorConfig() sensor.Config {
	cfg := sensor.DefaultConfig()
	cfg.PairSlots = 1 << 12
	cfg.PortSlots = 1 << 12
	cfg.Candidates = 1024
	cfg.Watches = 1024
	cfg.RingBytes = 1 << 16
	return cfg
}

// replayDir replays one corpus case with engine kind and returns the
// created alerts and the summary.
func replayDir(t *testing.T, dir, kind string, want expectation) ([]wantAlert, Summary) {
	t.Helper()
	caps, _ := filepath.Glob(filepath.Join(dir, "capture*"))
	sort.Strings(caps)
	// A case may bring its own inventory (a lab recording names its
	// own host); the generated cases share the corpus one.
	hostsFile := filepath.Join(dir, "hosts")
	if _, err := os.Stat(hostsFile); err != nil {
		hostsFile = filepath.Join(corpusDir, "hosts")
	}
	scfg := testSensorConfig()
	scfg.VerifyChecksums = !want.IgnoreChecksums
	return replayFiles(t, kind, scfg, caps, []string{filepath.Join(dir, "events.xml")}, hostsFile)
}

// replayFiles replays captures and event files with engine kind made with
// scfg, the inventory hostsFile and the default rule, and returns the
// created (unsuppressed) alerts and the summary.
func replayFiles(t *testing.T, kind string, scfg sensor.Config, caps, events []string, hostsFile string) ([]wantAlert, Summary) {
	t.Helper()
	hosts, err := correlate.ReadHostsFile(hostsFile)
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	p, err := pipeline.New(pipeline.Config{Engine: correlate.DefaultConfig(),
		EngineOptions: []correlate.Option{correlate.WithInventory(hosts)}}, sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	eng, _, err := NewEngine(kind, scfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	sum, err := Run(context.Background(), Options{
		Captures: caps, Events: events, Engine: eng, Decoder: p.Decoder(), Sink: p,
		FinalSweep: scfg.S0Timeout + time.Second, GapSweeps: GapSweepsFor(scfg),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	var got []wantAlert
	for _, r := range sink.recs {
		var a alertLine
		if err := json.Unmarshal(r.JSON, &a); err != nil {
			t.Fatalf("alert is not JSON: %v: %s", err, r.JSON)
		}
		if a.Event.Action != correlate.ActionCreated || a.Knockwatch.Suppressed {
			continue
		}
		got = append(got, wantAlert{Source: a.Source.IP, Dest: a.Destination.IP, Port: a.Destination.Port,
			Confidence: a.Knockwatch.Confidence})
	}
	return got, sum
}

// TestCorpus replays every case of testdata/replay through both engines
// and checks the alerts each case expects; the engines must also agree on
// every counter.
func TestCorpus(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join(corpusDir, "*", "expected.json"))
	if len(dirs) < 15 {
		t.Fatalf("corpus has %d cases; regenerate it: go test ./replay -run TestGenerateCorpus -update", len(dirs))
	}
	for _, exp := range dirs {
		dir := filepath.Dir(exp)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			b, err := os.ReadFile(exp)
			if err != nil {
				t.Fatal(err)
			}
			var want expectation
			if err := json.Unmarshal(b, &want); err != nil {
				t.Fatal(err)
			}
			var sums []Summary
			for _, kind := range []string{EngineGo, EngineXDP} {
				t.Run(kind, func(t *testing.T) {
					if kind == EngineXDP {
						testenv.RequirePrivileged(t)
					}
					got, sum := replayDir(t, dir, kind, want)
					sums = append(sums, sum)
					if !sameAlerts(got, want.Alerts) {
						t.Errorf("%s: %s\nalerts %+v\nwant   %+v\nsummary: %d packets, %d knocks, %d handshakes, events %+v",
							want.Case, want.About, got, want.Alerts, sum.Packets, sum.Knocks, sum.Handshakes, sum.Events)
					}
					if sum.Packets == 0 || sum.Events.Read == 0 {
						t.Errorf("nothing read: %+v", sum)
					}
				})
			}
			if len(sums) == 2 {
				for _, name := range sensor.CounterNames {
					if sums[0].Counters[name] != sums[1].Counters[name] {
						t.Errorf("counter %s: go %d, xdp %d", name, sums[0].Counters[name], sums[1].Counters[name])
					}
				}
			}
			if strings.HasPrefix(filepath.Base(dir), "pos_") && len(want.Alerts) == 0 {
				t.Errorf("a positive case expects no alert")
			}
		})
	}
}

func sameAlerts(got, want []wantAlert) bool {
	if len(got) != len(want) {
		return false
	}
	key := func(a wantAlert) string { return a.Source + a.Dest + a.Confidence + string(rune(a.Port)) }
	g := map[string]int{}
	for _, a := range got {
		g[key(a)]++
	}
	for _, a := range want {
		if g[key(a)] == 0 {
			return false
		}
		g[key(a)]--
	}
	return true
}
