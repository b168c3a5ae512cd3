package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/alert"
)

const full = `# every section, as in docs/CONFIG.md
interfaces: [eth1, eth2]
xdp_mode: native
pin_path: /sys/fs/bpf/knockwatch
log_level: debug
sweep_interval: 2s
sensor:
  pair_slots: 524288
  pass: true
rule:
  min_ports: 4
  knock_window: 20s
  skew: 10s
  retention: 30m
  max_pairs: 1000
  emit_suppressed: true
suppression:
  allowed_sources: [192.0.2.0/24, 2001:db8::1]
  host_groups:
    dc: [dc01, 10.0.0.0/24]
  change_windows:
    - groups: [dc]
      start: 2026-01-10T22:00:00Z
      end: 2026-01-11T02:00:00Z
  admin_users: ['CORP\deploy']
  admin_applications: [ccmexec.exe]
hosts: /etc/knockwatch/hosts
decoder:
  zones: {"*.branch.example": Europe/Berlin}
  default_zone: UTC
listeners:
  token_file: /etc/knockwatch/token
  http:
    addr: 0.0.0.0:8080
    max_body_bytes: 1048576
  syslog:
    addr: 127.0.0.1:5514
  files:
    paths: [/var/log/wef/*.jsonl]
alerts:
  path: /var/log/knockwatch/alerts.jsonl
  webhook:
    url: https://siem.example/ingest
    spool_dir: /var/lib/knockwatch/spool
metrics:
  addr: 127.0.0.1:9742
`

func TestParseFull(t *testing.T) {
	cfg := Default()
	if err := Parse([]byte(full), "full.yaml", &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	sc, err := cfg.SensorConfig()
	if err != nil {
		t.Fatal(err)
	}
	if sc.MinPorts != 4 || sc.Window != 20*time.Second || !sc.Pass ||
		sc.Candidates != Default().Sensor.Candidates || cfg.Rule.Skew != 10*time.Second ||
		cfg.Rule.KnockWindow != 20*time.Second || len(cfg.Interfaces) != 2 || cfg.Listeners.HTTP.MaxBodyBytes != 1<<20 {
		t.Fatalf("parsed %+v", cfg)
	}
	ec, err := cfg.EngineConfig()
	if err != nil {
		t.Fatal(err)
	}
	if len(ec.Suppression.AllowedSources) != 2 || ec.Suppression.AllowedSources[1].Bits() != 128 ||
		len(ec.Suppression.ChangeWindows) != 1 || !ec.EmitSuppressed || ec.MaxPairs != 1000 {
		t.Fatalf("engine config %+v", ec)
	}
	if o, err := cfg.DecoderOptions(); err != nil || o.Zones["*.branch.example"] == nil {
		t.Fatalf("decoder options %+v, %v", o, err)
	}
}

func TestDefaultsValidate(t *testing.T) {
	cfg := Default()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestParseErrorsNameLineAndPath(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"unknown nested key", "listeners:\n  http:\n    adr: 1.2.3.4:80\n", "f.yaml:3: listeners.http.adr: unknown key (known: addr, "},
		{"unknown top key", "log_level: info\nifaces: [eth0]\n", "f.yaml:2: ifaces: unknown key"},
		{"bad duration", "rule:\n  skew: 10\n", "f.yaml:2: rule.skew: invalid duration \"10\""},
		{"string into int", "sensor:\n  pair_slots: lots\n", "f.yaml:2: sensor.pair_slots: cannot unmarshal"},
		{"list expected", "interfaces: eth0\n", "f.yaml:1: interfaces: expected a list"},
		{"mapping expected", "rule: 5\n", "f.yaml:1: rule: expected a mapping"},
		{"key in list item", "suppression:\n  change_windows:\n    - host: [a]\n", "f.yaml:3: suppression.change_windows[0].host: unknown key"},
		{"syntax", "rule:\n  skew: [\n", "f.yaml:"},
		{"replay is not a key", "sensor:\n  replay: true\n", "sensor.replay: unknown key"},
		{"alias", "a: &x 1\nrule: *x\n", "unknown key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default()
			err := Parse([]byte(tc.yaml), "f.yaml", &cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestValidateErrors(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want string
		auth bool
	}{
		{"xdp mode", func(c *Config) { c.XDPMode = "turbo" }, "xdp_mode", false},
		{"log level", func(c *Config) { c.LogLevel = "loud" }, "log_level", false},
		{"sensor", func(c *Config) { c.Sensor.PairSlots = 0 }, "sensor: pair_slots", false},
		{"sensor threshold", func(c *Config) { c.Rule.MinPorts = 1 }, "sensor: min_ports 1", false},
		{"sensor knock wider than the rule's", func(c *Config) { c.Sensor.Window = time.Minute }, "sensor.window 1m0s differs from rule.knock_window 30s", false},
		{"sensor threshold below the rule's", func(c *Config) { c.Sensor.MinPorts = 2 }, "sensor.min_ports 2 differs from rule.min_ports 3", false},
		{"flag shorter than the rule's windows", func(c *Config) { c.Sensor.FlagTTL = time.Minute },
			"sensor.flag_ttl 1m0s is shorter than rule.change_after + rule.handshake_after + 2 rule.skew = 6m10s", false},
		{"flag longer than the clocks hold", func(c *Config) { c.Rule.HandshakeAfter = time.Hour }, "flag_ttl 1h1m10s: must be at most 30m0s", false},
		{"rule", func(c *Config) { c.Rule.MaxPorts = 100 }, "rule: ", false},
		{"allow source", func(c *Config) { c.Suppression.AllowedSources = []string{"nope"} }, "allowed_sources[0]", false},
		{"window order", func(c *Config) {
			now := time.Now()
			c.Suppression.ChangeWindows = []ChangeWindow{{Hosts: []string{"*"}, Start: now, End: now}}
		}, "change_windows[0]: end", false},
		{"tls half", func(c *Config) { c.Listeners.TLSCert = "c.pem" }, "go together", false},
		{"http public no token", func(c *Config) { c.Listeners.HTTP.Addr = "0.0.0.0:8080" }, "--events-http 0.0.0.0:8080", true},
		{"beats public", func(c *Config) { c.Listeners.Beats.Addr = ":5044" }, "listeners.beats.addr", true},
		{"syslog public udp", func(c *Config) {
			c.Listeners.Syslog.Addr = "10.0.0.1:514"
			c.Listeners.TLSCert, c.Listeners.TLSKey, c.Listeners.ClientCA = "c", "k", "ca"
			udp := true
			c.Listeners.Syslog.UDP = &udp
		}, "UDP cannot authenticate", true},
		{"bad addr", func(c *Config) { c.Listeners.HTTP.Addr = "8080" }, "not HOST:PORT", false},
		{"webhook spool", func(c *Config) { c.Alerts.Webhook.URL = "https://x/y" }, "spool_dir", false},
		{"no state dir", func(c *Config) { c.StateDir = " " }, "state_dir: required", false},
		{"evidence kept shorter than a rebuild reads", func(c *Config) { c.EvidenceLog.MaxAge = 10 * time.Minute },
			"evidence_log.max_age: 10m0s is shorter than rule.retention + rule.sensor_lateness + rule.skew (20m10s)", false},
		{"evidence fsync", func(c *Config) { c.EvidenceLog.Fsync = "always" }, `evidence_log.fsync: "always"`, false},
		{"evidence segment over a quarter", func(c *Config) { c.EvidenceLog.SegmentBytes = c.EvidenceLog.MaxBytes / 2 }, "evidence_log.segment_bytes", false},
		{"evidence bound too small", func(c *Config) { c.EvidenceLog.MaxBytes = 1000 }, "evidence_log.max_bytes: 1000", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default()
			tc.mod(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
			if errors.Is(err, ErrUnauthenticated) != tc.auth {
				t.Fatalf("errors.Is(ErrUnauthenticated) = %v, want %v", !tc.auth, tc.auth)
			}
		})
	}
}

func TestAuthRule(t *testing.T) {
	ok := []func(*Config){
		func(c *Config) { c.Listeners.HTTP.Addr = "127.0.0.1:8080" },
		func(c *Config) { c.Listeners.HTTP.Addr = "[::1]:8080" },
		func(c *Config) { c.Listeners.HTTP.Addr = "localhost:8080" },
		func(c *Config) { c.Listeners.HTTP.Addr, c.Listeners.TokenFile = "0.0.0.0:8080", "/t" },
		func(c *Config) { c.Listeners.Beats.Addr, c.Listeners.Insecure = "0.0.0.0:5044", true },
		func(c *Config) {
			c.Listeners.Beats.Addr, c.Listeners.Syslog.Addr = "0.0.0.0:5044", "0.0.0.0:6514"
			c.Listeners.TLSCert, c.Listeners.TLSKey, c.Listeners.ClientCA = "c", "k", "ca"
		},
	}
	for i, mod := range ok {
		cfg := Default()
		mod(&cfg)
		if err := cfg.Validate(); err != nil {
			t.Errorf("case %d: %v", i, err)
		}
	}
}

func TestLoadFlagsWin(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.yaml")
	if err := os.WriteFile(path, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, fl, err := Load([]string{"--config", path, "--iface", "veth9", "--xdp-mode", "generic",
		"--allow-source", "198.51.100.0/24", "--set", "rule.skew=7s", "--set", "sensor.candidates=1024",
		"--events-http", "127.0.0.1:0"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if fl.ConfigFile != path || cfg.XDPMode != "generic" || len(cfg.Interfaces) != 1 || cfg.Interfaces[0] != "veth9" ||
		len(cfg.Suppression.AllowedSources) != 1 || cfg.Rule.Skew != 7*time.Second || cfg.Sensor.Candidates != 1024 ||
		cfg.Rule.MinPorts != 4 || cfg.Listeners.HTTP.Addr != "127.0.0.1:0" || cfg.Listeners.TokenFile != "/etc/knockwatch/token" {
		t.Fatalf("loaded %+v", cfg)
	}
	if _, _, err := Load([]string{"--set", "rule.skw=1s"}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "rule.skw: unknown key") {
		t.Fatalf("--set with a bad key: %v", err)
	}
	if _, _, err := Load([]string{"--config", filepath.Join(dir, "missing.yaml")}, &bytes.Buffer{}); err == nil {
		t.Fatal("missing config file accepted")
	}
	if _, _, err := Load([]string{"eth0"}, &bytes.Buffer{}); err == nil {
		t.Fatal("positional argument accepted")
	}
}

func TestHelpDocumentsEveryFlagWithDefault(t *testing.T) {
	var out bytes.Buffer
	_, _, err := Load([]string{"--help"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"-iface", "-xdp-mode", "-pass", "-events-http", "-events-syslog", "-events-beats",
		"-events-file", "-token-file", "-tls-cert", "-tls-key", "-client-ca", "-hosts", "-allow-source", "-alerts",
		"-metrics", "-pin-path", "-state-dir", "-config", "-log-level", "-insecure-listeners", `(default "auto")`, `(default "-")`,
		`(default "info")`, "(default 10485760)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

// TestConfigDocMatchesDefaults: the reference block in docs/CONFIG.md is
// the complete configuration at its defaults.
func TestConfigDocMatchesDefaults(t *testing.T) {
	doc, err := os.ReadFile("../../docs/CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "## Every key with its default")
	if !ok {
		t.Fatal("docs/CONFIG.md lacks the reference section")
	}
	_, rest, _ = strings.Cut(rest, "```yaml\n")
	block, _, _ := strings.Cut(rest, "```")
	var cfg Config
	if err := Parse([]byte(block), "docs/CONFIG.md", &cfg); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprintf("%+v", normalize(cfg)), fmt.Sprintf("%+v", normalize(Default())); got != want {
		t.Fatalf("docs/CONFIG.md defaults differ from Default():\n doc  %s\n code %s", got, want)
	}
	var missing []string
	walkKeys(reflect.TypeOf(Config{}), "", func(path string) {
		leaf := path[strings.LastIndex(path, ".")+1:]
		if !strings.Contains(block, leaf+":") {
			missing = append(missing, path)
		}
	})
	if len(missing) > 0 {
		t.Fatalf("docs/CONFIG.md does not document %v", missing)
	}
}

// normalize makes empty and nil collections compare equal.
func normalize(c Config) Config {
	if len(c.Interfaces) == 0 {
		c.Interfaces = nil
	}
	if len(c.Kafka.Brokers) == 0 {
		c.Kafka.Brokers = nil
	}
	if len(c.Kafka.Topics.Raw) == 0 {
		c.Kafka.Topics.Raw = nil
	}
	s := &c.Suppression
	if len(s.AllowedSources) == 0 {
		s.AllowedSources = nil
	}
	if len(s.HostGroups) == 0 {
		s.HostGroups = nil
	}
	if len(s.ChangeWindows) == 0 {
		s.ChangeWindows = nil
	}
	if len(s.AdminUsers) == 0 {
		s.AdminUsers = nil
	}
	if len(s.AdminApplications) == 0 {
		s.AdminApplications = nil
	}
	if len(c.Decoder.Zones) == 0 {
		c.Decoder.Zones = nil
	}
	if len(c.Listeners.Files.Paths) == 0 {
		c.Listeners.Files.Paths = nil
	}
	if len(c.Alerts.Webhook.Headers) == 0 {
		c.Alerts.Webhook.Headers = nil
	}
	if len(c.Alerts.Webhook.RetryStatuses) == 0 {
		c.Alerts.Webhook.RetryStatuses = nil
	}
	return c
}

func walkKeys(t reflect.Type, path string, fn func(string)) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		p := join(path, name)
		fn(p)
		ft := f.Type
		if ft.Kind() == reflect.Struct && ft != timeType {
			walkKeys(ft, p, fn)
		}
	}
}

// TestSensorFlagTTLDerived: the flag watches handshakes exactly as long as
// the rule's windows need, unless set longer.
func TestSensorFlagTTLDerived(t *testing.T) {
	c := Default()
	c.Rule.ChangeAfter, c.Rule.HandshakeAfter, c.Rule.Skew = 2*time.Minute, 10*time.Minute, 3*time.Second
	s, err := c.SensorConfig()
	if err != nil {
		t.Fatal(err)
	}
	if want := 12*time.Minute + 6*time.Second; s.FlagTTL != want {
		t.Errorf("derived flag_ttl %v, want %v", s.FlagTTL, want)
	}
	c.Sensor.FlagTTL = 20 * time.Minute
	if s, err = c.SensorConfig(); err != nil || s.FlagTTL != 20*time.Minute {
		t.Errorf("explicit longer flag_ttl: %v, %v", s.FlagTTL, err)
	}
}

// The sink backlog's default is the alert package's.
func TestDefaultMaxBacklog(t *testing.T) {
	if got := Default().Alerts.MaxBacklog; got != alert.DefaultMaxBacklog {
		t.Fatalf("alerts.max_backlog default %d, alert.DefaultMaxBacklog %d", got, alert.DefaultMaxBacklog)
	}
}

// The evidence log and the ledger live under state_dir; max_age 0 derives
// the age bound from the rule, so that a rebuild always finds what it reads.
func TestBuildState(t *testing.T) {
	cfg, _, err := Load([]string{"--iface", "eth0", "--state-dir", "/srv/kw", "--set", "rule.retention=30m", "--set", "evidence_log.fsync=off"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	b, err := cfg.Build()
	if err != nil {
		t.Fatal(err)
	}
	want := 30*time.Minute + 5*time.Second + 5*time.Second + time.Minute
	if b.EvidenceLog.Dir != "/srv/kw/evidence" || b.EvidenceLog.MaxAge != want || b.EvidenceLog.Fsync != "off" ||
		b.Ledger.Dir != "/srv/kw/alerts" || b.Ledger.MaxAge < want+30*time.Minute {
		t.Fatalf("built %+v / %+v", b.EvidenceLog, b.Ledger)
	}
	cfg.EvidenceLog.MaxAge = 2 * time.Hour
	if cfg.EvidenceMaxAge() != 2*time.Hour {
		t.Fatal("max_age not taken")
	}
}
