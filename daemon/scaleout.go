//go:build linux

package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/internal/config"
	"github.com/knockwatch/knockwatch/internal/metrics"
	"github.com/knockwatch/knockwatch/internal/version"
	"github.com/knockwatch/knockwatch/loader"
	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/scaleout"
)

// startScaleOut starts this process's roles of a scale-out deployment
// (kafka.brokers set): topics checked (and created) first, then the
// producer and the store-only pipeline for a sensor or an intake, the
// listeners and raw topics of an intake, the correlator, and the XDP
// program with the flag subscriber of a sensor.
func (d *Daemon) startScaleOut(ctx context.Context) error {
	cfg := &d.cfg
	log := d.log.Named("run")
	if cfg.Runs(config.RoleSensor) {
		if err := loader.CheckPrivileges(); err != nil {
			return err
		}
	}
	if cfg.MemoryLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}
	built, err := cfg.Build()
	if err != nil {
		return err
	}
	d.built = built
	sc := cfg.ScaleOut()
	sc.Logger = d.log
	needs, err := cfg.ScaleOutNeeds()
	if err != nil {
		return err
	}
	if err := scaleout.EnsureTopics(ctx, sc, needs); err != nil {
		return fmt.Errorf("kafka at %v: %w", sc.Brokers, err)
	}
	log.Info("kafka topics checked", zap.Strings("brokers", sc.Brokers), zap.String("role", cfg.Role),
		zap.String("node", sc.Node), zap.String("evidence", sc.Topics.Evidence), zap.Duration("rule_needs", needs.Evidence))
	d.bindings = built.Pipeline.Bindings

	// Alerts of a correlator also go to the local writer, after commit.
	if cfg.Runs(config.RoleCorrelator) {
		if _, err := d.openSinks(); err != nil {
			return err
		}
	}
	d.reg = prometheus.NewRegistry()
	m, err := metrics.Register(d.reg, d.metricSources())
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	registerProcessMetrics(d.reg)

	if cfg.Runs(config.RoleSensor) || cfg.Runs(config.RoleIntake) {
		p, err := scaleout.NewProducer(ctx, sc)
		if err != nil {
			return err
		}
		d.producer.Store(p)
		inv := built.Inventory
		p.SetResolver(func(host string) []netip.Addr { return inv.IPs(host) })
		pc := built.Pipeline
		pc.StoreOnly, pc.Evidence, pc.ObserveLag = true, p, m.ObserveLag
		if cfg.Runs(config.RoleIntake) {
			pc.Busy = p.Busy
		}
		if d.pipe, err = pipeline.New(pc, nil, d.log); err != nil {
			return fmt.Errorf("start pipeline: %w", err)
		}
	}
	if cfg.Runs(config.RoleCorrelator) {
		host, _ := os.Hostname()
		w := d.writer
		c, err := scaleout.NewCorrelator(ctx, sc, scaleout.CorrelatorConfig{
			Engine: built.Pipeline.Engine,
			Options: []correlate.Option{correlate.WithObserver(correlate.Observer{
				Hostname: host, Version: version.String(), Interfaces: cfg.Interfaces})},
			Inventory: built.Inventory,
			Committed: func(id, action string, json []byte) {
				if err := w.Write(context.Background(), []alert.Record{{ID: id, Action: action, JSON: json}}); err != nil {
					log.Error("alert committed to the alert topic but not written to --alerts", zap.String("alert_id", id), zap.Error(err))
				}
			},
		})
		if err != nil {
			return err
		}
		d.correlator.Store(c)
		go func() {
			<-c.Done()
			if err := c.Err(); err != nil && !d.stopping.Load() {
				d.fail(fmt.Errorf("correlator: %w", err))
			}
		}()
	}
	if cfg.Runs(config.RoleIntake) {
		token, tokens, tlsCfg, err := d.listenerCredentials()
		if err != nil {
			return err
		}
		if err := d.startListeners(token, tokens, tlsCfg); err != nil {
			return err
		}
		if len(sc.Topics.Raw) > 0 {
			ri, err := scaleout.NewRawIntake(sc, d.pipe)
			if err != nil {
				return err
			}
			d.rawIntake = ri
		}
	}
	if err := d.startMetricsServer(); err != nil {
		return err
	}
	if cfg.Runs(config.RoleSensor) {
		if err := d.startSensor(ctx); err != nil {
			return err
		}
		p := d.producer.Load()
		table := scaleout.NewRemoteFlags(d.sensor.Load(), int(built.Sensor.RemoteFlags), built.Sensor.FlagTTL+2*cfg.Rule.Skew)
		sub, err := p.Subscribe(table)
		if err != nil {
			return err
		}
		d.flagTable.Store(table)
		d.flagSub.Store(sub)
	}
	return nil
}

// stopScaleOutInputs stops the scale-out inputs Stop's common part does
// not: the raw topics and the flag subscriber.
func (d *Daemon) stopScaleOutInputs() []error {
	var errs []error
	if d.rawIntake != nil {
		if err := d.rawIntake.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if s := d.flagSub.Load(); s != nil {
		s.Close()
	}
	return errs
}

// stopScaleOutOutputs stops the producer (after the pipeline's last
// sync: it waits for the brokers up to shutdown_timeout), the correlator
// (aborting a transaction in flight) and the correlator's local writer.
func (d *Daemon) stopScaleOutOutputs() []error {
	var errs []error
	if p := d.producer.Load(); p != nil {
		if err := p.Close(d.cfg.ShutdownTimeout); err != nil {
			errs = append(errs, err)
		}
	}
	if c := d.correlator.Load(); c != nil {
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if d.writer != nil {
		if err := d.writer.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// scaleOutSources adds the scale-out parts to the metrics.
func (d *Daemon) scaleOutSources(src *metrics.Sources) {
	src.KafkaProducer = func() scaleout.ProducerStats {
		if p := d.producer.Load(); p != nil {
			return p.Stats()
		}
		return scaleout.ProducerStats{}
	}
	src.RemoteFlags = func() scaleout.RemoteFlagStats {
		if t := d.flagTable.Load(); t != nil {
			return t.Stats()
		}
		return scaleout.RemoteFlagStats{}
	}
	src.FlagSubscriber = func() scaleout.FlagSubscriberStats {
		if s := d.flagSub.Load(); s != nil {
			return s.Stats()
		}
		return scaleout.FlagSubscriberStats{}
	}
	src.Correlator = func() scaleout.CorrelatorStats {
		if c := d.correlator.Load(); c != nil {
			return c.Stats()
		}
		return scaleout.CorrelatorStats{}
	}
}
