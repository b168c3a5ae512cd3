// Package metrics exports knockwatch's counters to Prometheus. Every part
// keeps plain counters (the XDP program's per-CPU array, Stats() snapshots
// of the listeners, decoder, engine, pipeline and sinks); this package reads
// them at scrape time through one Collector, so nothing is copied on the hot
// paths, and adds the one value only it keeps: the event-lag histogram.
// All metrics are prefixed knockwatch_ and registered on the registry the
// caller passes in (never the default registry).
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

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

// Namespace prefixes every metric name.
const Namespace = "knockwatch"

// Interface is the kernel's receive counters of one capture interface and
// how the program is attached to it (read by loader.Interfaces.Stats).
type Interface = sensor.InterfaceStats

// MapFill is one BPF map's size and use (read by loader.Sensor.MapFills).
type MapFill = sensor.MapFill

// Sources are the snapshot functions read at scrape time. Any may be nil
// (that part is not running: no metrics for it).
type Sources struct {
	BPFCounters func() (map[string]uint64, error)
	BPFMaps     func() ([]MapFill, error)
	Interfaces  func() []Interface
	// RingPending is the bytes of records waiting in the ring buffer;
	// ReaderMalformed the records that did not decode.
	RingPending     func() int
	ReaderMalformed func() uint64
	Intake          func() []intake.Stats
	Decoder         func() winevents.Stats
	Engine          func() correlate.Stats
	Pipeline        func() pipeline.Stats
	Sinks           func() []alert.Stats
	// Budget is the intake memory budget; Bindings the forwarder bindings.
	Budget   func() intake.BudgetStats
	Bindings func() binding.Stats
	// Evidence is the evidence log; Ledger the ledger of delivered alerts.
	Evidence func() evidence.Stats
	Ledger   func() evidence.LedgerStats
	// The scale-out parts (kafka.brokers set): the producer of evidence
	// and flags, the table of other sensors' flags, the flag subscriber,
	// the correlator.
	KafkaProducer  func() scaleout.ProducerStats
	RemoteFlags    func() scaleout.RemoteFlagStats
	FlagSubscriber func() scaleout.FlagSubscriberStats
	Correlator     func() scaleout.CorrelatorStats
	// Coverage is the coverage tracker (host clocks, blind spots).
	Coverage func() coverage.Stats
}

// LagBuckets are the event-lag histogram's buckets in seconds: forwarding
// delays run from sub-second (syslog) through Windows Event Forwarding's
// batching (up to 15 min) to far beyond it.
var LagBuckets = []float64{0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600}

// Metrics are the registered metrics.
type Metrics struct {
	lag *prometheus.HistogramVec
}

// Register registers the scrape-time collector for src and the event-lag
// histogram on reg.
func Register(reg prometheus.Registerer, src Sources) (*Metrics, error) {
	m := &Metrics{
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace,
			Name:      "event_lag_seconds",
			Help:      "Arrival time minus event time of exposure changes from forwarded Windows events (negative: the host clock is ahead).",
			Buckets:   LagBuckets,
		}, []string{"transport", "format"}),
	}
	if err := reg.Register(m.lag); err != nil {
		return nil, err
	}
	if err := reg.Register(newCollector(src)); err != nil {
		return nil, err
	}
	return m, nil
}

// ObserveLag records one change's lag; it matches pipeline.Config.ObserveLag.
func (m *Metrics) ObserveLag(transport string, format winevents.Format, lag time.Duration) {
	m.lag.WithLabelValues(transport, string(format)).Observe(lag.Seconds())
}
