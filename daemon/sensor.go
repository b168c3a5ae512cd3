//go:build linux

package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/knockwatch/knockwatch/loader"
	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/sensor"
)

// startSensor loads the XDP program, sets the allowlist, attaches it to
// every interface and starts the reader, the sweep, the watermark clock
// and the netlink watcher that re-attaches a returning interface.
func (d *Daemon) startSensor(ctx context.Context) error {
	cfg := &d.cfg
	log := d.log.Named("sensor")
	built, err := cfg.Build()
	if err != nil {
		return err
	}
	s, err := loader.Load(built.Sensor, loader.Options{PinPath: cfg.PinPath})
	if err != nil {
		return fmt.Errorf("load XDP program: %w", err)
	}
	d.sensor.Store(s)
	if cfg.PinPath != "" {
		// The flags survived in the pinned maps; the knocks they stand
		// for must reach this process's correlation engine too.
		knocks, missing, err := s.FlaggedKnocks(time.Now())
		if err != nil {
			log.Warn("could not restore knocks from pinned maps", zap.Error(err))
		}
		for _, k := range knocks {
			if err := d.pipe.AddRecord(ctx, k); err != nil {
				log.Warn("restore knock", zap.Error(err))
			}
		}
		log.Info("maps pinned: state survives a restart", zap.String(fieldPath, cfg.PinPath),
			zap.Int("knocks_restored", len(knocks)), zap.Int("knocks_without_touches", missing))
	} else {
		log.Info("maps not pinned: knocks in progress are forgotten on restart (use --pin-path to keep them)")
	}
	if err := s.SetAllowlist(built.Allowed); err != nil {
		return fmt.Errorf("set --allow-source list: %w", err)
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

// readLoop feeds ring-buffer records to the pipeline until the reader is
// closed.
func (d *Daemon) readLoop(ctx context.Context, rd *loader.Reader) {
	log := d.log.Named("sensor")
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
		switch v := rec.(type) {
		case *sensor.Knock:
			ports := make([]uint16, len(v.Touches))
			for i, t := range v.Touches {
				ports[i] = t.Port
			}
			log.Info("knock flagged", zap.Stringer(fieldSourceIP, v.Src), zap.Stringer(fieldDestIP, v.Dst),
				zap.Uint16s(fieldPorts, ports), zap.Int(fieldDistinct, v.Distinct))
		case *sensor.Handshake:
			log.Info("first handshake of a flagged source", zap.Stringer(fieldSourceIP, v.Src),
				zap.Stringer(fieldDestIP, v.Dst), zap.Uint16(fieldDestPort, v.Port))
		}
		if err := d.pipe.AddRecord(ctx, rec); err != nil {
			if errors.Is(err, pipeline.ErrClosed) || ctx.Err() != nil {
				return
			}
			log.Warn("sensor record rejected", zap.Error(err))
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
