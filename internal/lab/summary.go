//go:build linux

package lab

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Metric names of `knockwatch run` the lab reads.
const (
	MetricKnocksFlagged  = "knockwatch_knocks_flagged_total"
	MetricHandshakes     = "knockwatch_handshakes_reported_total"
	MetricTouches        = "knockwatch_closed_port_touches_total"
	MetricEventsReceived = "knockwatch_events_received_total"
	MetricEventsDropped  = "knockwatch_events_dropped_total"
	MetricAlerts         = "knockwatch_alerts_total"
)

func flaggedKnocks(m Metrics) (float64, bool) { return m.Sum(MetricKnocksFlagged, nil) }

// summaryRow is one line of the metrics summary: a label and the series
// whose values it shows.
type summaryRow struct {
	label  string
	series []seriesRef
}

type seriesRef struct {
	show  string // "" for a lone value
	name  string
	match map[string]string
}

func one(name string, match map[string]string) []seriesRef {
	return []seriesRef{{name: name, match: match}}
}

var summaryRows = []summaryRow{
	{"packets seen by XDP", []seriesRef{{"packets", "knockwatch_xdp_packets_total", nil}, {"bytes", "knockwatch_xdp_bytes_total", nil}}},
	{"XDP attached", []seriesRef{{"native", "knockwatch_interface_attached", map[string]string{"mode": "native"}},
		{"generic", "knockwatch_interface_attached", map[string]string{"mode": "generic"}}}},
	{"closed-port touches", []seriesRef{{"S0", MetricTouches, map[string]string{"kind": "S0"}}, {"REJ", MetricTouches, map[string]string{"kind": "REJ"}}}},
	{"knocks flagged", one(MetricKnocksFlagged, nil)},
	{"handshakes reported", one(MetricHandshakes, nil)},
	{"ring-buffer records lost", one("knockwatch_ringbuf_lost_total", nil)},
	{"events received (http)", []seriesRef{{"accepted", MetricEventsReceived, map[string]string{"transport": "http", "outcome": "accepted"}},
		{"rejected", MetricEventsReceived, map[string]string{"transport": "http", "outcome": "rejected"}}}},
	{"requests refused (http)", []seriesRef{{"unauthorized", MetricEventsDropped, map[string]string{"transport": "http", "reason": "unauthorized"}}}},
	{"event lag (arrival - event time)", []seriesRef{{"events", "knockwatch_event_lag_seconds_count", nil}, {"sum s", "knockwatch_event_lag_seconds_sum", nil}}},
	{"evidence in the engine", []seriesRef{{"knock", "knockwatch_correlate_evidence_total", map[string]string{"kind": "knock", "outcome": "in"}},
		{"change", "knockwatch_correlate_evidence_total", map[string]string{"kind": "change", "outcome": "in"}},
		{"handshake", "knockwatch_correlate_evidence_total", map[string]string{"kind": "handshake", "outcome": "in"}}}},
	{"handshakes that cannot alert", []seriesRef{{"open all along", "knockwatch_no_alert_total", map[string]string{"reason": "open_all_along"}},
		{"other first", "knockwatch_no_alert_total", map[string]string{"reason": "other_first"}}}},
	{"evidence log", []seriesRef{{"records", "knockwatch_evidence_log_records", nil}, {"segments", "knockwatch_evidence_log_segments", nil},
		{"replayed at start", metricRebuilt, map[string]string{"outcome": "replayed"}}}},
	{"alerts sent before a restart", one(metricAlreadySent, nil)},
	{"alerts", []seriesRef{{"high", MetricAlerts, map[string]string{"confidence": "high"}}, {"medium", MetricAlerts, map[string]string{"confidence": "medium"}}}},
}

// WriteSummary writes a one-screen account of the scenario and the key
// metrics the sensor served.
func WriteSummary(w io.Writer, r *Result, checkErr error) {
	fmt.Fprintf(w, "\n── knockwatch lab: %s scenario, %.1f s ──\n", strings.ToUpper(r.Scenario), r.Duration.Seconds())
	fmt.Fprintf(w, "  attacker %-14v knocked %s (%s), then connected to %d\n", r.Attacker, portList(r.KnockPorts), touchKind(r.Scenario), r.OpenPort)
	by := ""
	if r.Knockd {
		by = " (knockd, on the knock)"
	}
	fmt.Fprintf(w, "  host     %-14v %s: opened %d%s, forwarded Firewall 2004 over HTTPS (%d without token, %d with it)\n",
		r.Host, r.HostName, r.OpenPort, by, r.NoTokenStatus, r.EventStatus)
	fmt.Fprintf(w, "  client   %-14v scanned %s, used %d (no host change)\n", r.Client, portList(r.ScanPorts), r.ServicePort)
	for _, rs := range r.Restarts {
		fmt.Fprintf(w, "  sensor   kill -9 (pid %d) %s; restarted (pid %d) with the same --state-dir and --pin-path, %s evidence record(s) replayed\n",
			rs.KilledPID, restartWhen(rs.Point), rs.PID, num(rs.Replayed))
	}
	if len(r.Metrics) > 0 {
		fmt.Fprintf(w, "  metrics (sensor /metrics, scraped %s after the handshake):\n", durRound(time.Since(r.Connected)))
		for _, row := range summaryRows {
			var parts []string
			for _, s := range row.series {
				v, ok := r.Metrics.Sum(s.name, s.match)
				if !ok {
					continue
				}
				if s.show == "" {
					parts = append(parts, num(v))
				} else {
					parts = append(parts, s.show+" "+num(v))
				}
			}
			if len(parts) == 0 {
				parts = []string{"(not served)"}
			}
			fmt.Fprintf(w, "    %-34s %s\n", row.label, strings.Join(parts, ", "))
		}
	}
	if checkErr == nil {
		after := ""
		if !r.Alerted.IsZero() && !r.Connected.IsZero() {
			after = fmt.Sprintf(" %v after the handshake", r.Alerted.Sub(r.Connected).Round(time.Millisecond))
		}
		fmt.Fprintf(w, "  result: 1 high-confidence AN0842 alert%s, %v -> %v:%d; none for the client ✓\n", after, r.Attacker, r.Host, r.OpenPort)
	} else {
		fmt.Fprintf(w, "  result: NOT as expected:\n    %s\n", strings.ReplaceAll(checkErr.Error(), "\n", "\n    "))
	}
}

func restartWhen(point string) string {
	switch point {
	case RestartAfterKnock:
		return "after the knock"
	case RestartAfterEvent:
		return "after the event's 202"
	case RestartAfterHandshake:
		return "after the handshake, before the alert was written"
	case RestartAfterAlert:
		return "after the alert was written"
	}
	return point
}

func touchKind(scenario string) string {
	if scenario == ScenarioREJ {
		return "REJ: refused with RST"
	}
	return "S0: dropped silently"
}

func num(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

func durRound(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }

// SummaryMetrics returns the values of the summary's series, keyed in
// Prometheus notation (knockwatch_alerts_total{confidence="high"}); series
// the sensor did not serve are left out.
func SummaryMetrics(m Metrics) map[string]float64 {
	out := map[string]float64{}
	for _, row := range summaryRows {
		for _, s := range row.series {
			v, ok := m.Sum(s.name, s.match)
			if !ok {
				continue
			}
			out[seriesKey(s.name, s.match)] = v
		}
	}
	return out
}

func seriesKey(name string, match map[string]string) string {
	if len(match) == 0 {
		return name
	}
	keys := make([]string, 0, len(match))
	for k := range match {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strconv.Quote(match[k])
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}
