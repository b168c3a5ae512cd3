//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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

// TestLabRestartEndToEnd: `knockwatch lab --restart=POINT` with the real
// `knock` client, knockd on the host and the Firewall 2004 event posted
// over HTTPS: the lab kills the real `knockwatch run` with SIGKILL at each
// point between the knock and the alert and starts it again with the same
// --state-dir and --pin-path. Every time exactly one high alert must come
// out, across both processes: not lost (knock, event, handshake), not
// repeated (alert).
func TestLabRestartEndToEnd(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, tool := range []string{"knock", "knockd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (apt-get install knockd): the restart test plays the real client against the real daemon", tool)
		}
	}
	bin := buildKnockwatch(t, t.TempDir())
	for _, c := range []struct {
		point    string
		scenario string
		// restartedSends: the alert comes from the restarted process
		// (false: from the first one, and the second must not repeat it).
		restartedSends bool
	}{
		{lab.RestartAfterKnock, lab.ScenarioS0, true},
		{lab.RestartAfterEvent, lab.ScenarioS0, true},
		{lab.RestartAfterHandshake, lab.ScenarioS0, true},
		{lab.RestartAfterAlert, lab.ScenarioREJ, false},
	} {
		t.Run(c.point, func(t *testing.T) {
			report := filepath.Join(t.TempDir(), "report.json")
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
			defer cancel()
			args := []string{"lab", "--json", "--report", report, "--timeout", "90s", "--knock-client", "knock", "--knockd", "on",
				"--scenario", c.scenario, "--restart=" + c.point}
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
				t.Fatal(err)
			}
			checkNothingLeft(t, r.Namespaces, r.SensorPID)
			if len(r.Restarts) != 1 || r.Restarts[0].Point != c.point || r.Restarts[0].KilledPID == r.Restarts[0].PID {
				t.Fatalf("restarts %+v, want one at %s", r.Restarts, c.point)
			}
			rs := r.Restarts[0]
			if err := syscall.Kill(rs.KilledPID, 0); err == nil {
				t.Errorf("killed sensor %d still running", rs.KilledPID)
			}
			if !strings.Contains(stderr.String(), "kill -9") || !strings.Contains(stderr.String(), "same --state-dir and --pin-path") {
				t.Errorf("the lab did not say what it did")
			}
			// Exactly one alert over both processes, the attacker's, high.
			if err := r.Check(); err != nil {
				t.Fatalf("check: %v", err)
			}
			var printed int
			sc := bufio.NewScanner(&stdout)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				if !bytes.HasPrefix(sc.Bytes(), []byte(`{"summary":`)) {
					printed++
				}
			}
			if printed != 1 {
				t.Fatalf("%d alerts printed, want 1:\n%s", printed, stdout.String())
			}
			f, err := lab.Fields(r.Alerts[0])
			if err != nil || f.Confidence != "high" || f.Port != r.OpenPort {
				t.Fatalf("alert %+v (%v)", f, err)
			}
			if sent := r.Alerted.After(rs.At); sent != c.restartedSends {
				t.Errorf("alert read at %v, restart at %v: sent by the restarted process = %v, want %v",
					r.Alerted.Format(time.RFC3339Nano), rs.At.Format(time.RFC3339Nano), sent, c.restartedSends)
			}
			// The restarted engine replayed the evidence the first one stored.
			replayed, _ := r.Metrics.Sum("knockwatch_evidence_rebuild_records", map[string]string{"outcome": "replayed"})
			// The two knocks (attacker, client), the event, the attacker's
			// handshake, and the client's handshake to its web service:
			// its scan is flagged before it (at once with REJ; with S0, when
			// the web service's answer decides the scan's unanswered SYNs).
			// The client runs beside the attacker, so at a kill right after
			// the knock or the event its records may or may not be in yet.
			want := map[string][2]float64{lab.RestartAfterKnock: {2, 3}, lab.RestartAfterEvent: {1, 4},
				lab.RestartAfterHandshake: {4, 5}, lab.RestartAfterAlert: {4, 5}}[c.point]
			if replayed < want[0] || replayed > want[1] {
				t.Errorf("replayed %v evidence records, want %v to %v", replayed, want[0], want[1])
			}
			if c.point == lab.RestartAfterAlert {
				if v, _ := r.Metrics.Sum("knockwatch_alerts_already_sent_total", nil); v != 1 {
					t.Errorf("alerts_already_sent_total %v, want 1: the restarted sensor rebuilt the alert and held it back", v)
				}
			}
			mounts, _ := os.ReadFile("/proc/self/mounts")
			if strings.Contains(string(mounts), "knockwatch-lab-") {
				t.Errorf("the lab's bpffs is still mounted")
			}
		})
	}
}
