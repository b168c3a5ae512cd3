package scaleout

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"go.uber.org/zap"
)

// Needs is what the rule asks of the topics' retention.
type Needs struct {
	// Evidence is the rebuild horizon: rule.retention + sensor_lateness
	// + skew. A correlator that takes over a partition reads that far
	// back, so the evidence topic must keep at least that much.
	Evidence time.Duration
	// EvidenceWhy says where Evidence comes from, for the error message.
	EvidenceWhy string
	// Flags is the longest a flag lives (sensor.flag_ttl): a restarted
	// sensor reads the flags of that long back.
	Flags time.Duration
	// Raw: the raw topics must exist (the intake role reads them).
	Raw bool
}

// ErrRetention is a topic whose retention does not cover what the rule
// needs, or whose cleanup policy would delete evidence by key.
var ErrRetention = errors.New("topic retention too short for the rule")

// EnsureTopics creates knockwatch's own topics that are missing (with
// Topics.Create) and checks every topic a role reads: evidence and flags
// keep at least what the rule needs (retention.ms, cleanup.policy
// delete), raw topics exist. The error says what is wrong and how to fix
// it.
func EnsureTopics(ctx context.Context, cfg Config, needs Needs) error {
	s, err := newSession(cfg)
	if err != nil {
		return err
	}
	cl, err := s.client()
	if err != nil {
		return fmt.Errorf("connect to kafka: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	log := cfg.Logger.Named("scaleout")
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t := cfg.Topics
	own := []string{t.Evidence, t.Flags, t.Alerts}
	td, err := adm.ListTopics(ctx, own...)
	if err != nil {
		return fmt.Errorf("list topics at %s: %w", strings.Join(cfg.Brokers, ","), err)
	}
	var missing []string
	for _, name := range own {
		if d, ok := td[name]; !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			missing = append(missing, name)
		} else if d.Err != nil {
			return fmt.Errorf("topic %s: %w", name, d.Err)
		}
	}
	if len(missing) > 0 {
		if !t.Create {
			return fmt.Errorf("topics %s do not exist and kafka.topics.create is false: create them (delete policy, retention.ms at least %d) or set kafka.topics.create: true",
				strings.Join(missing, ", "), needs.Evidence.Milliseconds())
		}
		ret := strconv.FormatInt(t.Retention.Milliseconds(), 10)
		if t.Retention < 0 {
			ret = "-1"
		}
		policy := "delete"
		resp, err := adm.CreateTopics(ctx, t.Partitions, t.ReplicationFactor,
			map[string]*string{"retention.ms": &ret, "cleanup.policy": &policy}, missing...)
		if err != nil {
			return fmt.Errorf("create topics %s: %w", strings.Join(missing, ", "), err)
		}
		for _, r := range resp.Sorted() {
			if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
				return fmt.Errorf("create topic %s: %w", r.Topic, r.Err)
			}
			log.Info("topic created", zap.String("topic", r.Topic), zap.Int32("partitions", t.Partitions),
				zap.Int16("replication_factor", t.ReplicationFactor), zap.String("retention.ms", ret))
		}
	}
	if needs.Raw {
		var raw []string
		for _, r := range t.Raw {
			raw = append(raw, r.Topic)
		}
		rd, err := adm.ListTopics(ctx, raw...)
		if err != nil {
			return fmt.Errorf("list raw topics: %w", err)
		}
		for _, name := range raw {
			if d, ok := rd[name]; !ok || d.Err != nil {
				return fmt.Errorf("kafka.topics.raw: topic %s does not exist: create it (the forwarders write it) or remove it from kafka.topics.raw", name)
			}
		}
	}
	check := []struct {
		topic string
		need  time.Duration
		why   string
	}{{t.Evidence, needs.Evidence, needs.EvidenceWhy}, {t.Flags, needs.Flags, "sensor.flag_ttl"}}
	names := []string{t.Evidence, t.Flags}
	rcs, err := adm.DescribeTopicConfigs(ctx, names...)
	if err != nil {
		return fmt.Errorf("describe topic configs: %w", err)
	}
	var errs []error
	for _, c := range check {
		rc, err := rcs.On(c.topic, nil)
		if err != nil {
			return fmt.Errorf("describe topic %s: %w", c.topic, err)
		}
		if rc.Err != nil {
			return fmt.Errorf("describe topic %s: %w", c.topic, rc.Err)
		}
		vals := map[string]string{}
		for _, kv := range rc.Configs {
			if kv.Value != nil {
				vals[kv.Key] = *kv.Value
			}
		}
		if err := checkRetention(c.topic, vals, c.need, c.why); err != nil {
			errs = append(errs, err)
		}
		if rb := vals["retention.bytes"]; rb != "" && rb != "-1" {
			log.Warn("topic has a size bound: evidence may be deleted before retention.ms if it fills (watch its size)",
				zap.String("topic", c.topic), zap.String("retention.bytes", rb))
		}
	}
	return errors.Join(errs...)
}

// checkRetention checks one topic's retention.ms and cleanup.policy.
func checkRetention(topic string, vals map[string]string, need time.Duration, why string) error {
	if p := vals["cleanup.policy"]; strings.Contains(p, "compact") {
		return fmt.Errorf("%w: topic %s has cleanup.policy %s: compaction keeps one record per key (per host) and deletes the rest of the evidence; set cleanup.policy=delete",
			ErrRetention, topic, p)
	}
	v, ok := vals["retention.ms"]
	if !ok {
		return nil // the broker did not say; its default (7 days) covers any rule
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return fmt.Errorf("topic %s: retention.ms %q: %w", topic, v, err)
	}
	if ms < 0 {
		return nil // forever
	}
	have := time.Duration(ms) * time.Millisecond
	if have < need {
		return fmt.Errorf("%w: topic %s keeps records for %v (retention.ms=%d) but the rule needs %v (%s): a correlator taking over a partition could not rebuild what it held; raise it (kafka-configs.sh --alter --entity-type topics --entity-name %s --add-config retention.ms=%d) or shorten the rule",
			ErrRetention, topic, have, ms, need, why, topic, (2 * need).Milliseconds())
	}
	return nil
}
