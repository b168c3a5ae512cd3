//go:build linux

package daemon

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/knockwatch/knockwatch/internal/config"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
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

// eventSideLogged is eventSide with the daemon's log observed.
func eventSideLogged(t *testing.T, cfg config.Config) (*Daemon, *observer.ObservedLogs) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	d := New(cfg, zap.New(core), io.Discard)
	if err := d.startEventSide(); err != nil {
		d.Stop()
		t.Fatalf("start on the damaged or full state directory: %v", err)
	}
	t.Cleanup(func() { d.Stop() })
	return d, logs
}

func stateCfg(dir string) config.Config {
	cfg := config.Default()
	cfg.StateDir = dir
	cfg.Listeners.HTTP.Addr = "127.0.0.1:0"
	cfg.Metrics.Addr = "127.0.0.1:0"
	cfg.Alerts.Path = filepath.Join(dir, "..", "alerts.jsonl")
	cfg.Rule.Retention = 100000 * time.Hour // the samples are from 2020: keep them in the rebuild
	return cfg
}

// A power cut in the middle of an append leaves a torn last record: the
// next start says so in one clear line, counts it, replays every record
// before it and runs (no crash loop).
func TestEventSideTornLastRecord(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	body, err := os.ReadFile(filepath.Join(winSamples, "otrf_cmd_netsh_fw_mod_open_ports.subset.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	d := eventSide(t, stateCfg(state))
	if code := post(t, "http://"+d.listeners[0].Addr().String()+"/v1/events", "", body); code != 202 {
		t.Fatalf("post: %d", code)
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(state, "evidence", "seg-*.log"))
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	seg, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	// The torn record: the first 40 bytes of a copy of the last frame
	// (a write the power cut stopped short).
	f, err := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(seg[:40]); err != nil {
		t.Fatal(err)
	}
	f.Close()

	d2, logs := eventSideLogged(t, stateCfg(state))
	if e := logs.FilterMessageSnippet("torn record").All(); len(e) != 1 {
		t.Fatalf("no clear message for the torn record:\n%v", logs.All())
	}
	m := get(t, "http://"+d2.metricsAddr+"/metrics", 200)
	for _, want := range []string{"knockwatch_evidence_log_torn_segments_total 1", "knockwatch_evidence_log_corrupt_frames_total 1",
		`knockwatch_evidence_rebuild_records{outcome="replayed"} 2`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepEvidence(m))
		}
	}
	if code := post(t, "http://"+d2.listeners[0].Addr().String()+"/v1/events", "", body); code != 202 {
		t.Fatalf("post after the torn record: %d", code)
	}
}

// A full disk under --state-dir (a real tmpfs filled to the last byte):
// `run` starts anyway; an event is evaluated but not acknowledged (503
// with Retry-After, so the forwarder keeps it), with one clear log line
// and the counters; once there is room the same event is taken (202).
func TestEventSideFullDisk(t *testing.T) {
	testenv.RequirePrivileged(t)
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=512k"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	state := filepath.Join(mnt, "state")
	body, err := os.ReadFile(filepath.Join(winSamples, "otrf_cmd_netsh_fw_mod_open_ports.subset.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	// A first run creates the directories, then the disk fills up.
	first := eventSide(t, stateCfg(state))
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(mnt, "filler")
	fill, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err := fill.Write(chunk); err != nil {
			break
		}
	}
	fill.Close()

	cfg := stateCfg(state)
	cfg.Alerts.Path = filepath.Join(t.TempDir(), "alerts.jsonl")
	d, logs := eventSideLogged(t, cfg)
	url := "http://" + d.listeners[0].Addr().String() + "/v1/events"
	if code := post(t, url, "", body); code != http.StatusServiceUnavailable {
		t.Fatalf("post on a full disk: %d, want 503", code)
	}
	if e := logs.FilterMessageSnippet("disk is full").All(); len(e) != 1 {
		t.Fatalf("want one clear line about the full disk:\n%v", logs.All())
	}
	m := get(t, "http://"+d.metricsAddr+"/metrics", 200)
	for _, want := range []string{`knockwatch_evidence_log_errors_total{reason="no_space"} 1`,
		`knockwatch_events_dropped_total{reason="not_durable",transport="http"} 1`, "knockwatch_pipeline_evidence_not_stored_total 2",
		`knockwatch_correlate_evidence_total{kind="change",outcome="in"} 2`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s:\n%s", want, testenv.GrepLines(m, "not_durable"))
		}
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if code := post(t, url, "", body); code != http.StatusAccepted {
		t.Fatalf("post once there is room: %d, want 202", code)
	}
	if st := d.evlog.Stats(); st.Records != 2 {
		t.Fatalf("%d records stored after recovery, want the 2 changes", st.Records)
	}
}

// The loss TestEventSideFullDisk could not see (its sample has no record
// ids): a Firewall 2004 with a record id posted while the disk is full is
// answered 503, so its forwarder sends it again once there is room. The
// decoder has seen its record id and takes the re-send for a duplicate:
// the change the engine evaluated the first time must still be stored
// before the re-send's 202, and after a restart the rebuilt engine alerts
// on it.
func TestEventSideFullDiskRecordIDs(t *testing.T) {
	testenv.RequirePrivileged(t)
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=512k"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	out := t.TempDir()
	hosts := filepath.Join(out, "hosts")
	if err := os.WriteFile(hosts, []byte("10.0.0.9 jump01.offsec.lan\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// An inbound allow-any rule on jump01 (EventRecordID 6683).
	body, err := os.ReadFile(filepath.Join(winSamples, "mdecrevoisier_2004_any_any_rule_created.xml"))
	if err != nil {
		t.Fatal(err)
	}
	changeAt := time.Date(2021, 2, 22, 22, 57, 19, 435480e3, time.UTC)
	state := filepath.Join(mnt, "state")
	newCfg := func() config.Config {
		cfg := stateCfg(state)
		cfg.Alerts.Path = filepath.Join(out, "alerts.jsonl")
		cfg.Hosts = hosts
		return cfg
	}
	first := eventSide(t, newCfg())
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(mnt, "filler")
	fill, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err := fill.Write(chunk); err != nil {
			break
		}
	}
	fill.Close()

	d := eventSide(t, newCfg())
	url := "http://" + d.listeners[0].Addr().String() + "/v1/events"
	if code := post(t, url, "", body); code != http.StatusServiceUnavailable {
		t.Fatalf("post on a full disk: %d, want 503", code)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if code := post(t, url, "", body); code != http.StatusAccepted {
		t.Fatalf("re-send once there is room: %d, want 202", code)
	}
	if st := d.evlog.Stats(); st.Records != 1 {
		t.Fatalf("the re-send was acknowledged with %d records stored, want the rule change", st.Records)
	}
	m := get(t, "http://"+d.metricsAddr+"/metrics", 200)
	for _, want := range []string{"knockwatch_pipeline_evidence_restored_total 1", "knockwatch_pipeline_evidence_unstored 0",
		`knockwatch_decoder_records_total{format="xml",outcome="duplicate"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s:\n%s", want, testenv.GrepLines(m, "pipeline_evidence"))
		}
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}

	// A restart: the rebuilt engine has the change; the knock and the
	// handshake reach only the new process.
	restarted := eventSide(t, newCfg())
	attacker, host := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("10.0.0.9")
	k := &sensor.Knock{Src: attacker, Dst: host, Distinct: 3}
	for i, p := range []uint16{7000, 8000, 9000} {
		k.Touches = append(k.Touches, sensor.Touch{Port: p, Time: changeAt.Add(time.Duration(i-4) * time.Second), Kind: sensor.TouchS0})
	}
	ctx := context.Background()
	if err := restarted.pipe.AddKnock(ctx, k); err != nil {
		t.Fatal(err)
	}
	at := changeAt.Add(30 * time.Second)
	hs := &sensor.Handshake{Src: attacker, Dst: host, SrcPort: 51000, Port: 4444, SYN: at, SYNACK: at.Add(time.Millisecond),
		ACK: at.Add(2 * time.Millisecond), PortLastClosed: changeAt.Add(-time.Minute), Distinct: 3}
	if err := restarted.pipe.AddHandshake(ctx, hs); err != nil {
		t.Fatal(err)
	}
	if err := restarted.Stop(); err != nil {
		t.Fatal(err)
	}
	if st := restarted.pipe.Stats(); st.Replayed["change"] != 1 {
		t.Fatalf("rebuild replayed %d changes, want 1", st.Replayed["change"])
	}
	b, _ := os.ReadFile(filepath.Join(out, "alerts.jsonl"))
	if n := strings.Count(string(b), `"confidence":"high"`); n != 1 {
		t.Fatalf("%d high alerts after the restart, want 1:\n%s", n, b)
	}
}
