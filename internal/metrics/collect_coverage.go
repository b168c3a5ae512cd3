package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/knockwatch/knockwatch/coverage"
)

// Coverage (docs/COVERAGE.md): aggregates only, so cardinality is bounded
// by the fixed state, outcome and table names, whatever the number of
// hosts; per-host detail is /v1/coverage's.
var (
	dCovHosts      = desc("coverage_hosts", "Hosts by coverage state (covered, clock_unverified, host_blind, network_blind, degraded, unseen).", "state")
	dCovMeasured   = desc("coverage_hosts_clock_measured", "Hosts whose clock offset is measured (and applied).")
	dCovMaxOffset  = desc("coverage_clock_offset_max_seconds", "The largest absolute clock offset measured among the hosts, in seconds.")
	dCovIfaces     = desc("coverage_interfaces", "Capture interfaces by path state (ok, one_way, answers_only, tap_half, idle, unknown).", "state")
	dCovSensor     = desc("coverage_sensor_path", "1 for the sensor-wide capture path state (ok, one_way, answers_only, idle).", "state")
	dCovSamples    = desc("coverage_clock_samples_total", "Connections both the sensor and a host logged, by outcome (matched, duplicate, conflict, beyond_bound, address_mismatch).", "outcome")
	dCovRequests   = desc("coverage_sample_requests_total", "Clock sample requests to the XDP program, by outcome (sent, answered, expired, failed).", "outcome")
	dCovEvicted    = desc("coverage_evicted_total", "Coverage entries dropped at a bound, by table (hosts, connections, handshakes, matches).", "table")
	dCovHostsCap   = desc("coverage_hosts_cap_hits_total", "Times the coverage host table was full (coverage.max_hosts).")
	dCovPending    = desc("coverage_pending", "Connection events and sensor handshakes waiting for their match.", "table")
	dCovHeld       = desc("coverage_knocks_held", "Knocks held now because their path is blind (one way, or SYNs never answered).")
	dCovHeldTotal  = desc("coverage_knocks_held_total", "Knocks held because their path was blind.")
	dCovHeldOver   = desc("coverage_knocks_held_overflow_total", "Held knocks the bound sent on to the engine (the oldest of the host with the most held): never dropped.")
	dCovConnEvents = desc("coverage_connection_events_total", "Host connection events (Security 5156, Sysmon 3) given to coverage.")
	dCovDsts       = desc("coverage_syn_destinations_total", "Hosts read from the XDP program's table of SYN destinations inside coverage.networks (one per host and reading).")
	dCovSampleRecs = desc("clock_samples_received_total", "Clock-calibration HANDSHAKE records from the XDP program (not knock evidence).")
	dCorClocks     = desc("correlate_host_clocks", "Host addresses whose measured clock the engine applies.")
	dCorClockUpd   = desc("correlate_clock_updates_total", "Host clock updates the engine took or refused (beyond rule.max_clock_offset, table full).", "outcome")
	dCorClocked    = desc("alerts_clock_corrected_total", "Alert records whose change matched only at its time corrected by the host's measured clock.")
)

var coverageDescs = []*prometheus.Desc{dCovHosts, dCovMeasured, dCovMaxOffset, dCovIfaces, dCovSensor, dCovSamples, dCovRequests,
	dCovEvicted, dCovHostsCap, dCovPending, dCovHeld, dCovHeldTotal, dCovHeldOver, dCovConnEvents, dCovDsts, dCovSampleRecs, dCorClocks, dCorClockUpd, dCorClocked}

func (c *collector) collectCoverage(ch chan<- prometheus.Metric) {
	if c.src.Engine != nil {
		s := c.src.Engine()
		gauge(ch, dCorClocks, float64(s.HostClocks))
		counter(ch, dCorClockUpd, s.ClockUpdates, "taken")
		counter(ch, dCorClockUpd, s.ClockRefused, "refused")
		counter(ch, dCorClocked, s.AlertsClocked)
	}
	if c.src.Pipeline != nil {
		s := c.src.Pipeline()
		counter(ch, dCovSampleRecs, s.Samples)
		gauge(ch, dCovHeld, float64(s.KnocksHeld))
		counter(ch, dCovHeldOver, s.KnocksHeldOverflow)
	}
	if c.src.Coverage == nil {
		return
	}
	s := c.src.Coverage()
	for _, st := range coverage.HostStates {
		gauge(ch, dCovHosts, float64(s.HostsState[st]), st)
	}
	gauge(ch, dCovMeasured, float64(s.ClockMeasured))
	gauge(ch, dCovMaxOffset, s.LargestOffset.Seconds())
	for _, st := range coverage.InterfaceStates {
		gauge(ch, dCovIfaces, float64(s.Interfaces[st]), st)
	}
	for _, st := range []string{coverage.StateOK, coverage.StateOneWay, coverage.StateAnswersOnly, coverage.StateIdle} {
		v := 0.0
		if s.Sensor == st || (st == coverage.StateIdle && s.Sensor == coverage.StateUnknown) {
			v = 1
		}
		gauge(ch, dCovSensor, v, st)
	}
	for _, k := range sortedKeys(s.Samples) {
		counter(ch, dCovSamples, s.Samples[k], k)
	}
	for _, k := range sortedKeys(s.Requests) {
		counter(ch, dCovRequests, s.Requests[k], k)
	}
	for _, k := range sortedKeys(s.Evicted) {
		counter(ch, dCovEvicted, s.Evicted[k], k)
	}
	counter(ch, dCovHostsCap, s.HostsCap)
	for _, k := range []string{"connections", "handshakes"} {
		gauge(ch, dCovPending, float64(s.Pending[k]), k)
	}
	counter(ch, dCovHeldTotal, s.Held)
	counter(ch, dCovConnEvents, s.ConnEvents)
	counter(ch, dCovDsts, s.Destinations)
}
