package scaleout

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

func newCorrelator(t testing.TB, cfg Config) *Correlator {
	t.Helper()
	c, err := NewCorrelator(context.Background(), cfg, CorrelatorConfig{Engine: correlate.DefaultConfig()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newProducer(t testing.TB, cfg Config) *Producer {
	t.Helper()
	p, err := NewProducer(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(5 * time.Second) })
	return p
}

func appendSync(t testing.TB, p *Producer, items ...evidence.Item) {
	t.Helper()
	if err := p.Append(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Evidence of one attack produced by three nodes (the knock by one
// sensor, the handshake by another, the change by an intake) meets in one
// partition and gives one high alert on the alert topic.
func TestEvidenceMeetsInOnePartition(t *testing.T) {
	k := startKafka(t, "")
	cfg := testConfig(t, k, "c1")
	ensure(t, cfg)
	c := newCorrelator(t, cfg)
	defer c.Close()
	a := attackN(1, time.Now().Add(-time.Minute).Truncate(time.Second))
	appendSync(t, newProducer(t, testConfig(t, k, "sensor-a")), a.knock())
	appendSync(t, newProducer(t, testConfig(t, k, "intake")), a.change(17))
	appendSync(t, newProducer(t, testConfig(t, k, "sensor-b")), a.handshake())
	got := newAlertReader(t, cfg).until(t, 20*time.Second, func(r []alertRecord) bool { return len(r) >= 1 })
	time.Sleep(time.Second)
	if len(got) != 1 || got[0].Confidence != "high" || got[0].ID != a.id() || got[0].Port != int(a.port) {
		t.Fatalf("alerts %+v, want one high alert %s", got, a.id())
	}
	if st := c.Stats(); st.High != 1 || st.Commits == 0 {
		t.Errorf("stats %+v", st)
	}
}

// A correlator hands its partitions over (it leaves; the next one takes
// them): the next one rebuilds each partition from its history without
// emitting, so an attack whose knock and change the first saw alerts when
// its handshake reaches the second, and an alert the first committed is
// not sent again.
func TestHandoverRebuilds(t *testing.T) {
	k := startKafka(t, "")
	cfg := testConfig(t, k, "c1")
	ensure(t, cfg)
	p := newProducer(t, testConfig(t, k, "sensor"))
	reader := newAlertReader(t, cfg)
	t0 := time.Now().Add(-2 * time.Minute).Truncate(time.Second)
	var done, half []attack
	for i := range 20 {
		a := attackN(i, t0)
		if i%2 == 0 {
			done = append(done, a)
			appendSync(t, p, a.knock(), a.change(uint64(i+1)), a.handshake())
		} else {
			half = append(half, a)
			appendSync(t, p, a.knock(), a.change(uint64(i+1)))
		}
	}
	c1 := newCorrelator(t, cfg)
	got := reader.until(t, 30*time.Second, func(r []alertRecord) bool { return len(r) >= len(done) })
	if len(got) != len(done) {
		t.Fatalf("first correlator: %d alerts, want %d", len(got), len(done))
	}
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	c2 := newCorrelator(t, cfg)
	defer c2.Close()
	for _, a := range half {
		appendSync(t, p, a.handshake())
	}
	reader.until(t, 30*time.Second, func(r []alertRecord) bool { return len(r) >= len(done)+len(half) })
	time.Sleep(time.Second)
	got = reader.until(t, time.Second, func([]alertRecord) bool { return false })
	ids := countIDs(got)
	for _, a := range append(append([]attack{}, done...), half...) {
		if ids[a.id()] != 1 {
			t.Errorf("alert %s: %d records, want 1", a.id(), ids[a.id()])
		}
	}
	if len(got) != len(done)+len(half) {
		t.Errorf("%d alert records, want %d", len(got), len(done)+len(half))
	}
	st := c2.Stats()
	if st.Rebuilds == 0 || st.RebuildRecords == 0 || st.RebuildAlerts != uint64(len(done)) {
		t.Errorf("second correlator's rebuild: %+v (want %d alerts recomputed, not sent)", st, len(done))
	}
}

// Attack: write evidence straight to the evidence topic (write access to
// it, without the deployment's record key): a forged knock, change and
// handshake would make an alert about any host, or a flood of them fill
// the engine. Records without a valid MAC and records that do not decode
// are counted and never reach the engine; the genuine attack still alerts.
func TestForgedEvidenceRefused(t *testing.T) {
	k := startKafka(t, "")
	keyFile := t.TempDir() + "/key"
	writeFile(t, keyFile, "a-deployment-key-of-more-than-32-bytes-0123456789\n")
	cfg := testConfig(t, k, "c1")
	cfg.RecordKeyFile = keyFile
	ensure(t, cfg)
	c := newCorrelator(t, cfg)
	defer c.Close()
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	forged, real := attackN(1, t0), attackN(2, t0)

	// The forger: the right encoding, no key.
	noKey := testConfig(t, k, "forger")
	fp := newProducer(t, noKey)
	appendSync(t, fp, forged.knock(), forged.change(5), forged.handshake())
	// A forger who knows the node header but not the key; and garbage.
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, v := range [][]byte{[]byte("not an item"), {2, 1, 0}} {
		r := &kgo.Record{Topic: cfg.Topics.Evidence, Key: hostKey(forged.dst), Value: v,
			Headers: []kgo.RecordHeader{{Key: headerNode, Value: []byte("c1")}, {Key: headerMAC, Value: make([]byte, 32)}}}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// The genuine sensors with the key.
	appendSync(t, newProducer(t, cfg), real.knock(), real.change(6), real.handshake())
	got := newAlertReader(t, cfg).until(t, 20*time.Second, func(r []alertRecord) bool { return len(r) >= 1 })
	time.Sleep(time.Second)
	if len(got) != 1 || got[0].ID != real.id() {
		t.Fatalf("alerts %+v, want only %s", got, real.id())
	}
	if st := c.Stats(); st.Forged != 5 || st.ByKind["knock"] != 1 {
		t.Errorf("stats %+v: want 5 forged records refused, 1 knock taken", st)
	}
}

// Backpressure: with every broker down, evidence waits; Busy tells the
// listeners to refuse (429) once it has waited BusyAfter, Sync answers
// "not stored" within SyncTimeout; when the brokers are back, what waited
// is delivered (nothing lost) and Busy clears.
func TestBrokersDownBackpressure(t *testing.T) {
	k := startKafka(t, t.TempDir())
	cfg := testConfig(t, k, "intake")
	ensure(t, cfg)
	p := newProducer(t, cfg)
	a := attackN(3, time.Now().Add(-time.Minute).Truncate(time.Second))
	appendSync(t, p, a.knock())
	k.Stop()
	if err := p.Append(context.Background(), []evidence.Item{a.change(9)}); err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(context.Background()); !errors.Is(err, intake.ErrBusy) {
		t.Fatalf("sync with the brokers down: %v", err)
	}
	if err := p.Busy(); !errors.Is(err, intake.ErrBusy) {
		t.Fatalf("busy with the brokers down: %v", err)
	}
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for p.Sync(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("never delivered after the restart: %+v", p.Stats())
		}
	}
	if err := p.Busy(); err != nil {
		t.Errorf("still busy: %v", err)
	}
	appendSync(t, p, a.handshake())
	c := newCorrelator(t, cfg)
	defer c.Close()
	got := newAlertReader(t, cfg).until(t, 30*time.Second, func(r []alertRecord) bool { return len(r) >= 1 })
	if len(got) != 1 || got[0].ID != a.id() || got[0].Confidence != "high" {
		t.Fatalf("alerts %+v after the outage, want one high %s", got, a.id())
	}
}
