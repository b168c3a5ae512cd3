package correlate

import (
	"fmt"
	"time"
)

// Config holds the rule's parameters, the retention and the state caps.
// Start from DefaultConfig and change what you need; New rejects a Config
// whose required values are zero or out of range.
type Config struct {
	// MinPorts is how many distinct closed ports make a knock (default 3).
	MinPorts int
	// MaxPorts is the most distinct closed ports a knock may touch; a
	// source touching more within KnockWindow is scanning (default 16,
	// at most 63).
	MaxPorts int
	// KnockWindow is the span the knock's distinct ports must fit in
	// (default 30 s).
	KnockWindow time.Duration
	// ChangeAfter is how long after the knock's last touch the exposure
	// change may happen (default 60 s).
	ChangeAfter time.Duration
	// Skew is the tolerated difference between host and sensor clocks:
	// a change may be up to Skew before the knock's last touch, and the
	// handshake up to Skew before the change (default 5 s; 0 is allowed).
	Skew time.Duration
	// HandshakeAfter is how long after the change the source's first
	// handshake may complete (default 300 s).
	HandshakeAfter time.Duration
	// Retention is how long evidence is kept, in event time behind the
	// watermark (default 20 min). It is also how far back a closed
	// observation of the port (PortLastClosed) counts for the
	// network-only medium alert.
	Retention time.Duration
	// SensorLateness is how far the sensor's records may be out of order
	// (interleaving across CPUs); the watermark trails the newest sensor
	// time by this much (default 5 s; 0 is allowed).
	SensorLateness time.Duration
	// MaxClockOffset bounds the host clock offset a measurement may apply
	// (SetHostClock): a host measured further off keeps Skew alone, and
	// no measurement, forged or not, can move a change by more (default
	// 10 min; a Windows domain member more than 5 min off fails Kerberos).
	MaxClockOffset time.Duration

	// MaxPairs caps tracked (source, destination) pairs (default 262144).
	MaxPairs int
	// MaxChanges caps pending exposure changes, including changes whose
	// host name is not (yet) in the inventory (default 65536).
	MaxChanges int
	// MaxHandshakes caps pending and alerted handshakes (default 65536).
	MaxHandshakes int
	// MaxTouchesPerPair caps the touches kept per pair (default 64, at
	// most 64); the oldest are dropped first.
	MaxTouchesPerPair int

	// ServiceStartOpens makes a service start (7045/7036, no port) count
	// as a port-less change (medium). Off by default: issue 3 ranks it as
	// weak evidence.
	ServiceStartOpens bool
	// EmitSuppressed emits suppressed matches (knockwatch.suppressed
	// true) instead of only counting them.
	EmitSuppressed bool
	// Suppression holds the analyst's tuning knobs.
	Suppression Suppression
}

// DefaultConfig returns the defaults of issue 4.
func DefaultConfig() Config {
	return Config{
		MinPorts:          3,
		MaxPorts:          16,
		KnockWindow:       30 * time.Second,
		ChangeAfter:       60 * time.Second,
		Skew:              5 * time.Second,
		HandshakeAfter:    300 * time.Second,
		Retention:         20 * time.Minute,
		SensorLateness:    5 * time.Second,
		MaxClockOffset:    10 * time.Minute,
		MaxPairs:          1 << 18,
		MaxChanges:        1 << 16,
		MaxHandshakes:     1 << 16,
		MaxTouchesPerPair: 64,
	}
}

// Validate reports the first invalid value.
func (c *Config) Validate() error {
	switch {
	case c.MinPorts < 1:
		return fmt.Errorf("validate config: min ports %d must be at least 1", c.MinPorts)
	case c.MaxPorts < c.MinPorts:
		return fmt.Errorf("validate config: max ports %d is below min ports %d", c.MaxPorts, c.MinPorts)
	case c.MaxPorts > 63:
		return fmt.Errorf("validate config: max ports %d is above 63", c.MaxPorts)
	case c.KnockWindow <= 0:
		return fmt.Errorf("validate config: knock window %v must be positive", c.KnockWindow)
	case c.ChangeAfter <= 0:
		return fmt.Errorf("validate config: change-after window %v must be positive", c.ChangeAfter)
	case c.Skew < 0:
		return fmt.Errorf("validate config: skew %v is negative", c.Skew)
	case c.HandshakeAfter <= 0:
		return fmt.Errorf("validate config: handshake-after window %v must be positive", c.HandshakeAfter)
	case c.SensorLateness < 0:
		return fmt.Errorf("validate config: sensor lateness %v is negative", c.SensorLateness)
	case c.MaxClockOffset < 0 || c.MaxClockOffset > c.Retention:
		return fmt.Errorf("validate config: max clock offset %v must be between 0 and the retention %v", c.MaxClockOffset, c.Retention)
	case c.Retention < c.KnockWindow+c.ChangeAfter+c.HandshakeAfter+c.Skew:
		return fmt.Errorf("validate config: retention %v is shorter than knock window + change-after + handshake-after + skew (%v)",
			c.Retention, c.KnockWindow+c.ChangeAfter+c.HandshakeAfter+c.Skew)
	case c.MaxPairs < 1:
		return fmt.Errorf("validate config: max pairs %d must be at least 1", c.MaxPairs)
	case c.MaxChanges < 1:
		return fmt.Errorf("validate config: max changes %d must be at least 1", c.MaxChanges)
	case c.MaxHandshakes < 1:
		return fmt.Errorf("validate config: max handshakes %d must be at least 1", c.MaxHandshakes)
	case c.MaxTouchesPerPair < c.MaxPorts+1 || c.MaxTouchesPerPair > 64:
		return fmt.Errorf("validate config: max touches per pair %d must exceed max ports %d and be at most 64", c.MaxTouchesPerPair, c.MaxPorts)
	}
	return nil
}
