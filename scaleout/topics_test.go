package scaleout

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// At start-up the topics are checked against the rule: an evidence topic
// keeping less than the rebuild horizon, or compacting by key, is refused
// with a message that says what the rule needs and how to fix it; missing
// topics are created (or, without kafka.topics.create, named).
func TestEnsureTopicsChecksRetention(t *testing.T) {
	k := startKafka(t, "")
	cfg := testConfig(t, k, "n")
	need := Needs{Evidence: 20*time.Minute + 10*time.Second, EvidenceWhy: "rule.retention 20m0s + rule.sensor_lateness 5s + rule.skew 5s", Flags: 6 * time.Minute}

	noCreate := cfg
	noCreate.Topics.Create = false
	if err := EnsureTopics(context.Background(), noCreate, need); err == nil || !strings.Contains(err.Error(), "do not exist") {
		t.Fatalf("missing topics: %v", err)
	}
	if err := EnsureTopics(context.Background(), cfg, need); err != nil {
		t.Fatalf("create: %v", err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	set := func(topic, key, v string) {
		t.Helper()
		r, err := adm.AlterTopicConfigs(context.Background(), []kadm.AlterConfig{{Op: kadm.SetConfig, Name: key, Value: &v}}, topic)
		if err == nil {
			_, err = r.On(topic, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	set(cfg.Topics.Evidence, "retention.ms", "600000")
	err = EnsureTopics(context.Background(), cfg, need)
	if !errors.Is(err, ErrRetention) {
		t.Fatalf("10 min retention accepted: %v", err)
	}
	for _, want := range []string{cfg.Topics.Evidence, "retention.ms=600000", "20m10s", "rule.retention", "--add-config retention.ms="} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	set(cfg.Topics.Evidence, "retention.ms", "-1")
	set(cfg.Topics.Evidence, "cleanup.policy", "compact")
	if err := EnsureTopics(context.Background(), cfg, need); !errors.Is(err, ErrRetention) || !strings.Contains(err.Error(), "compact") {
		t.Fatalf("compacted evidence topic accepted: %v", err)
	}
	set(cfg.Topics.Evidence, "cleanup.policy", "delete")
	set(cfg.Topics.Flags, "retention.ms", "60000")
	if err := EnsureTopics(context.Background(), cfg, need); !errors.Is(err, ErrRetention) || !strings.Contains(err.Error(), "sensor.flag_ttl") {
		t.Fatalf("short flags retention accepted: %v", err)
	}
	set(cfg.Topics.Flags, "retention.ms", "86400000")
	if err := EnsureTopics(context.Background(), cfg, need); err != nil {
		t.Fatal(err)
	}
	// A raw topic the intake should read must exist.
	raw := cfg
	raw.Topics.Raw = []RawTopic{{Topic: "winlogbeat"}}
	if err := EnsureTopics(context.Background(), raw, Needs{Evidence: need.Evidence, Flags: need.Flags, Raw: true}); err == nil || !strings.Contains(err.Error(), "winlogbeat") {
		t.Fatalf("missing raw topic: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	base := Config{Brokers: []string{"127.0.0.1:9092"}}
	base.Defaults()
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		mod  func(*Config)
		want string
	}{
		"remote plaintext": {func(c *Config) { c.Brokers = []string{"kafka1.corp.example:9092"} }, "kafka.tls"},
		"bad broker":       {func(c *Config) { c.Brokers = []string{"kafka1"} }, "HOST:PORT"},
		"same topic":       {func(c *Config) { c.Topics.Flags = c.Topics.Evidence }, "its own topic"},
		"bad topic":        {func(c *Config) { c.Topics.Alerts = "a/b" }, "topic name"},
		"plain sasl clear": {func(c *Config) {
			c.Brokers, c.Insecure = []string{"kafka1:9092"}, true
			c.SASL = SASLConfig{Mechanism: "PLAIN", Username: "u", PasswordFile: "/p"}
		}, "PLAIN"},
		"bad mechanism":   {func(c *Config) { c.SASL.Mechanism = "GSSAPI" }, "sasl.mechanism"},
		"raw is evidence": {func(c *Config) { c.Topics.Raw = []RawTopic{{Topic: c.Topics.Evidence}} }, "raw topic"},
	} {
		cfg := base
		c.mod(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error about %q", name, err, c.want)
		}
	}
	ok := base
	ok.Brokers, ok.TLS.Enabled = []string{"kafka1.corp.example:9093"}, true
	if err := ok.Validate(); err != nil {
		t.Errorf("TLS to a remote broker refused: %v", err)
	}
}
