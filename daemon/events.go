//go:build linux

package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/internal/config"
	"github.com/knockwatch/knockwatch/internal/metrics"
	"github.com/knockwatch/knockwatch/internal/version"
	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// startEventSide starts everything but the sensor: credentials, inventory,
// sinks, metrics registry, pipeline, listeners and the metrics server.
func (d *Daemon) startEventSide() error {
	cfg := &d.cfg
	if cfg.MemoryLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}

	// Files first: a missing token, certificate or inventory is a clear
	// error before anything binds or touches the kernel.
	token, tokens, tlsCfg, err := d.listenerCredentials()
	if err != nil {
		return err
	}
	built, err := cfg.Build()
	if err != nil {
		return err
	}
	d.built = built
	d.bindings = built.Pipeline.Bindings
	if cfg.Hosts != "" {
		d.log.Named("run").Info("inventory loaded", zap.String(fieldPath, cfg.Hosts), zap.Int(fieldHosts, built.Hosts))
	}

	sink, err := d.openSinks()
	if err != nil {
		return err
	}
	if err := d.openState(built); err != nil {
		_ = sink.Close()
		return err
	}
	d.reg = prometheus.NewRegistry()
	m, err := metrics.Register(d.reg, d.metricSources())
	if err != nil {
		_ = sink.Close()
		return fmt.Errorf("register metrics: %w", err)
	}
	registerProcessMetrics(d.reg)

	if _, err := built.NewCoverage(); err != nil {
		_ = sink.Close()
		return err
	}
	pc := built.Pipeline
	pc.ObserveLag = m.ObserveLag
	// Alerts name this sensor (ECS observer.*).
	host, _ := os.Hostname()
	pc.EngineOptions = append(pc.EngineOptions, correlate.WithObserver(correlate.Observer{
		Hostname: host, Version: version.String(), Interfaces: cfg.Interfaces}))
	pc.Evidence, pc.Delivered = d.evlog, d.ledger
	if d.pipe, err = pipeline.New(pc, sink, d.log); err != nil {
		_ = sink.Close()
		return fmt.Errorf("start correlation: %w", err)
	}
	// The engine's state from the evidence log, before anything live
	// arrives (listeners and the XDP program start after it).
	if _, err := d.pipe.Rebuild(context.Background(), d.evlog, time.Now()); err != nil {
		// A read error of the state directory: start anyway (what was
		// read is in the engine); the log says what is missing.
		d.log.Named("run").Error("rebuild incomplete", zap.Error(err))
	}
	d.startMaintenance()
	if err := d.startListeners(token, tokens, tlsCfg); err != nil {
		return err
	}
	return d.startMetricsServer()
}

// listenerCredentials reads the listeners' token files and TLS
// certificates and makes the intake memory budget.
func (d *Daemon) listenerCredentials() (token string, tokens map[string]string, tlsCfg *tls.Config, err error) {
	cfg := &d.cfg
	if cfg.Listeners.TokenFile != "" {
		if token, err = intake.ReadTokenFile(cfg.Listeners.TokenFile); err != nil {
			return "", nil, nil, fmt.Errorf("read --token-file: %w", err)
		}
	}
	tokens = map[string]string{}
	for name, path := range cfg.Listeners.Tokens {
		t, err := intake.ReadTokenFile(path)
		if err != nil {
			return "", nil, nil, fmt.Errorf("read listeners.tokens.%s: %w", name, err)
		}
		tokens[name] = t
	}
	d.budget = intake.NewMemoryBudget(cfg.Listeners.MemoryBudget)
	if cfg.Listeners.TLSCert != "" {
		if tlsCfg, err = intake.ServerTLSConfig(cfg.Listeners.TLSCert, cfg.Listeners.TLSKey, cfg.Listeners.ClientCA); err != nil {
			return "", nil, nil, fmt.Errorf("load listener TLS (--tls-cert/--tls-key/--client-ca): %w", err)
		}
	}
	return token, tokens, tlsCfg, nil
}

// openState opens the evidence log and the alert ledger under --state-dir.
func (d *Daemon) openState(built config.Built) error {
	log := d.log.Named("run")
	lc := built.EvidenceLog
	lc.Logger = d.log
	l, err := evidence.OpenLog(lc)
	if err != nil {
		return fmt.Errorf("--state-dir %s: %w", d.cfg.StateDir, err)
	}
	gc := built.Ledger
	gc.Logger = d.log
	g, err := evidence.OpenLedger(gc)
	if err != nil {
		_ = l.Close()
		return fmt.Errorf("--state-dir %s: %w", d.cfg.StateDir, err)
	}
	d.evlog, d.ledger = l, g
	st := l.Stats()
	log.Info("evidence log opened", zap.String(fieldPath, lc.Dir), zap.Int("segments", st.Segments),
		zap.Int64("records", st.Records), zap.Int64("bytes", st.Bytes), zap.Duration("max_age", lc.MaxAge),
		zap.String("fsync", lc.Fsync), zap.Int("alerts_remembered", g.Stats().Entries))
	return nil
}

// startMaintenance applies the evidence log's and the ledger's age bounds
// every few seconds.
func (d *Daemon) startMaintenance() {
	ctx, cancel := context.WithCancel(context.Background())
	d.maintCancel = cancel
	every := min(max(d.evlog.Config().MaxAge/60, time.Second), 10*time.Second)
	d.maint.Add(1)
	go func() {
		defer d.maint.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				d.evlog.Maintain(now)
				d.ledger.Maintain(now)
			}
		}
	}()
}

// openSinks opens the alert file (or stdout) and the webhook.
func (d *Daemon) openSinks() (alert.Sink, error) {
	a := d.cfg.Alerts
	pretty := a.Pretty == "true" || (a.Pretty == "auto" && a.Path == alert.StdoutPath && IsTerminal(d.stdout))
	var w *alert.Writer
	var err error
	if a.Path == alert.StdoutPath {
		w = alert.NewStreamWriter(d.stdout, "stdout", pretty)
	} else if w, err = alert.NewWriter(alert.WriterConfig{Path: a.Path, Pretty: pretty}); err != nil {
		return nil, fmt.Errorf("open --alerts %s: %w", a.Path, err)
	}
	d.writer = w
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
		Logger: d.log, // named alert.webhook by the sink
	})
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("open alert webhook: %w", err)
	}
	return alert.NewFanoutConfig(alert.FanoutConfig{MaxBacklog: a.MaxBacklog, Logger: d.log}, w, hook), nil
}

// listenErr names the flag of a listener that failed to bind, with a hint
// for the common case.
func listenErr(flagName, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("listen %s %s: address already in use (another process listens there; pick another port)", flagName, addr)
	}
	if errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("listen %s %s: permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)", flagName, addr)
	}
	return fmt.Errorf("listen %s %s: %w", flagName, addr, err)
}

func cloneTLS(t *tls.Config) *tls.Config {
	if t == nil {
		return nil
	}
	return t.Clone()
}

func (d *Daemon) startListeners(token string, tokens map[string]string, tlsCfg *tls.Config) error {
	l := d.cfg.Listeners
	log := d.log // the intake package names its loggers intake.<transport>
	pre := intake.PreAuthConfig{MaxConns: l.MaxPreAuthConns, PerSource: l.MaxPreAuthPerSource, Timeout: l.PreAuthTimeout}
	if l.HTTP.Addr != "" {
		s, err := intake.NewHTTPServer(intake.HTTPConfig{
			Addr: l.HTTP.Addr, Token: token, Tokens: tokens, PreAuth: pre, Budget: d.budget,
			TLS: cloneTLS(tlsCfg), Insecure: l.Insecure,
			MaxBodyBytes: l.HTTP.MaxBodyBytes, MaxConns: l.HTTP.MaxConns, ReadHeaderTimeout: l.HTTP.ReadHeaderTimeout,
			ReadTimeout: l.HTTP.ReadTimeout, IdleTimeout: l.HTTP.IdleTimeout,
		}, d.pipe, log)
		if err != nil {
			return listenErr("--events-http", l.HTTP.Addr, err)
		}
		d.listeners = append(d.listeners, s)
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
			MaxConns: l.Syslog.MaxConns, IdleTimeout: l.Syslog.IdleTimeout, Location: loc, PreAuth: pre,
		}
		if l.SyslogTCP() {
			tc := sc
			tc.TLS = cloneTLS(tlsCfg)
			s, err := intake.NewSyslogTCP(tc, d.pipe, log)
			if err != nil {
				return listenErr("--events-syslog", l.Syslog.Addr, err)
			}
			d.listeners = append(d.listeners, s)
		}
		if l.SyslogUDP() {
			s, err := intake.NewSyslogUDP(sc, d.pipe, log)
			if err != nil {
				return listenErr("--events-syslog (udp)", l.Syslog.Addr, err)
			}
			d.listeners = append(d.listeners, s)
		}
	}
	if l.Beats.Addr != "" {
		s, err := intake.NewBeatsServer(intake.BeatsConfig{
			Addr: l.Beats.Addr, TLS: cloneTLS(tlsCfg), Insecure: l.Insecure, MaxEventBytes: l.Beats.MaxEventBytes,
			MaxBatchBytes: l.Beats.MaxBatchBytes, MaxBatchEvents: l.Beats.MaxBatchEvents, MaxConns: l.Beats.MaxConns,
			Timeout: l.Beats.Timeout, IdleTimeout: l.Beats.IdleTimeout, PreAuth: pre, Budget: d.budget,
		}, d.pipe, log)
		if err != nil {
			return listenErr("--events-beats", l.Beats.Addr, err)
		}
		d.listeners = append(d.listeners, s)
	}
	if len(l.Files.Paths) > 0 {
		f, err := intake.NewFileFollower(intake.FileConfig{
			Paths: l.Files.Paths, StatePath: l.Files.StatePath, PollInterval: l.Files.PollInterval,
			MaxRecordBytes: l.Files.MaxRecordBytes, MaxFiles: l.Files.MaxFiles,
		}, d.pipe, log)
		if err != nil {
			return fmt.Errorf("follow --events-file: %w", err)
		}
		d.files = f
		log.Info("following files", zap.Strings(fieldPath, l.Files.Paths))
	}
	return nil
}

// intakeStats snapshots every listener.
func (d *Daemon) intakeStats() []intake.Stats {
	out := make([]intake.Stats, 0, len(d.listeners)+1)
	for _, l := range d.listeners {
		out = append(out, l.Stats())
	}
	if d.files != nil {
		out = append(out, d.files.Stats())
	}
	if d.rawIntake != nil {
		out = append(out, d.rawIntake.Stats())
	}
	return out
}
