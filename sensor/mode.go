package sensor

import "fmt"

// Mode is how the program is attached to an interface.
type Mode string

// Attach modes. Auto tries native (driver) XDP and falls back to generic.
const (
	ModeAuto    Mode = "auto"
	ModeNative  Mode = "native"
	ModeGeneric Mode = "generic"
)

// ParseMode checks an --xdp-mode value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeNative, ModeGeneric:
		return m, nil
	}
	return "", fmt.Errorf("xdp mode %q: must be auto, native or generic", s)
}

// Verdicts the program returns for a packet (enum xdp_action).
const (
	XDPDrop = 1
	XDPPass = 2
)
