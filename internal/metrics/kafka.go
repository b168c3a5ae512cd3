package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/knockwatch/knockwatch/evidence"
)

// The scale-out parts (docs/SCALE-OUT.md): the Kafka producer of evidence
// and flags, the table of other sensors' flags, the flag subscriber and
// the correlator.
var (
	dKProduced   = desc("kafka_evidence_records_total", "Evidence records produced to the evidence topic, by kind (a change counts once per address it resolves to, or per partition when it resolves to none).", "kind")
	dKProduce    = desc("kafka_produce_total", "Evidence records by broker outcome (acked: acks=all; failed).", "outcome")
	dKBroadcast  = desc("kafka_changes_broadcast_total", "Exposure changes sent to every partition because their host resolved to no address (not in the events, not in --hosts).")
	dKRefused    = desc("kafka_refused_total", "Evidence refused because the brokers are behind, by reason (busy: evidence waited kafka.busy_after; buffer_full: kafka.max_buffered_bytes reached).", "reason")
	dKSyncFail   = desc("kafka_sync_failures_total", "Waits for the brokers' acknowledgement that failed or timed out (the listener did not acknowledge; the sender retries).")
	dKBuffered   = desc("kafka_buffered_bytes", "Bytes of records waiting for the brokers.")
	dKBufferCap  = desc("kafka_buffer_capacity_bytes", "The bound of bytes waiting for the brokers (kafka.max_buffered_bytes).")
	dKOldest     = desc("kafka_oldest_pending_seconds", "How long the oldest evidence not yet acknowledged by the brokers has waited.")
	dKFlagsPub   = desc("kafka_flags_published_total", "Flags published to the flags topic, by outcome (acked, failed).", "outcome")
	dRFInUse     = desc("remote_flags_in_use", "Entries of the XDP program's table of other sensors' flags in use.")
	dRFCap       = desc("remote_flags_capacity", "Size of the XDP program's table of other sensors' flags (sensor.remote_flags).")
	dRFTotal     = desc("remote_flags_total", "Other sensors' flags by outcome: set, updated, evicted (the table was full: the flag expiring first went), refused (the program's table would not take it), clamped (expiry cut to flag_ttl), expired (over on arrival).", "outcome")
	dFlagRecords = desc("kafka_flag_records_total", "Records read from the flags topic, by outcome (applied, own, forged: no valid record MAC, malformed, ignored).", "outcome")
	dCorrParts   = desc("correlator_partitions", "Partitions of the evidence topic this correlator holds an engine for.")
	dCorrRecords = desc("correlator_records_total", "Evidence records the correlator read live, by kind.", "kind")
	dCorrRefused = desc("correlator_refused_total", "Evidence records refused, by reason (forged: no valid record MAC; malformed; invalid: the engine refused it).", "reason")
	dCorrRebuild = desc("correlator_rebuild_total", "Partition rebuilds and what they read: partitions, records, alerts (recomputed, not sent again), stalls (history unreadable).", "what")
	dCorrRebSec  = desc("correlator_rebuild_seconds_total", "Time spent rebuilding partitions from their history.")
	dCorrTxn     = desc("correlator_transactions_total", "Transactions (alerts and consumed offsets) by outcome (committed, aborted: read again and rebuilt).", "outcome")
	dCorrAlerts  = desc("correlator_alerts_total", "Alert records committed to the alert topic, by confidence (high, medium) and upgrades.", "confidence")
	dCorrState   = desc("correlator_state_entries", "The partition engines' state, summed, by table (pairs, changes, handshakes).", "table")
)

var kafkaDescs = []*prometheus.Desc{dKProduced, dKProduce, dKBroadcast, dKRefused, dKSyncFail, dKBuffered, dKBufferCap,
	dKOldest, dKFlagsPub, dRFInUse, dRFCap, dRFTotal, dFlagRecords, dCorrParts, dCorrRecords, dCorrRefused, dCorrRebuild,
	dCorrRebSec, dCorrTxn, dCorrAlerts, dCorrState}

func (c *collector) collectKafka(ch chan<- prometheus.Metric) {
	if c.src.KafkaProducer != nil {
		s := c.src.KafkaProducer()
		for _, k := range evidence.Kinds {
			counter(ch, dKProduced, s.Produced[k.String()], k.String())
		}
		counter(ch, dKProduce, s.Acked, "acked")
		counter(ch, dKProduce, s.Failed, "failed")
		counter(ch, dKBroadcast, s.Broadcast)
		counter(ch, dKRefused, s.Busy, "busy")
		counter(ch, dKRefused, s.Full, "buffer_full")
		counter(ch, dKSyncFail, s.SyncFailures)
		gauge(ch, dKBuffered, float64(s.BufferedBytes))
		gauge(ch, dKBufferCap, float64(s.MaxBytes))
		gauge(ch, dKOldest, s.OldestPending.Seconds())
		counter(ch, dKFlagsPub, s.FlagsPublished, "acked")
		counter(ch, dKFlagsPub, s.FlagsFailed, "failed")
	}
	if c.src.RemoteFlags != nil {
		s := c.src.RemoteFlags()
		gauge(ch, dRFInUse, float64(s.InUse))
		gauge(ch, dRFCap, float64(s.Capacity))
		for _, o := range []struct {
			n string
			v uint64
		}{{"set", s.Set}, {"updated", s.Updated}, {"evicted", s.Evicted}, {"refused", s.Refused}, {"clamped", s.Clamped}, {"expired", s.Expired}} {
			counter(ch, dRFTotal, o.v, o.n)
		}
	}
	if c.src.FlagSubscriber != nil {
		s := c.src.FlagSubscriber()
		ignored := s.Received - min(s.Received, s.Applied+s.Own+s.Forged+s.Malformed)
		for _, o := range []struct {
			n string
			v uint64
		}{{"applied", s.Applied}, {"own", s.Own}, {"forged", s.Forged}, {"malformed", s.Malformed}, {"ignored", ignored}} {
			counter(ch, dFlagRecords, o.v, o.n)
		}
	}
	if c.src.Correlator != nil {
		s := c.src.Correlator()
		gauge(ch, dCorrParts, float64(s.Partitions))
		for _, k := range evidence.Kinds {
			counter(ch, dCorrRecords, s.ByKind[k.String()], k.String())
		}
		counter(ch, dCorrRefused, s.Forged, "forged")
		counter(ch, dCorrRefused, s.Malformed, "malformed")
		counter(ch, dCorrRefused, s.Rejected, "invalid")
		counter(ch, dCorrRebuild, s.Rebuilds, "partitions")
		counter(ch, dCorrRebuild, s.RebuildRecords, "records")
		counter(ch, dCorrRebuild, s.RebuildAlerts, "alerts")
		counter(ch, dCorrRebuild, s.RebuildStalls, "stalls")
		ch <- prometheus.MustNewConstMetric(dCorrRebSec, prometheus.CounterValue, s.RebuildSeconds)
		counter(ch, dCorrTxn, s.Commits, "committed")
		counter(ch, dCorrTxn, s.Aborts, "aborted")
		counter(ch, dCorrAlerts, s.High, "high")
		counter(ch, dCorrAlerts, s.Medium, "medium")
		counter(ch, dCorrAlerts, s.Upgrades, "upgraded")
		gauge(ch, dCorrState, float64(s.Pairs), "pairs")
		gauge(ch, dCorrState, float64(s.Changes), "changes")
		gauge(ch, dCorrState, float64(s.Handshakes), "handshakes")
	}
}
