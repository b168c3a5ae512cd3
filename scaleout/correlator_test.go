package scaleout

import (
	"context"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/evidence"
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
	got = reader.until(t, 30*time.Second, func(r []alertRecord) bool { return len(r) >= len(done)+len(half) })
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
