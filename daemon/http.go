//go:build linux

package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/coverage"
	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/internal/binding"
	"github.com/knockwatch/knockwatch/internal/config"
	"github.com/knockwatch/knockwatch/internal/metrics"
	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

var errNoSensor = errors.New("sensor not loaded")

// metricSources reads the parts at scrape time; parts not (yet) running
// report nothing.
func (d *Daemon) metricSources() metrics.Sources {
	src := d.baseSources()
	if d.cfg.Distributed() {
		// No evidence log or ledger on disk; the store-only pipeline's
		// engine and sinks are idle (the correlators evaluate).
		src.Evidence, src.Ledger, src.Engine, src.Sinks = nil, nil, nil, nil
		// Coverage is measured by the all-in-one box only
		// (docs/COVERAGE.md, "Scale-out").
		src.Coverage = nil
		if !d.cfg.Runs(config.RoleSensor) && !d.cfg.Runs(config.RoleIntake) {
			src.Pipeline = nil
		}
		if !d.cfg.Runs(config.RoleIntake) {
			src.Budget, src.Bindings, src.Decoder = nil, nil, nil
		}
		if !d.cfg.Runs(config.RoleSensor) {
			src.BPFCounters, src.BPFMaps, src.Interfaces, src.RingPending, src.ReaderMalformed = nil, nil, nil, nil, nil
		}
		d.scaleOutSources(&src)
		if d.cfg.Runs(config.RoleCorrelator) {
			src.Sinks = func() []alert.Stats { return alert.StatsOf(d.writer) }
		}
	}
	return src
}

// baseSources are the all-in-one box's parts.
func (d *Daemon) baseSources() metrics.Sources {
	return metrics.Sources{
		BPFCounters: func() (map[string]uint64, error) {
			if s := d.sensor.Load(); s != nil && !d.stopping.Load() {
				return s.Counters()
			}
			return nil, errNoSensor
		},
		BPFMaps: func() ([]metrics.MapFill, error) {
			if s := d.sensor.Load(); s != nil && !d.stopping.Load() {
				return s.MapFills()
			}
			return nil, errNoSensor
		},
		Interfaces: func() []sensor.InterfaceStats {
			if ifs := d.ifaces.Load(); ifs != nil && !d.stopping.Load() {
				return ifs.Stats()
			}
			return nil
		},
		RingPending: func() int {
			if rd := d.reader.Load(); rd != nil && !d.stopping.Load() {
				return rd.Pending()
			}
			return 0
		},
		ReaderMalformed: func() uint64 {
			if rd := d.reader.Load(); rd != nil {
				return rd.Malformed()
			}
			return 0
		},
		Intake:   d.intakeStats,
		Decoder:  func() winevents.Stats { return d.pipe.Decoder().Stats() },
		Engine:   func() correlate.Stats { return d.pipe.Engine().Stats() },
		Pipeline: func() pipeline.Stats { return d.pipe.Stats() },
		Sinks:    func() []alert.Stats { return alert.StatsOf(d.pipe.Sink()) },
		Budget:   func() intake.BudgetStats { return d.budget.Stats() },
		Bindings: func() binding.Stats { return d.bindings.Stats() },
		Evidence: func() evidence.Stats { return d.evlog.Stats() },
		Ledger:   func() evidence.LedgerStats { return d.ledger.Stats() },
		Coverage: func() coverage.Stats {
			if d.pipe != nil {
				if cov := d.pipe.Coverage(); cov != nil {
					return cov.Stats()
				}
			}
			return coverage.Stats{}
		},
	}
}

// registerProcessMetrics adds the Go runtime and process metrics (RSS,
// file descriptors) under the knockwatch_ prefix.
func registerProcessMetrics(reg prometheus.Registerer) {
	wrapped := prometheus.WrapRegistererWithPrefix(metrics.Namespace+"_", reg)
	wrapped.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// startMetricsServer serves /metrics, /healthz and /readyz on --metrics.
func (d *Daemon) startMetricsServer() error {
	addr := d.cfg.Metrics.Addr
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return listenErr("--metrics", addr, err)
	}
	log := d.log.Named("metrics")
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{
		ErrorLog: zap.NewStdLog(log), ErrorHandling: promhttp.ContinueOnError, Registry: d.reg,
	}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-d.done:
			http.Error(w, "failed\n", http.StatusServiceUnavailable)
		default:
			_, _ = io.WriteString(w, "ok\n")
		}
	})
	mux.HandleFunc("/v1/coverage", d.serveCoverage)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if why := d.notReady(); why != "" {
			http.Error(w, "not ready: "+why+"\n", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	d.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(log)}
	go func() {
		if err := d.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.fail(fmt.Errorf("metrics server: %w", err))
		}
	}()
	d.metricsAddr = ln.Addr().String()
	log.Info("serving /metrics, /healthz, /readyz", zap.Stringer(fieldAddr, ln.Addr()))
	return nil
}

// notReady says why the sensor is not ready, or "".
func (d *Daemon) notReady() string {
	if !d.ready.Load() {
		if d.stopping.Load() {
			return "shutting down"
		}
		return "starting"
	}
	if ifs := d.ifaces.Load(); ifs != nil {
		if ok, ifn := ifs.Ready(); !ok {
			return "XDP program not attached to " + ifn
		}
	}
	return ""
}

// serveCoverage is GET /v1/coverage: the coverage report as JSON
// (coverage.Report; docs/COVERAGE.md).
func (d *Daemon) serveCoverage(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed\n", http.StatusMethodNotAllowed)
		return
	}
	var cov *coverage.Tracker
	if d.pipe != nil {
		cov = d.pipe.Coverage()
	}
	if cov == nil && d.cfg.Distributed() {
		http.Error(w, "coverage is not measured in a scale-out role (docs/COVERAGE.md, \"Scale-out\")\n", http.StatusNotFound)
		return
	}
	if cov == nil {
		http.Error(w, "coverage is off (coverage.enabled: false)\n", http.StatusNotFound)
		return
	}
	b, err := json.MarshalIndent(cov.Report(false), "", "  ")
	if err != nil {
		http.Error(w, "render coverage: "+err.Error()+"\n", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(append(b, '\n'))
}
