//go:build linux

package loader

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/cilium/ebpf/link"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/vishvananda/netlink"
)

// Attach attaches the program to the interface named ifname and returns the
// mode that took. It fails with a clear reason when the interface does not
// exist, is down, or does not support the mode.
func (s *Sensor) Attach(ifname string, mode sensor.Mode) (sensor.Mode, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", fmt.Errorf("attach to %s: %w", ifname, ErrSensorClosed)
	}
	if _, ok := s.links[ifname]; ok {
		return "", fmt.Errorf("attach to %s: already attached", ifname)
	}
	lnk, err := netlink.LinkByName(ifname)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return "", fmt.Errorf("attach to %s: no such interface", ifname)
		}
		return "", fmt.Errorf("look up interface %s: %w", ifname, err)
	}
	attrs := lnk.Attrs()
	if attrs.Flags&net.FlagUp == 0 {
		return "", fmt.Errorf("attach to %s: interface is down (ip link set %s up)", ifname, ifname)
	}
	try := []sensor.Mode{mode}
	if mode == sensor.ModeAuto {
		try = []sensor.Mode{sensor.ModeNative, sensor.ModeGeneric}
	}
	var errs []error
	for _, m := range try {
		flags := link.XDPDriverMode
		if m == sensor.ModeGeneric {
			flags = link.XDPGenericMode
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: s.objs.Knockwatch, Interface: attrs.Index, Flags: flags})
		if err == nil {
			s.links[ifname] = l
			return m, nil
		}
		errs = append(errs, fmt.Errorf("%s mode: %w", m, explainAttach(err, m)))
	}
	return "", fmt.Errorf("attach to %s: %w", ifname, errors.Join(errs...))
}

func explainAttach(err error, m sensor.Mode) error {
	switch {
	case errors.Is(err, syscall.EOPNOTSUPP) && m == sensor.ModeNative:
		return fmt.Errorf("%w (the driver has no native XDP; use --xdp-mode generic)", err)
	case errors.Is(err, syscall.EBUSY), errors.Is(err, syscall.EEXIST):
		return fmt.Errorf("%w (another XDP program is attached)", err)
	case errors.Is(err, syscall.ERANGE) && m == sensor.ModeNative:
		return fmt.Errorf("%w (MTU too large for native XDP on this driver; lower it or use --xdp-mode generic)", err)
	}
	return explainPerm(err)
}

// Detach detaches the program from ifname. Detaching an interface that
// already disappeared is not an error.
func (s *Sensor) Detach(ifname string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.links[ifname]
	if !ok {
		return nil
	}
	delete(s.links, ifname)
	if err := l.Close(); err != nil {
		return fmt.Errorf("detach from %s: %w", ifname, err)
	}
	return nil
}

// Attached lists the interfaces the program is attached to.
func (s *Sensor) Attached() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := make([]string, 0, len(s.links))
	for n := range s.links {
		names = append(names, n)
	}
	return names
}
