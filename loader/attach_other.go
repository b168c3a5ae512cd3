//go:build !linux

package loader

import (
	"errors"
	"fmt"
)

// Mode is how the program is attached to an interface.
type Mode string

// Attach modes.
const (
	ModeAuto    Mode = "auto"
	ModeNative  Mode = "native"
	ModeGeneric Mode = "generic"
)

// ErrNotLinux is returned by everything that needs a Linux kernel.
var ErrNotLinux = errors.New("XDP needs Linux")

// ParseMode checks a --xdp-mode value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeNative, ModeGeneric:
		return m, nil
	}
	return "", fmt.Errorf("xdp mode %q: must be auto, native or generic", s)
}

// Attach fails off Linux.
func (s *Sensor) Attach(ifname string, mode Mode) (Mode, error) {
	return "", fmt.Errorf("attach to %s: %w", ifname, ErrNotLinux)
}

// Detach does nothing off Linux.
func (s *Sensor) Detach(string) error { return nil }

// Attached lists nothing off Linux.
func (s *Sensor) Attached() []string { return nil }
