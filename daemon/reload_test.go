//go:build linux

package daemon

import (
	"context"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/config"
	"github.com/knockwatch/knockwatch/sensor"
)

// TestReload: the reload (SIGHUP in `knockwatch run`) applies a new allowed source and a new
// inventory without losing the engine's state, and a broken file keeps the
// running settings.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "k.yaml")
	hosts := filepath.Join(dir, "hosts")
	write := func(path, s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(cfgFile, "suppression:\n  allowed_sources: []\n")
	write(hosts, "10.0.0.5 ws01\n")
	args := []string{"--iface", "eth0", "--config", cfgFile, "--hosts", hosts, "--alerts", filepath.Join(dir, "alerts.jsonl"), "--state-dir", filepath.Join(dir, "state")}
	cfg, _, err := config.Load(args, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	r := eventSide(t, cfg)
	reload := func() error {
		cfg, _, err := config.Load(args, io.Discard)
		if err != nil {
			return err
		}
		return r.Reload(cfg)
	}
	ctx := context.Background()
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	knock := func(src string) *sensor.Knock {
		k := &sensor.Knock{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr("10.0.0.5"), Distinct: 3}
		for i, p := range []uint16{1001, 1002, 1003} {
			k.Touches = append(k.Touches, sensor.Touch{Port: p, Time: base.Add(time.Duration(i) * time.Second), Kind: sensor.TouchREJ})
		}
		return k
	}
	if err := r.pipe.AddKnock(ctx, knock("198.51.100.1")); err != nil {
		t.Fatal(err)
	}
	before := r.pipe.Engine().Stats().Pairs

	write(cfgFile, "suppression:\n  allowed_sources: [203.0.113.0/24]\n")
	write(hosts, "10.0.0.5 ws01\n10.0.0.6 ws02\n")
	if err := reload(); err != nil {
		t.Fatal(err)
	}
	if got := r.pipe.Engine().Stats().Pairs; got != before || before == 0 {
		t.Fatalf("pairs after reload = %d, before %d: state lost", got, before)
	}
	if len(r.cfg.Suppression.AllowedSources) != 1 {
		t.Fatalf("allowed sources not reloaded: %v", r.cfg.Suppression.AllowedSources)
	}
	// The reloaded allowlist suppresses a new knock-and-handshake match.
	if err := r.pipe.AddKnock(ctx, knock("203.0.113.9")); err != nil {
		t.Fatal(err)
	}
	hs := &sensor.Handshake{Src: netip.MustParseAddr("203.0.113.9"), Dst: netip.MustParseAddr("10.0.0.5"), SrcPort: 40000, Port: 5555,
		SYN: base.Add(10 * time.Second), SYNACK: base.Add(10*time.Second + time.Millisecond), ACK: base.Add(10*time.Second + 2*time.Millisecond),
		PortLastClosed: base.Add(-time.Minute), Distinct: 3}
	if err := r.pipe.AddHandshake(ctx, hs); err != nil {
		t.Fatal(err)
	}
	st := r.pipe.Engine().Stats()
	if st.Suppressed["allowed_source"] != 1 || st.AlertsMedium+st.AlertsHigh != 0 {
		t.Fatalf("after reload: suppressed %v, alerts %d/%d", st.Suppressed, st.AlertsHigh, st.AlertsMedium)
	}

	// A broken file keeps what runs.
	write(cfgFile, "suppression:\n  allowed_source: [1.2.3.4/32]\n")
	if err := reload(); err == nil {
		t.Fatal("reload of a broken file succeeded")
	}
	// A configuration that parses but does not build changes nothing either.
	bad := cfg
	bad.Suppression.AllowedSources = []string{"not-a-prefix"}
	if err := r.Reload(bad); err == nil {
		t.Fatal("reload of an invalid configuration succeeded")
	}
	if len(r.cfg.Suppression.AllowedSources) != 1 || r.cfg.Suppression.AllowedSources[0] != "203.0.113.0/24" {
		t.Fatalf("a failed reload changed the settings: %v", r.cfg.Suppression.AllowedSources)
	}
}
