//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/knockwatch/knockwatch/internal/metrics"
	"github.com/knockwatch/knockwatch/loader"
	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/sensor"
)

// startSensor loads the XDP program, sets the allowlist, attaches it to
// every interface and starts the reader, the sweep, the watermark clock
// and the netlink watcher that re-attaches a returning interface.
func (r *runState) startSensor(ctx context.Context) error {
	cfg := &r.cfg
	log := r.log.Named("sensor")
	s, err := loader.Load(cfg.Sensor, loader.Options{PinPath: cfg.PinPath})
	if err != nil {
		return fmt.Errorf("load XDP program: %w", err)
	}
	r.sensorMu.Lock()
	r.sensor = s
	r.sensorMu.Unlock()
	if cfg.PinPath != "" {
		// The flags survived in the pinned maps; the knocks they stand
		// for must reach this process's correlation engine too.
		knocks, missing, err := s.FlaggedKnocks()
		if err != nil {
			log.Warn("could not restore knocks from pinned maps", zap.Error(err))
		}
		for _, k := range knocks {
			if err := r.pipe.AddRecord(ctx, k); err != nil {
				log.Warn("restore knock", zap.Error(err))
			}
		}
		log.Info("maps pinned: state survives a restart", zap.String(fPath, cfg.PinPath),
			zap.Int("knocks_restored", len(knocks)), zap.Int("knocks_without_touches", missing))
	} else {
		log.Info("maps not pinned: knocks in progress are forgotten on restart (use --pin-path to keep them)")
	}
	prefixes, err := cfg.Suppression.AllowedPrefixes()
	if err != nil {
		return err
	}
	if err := s.SetAllowlist(prefixes); err != nil {
		return fmt.Errorf("set --allow-source list: %w", err)
	}
	for _, ifn := range cfg.Interfaces {
		if err := r.attach(ifn); err != nil {
			return fmt.Errorf("--iface %s: %w%s", ifn, err, runModeHint(r.mode, err))
		}
	}
	reader, err := s.NewReader()
	if err != nil {
		return fmt.Errorf("open ring buffer: %w", err)
	}
	r.sensorMu.Lock()
	r.reader = reader
	r.sensorMu.Unlock()

	loopCtx, cancel := context.WithCancel(context.Background())
	r.loopCancel = cancel
	r.loops.Add(4)
	go func() { defer r.loops.Done(); r.readLoop(loopCtx) }()
	go func() {
		defer r.loops.Done()
		var last time.Time
		s.SweepEvery(loopCtx, cfg.SweepInterval, func(err error) {
			if time.Since(last) > time.Minute { // one line a minute, not one a second
				last = time.Now()
				log.Warn("sweep of pending SYNs failed", zap.Error(err))
			}
		})
	}()
	go func() { defer r.loops.Done(); r.advanceLoop(loopCtx) }()
	go func() { defer r.loops.Done(); r.watchLinks(loopCtx) }()
	return nil
}

// runModeHint adds the --xdp-mode generic hint when native mode failed.
func runModeHint(mode sensor.Mode, err error) string {
	if mode == sensor.ModeNative && errors.Is(err, unix.EOPNOTSUPP) && !strings.Contains(err.Error(), "--xdp-mode generic") {
		return " (try --xdp-mode generic)"
	}
	return ""
}

// attach attaches to one interface and records it.
func (r *runState) attach(ifn string) error {
	r.sensorMu.Lock()
	defer r.sensorMu.Unlock()
	if r.stopping.Load() {
		return errors.New("shutting down")
	}
	lnk, err := netlink.LinkByName(ifn)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return fmt.Errorf("no such interface (ip -br link lists them)")
		}
		return fmt.Errorf("look up interface: %w", err)
	}
	_ = r.sensor.Detach(ifn) // stale bookkeeping after the link vanished
	m, err := r.sensor.Attach(ifn, r.mode)
	if err != nil {
		return err
	}
	r.attached[ifn] = runAttachment{mode: m, index: lnk.Attrs().Index}
	r.log.Named("sensor").Info("attached", zap.String(fIface, ifn), zap.String(fMode, string(m)))
	return nil
}

// readLoop feeds ring-buffer records to the pipeline until the reader is
// closed.
func (r *runState) readLoop(ctx context.Context) {
	log := r.log.Named("sensor")
	for {
		rec, err := r.reader.Read()
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
			log.Info("knock flagged", zap.Stringer(fSourceIP, v.Src), zap.Stringer(fDestIP, v.Dst),
				zap.Uint16s(fPorts, ports), zap.Int(fDistinct, v.Distinct))
		case *sensor.Handshake:
			log.Info("first handshake of a flagged source", zap.Stringer(fSourceIP, v.Src),
				zap.Stringer(fDestIP, v.Dst), zap.Uint16(fDestPort, v.Port))
		}
		if err := r.pipe.AddRecord(ctx, rec); err != nil {
			if errors.Is(err, pipeline.ErrClosed) || ctx.Err() != nil {
				return
			}
			log.Warn("sensor record rejected", zap.Error(err))
		}
	}
}

// advanceLoop moves the engine's watermark with the clock so that state
// expires while the network is quiet.
func (r *runState) advanceLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.AdvanceInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.pipe.Advance(now)
		}
	}
}

// watchLinks re-attaches an interface that disappeared and came back.
func (r *runState) watchLinks(ctx context.Context) {
	log := r.log.Named("sensor")
	want := map[string]bool{}
	for _, ifn := range r.cfg.Interfaces {
		want[ifn] = true
	}
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			if ctx.Err() == nil {
				log.Warn("netlink link updates", zap.Error(err))
			}
		},
	})
	if err != nil {
		log.Warn("cannot watch interfaces: a removed and re-added interface will not be re-attached", zap.Error(err))
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-updates:
			if !ok {
				log.Warn("netlink link updates ended: a re-added interface will not be re-attached")
				return
			}
			name := u.Attrs().Name
			if !want[name] {
				continue
			}
			r.linkUpdate(name, u)
		}
	}
}

func (r *runState) linkUpdate(name string, u netlink.LinkUpdate) {
	log := r.log.Named("sensor")
	r.sensorMu.Lock()
	cur, attached := r.attached[name]
	if u.Header.Type == unix.RTM_DELLINK {
		if attached {
			delete(r.attached, name)
			_ = r.sensor.Detach(name)
			r.sensorMu.Unlock()
			log.Warn("interface disappeared; will re-attach when it returns", zap.String(fIface, name))
			return
		}
		r.sensorMu.Unlock()
		return
	}
	up := u.Attrs().Flags&net.FlagUp != 0
	if attached && cur.index == u.Attrs().Index {
		r.sensorMu.Unlock()
		return // a flag change on an attached interface: the program stays
	}
	if attached { // same name, new link
		delete(r.attached, name)
		_ = r.sensor.Detach(name)
	}
	r.sensorMu.Unlock()
	if !up {
		log.Info("interface is back but down; will attach when it is up", zap.String(fIface, name))
		return
	}
	if err := r.attach(name); err != nil {
		log.Error("re-attach failed", zap.String(fIface, name), zap.Error(err))
		return
	}
	log.Warn("interface returned: re-attached", zap.String(fIface, name))
}

// allAttached reports whether every configured interface has the program.
func (r *runState) allAttached() (bool, string) {
	r.sensorMu.Lock()
	defer r.sensorMu.Unlock()
	for _, ifn := range r.cfg.Interfaces {
		if _, ok := r.attached[ifn]; !ok {
			return false, ifn
		}
	}
	return true, ""
}

// interfaceStats reads the kernel's counters of each capture interface.
func (r *runState) interfaceStats() []metrics.Interface {
	r.sensorMu.Lock()
	modes := make(map[string]string, len(r.attached))
	for n, a := range r.attached {
		modes[n] = string(a.mode)
	}
	r.sensorMu.Unlock()
	out := make([]metrics.Interface, 0, len(r.cfg.Interfaces))
	for _, ifn := range r.cfg.Interfaces {
		i := metrics.Interface{Name: ifn, Mode: modes[ifn]}
		if lnk, err := netlink.LinkByName(ifn); err == nil {
			a := lnk.Attrs()
			i.Up = a.Flags&net.FlagUp != 0
			if st := a.Statistics; st != nil {
				i.RxPackets, i.RxBytes, i.RxDropped = st.RxPackets, st.RxBytes, st.RxDropped
			}
			r.sensorMu.Lock()
			if r.sensor != nil && !r.stopping.Load() {
				if c, err := r.sensor.InterfaceCounters(a.Index); err == nil {
					i.XDP = c
				}
			}
			r.sensorMu.Unlock()
		}
		out = append(out, i)
	}
	return out
}
