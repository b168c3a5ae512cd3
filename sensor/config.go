package sensor

import (
	"errors"
	"fmt"
	"math/bits"
	"time"
)

// MaxTouches is KW_MAX_TOUCHES in bpf/include/types.h: the touches a
// candidate keeps and a KNOCK record carries (loader's drift test checks it).
const MaxTouches = 16

// Config is the XDP program's load-time configuration: thresholds, windows,
// timeouts, map sizes and the verdict. Nothing of it is compiled into the
// program. The zero value is not useful; start from DefaultConfig.
type Config struct {
	// MinPorts is N: distinct closed ports on one host that flag a source.
	MinPorts int `yaml:"min_ports"`
	// Window is W: the N touches must fall within it.
	Window time.Duration `yaml:"window"`
	// S0Timeout: a SYN with no SYN-ACK and no RST this long is an S0 touch.
	S0Timeout time.Duration `yaml:"s0_timeout"`
	// HandshakeTimeout bounds SYN to completing ACK of a watched handshake.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// PortRefresh: port-state timestamps are rewritten only when older.
	PortRefresh time.Duration `yaml:"port_refresh"`

	// PairSlots sizes the direct-mapped table of first touches and pending
	// SYNs (rounded up to a power of two).
	PairSlots uint32 `yaml:"pair_slots"`
	// PortSlots sizes the direct-mapped port-state table (power of two).
	PortSlots uint32 `yaml:"port_slots"`
	// Candidates: pairs with two or more closed touches (LRU).
	Candidates uint32 `yaml:"candidates"`
	// Flagged: pairs that knocked, kept apart from candidates (LRU).
	Flagged uint32 `yaml:"flagged"`
	// Watches: handshakes of flagged pairs in flight (LRU).
	Watches uint32 `yaml:"watches"`
	// Allowlist: maximum number of allowlisted prefixes.
	Allowlist uint32 `yaml:"allowlist"`
	// RingBytes sizes the ring buffer of records (a power of two, >= page).
	RingBytes uint32 `yaml:"ring_bytes"`

	// Pass makes the verdict XDP_PASS (inline or lab use); the default is
	// XDP_DROP, since a capture port's packets are copies nobody needs.
	Pass bool `yaml:"pass"`
	// CoarseClock stamps live packets with CLOCK_MONOTONIC_COARSE (one
	// scheduler tick, 1-4 ms) instead of CLOCK_TAI (ns), which costs a
	// third as much per SYN on a VM. Events within one tick then share a
	// timestamp, so "who connected first" can become a tie; the precise
	// clock is the default.
	CoarseClock bool `yaml:"coarse_clock"`
	// Replay takes each packet's time from 8 bytes of XDP metadata
	// (unix ns) instead of the clock: recorded captures drive the state
	// machine with their own timestamps.
	Replay bool `yaml:"-"`
	// HashSeed keys the direct-mapped tables; 0 picks a random seed at load.
	HashSeed uint32 `yaml:"-"`
	// ReportTouches makes the program send a TouchRecord for every
	// closed-port touch (replay --touches); never set live.
	ReportTouches bool `yaml:"-"`
}

// DefaultConfig is sized for a busy 10 GbE link; see docs/ARCHITECTURE.md
// for the kernel memory each map takes.
func DefaultConfig() Config {
	return Config{
		MinPorts:         3,
		Window:           30 * time.Second,
		S0Timeout:        2 * time.Second,
		HandshakeTimeout: 30 * time.Second,
		PortRefresh:      time.Second,
		PairSlots:        1 << 18,
		PortSlots:        1 << 16,
		Candidates:       65536,
		Flagged:          16384,
		Watches:          4096,
		Allowlist:        1024,
		RingBytes:        4 << 20,
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.MinPorts < 2 || c.MinPorts > MaxTouches {
		errs = append(errs, fmt.Errorf("min_ports %d: must be between 2 and %d", c.MinPorts, MaxTouches))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"window", c.Window}, {"s0_timeout", c.S0Timeout}, {"handshake_timeout", c.HandshakeTimeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s %v: must be positive", d.name, d.v))
		}
	}
	if c.PortRefresh < 0 {
		errs = append(errs, fmt.Errorf("port_refresh %v: must not be negative", c.PortRefresh))
	}
	for _, m := range []struct {
		name string
		v    uint32
	}{{"pair_slots", c.PairSlots}, {"port_slots", c.PortSlots}, {"candidates", c.Candidates},
		{"flagged", c.Flagged}, {"watches", c.Watches}, {"allowlist", c.Allowlist}} {
		if m.v == 0 || m.v > 1<<26 {
			errs = append(errs, fmt.Errorf("%s %d: must be between 1 and %d", m.name, m.v, 1<<26))
		}
	}
	if c.RingBytes < 4096 || c.RingBytes&(c.RingBytes-1) != 0 {
		errs = append(errs, fmt.Errorf("ring_bytes %d: must be a power of two of at least 4096", c.RingBytes))
	}
	return errors.Join(errs...)
}

// RoundPow2 rounds v up to a power of two (at least 1), as the loader and
// the Go twin size the direct-mapped tables.
func RoundPow2(v uint32) uint32 {
	if v <= 1 {
		return 1
	}
	return 1 << bits.Len32(v-1)
}
