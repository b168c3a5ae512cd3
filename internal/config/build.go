package config

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/coverage"
	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/sensor"
)

// SensorConfig returns the XDP program's configuration: sensor.* with the
// knock taken from the rule. The knock — how many distinct closed ports
// (rule.min_ports) within how long (rule.knock_window) — is defined once:
// the sensor flags exactly what the engine calls a knock. sensor.min_ports
// and sensor.window may be left out (the default); a value that differs
// from the rule's is refused, since a sensor knock wider than the rule's
// floods the engine with flags it throws away, and a narrower one hides
// knocks the rule would alert on. sensor.flag_ttl is derived from the
// rule's windows too when left out, and refused when shorter than they need.
func (c *Config) SensorConfig() (sensor.Config, error) {
	s := c.Sensor
	var errs []string
	switch {
	case s.MinPorts == 0:
		s.MinPorts = c.Rule.MinPorts
	case s.MinPorts != c.Rule.MinPorts:
		errs = append(errs, fmt.Sprintf("sensor.min_ports %d differs from rule.min_ports %d", s.MinPorts, c.Rule.MinPorts))
	}
	switch {
	case s.Window == 0:
		s.Window = c.Rule.KnockWindow
	case s.Window != c.Rule.KnockWindow:
		errs = append(errs, fmt.Sprintf("sensor.window %v differs from rule.knock_window %v", s.Window, c.Rule.KnockWindow))
	}
	if len(errs) > 0 {
		return s, fmt.Errorf("%s: the knock is defined once, by rule.min_ports and rule.knock_window; remove sensor.min_ports and sensor.window (the sensor takes the rule's)",
			strings.Join(errs, "; "))
	}
	// A flag must watch the pair's handshakes for as long as the rule
	// can use one: the change may follow the knock by change_after, the
	// handshake the change by handshake_after, each with the clock skew.
	need := c.Rule.ChangeAfter + c.Rule.HandshakeAfter + 2*c.Rule.Skew
	switch {
	case s.FlagTTL == 0:
		s.FlagTTL = need
	case s.FlagTTL < need:
		return s, fmt.Errorf("sensor.flag_ttl %v is shorter than rule.change_after + rule.handshake_after + 2 rule.skew = %v: handshakes the rule would alert on would go unreported; remove sensor.flag_ttl (it is derived) or raise it", s.FlagTTL, need)
	}
	if err := s.Validate(); err != nil {
		return s, fmt.Errorf("sensor: %w", err)
	}
	return s, nil
}

// Built is what a configuration gives the parts that join the evidence,
// built once for `knockwatch run`, `knockwatch replay` and a reload.
type Built struct {
	// Sensor is the XDP program's (or its twin's) configuration.
	Sensor sensor.Config
	// Pipeline is the correlation engine (rule, caps, suppression lists,
	// inventory), the decoders and the alert batching.
	Pipeline pipeline.Config
	// Allowed are suppression.allowed_sources: suppressed by the engine
	// and never flagged by the sensor (its allowlist).
	Allowed []netip.Prefix
	// Inventory maps host names to addresses (hosts); empty when no file
	// is configured. Hosts is the number of names it holds.
	Inventory correlate.Inventory
	Hosts     int
	// Coverage is coverage's configuration; nil when coverage.enabled is
	// false. NewCoverage makes the tracker.
	Coverage *coverage.Config
	// CoverageNetworks are coverage.networks: the program records the
	// destinations of SYNs inside them for coverage (nil when coverage is
	// off).
	CoverageNetworks []netip.Prefix
	// EvidenceLog and Ledger are the evidence log (state_dir/evidence) and
	// the ledger of delivered alerts (state_dir/alerts); the daemon adds
	// its logger.
	EvidenceLog evidence.LogConfig
	Ledger      evidence.LedgerConfig
}

// EvidenceMaxAge is evidence_log.max_age, or when 0 the rule's retention
// + sensor lateness + skew + a minute: everything a rebuild reads.
func (c *Config) EvidenceMaxAge() time.Duration {
	if c.EvidenceLog.MaxAge > 0 {
		return c.EvidenceLog.MaxAge
	}
	return c.Rule.Retention + c.Rule.SensorLateness + c.Rule.Skew + time.Minute
}

// Build checks the sensor, rule, suppression and decoder settings, reads
// the hosts file, and returns what the pipeline and the sensor need.
func (c *Config) Build() (Built, error) {
	var b Built
	var err error
	if b.Sensor, err = c.SensorConfig(); err != nil {
		return b, err
	}
	ec, err := c.EngineConfig()
	if err != nil {
		return b, err
	}
	if err := ec.Validate(); err != nil {
		return b, fmt.Errorf("rule: %w", err)
	}
	dopts, err := c.DecoderOptions()
	if err != nil {
		return b, err
	}
	if b.Allowed, err = c.Suppression.AllowedPrefixes(); err != nil {
		return b, err
	}
	var h *correlate.Hosts
	if c.Hosts != "" {
		if h, err = correlate.ReadHostsFile(c.Hosts); err != nil {
			return b, err
		}
	} else if h, err = correlate.ParseHosts(strings.NewReader("")); err != nil {
		return b, err
	}
	b.Inventory, b.Hosts = h, h.Len()
	b.Pipeline = pipeline.Config{
		Engine:         ec,
		EngineOptions:  []correlate.Option{correlate.WithInventory(h)},
		DecoderOptions: dopts,
		BatchSize:      c.Pipeline.BatchSize,
		FlushInterval:  c.Pipeline.FlushInterval,
		MaxQueued:      c.Pipeline.MaxQueued,
		CloseTimeout:   c.ShutdownTimeout,
	}
	if b.Pipeline.Bindings, err = c.Bindings(); err != nil {
		return b, err
	}
	if c.Coverage.Enabled {
		cc := c.CoverageConfig()
		if err := cc.Validate(); err != nil {
			return b, fmt.Errorf("coverage: %w", err)
		}
		b.Coverage = &cc
		if b.CoverageNetworks, err = c.Coverage.CoverageNetworks(); err != nil {
			return b, err
		}
	}
	maxAge := c.EvidenceMaxAge()
	b.EvidenceLog = evidence.LogConfig{
		Dir: filepath.Join(c.StateDir, "evidence"), MaxAge: maxAge, MaxBytes: c.EvidenceLog.MaxBytes,
		SegmentBytes: c.EvidenceLog.SegmentBytes, Fsync: c.EvidenceLog.Fsync,
	}
	// The ledger must outlive every alert the log can still bring back:
	// the log's age plus the hour an event time may sit past its arrival,
	// plus the rule's retention.
	b.Ledger = evidence.LedgerConfig{
		Dir: filepath.Join(c.StateDir, "alerts"), MaxAge: maxAge + time.Hour + c.Rule.Retention, Fsync: c.EvidenceLog.Fsync,
	}
	return b, nil
}

// NewCoverage makes the coverage tracker for b (nil when coverage is
// off), knowing the inventory's hosts, and sets it in b.Pipeline.
func (b *Built) NewCoverage() (*coverage.Tracker, error) {
	if b.Coverage == nil {
		return nil, nil
	}
	var res coverage.Resolver
	if h, ok := b.Inventory.(*correlate.Hosts); ok {
		res = h
	}
	t, err := coverage.New(*b.Coverage, res)
	if err != nil {
		return nil, fmt.Errorf("start coverage: %w", err)
	}
	if h, ok := b.Inventory.(*correlate.Hosts); ok {
		t.SetInventory(pipeline.InventoryHosts(h))
	}
	b.Pipeline.Coverage = t
	return t, nil
}
