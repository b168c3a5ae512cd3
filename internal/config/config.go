// Package config is the configuration of `knockwatch run`: one Config
// struct filled from a YAML file and then from command-line flags (flags
// win). It covers the XDP sensor's load-time settings (sensor.Config), the
// AN0842 rule and its caps (correlate.Config), the suppression lists, the
// host inventory, every event listener, the alert sinks, the metrics
// address, the pin path and the log level. docs/CONFIG.md documents every
// key with its default.
//
// A file is read strictly: an unknown key, a value of the wrong type or a
// malformed duration is an error that names the file, the line and the
// key's dotted path (for example "knockwatch.yaml:12: listeners.http.adr:
// unknown key (known: addr, max_body_bytes, ...)").
package config

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/coverage"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// Config is the whole configuration of `knockwatch run`.
type Config struct {
	// Role is what this process runs (all, sensor, intake, correlator);
	// roles other than all need Kafka.
	Role string `yaml:"role"`
	// Kafka is the scale-out bus; without brokers knockwatch run is the
	// all-in-one box.
	Kafka Kafka `yaml:"kafka"`
	// Interfaces are the capture interfaces the XDP program attaches to.
	Interfaces []string `yaml:"interfaces"`
	// XDPMode is auto, native or generic.
	XDPMode string `yaml:"xdp_mode"`
	// PinPath, when set, pins the sensor's maps under this bpffs directory
	// so that a restarted sensor keeps its state.
	PinPath string `yaml:"pin_path"`
	// StateDir holds what survives a restart: the evidence log (evidence/)
	// and the ledger of delivered alerts (alerts/). One knockwatch run per
	// directory (it is locked).
	StateDir    string      `yaml:"state_dir"`
	EvidenceLog EvidenceLog `yaml:"evidence_log"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// LogFormat is auto (console on a terminal, JSON otherwise), json or
	// console.
	LogFormat string `yaml:"log_format"`
	// SweepInterval is how often pending SYNs of quiet pairs are aged into
	// S0 touches; AdvanceInterval how often the engine's watermark follows
	// the clock while the network is quiet.
	SweepInterval   time.Duration `yaml:"sweep_interval"`
	AdvanceInterval time.Duration `yaml:"advance_interval"`
	// ShutdownTimeout bounds the flush of alerts at exit.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// MemoryLimit is the Go runtime's soft memory limit (bytes; 0: none):
	// the garbage collector works harder as the heap nears it, so the
	// process stays under it while its live data does (docs/RELIABILITY.md,
	// "Worst-case memory"). The GOMEMLIMIT environment variable wins.
	MemoryLimit int64 `yaml:"memory_limit"`

	Sensor      sensor.Config `yaml:"sensor"`
	Rule        Rule          `yaml:"rule"`
	Suppression Suppression   `yaml:"suppression"`
	// Hosts is the /etc/hosts-format inventory file (IP NAME [ALIAS...]).
	Hosts     string    `yaml:"hosts"`
	Decoder   Decoder   `yaml:"decoder"`
	Listeners Listeners `yaml:"listeners"`
	Alerts    Alerts    `yaml:"alerts"`
	Metrics   Metrics   `yaml:"metrics"`
	Pipeline  Pipeline  `yaml:"pipeline"`
	Coverage  Coverage  `yaml:"coverage"`
}

// Coverage configures what the sensor measures of its own coverage (host
// clocks, blind spots: docs/COVERAGE.md). The offset bound is
// rule.max_clock_offset, the tolerance rule.skew, the requests out at once
// sensor.samples.
type Coverage struct {
	// Enabled turns coverage on (clock samples, findings, /v1/coverage).
	Enabled           bool          `yaml:"enabled"`
	SampleInterval    time.Duration `yaml:"sample_interval"`
	RefreshInterval   time.Duration `yaml:"refresh_interval"`
	SampleTTL         time.Duration `yaml:"sample_ttl"`
	MinSamples        int           `yaml:"min_samples"`
	MinSources        int           `yaml:"min_sources"`
	Agreement         time.Duration `yaml:"agreement"`
	SampleMaxAge      time.Duration `yaml:"sample_max_age"`
	MatchWait         time.Duration `yaml:"match_wait"`
	NoEventsAfter     time.Duration `yaml:"no_events_after"`
	QuietAfter        time.Duration `yaml:"quiet_after"`
	LagWarn           time.Duration `yaml:"lag_warn"`
	NetWindow         time.Duration `yaml:"net_window"`
	MinSYN            int           `yaml:"min_syn"`
	HostMinUnanswered int           `yaml:"host_min_unanswered"`
	HostWindow        time.Duration `yaml:"host_window"`
	MaxHosts          int           `yaml:"max_hosts"`
	MaxPending        int           `yaml:"max_pending"`
	// Networks are the networks (CIDRs) whose hosts coverage lists from
	// traffic alone: the XDP program records every destination of a SYN
	// inside them (sensor.syn_destinations), so a host taking traffic
	// that no inventory entry, event or record names is listed and, with
	// no events, found host-side blind. Default: the private ranges
	// (RFC 1918, RFC 4193); set it to the networks behind the tap, or to
	// [] to list only hosts known otherwise. At most 256.
	Networks []string `yaml:"networks"`
}

// DefaultCoverageNetworks are coverage.networks by default: the private
// address ranges.
var DefaultCoverageNetworks = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"}

// CoverageNetworks parses coverage.networks (CIDRs or single addresses).
func (c *Coverage) CoverageNetworks() ([]netip.Prefix, error) {
	out, err := parsePrefixes("coverage.networks", c.Networks)
	if err != nil {
		return nil, err
	}
	if len(out) > maxCoverageNetworks {
		return nil, fmt.Errorf("coverage.networks: %d prefixes, at most %d", len(out), maxCoverageNetworks)
	}
	return out, nil
}

// maxCoverageNetworks is the room of the program's dst_nets.
const maxCoverageNetworks = 256

// EvidenceLog bounds the evidence log and sets its fsync policy
// (evidence.LogConfig).
type EvidenceLog struct {
	// MaxAge is how long evidence is kept (event time); 0 derives it from
	// the rule: retention + sensor_lateness + skew + 1 minute. A value
	// below retention + sensor_lateness + skew is refused: the engine
	// could not be rebuilt.
	MaxAge time.Duration `yaml:"max_age"`
	// MaxBytes bounds the log on disk; SegmentBytes is the size of one
	// segment (at most a quarter of MaxBytes).
	MaxBytes     int64 `yaml:"max_bytes"`
	SegmentBytes int64 `yaml:"segment_bytes"`
	// Fsync is batch (every batch fsynced before it is acknowledged) or
	// off (never fsynced: survives a crash of the process, not a power
	// cut).
	Fsync string `yaml:"fsync"`
}

// DefaultStateDir is state_dir's default.
const DefaultStateDir = "/var/lib/knockwatch"

// Rule is the AN0842 rule (correlate.Config without the suppression).
type Rule struct {
	MinPorts          int           `yaml:"min_ports"`
	MaxPorts          int           `yaml:"max_ports"`
	KnockWindow       time.Duration `yaml:"knock_window"`
	ChangeAfter       time.Duration `yaml:"change_after"`
	Skew              time.Duration `yaml:"skew"`
	HandshakeAfter    time.Duration `yaml:"handshake_after"`
	Retention         time.Duration `yaml:"retention"`
	SensorLateness    time.Duration `yaml:"sensor_lateness"`
	MaxPairs          int           `yaml:"max_pairs"`
	MaxChanges        int           `yaml:"max_changes"`
	MaxHandshakes     int           `yaml:"max_handshakes"`
	MaxTouchesPerPair int           `yaml:"max_touches_per_pair"`
	MaxClockOffset    time.Duration `yaml:"max_clock_offset"`
	ServiceStartOpens bool          `yaml:"service_start_opens"`
	EmitSuppressed    bool          `yaml:"emit_suppressed"`
}

// Suppression holds the analyst's tuning knobs. AllowedSources also go to
// the XDP program's allowlist (never flagged).
type Suppression struct {
	AllowedSources    []string            `yaml:"allowed_sources"`
	HostGroups        map[string][]string `yaml:"host_groups"`
	ChangeWindows     []ChangeWindow      `yaml:"change_windows"`
	AdminUsers        []string            `yaml:"admin_users"`
	AdminApplications []string            `yaml:"admin_applications"`
}

// ChangeWindow is an approved maintenance window (RFC 3339 times).
type ChangeWindow struct {
	Hosts  []string  `yaml:"hosts"`
	Groups []string  `yaml:"groups"`
	Start  time.Time `yaml:"start"`
	End    time.Time `yaml:"end"`
}

// Decoder configures the Windows event decoders.
type Decoder struct {
	// Zones maps host names or globs to IANA zones for events that carry
	// local time without a zone (NXLog EventTime); DefaultZone applies to
	// the rest (UTC when empty).
	Zones           map[string]string `yaml:"zones"`
	DefaultZone     string            `yaml:"default_zone"`
	DedupeSize      int               `yaml:"dedupe_size"`
	MaxHosts        int               `yaml:"max_hosts"`
	MaxPerHost      int               `yaml:"max_per_host"`
	JoinWindow      time.Duration     `yaml:"join_window"`
	MaxEventBytes   int               `yaml:"max_event_bytes"`
	MaxPayloadBytes int               `yaml:"max_payload_bytes"`
}

// Listeners are the event intake listeners and their shared credentials.
type Listeners struct {
	// TokenFile holds the bearer token HTTP clients must send.
	TokenFile string `yaml:"token_file"`
	// TLSCert and TLSKey make HTTP, TCP syslog and Beats speak TLS;
	// ClientCA additionally requires client certificates signed by it
	// (mTLS), which authenticates syslog and Beats peers.
	TLSCert  string `yaml:"tls_cert"`
	TLSKey   string `yaml:"tls_key"`
	ClientCA string `yaml:"client_ca"`
	// Insecure allows listeners on non-loopback addresses without a token
	// or mTLS.
	Insecure bool `yaml:"insecure"`
	// Tokens are further bearer tokens by name (name: token file); the
	// token of TokenFile is named "default". Forwarders bindings name them.
	Tokens map[string]string `yaml:"tokens"`
	// Forwarders bind forwarder identities to the hosts they may send
	// events for; UnboundForwarders (allow or refuse) decides for
	// identities no binding names.
	Forwarders        []Forwarder `yaml:"forwarders"`
	UnboundForwarders string      `yaml:"unbound_forwarders"`
	// Connections that have not authenticated yet (TLS handshake not
	// done, no valid token yet): their own pool per listener, a share per
	// source address and a deadline.
	PreAuthTimeout      time.Duration `yaml:"preauth_timeout"`
	MaxPreAuthConns     int           `yaml:"max_preauth_conns"`
	MaxPreAuthPerSource int           `yaml:"max_preauth_per_source"`
	// MemoryBudget bounds the event bytes all listeners hold at once
	// (HTTP bodies, Beats events) before the decoder is done with them.
	MemoryBudget int64 `yaml:"memory_budget"`

	HTTP   HTTPListener   `yaml:"http"`
	Syslog SyslogListener `yaml:"syslog"`
	Beats  BeatsListener  `yaml:"beats"`
	Files  FileListener   `yaml:"files"`
}

// Forwarder binds a forwarder identity (a token name or a client
// certificate subject or CN) to the hosts it may send events for.
type Forwarder struct {
	Name        string   `yaml:"name"`
	Token       string   `yaml:"token"`
	CertSubject string   `yaml:"cert_subject"`
	Hosts       []string `yaml:"hosts"`
	Groups      []string `yaml:"groups"` // suppression.host_groups
}

// HTTPListener is POST /v1/events.
type HTTPListener struct {
	Addr              string        `yaml:"addr"`
	MaxBodyBytes      int64         `yaml:"max_body_bytes"`
	MaxConns          int           `yaml:"max_conns"`
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
}

// SyslogListener serves syslog on one address: UDP and TCP without TLS;
// TCP over TLS when a certificate is configured (UDP then only if UDP is
// set explicitly).
type SyslogListener struct {
	Addr            string        `yaml:"addr"`
	UDP             *bool         `yaml:"udp"`
	TCP             *bool         `yaml:"tcp"`
	MaxMessageBytes int           `yaml:"max_message_bytes"`
	MaxConns        int           `yaml:"max_conns"`
	IdleTimeout     time.Duration `yaml:"idle_timeout"`
	// Zone of RFC 3164 timestamps (informational; UTC when empty).
	Zone string `yaml:"zone"`
}

// BeatsListener is Lumberjack v2 (Winlogbeat output.logstash).
type BeatsListener struct {
	Addr           string        `yaml:"addr"`
	MaxEventBytes  int           `yaml:"max_event_bytes"`
	MaxBatchBytes  int           `yaml:"max_batch_bytes"`
	MaxBatchEvents int           `yaml:"max_batch_events"`
	MaxConns       int           `yaml:"max_conns"`
	Timeout        time.Duration `yaml:"timeout"`
	IdleTimeout    time.Duration `yaml:"idle_timeout"`
}

// FileListener follows files, directories or globs.
type FileListener struct {
	Paths          []string      `yaml:"paths"`
	StatePath      string        `yaml:"state_path"`
	PollInterval   time.Duration `yaml:"poll_interval"`
	MaxRecordBytes int           `yaml:"max_record_bytes"`
	MaxFiles       int           `yaml:"max_files"`
}

// Alerts are the sinks: a file or standard output, and optionally a
// webhook with an on-disk spool.
type Alerts struct {
	// Path is a file to append to, or "-" for standard output.
	Path string `yaml:"path"`
	// Pretty is auto (indented on a terminal), true or false.
	Pretty  string  `yaml:"pretty"`
	Webhook Webhook `yaml:"webhook"`
	// MaxBacklog bounds the alerts kept for a failing sink while another
	// durable sink takes them (file and webhook configured together).
	MaxBacklog int `yaml:"max_backlog"`
}

// Webhook is the HTTP alert sink (alert.WebhookConfig).
type Webhook struct {
	URL            string            `yaml:"url"`
	Format         string            `yaml:"format"`
	TokenFile      string            `yaml:"token_file"`
	Headers        map[string]string `yaml:"headers"`
	CAFile         string            `yaml:"ca_file"`
	CertFile       string            `yaml:"cert_file"`
	KeyFile        string            `yaml:"key_file"`
	ServerName     string            `yaml:"server_name"`
	SpoolDir       string            `yaml:"spool_dir"`
	MaxSpoolBytes  int64             `yaml:"max_spool_bytes"`
	BatchRecords   int               `yaml:"batch_records"`
	RequestTimeout time.Duration     `yaml:"request_timeout"`
	MaxBackoff     time.Duration     `yaml:"max_backoff"`
	RetryStatuses  []int             `yaml:"retry_statuses"`
}

// Metrics is the HTTP server with /metrics, /healthz and /readyz.
type Metrics struct {
	Addr string `yaml:"addr"`
}

// Pipeline tunes alert batching (pipeline).
type Pipeline struct {
	BatchSize     int           `yaml:"batch_size"`
	FlushInterval time.Duration `yaml:"flush_interval"`
	MaxQueued     int           `yaml:"max_queued"`
}

// defaultSensor is sensor.DefaultConfig without what the rule decides:
// min_ports, window and flag_ttl come from the rule (SensorConfig).
func defaultSensor() sensor.Config {
	s := sensor.DefaultConfig()
	s.MinPorts, s.Window, s.FlagTTL = 0, 0, 0
	return s
}

// DefaultMemoryLimit is memory_limit's default: above the live data of
// the default configuration with every cap reached by hostile input
// (docs/RELIABILITY.md, "Worst-case memory").
const DefaultMemoryLimit = 2 << 30

// Default returns the configuration with every default filled in.
func Default() Config {
	r := correlate.DefaultConfig()
	return Config{
		Role:            RoleAll,
		Kafka:           defaultKafka(),
		XDPMode:         string(sensor.ModeAuto),
		LogLevel:        "info",
		LogFormat:       "auto",
		SweepInterval:   time.Second,
		AdvanceInterval: time.Second,
		ShutdownTimeout: 10 * time.Second,
		MemoryLimit:     DefaultMemoryLimit,
		StateDir:        DefaultStateDir,
		EvidenceLog:     EvidenceLog{MaxBytes: 1 << 30, SegmentBytes: 64 << 20, Fsync: "batch"},
		Sensor:          defaultSensor(),
		Rule: Rule{
			MinPorts: r.MinPorts, MaxPorts: r.MaxPorts, KnockWindow: r.KnockWindow, ChangeAfter: r.ChangeAfter,
			Skew: r.Skew, HandshakeAfter: r.HandshakeAfter, Retention: r.Retention, SensorLateness: r.SensorLateness,
			MaxPairs: r.MaxPairs, MaxChanges: r.MaxChanges, MaxHandshakes: r.MaxHandshakes,
			MaxTouchesPerPair: r.MaxTouchesPerPair, MaxClockOffset: r.MaxClockOffset,
		},
		Decoder: Decoder{
			DedupeSize: 65536, MaxHosts: 4096, MaxPerHost: 4096, JoinWindow: 30 * time.Second,
			MaxEventBytes: 1 << 20, MaxPayloadBytes: 64 << 20,
		},
		Listeners: Listeners{
			UnboundForwarders: "allow", PreAuthTimeout: intake.DefaultPreAuthTimeout,
			MaxPreAuthConns: intake.DefaultPreAuthConns, MaxPreAuthPerSource: intake.DefaultPreAuthPerSource,
			MemoryBudget: intake.DefaultMemoryBudget,
			HTTP: HTTPListener{
				MaxBodyBytes: intake.DefaultMaxBodyBytes, MaxConns: intake.DefaultMaxConns,
				ReadHeaderTimeout: intake.DefaultReadHeaderTimeout, ReadTimeout: intake.DefaultReadTimeout,
				IdleTimeout: intake.DefaultIdleTimeout,
			},
			Syslog: SyslogListener{
				MaxMessageBytes: intake.DefaultMaxMessageBytes, MaxConns: intake.DefaultMaxConns,
				IdleTimeout: intake.DefaultIdleTimeout,
			},
			Beats: BeatsListener{
				MaxEventBytes: intake.DefaultBeatsMaxEvent, MaxBatchBytes: intake.DefaultBeatsMaxBatch,
				MaxBatchEvents: intake.DefaultBeatsMaxEvents, MaxConns: intake.DefaultBeatsMaxConns, Timeout: intake.DefaultBeatsTimeout,
				IdleTimeout: intake.DefaultIdleTimeout,
			},
			Files: FileListener{PollInterval: time.Second, MaxRecordBytes: 10 << 20, MaxFiles: 1024},
		},
		Alerts: Alerts{Path: "-", Pretty: "auto", MaxBacklog: 10000 /* alert.DefaultMaxBacklog, config_test checks */, Webhook: Webhook{
			Format: "ndjson", MaxSpoolBytes: 1 << 30, BatchRecords: 100,
			RequestTimeout: 10 * time.Second, MaxBackoff: 30 * time.Second,
		}},
		Pipeline: Pipeline{BatchSize: 64, FlushInterval: 200 * time.Millisecond, MaxQueued: 4096},
		Coverage: defaultCoverage(),
	}
}

func defaultCoverage() Coverage {
	d := coverage.DefaultConfig()
	return Coverage{Enabled: true, SampleInterval: d.SampleInterval, RefreshInterval: d.RefreshInterval, SampleTTL: d.SampleTTL,
		MinSamples: d.MinSamples, MinSources: d.MinSources, Agreement: d.Agreement, SampleMaxAge: d.SampleMaxAge,
		MatchWait: d.MatchWait, NoEventsAfter: d.NoEventsAfter, QuietAfter: d.QuietAfter, LagWarn: d.LagWarn,
		NetWindow: d.NetWindow, MinSYN: d.MinSYN, HostMinUnanswered: d.HostMinUnanswered, HostWindow: d.HostWindow,
		MaxHosts: d.MaxHosts, MaxPending: d.MaxPending, Networks: slices.Clone(DefaultCoverageNetworks)}
}

// CoverageConfig is coverage's configuration: the coverage section with
// the rule's skew and clock bound and the sensor's sample table.
func (c *Config) CoverageConfig() coverage.Config {
	v := c.Coverage
	d := coverage.DefaultConfig()
	return coverage.Config{SampleInterval: v.SampleInterval, RefreshInterval: v.RefreshInterval, SampleTTL: v.SampleTTL,
		MaxRequests: int(c.Sensor.Samples), MinSamples: v.MinSamples, MinSources: v.MinSources, Agreement: v.Agreement,
		SampleMaxAge: v.SampleMaxAge, MaxSamples: d.MaxSamples, MaxOffset: c.Rule.MaxClockOffset, MatchWait: v.MatchWait,
		Skew: c.Rule.Skew, NoEventsAfter: v.NoEventsAfter, QuietAfter: v.QuietAfter, LagWarn: v.LagWarn, NetWindow: v.NetWindow,
		MinSYN: v.MinSYN, HostMinUnanswered: v.HostMinUnanswered, HostWindow: v.HostWindow, MaxHosts: v.MaxHosts,
		MaxPending: v.MaxPending}
}
