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
	fIface     = "iface"
	fMode      = "mode"
	fAddr      = "addr"
	fTransport = "transport"
	fSignal    = "signal"
	fPath      = "path"
	fCount     = "count"
	fPrefixes  = "allowed_sources"
	fHosts     = "hosts"
	fDuration  = "duration"
	fSourceIP  = "source.ip"
	fDestIP    = "destination.ip"
	fDestPort  = "destination.port"
	fPorts     = "ports"
	fDistinct  = "distinct"
)

// runRun is `knockwatch run`. It returns when ctx ends (SIGINT/SIGTERM in
// main) after detaching from every interface and flushing the sinks; a
// second SIGINT/SIGTERM during that shutdown exits at once.
func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, flags, err := config.Load(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		if errors.Is(err, config.ErrUsage) {
			return fmt.Errorf("%w: %w", errUsage, err)
		}
		return err
	}
	if len(cfg.Interfaces) == 0 {
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

	// SIGHUP must not kill the process while it starts.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	r := &runState{cfg: cfg, args: args, configFile: flags.ConfigFile, log: log, stdout: stdout}
	if err := r.start(ctx); err != nil {
		r.stop()
		return err
	}
	log.Named("run").Info("ready: sensor attached, listeners up", zap.Strings(fIface, cfg.Interfaces))

	for {
		select {
		case <-hup:
			r.reload()
			continue
		case <-r.fatal:
			r.stop()
			return r.fatalErr
		case <-ctx.Done():
		}
		break
	}
	log.Named("run").Info("shutting down: detaching and flushing alerts")
	forced := runForceOnSecondSignal(log.Named("run"))
	defer forced()
	start := time.Now()
	if err := r.stop(); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	log.Named("run").Info("stopped", zap.Duration(fDuration, time.Since(start)))
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
