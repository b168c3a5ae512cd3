//go:build !linux

package loader

import (
	"errors"
	"fmt"

	"github.com/knockwatch/knockwatch/sensor"
)

// ErrNotLinux is returned by everything that needs a Linux kernel.
var ErrNotLinux = errors.New("XDP needs Linux")

// Attach fails off Linux.
func (s *Sensor) Attach(ifname string, mode sensor.Mode) (sensor.Mode, error) {
	return "", fmt.Errorf("attach to %s: %w", ifname, ErrNotLinux)
}

// Detach does nothing off Linux.
func (s *Sensor) Detach(string) error { return nil }

// Attached lists nothing off Linux.
func (s *Sensor) Attached() []string { return nil }
