package correlate

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func addrN(base string, n int) netip.Addr {
	b := netip.MustParseAddr(base).As4()
	b[2], b[3] = byte(n>>8), byte(n)
	return netip.AddrFrom4(b)
}

// A flood of scanners and half-knocks must not push out an attacker whose
// knock has been followed by a change on its host.
func TestPairCapKeepsAttacker(t *testing.T) {
	e, col := newTestEngine(t, func(c *Config) { c.MaxPairs = 64 })
	feed(t, e, knock3(), ruleAdded(chAt, Ports(22), 1))
	for i := 0; i < 5000; i++ {
		src := addrN("100.64.0.0", i)
		switch i % 3 {
		case 0: // a scanner on the victim
			feed(t, e, knockAt(src, victim, t0.Add(time.Duration(i)*ms), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17))
		case 1: // a half knock on the victim
			feed(t, e, knockAt(src, victim, t0.Add(time.Duration(i)*ms), 1, 2))
		default: // full knocks on another host
			feed(t, e, knockAt(src, bystand, t0.Add(time.Duration(i)*ms), 1, 2, 3))
		}
	}
	feed(t, e, handshakeAt(attacker, victim, 22, ackAt))
	if got := summary(col.all()); len(got) != 1 || got[0] != "created high" {
		t.Fatalf("attacker lost under the flood: %q", got)
	}
	s := e.Stats()
	if s.Pairs > 64 || s.CapHits[capPairs] == 0 || s.Evicted[capPairs] == 0 {
		t.Fatalf("cap not enforced or not counted: pairs %d, cap hits %v, evicted %v", s.Pairs, s.CapHits, s.Evicted)
	}
}

func TestHandshakeCapKeepsKnocker(t *testing.T) {
	e, col := newTestEngine(t, func(c *Config) { c.MaxHandshakes = 16 })
	feed(t, e, knock3(), handshakeAt(attacker, victim, 22, ackAt))
	for i := 0; i < 1000; i++ {
		// Handshakes whose knock never arrives.
		feed(t, e, handshakeAt(addrN("100.64.0.0", i), victim, 22, ackAt.Add(time.Duration(i)*ms)))
	}
	feed(t, e, ruleAdded(chAt, Ports(22), 1)) // the late host event
	if got := summary(col.all()); len(got) != 1 || got[0] != "created high" {
		t.Fatalf("attacker's handshake lost: %q", got)
	}
	s := e.Stats()
	if s.Handshakes > 16 || s.CapHits[capHandshakes] == 0 || s.Evicted[capHandshakes] == 0 {
		t.Fatalf("handshake cap: %+v", s)
	}
}

func TestChangeCapKeepsMatchingChange(t *testing.T) {
	e, col := newTestEngine(t, func(c *Config) { c.MaxChanges = 16 })
	feed(t, e, knock3(), ruleAdded(chAt, Ports(22), 1))
	for i := 0; i < 1000; i++ {
		c := ruleAdded(chAt, Ports(uint16(1000+i)), uint64(100+i))
		c.Host, c.HostIPs = fmt.Sprintf("churn%d", i), []netip.Addr{addrN("10.9.0.0", i)}
		feed(t, e, c)
		u := c
		u.Host, u.HostIPs, u.RecordID = fmt.Sprintf("unknown%d", i), nil, uint64(5000+i)
		feed(t, e, u)
	}
	feed(t, e, handshakeAt(attacker, victim, 22, ackAt))
	if got := summary(col.all()); len(got) != 1 || got[0] != "created high" {
		t.Fatalf("attacker's change lost: %q", got)
	}
	s := e.Stats()
	if s.Changes > 16 || s.CapHits[capChanges] == 0 || s.Evicted[capChanges] == 0 {
		t.Fatalf("change cap: %+v", s)
	}
}

func TestTouchCap(t *testing.T) {
	e, _ := newTestEngine(t, func(c *Config) { c.MaxTouchesPerPair = 17 })
	// The same 3 ports knocked again and again: a knock, never a scan.
	for i := 0; i < 10; i++ {
		feed(t, e, knockAt(attacker, victim, t0.Add(time.Duration(i)*time.Minute), 1, 2, 3))
	}
	s := e.Stats()
	if s.TouchesDropped != 30-17 || s.Scans != 0 {
		t.Fatalf("touch cap: dropped %d, scans %d", s.TouchesDropped, s.Scans)
	}
}

// State expires by retention in event time, driven by the sensor's clock.
func TestRetentionSweep(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	feed(t, e, knock3(), handshakeAt(attacker, victim, 22, ackAt), ruleAdded(chAt, Ports(23), 1))
	if s := e.Stats(); s.Pairs != 1 || s.Changes != 1 {
		t.Fatalf("before: %+v", s)
	}
	// Windows event times do not move the watermark.
	feed(t, e, ruleAdded(chAt.Add(24*time.Hour), Ports(24), 2))
	if s := e.Stats(); s.Pairs != 1 || !s.Watermark.Equal(ackAt.Add(-5*sec)) {
		t.Fatalf("a host event moved the watermark: %v", s.Watermark)
	}
	e.Advance(ackAt.Add(time.Hour))
	s := e.Stats()
	if s.Pairs != 0 || s.Hosts != 1 || s.Changes != 1 || s.Expired[capPairs] != 1 || s.Expired[capChanges] != 1 {
		t.Fatalf("after: %+v", s)
	}
}

// The engine is safe for concurrent use: independent scenarios fed from
// several goroutines each alert exactly once.
func TestConcurrentFeeds(t *testing.T) {
	e, col := newTestEngine(t, nil)
	const workers, per = 4, 50
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				n := w*per + i
				src, dst := addrN("100.64.0.0", n), addrN("10.1.0.0", n)
				c := ruleAdded(chAt, Ports(22), uint64(n+1))
				c.Host, c.HostIPs = fmt.Sprintf("h%d", n), []netip.Addr{dst}
				// Interleave the three kinds from different goroutines.
				var g sync.WaitGroup
				g.Add(3)
				go func() { defer g.Done(); _ = e.AddKnock(knockAt(src, dst, t0, 7, 8, 9)) }()
				go func() { defer g.Done(); _ = e.AddChange(c) }()
				go func() { defer g.Done(); _ = e.AddHandshake(handshakeAt(src, dst, 22, ackAt)) }()
				g.Wait()
				_ = e.Stats()
			}
		}(w)
	}
	wg.Wait()
	if got := len(col.final()); got != workers*per {
		t.Fatalf("alerts = %d, want %d", got, workers*per)
	}
	if s := e.Stats(); s.AlertsHigh != workers*per {
		t.Fatalf("high alerts counted %d", s.AlertsHigh)
	}
}

// With every pair hashing alike the table is one long chain: lookups,
// eviction and expiry must still find, keep and drop the right pairs.
func TestPairHashCollisions(t *testing.T) {
	e, col := newTestEngine(t, func(c *Config) { c.MaxPairs = 32 })
	e.st.testHash = func(dst, src netip.Addr) uint64 { return uint64(dst.As16()[15] & 1) }
	feed(t, e, knock3(), ruleAdded(chAt, Ports(22), 1))
	for i := 0; i < 500; i++ {
		feed(t, e, knockAt(addrN("100.64.0.0", i), []netip.Addr{victim, bystand}[i%2], t0.Add(time.Duration(i)*ms), 1, 2))
	}
	feed(t, e, handshakeAt(attacker, victim, 22, ackAt))
	if got := summary(col.all()); len(got) != 1 || got[0] != "created high" {
		t.Fatalf("records = %q", got)
	}
	if s := e.Stats(); s.Pairs != 32 {
		t.Fatalf("pairs = %d", s.Pairs)
	}
	e.Advance(ackAt.Add(time.Hour))
	n := 0
	e.st.eachPair(func(*pair) { n++ })
	if s := e.Stats(); s.Pairs != 0 || n != 0 || len(e.st.pairs) != 0 {
		t.Fatalf("after expiry: pairs %d, walked %d, table %d", s.Pairs, n, len(e.st.pairs))
	}
}

// Emit may call back into the engine, from several goroutines at once,
// without deadlock, and records of one alert id keep their order.
func TestEmitReentrant(t *testing.T) {
	var e *Engine
	var mu sync.Mutex
	seen := make(map[string][]string)
	emit := EmitterFunc(func(a Alert) {
		_ = e.Stats()
		_ = e.AddKnock(knockAt(a.Handshake.Src, a.Handshake.Dst, t0, 7, 8, 9)) // a duplicate: no effect
		mu.Lock()
		seen[a.ID] = append(seen[a.ID], a.Action)
		mu.Unlock()
	})
	var err error
	if e, err = New(DefaultConfig(), emit); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				n := w*50 + i
				src, dst := addrN("100.64.0.0", n), addrN("10.1.0.0", n)
				h := handshakeAt(src, dst, 22, ackAt)
				h.PortLastClosed = t0.Add(-time.Minute)
				c := ruleAdded(chAt, Ports(22), uint64(n+1))
				c.Host, c.HostIPs = fmt.Sprintf("h%d", n), []netip.Addr{dst}
				_ = e.AddKnock(knockAt(src, dst, t0, 7, 8, 9))
				_ = e.AddHandshake(h) // medium at once
				_ = e.AddChange(c)    // upgraded
			}
		}(w)
	}
	wg.Wait()
	if len(seen) != 200 {
		t.Fatalf("%d alert ids, want 200", len(seen))
	}
	for id, actions := range seen {
		if len(actions) != 2 || actions[0] != ActionCreated || actions[1] != ActionUpgraded {
			t.Fatalf("alert %s records %v", id, actions)
		}
	}
}
