package coverage

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

var (
	t0   = time.Date(2026, 11, 20, 14, 30, 0, 0, time.UTC)
	ws01 = netip.MustParseAddr("10.0.0.5")
	ws02 = netip.MustParseAddr("10.0.0.6")
)

func peer(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}) }

// conn is one connection to ws01 seen by the sensor at at (SYN-ACK at
// +1 ms, ACK at +2 ms) and logged by the host as a 5156 at at+offset.
type conn struct {
	peer  netip.Addr
	sport uint16
	at    time.Time
}

func (c conn) handshake(sample bool) Handshake {
	return Handshake{Src: c.peer, Dst: ws01, SrcPort: c.sport, Port: 445, SYN: c.at,
		SYNACK: c.at.Add(time.Millisecond), ACK: c.at.Add(2 * time.Millisecond), Sample: sample}
}

func (c conn) event(offset time.Duration, record uint64) Event {
	return Event{Host: "WS01.corp.example", Time: c.at.Add(time.Millisecond).Add(offset), Channel: "Security",
		EventID: 5156, RecordID: record, Conn: &Conn{Local: ws01, Remote: c.peer, LocalPort: 445, RemotePort: c.sport, SideKnown: true}}
}

func newTracker(t *testing.T, mod func(*Config)) *Tracker {
	t.Helper()
	cfg := DefaultConfig()
	if mod != nil {
		mod(&cfg)
	}
	tr, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// lastClock returns the clock the updates leave for ip (nil: cleared or
// never set) and whether any update named it.
func lastClock(ups []ClockUpdate, ip netip.Addr, cur *Clock) *Clock {
	for _, u := range ups {
		if u.IP == ip {
			cur = u.Clock
		}
	}
	return cur
}

// TestClockMeasured: a host 90 s behind, its 5156 events matched with the
// sensor's handshakes from several peers, in either arrival order: the
// offset is measured within a second once enough peers agree.
func TestClockMeasured(t *testing.T) {
	for _, eventsFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("events first %v", eventsFirst), func(t *testing.T) {
			tr := newTracker(t, nil)
			var clk *Clock
			for i := 0; i < 4; i++ {
				c := conn{peer: peer(i % 2), sport: uint16(50000 + i), at: t0.Add(time.Duration(i) * 10 * time.Second)}
				if eventsFirst {
					clk = lastClock(tr.ObserveEvent(c.event(-90*time.Second, uint64(100+i))), ws01, clk)
					clk = lastClock(tr.ObserveHandshake(c.handshake(true)), ws01, clk)
				} else {
					clk = lastClock(tr.ObserveHandshake(c.handshake(i%2 == 0)), ws01, clk)
					clk = lastClock(tr.ObserveEvent(c.event(-90*time.Second, uint64(100+i))), ws01, clk)
				}
				if i < 2 && clk != nil {
					t.Fatalf("measured after %d samples: %+v", i+1, clk)
				}
			}
			if clk == nil {
				t.Fatal("no clock after 4 samples from 2 peers")
			}
			if d := clk.Offset + 90*time.Second; d < -time.Second || d > time.Second {
				t.Fatalf("offset %v, want -90 s within 1 s", clk.Offset)
			}
			if clk.Host != "WS01.corp.example" || clk.Sources != 2 || clk.Samples != 4 || len(clk.Evidence) != 4 {
				t.Errorf("clock %+v", clk)
			}
			r := tr.Report(true)
			if r.Summary.ClockMeasured != 1 || r.Summary.LargestOffset < 89 {
				t.Errorf("summary %+v", r.Summary)
			}
			if !hasFinding(r, FindClockOffset, "WS01.corp.example") {
				t.Errorf("no clock_offset finding: %+v", r.Findings)
			}
		})
	}
}

// TestClockEstimateStatistical: with each sample off by up to ±400 ms
// (the host's logging delay, forwarding jitter, 1 s resolution of some
// formats rounded), the estimate from 6 samples of 3 peers is within a
// second of the truth in every one of 500 random trials with random seeds
// and random true offsets; stated bound: all trials (a median of six
// values within ±400 ms cannot leave that interval).
func TestClockEstimateStatistical(t *testing.T) {
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for trial := 0; trial < 500; trial++ {
		tr := newTracker(t, nil)
		truth := time.Duration(rng.Int64N(int64(19*time.Minute))) - 9*time.Minute - 30*time.Second
		var clk *Clock
		for i := 0; i < 6; i++ {
			c := conn{peer: peer(i % 3), sport: uint16(40000 + i), at: t0.Add(time.Duration(i) * time.Minute)}
			jitter := time.Duration(rng.Int64N(int64(800*time.Millisecond))) - 400*time.Millisecond
			clk = lastClock(tr.ObserveHandshake(c.handshake(true)), ws01, clk)
			clk = lastClock(tr.ObserveEvent(c.event(truth+jitter, uint64(i+1))), ws01, clk)
		}
		if clk == nil {
			t.Fatalf("seed %d trial %d: no clock (truth %v)", seed, trial, truth)
		}
		if d := clk.Offset - truth; d < -time.Second || d > time.Second {
			t.Fatalf("seed %d trial %d: offset %v, truth %v", seed, trial, clk.Offset, truth)
		}
	}
}

// TestClockForgedFlood: an attacker who can connect and forward events
// floods forged 5156s to move WS01's clock to 0 (so that its real,
// 90-s-behind change misses the knock). What holds: events of connections
// the sensor never saw never match; its own connections give one vote
// however many; a forged event beside the host's real one of the same
// connection is a conflict; offsets beyond max_offset are refused.
func TestClockForgedFlood(t *testing.T) {
	tr := newTracker(t, func(c *Config) { c.MaxPending = 1000 })
	var clk *Clock
	// The truth: two ordinary peers, 90 s behind.
	for i := 0; i < 4; i++ {
		c := conn{peer: peer(i % 2), sport: uint16(50000 + i), at: t0.Add(time.Duration(i) * 10 * time.Second)}
		clk = lastClock(tr.ObserveHandshake(c.handshake(true)), ws01, clk)
		clk = lastClock(tr.ObserveEvent(c.event(-90*time.Second, uint64(100+i))), ws01, clk)
	}
	// 5,000 forged events of connections that never happened.
	for i := 0; i < 5000; i++ {
		c := conn{peer: netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), sport: uint16(i), at: t0.Add(time.Minute)}
		clk = lastClock(tr.ObserveEvent(c.event(0, uint64(10000+i))), ws01, clk)
	}
	// The attacker's own 50 connections, seen by the sensor, each with a
	// forged event at offset 0.
	evil := netip.MustParseAddr("198.51.100.7")
	for i := 0; i < 50; i++ {
		c := conn{peer: evil, sport: uint16(30000 + i), at: t0.Add(2*time.Minute + time.Duration(i)*time.Second)}
		clk = lastClock(tr.ObserveHandshake(c.handshake(true)), ws01, clk)
		clk = lastClock(tr.ObserveEvent(c.event(0, uint64(20000+i))), ws01, clk)
	}
	// One of the ordinary connections forged again with offset 0, beside
	// the host's real event.
	c := conn{peer: peer(0), sport: 50000, at: t0}
	clk = lastClock(tr.ObserveEvent(c.event(0, 99999)), ws01, clk)
	// And one beyond the bound.
	c = conn{peer: peer(1), sport: 51000, at: t0.Add(3 * time.Minute)}
	clk = lastClock(tr.ObserveHandshake(c.handshake(true)), ws01, clk)
	clk = lastClock(tr.ObserveEvent(c.event(-2*time.Hour, 77)), ws01, clk)

	if clk == nil || clk.Offset > -89*time.Second || clk.Offset < -91*time.Second {
		t.Fatalf("clock %+v: the flood moved it", clk)
	}
	st := tr.Stats()
	if st.Samples["conflict"] != 1 || st.Samples["beyond_bound"] != 1 {
		t.Errorf("samples %v", st.Samples)
	}
	if st.Pending["connections"] > 1000 || st.Evicted["connections"] == 0 {
		t.Errorf("pending %v evicted %v: the unmatched flood is not bounded", st.Pending, st.Evicted)
	}
	r := tr.Report(true)
	if !hasFinding(r, FindClockConflicts, "WS01.corp.example") {
		t.Errorf("no clock_conflicts finding: %+v", r.Findings)
	}
}

// TestClockConflictEitherOrder: the real and the forged event of one
// connection discard the sample whichever arrives first, before or after
// the handshake.
func TestClockConflictEitherOrder(t *testing.T) {
	for _, order := range [][]string{{"real", "forged", "hs"}, {"forged", "hs", "real"}, {"hs", "real", "forged"}, {"hs", "forged", "real"}} {
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			tr := newTracker(t, func(c *Config) { c.MinSamples, c.MinSources = 1, 1 })
			c := conn{peer: peer(0), sport: 50000, at: t0}
			var clk *Clock
			for _, step := range order {
				switch step {
				case "real":
					clk = lastClock(tr.ObserveEvent(c.event(-90*time.Second, 1)), ws01, clk)
				case "forged":
					clk = lastClock(tr.ObserveEvent(c.event(0, 2)), ws01, clk)
				default:
					clk = lastClock(tr.ObserveHandshake(c.handshake(true)), ws01, clk)
				}
			}
			if clk != nil {
				t.Fatalf("clock %+v from a conflicting connection", clk)
			}
			if n := tr.Stats().Samples["conflict"]; n != 1 {
				t.Fatalf("conflicts %d", n)
			}
		})
	}
}

// TestClockAddressMismatch: a match whose address the inventory gives to
// another computer is refused.
func TestClockAddressMismatch(t *testing.T) {
	tr, err := New(DefaultConfig(), fakeInv{"ws02.corp.example": {ws01}})
	if err != nil {
		t.Fatal(err)
	}
	c := conn{peer: peer(0), sport: 50000, at: t0}
	tr.ObserveHandshake(c.handshake(true))
	tr.ObserveEvent(c.event(-90*time.Second, 1)) // WS01 claims ws02's address
	if n := tr.Stats().Samples["address_mismatch"]; n != 1 {
		t.Fatalf("address_mismatch %d", n)
	}
}

// TestClockAges: samples older than sample_max_age no longer count; the
// clock is cleared once too few remain.
func TestClockAges(t *testing.T) {
	tr := newTracker(t, func(c *Config) { c.SampleMaxAge = time.Hour })
	var clk *Clock
	for i := 0; i < 4; i++ {
		c := conn{peer: peer(i % 2), sport: uint16(50000 + i), at: t0.Add(time.Duration(i) * time.Second)}
		clk = lastClock(tr.ObserveHandshake(c.handshake(true)), ws01, clk)
		clk = lastClock(tr.ObserveEvent(c.event(-90*time.Second, uint64(i+1))), ws01, clk)
	}
	if clk == nil {
		t.Fatal("not measured")
	}
	clk = lastClock(tr.Tick(t0.Add(30*time.Minute), nil), ws01, clk)
	if clk == nil {
		t.Fatal("cleared too early")
	}
	clk = lastClock(tr.Tick(t0.Add(2*time.Hour), nil), ws01, clk)
	if clk != nil {
		t.Fatalf("clock %+v after its samples aged out", clk)
	}
}

type fakeInv map[string][]netip.Addr

func (f fakeInv) IPs(name string) []netip.Addr {
	for n, ips := range f {
		if sameHost(n, name) {
			return ips
		}
	}
	return nil
}

func (f fakeInv) Name(ip netip.Addr) string {
	for n, ips := range f {
		for _, x := range ips {
			if x == ip {
				return n
			}
		}
	}
	return ""
}

func hasFinding(r Report, kind, host string) bool {
	for _, f := range r.Findings {
		if f.Kind == kind && (host == "" || f.Host == host || f.Interface == host) {
			return true
		}
	}
	return false
}
