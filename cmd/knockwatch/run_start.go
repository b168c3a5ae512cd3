//go:build linux

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/internal/config"
	"github.com/knockwatch/knockwatch/internal/metrics"
	"github.com/knockwatch/knockwatch/loader"
	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// runState owns everything `knockwatch run` starts, in start order, and
// stops it in the reverse order that loses nothing: detach first (so no
// program stays attached), then the listeners, then the pipeline's flush.
type runState struct {
	cfg        config.Config
	args       []string
	configFile string
	log        *zap.Logger
	stdout     io.Writer

	writer    *alert.Writer
	pipe      *pipeline.Pipeline
	listeners []intake.Listener
	files     *intake.FileFollower
	reg       *prometheus.Registry
	httpSrv   *http.Server
	// metricsAddr is the metrics server's bound address.
	metricsAddr string

	sensor   *loader.Sensor
	reader   *loader.Reader
	sensorMu sync.Mutex // loader.Sensor's Attach/Detach are not concurrent-safe
	attached map[string]runAttachment
	mode     sensor.Mode

	loopCancel context.CancelFunc
	loops      sync.WaitGroup
	ready      atomic.Bool
	started    atomic.Bool // ready was reached once
	stopping   atomic.Bool
	fatal      chan struct{}
	fatalOnce  sync.Once
	fatalErr   error
	stopOnce   sync.Once
	stopErr    error
}

type runAttachment struct {
	mode  sensor.Mode
	index int
}

// fail ends the run with err (a part died after startup).
func (r *runState) fail(err error) {
	r.fatalOnce.Do(func() {
		r.fatalErr = err
		close(r.fatal)
	})
}

func (r *runState) start(ctx context.Context) error {
	r.fatal = make(chan struct{})
	r.attached = map[string]runAttachment{}
	if err := runCheckPrivileges(); err != nil {
		return err
	}
	if err := r.startEventSide(); err != nil {
		return err
	}
	if err := r.startSensor(ctx); err != nil {
		return err
	}
	r.ready.Store(true)
	r.started.Store(true)
	return nil
}

// startEventSide starts everything but the sensor: credentials, inventory,
// sinks, metrics registry, pipeline, listeners and the metrics server.
func (r *runState) startEventSide() error {
	if r.fatal == nil {
		r.fatal = make(chan struct{})
		r.attached = map[string]runAttachment{}
	}
	cfg := &r.cfg
	mode, _ := sensor.ParseMode(cfg.XDPMode)
	r.mode = mode

	// Files first: a missing token, certificate or inventory is a clear
	// error before anything binds or touches the kernel.
	var token string
	if cfg.Listeners.TokenFile != "" {
		t, err := intake.ReadTokenFile(cfg.Listeners.TokenFile)
		if err != nil {
			return fmt.Errorf("read --token-file: %w", err)
		}
		token = t
	}
	var tlsCfg *tls.Config
	if cfg.Listeners.TLSCert != "" {
		t, err := intake.ServerTLSConfig(cfg.Listeners.TLSCert, cfg.Listeners.TLSKey, cfg.Listeners.ClientCA)
		if err != nil {
			return fmt.Errorf("load listener TLS (--tls-cert/--tls-key/--client-ca): %w", err)
		}
		tlsCfg = t
	}
	var engineOpts []correlate.Option
	if cfg.Hosts != "" {
		h, err := correlate.ReadHostsFile(cfg.Hosts)
		if err != nil {
			return fmt.Errorf("read --hosts: %w", err)
		}
		engineOpts = append(engineOpts, correlate.WithInventory(h))
		r.log.Named("run").Info("inventory loaded", zap.String(fPath, cfg.Hosts), zap.Int(fHosts, h.Len()))
	}

	sink, err := r.openSinks()
	if err != nil {
		return err
	}
	r.reg = prometheus.NewRegistry()
	m, err := metrics.Register(r.reg, r.metricSources())
	if err != nil {
		_ = sink.Close()
		return fmt.Errorf("register metrics: %w", err)
	}
	runRegisterProcessMetrics(r.reg)

	ec, err := cfg.EngineConfig()
	if err != nil {
		_ = sink.Close()
		return err
	}
	dopts, err := cfg.DecoderOptions()
	if err != nil {
		_ = sink.Close()
		return err
	}
	r.pipe, err = pipeline.New(pipeline.Config{
		Engine: ec, EngineOptions: engineOpts, DecoderOptions: dopts,
		BatchSize: cfg.Pipeline.BatchSize, FlushInterval: cfg.Pipeline.FlushInterval, MaxQueued: cfg.Pipeline.MaxQueued,
		CloseTimeout: cfg.ShutdownTimeout, ObserveLag: m.ObserveLag,
	}, sink, r.log)
	if err != nil {
		_ = sink.Close()
		return fmt.Errorf("start correlation: %w", err)
	}

	if err := r.startListeners(token, tlsCfg); err != nil {
		return err
	}
	return r.startMetricsServer()
}

// openSinks opens the alert file (or stdout) and the webhook.
func (r *runState) openSinks() (alert.Sink, error) {
	a := r.cfg.Alerts
	pretty := a.Pretty == "true" || (a.Pretty == "auto" && a.Path == alert.StdoutPath && runIsTTY(r.stdout))
	var w *alert.Writer
	var err error
	if a.Path == alert.StdoutPath {
		w = alert.NewStreamWriter(r.stdout, "stdout", pretty)
	} else if w, err = alert.NewWriter(alert.WriterConfig{Path: a.Path, Pretty: pretty}); err != nil {
		return nil, fmt.Errorf("open --alerts %s: %w", a.Path, err)
	}
	r.writer = w
	if a.Webhook.URL == "" {
		return w, nil
	}
	wh := a.Webhook
	var token string
	if wh.TokenFile != "" {
		if token, err = intake.ReadTokenFile(wh.TokenFile); err != nil {
			_ = w.Close()
			return nil, fmt.Errorf("read alerts.webhook.token_file: %w", err)
		}
	}
	hook, err := alert.NewWebhook(alert.WebhookConfig{
		URL: wh.URL, Format: wh.Format, BearerToken: token, Headers: wh.Headers,
		CAFile: wh.CAFile, CertFile: wh.CertFile, KeyFile: wh.KeyFile, ServerName: wh.ServerName,
		SpoolDir: wh.SpoolDir, MaxSpoolBytes: wh.MaxSpoolBytes, BatchRecords: wh.BatchRecords,
		RequestTimeout: wh.RequestTimeout, MaxBackoff: wh.MaxBackoff, RetryStatuses: wh.RetryStatuses,
		Logger: r.log, // named alert.webhook by the sink
	})
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("open alert webhook: %w", err)
	}
	return alert.NewFanout(w, hook), nil
}

// runListenErr names the flag of a listener that failed to bind, with a hint
// for the common case.
func runListenErr(flagName, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("listen %s %s: address already in use (another process listens there; pick another port)", flagName, addr)
	}
	if errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("listen %s %s: permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)", flagName, addr)
	}
	return fmt.Errorf("listen %s %s: %w", flagName, addr, err)
}

func runCloneTLS(t *tls.Config) *tls.Config {
	if t == nil {
		return nil
	}
	return t.Clone()
}

func (r *runState) startListeners(token string, tlsCfg *tls.Config) error {
	l := r.cfg.Listeners
	log := r.log // the intake package names its loggers intake.<transport>
	if l.HTTP.Addr != "" {
		s, err := intake.NewHTTPServer(intake.HTTPConfig{
			Addr: l.HTTP.Addr, Token: token, TLS: runCloneTLS(tlsCfg), Insecure: l.Insecure,
			MaxBodyBytes: l.HTTP.MaxBodyBytes, MaxConns: l.HTTP.MaxConns, ReadHeaderTimeout: l.HTTP.ReadHeaderTimeout,
			ReadTimeout: l.HTTP.ReadTimeout, IdleTimeout: l.HTTP.IdleTimeout,
		}, r.pipe, log)
		if err != nil {
			return runListenErr("--events-http", l.HTTP.Addr, err)
		}
		r.listeners = append(r.listeners, s)
	}
	if l.Syslog.Addr != "" {
		var loc *time.Location
		if l.Syslog.Zone != "" {
			z, err := time.LoadLocation(l.Syslog.Zone)
			if err != nil {
				return fmt.Errorf("listeners.syslog.zone: %w", err)
			}
			loc = z
		}
		sc := intake.SyslogConfig{
			Addr: l.Syslog.Addr, Insecure: l.Insecure, MaxMessageBytes: l.Syslog.MaxMessageBytes,
			MaxConns: l.Syslog.MaxConns, IdleTimeout: l.Syslog.IdleTimeout, Location: loc,
		}
		if l.SyslogTCP() {
			tc := sc
			tc.TLS = runCloneTLS(tlsCfg)
			s, err := intake.NewSyslogTCP(tc, r.pipe, log)
			if err != nil {
				return runListenErr("--events-syslog", l.Syslog.Addr, err)
			}
			r.listeners = append(r.listeners, s)
		}
		if l.SyslogUDP() {
			s, err := intake.NewSyslogUDP(sc, r.pipe, log)
			if err != nil {
				return runListenErr("--events-syslog (udp)", l.Syslog.Addr, err)
			}
			r.listeners = append(r.listeners, s)
		}
	}
	if l.Beats.Addr != "" {
		s, err := intake.NewBeatsServer(intake.BeatsConfig{
			Addr: l.Beats.Addr, TLS: runCloneTLS(tlsCfg), Insecure: l.Insecure, MaxEventBytes: l.Beats.MaxEventBytes,
			MaxBatchBytes: l.Beats.MaxBatchBytes, MaxBatchEvents: l.Beats.MaxBatchEvents, MaxConns: l.Beats.MaxConns,
			Timeout: l.Beats.Timeout, IdleTimeout: l.Beats.IdleTimeout,
		}, r.pipe, log)
		if err != nil {
			return runListenErr("--events-beats", l.Beats.Addr, err)
		}
		r.listeners = append(r.listeners, s)
	}
	if len(l.Files.Paths) > 0 {
		f, err := intake.NewFileFollower(intake.FileConfig{
			Paths: l.Files.Paths, StatePath: l.Files.StatePath, PollInterval: l.Files.PollInterval,
			MaxRecordBytes: l.Files.MaxRecordBytes, MaxFiles: l.Files.MaxFiles,
		}, r.pipe, log)
		if err != nil {
			return fmt.Errorf("follow --events-file: %w", err)
		}
		r.files = f
		log.Info("following files", zap.Strings(fPath, l.Files.Paths))
	}
	return nil
}

// intakeStats snapshots every listener.
func (r *runState) intakeStats() []intake.Stats {
	out := make([]intake.Stats, 0, len(r.listeners)+1)
	for _, l := range r.listeners {
		out = append(out, l.Stats())
	}
	if r.files != nil {
		out = append(out, r.files.Stats())
	}
	return out
}

// stop shuts everything down once; see runState.
func (r *runState) stop() error {
	r.stopOnce.Do(func() {
		r.stopping.Store(true)
		r.ready.Store(false)
		var errs []error
		log := r.log.Named("run")
		if r.loopCancel != nil {
			r.loopCancel()
		}
		if r.reader != nil {
			_ = r.reader.Close()
		}
		r.loops.Wait()
		if r.sensor != nil {
			r.sensorMu.Lock()
			names := r.sensor.Attached()
			if err := r.sensor.Close(); err != nil {
				errs = append(errs, fmt.Errorf("detach XDP program: %w", err))
			}
			r.attached = map[string]runAttachment{}
			r.sensorMu.Unlock()
			if len(names) > 0 {
				log.Info("detached", zap.Strings(fIface, names))
			}
		}
		for _, l := range r.listeners {
			if err := l.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if r.files != nil {
			if err := r.files.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if r.pipe != nil {
			if err := r.pipe.Close(); err != nil {
				errs = append(errs, err)
			}
			st := r.pipe.Stats()
			lvl := zap.DebugLevel // a failed start has nothing to report
			if r.started.Load() {
				lvl = zap.InfoLevel
			}
			log.Log(lvl, "alerts flushed", zap.Uint64("written", st.AlertsWritten), zap.Uint64("undelivered", st.AlertsUndelivered))
		}
		if r.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = r.httpSrv.Shutdown(ctx)
			cancel()
		}
		r.stopErr = errors.Join(errs...)
	})
	return r.stopErr
}

// runCheckPrivileges says in one line what is missing to load and attach XDP.
func runCheckPrivileges() error {
	eff, err := runEffectiveCaps()
	if err != nil {
		return nil // cannot tell: let the loader explain
	}
	const (
		capNetAdmin = 12
		capSysAdmin = 21
		capPerfmon  = 38
		capBPF      = 39
	)
	has := func(c uint) bool { return eff&(1<<c) != 0 }
	var missing []string
	if !has(capNetAdmin) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	if !has(capBPF) && !has(capSysAdmin) {
		missing = append(missing, "CAP_BPF")
	}
	if !has(capPerfmon) && !has(capSysAdmin) {
		missing = append(missing, "CAP_PERFMON")
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("knockwatch run needs root or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (missing %s): run it with sudo or as deploy/knockwatch.service",
		strings.Join(missing, ", "))
}

// runEffectiveCaps reads CapEff from /proc/self/status.
func runEffectiveCaps() (uint64, error) {
	b, err := runReadSmallFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			var caps uint64
			_, err := fmt.Sscanf(strings.TrimSpace(v), "%x", &caps)
			return caps, err
		}
	}
	return 0, errors.New("no CapEff in /proc/self/status")
}

// runListenTCP binds addr for the metrics server.
func runListenTCP(flagName, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, runListenErr(flagName, addr, err)
	}
	return ln, nil
}
