package scaleout

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"go.uber.org/zap"
)

// Defaults of Config.
const (
	DefaultEvidenceTopic      = "knockwatch.evidence"
	DefaultFlagsTopic         = "knockwatch.flags"
	DefaultAlertsTopic        = "knockwatch.alerts"
	DefaultGroup              = "knockwatch-correlators"
	DefaultIntakeGroup        = "knockwatch-intake"
	DefaultPartitions         = 12
	DefaultTransactionTimeout = 30 * time.Second
	DefaultSessionTimeout     = 20 * time.Second
	DefaultMaxBufferedBytes   = 64 << 20
	DefaultBusyAfter          = 2 * time.Second
	DefaultSyncTimeout        = 10 * time.Second
	// DefaultTopicRetention is the retention of topics knockwatch creates:
	// far more than the rule needs (a correlator down for hours catches up
	// without loss).
	DefaultTopicRetention = 24 * time.Hour
	// MinRecordKeyBytes is the shortest record key accepted.
	MinRecordKeyBytes = 32
)

// Config is the Kafka side of a knockwatch node.
type Config struct {
	// Brokers are the seed brokers (host:port).
	Brokers []string
	// ClientID names the client to the brokers (their logs and quotas).
	ClientID string
	// Node names this process in record headers and logs (default: the
	// host name). Each process also draws a random instance id, so two
	// nodes with the same name never take each other's flags for their
	// own.
	Node string
	// Topics are the topic names and how to create them.
	Topics Topics
	// Group is the correlators' consumer group; IntakeGroup the intake's
	// (raw topics).
	Group       string
	IntakeGroup string
	// TransactionalID is this correlator's transactional id (unique per
	// correlator process; a stable one lets a restarted correlator fence
	// its crashed predecessor at once instead of waiting for the
	// transaction timeout). Empty: "knockwatch-<node>-<random>".
	TransactionalID string
	// TransactionTimeout bounds how long a crashed correlator's open
	// transaction holds its partitions; SessionTimeout how long the group
	// waits for a silent member before it moves its partitions.
	TransactionTimeout time.Duration
	SessionTimeout     time.Duration
	// MaxBufferedBytes bounds the records waiting for the brokers in this
	// process; beyond it evidence is refused (intake: 429; sensor:
	// counted as not stored).
	MaxBufferedBytes int
	// BusyAfter: while evidence has waited this long for the brokers'
	// acknowledgement, the listeners refuse new events (429, no Beats
	// ACK) instead of piling them up.
	BusyAfter time.Duration
	// SyncTimeout bounds one wait for the brokers' acknowledgement before
	// a listener answers "not stored" (the sender retries).
	SyncTimeout time.Duration
	// TLS and SASL secure the connection to the brokers.
	TLS  TLSFiles
	SASL SASLConfig
	// RecordKeyFile holds the key (at least 32 bytes) of the HMAC every
	// record of knockwatch's own topics carries; every node of a
	// deployment has the same one. Empty: records are not authenticated
	// (the brokers' ACLs alone decide who may write the topics).
	RecordKeyFile string
	// Insecure allows brokers on non-loopback addresses without TLS.
	Insecure bool

	// Logger receives the components' logs (named scaleout.*).
	Logger *zap.Logger
	// Dial, when set, replaces the TCP dialer (tests).
	Dial func(ctx context.Context, network, host string) (net.Conn, error)
}

// Topics are the topic names, and how knockwatch creates those missing.
type Topics struct {
	// Evidence carries knocks, handshakes and exposure changes, keyed by
	// destination host; Flags the sensors' flags; Alerts the correlators'
	// alerts (ECS JSON, key: alert id).
	Evidence string
	Flags    string
	Alerts   string
	// Raw are the forwarders' own topics (Winlogbeat output.kafka, NXLog
	// om_kafka, OpenWEC) the intake role consumes.
	Raw []RawTopic
	// Create creates missing topics of knockwatch's own (not the raw
	// ones) with Partitions, ReplicationFactor (-1: the broker's default)
	// and Retention.
	Create            bool
	Partitions        int32
	ReplicationFactor int16
	Retention         time.Duration
}

// RawTopic is a forwarder's topic.
type RawTopic struct {
	Topic string
	// Identity is the forwarder identity its records are bound to
	// (listeners.forwarders: a binding whose token is this name). Only
	// that forwarder may write the topic (the brokers' ACLs); empty: the
	// topic's records count as an unbound forwarder's.
	Identity string
}

// TLSFiles are PEM files; CAFile alone gives server-authenticated TLS,
// CertFile and KeyFile add a client certificate (mTLS).
type TLSFiles struct {
	Enabled    bool
	CAFile     string
	CertFile   string
	KeyFile    string
	ServerName string
}

// SASLConfig is SASL authentication (PLAIN, SCRAM-SHA-256 or
// SCRAM-SHA-512); the password is read from a file.
type SASLConfig struct {
	Mechanism    string
	Username     string
	PasswordFile string
}

// SASL mechanisms.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// Defaults fills in the zero values.
func (c *Config) Defaults() {
	if c.ClientID == "" {
		c.ClientID = "knockwatch"
	}
	if c.Node == "" {
		c.Node, _ = os.Hostname()
		if c.Node == "" {
			c.Node = "knockwatch"
		}
	}
	t := &c.Topics
	if t.Evidence == "" {
		t.Evidence = DefaultEvidenceTopic
	}
	if t.Flags == "" {
		t.Flags = DefaultFlagsTopic
	}
	if t.Alerts == "" {
		t.Alerts = DefaultAlertsTopic
	}
	if t.Partitions == 0 {
		t.Partitions = DefaultPartitions
	}
	if t.ReplicationFactor == 0 {
		t.ReplicationFactor = -1
	}
	if t.Retention == 0 {
		t.Retention = DefaultTopicRetention
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.IntakeGroup == "" {
		c.IntakeGroup = DefaultIntakeGroup
	}
	if c.TransactionTimeout == 0 {
		c.TransactionTimeout = DefaultTransactionTimeout
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = DefaultSessionTimeout
	}
	if c.MaxBufferedBytes == 0 {
		c.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if c.BusyAfter == 0 {
		c.BusyAfter = DefaultBusyAfter
	}
	if c.SyncTimeout == 0 {
		c.SyncTimeout = DefaultSyncTimeout
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// Validate reports every setting that cannot work, each naming its key
// (the configuration file's, under kafka.).
func (c *Config) Validate() error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("kafka.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if len(c.Brokers) == 0 {
		add("brokers", "no broker (give --kafka-brokers HOST:PORT,...)")
	}
	plainRemote := ""
	for i, b := range c.Brokers {
		host, port, err := net.SplitHostPort(strings.TrimSpace(b))
		if err != nil || host == "" || port == "" {
			add(fmt.Sprintf("brokers[%d]", i), "%q is not HOST:PORT", b)
			continue
		}
		if !isLoopback(host) && plainRemote == "" {
			plainRemote = b
		}
	}
	if plainRemote != "" && !c.TLS.Enabled && !c.Insecure {
		add("tls", "broker %s is not on loopback: evidence and flags would cross the network in clear and unauthenticated; enable kafka.tls (and kafka.sasl or a client certificate), or set kafka.insecure: true", plainRemote)
	}
	t := c.Topics
	names := map[string]string{}
	for _, n := range []struct{ key, name string }{{"topics.evidence", t.Evidence}, {"topics.flags", t.Flags}, {"topics.alerts", t.Alerts}} {
		if err := checkTopicName(n.name); err != nil {
			add(n.key, "%v", err)
		}
		if other, dup := names[n.name]; dup {
			add(n.key, "%q is also %s: each needs its own topic", n.name, other)
		}
		names[n.name] = n.key
	}
	for i, r := range t.Raw {
		key := fmt.Sprintf("topics.raw[%d]", i)
		if err := checkTopicName(r.Topic); err != nil {
			add(key+".topic", "%v", err)
		}
		if other, dup := names[r.Topic]; dup {
			add(key+".topic", "%q is also %s: a raw topic holds the forwarders' events only", r.Topic, other)
		}
		names[r.Topic] = key
	}
	if t.Partitions < 1 || t.Partitions > 10000 {
		add("topics.partitions", "%d: must be between 1 and 10000", t.Partitions)
	}
	if t.ReplicationFactor == 0 || t.ReplicationFactor < -1 {
		add("topics.replication_factor", "%d: must be positive, or -1 for the broker's default", t.ReplicationFactor)
	}
	if t.Retention <= 0 && t.Retention != -1 {
		add("topics.retention", "%v: must be positive (or -1: forever)", t.Retention)
	}
	if c.Group == "" || c.IntakeGroup == "" || c.Group == c.IntakeGroup {
		add("group", "the correlators' group %q and the intake's %q must be set and differ", c.Group, c.IntakeGroup)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"transaction_timeout", c.TransactionTimeout}, {"session_timeout", c.SessionTimeout},
		{"busy_after", c.BusyAfter}, {"sync_timeout", c.SyncTimeout}} {
		if d.v <= 0 {
			add(d.key, "%v must be positive", d.v)
		}
	}
	if c.MaxBufferedBytes < 1<<20 {
		add("max_buffered_bytes", "%d: at least 1 MiB", c.MaxBufferedBytes)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		add("tls", "cert_file and key_file go together")
	}
	if (c.TLS.CAFile != "" || c.TLS.CertFile != "") && !c.TLS.Enabled {
		add("tls.enabled", "TLS files are set but tls.enabled is false")
	}
	switch strings.ToUpper(c.SASL.Mechanism) {
	case "":
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		if c.SASL.Username == "" || c.SASL.PasswordFile == "" {
			add("sasl", "mechanism %s needs username and password_file", c.SASL.Mechanism)
		}
		if strings.EqualFold(c.SASL.Mechanism, SASLPlain) && !c.TLS.Enabled && plainRemote != "" {
			add("sasl.mechanism", "PLAIN sends the password in clear: use it with kafka.tls only")
		}
	default:
		add("sasl.mechanism", "%q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.SASL.Mechanism)
	}
	return errors.Join(errs...)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkTopicName applies Kafka's rules for topic names.
func checkTopicName(n string) error {
	if n == "" || n == "." || n == ".." || len(n) > 249 {
		return fmt.Errorf("%q is not a topic name", n)
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%q: a topic name holds only letters, digits, '.', '_' and '-'", n)
		}
	}
	return nil
}

// randomID returns n random bytes in hex.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// session is what every component of one process shares: the client
// options, the record authenticator and the instance id.
type session struct {
	cfg      Config
	opts     []kgo.Opt
	auth     *authenticator
	instance string
}

// newSession reads the key and credential files and builds the client
// options. cfg must have passed Validate (after Defaults).
func newSession(cfg Config) (*session, error) {
	s := &session{cfg: cfg, instance: randomID(8)}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.WithLogger(kgoLogger{cfg.Logger.Named("kafka")}),
		kgo.MetadataMinAge(250 * time.Millisecond),
	}
	if cfg.Dial != nil {
		opts = append(opts, kgo.Dialer(cfg.Dial))
	}
	if cfg.TLS.Enabled {
		tc, err := cfg.TLS.config()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if cfg.SASL.Mechanism != "" {
		m, err := cfg.SASL.mechanism()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(m))
	}
	if cfg.RecordKeyFile != "" {
		key, err := os.ReadFile(cfg.RecordKeyFile)
		if err != nil {
			return nil, fmt.Errorf("read kafka.record_key_file: %w", err)
		}
		k := []byte(strings.TrimSpace(string(key)))
		if len(k) < MinRecordKeyBytes {
			return nil, fmt.Errorf("kafka.record_key_file %s: %d bytes, want at least %d (e.g. openssl rand -hex 32)", cfg.RecordKeyFile, len(k), MinRecordKeyBytes)
		}
		s.auth = &authenticator{key: k}
	}
	s.opts = opts
	return s, nil
}

// client returns a new client with the session's options and more.
func (s *session) client(more ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append(append([]kgo.Opt{}, s.opts...), more...)...)
}

func (t TLSFiles) config() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read kafka.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka.tls.ca_file %s: no PEM certificate in it", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load kafka.tls.cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func (s SASLConfig) mechanism() (sasl.Mechanism, error) {
	b, err := os.ReadFile(s.PasswordFile)
	if err != nil {
		return nil, fmt.Errorf("read kafka.sasl.password_file: %w", err)
	}
	pass := strings.TrimRight(string(b), "\r\n")
	if pass == "" {
		return nil, fmt.Errorf("kafka.sasl.password_file %s is empty", s.PasswordFile)
	}
	switch strings.ToUpper(s.Mechanism) {
	case SASLPlain:
		return plain.Auth{User: s.Username, Pass: pass}.AsMechanism(), nil
	case SASLScramSHA256:
		return scram.Auth{User: s.Username, Pass: pass}.AsSha256Mechanism(), nil
	case SASLScramSHA512:
		return scram.Auth{User: s.Username, Pass: pass}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("kafka.sasl.mechanism %q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism)
}

// kgoLogger hands the client's warnings and errors to zap (its info and
// debug lines are per request: too many for a production log).
type kgoLogger struct{ l *zap.Logger }

func (k kgoLogger) Level() kgo.LogLevel {
	if k.l.Core().Enabled(zap.DebugLevel) {
		return kgo.LogLevelInfo
	}
	return kgo.LogLevelWarn
}

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	fields := make([]zap.Field, 0, len(keyvals)/2)
	for i := 0; i+1 < len(keyvals); i += 2 {
		fields = append(fields, zap.Any(fmt.Sprint(keyvals[i]), keyvals[i+1]))
	}
	switch level {
	case kgo.LogLevelError:
		k.l.Error(msg, fields...)
	case kgo.LogLevelWarn:
		k.l.Warn(msg, fields...)
	case kgo.LogLevelInfo:
		k.l.Debug(msg, fields...)
	}
}
