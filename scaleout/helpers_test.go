package scaleout

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/internal/kafkatest"
)

// startKafka starts a 3-broker fake cluster over TCP for one test.
func startKafka(t testing.TB, dataDir string) *kafkatest.Cluster {
	t.Helper()
	k, err := kafkatest.Start(kafkatest.Config{Brokers: 3, DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k
}

// testConfig is a node's Kafka configuration for k with short timeouts.
func testConfig(t testing.TB, k *kafkatest.Cluster, node string) Config {
	t.Helper()
	cfg := Config{Brokers: k.Addrs(), Node: node, SessionTimeout: 3 * time.Second, TransactionTimeout: 5 * time.Second,
		BusyAfter: 500 * time.Millisecond, SyncTimeout: 2 * time.Second}
	cfg.Topics.Create = true
	cfg.Topics.Partitions = 6
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// ensure creates the topics with the default rule's needs.
func ensure(t testing.TB, cfg Config) {
	t.Helper()
	r := correlate.DefaultConfig()
	if err := EnsureTopics(context.Background(), cfg, Needs{Evidence: r.Retention + r.SensorLateness + r.Skew, Flags: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
}

// attack is one AN0842 instance: a knock of src on dst, a rule opening
// port on dst, src's first handshake to it.
type attack struct {
	src, dst netip.Addr
	port     uint16
	t0       time.Time
}

func attackN(i int, t0 time.Time) attack {
	return attack{
		src:  netip.AddrFrom4([4]byte{198, 51, byte(100 + i/250), byte(1 + i%250)}),
		dst:  netip.AddrFrom4([4]byte{10, 7, byte(i / 200), byte(1 + i%200)}),
		port: uint16(2000 + i%1000),
		t0:   t0,
	}
}

func (a attack) knock() evidence.Item {
	k := &correlate.Knock{Src: a.src, Dst: a.dst, DistinctClosed: 3, Attempted: 3, Epoch: 1}
	for j, p := range []uint16{7000, 8000, 9000} {
		k.Touches = append(k.Touches, correlate.Touch{Port: p, Time: a.t0.Add(time.Duration(j) * time.Second), Kind: correlate.TouchREJ})
	}
	return evidence.Item{Arrival: a.t0.Add(2 * time.Second), Knock: k}
}

func (a attack) change(rec uint64) evidence.Item {
	return evidence.Item{Arrival: a.t0.Add(12 * time.Second), Change: &correlate.ExposureChange{
		Time: a.t0.Add(10 * time.Second), Host: "WIN-" + a.dst.String(), HostIPs: []netip.Addr{a.dst},
		Kind: correlate.ChangeRuleAdded, Ports: correlate.Ports(a.port), Protocol: correlate.ProtocolTCP,
		Direction: correlate.DirectionInbound, Action: correlate.ActionAllow, Active: correlate.TriTrue,
		RuleName: "updater", EventID: 2004, Channel: "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall",
		RecordID: rec,
	}}
}

func (a attack) handshake() evidence.Item {
	ack := a.t0.Add(40 * time.Second)
	return evidence.Item{Arrival: ack.Add(time.Millisecond), Handshake: &correlate.Handshake{Src: a.src, Dst: a.dst,
		SrcPort: 50000, Port: a.port, SYN: ack.Add(-2 * time.Millisecond), SYNACK: ack.Add(-time.Millisecond), ACK: ack}}
}

func (a attack) id() string {
	return correlate.AlertID(a.src, a.dst, a.port, a.t0.Add(40*time.Second))
}

// alertRecord is what the tests read of an alert record.
type alertRecord struct {
	ID, Action, Confidence string
	Src, Dst               string
	Port                   int
}

// alertReader reads the alert topic with read_committed isolation.
type alertReader struct {
	cl  *kgo.Client
	mu  sync.Mutex
	got []alertRecord
}

func newAlertReader(t testing.TB, cfg Config) *alertReader {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.ConsumeTopics(cfg.Topics.Alerts),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &alertReader{cl: cl}
}

func decodeAlert(r *kgo.Record) (alertRecord, error) {
	var a struct {
		Event       struct{ ID, Action string }
		Source      struct{ IP string }
		Destination struct {
			IP   string
			Port int
		}
		Knockwatch struct{ Confidence string }
	}
	if err := json.Unmarshal(r.Value, &a); err != nil {
		return alertRecord{}, fmt.Errorf("alert record %q: %w", r.Value, err)
	}
	return alertRecord{ID: a.Event.ID, Action: a.Event.Action, Confidence: a.Knockwatch.Confidence,
		Src: a.Source.IP, Dst: a.Destination.IP, Port: a.Destination.Port}, nil
}

// until polls until done says the records read so far are enough, or the
// timeout passes; it returns what was read.
func (ar *alertReader) until(t testing.TB, timeout time.Duration, done func([]alertRecord) bool) []alertRecord {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fs := ar.cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			a, err := decodeAlert(r)
			if err != nil {
				t.Error(err)
				return
			}
			ar.mu.Lock()
			ar.got = append(ar.got, a)
			ar.mu.Unlock()
		})
		ar.mu.Lock()
		ok := done(ar.got)
		ar.mu.Unlock()
		if ok {
			break
		}
	}
	ar.mu.Lock()
	defer ar.mu.Unlock()
	return append([]alertRecord(nil), ar.got...)
}

// countIDs counts alert records per id.
func countIDs(recs []alertRecord) map[string]int {
	m := map[string]int{}
	for _, r := range recs {
		m[r.ID]++
	}
	return m
}

func writeFile(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
