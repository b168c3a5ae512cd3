package correlate

import (
	"net/netip"
	"sync"
	"time"
)

var (
	t0       = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	attacker = netip.MustParseAddr("198.51.100.7")
	other    = netip.MustParseAddr("203.0.113.9")
	victim   = netip.MustParseAddr("10.0.0.5")
	bystand  = netip.MustParseAddr("10.0.0.6")
)

// collector is an Emitter that keeps what it gets.
type collector struct {
	mu     sync.Mutex
	alerts []Alert
}

func (c *collector) Emit(a Alert) {
	c.mu.Lock()
	c.alerts = append(c.alerts, a)
	c.mu.Unlock()
}

func (c *collector) all() []Alert {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Alert(nil), c.alerts...)
}

// final returns the last record per alert id, as "id conf outcome".
func (c *collector) final() map[string]string {
	out := make(map[string]string)
	for _, a := range c.all() {
		out[a.ID] = a.Confidence.String() + "/" + a.Suppressed
	}
	return out
}

// tb is what the helpers need of *testing.T, *testing.B and *rapid.T.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

func newTestEngine(t tb, mod func(*Config), opts ...Option) (*Engine, *collector) {
	t.Helper()
	cfg := DefaultConfig()
	if mod != nil {
		mod(&cfg)
	}
	col := &collector{}
	e, err := New(cfg, col, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e, col
}

// knockAt returns a knock of src on dst touching ports one second apart,
// starting at start, all REJ.
func knockAt(src, dst netip.Addr, start time.Time, ports ...uint16) Knock {
	k := Knock{Src: src, Dst: dst}
	for i, p := range ports {
		k.Touches = append(k.Touches, Touch{Port: p, Time: start.Add(time.Duration(i) * time.Second), Kind: TouchREJ})
	}
	return k
}

// knockTimes returns a knock with one touch per given offset from t0,
// using distinct ports from 1001.
func knockTimes(src, dst netip.Addr, offsets ...time.Duration) Knock {
	k := Knock{Src: src, Dst: dst}
	for i, off := range offsets {
		k.Touches = append(k.Touches, Touch{Port: uint16(1001 + i), Time: t0.Add(off), Kind: TouchS0})
	}
	return k
}

// handshakeAt returns a handshake completing (ACK) at ack.
func handshakeAt(src, dst netip.Addr, port uint16, ack time.Time) Handshake {
	return Handshake{
		Src: src, Dst: dst, SrcPort: 50123, Port: port,
		SYN: ack.Add(-2 * time.Millisecond), SYNACK: ack.Add(-time.Millisecond), ACK: ack,
	}
}

// ruleAdded returns an inbound TCP allow rule added active on victim
// ("WS01", 10.0.0.5) opening ports.
func ruleAdded(at time.Time, ports PortSet, record uint64) ExposureChange {
	return ExposureChange{
		Time: at, Host: "WS01", HostIPs: []netip.Addr{victim}, Kind: ChangeRuleAdded,
		Ports: ports, Protocol: ProtocolTCP, Direction: DirectionInbound, Action: ActionAllow, Active: TriTrue,
		RuleID: "{6A1C}", RuleName: "updater", Application: `C:\Windows\Temp\svc.exe`,
		ModifyingUser: "S-1-5-21-1-2-3-500", ModifyingApplication: `C:\Windows\System32\netsh.exe`,
		EventID: 2004, Channel: "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall", RecordID: record,
	}
}

// feed delivers evidence items (Knock, Handshake, ExposureChange or
// time.Time for Advance) in order.
func feed(t tb, e *Engine, items ...any) {
	t.Helper()
	for _, it := range items {
		var err error
		switch v := it.(type) {
		case Knock:
			err = e.AddKnock(v)
		case Handshake:
			err = e.AddHandshake(v)
		case ExposureChange:
			err = e.AddChange(v)
		case time.Time:
			e.Advance(v)
		default:
			t.Fatalf("feed: unknown item %T", it)
		}
		if err != nil {
			t.Fatalf("feed %T: %v", it, err)
		}
	}
}

// summary lists the records as "action confidence[ suppressed:reason]" in
// emission order.
func summary(alerts []Alert) []string {
	var out []string
	for _, a := range alerts {
		s := a.Action + " " + a.Confidence.String()
		if a.Suppressed != "" {
			s += " suppressed:" + a.Suppressed
		}
		out = append(out, s)
	}
	return out
}
