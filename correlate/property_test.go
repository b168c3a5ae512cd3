package correlate

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// scenario is one valid AN0842 sequence with margins that keep it valid
// when host times move by less than the skew tolerance.
type scenario struct {
	src, dst netip.Addr
	port     uint16
	knock    Knock
	change   ExposureChange
	hs       Handshake
}

// drawScenario draws scenario i; every scenario has its own source and
// host, and starts i×40 s after t0, so a run spans a few minutes: well
// inside the retention, so any arrival order is within the lateness bound.
func drawScenario(t *rapid.T, i int) scenario {
	cfg := DefaultConfig()
	s := scenario{src: addrN("100.64.0.0", i), dst: addrN("10.2.0.0", i)}
	base := t0.Add(time.Duration(i) * 40 * time.Second)

	// The knock: 3..16 distinct ports within the window, in time order.
	n := rapid.IntRange(cfg.MinPorts, cfg.MaxPorts).Draw(t, "ports")
	ports := rapid.SliceOfNDistinct(rapid.Uint16Range(1024, 9999), n, n, rapid.ID[uint16]).Draw(t, "knock ports")
	offs := make([]int64, n)
	for j := range offs {
		offs[j] = rapid.Int64Range(0, int64(cfg.KnockWindow/time.Millisecond)).Draw(t, "touch offset")
	}
	slices.Sort(offs)
	s.knock = Knock{Src: s.src, Dst: s.dst}
	for j, p := range ports {
		kind := rapid.SampledFrom([]TouchKind{TouchREJ, TouchS0}).Draw(t, "kind")
		s.knock.Touches = append(s.knock.Touches, Touch{Port: p, Time: base.Add(time.Duration(offs[j]) * time.Millisecond), Kind: kind})
	}
	last := s.knock.Touches[n-1].Time

	// The change: 0..(60 s - skew) after the last touch, naming the port.
	s.port = rapid.Uint16Range(10, 999).Draw(t, "port")
	u := rapid.Int64Range(0, int64((cfg.ChangeAfter-cfg.Skew)/time.Millisecond)).Draw(t, "change after")
	at := last.Add(time.Duration(u) * time.Millisecond)
	var set PortSet
	switch rapid.IntRange(0, 3).Draw(t, "port form") {
	case 0:
		set = Ports(s.port)
	case 1:
		set = Ports(s.port+1000, s.port, 5)
	case 2:
		set = PortSet{Ranges: []PortRange{{s.port - rapid.Uint16Range(0, 9).Draw(t, "lo"), s.port + rapid.Uint16Range(0, 9).Draw(t, "hi")}}}
	default:
		set = AnyPort
	}
	s.change = ExposureChange{
		Time: at, Host: fmt.Sprintf("ws%d", i), HostIPs: []netip.Addr{s.dst}, Ports: set,
		Protocol:  rapid.SampledFrom([]Protocol{ProtocolTCP, ProtocolAny}).Draw(t, "proto"),
		Direction: DirectionInbound, Action: ActionAllow, Active: TriTrue,
		Kind:    rapid.SampledFrom([]ChangeKind{ChangeRuleAdded, ChangeRuleModified, ChangeRuleEnabled, ChangeListener}).Draw(t, "change kind"),
		EventID: 2004, Channel: "Firewall", RecordID: uint64(1000 + i),
	}

	// The handshake: skew..(300 s - skew) after the change.
	v := rapid.Int64Range(int64(cfg.Skew/time.Millisecond), int64((cfg.HandshakeAfter-cfg.Skew)/time.Millisecond)).Draw(t, "handshake after")
	s.hs = handshakeAt(s.src, s.dst, s.port, at.Add(time.Duration(v)*time.Millisecond))
	if rapid.Bool().Draw(t, "port seen closed") {
		s.hs.PortLastClosed = base.Add(-time.Duration(rapid.Int64Range(1, 600).Draw(t, "closed ago")) * time.Second)
		if rapid.Bool().Draw(t, "port seen open before that") {
			s.hs.PortLastOpen = s.hs.PortLastClosed.Add(-time.Hour)
		}
	}
	return s
}

// noise is evidence that must never alert: an outbound rule and a rule for
// another port on the same host, and a scanner.
func noise(s scenario, i int) []any {
	out := s.change
	out.Direction, out.RecordID = DirectionOutbound, uint64(5000+i)
	otherPort := s.change
	otherPort.Ports, otherPort.RecordID = Ports(s.port+2000), uint64(6000+i)
	scan := knockAt(addrN("100.65.0.0", i), s.dst, s.knock.Touches[0].Time,
		1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
	return []any{out, otherPort, scan, handshakeAt(scan.Src, s.dst, s.port, s.hs.ACK)}
}

func drawRun(t *rapid.T) ([]scenario, []any) {
	n := rapid.IntRange(1, 4).Draw(t, "scenarios")
	var scs []scenario
	var items []any
	for i := 0; i < n; i++ {
		s := drawScenario(t, i)
		scs = append(scs, s)
		items = append(items, s.knock, s.change, s.hs)
		items = append(items, noise(s, i)...)
	}
	return scs, items
}

func run(t *rapid.T, items []any) map[string]string {
	e, col := newTestEngine(t, nil)
	for _, it := range items {
		var err error
		switch v := it.(type) {
		case Knock:
			err = e.AddKnock(v)
		case Handshake:
			err = e.AddHandshake(v)
		case ExposureChange:
			err = e.AddChange(v)
		}
		if err != nil {
			t.Fatalf("add %T: %v", it, err)
		}
	}
	return col.final()
}

func wantHigh(scs []scenario) map[string]string {
	want := make(map[string]string)
	for _, s := range scs {
		want[AlertID(s.src, s.dst, s.port, s.hs.ACK)] = "high/"
	}
	return want
}

// Every arrival permutation, with any items duplicated, yields the same
// final alerts: one high alert per scenario and nothing from the noise.
func TestPropertyArrivalOrder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		scs, items := drawRun(t)
		want := wantHigh(scs)
		if got := run(t, items); !reflect.DeepEqual(got, want) {
			t.Fatalf("in order: got %v, want %v", got, want)
		}
		perm := rapid.Permutation(items).Draw(t, "arrival order")
		for _, i := range rapid.SliceOfN(rapid.IntRange(0, len(items)-1), 0, 5).Draw(t, "duplicates") {
			at := rapid.IntRange(0, len(perm)).Draw(t, "duplicate at")
			perm = slices.Insert(perm, at, items[i])
		}
		if got := run(t, perm); !reflect.DeepEqual(got, want) {
			t.Fatalf("permuted: got %v, want %v", got, want)
		}
	})
}

// Removing any one of the three pieces of a scenario leaves it without a
// high alert, and does not disturb the other scenarios.
func TestPropertyMissingPiece(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		scs, _ := drawRun(t)
		victim := rapid.IntRange(0, len(scs)-1).Draw(t, "victim scenario")
		piece := rapid.IntRange(0, 2).Draw(t, "removed piece")
		var items []any
		for i, s := range scs {
			for p, it := range []any{s.knock, s.change, s.hs} {
				if i != victim || p != piece {
					items = append(items, it)
				}
			}
			items = append(items, noise(s, i)...)
		}
		items = rapid.Permutation(items).Draw(t, "arrival order")
		got := run(t, items)
		s := scs[victim]
		id := AlertID(s.src, s.dst, s.port, s.hs.ACK)
		if got[id] == "high/" {
			t.Fatalf("high alert without piece %d", piece)
		}
		if piece != 1 && got[id] != "" {
			t.Fatalf("alert %q without the knock or the handshake", got[id])
		}
		want := wantHigh(scs)
		delete(want, id)
		delete(got, id)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("other scenarios: got %v, want %v", got, want)
		}
	})
}

// Shifting every host time by less than the skew tolerance changes nothing.
func TestPropertyHostClockSkew(t *testing.T) {
	skew := DefaultConfig().Skew
	rapid.Check(t, func(t *rapid.T) {
		scs, items := drawRun(t)
		d := time.Duration(rapid.Int64Range(-int64(skew)+1, int64(skew)-1).Draw(t, "shift"))
		shifted := make([]any, len(items))
		for i, it := range items {
			if c, ok := it.(ExposureChange); ok {
				c.Time = c.Time.Add(d)
				it = c
			}
			shifted[i] = it
		}
		shifted = rapid.Permutation(shifted).Draw(t, "arrival order")
		if got, want := run(t, shifted), wantHigh(scs); !reflect.DeepEqual(got, want) {
			t.Fatalf("host clock shifted by %v: got %v, want %v", d, got, want)
		}
	})
}

// drawNoisyRun draws arbitrary evidence (not necessarily a valid
// scenario) over two hosts and three sources: knocks on a small port pool,
// changes of every kind, direction, action and port form, handshakes with
// and without port state, some of them delivered twice. Distinct records
// have distinct identities (record id; SYN/ACK times), as they do in
// reality. At most 8 distinct knock ports per
// pair, so no pair turns into a scan halfway.
func drawNoisyRun(t *rapid.T) []any {
	hosts := []netip.Addr{victim, bystand}
	srcs := []netip.Addr{attacker, other, addrN("100.64.0.0", 1)}
	sec := func(label string, lo, hi int64) time.Time {
		return t0.Add(time.Duration(rapid.Int64Range(lo*1000, hi*1000).Draw(t, label)) * time.Millisecond)
	}
	var items []any
	for i, n := 0, rapid.IntRange(1, 6).Draw(t, "knocks"); i < n; i++ {
		k := Knock{Src: rapid.SampledFrom(srcs).Draw(t, "src"), Dst: rapid.SampledFrom(hosts).Draw(t, "dst")}
		for j, m := 0, rapid.IntRange(1, 4).Draw(t, "touches"); j < m; j++ {
			k.Touches = append(k.Touches, Touch{Port: rapid.Uint16Range(1001, 1008).Draw(t, "knock port"), Time: sec("touch", 0, 60), Kind: TouchREJ})
		}
		items = append(items, k)
	}
	for i, n := 0, rapid.IntRange(0, 5).Draw(t, "changes"); i < n; i++ {
		h := rapid.IntRange(0, 1).Draw(t, "change host")
		c := ExposureChange{
			Time: sec("change", 0, 130), Host: []string{"WS01", "WS02"}[h], HostIPs: []netip.Addr{hosts[h]},
			Kind:          rapid.SampledFrom([]ChangeKind{ChangeRuleAdded, ChangeRuleModified, ChangeRuleEnabled, ChangeRuleDeleted, ChangeListener, ChangeFirewallDisabled, ChangeServiceStarted}).Draw(t, "kind"),
			Ports:         rapid.SampledFrom([]PortSet{Ports(22), Ports(80), Ports(80, 22), {}, AnyPort}).Draw(t, "ports"),
			Protocol:      rapid.SampledFrom([]Protocol{ProtocolTCP, ProtocolUDP, ProtocolAny, ProtocolUnknown}).Draw(t, "protocol"),
			Direction:     rapid.SampledFrom([]Direction{DirectionInbound, DirectionOutbound, DirectionUnknown}).Draw(t, "direction"),
			Action:        rapid.SampledFrom([]Action{ActionAllow, ActionBlock, ActionUnknown}).Draw(t, "action"),
			Active:        rapid.SampledFrom([]Tri{TriTrue, TriFalse, TriUnknown}).Draw(t, "active"),
			ModifyingUser: rapid.SampledFrom([]string{"S-1-5-18", "CORP\\deploy"}).Draw(t, "user"),
			Channel:       "Firewall", RecordID: uint64(i + 1),
		}
		items = append(items, c)
		if rapid.Bool().Draw(t, "forwarded twice") {
			items = append(items, c)
		}
	}
	for i, n := 0, rapid.IntRange(1, 4).Draw(t, "handshakes"); i < n; i++ {
		h := handshakeAt(rapid.SampledFrom(srcs).Draw(t, "src"), rapid.SampledFrom(hosts).Draw(t, "dst"),
			rapid.SampledFrom([]uint16{22, 80}).Draw(t, "port"), sec("ack", 10, 420).Add(time.Duration(i)*time.Microsecond))
		if rapid.Bool().Draw(t, "closed known") {
			h.PortLastClosed = sec("closed", -600, 60)
		}
		if rapid.Bool().Draw(t, "open known") {
			h.PortLastOpen = sec("open", -600, 60)
		}
		items = append(items, h)
		if rapid.Bool().Draw(t, "reported twice") {
			items = append(items, h)
		}
	}
	return items
}

// Order independence over arbitrary evidence, with suppressions in play:
// the final confidence and outcome per alert id never depend on arrival.
func TestPropertyArrivalOrderNoisy(t *testing.T) {
	mod := func(c *Config) {
		c.EmitSuppressed = true
		c.Suppression.AdminUsers = []string{"corp\\deploy"}
		c.Suppression.AllowedSources = []netip.Prefix{netip.PrefixFrom(other, 32)}
	}
	outcome := func(items []any) map[string]string {
		e, col := newTestEngine(t, mod)
		for _, it := range items {
			switch v := it.(type) {
			case Knock:
				_ = e.AddKnock(v)
			case Handshake:
				_ = e.AddHandshake(v)
			case ExposureChange:
				_ = e.AddChange(v)
			}
		}
		out := make(map[string]string)
		for _, a := range col.all() {
			out[a.ID] = fmt.Sprintf("%s suppressed=%v", a.Confidence, a.Suppressed != "")
		}
		return out
	}
	rapid.Check(t, func(rt *rapid.T) {
		items := drawNoisyRun(rt)
		want := outcome(items)
		perm := rapid.Permutation(items).Draw(rt, "arrival order")
		if got := outcome(perm); !reflect.DeepEqual(got, want) {
			rt.Fatalf("permuted: got %v, want %v", got, want)
		}
	})
}
