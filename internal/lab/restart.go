//go:build linux

package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Restart points: where Play kills the sensor with SIGKILL (kill -9) and
// starts it again with the same --state-dir and --pin-path.
const (
	// RestartAfterKnock: once the sensor flagged both knocks and wrote
	// them to its evidence log, before the host opens the port.
	RestartAfterKnock = "knock"
	// RestartAfterEvent: right after the listener acknowledged the
	// forwarded Firewall 2004 event (202), before the attacker connects.
	RestartAfterEvent = "event"
	// RestartAfterHandshake: after the attacker's handshake is in the
	// evidence log and the alert is made but not yet written: the first
	// sensor runs with pipeline.flush_interval=1h so the alert waits in
	// its memory, where the kill loses it. The restarted sensor must send
	// it, from its rebuild.
	RestartAfterHandshake = "handshake"
	// RestartAfterAlert: after the alert was written (and remembered in
	// the ledger). The restarted sensor rebuilds the same alert and must
	// not send it again.
	RestartAfterAlert = "alert"
)

// RestartPoints lists the restart points in scenario order.
var RestartPoints = []string{RestartAfterKnock, RestartAfterEvent, RestartAfterHandshake, RestartAfterAlert}

// Restart is one kill -9 and restart of the sensor.
type Restart struct {
	Point     string    `json:"point"`
	KilledPID int       `json:"killed_pid"`
	PID       int       `json:"pid"`
	At        time.Time `json:"at"`
	// Replayed is how many evidence records the restarted sensor's engine
	// replayed from its evidence log at start-up, in RebuildSeconds.
	Replayed       float64 `json:"replayed"`
	RebuildSeconds float64 `json:"rebuild_seconds"`
}

// Metric names the restart reads.
const (
	metricAppended     = "knockwatch_evidence_log_appended_total"
	metricQueued       = "knockwatch_alerts_queued"
	metricLedger       = "knockwatch_alert_ledger_entries"
	metricAlreadySent  = "knockwatch_alerts_already_sent_total"
	metricRebuilt      = "knockwatch_evidence_rebuild_records"
	metricRebuildTime  = "knockwatch_evidence_rebuild_seconds"
	holdAlertsInMemory = "pipeline.flush_interval=1h"
)

// mountPins mounts a bpffs for the sensor's pinned maps in the lab's
// directory: `ip netns exec` mounts the namespace's own /sys, hiding
// /sys/fs/bpf from the sensor.
func (l *Lab) mountPins() error {
	dir := filepath.Join(l.dir, "bpf")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("create pin directory: %w", err)
	}
	if err := syscall.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	l.bpfDir = dir
	return nil
}

// unmountPins removes the bpffs (and with it the pinned maps).
func (l *Lab) unmountPins() error {
	if l.bpfDir == "" {
		return nil
	}
	if err := syscall.Unmount(l.bpfDir, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount %s: %w", l.bpfDir, err)
	}
	l.bpfDir = ""
	return nil
}

// restart kills the sensor with SIGKILL, keeps the alerts it wrote, and
// starts it again with the same arguments (the same --state-dir and
// --pin-path), without holding alerts back.
func (l *Lab) restart(ctx context.Context, r *Result, point, why string) error {
	c := l.cfg
	old := l.sensor
	if m, err := old.metrics(ctx); err == nil {
		if n, ok := flaggedKnocks(m); ok {
			l.flaggedBefore += n
		}
	}
	pid := old.cmd.Process.Pid
	if err := old.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill -9 the sensor: %w", err)
	}
	select {
	case <-old.exited:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("sensor %d still running 10 s after SIGKILL", pid)
	}
	alerts, _, _ := old.snapshot()
	l.prevAlerts = append(l.prevAlerts, alerts...)
	c.Logf("sensor: kill -9 %d %s (%d alert(s) written so far)", pid, why, len(l.prevAlerts))
	s, err := startSensor(l.topo.Sensor, c.Binary, l.args, MetricsAddr, c.OnAlert, c.SensorLog)
	if err != nil {
		return fmt.Errorf("restart sensor: %w", err)
	}
	l.sensor = s
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.waitReady(rctx); err != nil {
		return fmt.Errorf("restart sensor: %w%s", err, l.logHint())
	}
	rs := Restart{Point: point, KilledPID: pid, PID: s.cmd.Process.Pid, At: time.Now()}
	if m, err := s.metrics(ctx); err == nil {
		rs.Replayed, _ = m.Sum(metricRebuilt, map[string]string{"outcome": "replayed"})
		rs.RebuildSeconds, _ = m.Sum(metricRebuildTime, nil)
	}
	r.Restarts = append(r.Restarts, rs)
	r.SensorPID = rs.PID
	c.Logf("sensor: restarted (pid %d) with the same --state-dir and --pin-path; its engine replayed %s evidence record(s) from the evidence log in %s",
		rs.PID, num(rs.Replayed), time.Duration(rs.RebuildSeconds*float64(time.Second)).Round(time.Microsecond))
	return nil
}

// waitMetric waits until the sensor serves name (summed over the series
// matching match) at least min.
func (l *Lab) waitMetric(ctx context.Context, what, name string, match map[string]string, min float64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		m, err := l.sensor.metrics(ctx)
		if err != nil {
			return err
		}
		if v, _ := m.Sum(name, match); v >= min {
			return nil
		}
		if time.Now().After(deadline) {
			v, ok := m.Sum(name, match)
			return fmt.Errorf("waited %v for %s (%s >= %v; it is %v, served %v)%s", timeout, what, name, min, v, ok, l.logHint())
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// checkRestart validates Config.Restart.
func checkRestart(p string) error {
	if p == "" {
		return nil
	}
	for _, q := range RestartPoints {
		if p == q {
			return nil
		}
	}
	return fmt.Errorf("restart point %q: want one of %s", p, strings.Join(RestartPoints, ", "))
}
