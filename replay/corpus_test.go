package replay

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/coverage"
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
		ID     string `json:"id"`
	} `json:"event"`
	Source      struct{ IP string } `json:"source"`
	Destination struct {
		IP   string `json:"ip"`
		Port uint16 `json:"port"`
	} `json:"destination"`
	Knockwatch struct {
		Confidence string         `json:"confidence"`
		Suppressed bool           `json:"suppressed"`
		Clock      map[string]any `json:"clock"`
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

// replayDir replays one corpus case with engine kind.
func replayDir(t *testing.T, dir, kind string, want expectation) replayOut {
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
	events, _ := filepath.Glob(filepath.Join(dir, "events.*"))
	sort.Strings(events)
	return replayFull(t, kind, scfg, caps, events, hostsFile, true)
}

// TestCoverageCasesNeedCoverage: the coverage cases turn on what coverage
// does: without it the 90-s host gives no alert, and the one-way capture
// gives the monitor's false alert and floods the engine with knocks.
func TestCoverageCasesNeedCoverage(t *testing.T) {
	for _, tc := range []struct {
		dir    string
		alerts int
	}{{"pos_clock_90s_behind", 0}, {"pos_clock_sysmon_winlogbeat", 0}, {"neg_one_way_capture", 1}} {
		t.Run(tc.dir, func(t *testing.T) {
			dir := filepath.Join(corpusDir, tc.dir)
			caps, _ := filepath.Glob(filepath.Join(dir, "capture*"))
			events, _ := filepath.Glob(filepath.Join(dir, "events.*"))
			out := replayFull(t, EngineGo, testSensorConfig(), caps, events, filepath.Join(corpusDir, "hosts"), false)
			if len(out.alerts) != tc.alerts {
				t.Fatalf("without coverage: alerts %+v, want %d", out.alerts, tc.alerts)
			}
			if tc.dir == "neg_one_way_capture" && out.engine.In["knock"] < 4 {
				t.Fatalf("without coverage the engine took %d knocks", out.engine.In["knock"])
			}
		})
	}
}

// pathInterfaces names each capture's counters as a capture interface's.
func pathInterfaces(paths []Path) []coverage.Interface {
	out := make([]coverage.Interface, len(paths))
	for i, p := range paths {
		out[i] = coverage.Interface{Name: filepath.Base(p.Name), Counters: p.Counters}
	}
	return out
}

// replayFiles replays captures and event files with engine kind made with
// scfg, the inventory hostsFile and the default rule, and returns the
// created (unsuppressed) alerts and the summary.
func replayFiles(t *testing.T, kind string, scfg sensor.Config, caps, events []string, hostsFile string) ([]wantAlert, Summary) {
	t.Helper()
	out := replayFull(t, kind, scfg, caps, events, hostsFile, true)
	return out.alerts, out.sum
}

// replayOut is what one replay produced.
type replayOut struct {
	alerts []wantAlert
	sum    Summary
	report coverage.Report
	engine correlate.Stats
	pipe   pipeline.Stats
	// clocks are the alerts' knockwatch.clock objects, by alert id.
	clocks map[string]map[string]any
}

// replayFull is replayFiles with the coverage report and the engine's and
// pipeline's counters (coverage on, as knockwatch replay --coverage).
func replayFull(t *testing.T, kind string, scfg sensor.Config, caps, events []string, hostsFile string, withCoverage bool) (out replayOut) {
	t.Helper()
	hosts, err := correlate.ReadHostsFile(hostsFile)
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	cov, err := coverage.New(coverage.DefaultConfig(), hosts)
	if err != nil {
		t.Fatal(err)
	}
	cov.SetInventory(pipeline.InventoryHosts(hosts))
	pc := pipeline.Config{Engine: correlate.DefaultConfig(), EngineOptions: []correlate.Option{correlate.WithInventory(hosts)}}
	if withCoverage {
		pc.Coverage = cov
	}
	p, err := pipeline.New(pc, sink, nil)
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
		OnSweep: func(now time.Time, paths []Path) error {
			c, err := eng.Counters()
			if err != nil {
				return err
			}
			p.ObserveSensor(now, c, pathInterfaces(paths), eng)
			return eng.PruneRequests(now)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	out.report = cov.Report(true)
	out.engine = p.Engine().Stats()
	out.pipe = p.Stats()
	out.sum = sum
	out.clocks = map[string]map[string]any{}
	for _, r := range sink.recs {
		var a alertLine
		if err := json.Unmarshal(r.JSON, &a); err != nil {
			t.Fatalf("alert is not JSON: %v: %s", err, r.JSON)
		}
		if a.Event.Action != correlate.ActionCreated || a.Knockwatch.Suppressed {
			continue
		}
		out.alerts = append(out.alerts, wantAlert{Source: a.Source.IP, Dest: a.Destination.IP, Port: a.Destination.Port,
			Confidence: a.Knockwatch.Confidence})
		if a.Knockwatch.Clock != nil {
			out.clocks[a.Event.ID] = a.Knockwatch.Clock
		}
	}
	return out
}

// TestCorpus replays every case of testdata/replay through both engines
// and checks the alerts each case expects; the engines must also agree on
// every counter.
func TestCorpus(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join(corpusDir, "*", "expected.json"))
	if len(dirs) < 20 {
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
					out := replayDir(t, dir, kind, want)
					got, sum := out.alerts, out.sum
					sums = append(sums, sum)
					if !sameAlerts(got, want.Alerts) {
						t.Errorf("%s: %s\nalerts %+v\nwant   %+v\nsummary: %d packets, %d knocks, %d handshakes, events %+v",
							want.Case, want.About, got, want.Alerts, sum.Packets, sum.Knocks, sum.Handshakes, sum.Events)
					}
					if want.Coverage != nil {
						checkCoverage(t, want.Coverage, out)
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

// checkCoverage compares a replay's coverage report with the case's
// hand-written expectation.
func checkCoverage(t *testing.T, want *wantCoverage, out replayOut) {
	t.Helper()
	r := out.report
	same := func(a, b string) bool {
		return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
	}
	for _, w := range want.Findings {
		found := false
		for _, f := range r.Findings {
			found = found || (f.Kind == w.Kind && (w.Host == "" || same(f.Host, w.Host)) && f.Interface == w.Interface)
		}
		if !found {
			t.Errorf("coverage: no finding %+v; findings:\n%s", w, findingList(r))
		}
	}
	for _, kind := range want.Absent {
		for _, f := range r.Findings {
			if f.Kind == kind {
				t.Errorf("coverage: unexpected finding %s (%s %s): %s", kind, f.Host, f.Interface, f.Missing)
			}
		}
	}
	hosts := map[string]coverage.HostReport{}
	for _, h := range r.Hosts {
		hosts[strings.ToLower(h.Host)] = h
	}
	for _, w := range want.Clocks {
		h, ok := hosts[strings.ToLower(w.Host)]
		if !ok || h.Clock.State != "measured" || h.Clock.Offset == nil || math.Abs(*h.Clock.Offset-w.Offset) > 1 {
			t.Errorf("coverage: clock of %s: %+v (offset %v), want measured %.1f s within 1 s", w.Host, h.Clock, ptrVal(h.Clock.Offset), w.Offset)
		}
		if w.AlertApplied {
			if len(out.clocks) == 0 {
				t.Errorf("coverage: no alert carries knockwatch.clock")
			}
			for id, c := range out.clocks {
				off, _ := c["offset"].(float64)
				if c["applied"] != true || c["measured"] != true || math.Abs(off-w.Offset) > 1 {
					t.Errorf("coverage: alert %s knockwatch.clock %v", id, c)
				}
			}
		}
	}
	for name, st := range want.HostStates {
		if h, ok := hosts[name]; !ok || h.State != st {
			t.Errorf("coverage: host %s state %q, want %q", name, h.State, st)
		}
	}
	if want.Sensor != "" && r.Sensor.State != want.Sensor {
		t.Errorf("coverage: sensor path %q (%+v), want %q", r.Sensor.State, r.Sensor, want.Sensor)
	}
	if want.EngineKnocks != nil && out.engine.In["knock"] > uint64(*want.EngineKnocks) {
		t.Errorf("coverage: the engine took %d knocks, want at most %d (held %d)", out.engine.In["knock"], *want.EngineKnocks, out.pipe.KnocksHeld)
	}
	if out.pipe.KnocksHeld < int64(want.KnocksHeld) {
		t.Errorf("coverage: %d knocks held, want at least %d", out.pipe.KnocksHeld, want.KnocksHeld)
	}
}

func ptrVal(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func findingList(r coverage.Report) string {
	var b strings.Builder
	for _, f := range r.Findings {
		fmt.Fprintf(&b, "  %s %s host=%q iface=%q: %s\n", f.Severity, f.Kind, f.Host, f.Interface, f.Missing)
	}
	return b.String()
}
