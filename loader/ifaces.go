//go:build linux

package loader

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/knockwatch/knockwatch/sensor"
)

// Log field names of the interface tracker.
const (
	fieldIface = "iface"
	fieldMode  = "mode"
)

// Interfaces keeps a sensor attached to a set of capture interfaces by
// name: it attaches each one, follows netlink link updates to re-attach an
// interface that disappears and comes back (a driver reload, a re-created
// veth), and reports which are attached and their counters. It is safe for
// concurrent use: the netlink watcher, a metrics scrape and the shutdown
// may run at once.
type Interfaces struct {
	s     *Sensor
	mode  sensor.Mode
	names []string
	log   *zap.Logger

	mu       sync.Mutex
	attached map[string]attachment
	stopped  bool
}

type attachment struct {
	mode  sensor.Mode
	index int
}

// NewInterfaces tracks names for s in mode; log may be nil.
func NewInterfaces(s *Sensor, names []string, mode sensor.Mode, log *zap.Logger) *Interfaces {
	if log == nil {
		log = zap.NewNop()
	}
	return &Interfaces{s: s, mode: mode, names: append([]string(nil), names...), log: log,
		attached: map[string]attachment{}}
}

// AttachAll attaches to every interface; the first failure is returned
// with the interface's name and, when native mode is not supported, the
// hint to use generic mode.
func (i *Interfaces) AttachAll() error {
	for _, name := range i.names {
		if err := i.attach(name); err != nil {
			return fmt.Errorf("--iface %s: %w%s", name, err, modeHint(i.mode, err))
		}
	}
	return nil
}

// modeHint adds the --xdp-mode generic hint when native mode failed.
func modeHint(mode sensor.Mode, err error) string {
	if mode == sensor.ModeNative && errors.Is(err, unix.EOPNOTSUPP) && !strings.Contains(err.Error(), "--xdp-mode generic") {
		return " (try --xdp-mode generic)"
	}
	return ""
}

func (i *Interfaces) attach(name string) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.stopped {
		return errors.New("shutting down")
	}
	lnk, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return errors.New("no such interface (ip -br link lists them)")
		}
		return fmt.Errorf("look up interface: %w", err)
	}
	_ = i.s.Detach(name) // stale bookkeeping after the link vanished
	m, err := i.s.Attach(name, i.mode)
	if err != nil {
		return err
	}
	i.attached[name] = attachment{mode: m, index: lnk.Attrs().Index}
	i.log.Info("attached", zap.String(fieldIface, name), zap.String(fieldMode, string(m)))
	return nil
}

// Watch re-attaches an interface that disappeared and came back, until
// ctx ends. It returns at once (with a warning) when netlink updates
// cannot be followed.
func (i *Interfaces) Watch(ctx context.Context) {
	want := map[string]bool{}
	for _, n := range i.names {
		want[n] = true
	}
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			if ctx.Err() == nil {
				i.log.Warn("netlink link updates", zap.Error(err))
			}
		},
	})
	if err != nil {
		i.log.Warn("cannot watch interfaces: a removed and re-added interface will not be re-attached", zap.Error(err))
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-updates:
			if !ok {
				if ctx.Err() == nil {
					i.log.Warn("netlink link updates ended: a re-added interface will not be re-attached")
				}
				return
			}
			if name := u.Attrs().Name; want[name] {
				i.update(name, u)
			}
		}
	}
}

func (i *Interfaces) update(name string, u netlink.LinkUpdate) {
	i.mu.Lock()
	if i.stopped {
		i.mu.Unlock()
		return
	}
	cur, attached := i.attached[name]
	if u.Header.Type == unix.RTM_DELLINK {
		if attached {
			delete(i.attached, name)
			_ = i.s.Detach(name)
			i.mu.Unlock()
			i.log.Warn("interface disappeared; will re-attach when it returns", zap.String(fieldIface, name))
			return
		}
		i.mu.Unlock()
		return
	}
	up := u.Attrs().Flags&net.FlagUp != 0
	if attached && cur.index == u.Attrs().Index {
		i.mu.Unlock()
		return // a flag change on an attached interface: the program stays
	}
	if attached { // same name, new link
		delete(i.attached, name)
		_ = i.s.Detach(name)
	}
	i.mu.Unlock()
	if !up {
		i.log.Info("interface is back but down; will attach when it is up", zap.String(fieldIface, name))
		return
	}
	if err := i.attach(name); err != nil {
		i.log.Error("re-attach failed", zap.String(fieldIface, name), zap.Error(err))
		return
	}
	i.log.Warn("interface returned: re-attached", zap.String(fieldIface, name))
}

// Ready reports whether every interface has the program, and if not the
// first that lacks it.
func (i *Interfaces) Ready() (bool, string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, n := range i.names {
		if _, ok := i.attached[n]; !ok {
			return false, n
		}
	}
	return true, ""
}

// Stats reads each interface's link counters and the program's own
// per-interface counters.
func (i *Interfaces) Stats() []sensor.InterfaceStats {
	i.mu.Lock()
	modes := make(map[string]string, len(i.attached))
	for n, a := range i.attached {
		modes[n] = string(a.mode)
	}
	i.mu.Unlock()
	out := make([]sensor.InterfaceStats, 0, len(i.names))
	for _, name := range i.names {
		st := sensor.InterfaceStats{Name: name, Mode: modes[name]}
		if lnk, err := netlink.LinkByName(name); err == nil {
			a := lnk.Attrs()
			st.Up = a.Flags&net.FlagUp != 0
			if ls := a.Statistics; ls != nil {
				st.RxPackets, st.RxBytes, st.RxDropped = ls.RxPackets, ls.RxBytes, ls.RxDropped
			}
			if c, err := i.s.InterfaceCounters(a.Index); err == nil {
				st.XDP = c
			}
		}
		out = append(out, st)
	}
	return out
}

// Stop forgets the attachments and stops re-attaching; the program is
// detached by the sensor's Close. It returns the interfaces that were
// attached.
func (i *Interfaces) Stop() []string {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.stopped = true
	names := make([]string, 0, len(i.attached))
	for n := range i.attached {
		names = append(names, n)
	}
	i.attached = map[string]attachment{}
	return names
}
