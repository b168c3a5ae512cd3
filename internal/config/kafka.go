package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/knockwatch/knockwatch/scaleout"
)

// Roles of `knockwatch run --role`.
const (
	// RoleAll is every part in one process: without Kafka settings the
	// embedded box (evidence log on disk); with them a node that is
	// sensor, intake and correlator of a scale-out deployment at once.
	RoleAll = "all"
	// RoleSensor runs the XDP program and publishes its records and
	// flags; it applies the other sensors' flags.
	RoleSensor = "sensor"
	// RoleIntake runs the event listeners and consumes the forwarders'
	// raw topics, publishing exposure changes.
	RoleIntake = "intake"
	// RoleCorrelator is a member of the correlators' group: the engine on
	// its partitions, alerts to the alert topic.
	RoleCorrelator = "correlator"
)

// Kafka is the scale-out bus (scaleout.Config): brokers, topics, groups,
// security (docs/SCALE-OUT.md).
type Kafka struct {
	Brokers            []string      `yaml:"brokers"`
	ClientID           string        `yaml:"client_id"`
	Node               string        `yaml:"node"`
	Topics             KafkaTopics   `yaml:"topics"`
	Group              string        `yaml:"group"`
	IntakeGroup        string        `yaml:"intake_group"`
	TransactionalID    string        `yaml:"transactional_id"`
	TransactionTimeout time.Duration `yaml:"transaction_timeout"`
	SessionTimeout     time.Duration `yaml:"session_timeout"`
	MaxBufferedBytes   int           `yaml:"max_buffered_bytes"`
	BusyAfter          time.Duration `yaml:"busy_after"`
	SyncTimeout        time.Duration `yaml:"sync_timeout"`
	RecordKeyFile      string        `yaml:"record_key_file"`
	Insecure           bool          `yaml:"insecure"`
	TLS                KafkaTLS      `yaml:"tls"`
	SASL               KafkaSASL     `yaml:"sasl"`
}

// KafkaTopics are the topic names and how missing ones are created.
type KafkaTopics struct {
	Evidence          string          `yaml:"evidence"`
	Flags             string          `yaml:"flags"`
	Alerts            string          `yaml:"alerts"`
	Raw               []KafkaRawTopic `yaml:"raw"`
	Create            bool            `yaml:"create"`
	Partitions        int32           `yaml:"partitions"`
	ReplicationFactor int16           `yaml:"replication_factor"`
	Retention         time.Duration   `yaml:"retention"`
}

// KafkaRawTopic is a forwarder's topic and the identity its records are
// bound to (listeners.forwarders[].token).
type KafkaRawTopic struct {
	Topic    string `yaml:"topic"`
	Identity string `yaml:"identity"`
}

// KafkaTLS is TLS to the brokers.
type KafkaTLS struct {
	Enabled    bool   `yaml:"enabled"`
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
}

// KafkaSASL is SASL authentication to the brokers.
type KafkaSASL struct {
	Mechanism    string `yaml:"mechanism"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
}

// defaultKafka is the kafka section's defaults (scaleout.Config.Defaults
// without the node name, which is the host's at run time).
func defaultKafka() Kafka {
	return Kafka{
		ClientID: "knockwatch",
		Topics: KafkaTopics{Evidence: scaleout.DefaultEvidenceTopic, Flags: scaleout.DefaultFlagsTopic,
			Alerts: scaleout.DefaultAlertsTopic, Create: true, Partitions: scaleout.DefaultPartitions,
			ReplicationFactor: -1, Retention: scaleout.DefaultTopicRetention},
		Group: scaleout.DefaultGroup, IntakeGroup: scaleout.DefaultIntakeGroup,
		TransactionTimeout: scaleout.DefaultTransactionTimeout, SessionTimeout: scaleout.DefaultSessionTimeout,
		MaxBufferedBytes: scaleout.DefaultMaxBufferedBytes, BusyAfter: scaleout.DefaultBusyAfter,
		SyncTimeout: scaleout.DefaultSyncTimeout,
	}
}

// Distributed reports whether the configuration names Kafka brokers: the
// roles then meet on topics instead of in one process.
func (c *Config) Distributed() bool { return len(c.Kafka.Brokers) > 0 }

// Runs reports whether this process runs the part of role (sensor, intake
// or correlator).
// An empty role is all (a Config not built from Default).
func (c *Config) Runs(role string) bool { return c.Role == RoleAll || c.Role == "" || c.Role == role }

// ScaleOut returns the Kafka configuration with its defaults.
func (c *Config) ScaleOut() scaleout.Config {
	k := c.Kafka
	sc := scaleout.Config{
		Brokers: k.Brokers, ClientID: k.ClientID, Node: k.Node,
		Topics: scaleout.Topics{Evidence: k.Topics.Evidence, Flags: k.Topics.Flags, Alerts: k.Topics.Alerts,
			Create: k.Topics.Create, Partitions: k.Topics.Partitions, ReplicationFactor: k.Topics.ReplicationFactor,
			Retention: k.Topics.Retention},
		Group: k.Group, IntakeGroup: k.IntakeGroup, TransactionalID: k.TransactionalID,
		TransactionTimeout: k.TransactionTimeout, SessionTimeout: k.SessionTimeout, MaxBufferedBytes: k.MaxBufferedBytes,
		BusyAfter: k.BusyAfter, SyncTimeout: k.SyncTimeout, RecordKeyFile: k.RecordKeyFile, Insecure: k.Insecure,
		TLS:  scaleout.TLSFiles{Enabled: k.TLS.Enabled, CAFile: k.TLS.CAFile, CertFile: k.TLS.CertFile, KeyFile: k.TLS.KeyFile, ServerName: k.TLS.ServerName},
		SASL: scaleout.SASLConfig{Mechanism: k.SASL.Mechanism, Username: k.SASL.Username, PasswordFile: k.SASL.PasswordFile},
	}
	for _, r := range k.Topics.Raw {
		sc.Topics.Raw = append(sc.Topics.Raw, scaleout.RawTopic{Topic: r.Topic, Identity: r.Identity})
	}
	sc.Defaults()
	return sc
}

// ScaleOutNeeds is what the rule asks of the topics' retention.
func (c *Config) ScaleOutNeeds() (scaleout.Needs, error) {
	s, err := c.SensorConfig()
	if err != nil {
		return scaleout.Needs{}, err
	}
	r := c.Rule
	return scaleout.Needs{
		Evidence:    r.Retention + r.SensorLateness + r.Skew,
		EvidenceWhy: fmt.Sprintf("rule.retention %v + rule.sensor_lateness %v + rule.skew %v", r.Retention, r.SensorLateness, r.Skew),
		Flags:       s.FlagTTL,
		Raw:         c.Runs(RoleIntake) && len(c.Kafka.Topics.Raw) > 0,
	}, nil
}

// hasListeners reports whether any event listener is configured.
func (l *Listeners) hasListeners() bool {
	return l.HTTP.Addr != "" || l.Syslog.Addr != "" || l.Beats.Addr != "" || len(l.Files.Paths) > 0
}

// validateRole checks --role against the rest of the configuration.
func (c *Config) validateRole() []error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	switch c.Role {
	case "", RoleAll, RoleSensor, RoleIntake, RoleCorrelator:
	default:
		add("role", "%q is not all, sensor, intake or correlator", c.Role)
		return errs
	}
	if !c.Distributed() {
		if !c.Runs(RoleAll) {
			add("role", "--role %s needs Kafka: give --kafka-brokers HOST:PORT,... (without it knockwatch run is the all-in-one box)", c.Role)
		}
		if len(c.Kafka.Topics.Raw) > 0 {
			add("kafka.topics.raw", "raw topics need kafka.brokers")
		}
		return errs
	}
	sc := c.ScaleOut()
	if err := sc.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Runs(RoleSensor) && len(c.Interfaces) == 0 {
		add("interfaces", "--role %s runs the sensor: give --iface IFACE", c.Role)
	}
	if !c.Runs(RoleSensor) && len(c.Interfaces) > 0 {
		add("interfaces", "--role %s runs no sensor: remove --iface (or run --role sensor)", c.Role)
	}
	if c.Role == RoleIntake && !c.Listeners.hasListeners() && len(c.Kafka.Topics.Raw) == 0 {
		add("listeners", "--role intake needs a listener (--events-http, --events-syslog, --events-beats, --events-file) or kafka.topics.raw")
	}
	if !c.Runs(RoleIntake) && (c.Listeners.hasListeners() || len(c.Kafka.Topics.Raw) > 0) {
		add("listeners", "--role %s runs no event intake: remove the listeners and kafka.topics.raw (or run --role intake)", c.Role)
	}
	for i, r := range c.Kafka.Topics.Raw {
		if r.Identity == "" {
			continue
		}
		known := false
		for _, f := range c.Listeners.Forwarders {
			if f.Token == r.Identity {
				known = true
			}
		}
		if !known && c.Listeners.UnboundForwarders == "refuse" {
			add(fmt.Sprintf("kafka.topics.raw[%d].identity", i), "%q is in no listeners.forwarders binding (token: %s) and unbound_forwarders is refuse: every record would be refused", r.Identity, r.Identity)
		}
	}
	if c.Alerts.Webhook.URL != "" {
		add("alerts.webhook.url", "with Kafka the correlators write alerts to the topic %s (exactly once); a SIEM reads them there. The webhook is for the all-in-one box", sc.Topics.Alerts)
	}
	return errs
}

// kafkaBrokersFlag is --kafka-brokers HOST:PORT,...: the first use replaces
// the file's list, later uses append.
type kafkaBrokersFlag struct {
	dst *[]string
	set bool
}

func (f *kafkaBrokersFlag) String() string {
	if f == nil || f.dst == nil {
		return ""
	}
	return strings.Join(*f.dst, ",")
}

func (f *kafkaBrokersFlag) Set(v string) error {
	if !f.set {
		*f.dst = nil
		f.set = true
	}
	for _, b := range strings.Split(v, ",") {
		if b = strings.TrimSpace(b); b != "" {
			*f.dst = append(*f.dst, b)
		}
	}
	if len(*f.dst) == 0 {
		return errors.New("no broker")
	}
	return nil
}
