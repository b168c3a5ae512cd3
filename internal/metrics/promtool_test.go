package metrics

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// realParts starts the parts run wires to /metrics that need no
// privileges — a pipeline (engine, decoder), an HTTP event listener and
// an alert sink — and registers them as run does, with the Go and process
// collectors under the same prefix.
func realParts(t *testing.T) (*prometheus.Registry, *pipeline.Pipeline, *intake.HTTPServer) {
	t.Helper()
	p, err := pipeline.New(pipeline.Config{Engine: correlate.DefaultConfig()}, alert.NewStreamWriter(io.Discard, "stdout", false), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	srv, err := intake.NewHTTPServer(intake.HTTPConfig{Addr: "127.0.0.1:0"}, p, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	reg := prometheus.NewRegistry()
	m, err := Register(reg, Sources{
		Intake:   func() []intake.Stats { return []intake.Stats{srv.Stats()} },
		Decoder:  p.Decoder().Stats,
		Engine:   p.Engine().Stats,
		Pipeline: p.Stats,
		Sinks:    func() []alert.Stats { return alert.StatsOf(p.Sink()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	m.ObserveLag(intake.TransportHTTP, "xml", 3*time.Second)
	prometheus.WrapRegistererWithPrefix(Namespace+"_", reg).MustRegister(collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg, p, srv
}

func scrape(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	ts := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	defer ts.Close()
	resp, err := http.Get(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestLabelSetsExistAtStart: before anything happened, the series whose
// label values are known (tables, kinds, reasons) are exported at 0, so a
// rate() or an alert on them works from the first scrape.
func TestLabelSetsExistAtStart(t *testing.T) {
	reg, _, _ := realParts(t)
	text := scrape(t, reg)
	for _, want := range []string{
		`knockwatch_correlate_expired_total{table="pairs"} 0`,
		`knockwatch_correlate_expired_total{table="changes"} 0`,
		`knockwatch_correlate_expired_total{table="handshakes"} 0`,
		`knockwatch_correlate_evicted_total{table="pairs"} 0`,
		`knockwatch_correlate_evidence_total{kind="change",outcome="replaced"} 0`,
		`knockwatch_pipeline_rejected_total{kind="change",reason="no_host"} 0`,
		`knockwatch_pipeline_rejected_total{kind="change",reason="future_time"} 0`,
		`knockwatch_pipeline_rejected_total{kind="knock",reason="no_touches"} 0`,
		`knockwatch_pipeline_rejected_total{kind="handshake",reason="invalid_order"} 0`,
		`knockwatch_pipeline_evidence_total{kind="handshake"} 0`,
		`knockwatch_pipeline_changes_skipped_total{reason="connection"} 0`,
		`knockwatch_events_dropped_total{reason="unauthorized",transport="http"} 0`,
		`knockwatch_decoder_rejected_total{reason="malformed_xml"} 0`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("scrape lacks %s", want)
		}
	}
}

// TestPromtoolChecksRealScrape runs Prometheus's own linter (promtool
// check metrics, Debian's prometheus package) on a real scrape of the
// running parts, after they handled an event, so every family shows.
func TestPromtoolChecksRealScrape(t *testing.T) {
	promtool := testenv.RequireTool(t, "promtool", "prometheus")
	reg, _, srv := realParts(t)
	ev := `<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><EventID>2004</EventID><TimeCreated SystemTime="2026-01-02T03:04:05Z"/><EventRecordID>1</EventRecordID><Channel>Microsoft-Windows-Windows Firewall With Advanced Security/Firewall</Channel><Computer>WS01</Computer></System><EventData><Data Name="RuleId">{1}</Data><Data Name="Direction">1</Data><Data Name="Protocol">6</Data><Data Name="LocalPorts">4444</Data><Data Name="Action">3</Data><Data Name="Active">1</Data></EventData></Event>`
	resp, err := http.Post("http://"+srv.Addr().String()+"/v1/events", "application/xml", strings.NewReader(ev))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	text := scrape(t, reg)
	if !strings.Contains(text, `knockwatch_events_received_total{outcome="accepted",transport="http"} 1`) {
		t.Fatalf("the event did not show:\n%s", text)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || strings.TrimSpace(out.String()) != "" {
		t.Fatalf("promtool check metrics: %v\n%s", err, out.String())
	}
}
