package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Usage is the synopsis of `knockwatch run`.
const Usage = `usage: knockwatch run --iface IFACE [--iface IFACE]... [--xdp-mode auto|native|generic] [--pass]
               [--role all|sensor|intake|correlator] [--kafka-brokers HOST:PORT,...]
               [--events-http ADDR] [--events-syslog ADDR] [--events-beats ADDR] [--events-file PATH]...
               [--token-file FILE] [--tls-cert FILE --tls-key FILE [--client-ca FILE]]
               [--hosts FILE] [--allow-source CIDR]... [--alerts PATH|-] [--metrics ADDR]
               [--pin-path DIR] [--state-dir DIR] [--config FILE] [--log-level LEVEL] [--set KEY=VALUE]...

Runs the live sensor: the XDP program on every --iface, the event listeners,
the AN0842 correlation engine, the alert sinks and the metrics server. With
--kafka-brokers the parts meet on Kafka topics and --role picks this
process's part (docs/SCALE-OUT.md): sensor (XDP, publishes its records and
flags), intake (listeners and the forwarders' raw topics), correlator (the
engine in a consumer group, alerts to the alert topic), or all of them.
Settings come from the defaults, then the --config YAML file, then the flags
(flags win). Every key is documented in docs/CONFIG.md; --set sets any of
them by its dotted path (e.g. --set rule.skew=10s --set sensor.pair_slots=524288).
SIGHUP reloads the suppression lists and the --hosts inventory; SIGINT or
SIGTERM detaches and flushes; a second signal exits at once.

flags:
`

// listFlag is a repeatable flag: the first use on the command line
// replaces the list from the file, later uses append.
type listFlag struct {
	dst *[]string
	set bool
}

func (l *listFlag) String() string {
	if l == nil || l.dst == nil {
		return ""
	}
	return strings.Join(*l.dst, ",")
}

func (l *listFlag) Set(v string) error {
	if strings.TrimSpace(v) == "" {
		return errors.New("empty value")
	}
	if !l.set {
		*l.dst = nil
		l.set = true
	}
	*l.dst = append(*l.dst, v)
	return nil
}

// setFlag collects --set KEY=VALUE overrides, applied after the flags.
type setFlag struct{ kv []string }

func (s *setFlag) String() string { return "" }

func (s *setFlag) Set(v string) error {
	k, _, ok := strings.Cut(v, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("%q: want KEY=VALUE with a dotted key such as rule.skew", v)
	}
	s.kv = append(s.kv, v)
	return nil
}

// ErrUsage wraps command-line errors (unknown flag, bad value, stray
// argument), as opposed to errors in the configuration file.
var ErrUsage = errors.New("bad command line")

// Flags holds what the command line says besides Config fields.
type Flags struct {
	ConfigFile string
	sets       setFlag
}

// NewFlagSet binds the `knockwatch run` flags to cfg; their defaults are
// cfg's current values.
func NewFlagSet(cfg *Config, fl *Flags, output io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("knockwatch run", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), Usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Role, "role", cfg.Role, "what this process runs: all, sensor, intake or correlator (all but all need --kafka-brokers; docs/SCALE-OUT.md)")
	fs.Var(&kafkaBrokersFlag{dst: &cfg.Kafka.Brokers}, "kafka-brokers", "Kafka seed brokers `HOST:PORT,...`: the roles meet on topics (kafka.* in --config for topics, TLS, SASL)")
	fs.Var(&listFlag{dst: &cfg.Interfaces}, "iface", "capture `IFACE` to attach the XDP program to (repeatable; a tap's two ports share state)")
	fs.StringVar(&cfg.XDPMode, "xdp-mode", cfg.XDPMode, "XDP attach `mode`: auto (native, else generic), native or generic")
	fs.BoolVar(&cfg.Sensor.Pass, "pass", cfg.Sensor.Pass, "pass packets on (XDP_PASS) instead of dropping the capture copies (XDP_DROP)")
	fs.StringVar(&cfg.Listeners.HTTP.Addr, "events-http", cfg.Listeners.HTTP.Addr, "listen `ADDR` (host:port) for POST /v1/events (Event XML, JSON lines or array; gzip); empty: off")
	fs.StringVar(&cfg.Listeners.Syslog.Addr, "events-syslog", cfg.Listeners.Syslog.Addr, "listen `ADDR` for syslog RFC 5424/3164: UDP and TCP, or TCP over TLS with --tls-cert; empty: off")
	fs.StringVar(&cfg.Listeners.Beats.Addr, "events-beats", cfg.Listeners.Beats.Addr, "listen `ADDR` for Beats/Lumberjack v2 (Winlogbeat output.logstash); empty: off")
	fs.Var(&listFlag{dst: &cfg.Listeners.Files.Paths}, "events-file", "follow `PATH` (file, directory or glob of JSON lines or Event XML; repeatable)")
	fs.StringVar(&cfg.Listeners.Files.StatePath, "events-file-state", cfg.Listeners.Files.StatePath, "`FILE` keeping followed files' positions across restarts; empty: reread from the start")
	fs.StringVar(&cfg.Listeners.TokenFile, "token-file", cfg.Listeners.TokenFile, "`FILE` with the bearer token HTTP event clients must send")
	fs.StringVar(&cfg.Listeners.TLSCert, "tls-cert", cfg.Listeners.TLSCert, "server certificate `FILE` (PEM) for the HTTP, TCP syslog and Beats listeners")
	fs.StringVar(&cfg.Listeners.TLSKey, "tls-key", cfg.Listeners.TLSKey, "server key `FILE` (PEM) for --tls-cert")
	fs.StringVar(&cfg.Listeners.ClientCA, "client-ca", cfg.Listeners.ClientCA, "CA `FILE` (PEM): require client certificates signed by it (mTLS)")
	fs.BoolVar(&cfg.Listeners.Insecure, "insecure-listeners", cfg.Listeners.Insecure, "allow event listeners on non-loopback addresses without a token or mTLS")
	fs.Int64Var(&cfg.Listeners.HTTP.MaxBodyBytes, "max-body-bytes", cfg.Listeners.HTTP.MaxBodyBytes, "HTTP request body limit in `bytes`, before and after gzip (413 above)")
	fs.StringVar(&cfg.Hosts, "hosts", cfg.Hosts, "inventory `FILE` in /etc/hosts format (IP NAME [ALIAS...]) mapping Windows host names to addresses")
	fs.Var(&listFlag{dst: &cfg.Suppression.AllowedSources}, "allow-source", "allowed source `CIDR` (authorised scanner): never flagged nor alerted (repeatable)")
	fs.StringVar(&cfg.Alerts.Path, "alerts", cfg.Alerts.Path, "append alerts (one ECS JSON object per line) to `PATH`, or - for standard output")
	fs.StringVar(&cfg.Alerts.Pretty, "alerts-pretty", cfg.Alerts.Pretty, "indent alerts: auto (on a terminal), true or false")
	fs.StringVar(&cfg.Alerts.Webhook.URL, "alerts-webhook", cfg.Alerts.Webhook.URL, "also POST alerts to `URL` (NDJSON), spooled on disk until delivered")
	fs.StringVar(&cfg.Alerts.Webhook.SpoolDir, "alerts-spool", cfg.Alerts.Webhook.SpoolDir, "spool `DIR` of the alert webhook")
	fs.StringVar(&cfg.Metrics.Addr, "metrics", cfg.Metrics.Addr, "serve /metrics, /healthz and /readyz on `ADDR` (host:port); empty: off")
	fs.StringVar(&cfg.PinPath, "pin-path", cfg.PinPath, "bpffs `DIR` to pin the sensor's maps in, so a restart keeps its state (e.g. /sys/fs/bpf/knockwatch)")
	fs.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "`DIR` for what survives a restart: the evidence log the engine is rebuilt from and the ledger of delivered alerts (one knockwatch run per directory)")
	fs.StringVar(&fl.ConfigFile, "config", fl.ConfigFile, "YAML configuration `FILE` (see docs/CONFIG.md); flags override it")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "log `LEVEL`: debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "log `format`: auto (console on a terminal, else JSON), json or console")
	fs.Var(&fl.sets, "set", "set any configuration `KEY=VALUE` by its dotted path (repeatable; YAML value syntax)")
	return fs
}

// Load builds the configuration of `knockwatch run` from args: defaults,
// then the --config file, then the flags, then --set. -h/--help prints the
// usage (with the defaults) to output and returns flag.ErrHelp.
func Load(args []string, output io.Writer) (Config, Flags, error) {
	// First pass: find --config (and answer --help with the defaults).
	scratch := Default()
	var fl Flags
	first := NewFlagSet(&scratch, &fl, output)
	if err := first.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return scratch, fl, err
		}
		return scratch, fl, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if rest := first.Args(); len(rest) > 0 {
		return scratch, fl, fmt.Errorf("%w: unexpected argument %q (flags start with --)", ErrUsage, rest[0])
	}
	cfg := Default()
	if fl.ConfigFile != "" {
		var err error
		if cfg, err = LoadFile(fl.ConfigFile); err != nil {
			return cfg, fl, err
		}
	}
	fl2 := Flags{ConfigFile: fl.ConfigFile}
	fs := NewFlagSet(&cfg, &fl2, io.Discard)
	if err := fs.Parse(args); err != nil {
		return cfg, fl2, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	for _, kv := range fl2.sets.kv {
		if err := ApplySet(&cfg, kv); err != nil {
			return cfg, fl2, err
		}
	}
	return cfg, fl2, nil
}

// ApplySet applies one --set KEY=VALUE: the dotted key becomes nested YAML
// parsed strictly over cfg, so unknown keys and bad values are errors.
func ApplySet(cfg *Config, kv string) error {
	key, value, _ := strings.Cut(kv, "=")
	parts := strings.Split(strings.TrimSpace(key), ".")
	var b strings.Builder
	for i, p := range parts {
		if p == "" || strings.ContainsAny(p, ":#{}[],&*!|>'\"%@`\n") {
			return fmt.Errorf("--set %s: bad key", key)
		}
		b.WriteString(strings.Repeat("  ", i))
		b.WriteString(p)
		b.WriteString(":")
		if i < len(parts)-1 {
			b.WriteString("\n")
		}
	}
	if strings.ContainsAny(value, "\n\r") {
		return fmt.Errorf("--set %s: value spans lines", key)
	}
	b.WriteString(" ")
	b.WriteString(value)
	b.WriteString("\n")
	if err := Parse([]byte(b.String()), "--set", cfg); err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			ce.Line = 0 // the generated snippet's lines mean nothing to the user
		}
		return err
	}
	return nil
}
