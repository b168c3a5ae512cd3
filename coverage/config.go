package coverage

import (
	"fmt"
	"time"
)

// Config tunes a Tracker. Start from DefaultConfig.
type Config struct {
	// Sample requests: while a host's clock is not measured, at most one
	// request per SampleInterval; once measured, one per RefreshInterval.
	// A request waits SampleTTL for its handshake. MaxRequests bounds the
	// requests out at once (the program's table, sensor.samples).
	SampleInterval  time.Duration
	RefreshInterval time.Duration
	SampleTTL       time.Duration
	MaxRequests     int

	// Clock estimate: at least MinSamples matched connections from
	// MinSources peers (each peer one vote: the median of its samples)
	// that agree within Agreement of the median, and more than half of
	// the peers. Samples older than SampleMaxAge are
	// forgotten; MaxSamples are kept per host. MaxOffset bounds what is
	// applied (as the engine's rule.max_clock_offset). MatchWait is how
	// long a handshake waits for its host's event and the reverse
	// (forwarded events are late by design: WEF batches 15 minutes).
	MinSamples   int
	MinSources   int
	Agreement    time.Duration
	SampleMaxAge time.Duration
	MaxSamples   int
	MaxOffset    time.Duration
	MatchWait    time.Duration
	// Skew is the rule's tolerance: a measured offset beyond it is worth
	// a finding (alerts depend on the correction).
	Skew time.Duration

	// Host side: a host taking traffic and sending no event for
	// NoEventsAfter is host-side blind; a channel it used that is quiet for
	// QuietAfter while traffic continues has gone quiet; a median event lag
	// above LagWarn is a finding.
	NoEventsAfter time.Duration
	QuietAfter    time.Duration
	LagWarn       time.Duration

	// Network side: the counters are judged over NetWindow; a verdict
	// needs MinSYN SYNs (or answers) in it. A host is network-side blind
	// with HostMinUnanswered unanswered touches and no answer within
	// HostWindow.
	NetWindow         time.Duration
	MinSYN            int
	HostMinUnanswered int
	HostWindow        time.Duration

	// Bounds: hosts tracked, connection events and sensor handshakes
	// waiting for their match.
	MaxHosts   int
	MaxPending int
}

// DefaultConfig returns the defaults (docs/CONFIG.md, coverage).
func DefaultConfig() Config {
	return Config{
		SampleInterval:    30 * time.Second,
		RefreshInterval:   5 * time.Minute,
		SampleTTL:         2 * time.Minute,
		MaxRequests:       1024,
		MinSamples:        3,
		MinSources:        2,
		Agreement:         time.Second,
		SampleMaxAge:      6 * time.Hour,
		MaxSamples:        32,
		MaxOffset:         10 * time.Minute,
		MatchWait:         20 * time.Minute,
		Skew:              5 * time.Second,
		NoEventsAfter:     10 * time.Minute,
		QuietAfter:        time.Hour,
		LagWarn:           2 * time.Minute,
		NetWindow:         30 * time.Second,
		MinSYN:            20,
		HostMinUnanswered: 6,
		HostWindow:        5 * time.Minute,
		MaxHosts:          4096,
		MaxPending:        16384,
	}
}

// Validate reports the first invalid value.
func (c *Config) Validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"sample_interval", c.SampleInterval}, {"refresh_interval", c.RefreshInterval}, {"sample_ttl", c.SampleTTL},
		{"agreement", c.Agreement}, {"sample_max_age", c.SampleMaxAge}, {"match_wait", c.MatchWait},
		{"no_events_after", c.NoEventsAfter}, {"quiet_after", c.QuietAfter}, {"lag_warn", c.LagWarn},
		{"net_window", c.NetWindow}, {"host_window", c.HostWindow}} {
		if d.v <= 0 {
			return fmt.Errorf("validate coverage config: %s %v must be positive", d.name, d.v)
		}
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"max_requests", c.MaxRequests}, {"min_samples", c.MinSamples}, {"min_sources", c.MinSources}, {"max_samples", c.MaxSamples},
		{"min_syn", c.MinSYN}, {"host_min_unanswered", c.HostMinUnanswered}, {"max_hosts", c.MaxHosts},
		{"max_pending", c.MaxPending}} {
		if n.v < 1 {
			return fmt.Errorf("validate coverage config: %s %d must be at least 1", n.name, n.v)
		}
	}
	switch {
	case c.MaxOffset < 0:
		return fmt.Errorf("validate coverage config: max offset %v is negative", c.MaxOffset)
	case c.Skew < 0:
		return fmt.Errorf("validate coverage config: skew %v is negative", c.Skew)
	case c.MaxSamples < c.MinSamples || c.MinSamples < c.MinSources:
		return fmt.Errorf("validate coverage config: want min sources %d <= min samples %d <= max samples %d",
			c.MinSources, c.MinSamples, c.MaxSamples)
	}
	return nil
}
