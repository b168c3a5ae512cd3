package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/knockwatch/knockwatch/correlate"
)

// The bounds that hold against hostile peers (issue 16): pre-auth pools,
// the intake memory budget, forwarder bindings, fair eviction, duplicate
// conflicts and per-sink backlogs.
var (
	dInPreAuth      = desc("intake_connections_unauthenticated", "Open connections that have not authenticated yet (TLS handshake not done, no valid token yet), per transport.", "transport")
	dBudgetCap      = desc("intake_memory_budget_bytes", "The intake memory budget: event bytes all listeners may hold at once.")
	dBudgetUsed     = desc("intake_memory_in_use_bytes", "Event bytes the listeners hold now under the intake memory budget.")
	dBudgetPeak     = desc("intake_memory_peak_bytes", "The most event bytes the listeners held at once since start.")
	dBudgetWaiting  = desc("intake_memory_waiting", "Messages waiting for the intake memory budget now.")
	dBudgetWaits    = desc("intake_memory_waits_total", "Messages that had to wait for the intake memory budget.")
	dBudgetRefused  = desc("intake_memory_refused_total", "Messages refused because the intake memory budget stayed exhausted (HTTP 429).")
	dForwarder      = desc("forwarder_records_total", "Windows event records by forwarder binding (listeners.forwarders, or unbound) and outcome (accepted, refused: the forwarder may not send for that host).", "forwarder", "outcome")
	dCorEvictReason = desc("correlate_evicted_by_reason_total", "Correlation entries evicted at a cap, by table and by the class of what went (changes: unresolved, no_knock, spent, usable, versions; pairs and handshakes by their class).", "table", "reason")
	dCorTopEvicted  = desc("correlate_top_evicted", "The hosts and forwarders whose correlation entries were evicted most (at most 16 of each; counts are upper bounds): under a flood, the offenders.", "kind", "name")
	dDecConflicts   = desc("decoder_dedupe_conflicts_total", "Records whose computer, channel and record id were seen before with other content: processed, not dropped (a forgery or a rewrite).")
	dDecIPsDropped  = desc("decoder_host_ips_dropped_total", "Host addresses removed from records because their forwarder may not name them (listeners.forwarders).")
	dSinkBacklog    = desc("sink_backlog_records", "Alert records kept for a failing sink while a durable sink took them.", "sink")
	dSinkBacklogDr  = desc("sink_backlog_dropped_total", "Alert records dropped from a failing sink's backlog at alerts.max_backlog (a durable sink has them).", "sink")
)

var boundDescs = []*prometheus.Desc{
	dInPreAuth, dBudgetCap, dBudgetUsed, dBudgetPeak, dBudgetWaiting, dBudgetWaits, dBudgetRefused, dForwarder,
	dCorEvictReason, dCorTopEvicted, dDecConflicts, dDecIPsDropped, dSinkBacklog, dSinkBacklogDr,
}

// evictReasons are the reasons exported at 0 before any eviction.
var evictReasons = map[string][]string{
	"changes":    {correlate.EvictChangeUnresolved, correlate.EvictChangeNoKnock, correlate.EvictChangeSpent, correlate.EvictChangeUsable, correlate.EvictChangeVersions},
	"handshakes": {correlate.EvictHandshakeNoKnock, correlate.EvictHandshakeKnocked, correlate.EvictHandshakeAlerted},
	"pairs":      {"scan", "partial", "knock", "knock_changed", "handshake", "alerted"},
}

func (c *collector) collectBounds(ch chan<- prometheus.Metric) {
	if c.src.Intake != nil {
		by := map[string]int64{}
		for _, s := range c.src.Intake() {
			by[s.Transport] += s.ConnectionsUnauthenticated
		}
		for _, t := range sortedKeys(by) {
			gauge(ch, dInPreAuth, float64(by[t]), t)
		}
	}
	if c.src.Budget != nil {
		b := c.src.Budget()
		gauge(ch, dBudgetCap, float64(b.Capacity))
		gauge(ch, dBudgetUsed, float64(b.InUse))
		gauge(ch, dBudgetPeak, float64(b.Peak))
		gauge(ch, dBudgetWaiting, float64(b.Waiting))
		counter(ch, dBudgetWaits, b.Waits)
		counter(ch, dBudgetRefused, b.Refused)
	}
	if c.src.Bindings != nil {
		b := c.src.Bindings()
		for _, name := range sortedKeys(b.Accepted) {
			counter(ch, dForwarder, b.Accepted[name], name, "accepted")
			counter(ch, dForwarder, b.Refused[name], name, "refused")
		}
	}
	if c.src.Engine != nil {
		s := c.src.Engine()
		for _, table := range sortedKeys(evictReasons) {
			seen := map[string]bool{}
			for _, r := range evictReasons[table] {
				seen[r] = true
				counter(ch, dCorEvictReason, s.EvictedByReason[table][r], table, r)
			}
			for _, r := range sortedKeys(s.EvictedByReason[table]) {
				if !seen[r] {
					counter(ch, dCorEvictReason, s.EvictedByReason[table][r], table, r)
				}
			}
		}
		for _, kc := range s.TopEvictedHosts {
			gauge(ch, dCorTopEvicted, float64(kc.Count), "host", kc.Key)
		}
		for _, kc := range s.TopEvictedOrigins {
			gauge(ch, dCorTopEvicted, float64(kc.Count), "forwarder", kc.Key)
		}
	}
	if c.src.Decoder != nil {
		s := c.src.Decoder()
		counter(ch, dDecConflicts, s.DedupeConflicts)
		counter(ch, dDecIPsDropped, s.HostIPsDropped)
	}
	if c.src.Sinks != nil {
		seen := map[string]bool{}
		for _, s := range c.src.Sinks() {
			if s.Kind == "fanout" || seen[s.Name] {
				continue
			}
			seen[s.Name] = true
			gauge(ch, dSinkBacklog, float64(s.Backlog), s.Name)
			counter(ch, dSinkBacklogDr, s.BacklogDropped, s.Name)
		}
	}
}
