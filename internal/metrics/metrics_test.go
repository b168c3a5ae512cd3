package metrics

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/coverage"
	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/internal/binding"
	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/scaleout"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

func fakeSources() Sources {
	return Sources{
		BPFCounters: func() (map[string]uint64, error) {
			c := map[string]uint64{}
			for i, n := range sensor.CounterNames {
				c[n] = uint64(i)
			}
			c["touch_rej"], c["touch_s0"], c["flags"], c["handshakes"], c["ringbuf_full"] = 7, 2, 3, 1, 4
			return c, nil
		},
		BPFMaps: func() ([]MapFill, error) {
			return []MapFill{
				{Name: "candidates", Type: "lruhash", MaxEntries: 100, Entries: 25, MemlockBytes: 4096},
				{Name: "pair_slots", Type: "array", MaxEntries: 64, Entries: -1},
			}, nil
		},
		Interfaces: func() []Interface {
			return []Interface{{Name: "eth1", Mode: "native", Up: true, RxPackets: 10, RxBytes: 600,
				XDP: map[string]uint64{"packets": 10, "bytes": 600, "tcp": 9}}}
		},
		RingPending:     func() int { return 128 },
		ReaderMalformed: func() uint64 { return 0 },
		Intake: func() []intake.Stats {
			return []intake.Stats{
				{Transport: intake.TransportHTTP, Received: 3, Accepted: 5, Rejected: 1,
					Dropped: map[string]uint64{intake.ReasonUnauthorized: 2, intake.ReasonTooLarge: 0}},
				{Transport: intake.TransportHTTP, Received: 1, Dropped: map[string]uint64{intake.ReasonUnauthorized: 1}},
			}
		},
		Decoder: func() winevents.Stats {
			return winevents.Stats{ByFormat: map[winevents.Format]winevents.FormatStats{winevents.FormatXML: {Read: 9, Relevant: 2}},
				Rejected: map[winevents.Reason]uint64{winevents.ReasonMalformedXML: 1}}
		},
		Engine: func() correlate.Stats {
			return correlate.Stats{Pairs: 5, AlertsHigh: 2, AlertsMedium: 1, Watermark: time.Unix(1700000000, 0),
				Suppressed: map[string]uint64{correlate.ReasonAdminActor: 1}, In: map[string]uint64{"knock": 4},
				CapHits: map[string]uint64{"pairs": 1}, Expired: map[string]uint64{"pairs": 3}}
		},
		Pipeline: func() pipeline.Stats {
			return pipeline.Stats{In: map[string]uint64{"knock": 4}, ChangesSkipped: map[string]uint64{pipeline.SkipConnection: 2},
				Rejected: map[string]map[string]uint64{"change": {"no_host": 1}}, AlertsWritten: 3}
		},
		Sinks: func() []alert.Stats {
			return []alert.Stats{{Name: "fanout", Kind: "fanout", Written: 3}, {Name: "stdout", Kind: "writer", Written: 3, Delivered: 3},
				{Name: "webhook:siem", Kind: "webhook", Written: 3, Requests: 4, Retries: 1, SpoolCapacityBytes: 1 << 30,
					Backlog: 7, BacklogDropped: 2}}
		},
		Budget: func() intake.BudgetStats {
			return intake.BudgetStats{Capacity: 256 << 20, InUse: 1 << 20, Peak: 64 << 20, Waiting: 1, Waits: 3, Refused: 1}
		},
		Bindings: func() binding.Stats {
			return binding.Stats{Accepted: map[string]uint64{"branch": 5, binding.Unbound: 0},
				Refused: map[string]uint64{"branch": 2, binding.Unbound: 0}}
		},
		Evidence: func() evidence.Stats {
			return evidence.Stats{Bytes: 4096, CapacityBytes: 1 << 30, Segments: 2, Records: 40,
				Appended: map[string]uint64{"knock": 5, "handshake": 1, "change": 3}, Fsyncs: 7,
				Errors:   map[string]uint64{evidence.ReasonNoSpace: 2, evidence.ReasonIO: 1, evidence.ReasonUnsynced: 0},
				Unsynced: 6, UnsyncedBytes: 900, Cut: 1, Rewritten: 6,
				CorruptFrames: 1, CorruptBytes: 37, TornSegments: 1,
				RemovedSegments: map[string]uint64{evidence.ReasonAge: 3, evidence.ReasonSize: 0},
				RemovedRecords:  map[string]uint64{evidence.ReasonAge: 120, evidence.ReasonSize: 0},
				Rebuild:         evidence.ReplayStats{Read: 31, Replayed: 30, Expired: 1, Duration: 250 * time.Millisecond}}
		},
		Ledger: func() evidence.LedgerStats {
			return evidence.LedgerStats{Entries: 2, Bytes: 128, Errors: 1, Unsynced: 1, Dropped: 0}
		},
		KafkaProducer: func() scaleout.ProducerStats {
			return scaleout.ProducerStats{Produced: map[string]uint64{"knock": 2, "handshake": 1, "change": 4}, Acked: 7,
				Broadcast: 1, Busy: 3, BufferedBytes: 1024, MaxBytes: 64 << 20, OldestPending: time.Second, FlagsPublished: 2}
		},
		RemoteFlags: func() scaleout.RemoteFlagStats {
			return scaleout.RemoteFlagStats{Capacity: 16384, InUse: 12, Set: 14, Evicted: 2}
		},
		FlagSubscriber: func() scaleout.FlagSubscriberStats {
			return scaleout.FlagSubscriberStats{Received: 20, Applied: 14, Own: 5, Forged: 1}
		},
		Correlator: func() scaleout.CorrelatorStats {
			return scaleout.CorrelatorStats{Partitions: 4, ByKind: map[string]uint64{"knock": 2, "handshake": 1, "change": 4},
				Rebuilds: 4, RebuildRecords: 100, RebuildSeconds: 0.5, Commits: 9, Aborts: 1, High: 1, Pairs: 3}
		},
		Coverage: func() coverage.Stats {
			tr, err := coverage.New(coverage.DefaultConfig(), nil)
			if err != nil {
				panic(err)
			}
			tr.ObserveKnock(coverage.Knock{Dst: netip.MustParseAddr("10.0.0.5"), Unanswered: []time.Time{time.Unix(1700000000, 0)}})
			return tr.Stats()
		},
	}
}

// TestCoverageMetrics: the coverage aggregates exist from the first
// scrape with every state and outcome, bounded whatever the hosts.
func TestCoverageMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	if _, err := Register(reg, fakeSources()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "/" + l.GetValue()
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			got[key] = v
		}
	}
	for key, want := range map[string]float64{
		"knockwatch_coverage_hosts/unseen": 1, "knockwatch_coverage_hosts/network_blind": 0,
		"knockwatch_coverage_clock_samples_total/conflict": 0, "knockwatch_coverage_sample_requests_total/failed": 0,
		"knockwatch_coverage_sensor_path/idle": 1, "knockwatch_coverage_sensor_path/one_way": 0,
		"knockwatch_coverage_hosts_clock_measured": 0, "knockwatch_coverage_interfaces/one_way": 0,
	} {
		v, ok := got[key]
		if !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	n := 0
	for key := range got {
		if strings.HasPrefix(key, "knockwatch_coverage_hosts/") {
			n++
		}
	}
	if n != len(coverage.HostStates) {
		t.Errorf("%d host-state series, want %d", n, len(coverage.HostStates))
	}
}

// TestBoundMetrics: the hostile-peer bounds are exported with their
// labels, and engine eviction series exist at 0 before any eviction.
func TestBoundMetrics(t *testing.T) {
	src := fakeSources()
	src.Engine = func() correlate.Stats {
		return correlate.Stats{
			EvictedByReason:   map[string]map[string]uint64{"changes": {correlate.EvictChangeNoKnock: 9}},
			TopEvictedHosts:   []correlate.KeyCount{{Key: "ws99.corp.example", Count: 9}},
			TopEvictedOrigins: []correlate.KeyCount{{Key: "token:rogue@10.0.0.99", Count: 9}},
		}
	}
	reg := prometheus.NewPedanticRegistry()
	if _, err := Register(reg, src); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP knockwatch_correlate_top_evicted The hosts and forwarders whose correlation entries were evicted most (at most 16 of each; counts are upper bounds): under a flood, the offenders.
# TYPE knockwatch_correlate_top_evicted gauge
knockwatch_correlate_top_evicted{kind="forwarder",name="token:rogue@10.0.0.99"} 9
knockwatch_correlate_top_evicted{kind="host",name="ws99.corp.example"} 9
# HELP knockwatch_forwarder_records_total Windows event records by forwarder binding (listeners.forwarders, or unbound) and outcome (accepted, refused: the forwarder may not send for that host).
# TYPE knockwatch_forwarder_records_total counter
knockwatch_forwarder_records_total{forwarder="branch",outcome="accepted"} 5
knockwatch_forwarder_records_total{forwarder="branch",outcome="refused"} 2
knockwatch_forwarder_records_total{forwarder="unbound",outcome="accepted"} 0
knockwatch_forwarder_records_total{forwarder="unbound",outcome="refused"} 0
# HELP knockwatch_sink_backlog_records Alert records kept for a failing sink while a durable sink took them.
# TYPE knockwatch_sink_backlog_records gauge
knockwatch_sink_backlog_records{sink="stdout"} 0
knockwatch_sink_backlog_records{sink="webhook:siem"} 7
# HELP knockwatch_intake_memory_in_use_bytes Event bytes the listeners hold now under the intake memory budget.
# TYPE knockwatch_intake_memory_in_use_bytes gauge
knockwatch_intake_memory_in_use_bytes 1.048576e+06
`), "knockwatch_correlate_top_evicted", "knockwatch_forwarder_records_total", "knockwatch_sink_backlog_records",
		"knockwatch_intake_memory_in_use_bytes"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(newCollector(src), "knockwatch_correlate_evicted_by_reason_total"); n != 14 {
		t.Fatalf("evicted_by_reason has %d series, want 14 (every known reason at 0 or more)", n)
	}
}

func TestCollectorPedantic(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := Register(reg, fakeSources())
	if err != nil {
		t.Fatal(err)
	}
	m.ObserveLag(intake.TransportBeats, winevents.FormatECS, 3*time.Second)
	m.ObserveLag(intake.TransportBeats, winevents.FormatECS, -time.Second)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("pedantic gather: %v", err)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "knockwatch_") {
			t.Errorf("metric %s lacks the knockwatch_ prefix", mf.GetName())
		}
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	expect := `
# HELP knockwatch_alerts_total AN0842 alerts (unsuppressed handshakes that reached an alert), by confidence.
# TYPE knockwatch_alerts_total counter
knockwatch_alerts_total{confidence="high"} 2
knockwatch_alerts_total{confidence="medium"} 1
# HELP knockwatch_correlator_transactions_total Transactions (alerts and consumed offsets) by outcome (committed, aborted: read again and rebuilt).
# TYPE knockwatch_correlator_transactions_total counter
knockwatch_correlator_transactions_total{outcome="aborted"} 1
knockwatch_correlator_transactions_total{outcome="committed"} 9
# HELP knockwatch_remote_flags_total Other sensors' flags by outcome: set, updated, evicted (the table was full: the flag expiring first went), refused (the program's table would not take it), clamped (expiry cut to flag_ttl), expired (over on arrival).
# TYPE knockwatch_remote_flags_total counter
knockwatch_remote_flags_total{outcome="clamped"} 0
knockwatch_remote_flags_total{outcome="evicted"} 2
knockwatch_remote_flags_total{outcome="expired"} 0
knockwatch_remote_flags_total{outcome="refused"} 0
knockwatch_remote_flags_total{outcome="set"} 14
knockwatch_remote_flags_total{outcome="updated"} 0
# HELP knockwatch_closed_port_touches_total Closed-port touches: REJ (SYN answered by RST) and S0 (SYN never answered).
# TYPE knockwatch_closed_port_touches_total counter
knockwatch_closed_port_touches_total{kind="REJ"} 7
knockwatch_closed_port_touches_total{kind="S0"} 2
# HELP knockwatch_suppressed_total Matches covered by a suppression, by reason.
# TYPE knockwatch_suppressed_total counter
knockwatch_suppressed_total{reason="admin_actor"} 1
knockwatch_suppressed_total{reason="allowed_source"} 0
knockwatch_suppressed_total{reason="change_window"} 0
# HELP knockwatch_bpf_map_fill_ratio Entries divided by capacity of a BPF map (hash, LRU and LPM maps).
# TYPE knockwatch_bpf_map_fill_ratio gauge
knockwatch_bpf_map_fill_ratio{map="candidates",type="lruhash"} 0.25
# HELP knockwatch_events_dropped_total Messages a transport refused or lost, by reason (unauthorized, too_large, busy, ...).
# TYPE knockwatch_events_dropped_total counter
knockwatch_events_dropped_total{reason="too_large",transport="http"} 0
knockwatch_events_dropped_total{reason="unauthorized",transport="http"} 3
# HELP knockwatch_event_lag_seconds Arrival time minus event time of exposure changes from forwarded Windows events (negative: the host clock is ahead).
# TYPE knockwatch_event_lag_seconds histogram
knockwatch_event_lag_seconds_bucket{format="winlogbeat_ecs",transport="beats",le="0.25"} 1
knockwatch_event_lag_seconds_bucket{format="winlogbeat_ecs",transport="beats",le="0.5"} 1
knockwatch_event_lag_seconds_bucket{format="winlogbeat_ecs",transport="beats",le="1"} 1
knockwatch_event_lag_seconds_bucket{format="winlogbeat_ecs",transport="beats",le="2"} 1
knockwatch_event_lag_seconds_bucket{format="winlogbeat_ecs",transport="beats",le="5"} 2
knockwatch_event_lag_seconds_bucket{format="winlogbeat_ecs",transport="beats",le="10"} 2
knockwatch_event_lag_seconds_bucket{format="winlogbeat_ecs",transport="beats",le="30"} 2
knockwatch_event_lag_seconds_bucket{format="winlogbeat_ecs",transport="beats",le="60"} 2
knockwatch_event_lag_seconds_bucket{format="winlogbeat_ecs",transport="beats",le="120"} 2
knockwatch_event_lag_seconds_bucket{format="winlogbeat_ecs",transport="beats",le="300"} 2
knockwatch_event_lag_seconds_bucket{format="winlogbeat_ecs",transport="beats",le="600"} 2
knockwatch_event_lag_seconds_bucket{format="winlogbeat_ecs",transport="beats",le="900"} 2
knockwatch_event_lag_seconds_bucket{format="winlogbeat_ecs",transport="beats",le="1800"} 2
knockwatch_event_lag_seconds_bucket{format="winlogbeat_ecs",transport="beats",le="3600"} 2
knockwatch_event_lag_seconds_bucket{format="winlogbeat_ecs",transport="beats",le="+Inf"} 2
knockwatch_event_lag_seconds_sum{format="winlogbeat_ecs",transport="beats"} 2
knockwatch_event_lag_seconds_count{format="winlogbeat_ecs",transport="beats"} 2
# HELP knockwatch_sink_records_total Alert records per sink and outcome (written, delivered, invalid, refused, dead_lettered).
# TYPE knockwatch_sink_records_total counter
knockwatch_sink_records_total{kind="webhook",outcome="dead_lettered",sink="webhook:siem"} 0
knockwatch_sink_records_total{kind="webhook",outcome="delivered",sink="webhook:siem"} 0
knockwatch_sink_records_total{kind="webhook",outcome="invalid",sink="webhook:siem"} 0
knockwatch_sink_records_total{kind="webhook",outcome="refused",sink="webhook:siem"} 0
knockwatch_sink_records_total{kind="webhook",outcome="written",sink="webhook:siem"} 3
knockwatch_sink_records_total{kind="writer",outcome="dead_lettered",sink="stdout"} 0
knockwatch_sink_records_total{kind="writer",outcome="delivered",sink="stdout"} 3
knockwatch_sink_records_total{kind="writer",outcome="invalid",sink="stdout"} 0
knockwatch_sink_records_total{kind="writer",outcome="refused",sink="stdout"} 0
knockwatch_sink_records_total{kind="writer",outcome="written",sink="stdout"} 3
`
	expect += `
# HELP knockwatch_evidence_log_errors_total Failed appends and fsyncs of the evidence log, by reason (no_space, io, unsynced_full: refused while the appends waiting for a good fsync were at their bound): that evidence was evaluated but not yet durable, and not acknowledged.
# TYPE knockwatch_evidence_log_errors_total counter
knockwatch_evidence_log_errors_total{reason="io"} 1
knockwatch_evidence_log_errors_total{reason="no_space"} 2
knockwatch_evidence_log_errors_total{reason="unsynced_full"} 0
# HELP knockwatch_evidence_log_unsynced Evidence records appended since the evidence log's last good fsync, kept in memory to write again after a failed write or fsync.
# TYPE knockwatch_evidence_log_unsynced gauge
knockwatch_evidence_log_unsynced 6
# HELP knockwatch_evidence_log_rewritten_total Evidence records written again to a new segment after a failed write or fsync.
# TYPE knockwatch_evidence_log_rewritten_total counter
knockwatch_evidence_log_rewritten_total 6
# HELP knockwatch_alert_ledger_unsynced Alert ledger marks no good fsync covered yet, kept in memory to write again.
# TYPE knockwatch_alert_ledger_unsynced gauge
knockwatch_alert_ledger_unsynced 1
# HELP knockwatch_evidence_log_segments Segment files of the evidence log.
# TYPE knockwatch_evidence_log_segments gauge
knockwatch_evidence_log_segments 2
# HELP knockwatch_evidence_log_bytes Bytes of the evidence log on disk.
# TYPE knockwatch_evidence_log_bytes gauge
knockwatch_evidence_log_bytes 4096
# HELP knockwatch_evidence_rebuild_seconds How long the start-up rebuild of the engine from the evidence log took.
# TYPE knockwatch_evidence_rebuild_seconds gauge
knockwatch_evidence_rebuild_seconds 0.25
# HELP knockwatch_evidence_rebuild_records Records read at the start-up rebuild, by outcome (replayed into the engine, expired: older than retention, undecodable).
# TYPE knockwatch_evidence_rebuild_records gauge
knockwatch_evidence_rebuild_records{outcome="expired"} 1
knockwatch_evidence_rebuild_records{outcome="replayed"} 30
knockwatch_evidence_rebuild_records{outcome="undecodable"} 0
# HELP knockwatch_evidence_log_corrupt_frames_total Torn or damaged evidence log frames skipped (a torn last record after a crash or power cut counts here).
# TYPE knockwatch_evidence_log_corrupt_frames_total counter
knockwatch_evidence_log_corrupt_frames_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expect), "knockwatch_alerts_total", "knockwatch_correlator_transactions_total", "knockwatch_remote_flags_total",
		"knockwatch_closed_port_touches_total", "knockwatch_suppressed_total", "knockwatch_bpf_map_fill_ratio",
		"knockwatch_events_dropped_total", "knockwatch_event_lag_seconds", "knockwatch_sink_records_total",
		"knockwatch_evidence_log_errors_total", "knockwatch_evidence_log_segments", "knockwatch_evidence_log_bytes",
		"knockwatch_evidence_log_unsynced", "knockwatch_evidence_log_rewritten_total", "knockwatch_alert_ledger_unsynced",
		"knockwatch_evidence_rebuild_seconds", "knockwatch_evidence_rebuild_records", "knockwatch_evidence_log_corrupt_frames_total"); err != nil {
		t.Fatal(err)
	}
	// Every counter but bytes (a unit: knockwatch_xdp_bytes_total).
	if n := testutil.CollectAndCount(newCollector(fakeSources()), "knockwatch_xdp_events_total"); n != len(sensor.CounterNames)-1 {
		t.Fatalf("xdp_events_total has %d series, want %d", n, len(sensor.CounterNames)-1)
	}
	if err := testutil.CollectAndCompare(newCollector(fakeSources()), strings.NewReader(`
# HELP knockwatch_xdp_bytes_total Bytes the XDP program saw on all attached interfaces.
# TYPE knockwatch_xdp_bytes_total counter
knockwatch_xdp_bytes_total 1
`), "knockwatch_xdp_bytes_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(newCollector(fakeSources()), "knockwatch_xdp_interface_bytes_total"); n != 1 {
		t.Fatalf("xdp_interface_bytes_total has %d series", n)
	}
}

// TestMissingSources: a part that is not running gives no metrics and no
// error; a failing BPF read says so in bpf_counters_up.
func TestMissingSources(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	src := Sources{BPFCounters: func() (map[string]uint64, error) { return nil, errFake }}
	if _, err := Register(reg, src); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP knockwatch_bpf_counters_up 1 when the BPF counters could be read at this scrape.
# TYPE knockwatch_bpf_counters_up gauge
knockwatch_bpf_counters_up 0
`)); err != nil {
		t.Fatal(err)
	}
}

type fakeErr struct{}

func (fakeErr) Error() string { return "fake" }

var errFake = fakeErr{}
