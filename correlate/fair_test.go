package correlate

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// noisy is a host the flooder controls or names (WS99, 10.0.0.99).
var noisy = netip.MustParseAddr("10.0.0.99")

// floodChange is a change the flooder sends: an inbound allow rule on host
// (name, addr) at time at, with a fresh record id, from origin.
func floodChange(name string, addr netip.Addr, at time.Time, i int, origin string) ExposureChange {
	c := ruleAdded(at, Ports(uint16(10000+i%50000)), uint64(1_000_000+i))
	c.Host, c.HostIPs, c.Origin = name, []netip.Addr{addr}, origin
	c.RuleID = fmt.Sprintf("{flood-%d}", i)
	return c
}

// The attacker's knock and real change on the victim are stored; then a
// flood of changes a knock can use (the flooder knocked on its host with
// three RST-answered SYNs) fills the change table many times over; then
// the attacker connects. The victim's change must survive and the alert
// be high, however the flood is aimed.
func TestChangeFloodKeepsVictimEvidence(t *testing.T) {
	const capN = 512
	flooder := netip.MustParseAddr("203.0.113.66")
	cases := []struct {
		name   string
		host   string
		addr   netip.Addr
		origin string // the flood's forwarder; the real change comes from "wec01"
		before bool   // flood before the real change arrives
	}{
		{"another host, same forwarder", "WS99", noisy, "wec01", false},
		{"another host, another forwarder", "WS99", noisy, "rogue", false},
		{"another host, same forwarder, flood first", "WS99", noisy, "wec01", true},
		{"the victim's own host, another forwarder", "WS01", victim, "rogue", false},
		{"the victim's own host, another forwarder, flood first", "WS01", victim, "rogue", true},
		{"the victim's own host, same forwarder", "WS01", victim, "wec01", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, col := newTestEngine(t, func(cfg *Config) { cfg.MaxChanges = capN })
			real := ruleAdded(chAt, Ports(22), 1)
			real.Origin = "wec01"
			// The flooder's own knock makes its changes usable by a knock.
			feed(t, e, knockAt(flooder, c.addr, t0, 501, 502, 503), knock3())
			flood := func() {
				for i := range 8 * capN {
					feed(t, e, floodChange(c.host, c.addr, chAt.Add(time.Duration(i)*time.Millisecond), i, c.origin))
				}
			}
			if c.before {
				flood()
				feed(t, e, real)
			} else {
				feed(t, e, real)
				flood()
			}
			feed(t, e, handshakeAt(attacker, victim, 22, ackAt))
			got := col.all()
			if len(got) == 0 || got[len(got)-1].Confidence != ConfidenceHigh || got[len(got)-1].Change == nil ||
				got[len(got)-1].Change.RecordID != 1 {
				t.Fatalf("victim's alert lost or weakened under the flood: %q", summary(got))
			}
			s := e.Stats()
			if s.Changes > capN || s.Evicted[capChanges] == 0 {
				t.Fatalf("cap not enforced: %d changes, evicted %v", s.Changes, s.Evicted)
			}
			if s.EvictedByReason[capChanges][EvictChangeUsable] == 0 {
				t.Fatalf("evictions by reason %v: the flood was usable, want usable evictions counted", s.EvictedByReason)
			}
			if len(s.TopEvictedHosts) == 0 || s.TopEvictedHosts[0].Key != normName(c.host) {
				t.Fatalf("top evicted hosts %v, want %s first", s.TopEvictedHosts, c.host)
			}
			if len(s.TopEvictedOrigins) == 0 || s.TopEvictedOrigins[0].Key != c.origin {
				t.Fatalf("top evicted forwarders %v, want %s first", s.TopEvictedOrigins, c.origin)
			}
		})
	}
}

// Changes no knock can use go before any a knock can use, whatever their
// sizes: a flood of knock-less changes from many forwarders for many hosts
// evicts none of the usable ones.
func TestChangeEvictionClassesFirst(t *testing.T) {
	e, col := newTestEngine(t, func(c *Config) { c.MaxChanges = 64 })
	real := ruleAdded(chAt, Ports(22), 1)
	real.Origin = "wec01"
	feed(t, e, knock3(), real)
	for i := range 2000 {
		c := floodChange(fmt.Sprintf("h%d", i), addrN("10.8.0.0", i), chAt, i, fmt.Sprintf("f%d", i%7))
		feed(t, e, c)
	}
	feed(t, e, handshakeAt(attacker, victim, 22, ackAt))
	if got := summary(col.all()); len(got) != 1 || got[0] != "created high" {
		t.Fatalf("records = %q", got)
	}
	s := e.Stats()
	if s.EvictedByReason[capChanges][EvictChangeUsable] != 0 || s.EvictedByReason[capChanges][EvictChangeNoKnock] == 0 {
		t.Fatalf("evicted by reason %v", s.EvictedByReason)
	}
}

// A flood of knocked pairs on one host goes before another host's knock
// of the same class, although that knock is the least recently updated.
func TestPairFloodOnAnotherHostKeepsVictimKnock(t *testing.T) {
	e, col := newTestEngine(t, func(c *Config) { c.MaxPairs = 256 })
	feed(t, e, knock3()) // the victim's knock, no change yet: the oldest pair of its class
	for i := range 5000 {
		feed(t, e, knockAt(addrN("100.64.0.0", i), noisy, t0.Add(time.Duration(i)*ms), 1, 2, 3))
	}
	feed(t, e, ruleAdded(chAt, Ports(22), 1), handshakeAt(attacker, victim, 22, ackAt))
	if got := summary(col.all()); len(got) != 1 || got[0] != "created high" {
		t.Fatalf("victim's knock lost under a pair flood on another host: %q", got)
	}
	s := e.Stats()
	if s.EvictedByReason[capPairs]["knock"] == 0 || len(s.TopEvictedHosts) == 0 || s.TopEvictedHosts[0].Key != noisy.String() {
		t.Fatalf("evictions %v, top hosts %v", s.EvictedByReason, s.TopEvictedHosts)
	}
}

// fairPick takes from the biggest group first: after picking n, no group
// that still has candidates holds more than one more than any group that
// was picked from (water filling), with random group sizes and seeds.
func TestFairPickWaterFills(t *testing.T) {
	seed := rand.Uint64()
	r := rand.New(rand.NewPCG(seed, 1))
	for round := range 200 {
		var items []fairItem[string]
		sizes := map[string]int{}
		for g := range 1 + r.IntN(8) {
			for h := range 1 + r.IntN(4) {
				n := 1 + r.IntN(50)
				key := fmt.Sprintf("%d/%d", g, h)
				sizes[key] = n
				for i := range n {
					items = append(items, fairItem[string]{outer: fmt.Sprint(g), inner: fmt.Sprint(h), rank: int64(i), v: key})
				}
			}
		}
		n := r.IntN(len(items) + 1)
		picked := map[string]int{}
		outerPicked := map[string]int{}
		for _, k := range fairPick(items, n) {
			picked[k]++
			outerPicked[k[:1]]++
		}
		outerLeft := map[string]int{}
		for k, sz := range sizes {
			outerLeft[k[:1]] += sz - picked[k]
		}
		total := 0
		for _, v := range picked {
			total += v
		}
		if total != n {
			t.Fatalf("seed %d round %d: picked %d, want %d", seed, round, total, n)
		}
		// Every outer group picked from ends with no fewer left than the
		// largest remaining group minus one.
		maxLeft := 0
		for _, v := range outerLeft {
			maxLeft = max(maxLeft, v)
		}
		for o, p := range outerPicked {
			if p > 0 && outerLeft[o] < maxLeft-1 {
				t.Fatalf("seed %d round %d: group %s cut to %d while another keeps %d", seed, round, o, outerLeft[o], maxLeft)
			}
		}
	}
}

// topK keeps the heaviest keys of a stream with many light keys, with
// random seeds: a key with more than total/k events is always listed.
func TestTopKKeepsHeavyHitters(t *testing.T) {
	seed := rand.Uint64()
	r := rand.New(rand.NewPCG(seed, 2))
	for range 50 {
		tk := newTopK(16)
		heavy := fmt.Sprintf("heavy-%d", r.IntN(1000))
		total := 0
		for range 20000 {
			if r.IntN(5) == 0 {
				tk.add(heavy, 1)
			} else {
				tk.add(fmt.Sprintf("light-%d", r.IntN(100000)), 1)
			}
			total++
		}
		top := tk.top()
		if len(top) > 16 || top[0].Key != heavy {
			t.Fatalf("seed %d: top %v, want %s first", seed, top[:min(3, len(top))], heavy)
		}
	}
}

// A stored change's strings and port list are bounded whatever the event
// carried, and the bound never drops a port it opens.
func TestStoredChangeBounded(t *testing.T) {
	e, col := newTestEngine(t, nil)
	c := ruleAdded(chAt, PortSet{}, 1)
	c.RuleName = strings.Repeat("x", 1<<20)
	for p := uint16(1); p < 20000; p += 3 {
		c.Ports.Ranges = append(c.Ports.Ranges, PortRange{p, p})
	}
	c.Ports.Ranges = append(c.Ports.Ranges, PortRange{22, 22})
	feed(t, e, knock3(), c, handshakeAt(attacker, victim, 22, ackAt))
	for _, st := range e.st.changes {
		if len(st.c.RuleName) > maxKeptBytes || len(st.c.Ports.Ranges) > maxKeptRanges || !st.c.Ports.Contains(22) {
			t.Fatalf("stored change: rule name %d bytes, %d ranges", len(st.c.RuleName), len(st.c.Ports.Ranges))
		}
	}
	if got := summary(col.all()); len(got) != 1 || got[0] != "created high" {
		t.Fatalf("records %q", got)
	}
	r := rand.New(rand.NewPCG(rand.Uint64(), 3))
	for range 100 {
		var rs []PortRange
		want := map[uint16]bool{}
		for range 1 + r.IntN(2000) {
			lo := uint16(1 + r.IntN(65000))
			hi := lo + uint16(r.IntN(20))
			rs = append(rs, PortRange{lo, hi})
			for p := lo; p <= hi; p++ {
				want[p] = true
			}
		}
		got := PortSet{Ranges: boundRanges(rs, 64)}
		if len(got.Ranges) > 64 {
			t.Fatalf("%d ranges", len(got.Ranges))
		}
		for p := range want {
			if !got.Contains(p) {
				t.Fatalf("port %d lost", p)
			}
		}
	}
}
