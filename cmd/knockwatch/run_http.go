//go:build linux

package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/internal/metrics"
	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/winevents"
)

// metricSources reads the parts at scrape time; parts not (yet) running
// report nothing.
func (r *runState) metricSources() metrics.Sources {
	return metrics.Sources{
		BPFCounters: func() (map[string]uint64, error) {
			r.sensorMu.Lock()
			defer r.sensorMu.Unlock()
			if r.sensor == nil || r.stopping.Load() {
				return nil, errors.New("sensor not loaded")
			}
			return r.sensor.Counters()
		},
		BPFMaps: func() ([]metrics.MapFill, error) {
			r.sensorMu.Lock()
			defer r.sensorMu.Unlock()
			if r.sensor == nil || r.stopping.Load() {
				return nil, errors.New("sensor not loaded")
			}
			return r.sensor.MapFills()
		},
		Interfaces: r.interfaceStats,
		RingPending: func() int {
			r.sensorMu.Lock()
			defer r.sensorMu.Unlock()
			if r.reader == nil || r.stopping.Load() {
				return 0
			}
			return r.reader.Pending()
		},
		ReaderMalformed: func() uint64 {
			r.sensorMu.Lock()
			defer r.sensorMu.Unlock()
			if r.reader == nil {
				return 0
			}
			return r.reader.Malformed()
		},
		Intake:   r.intakeStats,
		Decoder:  func() winevents.Stats { return r.pipe.Decoder().Stats() },
		Engine:   func() correlate.Stats { return r.pipe.Engine().Stats() },
		Pipeline: func() pipeline.Stats { return r.pipe.Stats() },
		Sinks:    func() []alert.Stats { return alert.StatsOf(r.pipe.Sink()) },
	}
}

// runRegisterProcessMetrics adds the Go runtime and process metrics (RSS,
// file descriptors) under the knockwatch_ prefix.
func runRegisterProcessMetrics(reg prometheus.Registerer) {
	wrapped := prometheus.WrapRegistererWithPrefix(metrics.Namespace+"_", reg)
	wrapped.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// startMetricsServer serves /metrics, /healthz and /readyz on --metrics.
func (r *runState) startMetricsServer() error {
	addr := r.cfg.Metrics.Addr
	if addr == "" {
		return nil
	}
	ln, err := runListenTCP("--metrics", addr)
	if err != nil {
		return err
	}
	log := r.log.Named("metrics")
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{
		ErrorLog: zap.NewStdLog(log), ErrorHandling: promhttp.ContinueOnError, Registry: r.reg,
	}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-r.fatal:
			http.Error(w, "failed\n", http.StatusServiceUnavailable)
		default:
			_, _ = io.WriteString(w, "ok\n")
		}
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if why := r.notReady(); why != "" {
			http.Error(w, "not ready: "+why+"\n", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	r.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(log)}
	go func() {
		if err := r.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.fail(fmt.Errorf("metrics server: %w", err))
		}
	}()
	r.metricsAddr = ln.Addr().String()
	log.Info("serving /metrics, /healthz, /readyz", zap.Stringer(fAddr, ln.Addr()))
	return nil
}

// notReady says why the sensor is not ready, or "".
func (r *runState) notReady() string {
	if !r.ready.Load() {
		if r.stopping.Load() {
			return "shutting down"
		}
		return "starting"
	}
	if ok, ifn := r.allAttached(); !ok {
		return "XDP program not attached to " + ifn
	}
	return ""
}

func runReadSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 1<<20))
}
