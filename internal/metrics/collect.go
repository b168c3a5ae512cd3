package metrics

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents"
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
}

// parseOutcomes are the BPF counters that classify what a packet was.
var parseOutcomes = []string{"non_ip", "non_tcp", "truncated", "fragment", "unknown_ext", "bad_header", "tcp"}

var (
	dXDPCounter    = desc("xdp_events_total", "Every per-CPU event counter of the XDP program, summed over CPUs, by name (sensor.CounterNames; bytes are xdp_bytes_total).", "event")
	dXDPPackets    = desc("xdp_packets_total", "Packets the XDP program saw on all attached interfaces.")
	dXDPBytes      = desc("xdp_bytes_total", "Bytes the XDP program saw on all attached interfaces.")
	dXDPParse      = desc("xdp_parse_total", "Packets by parse outcome (tcp, non_ip, non_tcp, truncated, fragment, unknown_ext, bad_header).", "outcome")
	dTouches       = desc("closed_port_touches_total", "Closed-port touches: REJ (SYN answered by RST) and S0 (SYN never answered).", "kind")
	dKnocks        = desc("knocks_flagged_total", "Source/host pairs flagged as knocking (KNOCK records sent).")
	dHandshakes    = desc("handshakes_reported_total", "First handshakes of flagged sources reported (HANDSHAKE records sent).")
	dRingLost      = desc("ringbuf_lost_total", "Records the XDP program could not reserve in the ring buffer (lost).")
	dMapInsertFail = desc("bpf_map_insert_failures_total", "Failed BPF map inserts in the XDP program.")
	dBPFUp         = desc("bpf_counters_up", "1 when the BPF counters could be read at this scrape.")

	dMapEntries = desc("bpf_map_entries", "Entries in a BPF map (hash, LRU and LPM maps).", "map", "type")
	dMapMax     = desc("bpf_map_max_entries", "Configured capacity of a BPF map.", "map", "type")
	dMapFill    = desc("bpf_map_fill_ratio", "Entries divided by capacity of a BPF map (hash, LRU and LPM maps).", "map", "type")
	dMapMem     = desc("bpf_map_memlock_bytes", "Kernel memory charged to a BPF map.", "map", "type")

	dIfAttached = desc("interface_attached", "1 when the XDP program is attached to the interface, by attach mode.", "iface", "mode")
	dIfUp       = desc("interface_up", "1 when the capture interface exists and is up.", "iface")
	dIfPackets  = desc("interface_receive_packets_total", "Packets the kernel received on the capture interface.", "iface")
	dIfBytes    = desc("interface_receive_bytes_total", "Bytes the kernel received on the capture interface.", "iface")
	dIfDropped  = desc("interface_receive_dropped_total", "Packets the kernel dropped on receive on the capture interface (includes XDP_DROP).", "iface")
	dIfXDP      = desc("xdp_interface_total", "The XDP program's per-interface counters: packets, parse outcomes, SYNs, SYN-ACKs and RSTs (bytes are xdp_interface_bytes_total).", "iface", "counter")
	dIfXDPBytes = desc("xdp_interface_bytes_total", "Bytes the XDP program saw on the interface.", "iface")

	dRingPending = desc("ringbuf_pending_bytes", "Bytes of records waiting in the ring buffer for the reader.")
	dMalformed   = desc("ringbuf_malformed_total", "Ring-buffer records that did not decode (C/Go drift).")

	dInConnsOpen  = desc("intake_connections", "Open connections (or followed files) per event transport.", "transport")
	dInConns      = desc("intake_connections_total", "Connections accepted (or files opened) per event transport.", "transport")
	dInMessages   = desc("intake_messages_total", "Messages handed to the decoder per transport (an HTTP body, a syslog message, a Beats event, a file record).", "transport")
	dInBytes      = desc("intake_bytes_total", "Payload bytes received per transport.", "transport")
	dInEvents     = desc("events_received_total", "Windows events received per transport and outcome (accepted or rejected by the decoder).", "transport", "outcome")
	dInDropped    = desc("events_dropped_total", "Messages a transport refused or lost, by reason (unauthorized, too_large, busy, ...).", "transport", "reason")
	dDecRecords   = desc("decoder_records_total", "Windows event records per format and outcome (read, relevant, skipped, duplicate, rejected, emitted).", "format", "outcome")
	dDecRejected  = desc("decoder_rejected_total", "Windows event records rejected by reason.", "reason")
	dDecEvicted   = desc("decoder_evicted_total", "Decoder state dropped at a cap: dedupe keys, hosts, join entries, pending joins, long_values (whole values of strings over 512 bytes kept for changes emitted again, 16 MiB budget).", "table")
	dDecJoins     = desc("decoder_joins_total", "Two-record joins completed (4946+5447, 5447+5154, 2004+2005).")
	dDecRedundant = desc("decoder_redundant_total", "Security 4946/4947/4948 records made redundant by the Firewall channel's record of the same rule change (not emitted, or replaced by it).")
	dDecHosts     = desc("decoder_hosts", "Hosts with decoder join state.")

	dCorState     = desc("correlate_state", "Correlation state sizes.", "table")
	dCorWatermark = desc("correlate_watermark_seconds", "The engine's event-time watermark (unix seconds).")
	dCorEvidence  = desc("correlate_evidence_total", "Evidence given to the engine by kind (knock, handshake, change) and outcome (in, rejected, duplicate, late; for changes also replaced, updated, replaced_resent: a record a stored change replaced, arriving again).", "kind", "outcome")
	dCorIgnored   = desc("correlate_changes_ignored_total", "Exposure changes that cannot open a TCP port inbound, by reason.", "reason")
	dCorUnres     = desc("correlate_changes_unresolved_total", "Exposure changes naming a host the inventory did not know on arrival.")
	dCorCapHits   = desc("correlate_cap_hits_total", "Times a correlation state cap was reached.", "table")
	dCorEvicted   = desc("correlate_evicted_total", "Correlation entries evicted at a cap.", "table")
	dCorExpired   = desc("correlate_expired_total", "Correlation entries expired by retention.", "table")
	dCorTouchDrop = desc("correlate_touches_dropped_total", "Oldest touches dropped at the per-pair cap.")
	dAlerts       = desc("alerts_total", "AN0842 alerts (unsuppressed handshakes that reached an alert), by confidence.", "confidence")
	dUpgrades     = desc("alert_upgrades_total", "Alert records emitted with event.action upgraded.")
	dScans        = desc("scans_total", "Source/host pairs found scanning (more than max_ports closed ports): never alerted.")
	dScanEvid     = desc("scan_evidence_total", "Evidence from pairs already known as scans.")
	dSuppressed   = desc("suppressed_total", "Matches covered by a suppression, by reason.", "reason")
	dNoAlert      = desc("no_alert_total", "Handshakes that cannot alert, by reason (open_all_along, other_first).", "reason")

	dPipeIn       = desc("pipeline_evidence_total", "Evidence the pipeline handed to the engine, by kind.", "kind")
	dPipeRejected = desc("pipeline_rejected_total", "Evidence the pipeline or engine refused, by kind and reason.", "kind", "reason")
	dPipeSkipped  = desc("pipeline_changes_skipped_total", "Decoded changes not fed to the engine, by reason.", "reason")
	dPipePayloads = desc("pipeline_payloads_total", "Event payloads by outcome (handled, unreadable, busy).", "outcome")
	dPipeWaits    = desc("pipeline_sensor_waits_total", "Sensor records that waited for the alert queue.")
	dPipeQueued   = desc("alerts_queued", "Alert records waiting for the sinks.")
	dPipeRecords  = desc("alert_records_total", "Alert records by outcome (emitted, suppressed, written, undelivered, marshal_error).", "outcome")
	dPipeWErr     = desc("alert_write_errors_total", "Failed sink writes (retried).")

	dSinkRecords = desc("sink_records_total", "Alert records per sink and outcome (written, delivered, invalid, refused, dead_lettered).", "sink", "kind", "outcome")
	dSinkErrors  = desc("sink_errors_total", "Failed sink operations.", "sink", "kind")
	dSinkReqs    = desc("sink_requests_total", "HTTP requests sent by a webhook sink, and retries among them.", "sink", "kind", "attempt")
	dSinkSpool   = desc("sink_spool_bytes", "Undelivered bytes on disk in a webhook spool.", "sink")
	dSinkSpoolN  = desc("sink_spool_records", "Undelivered records in a webhook spool.", "sink")
	dSinkSpoolC  = desc("sink_spool_capacity_bytes", "Configured bound of a webhook spool.", "sink")
	dSinkCorrupt = desc("sink_spool_corrupt_frames_total", "Torn or corrupted spool frames skipped.", "sink")

	dEvBytes      = desc("evidence_log_bytes", "Bytes of the evidence log on disk.")
	dEvCapacity   = desc("evidence_log_capacity_bytes", "Size bound of the evidence log (evidence_log.max_bytes).")
	dEvSegments   = desc("evidence_log_segments", "Segment files of the evidence log.")
	dEvRecords    = desc("evidence_log_records", "Valid records in the evidence log.")
	dEvAppended   = desc("evidence_log_appended_total", "Evidence items appended to the evidence log by this process, by kind.", "kind")
	dEvAppBytes   = desc("evidence_log_appended_bytes_total", "Bytes appended to the evidence log by this process.")
	dEvFsyncs     = desc("evidence_log_fsyncs_total", "fsync calls of the evidence log (one covers every batch appended before it).")
	dEvErrors     = desc("evidence_log_errors_total", "Failed appends and fsyncs of the evidence log, by reason (no_space, io, unsynced_full: refused while the appends waiting for a good fsync were at their bound): that evidence was evaluated but not yet durable, and not acknowledged.", "reason")
	dEvUnsynced   = desc("evidence_log_unsynced", "Evidence records appended since the evidence log's last good fsync, kept in memory to write again after a failed write or fsync.")
	dEvUnsyncedB  = desc("evidence_log_unsynced_bytes", "Bytes of those records (bound: 64 MiB, at most a quarter of max_bytes).")
	dEvCut        = desc("evidence_log_cut_segments_total", "Evidence log segments closed and cut back to their last good fsync after a failed write or fsync.")
	dEvRewritten  = desc("evidence_log_rewritten_total", "Evidence records written again to a new segment after a failed write or fsync.")
	dEvCorrupt    = desc("evidence_log_corrupt_frames_total", "Torn or damaged evidence log frames skipped (a torn last record after a crash or power cut counts here).")
	dEvCorruptB   = desc("evidence_log_corrupt_bytes_total", "Bytes of torn or damaged evidence log frames skipped.")
	dEvTorn       = desc("evidence_log_torn_segments_total", "Evidence log segments found ending with a torn record (an append cut short by a crash or power cut).")
	dEvUndecod    = desc("evidence_log_undecodable_total", "Evidence log records with a valid CRC that did not decode (a newer format), skipped; and items too large to store.", "reason")
	dEvRemoved    = desc("evidence_log_removed_segments_total", "Evidence log segments removed, by reason (age: past max_age; size: at max_bytes, evidence a restart can no longer rebuild).", "reason")
	dEvRemovedR   = desc("evidence_log_removed_records_total", "Evidence records in removed segments, by reason (age, size).", "reason")
	dEvRebuildSec = desc("evidence_rebuild_seconds", "How long the start-up rebuild of the engine from the evidence log took.")
	dEvReplayed   = desc("evidence_rebuild_records", "Records read at the start-up rebuild, by outcome (replayed into the engine, expired: older than retention, undecodable).", "outcome")
	dLedgerIDs    = desc("alert_ledger_entries", "Alert ids the ledger of delivered alerts remembers.")
	dLedgerBytes  = desc("alert_ledger_bytes", "Bytes of the alert ledger on disk.")
	dLedgerErrors = desc("alert_ledger_errors_total", "Failed appends and fsyncs of the alert ledger (the marks are kept and written again; a restart before that may send those alerts again).")
	dLedgerUnsync = desc("alert_ledger_unsynced", "Alert ledger marks no good fsync covered yet, kept in memory to write again.")
	dLedgerDrop   = desc("alert_ledger_dropped_total", "Alert ledger marks dropped because those waiting to be written again were at their bound (4 MiB): a restart may send those alerts again.")
	dAlreadySent  = desc("alerts_already_sent_total", "Alert records not sent because the ledger shows the sinks accepted them before a restart.")
	dNotStored    = desc("pipeline_evidence_not_stored_total", "Evidence the engine evaluated that the evidence log could not store.")
	dUnstored     = desc("pipeline_evidence_unstored", "Evaluated changes kept until the evidence log makes them durable (their re-send would be a duplicate): items.")
	dUnstoredB    = desc("pipeline_evidence_unstored_bytes", "Estimated bytes of the evaluated changes kept until the evidence log makes them durable (bound: 64 MiB).")
	dRestored     = desc("pipeline_evidence_restored_total", "Kept changes appended to the evidence log again after a failed append or fsync.")
	dUnstoredFull = desc("pipeline_evidence_unstored_full_total", "Event payloads refused unread because the changes waiting to be stored were at their bound.")
	dUnstoredDrop = desc("pipeline_evidence_unstored_dropped_total", "Sensor records the evidence log refused that were not kept to store again, because those kept were at half the bound (32 MiB): evaluated, not stored; a restart cannot rebuild them.")
)

var allDescs = []*prometheus.Desc{
	dXDPCounter, dXDPPackets, dXDPBytes, dXDPParse, dTouches, dKnocks, dHandshakes, dRingLost, dMapInsertFail, dBPFUp,
	dMapEntries, dMapMax, dMapFill, dMapMem,
	dIfAttached, dIfUp, dIfPackets, dIfBytes, dIfDropped, dIfXDP, dIfXDPBytes, dRingPending, dMalformed,
	dInConnsOpen, dInConns, dInMessages, dInBytes, dInEvents, dInDropped,
	dDecRecords, dDecRejected, dDecEvicted, dDecJoins, dDecRedundant, dDecHosts,
	dCorState, dCorWatermark, dCorEvidence, dCorIgnored, dCorUnres, dCorCapHits, dCorEvicted, dCorExpired, dCorTouchDrop,
	dAlerts, dUpgrades, dScans, dScanEvid, dSuppressed, dNoAlert,
	dPipeIn, dPipeRejected, dPipeSkipped, dPipePayloads, dPipeWaits, dPipeQueued, dPipeRecords, dPipeWErr,
	dSinkRecords, dSinkErrors, dSinkReqs, dSinkSpool, dSinkSpoolN, dSinkSpoolC, dSinkCorrupt,
	dEvBytes, dEvCapacity, dEvSegments, dEvRecords, dEvAppended, dEvAppBytes, dEvFsyncs, dEvErrors, dEvCorrupt, dEvCorruptB,
	dEvTorn, dEvUndecod, dEvRemoved, dEvRemovedR, dEvRebuildSec, dEvReplayed, dLedgerIDs, dLedgerBytes, dLedgerErrors,
	dEvUnsynced, dEvUnsyncedB, dEvCut, dEvRewritten, dLedgerUnsync, dLedgerDrop,
	dAlreadySent, dNotStored, dUnstored, dUnstoredB, dRestored, dUnstoredFull, dUnstoredDrop,
}

type collector struct{ src Sources }

func newCollector(src Sources) *collector { return &collector{src: src} }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
	for _, d := range boundDescs {
		ch <- d
	}
	for _, d := range kafkaDescs {
		ch <- d
	}
	for _, d := range coverageDescs {
		ch <- d
	}
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

// sortedKeys iterates a map in a stable order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.collectBPF(ch)
	c.collectSensorSide(ch)
	c.collectIntake(ch)
	c.collectDecoder(ch)
	c.collectEngine(ch)
	c.collectPipeline(ch)
	c.collectSinks(ch)
	c.collectBounds(ch)
	c.collectEvidence(ch)
	c.collectKafka(ch)
	c.collectCoverage(ch)
}

func (c *collector) collectEvidence(ch chan<- prometheus.Metric) {
	if c.src.Evidence != nil {
		s := c.src.Evidence()
		gauge(ch, dEvBytes, float64(s.Bytes))
		gauge(ch, dEvCapacity, float64(s.CapacityBytes))
		gauge(ch, dEvSegments, float64(s.Segments))
		gauge(ch, dEvRecords, float64(s.Records))
		for _, k := range evidence.Kinds {
			counter(ch, dEvAppended, s.Appended[k.String()], k.String())
		}
		counter(ch, dEvAppBytes, s.AppendedBytes)
		counter(ch, dEvFsyncs, s.Fsyncs)
		for _, r := range []string{evidence.ReasonNoSpace, evidence.ReasonIO, evidence.ReasonUnsynced} {
			counter(ch, dEvErrors, s.Errors[r], r)
		}
		gauge(ch, dEvUnsynced, float64(s.Unsynced))
		gauge(ch, dEvUnsyncedB, float64(s.UnsyncedBytes))
		counter(ch, dEvCut, s.Cut)
		counter(ch, dEvRewritten, s.Rewritten)
		counter(ch, dEvCorrupt, s.CorruptFrames)
		counter(ch, dEvCorruptB, s.CorruptBytes)
		counter(ch, dEvTorn, s.TornSegments)
		counter(ch, dEvUndecod, s.Undecodable, "undecodable")
		counter(ch, dEvUndecod, s.TooLarge, "too_large")
		for _, r := range []string{evidence.ReasonAge, evidence.ReasonSize} {
			counter(ch, dEvRemoved, s.RemovedSegments[r], r)
			counter(ch, dEvRemovedR, s.RemovedRecords[r], r)
		}
		gauge(ch, dEvRebuildSec, s.Rebuild.Duration.Seconds())
		gauge(ch, dEvReplayed, float64(s.Rebuild.Replayed), "replayed")
		gauge(ch, dEvReplayed, float64(s.Rebuild.Expired), "expired")
		gauge(ch, dEvReplayed, float64(s.Rebuild.Undecodable), "undecodable")
	}
	if c.src.Ledger != nil {
		s := c.src.Ledger()
		gauge(ch, dLedgerIDs, float64(s.Entries))
		gauge(ch, dLedgerBytes, float64(s.Bytes))
		counter(ch, dLedgerErrors, s.Errors)
		gauge(ch, dLedgerUnsync, float64(s.Unsynced))
		counter(ch, dLedgerDrop, s.Dropped)
	}
}

func (c *collector) collectBPF(ch chan<- prometheus.Metric) {
	if c.src.BPFCounters == nil {
		return
	}
	cnt, err := c.src.BPFCounters()
	if err != nil {
		gauge(ch, dBPFUp, 0)
		return
	}
	gauge(ch, dBPFUp, 1)
	for _, name := range sensor.CounterNames {
		if name == "bytes" { // a unit, not a count of events: xdp_bytes_total
			continue
		}
		counter(ch, dXDPCounter, cnt[name], name)
	}
	counter(ch, dXDPPackets, cnt["packets"])
	counter(ch, dXDPBytes, cnt["bytes"])
	for _, o := range parseOutcomes {
		counter(ch, dXDPParse, cnt[o], o)
	}
	counter(ch, dTouches, cnt["touch_rej"], "REJ")
	counter(ch, dTouches, cnt["touch_s0"], "S0")
	counter(ch, dKnocks, cnt["flags"])
	counter(ch, dHandshakes, cnt["handshakes"])
	counter(ch, dRingLost, cnt["ringbuf_full"])
	counter(ch, dMapInsertFail, cnt["map_insert_fail"])
}

func (c *collector) collectSensorSide(ch chan<- prometheus.Metric) {
	if c.src.BPFMaps != nil {
		if maps, err := c.src.BPFMaps(); err == nil {
			seen := map[string]bool{}
			for _, m := range maps {
				if seen[m.Name] {
					continue
				}
				seen[m.Name] = true
				gauge(ch, dMapMax, float64(m.MaxEntries), m.Name, m.Type)
				if m.MemlockBytes > 0 {
					gauge(ch, dMapMem, float64(m.MemlockBytes), m.Name, m.Type)
				}
				if m.Entries >= 0 {
					gauge(ch, dMapEntries, float64(m.Entries), m.Name, m.Type)
					if m.MaxEntries > 0 {
						gauge(ch, dMapFill, float64(m.Entries)/float64(m.MaxEntries), m.Name, m.Type)
					}
				}
			}
		}
	}
	if c.src.Interfaces != nil {
		seen := map[string]bool{}
		for _, i := range c.src.Interfaces() {
			if seen[i.Name] {
				continue
			}
			seen[i.Name] = true
			gauge(ch, dIfAttached, b2f(i.Mode != ""), i.Name, i.Mode)
			gauge(ch, dIfUp, b2f(i.Up), i.Name)
			counter(ch, dIfPackets, i.RxPackets, i.Name)
			for _, name := range sortedKeys(i.XDP) {
				if name == "bytes" {
					continue
				}
				counter(ch, dIfXDP, i.XDP[name], i.Name, name)
			}
			if i.XDP != nil {
				counter(ch, dIfXDPBytes, i.XDP["bytes"], i.Name)
			}
			counter(ch, dIfBytes, i.RxBytes, i.Name)
			counter(ch, dIfDropped, i.RxDropped, i.Name)
		}
	}
	if c.src.RingPending != nil {
		gauge(ch, dRingPending, float64(c.src.RingPending()))
	}
	if c.src.ReaderMalformed != nil {
		counter(ch, dMalformed, c.src.ReaderMalformed())
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *collector) collectIntake(ch chan<- prometheus.Metric) {
	if c.src.Intake == nil {
		return
	}
	// Sum listeners of the same transport so series stay unique.
	type agg struct {
		open                                  int64
		conns, msgs, bytes, accepted, rejects uint64
		dropped                               map[string]uint64
	}
	by := map[string]*agg{}
	for _, s := range c.src.Intake() {
		a := by[s.Transport]
		if a == nil {
			a = &agg{dropped: map[string]uint64{}}
			by[s.Transport] = a
		}
		a.open += s.ConnectionsOpen
		a.conns += s.ConnectionsTotal
		a.msgs += s.Received
		a.bytes += s.Bytes
		a.accepted += s.Accepted
		a.rejects += s.Rejected
		for r, v := range s.Dropped {
			a.dropped[r] += v
		}
	}
	for _, t := range sortedKeys(by) {
		a := by[t]
		gauge(ch, dInConnsOpen, float64(a.open), t)
		counter(ch, dInConns, a.conns, t)
		counter(ch, dInMessages, a.msgs, t)
		counter(ch, dInBytes, a.bytes, t)
		counter(ch, dInEvents, a.accepted, t, "accepted")
		counter(ch, dInEvents, a.rejects, t, "rejected")
		for _, r := range sortedKeys(a.dropped) {
			counter(ch, dInDropped, a.dropped[r], t, r)
		}
	}
}

func (c *collector) collectDecoder(ch chan<- prometheus.Metric) {
	if c.src.Decoder == nil {
		return
	}
	s := c.src.Decoder()
	for _, f := range winevents.Formats {
		fs := s.ByFormat[f]
		for _, o := range []struct {
			name string
			v    uint64
		}{{"read", fs.Read}, {"relevant", fs.Relevant}, {"skipped", fs.Skipped}, {"duplicate", fs.Duplicates},
			{"rejected", fs.Rejected}, {"emitted", fs.Emitted}} {
			counter(ch, dDecRecords, o.v, string(f), o.name)
		}
	}
	for _, r := range winevents.Reasons {
		counter(ch, dDecRejected, s.Rejected[r], string(r))
	}
	counter(ch, dDecEvicted, s.DedupeEvicted, "dedupe")
	counter(ch, dDecEvicted, s.HostsEvicted, "hosts")
	counter(ch, dDecEvicted, s.JoinEvicted, "join")
	counter(ch, dDecEvicted, s.PendingDropped, "pending")
	counter(ch, dDecEvicted, s.LongValuesDropped, "long_values")
	counter(ch, dDecJoins, s.Joins)
	counter(ch, dDecRedundant, s.Redundant)
	gauge(ch, dDecHosts, float64(s.Hosts))
}

func (c *collector) collectEngine(ch chan<- prometheus.Metric) {
	if c.src.Engine == nil {
		return
	}
	s := c.src.Engine()
	gauge(ch, dCorState, float64(s.Hosts), "hosts")
	gauge(ch, dCorState, float64(s.Pairs), "pairs")
	gauge(ch, dCorState, float64(s.Changes), "changes")
	gauge(ch, dCorState, float64(s.UnresolvedChanges), "unresolved_changes")
	gauge(ch, dCorState, float64(s.Handshakes), "handshakes")
	if !s.Watermark.IsZero() {
		gauge(ch, dCorWatermark, float64(s.Watermark.UnixNano())/1e9)
	}
	for _, kind := range []string{"knock", "handshake", "change"} {
		counter(ch, dCorEvidence, s.In[kind], kind, "in")
		counter(ch, dCorEvidence, s.Rejected[kind], kind, "rejected")
		counter(ch, dCorEvidence, s.Duplicates[kind], kind, "duplicate")
		counter(ch, dCorEvidence, s.Late[kind], kind, "late")
	}
	counter(ch, dCorEvidence, s.ChangesReplaced, "change", "replaced")
	counter(ch, dCorEvidence, s.ChangesUpdated, "change", "updated")
	counter(ch, dCorEvidence, s.ReplacedResent, "change", "replaced_resent")
	gauge(ch, dCorState, float64(s.ReplacedRecords), "replaced_records")
	ign := map[string]uint64{}
	for _, r := range []string{correlate.IgnoredOutbound, correlate.IgnoredBlock, correlate.IgnoredInactive,
		correlate.IgnoredNotTCP, correlate.IgnoredDeleted, correlate.IgnoredService, correlate.IgnoredKind} {
		ign[r] = 0
	}
	for k, v := range s.ChangesIgnored {
		ign[k] = v
	}
	for _, r := range sortedKeys(ign) {
		counter(ch, dCorIgnored, ign[r], r)
	}
	counter(ch, dCorUnres, s.ChangesUnresolved)
	for _, table := range []string{"pairs", "changes", "handshakes", "replaced_records"} {
		counter(ch, dCorCapHits, s.CapHits[table], table)
		counter(ch, dCorEvicted, s.Evicted[table], table)
	}
	for _, t := range sortedKeys(s.Expired) {
		counter(ch, dCorExpired, s.Expired[t], t)
	}
	counter(ch, dCorTouchDrop, s.TouchesDropped)
	counter(ch, dAlerts, s.AlertsHigh, "high")
	counter(ch, dAlerts, s.AlertsMedium, "medium")
	counter(ch, dUpgrades, s.Upgrades)
	counter(ch, dScans, s.Scans)
	counter(ch, dScanEvid, s.ScanEvidence)
	sup := map[string]uint64{"allowed_source": 0, "change_window": 0, "admin_actor": 0}
	for k, v := range s.Suppressed {
		sup[k] = v
	}
	for _, r := range sortedKeys(sup) {
		counter(ch, dSuppressed, sup[r], r)
	}
	na := map[string]uint64{"open_all_along": 0, "other_first": 0}
	for k, v := range s.NoAlert {
		na[k] = v
	}
	for _, r := range sortedKeys(na) {
		counter(ch, dNoAlert, na[r], r)
	}
}

func (c *collector) collectPipeline(ch chan<- prometheus.Metric) {
	if c.src.Pipeline == nil {
		return
	}
	s := c.src.Pipeline()
	for _, k := range sortedKeys(s.In) {
		counter(ch, dPipeIn, s.In[k], k)
	}
	for _, k := range sortedKeys(s.Rejected) {
		for _, r := range sortedKeys(s.Rejected[k]) {
			counter(ch, dPipeRejected, s.Rejected[k][r], k, r)
		}
	}
	for _, r := range sortedKeys(s.ChangesSkipped) {
		counter(ch, dPipeSkipped, s.ChangesSkipped[r], r)
	}
	counter(ch, dPipePayloads, s.Payloads, "handled")
	counter(ch, dPipePayloads, s.Unreadable, "unreadable")
	counter(ch, dPipePayloads, s.Busy, "busy")
	counter(ch, dPipeWaits, s.Waits)
	gauge(ch, dPipeQueued, float64(s.AlertsQueued))
	counter(ch, dPipeRecords, s.AlertsEmitted, "emitted")
	counter(ch, dPipeRecords, s.AlertsSuppressed, "suppressed")
	counter(ch, dPipeRecords, s.AlertsWritten, "written")
	counter(ch, dPipeRecords, s.AlertsUndelivered, "undelivered")
	counter(ch, dPipeRecords, s.MarshalErrors, "marshal_error")
	counter(ch, dPipeWErr, s.WriteErrors)
	counter(ch, dAlreadySent, s.AlertsAlreadySent)
	counter(ch, dNotStored, s.NotStored)
	gauge(ch, dUnstored, float64(s.Unstored))
	gauge(ch, dUnstoredB, float64(s.UnstoredBytes))
	counter(ch, dRestored, s.Restored)
	counter(ch, dUnstoredFull, s.UnstoredFull)
	counter(ch, dUnstoredDrop, s.UnstoredDropped)
}

func (c *collector) collectSinks(ch chan<- prometheus.Metric) {
	if c.src.Sinks == nil {
		return
	}
	seen := map[string]bool{}
	for _, s := range c.src.Sinks() {
		if s.Kind == "fanout" || seen[s.Name] {
			continue // the fan-out's counts repeat its sinks'
		}
		seen[s.Name] = true
		for _, o := range []struct {
			name string
			v    uint64
		}{{"written", s.Written}, {"delivered", s.Delivered}, {"invalid", s.Invalid}, {"refused", s.Refused},
			{"dead_lettered", s.DeadLettered}} {
			counter(ch, dSinkRecords, o.v, s.Name, s.Kind, o.name)
		}
		counter(ch, dSinkErrors, s.Errors, s.Name, s.Kind)
		if s.Kind == "webhook" {
			counter(ch, dSinkReqs, s.Requests-min(s.Retries, s.Requests), s.Name, s.Kind, "first")
			counter(ch, dSinkReqs, s.Retries, s.Name, s.Kind, "retry")
			gauge(ch, dSinkSpool, float64(s.SpoolDiskBytes), s.Name)
			gauge(ch, dSinkSpoolN, float64(s.SpooledRecords), s.Name)
			gauge(ch, dSinkSpoolC, float64(s.SpoolCapacityBytes), s.Name)
			counter(ch, dSinkCorrupt, s.CorruptFrames, s.Name)
		}
	}
}
