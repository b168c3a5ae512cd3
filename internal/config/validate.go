package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/internal/binding"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents"
)

// ErrUnauthenticated marks a listener on a non-loopback address without
// authentication (and without Listeners.Insecure).
var ErrUnauthenticated = errors.New("listener on a non-loopback address needs authentication")

// Validate reports every setting that cannot work, each naming its key.
func (c *Config) Validate() error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if _, err := sensor.ParseMode(c.XDPMode); err != nil {
		add("xdp_mode", "%q is not auto, native or generic", c.XDPMode)
	}
	for i, ifn := range c.Interfaces {
		if strings.TrimSpace(ifn) == "" || len(ifn) > 15 || strings.ContainsAny(ifn, "/ \t") {
			add(fmt.Sprintf("interfaces[%d]", i), "%q is not an interface name", ifn)
		}
	}
	if _, err := zapcore.ParseLevel(c.LogLevel); err != nil {
		add("log_level", "%q is not debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "auto", "json", "console":
	default:
		add("log_format", "%q is not auto, json or console", c.LogFormat)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"sweep_interval", c.SweepInterval}, {"advance_interval", c.AdvanceInterval},
		{"shutdown_timeout", c.ShutdownTimeout}, {"pipeline.flush_interval", c.Pipeline.FlushInterval},
	} {
		if d.v <= 0 {
			add(d.key, "%v must be positive", d.v)
		}
	}
	if _, err := c.SensorConfig(); err != nil {
		errs = append(errs, err)
	}
	ec, err := c.EngineConfig()
	if err != nil {
		errs = append(errs, err)
	} else if err := ec.Validate(); err != nil {
		add("rule", "%v", err)
	}
	if _, err := c.DecoderOptions(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.Listeners.validate()...)
	if _, err := c.Bindings(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.Alerts.validate()...)
	if c.Metrics.Addr != "" {
		if err := checkAddr(c.Metrics.Addr); err != nil {
			add("metrics.addr", "%v", err)
		}
	}
	if c.MemoryLimit < 0 {
		add("memory_limit", "%d is negative (0 turns it off)", c.MemoryLimit)
	}
	errs = append(errs, c.validateState()...)
	errs = append(errs, c.validateRole()...)
	if c.Coverage.Enabled {
		cc := c.CoverageConfig()
		if err := cc.Validate(); err != nil {
			add("coverage", "%v", err)
		}
		if _, err := c.Coverage.CoverageNetworks(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Pipeline.BatchSize <= 0 || c.Pipeline.MaxQueued < 2 {
		add("pipeline", "batch_size must be positive and max_queued at least 2")
	}
	return errors.Join(errs...)
}

// EngineConfig returns the correlation engine's configuration with the
// suppression lists.
func (c *Config) EngineConfig() (correlate.Config, error) {
	s, err := c.Suppression.Correlate()
	if err != nil {
		return correlate.Config{}, err
	}
	r := c.Rule
	return correlate.Config{
		MinPorts: r.MinPorts, MaxPorts: r.MaxPorts, KnockWindow: r.KnockWindow, ChangeAfter: r.ChangeAfter,
		Skew: r.Skew, HandshakeAfter: r.HandshakeAfter, Retention: r.Retention, SensorLateness: r.SensorLateness,
		MaxPairs: r.MaxPairs, MaxChanges: r.MaxChanges, MaxHandshakes: r.MaxHandshakes,
		MaxTouchesPerPair: r.MaxTouchesPerPair, MaxClockOffset: r.MaxClockOffset, ServiceStartOpens: r.ServiceStartOpens,
		EmitSuppressed: r.EmitSuppressed, Suppression: s,
	}, nil
}

// AllowedPrefixes parses suppression.allowed_sources (CIDRs or single
// addresses).
func (s *Suppression) AllowedPrefixes() ([]netip.Prefix, error) {
	return parsePrefixes("suppression.allowed_sources", s.AllowedSources)
}

// parsePrefixes parses the list key (CIDRs or single addresses, masked).
func parsePrefixes(key string, vs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(vs))
	for i, v := range vs {
		v = strings.TrimSpace(v)
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				return nil, fmt.Errorf("%s[%d]: %q is not a CIDR prefix or an address", key, i, v)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Correlate converts the lists to correlate.Suppression.
func (s *Suppression) Correlate() (correlate.Suppression, error) {
	allowed, err := s.AllowedPrefixes()
	if err != nil {
		return correlate.Suppression{}, err
	}
	out := correlate.Suppression{
		AllowedSources:    allowed,
		HostGroups:        s.HostGroups,
		AdminUsers:        s.AdminUsers,
		AdminApplications: s.AdminApplications,
	}
	for i, w := range s.ChangeWindows {
		key := fmt.Sprintf("suppression.change_windows[%d]", i)
		switch {
		case w.Start.IsZero() || w.End.IsZero():
			return out, fmt.Errorf("%s: start and end are required (RFC 3339, e.g. 2026-01-10T22:00:00Z)", key)
		case !w.End.After(w.Start):
			return out, fmt.Errorf("%s: end %s is not after start %s", key, w.End.Format(time.RFC3339), w.Start.Format(time.RFC3339))
		case len(w.Hosts) == 0 && len(w.Groups) == 0:
			return out, fmt.Errorf("%s: names no host or group", key)
		}
		for _, g := range w.Groups {
			if _, ok := s.HostGroups[g]; !ok {
				return out, fmt.Errorf("%s: unknown host group %q (define it under suppression.host_groups)", key, g)
			}
		}
		out.ChangeWindows = append(out.ChangeWindows, correlate.ChangeWindow{Hosts: w.Hosts, Groups: w.Groups, Start: w.Start, End: w.End})
	}
	return out, nil
}

// DecoderOptions converts the decoder settings, loading the zones.
func (c *Config) DecoderOptions() (winevents.Options, error) {
	d := c.Decoder
	o := winevents.Options{
		DedupeSize: d.DedupeSize, MaxHosts: d.MaxHosts, MaxPerHost: d.MaxPerHost, JoinWindow: d.JoinWindow,
		MaxEventBytes: d.MaxEventBytes, MaxPayloadBytes: d.MaxPayloadBytes,
	}
	if d.DefaultZone != "" {
		loc, err := time.LoadLocation(d.DefaultZone)
		if err != nil {
			return o, fmt.Errorf("decoder.default_zone: %w", err)
		}
		o.DefaultZone = loc
	}
	if len(d.Zones) > 0 {
		o.Zones = make(map[string]*time.Location, len(d.Zones))
		for host, name := range d.Zones {
			loc, err := time.LoadLocation(name)
			if err != nil {
				return o, fmt.Errorf("decoder.zones.%s: %w", host, err)
			}
			o.Zones[host] = loc
		}
	}
	if d.DedupeSize < 0 || d.MaxHosts < 0 || d.MaxPerHost < 0 || d.JoinWindow < 0 || d.MaxEventBytes < 0 || d.MaxPayloadBytes < 0 {
		return o, errors.New("decoder: sizes and windows must not be negative")
	}
	return o, nil
}

func (l *Listeners) validate() []error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if (l.TLSCert == "") != (l.TLSKey == "") {
		add("listeners", "tls_cert and tls_key (--tls-cert, --tls-key) go together")
	}
	if l.ClientCA != "" && l.TLSCert == "" {
		add("listeners.client_ca", "mTLS needs a server certificate (--tls-cert, --tls-key)")
	}
	mtls := l.ClientCA != "" && l.TLSCert != ""
	check := func(key, flagName, addr string, authed bool, how string) {
		if addr == "" {
			return
		}
		if err := checkAddr(addr); err != nil {
			add(key, "%v", err)
			return
		}
		if !authed && !l.Insecure && !IsLoopback(addr) {
			errs = append(errs, fmt.Errorf("%s (%s %s): %w: %s, or bind it to 127.0.0.1, or pass --insecure-listeners",
				key, flagName, addr, ErrUnauthenticated, how))
		}
	}
	check("listeners.http.addr", "--events-http", l.HTTP.Addr, l.TokenFile != "" || mtls,
		"give --token-file (bearer token) or --tls-cert/--tls-key/--client-ca (mTLS)")
	if l.Syslog.Addr != "" {
		if l.SyslogTCP() {
			check("listeners.syslog.addr", "--events-syslog", l.Syslog.Addr, mtls,
				"syslog over TCP authenticates only with mTLS: give --tls-cert/--tls-key/--client-ca")
		}
		if l.SyslogUDP() {
			check("listeners.syslog.addr", "--events-syslog (UDP)", l.Syslog.Addr, false,
				"syslog over UDP cannot authenticate: set listeners.syslog.udp: false")
		}
		if !l.SyslogTCP() && !l.SyslogUDP() {
			add("listeners.syslog", "udp and tcp are both off")
		}
	}
	check("listeners.beats.addr", "--events-beats", l.Beats.Addr, mtls,
		"Beats authenticates with mTLS: give --tls-cert/--tls-key/--client-ca")
	for i, p := range l.Files.Paths {
		if strings.TrimSpace(p) == "" {
			add(fmt.Sprintf("listeners.files.paths[%d]", i), "empty path")
		}
	}
	if l.HTTP.MaxBodyBytes <= 0 {
		add("listeners.http.max_body_bytes", "must be positive")
	}
	switch l.UnboundForwarders {
	case "allow", "refuse":
	default:
		add("listeners.unbound_forwarders", "%q is not allow or refuse", l.UnboundForwarders)
	}
	for name := range l.Tokens {
		if name == "" || name == "default" {
			add("listeners.tokens", "%q is not a usable token name (the token of token_file is \"default\")", name)
		}
	}
	if l.PreAuthTimeout <= 0 || l.MaxPreAuthConns <= 0 || l.MaxPreAuthPerSource <= 0 {
		add("listeners", "preauth_timeout, max_preauth_conns and max_preauth_per_source must be positive")
	}
	if min := max(l.HTTP.MaxBodyBytes, int64(l.Beats.MaxEventBytes)); l.MemoryBudget < min {
		add("listeners.memory_budget", "%d is below the largest single message (max_body_bytes / beats.max_event_bytes: %d)", l.MemoryBudget, min)
	}
	return errs
}

// Bindings compiles listeners.forwarders (with the host groups of
// suppression.host_groups).
func (c *Config) Bindings() (*binding.Policy, error) {
	l := c.Listeners
	bc := binding.Config{RefuseUnbound: l.UnboundForwarders == "refuse"}
	for i, f := range l.Forwarders {
		hosts := append([]string(nil), f.Hosts...)
		for _, g := range f.Groups {
			m, ok := c.Suppression.HostGroups[g]
			if !ok {
				return nil, fmt.Errorf("listeners.forwarders[%d]: unknown host group %q (define it under suppression.host_groups)", i, g)
			}
			hosts = append(hosts, m...)
		}
		if f.Token != "" && f.Token != "default" {
			_, ok := l.Tokens[f.Token]
			for _, r := range c.Kafka.Topics.Raw {
				// A raw topic's records carry its identity as their token name.
				ok = ok || r.Identity == f.Token
			}
			if !ok {
				return nil, fmt.Errorf("listeners.forwarders[%d]: unknown token %q (define it under listeners.tokens, or name it as a kafka.topics.raw identity)", i, f.Token)
			}
		}
		bc.Bindings = append(bc.Bindings, binding.Binding{Name: f.Name, Token: f.Token, CertSubject: f.CertSubject, Hosts: hosts})
	}
	p, err := binding.New(bc)
	if err != nil {
		return nil, fmt.Errorf("listeners.forwarders: %w", err)
	}
	return p, nil
}

// SyslogUDP reports whether the syslog listener serves UDP: by default
// only without TLS.
func (l *Listeners) SyslogUDP() bool {
	if l.Syslog.UDP != nil {
		return *l.Syslog.UDP
	}
	return l.TLSCert == ""
}

// SyslogTCP reports whether the syslog listener serves TCP (TLS when a
// certificate is configured); on by default.
func (l *Listeners) SyslogTCP() bool {
	return l.Syslog.TCP == nil || *l.Syslog.TCP
}

func (a *Alerts) validate() []error {
	var errs []error
	if a.Path == "" {
		errs = append(errs, errors.New("alerts.path: empty (use - for standard output)"))
	}
	if a.MaxBacklog <= 0 {
		errs = append(errs, errors.New("alerts.max_backlog: must be positive"))
	}
	switch a.Pretty {
	case "auto", "true", "false":
	default:
		errs = append(errs, fmt.Errorf("alerts.pretty: %q is not auto, true or false", a.Pretty))
	}
	w := a.Webhook
	if w.URL != "" {
		u, err := url.Parse(w.URL)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			errs = append(errs, fmt.Errorf("alerts.webhook.url: not an http(s) URL"))
		case w.SpoolDir == "":
			errs = append(errs, errors.New("alerts.webhook.spool_dir: required with a webhook url (alerts are spooled on disk until delivered)"))
		}
		if w.Format != "ndjson" && w.Format != "json-array" {
			errs = append(errs, fmt.Errorf("alerts.webhook.format: %q is not ndjson or json-array", w.Format))
		}
	}
	return errs
}

// checkAddr checks a host:port listen address.
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT: %w", addr, err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("%q: bad port", addr)
	}
	if host != "" && host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("%q: listen on an IP address (or localhost), not a name", addr)
		}
	}
	return nil
}

// IsLoopback reports whether a listen address is on loopback only.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// validateState checks state_dir and evidence_log.
func (c *Config) validateState() []error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if strings.TrimSpace(c.StateDir) == "" {
		add("state_dir", "required (the evidence log and the alert ledger live there; default %s)", DefaultStateDir)
	}
	e := c.EvidenceLog
	if need := c.Rule.Retention + c.Rule.SensorLateness + c.Rule.Skew; e.MaxAge != 0 && e.MaxAge < need {
		add("evidence_log.max_age", "%v is shorter than rule.retention + rule.sensor_lateness + rule.skew (%v): a restart could not rebuild the engine (0 derives it)", e.MaxAge, need)
	} else if e.MaxAge < 0 {
		add("evidence_log.max_age", "%v must not be negative", e.MaxAge)
	}
	if e.MaxBytes < 1<<20 {
		add("evidence_log.max_bytes", "%d: at least 1 MiB", e.MaxBytes)
	}
	if e.SegmentBytes < 64<<10 || e.SegmentBytes > e.MaxBytes/4 {
		add("evidence_log.segment_bytes", "%d: between 64 KiB and a quarter of max_bytes (%d)", e.SegmentBytes, e.MaxBytes/4)
	}
	switch e.Fsync {
	case evidence.FsyncBatch, evidence.FsyncOff:
	default:
		add("evidence_log.fsync", "%q is not batch or off", e.Fsync)
	}
	return errs
}
