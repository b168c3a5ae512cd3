package scaleout

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/knockwatch/knockwatch/sensor"
)

// fakeFlags is the program's flags_in as the loader shows it: a hash map
// of size entries that refuses a new key when full.
type fakeFlags struct {
	mu    sync.Mutex
	size  int
	m     map[flagKey]time.Time
	peak  int
	full  int
	calls int
}

func newFakeFlags(size int) *fakeFlags { return &fakeFlags{size: size, m: map[flagKey]time.Time{}} }

var errE2BIG = errors.New("argument list too long")

func (f *fakeFlags) SetRemoteFlag(src, dst netip.Addr, until time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	k := flagKey{src, dst}
	if _, ok := f.m[k]; !ok && len(f.m) >= f.size {
		f.full++
		return errE2BIG
	}
	f.m[k] = until
	f.peak = max(f.peak, len(f.m))
	return nil
}

func (f *fakeFlags) PruneRequests(now time.Time) (int, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, u := range f.m {
		if u.Before(now) {
			delete(f.m, k)
		}
	}
	return len(f.m), 0, nil
}

// active is what the program would do with a SYN-ACK of (src, dst) at now.
func (f *fakeFlags) active(src, dst netip.Addr, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.m[flagKey{src, dst}]
	return ok && !now.After(u)
}

func randPair(r *rand.Rand) (netip.Addr, netip.Addr) {
	var s, d [4]byte
	for i := range s {
		s[i], d[i] = byte(r.Uint32()), byte(r.Uint32())
	}
	return netip.AddrFrom4(s), netip.AddrFrom4(d)
}

// Attack: flood the flags topic (spoofed knocks on another tap are cheap)
// to push the real knock's flag out of this sensor's table before the
// connection crosses it. With random seeds and table sizes: a flood of
// fewer flags than the table keeps never evicts a flag that arrived
// before it, and the program's map never overflows (an insert it refuses
// would lose a flag silently); one flag more evicts the oldest, counted.
func TestRemoteFlagsFlood(t *testing.T) {
	const ttl = 6 * time.Minute
	for trial := range 20 {
		seed := rand.Uint64()
		r := rand.New(rand.NewPCG(seed, uint64(trial)))
		size := 16 + r.IntN(2048)
		target := newFakeFlags(size)
		tab := NewRemoteFlags(target, size, ttl+10*time.Second)
		t0 := time.Unix(1_800_000_000, 0)
		realSrc, realDst := randPair(r)
		if err := tab.Set(realSrc, realDst, t0.Add(ttl), t0); err != nil {
			t.Fatal(err)
		}
		// Flags that expired earlier, from before the real one, go first
		// too: some of the flood arrives late (out of order).
		flood := tab.live - 1
		now := t0
		for i := range flood {
			now = t0.Add(time.Duration(i+1) * ttl / time.Duration(2*flood+2))
			s, d := randPair(r)
			until := now.Add(ttl)
			if r.IntN(4) == 0 {
				until = t0.Add(time.Duration(r.IntN(int(ttl))))
			}
			_ = tab.Set(s, d, until, now)
			if i%97 == 0 {
				_ = tab.Maintain(now)
			}
		}
		if !target.active(realSrc, realDst, now) || !tab.Has(realSrc, realDst, now) {
			t.Fatalf("seed %d size %d: a flood of %d flags (table keeps %d) evicted the real flag", seed, size, flood, tab.live)
		}
		if target.full > 0 || target.peak > size {
			t.Fatalf("seed %d: the program's map overflowed (%d refusals, peak %d of %d)", seed, target.full, target.peak, size)
		}
		// Past the bound: every newcomer that outlives the oldest flag
		// evicts it, counted.
		before := tab.Stats().Evicted
		for range tab.live + 1 {
			s, d := randPair(r)
			_ = tab.Set(s, d, now.Add(ttl), now)
		}
		if target.active(realSrc, realDst, now) {
			t.Fatalf("seed %d: a flood past the bound did not evict the oldest flag", seed)
		}
		if st := tab.Stats(); st.Evicted <= before || st.InUse > size {
			t.Fatalf("seed %d: stats %+v", seed, st)
		}
		if target.full > 0 || target.peak > size {
			t.Fatalf("seed %d: the program's map overflowed past the bound (%d refusals, peak %d of %d)", seed, target.full, target.peak, size)
		}
	}
}

// Attack: a record claiming a flag for a year (forged, or a broken clock)
// would outrank every real flag. It is cut to maxTTL; an expired flag is
// not placed; a table left full by a previous run (pinned maps) is pruned
// before the flag is refused.
func TestRemoteFlagsBounds(t *testing.T) {
	target := newFakeFlags(8)
	now := time.Unix(1_800_000_000, 0)
	// A pinned table full of expired flags of another run.
	for i := range 8 {
		_ = target.SetRemoteFlag(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), netip.AddrFrom4([4]byte{10, 0, 0, 1}), now.Add(-time.Minute))
	}
	tab := NewRemoteFlags(target, 8, time.Minute)
	src, dst := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("10.0.0.5")
	if err := tab.Set(src, dst, now.Add(365*24*time.Hour), now); err != nil {
		t.Fatal(err)
	}
	if u := target.m[flagKey{src, dst}]; !u.Equal(now.Add(time.Minute)) {
		t.Errorf("expiry %v, want clamped to %v", u, now.Add(time.Minute))
	}
	if err := tab.Set(dst, src, now.Add(-time.Second), now); err != nil || target.active(dst, src, now) {
		t.Errorf("an expired flag was placed (%v)", err)
	}
	st := tab.Stats()
	if st.Clamped != 1 || st.Expired != 1 || st.Set != 1 || st.Refused != 0 {
		t.Errorf("stats %+v", st)
	}
	// An update moves the expiry (a new knock of the same pair).
	if err := tab.Set(src, dst, now.Add(90*time.Second), now.Add(40*time.Second)); err != nil || tab.Stats().Updated != 1 {
		t.Errorf("update: %v %+v", err, tab.Stats())
	}
}

// Flags travel: what sensor A publishes, sensor B's subscriber applies to
// its program; A does not apply its own; with a record key, a flag
// produced without it (anyone with write access to the topic) is refused.
func TestFlagsTravel(t *testing.T) {
	k := startKafka(t, "")
	dir := t.TempDir()
	keyFile := dir + "/key"
	writeFile(t, keyFile, "0123456789abcdef0123456789abcdef-deployment-key")
	cfgA, cfgB := testConfig(t, k, "sensor-a"), testConfig(t, k, "sensor-b")
	cfgA.RecordKeyFile, cfgB.RecordKeyFile = keyFile, keyFile
	ensure(t, cfgA)
	pa, pb := newProducer(t, cfgA), newProducer(t, cfgB)
	ta, tb := newFakeFlags(64), newFakeFlags(64)
	sa, err := pa.Subscribe(NewRemoteFlags(ta, 64, 10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Close()
	sb, err := pb.Subscribe(NewRemoteFlags(tb, 64, 10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()

	// A forgery first: a valid flag record without the MAC.
	forged := flag{Src: netip.MustParseAddr("203.0.113.9"), Dst: netip.MustParseAddr("10.0.0.5"),
		FlagTime: time.Now(), Until: time.Now().Add(5 * time.Minute), Instance: "x"}
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfgA.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: cfgA.Topics.Flags, Value: appendFlag(nil, &forged),
		Headers: []kgo.RecordHeader{{Key: headerNode, Value: []byte("sensor-a")}}}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	src, dst := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("10.0.0.5")
	ft := time.Now()
	pa.PublishFlag(&sensor.Knock{Src: src, Dst: dst, FlagTime: ft, Epoch: 3,
		Touches: []sensor.Touch{{Port: 7000, Time: ft, Kind: sensor.TouchREJ}}}, 5*time.Minute)
	deadline := time.Now().Add(15 * time.Second)
	for !tb.active(src, dst, time.Now()) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !tb.active(src, dst, time.Now()) {
		t.Fatalf("sensor B never got A's flag: %+v", sb.Stats())
	}
	if u := tb.m[flagKey{src, dst}]; !u.Equal(ft.Add(5 * time.Minute).UTC()) {
		t.Errorf("B's flag expires %v, want the knock's flag time + ttl %v", u, ft.Add(5*time.Minute))
	}
	time.Sleep(500 * time.Millisecond)
	if ta.active(src, dst, time.Now()) {
		t.Error("A applied its own flag as a remote one")
	}
	for _, tt := range []*fakeFlags{ta, tb} {
		if tt.active(forged.Src, forged.Dst, time.Now()) {
			t.Error("a forged flag was applied")
		}
	}
	// Each subscriber reads every partition, each at its own pace.
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if sa.Stats().Received >= 2 && sb.Stats().Received >= 2 {
			break
		}
	}
	if st := sb.Stats(); st.Forged != 1 || st.Applied != 1 {
		t.Errorf("B's subscriber: %+v", st)
	}
	if st := sa.Stats(); st.Own != 1 || st.Forged != 1 || st.Applied != 0 {
		t.Errorf("A's subscriber: %+v", st)
	}
}
