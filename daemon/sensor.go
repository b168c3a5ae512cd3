//go:build linux

package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/knockwatch/knockwatch/coverage"
	"github.com/knockwatch/knockwatch/loader"
	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/sensor"
)

// startSensor loads the XDP program, sets the allowlist, attaches it to
// every interface and starts the reader, the sweep, the watermark clock
// and the netlink watcher that re-attaches a returning interface.
func (d *Daemon) startSensor(_ context.Context) error {
	cfg := &d.cfg
	log := d.log.Named("sensor")
	built := d.built
	s, err := loader.Load(built.Sensor, loader.Options{PinPath: cfg.PinPath})
	if err != nil {
		return fmt.Errorf("load XDP program: %w", err)
	}
	d.sensor.Store(s)
	d.flagTTL = built.Sensor.FlagTTL
	// The engine's knocks come back from the evidence log (rebuilt
	// before this); the pinned maps keep the program's own state (pending
	// SYNs, candidates, flags, port state).
	if cfg.PinPath != "" {
		log.Info("maps pinned: the program's state survives a restart", zap.String(fieldPath, cfg.PinPath))
	} else {
		log.Info("maps not pinned: knocks in progress are forgotten on restart (use --pin-path to keep them)")
	}
	if err := s.SetAllowlist(built.Allowed); err != nil {
		return fmt.Errorf("set --allow-source list: %w", err)
	}
	// Coverage lists the hosts SYNs go to inside coverage.networks; with
	// coverage off the table stays closed (a pinned one from an earlier
	// run too).
	var nets []netip.Prefix
	if d.pipe.Coverage() != nil {
		nets = built.CoverageNetworks
	}
	if err := s.SetDestinationNets(nets); err != nil {
		return fmt.Errorf("set coverage.networks: %w", err)
	}
	mode, err := sensor.ParseMode(cfg.XDPMode)
	if err != nil {
		return err
	}
	ifs := loader.NewInterfaces(s, cfg.Interfaces, mode, log)
	d.ifaces.Store(ifs)
	if err := ifs.AttachAll(); err != nil {
		return err
	}
	reader, err := s.NewReader()
	if err != nil {
		return fmt.Errorf("open ring buffer: %w", err)
	}
	d.reader.Store(reader)

	loopCtx, cancel := context.WithCancel(context.Background())
	d.loopCancel = cancel
	if d.pipe.Coverage() != nil {
		d.loops.Add(1)
		go func() { defer d.loops.Done(); d.coverageLoop(loopCtx, s, ifs) }()
	}
	d.loops.Add(4)
	go func() { defer d.loops.Done(); d.readLoop(loopCtx, reader) }()
	go func() {
		defer d.loops.Done()
		var last time.Time
		s.SweepEvery(loopCtx, cfg.SweepInterval, func(err error) {
			if errors.Is(err, loader.ErrSensorClosed) {
				return
			}
			if time.Since(last) > time.Minute { // one line a minute, not one a second
				last = time.Now()
				log.Warn("sweep of pending SYNs failed", zap.Error(err))
			}
		})
	}()
	go func() { defer d.loops.Done(); d.advanceLoop(loopCtx) }()
	go func() { defer d.loops.Done(); ifs.Watch(loopCtx) }()
	return nil
}

// maxReadBatch bounds the records handed to the pipeline (and so to the
// evidence log, as one write and one fsync) at once.
const maxReadBatch = 256

// readLoop feeds ring-buffer records to the pipeline until the reader is
// closed: after each blocking read it drains what else is already there
// (up to maxReadBatch) and hands the batch on at once.
func (d *Daemon) readLoop(ctx context.Context, rd *loader.Reader) {
	log := d.log.Named("sensor")
	batch := make([]sensor.Record, 0, maxReadBatch)
	for {
		rec, err := rd.Read()
		if errors.Is(err, loader.ErrClosed) {
			return
		}
		if err != nil {
			log.Warn("read ring buffer", zap.Error(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		batch = append(batch[:0], rec)
		if rd.Pending() > 0 {
			rd.SetDeadline(time.Now())
			for len(batch) < maxReadBatch {
				more, err := rd.Read()
				if err != nil {
					break // drained (deadline), closed or failing: the next blocking Read says which
				}
				batch = append(batch, more)
			}
			rd.SetDeadline(time.Time{})
		}
		p := d.producer.Load()
		for _, rec := range batch {
			d.logRecord(log, rec)
			if k, ok := rec.(*sensor.Knock); ok && p != nil {
				// Flags travel: the other taps watch this pair too.
				p.PublishFlag(k, d.flagTTL)
			}
		}
		if err := d.pipe.AddRecords(ctx, batch); err != nil {
			if errors.Is(err, pipeline.ErrClosed) || ctx.Err() != nil {
				return
			}
			if !errors.Is(err, pipeline.ErrNotStored) { // the pipeline logs those itself
				log.Warn("sensor record rejected", zap.Error(err))
			}
		}
	}
}

// logRecord logs a KNOCK or a HANDSHAKE.
func (d *Daemon) logRecord(log *zap.Logger, rec sensor.Record) {
	switch v := rec.(type) {
	case *sensor.Knock:
		ports := make([]uint16, len(v.Touches))
		for i, t := range v.Touches {
			ports[i] = t.Port
		}
		log.Info("knock flagged", zap.Stringer(fieldSourceIP, v.Src), zap.Stringer(fieldDestIP, v.Dst),
			zap.Uint16s(fieldPorts, ports), zap.Int(fieldDistinct, v.Distinct))
	case *sensor.Handshake:
		if v.Sample {
			log.Debug("clock sample", zap.Stringer(fieldSourceIP, v.Src), zap.Stringer(fieldDestIP, v.Dst),
				zap.Uint16(fieldDestPort, v.Port))
			return
		}
		log.Info("first handshake of a flagged source", zap.Stringer(fieldSourceIP, v.Src),
			zap.Stringer(fieldDestIP, v.Dst), zap.Uint16(fieldDestPort, v.Port))
	}
}

const (
	dstReadInterval = 5 * time.Second
	dstKeep         = 2 * time.Minute // a host is read ~24 times before its entry goes
)

// coverageLoop gives coverage the program's counters every second (the
// sensor's and each capture interface's), lets it ask the program for
// clock samples, and prunes the requests the program no longer needs;
// every dstReadInterval it hands coverage the hosts SYNs went to
// (syn_dsts), deleting those idle for dstKeep.
func (d *Daemon) coverageLoop(ctx context.Context, s *loader.Sensor, ifs *loader.Interfaces) {
	log := d.log.Named("coverage")
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastWarn, lastPrune time.Time
	warn := func(msg string, err error) {
		if time.Since(lastWarn) > time.Minute { // a line a minute, not a second
			lastWarn = time.Now()
			log.Warn(msg, zap.Error(err))
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c, err := s.Counters()
			if err != nil {
				if !errors.Is(err, loader.ErrSensorClosed) {
					warn("read counters for coverage", err)
				}
				continue
			}
			var per []coverage.Interface
			for _, st := range ifs.Stats() {
				if st.XDP != nil {
					per = append(per, coverage.Interface{Name: st.Name, Counters: st.XDP})
				}
			}
			d.pipe.ObserveSensor(now, c, per, s)
			if now.Sub(lastPrune) >= dstReadInterval {
				lastPrune = now
				if _, _, err := s.PruneRequests(now); err != nil && !errors.Is(err, loader.ErrSensorClosed) {
					warn("prune sample requests", err)
				}
				dsts, err := s.SYNDestinations(now, dstKeep)
				if err != nil && !errors.Is(err, loader.ErrSensorClosed) {
					warn("read SYN destinations", err)
				}
				if cov := d.pipe.Coverage(); cov != nil {
					for _, dst := range dsts {
						cov.ObserveDestination(dst.Addr, dst.LastSYN)
					}
				}
			}
		}
	}
}

// advanceLoop moves the engine's watermark with the clock so that state
// expires while the network is quiet.
func (d *Daemon) advanceLoop(ctx context.Context) {
	t := time.NewTicker(d.cfg.AdvanceInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			d.pipe.Advance(now)
		}
	}
}

// IsTerminal reports whether w is a terminal (alerts on stdout are then
// indented, logs written for a person).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
