//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/lab"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
)

// The end-to-end test builds the knockwatch binary and runs `knockwatch
// lab` through it: real namespaces, the real `knockwatch run` as a child
// process with native XDP on the span copy of the host's link, real TCP, a
// real forwarded Windows event over HTTPS. Everything it asserts comes from
// what the binary printed, wrote to --report and served on /metrics.

// buildKnockwatch builds ./cmd/knockwatch into dir.
func buildKnockwatch(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "knockwatch")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// ecsAlert is the part of an alert the test checks.
type ecsAlert struct {
	Rule struct {
		ID string `json:"id"`
	} `json:"rule"`
	Source struct {
		IP string `json:"ip"`
	} `json:"source"`
	Destination struct {
		IP   string `json:"ip"`
		Port uint16 `json:"port"`
	} `json:"destination"`
	Knockwatch struct {
		Confidence string `json:"confidence"`
		Knock      struct {
			Ports   []uint16 `json:"ports"`
			Touches []struct {
				Kind string `json:"kind"`
			} `json:"touches"`
		} `json:"knock"`
		Change *struct {
			EventID uint32 `json:"event_id"`
			Ports   string `json:"ports"`
		} `json:"change"`
	} `json:"knockwatch"`
}

func TestLabEndToEnd(t *testing.T) {
	testenv.RequirePrivileged(t)
	bin := buildKnockwatch(t, t.TempDir())
	for _, sc := range []struct {
		name, kind string
		args       []string
		ifaces     int
	}{
		{"s0", "S0", []string{"--scenario", lab.ScenarioS0}, 1},
		{"rej", "REJ", []string{"--scenario", lab.ScenarioREJ}, 1},
		// A passive tap (each direction on its own interface) over IPv6.
		{"rej-ipv6-tap", "REJ", []string{"--rej", "--ipv6", "--tap"}, 2},
		// A second capture interface that sees one direction only
		// (docs/COVERAGE.md): reported within a minute.
		{"rej-one-way-port", "REJ", []string{"--rej", "--one-way-port"}, 2},
		// The host's clock 90 s behind, far beyond rule.skew, measured from
		// its 5156 events: the alert is still high, corrected.
		{"s0-clock-90s-behind", "S0", []string{"--s0", "--host-clock-offset=-90s"}, 1},
	} {
		t.Run(sc.name, func(t *testing.T) {
			report := filepath.Join(t.TempDir(), "report.json")
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			args := append([]string{"lab", "--json", "--report", report, "--timeout", "80s"}, sc.args...)
			cmd := exec.CommandContext(ctx, bin, args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			t.Logf("knockwatch %s:\n%s", strings.Join(args, " "), stderr.String())
			if err != nil {
				t.Fatalf("knockwatch lab: %v\nstdout:\n%s", err, stdout.String())
			}
			var r lab.Result
			raw, err := os.ReadFile(report)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(raw, &r); err != nil {
				t.Fatalf("decode report: %v", err)
			}
			checkNothingLeft(t, r.Namespaces, r.SensorPID)

			// Standard output: each alert as one JSON line, then the summary.
			var printed [][]byte
			var summary map[string]json.RawMessage
			sc2 := bufio.NewScanner(&stdout)
			sc2.Buffer(nil, 1<<20)
			for sc2.Scan() {
				line := sc2.Bytes()
				if bytes.HasPrefix(line, []byte(`{"summary":`)) {
					if err := json.Unmarshal(line, &summary); err != nil {
						t.Fatalf("summary line: %v: %s", err, line)
					}
					continue
				}
				if !json.Valid(line) {
					t.Fatalf("stdout line is not a JSON alert: %s", line)
				}
				printed = append(printed, append([]byte(nil), line...))
			}
			if summary == nil {
				t.Errorf("no summary line on stdout")
			}

			// Exactly one alert, the attacker's, high confidence, printed and reported.
			if len(r.Alerts) != 1 || len(printed) != 1 {
				t.Fatalf("%d alerts reported, %d printed; want exactly 1:\n%s", len(r.Alerts), len(printed), stdout.String())
			}
			var a ecsAlert
			if err := json.Unmarshal(r.Alerts[0], &a); err != nil {
				t.Fatal(err)
			}
			if a.Rule.ID != "AN0842" || !sameIP(a.Source.IP, r.Attacker) || !sameIP(a.Destination.IP, r.Host) ||
				a.Destination.Port != r.OpenPort || a.Knockwatch.Confidence != "high" {
				t.Errorf("alert %s %s -> %s:%d confidence %q; want AN0842 %v -> %v:%d high",
					a.Rule.ID, a.Source.IP, a.Destination.IP, a.Destination.Port, a.Knockwatch.Confidence, r.Attacker, r.Host, r.OpenPort)
			}
			if fmt.Sprint(a.Knockwatch.Knock.Ports) != fmt.Sprint(r.KnockPorts) {
				t.Errorf("alert knock ports %v, want %v", a.Knockwatch.Knock.Ports, r.KnockPorts)
			}
			for i, tc := range a.Knockwatch.Knock.Touches {
				if tc.Kind != sc.kind {
					t.Errorf("touch %d kind %q, want %s", i, tc.Kind, sc.kind)
				}
			}
			if c := a.Knockwatch.Change; c == nil || c.EventID != 2004 || c.Ports != fmt.Sprint(r.OpenPort) {
				t.Errorf("alert change %+v, want the Firewall 2004 event for port %d", c, r.OpenPort)
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, r.Alerts[0]); err != nil || !bytes.Equal(compact.Bytes(), printed[0]) {
				t.Errorf("printed alert differs from the reported one:\n%s\n%s", printed[0], r.Alerts[0])
			}
			if sameIP(a.Source.IP, r.Client) {
				t.Errorf("alert for the benign client")
			}

			// The listener's auth path.
			if r.NoTokenStatus != 401 || r.EventStatus != 202 || r.EventsAccepted != 1 || r.EventsRejected != 0 {
				t.Errorf("event posts: without token %d, with token %d accepted %d rejected %d; want 401, 202 1 0",
					r.NoTokenStatus, r.EventStatus, r.EventsAccepted, r.EventsRejected)
			}

			// /metrics, scraped by the lab after the scenario.
			m := r.Metrics
			get := func(name string, match map[string]string) float64 {
				t.Helper()
				v, ok := m.Sum(name, match)
				if !ok {
					t.Errorf("metric %s%v not served", name, match)
				}
				return v
			}
			other := map[string]string{"S0": "REJ", "REJ": "S0"}[sc.kind]
			// Attacker 3 knocks + client 3 scanned ports, one SYN each.
			if v := get(lab.MetricTouches, map[string]string{"kind": sc.kind}); v < 6 {
				t.Errorf("closed-port touches %s = %v, want >= 6", sc.kind, v)
			}
			// On the one-way port the SYNs to the file server end unanswered:
			// S0 touches there (at least one per port the client used).
			if v := get(lab.MetricTouches, map[string]string{"kind": other}); sc.name == "rej-one-way-port" && v < float64(len(r.OneWayPorts())) {
				t.Errorf("closed-port touches %s = %v, want >= %d (the one-way path)", other, v, len(r.OneWayPorts()))
			} else if sc.name != "rej-one-way-port" && v != 0 {
				t.Errorf("closed-port touches %s = %v, want 0", other, v)
			}
			// The one-way port's phase: the client's seeming knock of the
			// file server is flagged by the program, and held.
			extraKnocks := 0.0
			if sc.name == "rej-one-way-port" {
				extraKnocks = 1
				ow := r.OneWay
				if ow == nil || ow.Reported <= 0 || ow.Reported > lab.OneWayWithin || ow.KnocksHeld < 1 {
					t.Fatalf("one-way port: %+v: want cap2 reported within %v and the client's knock held", ow, lab.OneWayWithin)
				}
				if !strings.Contains(ow.Table, "CRITICAL  one_way  capture interface cap2") || !strings.Contains(ow.Table, "attach the tap's other port") {
					t.Errorf("knockwatch coverage table:\n%s", ow.Table)
				}
				t.Logf("cap2 reported one way after %v (%d connections)", ow.Reported, ow.Connections)
			} else if r.OneWay != nil {
				t.Errorf("one-way phase without --one-way-port")
			}
			extraEvents := 0.0
			if sc.name == "s0-clock-90s-behind" {
				ck := r.Clock
				if ck == nil || ck.Alert == nil || ck.Alert["applied"] != true {
					t.Fatalf("host clock: %+v: want the offset measured and applied in the alert", ck)
				}
				if off, _ := ck.Alert["offset"].(float64); off > -89 || off < -91 {
					t.Errorf("alert knockwatch.clock.offset %v, want -90 within 1 s", off)
				}
				t.Logf("host clock measured %+.3f s after %v from %d connections", ck.Measured, ck.MeasuredAfter, ck.Connections)
				extraEvents = float64(ck.Connections) // one 5156 each
			} else if r.Clock != nil {
				t.Errorf("host-clock phase without --host-clock-offset")
			}
			for _, c := range []struct {
				name  string
				match map[string]string
				min   float64
				max   float64
			}{
				{lab.MetricKnocksFlagged, nil, 1, 2 + extraKnocks}, // attacker, and the client's scan
				{lab.MetricHandshakes, nil, 1, 2},                  // attacker, and the client's if flagged in time
				{lab.MetricEventsReceived, map[string]string{"transport": "http", "outcome": "accepted"}, 1 + extraEvents, 1 + extraEvents},
				{lab.MetricEventsReceived, map[string]string{"transport": "http", "outcome": "rejected"}, 0, 0},
				{lab.MetricEventsDropped, map[string]string{"transport": "http", "reason": "unauthorized"}, 1, 1},
				{lab.MetricAlerts, map[string]string{"confidence": "high"}, 1, 1},
				{lab.MetricAlerts, map[string]string{"confidence": "medium"}, 0, 0},
				{"knockwatch_ringbuf_lost_total", nil, 0, 0},
				{"knockwatch_interface_attached", map[string]string{"iface": "cap0", "mode": "native"}, 1, 1},
				{"knockwatch_interface_attached", map[string]string{"mode": "native"}, float64(sc.ifaces), float64(sc.ifaces)},
				{"knockwatch_event_lag_seconds_count", nil, 1 + extraEvents, 1 + extraEvents},
			} {
				if v := get(c.name, c.match); v < c.min || v > c.max {
					t.Errorf("%s%v = %v, want [%v, %v]", c.name, c.match, v, c.min, c.max)
				}
			}
			if v := get("knockwatch_xdp_packets_total", nil); v < 20 {
				t.Errorf("xdp packets %v: the mirror delivered too little", v)
			}
			if t.Failed() {
				for _, s := range m {
					t.Logf("metric %s %v %v", s.Name, s.Labels, s.Value)
				}
			}
		})
	}
	t.Run("interrupt", func(t *testing.T) { testLabInterrupt(t, bin) })
}

// testLabInterrupt: Ctrl-C while the lab is up (here: held by --keep)
// stops the sensor and removes every namespace.
func testLabInterrupt(t *testing.T, bin string) {
	report := filepath.Join(t.TempDir(), "report.json")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "lab", "--keep", "--json", "--knock-client", "go", "--report", report, "--timeout", "80s")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var names []string
	var log strings.Builder
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line := sc.Text()
		log.WriteString(line + "\n")
		if rest, ok := strings.CutPrefix(line, "lab: --keep: namespaces "); ok {
			list, _, _ := strings.Cut(rest, " stay up")
			names = strings.Fields(list)
			break
		}
	}
	if len(names) == 0 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("the lab never reported its kept namespaces:\n%s", log.String())
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join("/run/netns", n)); err != nil {
			t.Errorf("kept namespace %s: %v", n, err)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go func() {
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
		}
	}()
	err = cmd.Wait()
	t.Logf("lab log:\n%s", log.String())
	if err != nil {
		t.Errorf("lab after SIGINT: %v (want exit 0: the scenario had passed)", err)
	}
	var r lab.Result
	if raw, err := os.ReadFile(report); err != nil {
		t.Error(err)
	} else if err := json.Unmarshal(raw, &r); err != nil {
		t.Errorf("decode report: %v", err)
	}
	checkNothingLeft(t, names, r.SensorPID)
}

func sameIP(s string, a netip.Addr) bool {
	p, err := netip.ParseAddr(s)
	return err == nil && p == a
}

// checkNothingLeft: no namespace of the lab is listed or mounted, and the
// sensor process is gone.
func checkNothingLeft(t *testing.T, names []string, sensorPID int) {
	t.Helper()
	if len(names) < 5 {
		t.Errorf("lab reported %d namespaces %v, want 5 (switch, host, attacker, client, sensor)", len(names), names)
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Errorf("ip netns list: %v: %s", err, out)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s still listed by ip netns list", n)
		}
		if _, err := os.Stat(filepath.Join("/run/netns", n)); err == nil {
			t.Errorf("namespace %s still mounted", n)
		}
	}
	if sensorPID <= 0 {
		t.Errorf("report carries no sensor pid")
	} else if err := syscall.Kill(sensorPID, 0); err == nil {
		t.Errorf("sensor process %d still running", sensorPID)
	}
}

// Command-line mistakes are usage errors before anything is built.
func TestLabUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--s0", "--rej"},
		{"--knock-ports", "7000,x"},
		{"--knock-ports", "7000"},
		{"--open-port", "70000"},
		{"--bogus"},
		{"extra"},
		{"--restart=later"},
	} {
		var stderr bytes.Buffer
		err := runLab(context.Background(), args, io.Discard, &stderr)
		if !errors.Is(err, errUsage) {
			t.Errorf("lab %v: %v, want a usage error", args, err)
		}
	}
	var stderr bytes.Buffer
	if err := runLab(context.Background(), []string{"--help"}, io.Discard, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
	for _, want := range []string{"--rej", "--keep", "--timeout", "--json", "--report", "--ipv6", "--tap", "--knockd", "--restart", "kill -9", "Needs root"} {
		if !strings.Contains(stderr.String(), strings.TrimPrefix(want, "-")) {
			t.Errorf("--help does not mention %s:\n%s", want, stderr.String())
		}
	}
}
