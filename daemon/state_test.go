//go:build linux

package daemon

import (
	"context"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/internal/config"
	"github.com/knockwatch/knockwatch/sensor"
)

// The event side of `run` across a stop and a start on the same
// --state-dir: the knock and the event acknowledged (202) by the first
// process are rebuilt into the second one's engine, so the handshake that
// reaches only the second alerts once; a third start replays everything
// and sends nothing again. The metrics show the rebuild.
func TestEventSideRestartKeepsEvidence(t *testing.T) {
	dir := t.TempDir()
	alerts := filepath.Join(dir, "alerts.jsonl")
	// The sample's rule opens TCP 450 on WORKSTATION5 at 2020-10-21T12:19:04.518Z.
	changeAt := time.Date(2020, 10, 21, 12, 19, 4, 518e6, time.UTC)
	hosts := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte("10.0.0.5 workstation5.theshire.local\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	newCfg := func() config.Config {
		cfg := config.Default()
		cfg.StateDir = filepath.Join(dir, "state")
		cfg.Listeners.HTTP.Addr = "127.0.0.1:0"
		cfg.Metrics.Addr = "127.0.0.1:0"
		cfg.Alerts.Path = alerts
		cfg.Hosts = hosts
		// The sample is from 2020: keep its evidence in the rebuild.
		cfg.Rule.Retention = 100000 * time.Hour
		return cfg
	}
	body, err := os.ReadFile(filepath.Join(winSamples, "otrf_cmd_netsh_fw_mod_open_ports.subset.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	attacker, host := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("10.0.0.5")

	first := eventSide(t, newCfg())
	k := &sensor.Knock{Src: attacker, Dst: host, Distinct: 3}
	for i, p := range []uint16{7000, 8000, 9000} {
		k.Touches = append(k.Touches, sensor.Touch{Port: p, Time: changeAt.Add(time.Duration(i-4) * time.Second), Kind: sensor.TouchS0})
	}
	if err := first.pipe.AddKnock(ctx, k); err != nil {
		t.Fatal(err)
	}
	if code := post(t, "http://"+first.listeners[0].Addr().String()+"/v1/events", "", body); code != 202 {
		t.Fatalf("post: %d", code)
	}
	// A second process on the same directory is refused, clearly.
	second := New(newCfg(), zap.NewNop(), io.Discard)
	err = second.startEventSide()
	second.Stop()
	if err == nil || !strings.Contains(err.Error(), "another knockwatch run") {
		t.Fatalf("second process on the same --state-dir: %v", err)
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}

	restarted := eventSide(t, newCfg())
	hs := &sensor.Handshake{Src: attacker, Dst: host, SrcPort: 51000, Port: 450,
		SYN: changeAt.Add(30 * time.Second), SYNACK: changeAt.Add(30*time.Second + time.Millisecond),
		ACK: changeAt.Add(30*time.Second + 2*time.Millisecond), PortLastClosed: changeAt.Add(-time.Minute), Distinct: 3}
	if err := restarted.pipe.AddHandshake(ctx, hs); err != nil {
		t.Fatal(err)
	}
	metricsText := get(t, "http://"+restarted.metricsAddr+"/metrics", 200)
	for _, want := range []string{`knockwatch_evidence_rebuild_records{outcome="replayed"} 3`, "knockwatch_evidence_log_segments 2",
		`knockwatch_evidence_log_appended_total{kind="handshake"} 1`} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepEvidence(metricsText))
		}
	}
	if err := restarted.Stop(); err != nil {
		t.Fatal(err)
	}
	third := eventSide(t, newCfg())
	if err := third.Stop(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(alerts)
	if n := strings.Count(string(b), `"confidence":"high"`); n != 1 || strings.Count(string(b), "\n") != 1 {
		t.Fatalf("%d high alerts in %d lines, want exactly one:\n%s", n, strings.Count(string(b), "\n"), b)
	}
	if st := third.pipe.Stats(); st.AlertsAlreadySent != 1 || st.Replayed["handshake"] != 1 {
		t.Fatalf("third start: %+v", st)
	}
}

func grepEvidence(text string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, "evidence") && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
