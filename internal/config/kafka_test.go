package config

import (
	"io"
	"strings"
	"testing"
)

// --role and --kafka-brokers: each role is checked against what it runs,
// and every mistake names its key.
func TestRoles(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string // "" valid
	}{
		{[]string{"--iface", "eth1"}, ""},
		{[]string{"--role", "sensor", "--iface", "eth1"}, "needs Kafka"},
		{[]string{"--role", "banana", "--kafka-brokers", "127.0.0.1:9092"}, "is not all, sensor, intake or correlator"},
		{[]string{"--role", "sensor", "--kafka-brokers", "127.0.0.1:9092,127.0.0.1:9093", "--iface", "eth1"}, ""},
		{[]string{"--role", "sensor", "--kafka-brokers", "127.0.0.1:9092"}, "give --iface"},
		{[]string{"--role", "correlator", "--kafka-brokers", "127.0.0.1:9092"}, ""},
		{[]string{"--role", "correlator", "--kafka-brokers", "127.0.0.1:9092", "--iface", "eth1"}, "runs no sensor"},
		{[]string{"--role", "correlator", "--kafka-brokers", "127.0.0.1:9092", "--events-http", "127.0.0.1:8080"}, "runs no event intake"},
		{[]string{"--role", "intake", "--kafka-brokers", "127.0.0.1:9092"}, "needs a listener"},
		{[]string{"--role", "intake", "--kafka-brokers", "127.0.0.1:9092", "--events-http", "127.0.0.1:8080"}, ""},
		{[]string{"--role", "intake", "--kafka-brokers", "127.0.0.1:9092", "--set", "kafka.topics.raw=[{topic: winlogbeat, identity: wec01}]"}, ""},
		{[]string{"--role", "correlator", "--kafka-brokers", "kafka1.corp.example:9092"}, "kafka.tls"},
		{[]string{"--role", "correlator", "--kafka-brokers", "127.0.0.1:9092", "--alerts-webhook", "https://siem.example/x", "--alerts-spool", "/tmp/s"}, "alerts.webhook.url"},
		{[]string{"--iface", "eth1", "--set", "kafka.topics.raw=[{topic: w}]"}, "raw topics need kafka.brokers"},
	} {
		cfg, _, err := Load(c.args, io.Discard)
		if err == nil {
			err = cfg.Validate()
		}
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%v: %v", c.args, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%v: %v, want an error about %q", c.args, err, c.want)
		}
	}
	cfg, _, err := Load([]string{"--kafka-brokers", "127.0.0.1:9092, 127.0.0.1:9093", "--kafka-brokers", "127.0.0.1:9094"}, io.Discard)
	if err != nil || strings.Join(cfg.Kafka.Brokers, " ") != "127.0.0.1:9092 127.0.0.1:9093 127.0.0.1:9094" {
		t.Errorf("brokers %v %v", cfg.Kafka.Brokers, err)
	}
	sc := cfg.ScaleOut()
	if sc.Node == "" || sc.Topics.Evidence != "knockwatch.evidence" || sc.Topics.Partitions != 12 {
		t.Errorf("scale-out config %+v", sc)
	}
}
