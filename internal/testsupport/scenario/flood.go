package scenario

import (
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"iter"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/testsupport/pkt"
	"github.com/knockwatch/knockwatch/sensor"
)

// FloodTrial is one knock inside a random-source SYN flood (issue 11,
// class 3): every flood SYN comes from a new source to the victim's port
// 80 (hping3 --rand-source), unanswered (S0) or answered by an RST (REJ);
// the attacker knocks three closed ports Gap apart, the same way.
type FloodTrial struct {
	Rate     int           // new flood sources per second
	Duration time.Duration // flood length, from the trial's start
	REJ      bool          // the host answers (flood and knock) with RSTs
	KnockAt  time.Duration // the knock's first SYN, from the trial's start
	Gap      time.Duration // between the knock's SYNs
	Attacker netip.Addr
	Seed     uint64 // the flood's sources
}

// NewFloodTrial draws a trial at rate: a random attacker, a knock starting
// uniformly within the flood's second and third quarter, a random flood.
func NewFloodTrial(rng *rand.Rand, rate int, rej bool) FloodTrial {
	d := 4 * time.Second
	return FloodTrial{
		Rate: rate, Duration: d, REJ: rej, Gap: 200 * time.Millisecond,
		KnockAt:  d/4 + time.Duration(rng.Int64N(int64(d/2))),
		Attacker: netip.AddrFrom4([4]byte{100, byte(64 + rng.IntN(64)), byte(rng.Uint32()), byte(1 + rng.IntN(254))}),
		Seed:     rng.Uint64(),
	}
}

var knockDst = []uint16{7000, 8000, 9000}

// Steps are the trial's packets and sweeps, base after T0: the flood in
// time order with the knock inside it, a sweep once every SYN is due, and
// one 31 minutes later that frees everything the trial left (so trials can follow each other on one engine, an hour apart).
//
// With only set, the flood keeps only the sources whose pair (source,
// victim) lands in bucket (hash seed, pair buckets) — the attacker's. No
// other flood packet can change what the sensor keeps of the attacker:
// single-port pairs live in their own bucket, the flood makes no
// candidate (one SYN, one port per source), and its port-state updates
// concern port 80. TestFloodFilterExact holds a filtered and a full run to
// the same records for the attacker.
func (ft FloodTrial) Steps(base time.Duration, only bool, seed, buckets uint32) iter.Seq[Step] {
	return func(yield func(Step) bool) {
		rng := rand.New(rand.NewPCG(ft.Seed, ft.Seed^0x9e3779b97f4a7c15))
		a := Conv{Src: ft.Attacker, Dst: Victim}
		var knock []Step
		for i, p := range knockDst {
			at := base + ft.KnockAt + time.Duration(i)*ft.Gap
			if ft.REJ {
				knock = append(knock, a.REJ(at, p)...)
			} else {
				knock = append(knock, a.SYN(at, p))
			}
		}
		attackerBucket := sensor.PairHashAddr(seed, ft.Attacker, Victim) & (buckets - 1)
		victim := Victim.As16()
		n := int(int64(ft.Rate) * int64(ft.Duration) / int64(time.Second))
		gap := time.Second / time.Duration(ft.Rate)
		// Sweeps: a running sensor sweeps every second, but nothing is
		// due before the S0 timeout (5 s) after the flood's first SYN, and
		// by then the flood (4 s) and the knock are over: no packet comes
		// after a sweep could have changed a bucket. One sweep once every
		// SYN is due decides the same; then the cleanup.
		next := base + 365*24*time.Hour
		emit := func(st Step) bool {
			for next <= st.At {
				if !yield(Step{At: next, Sweep: true}) {
					return false
				}
				next += time.Second
			}
			return yield(st)
		}
		var answers []Step // flood RSTs due, in time order
		for i := 0; i < n; i++ {
			at := base + time.Duration(i)*gap
			src := rng.Uint32() | 0x01000000
			for len(knock) > 0 && knock[0].At <= at {
				if !emit(knock[0]) {
					return
				}
				knock = knock[1:]
			}
			for len(answers) > 0 && answers[0].At <= at {
				if !emit(answers[0]) {
					return
				}
				answers = answers[1:]
			}
			if only {
				var s [16]byte
				s[10], s[11] = 0xff, 0xff
				binary.BigEndian.PutUint32(s[12:], src)
				if sensor.PairHash(seed, &s, &victim)&(buckets-1) != attackerBucket {
					continue
				}
			}
			ip := netip.AddrFrom4([4]byte{byte(src >> 24), byte(src >> 16), byte(src >> 8), byte(src)})
			sport := uint16(1024 + rng.IntN(60000))
			seq := rng.Uint32()
			if !emit(Step{At: at, P: pkt.TCP{Src: ip, Dst: Victim, SPort: sport, DPort: 80, Flags: pkt.SYN, Seq: seq}}) {
				return
			}
			if ft.REJ {
				answers = append(answers, Step{At: at + gap/2, P: pkt.TCP{Src: Victim, Dst: ip, SPort: 80, DPort: sport,
					Flags: pkt.RST | pkt.ACK, Ack: seq + 1}})
			}
		}
		rest := append(answers, knock...)
		sort.SliceStable(rest, func(i, j int) bool { return rest[i].At < rest[j].At })
		for _, st := range rest {
			if !emit(st) {
				return
			}
		}
		if !yield(Step{At: base + max(ft.Duration, ft.KnockAt+3*ft.Gap) + 6*time.Second, Sweep: true}) {
			return
		}
		yield(Step{At: base + 31*time.Minute + ft.Duration, Sweep: true})
	}
}

// Survived reports whether the attacker's knock came out: a KNOCK of the
// attacker on the victim with the three ports, each a closed touch.
func (ft FloodTrial) Survived(recs []sensor.Record) bool {
	for _, r := range recs {
		k, ok := r.(*sensor.Knock)
		if !ok || k.Src != ft.Attacker || k.Dst != Victim {
			continue
		}
		seen := map[uint16]bool{}
		for _, t := range k.Touches {
			if t.Kind.Closed() {
				seen[t.Port] = true
			}
		}
		if seen[7000] && seen[8000] && seen[9000] {
			return true
		}
	}
	return false
}

// PlaySeq is Play over a sequence of steps (floods too long to hold). It
// drains the records every 1024 steps, as a running sensor's reader does.
func PlaySeq(t testing.TB, e Engine, steps iter.Seq[Step]) Outcome {
	t.Helper()
	var o Outcome
	n := 0
	for st := range steps {
		if st.Req != nil {
			if err := request(e, st.Req); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if n++; n%1024 == 0 {
			recs, err := e.Records()
			if err != nil {
				t.Fatal(err)
			}
			o.Records = append(o.Records, recs...)
		}
		if st.Sweep {
			n, err := e.Sweep(T0.Add(st.At))
			if err != nil {
				t.Fatalf("sweep at %v: %v", st.At, err)
			}
			o.Sweeps = append(o.Sweeps, n)
			continue
		}
		v, err := e.Run(st.Bytes(), T0.Add(st.At))
		if err != nil {
			t.Fatalf("packet at %v: %v", st.At, err)
		}
		o.Verdicts = append(o.Verdicts, v)
		o.Packets++
	}
	var err error
	if o.Counters, err = e.Counters(); err != nil {
		t.Fatal(err)
	}
	recs, err := e.Records()
	if err != nil {
		t.Fatal(err)
	}
	o.Records = append(o.Records, recs...)
	return o
}

// NewEngineFunc makes an engine loaded with cfg (its HashSeed set).
type NewEngineFunc func(t testing.TB, cfg sensor.Config) Engine

// RandomSeed is a hash seed from crypto/rand, odd as the loader's are.
func RandomSeed() uint32 {
	var b [4]byte
	crand.Read(b[:])
	return binary.LittleEndian.Uint32(b[:]) | 1
}

// FloodSurvival runs trials of a knock (S0 or REJ) inside a flood of rate
// new sources per second for 4 s, with default table sizes, on every
// engine newEngines make: loads rounds, each with a random hash seed and a
// fresh engine of each kind, and perLoad trials per round (an hour of
// capture time apart, random attackers and floods). Each trial's packets
// are made once and run through every engine, and the engines must agree
// on the attacker's records. Returns, per engine, the trials whose knock
// was lost, described for the log.
func FloodSurvival(t testing.TB, newEngines []NewEngineFunc, rate int, rej bool, loads, perLoad int) (lost [][]string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(RandomSeed()), uint64(RandomSeed())))
	lost = make([][]string, len(newEngines))
	for l := range loads {
		cfg := sensor.DefaultConfig()
		cfg.Replay = true
		cfg.HashSeed = RandomSeed()
		engines := make([]Engine, len(newEngines))
		for i, ne := range newEngines {
			engines[i] = ne(t, cfg)
		}
		buckets := cfg.Tables().PairBuckets
		for j := range perLoad {
			ft := NewFloodTrial(rng, rate, rej)
			steps := slices.Collect(ft.Steps(time.Duration(l*perLoad+j)*time.Hour, true, cfg.HashSeed, buckets))
			var first Outcome
			for i, e := range engines {
				o := PlaySeq(t, e, slices.Values(steps))
				if !ft.Survived(o.Records) {
					lost[i] = append(lost[i], fmt.Sprintf("hash seed %#x, trial %+v", cfg.HashSeed, ft))
				}
				if i == 0 {
					first = o
				} else if d := Compare(first, o); d != "" {
					t.Fatalf("hash seed %#x, trial %+v: engines differ:\n%s", cfg.HashSeed, ft, d)
				}
			}
		}
	}
	return lost
}

// FloodFilterExact runs one trial twice on fresh engines with the same
// hash seed — the full flood, and only the flood packets that land in the
// attacker's bucket — and fails unless the attacker's records are the
// same: the filtered trials of FloodSurvival stand for the full ones.
func FloodFilterExact(t testing.TB, newEngine NewEngineFunc, rate int, rej bool) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(RandomSeed()), 7))
	cfg := sensor.DefaultConfig()
	cfg.Replay = true
	cfg.HashSeed = RandomSeed()
	ft := NewFloodTrial(rng, rate, rej)
	buckets := cfg.Tables().PairBuckets
	full := PlaySeq(t, newEngine(t, cfg), ft.Steps(0, false, cfg.HashSeed, buckets))
	only := PlaySeq(t, newEngine(t, cfg), ft.Steps(0, true, cfg.HashSeed, buckets))
	of := func(o Outcome) []sensor.Record {
		var out []sensor.Record
		for _, r := range o.Records {
			switch r := r.(type) {
			case *sensor.Knock:
				if r.Src == ft.Attacker {
					out = append(out, r)
				}
			case *sensor.Handshake:
				if r.Src == ft.Attacker {
					out = append(out, r)
				}
			}
		}
		return out
	}
	a, b := of(full), of(only)
	if len(a) == 0 || !reflect.DeepEqual(a, b) {
		t.Fatalf("hash seed %#x, trial %+v: the full flood (%d packets) gave the attacker %s, the filtered one (%d packets) %s",
			cfg.HashSeed, ft, full.Packets, showAll(a), only.Packets, showAll(b))
	}
	if full.Counters["syn"] < uint64(rate)*4 {
		t.Fatalf("full flood: %d SYNs counted, want at least %d", full.Counters["syn"], rate*4)
	}
	t.Logf("full flood of %d packets and its filtered %d packets: same %d records for the attacker", full.Packets, only.Packets, len(a))
}

func showAll(rs []sensor.Record) string {
	s := ""
	for _, r := range rs {
		s += "\n  " + Show(r)
	}
	if s == "" {
		return "nothing"
	}
	return s
}

// SpoofedKnocks is issue 11's class 7: a flood of cheap spoofed knocks —
// three SYNs to closed ports from each of N random sources, answered by
// the host's RSTs, over Duration — around one real knock of the attacker
// and its connection to the opened port ConnectAt later.
type SpoofedKnocks struct {
	N         int
	Duration  time.Duration
	Attacker  netip.Addr
	KnockAt   time.Duration // the attacker's first SYN
	ConnectAt time.Duration // the attacker's connection to port 4444
	Seed      uint64
}

// NewSpoofedKnocks draws n spoofed knocks over 10 s around a real knock at
// 3-5 s and its connection 3 s later.
func NewSpoofedKnocks(rng *rand.Rand, n int) SpoofedKnocks {
	at := 3*time.Second + time.Duration(rng.Int64N(int64(2*time.Second)))
	return SpoofedKnocks{N: n, Duration: 10 * time.Second, KnockAt: at, ConnectAt: at + 3*time.Second,
		Attacker: netip.AddrFrom4([4]byte{100, byte(64 + rng.IntN(64)), byte(rng.Uint32()), byte(1 + rng.IntN(254))}),
		Seed:     rng.Uint64()}
}

// Steps are the packets in time order, then sweeps (once every SYN is
// due, and 31 minutes later). With only set, a spoofed knock is kept only
// if its pair lands in the attacker's pair bucket or candidate bucket:
// the only state the attacker's flag and handshake depend on (port state
// of the knock ports and the attacker's port 4444 only collide by the
// port-slot hash, which the full run of TestSpoofedKnocksFilterExact
// covers).
func (sk SpoofedKnocks) Steps(only bool, seed uint32, tables sensor.Tables) iter.Seq[Step] {
	return func(yield func(Step) bool) {
		rng := rand.New(rand.NewPCG(sk.Seed, sk.Seed^0x2545f4914f6cdd1d))
		a := Conv{Src: sk.Attacker, Dst: Victim}
		h := sensor.PairHashAddr(seed, sk.Attacker, Victim)
		var steps []Step
		steps = append(steps, Cat(a.REJ(sk.KnockAt, 7000), a.REJ(sk.KnockAt+100*time.Millisecond, 8000),
			a.REJ(sk.KnockAt+200*time.Millisecond, 9000), a.Connect(sk.ConnectAt, 4444))...)
		gap := sk.Duration / time.Duration(sk.N)
		for i := range sk.N {
			src := netip.AddrFrom4([4]byte{byte(1 + rng.IntN(223)), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
			if only {
				hs := sensor.PairHashAddr(seed, src, Victim)
				if hs&(tables.PairBuckets-1) != h&(tables.PairBuckets-1) && hs&(tables.CandBuckets-1) != h&(tables.CandBuckets-1) {
					continue
				}
			}
			c := Conv{Src: src, Dst: Victim}
			at := time.Duration(i) * gap
			steps = append(steps, c.REJ(at, 7000)...)
			steps = append(steps, c.REJ(at+100*time.Millisecond, 8000)...)
			steps = append(steps, c.REJ(at+200*time.Millisecond, 9000)...)
		}
		sort.SliceStable(steps, func(i, j int) bool { return steps[i].At < steps[j].At })
		for _, st := range steps {
			if !yield(st) {
				return
			}
		}
		if yield(Step{At: sk.Duration + 6*time.Second, Sweep: true}) {
			yield(Step{At: sk.Duration + 31*time.Minute, Sweep: true})
		}
	}
}

// Reported reports whether the attacker's knock and its handshake to the
// opened port came out.
func (sk SpoofedKnocks) Reported(recs []sensor.Record) bool {
	var knock, hs bool
	for _, r := range recs {
		switch r := r.(type) {
		case *sensor.Knock:
			knock = knock || r.Src == sk.Attacker
		case *sensor.Handshake:
			hs = hs || (r.Src == sk.Attacker && r.Port == 4444)
		}
	}
	return knock && hs
}
