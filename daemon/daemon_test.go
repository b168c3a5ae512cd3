//go:build linux

package daemon

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/internal/config"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
)

const winSamples = "../testdata/winevents"

// eventSide starts `run` without the sensor (no privileges needed): the
// listeners, pipeline, sinks and metrics server of cfg.
func eventSide(t *testing.T, cfg config.Config) *Daemon {
	t.Helper()
	if cfg.StateDir == config.DefaultStateDir {
		cfg.StateDir = t.TempDir() // never the machine's own
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d := New(cfg, zap.NewNop(), io.Discard)
	if err := d.startEventSide(); err != nil {
		d.Stop()
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop() })
	return d
}

func post(t *testing.T, url, token string, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestEventSideHTTPAuth: the HTTP event listener of `run` refuses a request
// without the bearer token (401, counted in the metrics) and accepts one
// with it (202); /readyz is not ready without the sensor.
func TestEventSideHTTPAuth(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Listeners.HTTP.Addr = "127.0.0.1:0"
	cfg.Listeners.TokenFile = tokenFile
	cfg.Metrics.Addr = "127.0.0.1:0"
	cfg.Alerts.Path = filepath.Join(dir, "alerts.jsonl")
	r := eventSide(t, cfg)
	url := "http://" + r.listeners[0].Addr().String() + "/v1/events"
	body, err := os.ReadFile(filepath.Join(winSamples, "otrf_cmd_netsh_fw_mod_open_ports.subset.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if code := post(t, url, "", body); code != http.StatusUnauthorized {
		t.Fatalf("without token: %d, want 401", code)
	}
	if code := post(t, url, "wrong", body); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d, want 401", code)
	}
	if code := post(t, url, "s3cret-token", body); code != http.StatusAccepted {
		t.Fatalf("with token: %d, want 202", code)
	}
	if err := testutil.GatherAndCompare(r.reg, strings.NewReader(`
# HELP knockwatch_events_received_total Windows events received per transport and outcome (accepted or rejected by the decoder).
# TYPE knockwatch_events_received_total counter
knockwatch_events_received_total{outcome="accepted",transport="http"} 15
knockwatch_events_received_total{outcome="rejected",transport="http"} 0
`), "knockwatch_events_received_total"); err != nil {
		t.Fatal(err)
	}
	metricsText := get(t, "http://"+r.metricsAddr+"/metrics", http.StatusOK)
	if !strings.Contains(metricsText, `knockwatch_events_dropped_total{reason="unauthorized",transport="http"} 2`) {
		t.Fatalf("unauthorized requests not counted:\n%s", testenv.GrepLines(metricsText, "events_dropped"))
	}
	get(t, "http://"+r.metricsAddr+"/healthz", http.StatusOK)
	if got := get(t, "http://"+r.metricsAddr+"/readyz", http.StatusServiceUnavailable); !strings.Contains(got, "not ready") {
		t.Fatalf("/readyz without the sensor: %q", got)
	}
}

func get(t *testing.T, url string, want int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %d, want %d: %s", url, resp.StatusCode, want, b)
	}
	return string(b)
}

// TestPortInUse: a listener port already taken is one clear line naming
// the flag.
func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := config.Default()
	cfg.StateDir = t.TempDir()
	cfg.Listeners.HTTP.Addr = ln.Addr().String()
	d := New(cfg, zap.NewNop(), io.Discard)
	err = d.startEventSide()
	d.Stop()
	if err == nil || !strings.Contains(err.Error(), "listen --events-http "+ln.Addr().String()+": address already in use") {
		t.Fatalf("error = %v", err)
	}
}
