//go:build linux

package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/internal/binding"
	"github.com/knockwatch/knockwatch/internal/config"
	"github.com/knockwatch/knockwatch/loader"
	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/scaleout"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// Log field names.
const (
	fieldIface    = "iface"
	fieldAddr     = "addr"
	fieldPath     = "path"
	fieldHosts    = "hosts"
	fieldPrefixes = "allowed_sources"
	fieldDuration = "duration"
	fieldSourceIP = "source.ip"
	fieldDestIP   = "destination.ip"
	fieldDestPort = "destination.port"
	fieldPorts    = "ports"
	fieldDistinct = "distinct"
)

// Daemon is one `knockwatch run`. Build it with New, then Start; Stop
// (always, even after a failed Start) releases everything.
type Daemon struct {
	log    *zap.Logger
	stdout io.Writer

	mu  sync.Mutex // guards cfg (Reload)
	cfg config.Config
	// built is cfg as Start built it (once: the inventory file and the
	// credentials are read once), for the sensor started after the rest.
	built config.Built

	writer      *alert.Writer
	evlog       *evidence.Log
	ledger      *evidence.Ledger
	pipe        *pipeline.Pipeline
	budget      *intake.MemoryBudget
	bindings    *binding.Policy
	listeners   []intake.Listener
	files       *intake.FileFollower
	reg         *prometheus.Registry
	httpSrv     *http.Server
	metricsAddr string

	// The sensor side is set by Start while the metrics server may
	// already scrape: read it through these.
	sensor atomic.Pointer[loader.Sensor]
	ifaces atomic.Pointer[loader.Interfaces]
	reader atomic.Pointer[loader.Reader]
	// flagTTL is the sensor's flag_ttl (a published flag's lifetime).
	flagTTL time.Duration

	// The scale-out parts (kafka.brokers set), by role.
	producer   atomic.Pointer[scaleout.Producer]
	correlator atomic.Pointer[scaleout.Correlator]
	flagTable  atomic.Pointer[scaleout.RemoteFlags]
	flagSub    atomic.Pointer[scaleout.FlagSubscriber]
	rawIntake  *scaleout.RawIntake

	loopCancel  context.CancelFunc
	loops       sync.WaitGroup
	maintCancel context.CancelFunc
	maint       sync.WaitGroup
	ready       atomic.Bool
	started     atomic.Bool // ready was reached once
	stopping    atomic.Bool

	done     chan struct{}
	doneOnce sync.Once
	err      error
	stopOnce sync.Once
	stopErr  error
}

// New returns a daemon for cfg (which must have passed Validate). Alerts
// configured for "-" go to stdout; log is the root logger (components
// take named children of it).
func New(cfg config.Config, log *zap.Logger, stdout io.Writer) *Daemon {
	if log == nil {
		log = zap.NewNop()
	}
	return &Daemon{cfg: cfg, log: log, stdout: stdout, done: make(chan struct{})}
}

// Start brings everything up: credentials, inventory, sinks, metrics,
// pipeline and listeners first (a bad file or a taken port is a clear
// error before anything touches the kernel), then the XDP program and the
// loops. On error, call Stop.
//
// With kafka.brokers the process runs its --role of a scale-out
// deployment instead (startScaleOut).
func (d *Daemon) Start(ctx context.Context) error {
	if d.cfg.Distributed() {
		if err := d.startScaleOut(ctx); err != nil {
			return err
		}
		d.ready.Store(true)
		d.started.Store(true)
		return nil
	}
	if err := loader.CheckPrivileges(); err != nil {
		return err
	}
	if err := d.startEventSide(); err != nil {
		return err
	}
	if err := d.startSensor(ctx); err != nil {
		return err
	}
	d.ready.Store(true)
	d.started.Store(true)
	return nil
}

// Done is closed when a part fails after Start (Err says why).
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Err is the failure that closed Done, nil before.
func (d *Daemon) Err() error {
	select {
	case <-d.done:
		return d.err
	default:
		return nil
	}
}

// MetricsAddr is the metrics server's bound address ("" when off).
func (d *Daemon) MetricsAddr() string { return d.metricsAddr }

// fail ends the run with err (a part died after startup).
func (d *Daemon) fail(err error) {
	d.doneOnce.Do(func() {
		d.err = err
		close(d.done)
	})
}

// Stop shuts everything down once, in the order that loses nothing.
func (d *Daemon) Stop() error {
	d.stopOnce.Do(func() {
		start := time.Now()
		d.stopping.Store(true)
		d.ready.Store(false)
		var errs []error
		log := d.log.Named("run")
		if d.loopCancel != nil {
			d.loopCancel()
		}
		if rd := d.reader.Load(); rd != nil {
			_ = rd.Close()
		}
		d.loops.Wait()
		errs = append(errs, d.stopScaleOutInputs()...)
		if s := d.sensor.Load(); s != nil {
			var names []string
			if ifs := d.ifaces.Load(); ifs != nil {
				names = ifs.Stop()
			}
			if err := s.Close(); err != nil {
				errs = append(errs, fmt.Errorf("detach XDP program: %w", err))
			}
			if len(names) > 0 {
				log.Info("detached", zap.Strings(fieldIface, names))
			}
		}
		for _, l := range d.listeners {
			if err := l.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if d.files != nil {
			if err := d.files.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if d.pipe != nil {
			if err := d.pipe.Close(); err != nil {
				errs = append(errs, err)
			}
			st := d.pipe.Stats()
			lvl := zap.DebugLevel // a failed start has nothing to report
			if d.started.Load() {
				lvl = zap.InfoLevel
			}
			log.Log(lvl, "alerts flushed", zap.Uint64("written", st.AlertsWritten), zap.Uint64("undelivered", st.AlertsUndelivered),
				zap.Duration(fieldDuration, time.Since(start)))
		}
		errs = append(errs, d.stopScaleOutOutputs()...)
		if d.maintCancel != nil {
			d.maintCancel()
			d.maint.Wait()
		}
		// After the pipeline's final flush (which records the delivered
		// alerts in the ledger).
		if d.ledger != nil {
			if err := d.ledger.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if d.evlog != nil {
			if err := d.evlog.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if d.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = d.httpSrv.Shutdown(ctx)
			cancel()
		}
		d.stopErr = errors.Join(errs...)
	})
	return d.stopErr
}
