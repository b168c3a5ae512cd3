//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/daemon"
	"github.com/knockwatch/knockwatch/internal/config"
)

func init() {
	commands["run"] = command{
		summary: "run the live sensor: XDP on the capture interfaces, event listeners, correlation, alerts, metrics",
		run:     runRun,
	}
}

// Log field names of `knockwatch run`.
const (
	fIface    = "iface"
	fSignal   = "signal"
	fDuration = "duration"
)

// runRun is `knockwatch run`: flags and the configuration file, the
// logger, signals, and a daemon.Daemon. It returns when ctx ends
// (SIGINT/SIGTERM in main) after the daemon detached from every interface
// and flushed the sinks; a second SIGINT/SIGTERM during that shutdown
// exits at once. SIGHUP reloads.
func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, _, err := config.Load(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		if errors.Is(err, config.ErrUsage) {
			return fmt.Errorf("%w: %w", errUsage, err)
		}
		return err
	}
	if len(cfg.Interfaces) == 0 && cfg.Runs(config.RoleSensor) {
		return fmt.Errorf("%w: no capture interface: give --iface IFACE (or interfaces: in --config)", errUsage)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	log, err := newRunLogger(cfg, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	runLog := log.Named("run")

	// SIGHUP must not kill the process while it starts.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	d := daemon.New(cfg, log, stdout)
	if err := d.Start(ctx); err != nil {
		d.Stop()
		return err
	}
	if cfg.Distributed() {
		runLog.Info("ready: "+cfg.Role+" on kafka", zap.String("role", cfg.Role), zap.Strings(fIface, cfg.Interfaces),
			zap.Strings("brokers", cfg.Kafka.Brokers))
	} else {
		runLog.Info("ready: sensor attached, listeners up", zap.Strings(fIface, cfg.Interfaces))
	}
	for {
		select {
		case <-hup:
			// Re-read the file and the flags; a configuration that does
			// not load or check keeps the current settings.
			next, _, err := config.Load(args, io.Discard)
			if err == nil {
				err = d.Reload(next)
			}
			if err != nil {
				runLog.Error("reload failed; keeping the current settings", zap.Error(err))
			}
			continue
		case <-d.Done():
			d.Stop()
			return d.Err()
		case <-ctx.Done():
		}
		break
	}
	runLog.Info("shutting down: detaching and flushing alerts")
	forced := runForceOnSecondSignal(runLog)
	defer forced()
	start := time.Now()
	if err := d.Stop(); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	runLog.Info("stopped", zap.Duration(fDuration, time.Since(start)))
	return nil
}

// runForceOnSecondSignal exits the process on another SIGINT/SIGTERM while
// the graceful shutdown runs (the program is detached first, so a forced
// exit leaves no XDP program behind unless it comes during the detach).
func runForceOnSecondSignal(log *zap.Logger) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			log.Warn("second signal: exiting without waiting for the shutdown", zap.String(fSignal, s.String()))
			_ = log.Sync()
			os.Exit(1)
		case <-done:
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}
