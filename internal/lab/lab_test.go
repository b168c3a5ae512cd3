//go:build linux

package lab

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/winevents"
)

// The event the lab forwards must decode, with the decoders `run` uses, to
// an active inbound allow rule for TCP on the opened port of the named host
// at the given time.
func TestRenderFirewall2004Decodes(t *testing.T) {
	at := time.Date(2026, 11, 27, 18, 4, 5, 123456700, time.UTC)
	for _, name := range []string{"WIN-LAB01.corp.example", `odd<&>"name`} {
		xml, err := RenderFirewall2004(RuleAdded{Computer: name, Port: 4444, RuleName: "Remote <Mgmt> & co", Time: at, RecordID: 42})
		if err != nil {
			t.Fatal(err)
		}
		changes, res := winevents.NewDecoder(winevents.Options{}).Decode(xml)
		if res.Err != nil || res.Rejected != 0 || len(changes) != 1 {
			t.Fatalf("%s: decode: %d changes, result %+v\n%s", name, len(changes), res, xml)
		}
		c := changes[0]
		if c.Kind != winevents.KindRuleAdded || !c.Opens() || !c.Active || c.Direction != winevents.DirIn ||
			c.Action != winevents.ActionAllow || c.Protocol != winevents.ProtoTCP {
			t.Errorf("%s: change %+v: want an active inbound TCP allow rule that opens", name, c)
		}
		if !c.Ports.Contains(4444) || c.Ports.Contains(4445) {
			t.Errorf("%s: ports %v, want 4444", name, c.Ports)
		}
		if c.Host != name || !c.Time.Equal(at) || c.Source.EventID != 2004 || c.Source.RecordID != 42 {
			t.Errorf("%s: host %q time %v source %+v", name, c.Host, c.Time, c.Source)
		}
		if c.RuleName != "Remote <Mgmt> & co" {
			t.Errorf("rule name %q", c.RuleName)
		}
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP knockwatch_alerts_total AN0842 alerts.
# TYPE knockwatch_alerts_total counter
knockwatch_alerts_total{confidence="high"} 1
knockwatch_alerts_total{confidence="medium"} 0
knockwatch_knocks_flagged_total 2
knockwatch_events_received_total{outcome="accepted",transport="http"} 1 1700000000000
knockwatch_odd{a="x\"y\\z",b="line\nbreak"} +Inf
knockwatch_event_lag_seconds_sum{format="event_xml",transport="http"} 0.0123
`
	m, err := ParseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 6 {
		t.Fatalf("%d samples: %+v", len(m), m)
	}
	for _, c := range []struct {
		name  string
		match map[string]string
		want  float64
		ok    bool
	}{
		{"knockwatch_alerts_total", map[string]string{"confidence": "high"}, 1, true},
		{"knockwatch_alerts_total", nil, 1, true},
		{"knockwatch_alerts_total", map[string]string{"confidence": "low"}, 0, false},
		{"knockwatch_knocks_flagged_total", nil, 2, true},
		{"knockwatch_events_received_total", map[string]string{"transport": "http", "outcome": "accepted"}, 1, true},
		{"knockwatch_event_lag_seconds_sum", nil, 0.0123, true},
		{"knockwatch_missing", nil, 0, false},
	} {
		got, ok := m.Sum(c.name, c.match)
		if got != c.want || ok != c.ok {
			t.Errorf("Sum(%s, %v) = %v, %v; want %v, %v", c.name, c.match, got, ok, c.want, c.ok)
		}
	}
	if v, _ := m.Sum("knockwatch_odd", map[string]string{"a": `x"y\z`, "b": "line\nbreak"}); v <= 1e308 {
		t.Errorf("escaped labels or +Inf not parsed: %+v", m[4])
	}
	want := map[string]float64{`knockwatch_alerts_total{confidence="high"}`: 1, `knockwatch_alerts_total{confidence="medium"}`: 0,
		"knockwatch_knocks_flagged_total": 2, `knockwatch_events_received_total{outcome="accepted",transport="http"}`: 1,
		"knockwatch_event_lag_seconds_sum": 0.0123}
	got := SummaryMetrics(m)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("SummaryMetrics[%s] = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}

	for _, bad := range []string{"knockwatch_x", `knockwatch_x{a="b} 1`, `knockwatch_x{a=b} 1`, "knockwatch_x one", "knockwatch_x 1 2 3"} {
		if _, err := ParseMetrics(strings.NewReader(bad + "\n")); err == nil {
			t.Errorf("%q parsed without error", bad)
		}
	}
}

func alertJSON(src, dst string, port uint16, conf string) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"rule":{"id":"AN0842"},"source":{"ip":%q,"port":40000},"destination":{"ip":%q,"port":%d},"knockwatch":{"confidence":%q}}`,
		src, dst, port, conf))
}

func TestCheck(t *testing.T) {
	base := func() *Result {
		return &Result{Attacker: netip.MustParseAddr("10.203.0.66"), Client: netip.MustParseAddr("10.203.0.20"),
			Host: netip.MustParseAddr("10.203.0.5"), OpenPort: 4444, NoTokenStatus: http.StatusUnauthorized}
	}
	good := alertJSON("10.203.0.66", "10.203.0.5", 4444, "high")
	for _, c := range []struct {
		name   string
		alerts []json.RawMessage
		mod    func(*Result)
		ok     bool
	}{
		{"one high", []json.RawMessage{good}, nil, true},
		{"none", nil, nil, false},
		{"two", []json.RawMessage{good, good}, nil, false},
		{"medium", []json.RawMessage{alertJSON("10.203.0.66", "10.203.0.5", 4444, "medium")}, nil, false},
		{"client too", []json.RawMessage{good, alertJSON("10.203.0.20", "10.203.0.5", 80, "high")}, nil, false},
		{"other port", []json.RawMessage{alertJSON("10.203.0.66", "10.203.0.5", 4445, "high")}, nil, false},
		{"not json", []json.RawMessage{good, json.RawMessage(`{`)}, nil, false},
		{"token not checked", []json.RawMessage{good}, func(r *Result) { r.NoTokenStatus = 202 }, false},
	} {
		r := base()
		r.Alerts = c.alerts
		if c.mod != nil {
			c.mod(r)
		}
		if err := r.Check(); (err == nil) != c.ok {
			t.Errorf("%s: Check() = %v, want ok %v", c.name, err, c.ok)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{Binary: "/bin/true", KnockClient: "go"}
	if err := c.defaults(); err != nil {
		t.Fatal(err)
	}
	if c.Scenario != ScenarioS0 || len(c.KnockPorts) != 3 || c.OpenPort != 4444 || c.ServicePort != 80 {
		t.Errorf("defaults: %+v", c)
	}
	for _, bad := range []Config{
		{Binary: "x", KnockClient: "go", Scenario: "syn"},
		{Binary: "x", KnockClient: "curl"},
		{Binary: "x", KnockClient: "go", OpenPort: 80},
		{Binary: "x", KnockClient: "go", KnockPorts: []uint16{7000, 4444}},
		{Binary: "x", KnockClient: "go", KnockPorts: []uint16{7000, 0}},
		{Binary: "x", KnockClient: "go", ScanPorts: []uint16{7000}},
		{Binary: "x", KnockClient: "go", Restart: "later"},
	} {
		if err := bad.defaults(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

// The sensor's output: compact and indented objects are alerts, other
// lines are logged; a broken object is an error but later alerts still
// count.
func TestReadAlerts(t *testing.T) {
	out := `{"rule":{"id":"AN0842"},"n":1}

not json at all
{
  "rule": {
    "id": "AN0842"
  },
  "n": 2
}
{"broken": tru}
{"n":3}
`
	var got []string
	s := &sensor{logs: newTail(10), newOne: make(chan struct{}), onAlert: func(r json.RawMessage) { got = append(got, string(r)) }}
	s.readAlerts(strings.NewReader(out))
	alerts, _, err := s.snapshot()
	if len(alerts) != 3 || len(got) != 3 {
		t.Fatalf("%d alerts, %d callbacks: %q", len(alerts), len(got), got)
	}
	for i, a := range alerts {
		var v struct{ N int }
		if e := json.Unmarshal(a, &v); e != nil || v.N != i+1 {
			t.Errorf("alert %d: %s (%v)", i, a, e)
		}
	}
	if err == nil {
		t.Errorf("broken object not reported")
	}
	logs := strings.Join(s.logs.last(10), "\n")
	if !strings.Contains(logs, "not json at all") || !strings.Contains(logs, `{"broken": tru}`) {
		t.Errorf("logs: %s", logs)
	}

	// Output that ends inside an object.
	s = &sensor{logs: newTail(10), newOne: make(chan struct{})}
	s.readAlerts(strings.NewReader("{\n  \"n\": 1,\n"))
	if a, _, err := s.snapshot(); len(a) != 0 || err == nil {
		t.Errorf("truncated object: %d alerts, err %v", len(a), err)
	}
}

var update = flag.Bool("update", false, "rewrite testdata/lab/firewall_2004_rule_added.xml")

// The event the lab forwards, rendered with fixed values, is kept in
// testdata/lab for reading and for `knockwatch events`.
func TestFirewall2004Golden(t *testing.T) {
	got, err := RenderFirewall2004(RuleAdded{
		Computer: "WIN-LAB01.corp.example", Port: 4444, RuleName: "Remote Management (TCP-In 4444)",
		Time: time.Date(2026, 11, 27, 18, 0, 0, 123456700, time.UTC), RecordID: 6662,
		RuleID: "{5C0FFEE0-4444-4D2B-9C1A-7E57AB1E0842}",
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "testdata", "lab", "firewall_2004_rule_added.xml")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run Golden -update ./internal/lab)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("rendered event differs from %s (run with -update after checking):\n%s", path, got)
	}
}

// Directories of labs whose process is gone are removed; those of running
// processes (and anything else) stay.
func TestSweepDirs(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("run true: %v", err)
	}
	dead := cmd.Process.Pid
	names := map[string]bool{ // name: should survive
		fmt.Sprintf("%s%d-abc", dirPrefix, dead):        false,
		fmt.Sprintf("%s%d-abc", dirPrefix, os.Getpid()): true,
		fmt.Sprintf("%s%d-abc", dirPrefix, 1):           true,
		dirPrefix + "notapid-abc":                       true,
		"other-dir":                                     true,
	}
	for n := range names {
		if err := os.Mkdir(filepath.Join(tmp, n), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	sweepDirs()
	for n, keep := range names {
		_, err := os.Stat(filepath.Join(tmp, n))
		if (err == nil) != keep {
			t.Errorf("%s: exists %v, want %v", n, err == nil, keep)
		}
	}
}
