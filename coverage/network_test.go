package coverage

import (
	"net/netip"
	"testing"
	"time"
)

// path is a generator of per-second counter snapshots.
type path struct {
	c map[string]uint64
}

func newPath() *path { return &path{c: map[string]uint64{}} }

// second adds one second of traffic: syn SYNs, ans answers (SYN-ACK) of
// which unm match no SYN, other non-handshake TCP packets.
func (p *path) second(syn, ans, unm, other uint64) map[string]uint64 {
	p.c["syn"] += syn
	p.c["synack"] += ans
	p.c["synack_unmatched"] += unm
	p.c["tcp"] += syn + ans + other
	out := map[string]uint64{}
	for k, v := range p.c {
		out[k] = v
	}
	return out
}

// TestSensorWidePaths: the sensor's verdict from its counters over the
// window, and what must not be mistaken for a missing direction.
func TestSensorWidePaths(t *testing.T) {
	for _, tc := range []struct {
		name                string
		syn, ans, unm, othr uint64
		want                string
	}{
		{"both directions", 10, 9, 0, 40, StateOK},
		{"client to server only", 10, 0, 0, 40, StateOneWay},
		{"server to client only", 0, 10, 10, 40, StateAnswersOnly},
		// A scan of empty addresses or a SYN flood: SYNs nobody answers
		// and nothing else. A two-way capture; an attacker who floods
		// must not switch the sensor to "one way".
		{"unanswered SYNs alone (scan, flood)", 500, 0, 0, 0, StateOK},
		{"quiet", 0, 0, 0, 3, StateIdle},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker(t, nil)
			p := newPath()
			for s := 0; s <= 30; s++ {
				tr.ObserveCounters(t0.Add(time.Duration(s)*time.Second), p.second(tc.syn, tc.ans, tc.unm, tc.othr), nil)
			}
			r := tr.Report(false)
			if got := r.Sensor.State; got != tc.want {
				t.Fatalf("state %s (%+v), want %s", r.Sensor.State, r.Sensor, tc.want)
			}
			one := hasFinding(r, FindOneWay, "") || hasFinding(r, FindAnswersOnly, "")
			if one != (tc.want == StateOneWay || tc.want == StateAnswersOnly) {
				t.Errorf("findings %+v", r.Findings)
			}
		})
	}
}

// TestInterfacePaths: per capture interface, from the program's own
// per-interface SYN counts when it has them, or from the seconds only one
// interface carried TCP; a tap's two halves are fine, a span port beside a
// one-way port is reported, within the window.
func TestInterfacePaths(t *testing.T) {
	t.Run("exact counters: tap halves and a one-way port", func(t *testing.T) {
		tr := newTracker(t, nil)
		in, out, one, g := newPath(), newPath(), newPath(), newPath()
		var at time.Time
		for s := 0; s <= 30; s++ {
			at = t0.Add(time.Duration(s) * time.Second)
			tr.ObserveCounters(at, g.second(15, 10, 0, 100), []Interface{
				{Name: "tap-in", Counters: in.second(10, 0, 0, 40)},
				{Name: "tap-out", Counters: out.second(0, 10, 0, 40)},
				{Name: "oneway0", Counters: one.second(5, 0, 0, 20)},
			})
		}
		states := ifaceStates(tr.Report(false))
		if states["tap-in"] != StateTapHalf || states["tap-out"] != StateTapHalf || states["oneway0"] != StateOneWay {
			t.Fatalf("states %v", states)
		}
	})
	t.Run("exact counters: a tap missing its other port", func(t *testing.T) {
		tr := newTracker(t, nil)
		in, g := newPath(), newPath()
		for s := 0; s <= 30; s++ {
			tr.ObserveCounters(t0.Add(time.Duration(s)*time.Second), g.second(10, 0, 0, 40), []Interface{
				{Name: "tap-in", Counters: in.second(10, 0, 0, 40)}, {Name: "tap-out", Counters: map[string]uint64{"syn": 0, "tcp": 0}},
			})
		}
		r := tr.Report(false)
		if s := ifaceStates(r); s["tap-in"] != StateOneWay || s["tap-out"] != StateIdle {
			t.Fatalf("states %v", s)
		}
		if !hasFinding(r, FindOneWay, "tap-in") {
			t.Fatalf("findings %+v", r.Findings)
		}
	})
	t.Run("no per-interface SYN counts: the seconds one interface carried TCP alone", func(t *testing.T) {
		tr := newTracker(t, nil)
		g := newPath()
		span, one := map[string]uint64{"tcp": 0}, map[string]uint64{"tcp": 0}
		snap := func(m map[string]uint64) map[string]uint64 {
			out := map[string]uint64{}
			for k, v := range m {
				out[k] = v
			}
			return out
		}
		for s := 0; s <= 30; s++ {
			var gs map[string]uint64
			switch s % 3 {
			case 0: // both busy: not attributable
				span["tcp"] += 30
				one["tcp"] += 10
				gs = g.second(5, 4, 0, 31)
			case 1: // the span port alone, both directions
				span["tcp"] += 30
				gs = g.second(5, 5, 0, 20)
			case 2: // the one-way port alone
				one["tcp"] += 12
				gs = g.second(3, 0, 0, 9)
			}
			tr.ObserveCounters(t0.Add(time.Duration(s)*time.Second), gs, []Interface{{Name: "span0", Counters: snap(span)}, {Name: "oneway0", Counters: snap(one)}})
		}
		r := tr.Report(false)
		states := ifaceStates(r)
		if states["span0"] != StateOK || states["oneway0"] != StateOneWay {
			t.Fatalf("states %v (%+v)", states, r.Interfaces)
		}
		if r.Sensor.State != StateOK {
			t.Errorf("sensor %s: the span port answers", r.Sensor.State)
		}
		for _, p := range r.Interfaces {
			if p.Name == "oneway0" && (p.By != "solo_seconds" || p.Since == nil || p.Since.Sub(t0) > time.Minute) {
				t.Errorf("oneway0 %+v", p)
			}
		}
	})
}

func ifaceStates(r Report) map[string]string {
	out := map[string]string{}
	for _, p := range r.Interfaces {
		out[p.Name] = p.State
	}
	return out
}

// TestHostBlindPath: a host whose SYNs are only ever unanswered is
// network-side blind and its knocks are to be held; one answer (the
// knocker's own handshake seen with its SYN-ACK) clears it at once, so an
// attacker who provokes the verdict gains nothing.
func TestHostBlindPath(t *testing.T) {
	tr := newTracker(t, nil)
	src := netip.MustParseAddr("192.0.2.50")
	var ts []time.Time
	for i := 0; i < 6; i++ {
		ts = append(ts, t0.Add(time.Duration(i)*time.Second))
	}
	tr.ObserveKnock(Knock{Src: src, Dst: ws02, Unanswered: ts[:3]})
	if b, _ := tr.Blind(ws02); b {
		t.Fatal("blind after three touches")
	}
	tr.ObserveKnock(Knock{Src: src, Dst: ws02, Unanswered: ts})
	tr.Tick(t0.Add(10*time.Second), nil)
	if b, why := tr.Blind(ws02); !b || why != "no_answers" {
		t.Fatalf("blind %v %q", b, why)
	}
	r := tr.Report(false)
	if !hasFinding(r, FindHostNoAnswers, "10.0.0.6") {
		t.Fatalf("findings %+v", r.Findings)
	}
	tr.ObserveHandshake(Handshake{Src: src, Dst: ws02, SrcPort: 40000, Port: 4444, SYN: t0.Add(20 * time.Second),
		SYNACK: t0.Add(20*time.Second + time.Millisecond), ACK: t0.Add(20*time.Second + 2*time.Millisecond)})
	if b, _ := tr.Blind(ws02); b {
		t.Fatal("still blind after an answered handshake")
	}
	// A handshake proven by the client's ACK alone shows no answer.
	tr2 := newTracker(t, nil)
	tr2.ObserveKnock(Knock{Src: src, Dst: ws02, Unanswered: ts})
	tr2.ObserveHandshake(Handshake{Src: src, Dst: ws02, SrcPort: 40000, Port: 4444, SYN: t0.Add(20 * time.Second),
		ACK: t0.Add(20*time.Second + 2*time.Millisecond)})
	tr2.Tick(t0.Add(30*time.Second), nil)
	if b, _ := tr2.Blind(ws02); !b {
		t.Fatal("an ACK-proven handshake cleared the verdict")
	}
}

// TestHostSide: an inventory host taking traffic with no events is
// host-side blind; one whose events stopped while traffic continued has a
// quiet channel; a host with events but no connection events has an
// unverified clock; lags of a batching subscription are reported.
func TestHostSide(t *testing.T) {
	inv := fakeInv{"ws01.corp.example": {ws01}, "ws02.corp.example": {ws02}, "ws03.corp.example": {netip.MustParseAddr("10.0.0.7")}}
	tr, err := New(DefaultConfig(), inv)
	if err != nil {
		t.Fatal(err)
	}
	tr.SetInventory([]InventoryHost{{Name: "ws01.corp.example", IPs: []netip.Addr{ws01}}, {Name: "ws02.corp.example", IPs: []netip.Addr{ws02}},
		{Name: "ws03.corp.example", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.7")}}})
	// ws01: firewall events until t0, traffic until t0+2h; 10-minute lags.
	for i := 0; i < 6; i++ {
		at := t0.Add(time.Duration(i-6) * time.Minute)
		tr.ObserveEvent(Event{Host: "WS01", Time: at, Arrival: at.Add(10 * time.Minute), Channel: "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall", EventID: 2004})
	}
	s := &fakeSampler{}
	for m := 0; m <= 120; m += 5 {
		now := t0.Add(time.Duration(m) * time.Minute)
		tr.Tick(now, s)
		for _, ip := range s.take() {
			tr.ObserveHandshake(Handshake{Src: peer(1), Dst: ip, SrcPort: uint16(40000 + m), Port: 445, SYN: now,
				SYNACK: now.Add(time.Millisecond), ACK: now.Add(2 * time.Millisecond), Sample: true})
		}
	}
	r := tr.Report(false)
	for _, want := range []struct{ kind, host string }{
		{FindChannelQuiet, "ws01.corp.example"}, {FindClockUnverified, "ws01.corp.example"}, {FindEventLag, "ws01.corp.example"},
		{FindHostNoEvents, "ws02.corp.example"}, {FindHostNoEvents, "ws03.corp.example"},
	} {
		if !hasFinding(r, want.kind, want.host) {
			t.Errorf("no %s for %s: %+v", want.kind, want.host, r.Findings)
		}
	}
	for _, h := range r.Hosts {
		if h.State != HostBlind {
			t.Errorf("%s: state %s", h.Host, h.State)
		}
		if h.Requests.Answered == 0 {
			t.Errorf("%s: no sample answered", h.Host)
		}
	}
	if r.Summary.States[HostBlind] != 3 {
		t.Errorf("summary %+v", r.Summary)
	}
}

// fakeSampler records the requests and answers each once.
type fakeSampler struct{ req []netip.Addr }

func (f *fakeSampler) RequestSample(h netip.Addr, _ time.Time) error {
	f.req = append(f.req, h)
	return nil
}

func (f *fakeSampler) take() []netip.Addr {
	r := f.req
	f.req = nil
	return r
}

// TestRequestsBounded: at most max_requests out at once, waiting hosts
// first; a full table stops the round; the host table is bounded.
func TestRequestsBounded(t *testing.T) {
	tr := newTracker(t, func(c *Config) { c.MaxRequests, c.MaxHosts = 10, 50 })
	for i := 0; i < 200; i++ {
		tr.ObserveKnock(Knock{Dst: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), Unanswered: []time.Time{t0}})
	}
	s := &fakeSampler{}
	tr.Tick(t0, s)
	if n := len(s.take()); n != 10 {
		t.Fatalf("%d requests, want 10", n)
	}
	tr.Tick(t0.Add(time.Second), s)
	if n := len(s.take()); n != 0 {
		t.Fatalf("%d requests while 10 are out", n)
	}
	st := tr.Stats()
	if st.Hosts != 50 || st.Evicted["hosts"] != 150 {
		t.Fatalf("hosts %d evicted %v", st.Hosts, st.Evicted)
	}
	tr.Tick(t0.Add(3*time.Minute), s) // the first ten expired
	if n := len(s.take()); n != 10 || tr.Stats().Requests["expired"] != 10 {
		t.Fatalf("%d requests after expiry, %v", n, tr.Stats().Requests)
	}
}

// TestHostTableFlood: spoofed knocks to 10,000 random addresses fill the
// host table; they evict each other, not the host whose events and clock
// coverage has learned (nor the inventory's).
func TestHostTableFlood(t *testing.T) {
	tr := newTracker(t, func(c *Config) { c.MaxHosts = 100 })
	var clk *Clock
	for i := 0; i < 4; i++ {
		c := conn{peer: peer(i % 2), sport: uint16(50000 + i), at: t0.Add(time.Duration(i) * time.Second)}
		clk = lastClock(tr.ObserveHandshake(c.handshake(true)), ws01, clk)
		clk = lastClock(tr.ObserveEvent(c.event(-90*time.Second, uint64(i+1))), ws01, clk)
	}
	if clk == nil {
		t.Fatal("not measured")
	}
	for i := 0; i < 10000; i++ {
		tr.ObserveKnock(Knock{Src: peer(1), Dst: netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}), Unanswered: []time.Time{t0}})
	}
	st := tr.Stats()
	if st.Hosts > 100 || st.Evicted["hosts"] < 9900 {
		t.Fatalf("hosts %d evicted %d", st.Hosts, st.Evicted["hosts"])
	}
	if st.ClockMeasured != 1 || len(tr.HostIPs("WS01.corp.example")) == 0 {
		t.Fatalf("the measured host was evicted: %+v", st)
	}
}

// TestDestinationOnlyHost: a host known only from the program's table of
// SYN destinations (no inventory entry, no event, no record) is listed
// and, once it took traffic for NoEventsAfter without an event, is
// host-side blind; a destination that sends events is not. Re-reading the
// same entry (the table keeps it until it ages) changes nothing.
func TestDestinationOnlyHost(t *testing.T) {
	tr := newTracker(t, nil)
	silent, talking := netip.MustParseAddr("10.9.0.20"), netip.MustParseAddr("10.9.0.21")
	tr.ObserveEvent(Event{Host: "srv21.corp.example", HostIPs: []netip.Addr{talking}, Time: t0, Arrival: t0,
		Channel: "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall", EventID: 2004})
	for m := 0; m <= 15; m++ {
		now := t0.Add(time.Duration(m) * time.Minute)
		for range 2 { // read twice per minute, same entries
			tr.ObserveDestination(silent, now)
			tr.ObserveDestination(talking, now)
		}
		tr.Tick(now, nil)
	}
	r := tr.Report(false)
	if !hasFinding(r, FindHostNoEvents, silent.String()) {
		t.Errorf("no %s for the silent destination: %+v", FindHostNoEvents, r.Findings)
	}
	for _, f := range r.Findings {
		if f.Kind == FindHostNoEvents && f.Host == silent.String() && f.Severity != SevWarning {
			t.Errorf("a host known from SYN destinations alone: severity %s, want %s (it may not be a Windows host)", f.Severity, SevWarning)
		}
	}
	// A knock on it makes it a host the sensor reported: critical.
	tr.ObserveKnock(Knock{Src: netip.MustParseAddr("192.0.2.66"), Dst: silent, Answered: []time.Time{t0.Add(15 * time.Minute)}})
	for _, f := range tr.Report(false).Findings {
		if f.Kind == FindHostNoEvents && f.Host == silent.String() && f.Severity != SevCritical {
			t.Errorf("a knocked host without events: severity %s, want %s", f.Severity, SevCritical)
		}
	}
	states := map[string]string{}
	for _, h := range r.Hosts {
		states[h.Host] = h.State
	}
	if states[silent.String()] != HostBlind {
		t.Errorf("silent destination: state %q, want %s (%v)", states[silent.String()], HostBlind, states)
	}
	if s := states["srv21.corp.example"]; s == HostBlind || s == "" {
		t.Errorf("destination with events: state %q (%v)", s, states)
	}
	if got := tr.Stats().Destinations; got != 64 {
		t.Errorf("destinations read %d, want 64 (2 hosts, 2 readings, 16 minutes)", got)
	}
}
