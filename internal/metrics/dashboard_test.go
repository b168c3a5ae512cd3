package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/knockwatch/knockwatch/winevents"
)

// TestDashboardNamesExist: every knockwatch_ metric the Grafana dashboard
// queries is one this package (or the process collector run registers)
// exposes.
func TestDashboardNamesExist(t *testing.T) {
	b, err := os.ReadFile("../../deploy/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := Register(reg, fakeSources())
	if err != nil {
		t.Fatal(err)
	}
	m.ObserveLag("http", winevents.FormatXML, time.Second)
	prometheus.WrapRegistererWithPrefix(Namespace+"_", reg).MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
	}
	for _, name := range regexp.MustCompile(`knockwatch_[a-z0-9_]+`).FindAllString(string(b), -1) {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if !have[name] && !have[base] {
			t.Errorf("dashboard queries %s, which is not exposed", name)
		}
	}
}

// TestMetricsDocumented: docs/CONFIG.md lists every metric.
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`fqName: "([^"]+)"`)
	for _, d := range append(append(append(append([]*prometheus.Desc(nil), allDescs...), boundDescs...), kafkaDescs...), coverageDescs...) {
		name := re.FindStringSubmatch(d.String())[1]
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("docs/CONFIG.md does not list %s", name)
		}
	}
}

// TestDashboardInputsUsed: an import input (__inputs) nobody references
// makes Grafana ask for a data source it then ignores; the dashboard picks
// its data source through the "datasource" variable only.
func TestDashboardInputsUsed(t *testing.T) {
	b, err := os.ReadFile("../../deploy/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Inputs []struct {
			Name string `json:"name"`
		} `json:"__inputs"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	for _, in := range d.Inputs {
		if !strings.Contains(string(b), "${"+in.Name+"}") {
			t.Errorf("input %s is never used", in.Name)
		}
	}
	for _, uid := range regexp.MustCompile(`"uid": "(\$\{[^}]+\})"`).FindAllStringSubmatch(string(b), -1) {
		if uid[1] != "${datasource}" {
			t.Errorf("panel data source %s is not the datasource variable", uid[1])
		}
	}
}
