package correlate

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	ms  = time.Millisecond
	sec = time.Second
)

// The reference scenario: a 3-port knock ending at kEnd, a rule opening 22
// 10 s later, the attacker's handshake to 22 20 s after that.
var (
	kEnd  = t0.Add(2 * sec)
	chAt  = kEnd.Add(10 * sec)
	ackAt = chAt.Add(20 * sec)
)

func knock3() Knock { return knockAt(attacker, victim, t0, 1111, 2222, 3333) }

func portsOf(t *testing.T, s string) PortSet {
	t.Helper()
	p, err := ParsePortSet(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRuleClauses(t *testing.T) {
	p22 := Ports(22)
	withChange := func(mod func(*ExposureChange)) []any {
		c := ruleAdded(chAt, p22, 1)
		mod(&c)
		return []any{knock3(), c, handshakeAt(attacker, victim, 22, ackAt)}
	}
	hsLast := func(c ExposureChange, h Handshake) []any { return []any{knock3(), c, h} }
	closedBefore := func(h Handshake) Handshake { h.PortLastClosed = t0.Add(-time.Minute); return h }

	cases := []struct {
		name  string
		cfg   func(*Config)
		items []any
		want  []string
	}{
		{"all three, change names the port", nil, withChange(func(*ExposureChange) {}), []string{"created high"}},
		{"change arrives last (late Windows event)", nil,
			[]any{knock3(), handshakeAt(attacker, victim, 22, ackAt), ruleAdded(chAt, p22, 1)}, []string{"created high"}},
		{"knock arrives last", nil,
			[]any{ruleAdded(chAt, p22, 1), handshakeAt(attacker, victim, 22, ackAt), knock3()}, []string{"created high"}},

		// Clause 1: the knock.
		{"2 distinct ports is not a knock", nil,
			[]any{knockAt(attacker, victim, t0, 1111, 2222), ruleAdded(chAt, p22, 1), handshakeAt(attacker, victim, 22, ackAt)}, nil},
		{"3 touches on 2 distinct ports is not a knock", nil,
			[]any{knockAt(attacker, victim, t0, 1111, 2222, 1111), ruleAdded(chAt, p22, 1), handshakeAt(attacker, victim, 22, ackAt)}, nil},
		{"16 distinct ports is a knock", nil,
			[]any{knockAt(attacker, victim, t0.Add(-13*sec), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16),
				ruleAdded(chAt, p22, 1), handshakeAt(attacker, victim, 22, ackAt)}, []string{"created high"}},
		{"17 distinct ports is a scan", nil,
			[]any{knockAt(attacker, victim, t0.Add(-14*sec), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17),
				ruleAdded(chAt, p22, 1), handshakeAt(attacker, victim, 22, ackAt)}, nil},
		{"sensor count above 16 in the handshake is a scan", nil,
			[]any{knock3(), ruleAdded(chAt, p22, 1), func() Handshake {
				h := handshakeAt(attacker, victim, 22, ackAt)
				h.DistinctClosed = 200
				return h
			}()}, nil},
		{"sensor count 16 in the knock is still a knock", nil,
			[]any{func() Knock { k := knock3(); k.DistinctClosed = 16; return k }(), ruleAdded(chAt, p22, 1),
				handshakeAt(attacker, victim, 22, ackAt)}, []string{"created high"}},
		{"3 ports within exactly 30 s", nil,
			[]any{knockTimes(attacker, victim, -28*sec, -13*sec, 2*sec), ruleAdded(chAt, p22, 1), handshakeAt(attacker, victim, 22, ackAt)},
			[]string{"created high"}},
		{"3 ports over 30 s + 1 ms", nil,
			[]any{knockTimes(attacker, victim, -28*sec-ms, -13*sec, 2*sec), ruleAdded(chAt, p22, 1), handshakeAt(attacker, victim, 22, ackAt)},
			nil},
		{"allowed source is suppressed", func(c *Config) {
			c.Suppression.AllowedSources = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
		}, withChange(func(*ExposureChange) {}), nil},
		{"allowed source emitted as suppressed when asked", func(c *Config) {
			c.Suppression.AllowedSources = []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32")}
			c.EmitSuppressed = true
		}, withChange(func(*ExposureChange) {}), []string{"created high suppressed:allowed_source"}},

		// Clause 2: the change, its timing and what it opens.
		{"change exactly 60 s after the last touch", nil,
			hsLast(ruleAdded(kEnd.Add(60*sec), p22, 1), handshakeAt(attacker, victim, 22, kEnd.Add(70*sec))), []string{"created high"}},
		{"change 60 s + 1 ms after the last touch", nil,
			hsLast(ruleAdded(kEnd.Add(60*sec+ms), p22, 1), handshakeAt(attacker, victim, 22, kEnd.Add(70*sec))), nil},
		{"change exactly 5 s before the last touch (skew)", nil,
			hsLast(ruleAdded(kEnd.Add(-5*sec), p22, 1), handshakeAt(attacker, victim, 22, kEnd.Add(10*sec))), []string{"created high"}},
		{"change 5 s + 1 ms before the last touch", nil,
			hsLast(ruleAdded(kEnd.Add(-5*sec-ms), p22, 1), handshakeAt(attacker, victim, 22, kEnd.Add(10*sec))), nil},
		{"skew setting widens the tolerance", func(c *Config) { c.Skew = 10 * sec },
			hsLast(ruleAdded(kEnd.Add(-5*sec-ms), p22, 1), handshakeAt(attacker, victim, 22, kEnd.Add(10*sec))), []string{"created high"}},
		{"change window setting narrows", func(c *Config) { c.ChangeAfter = 5 * sec }, withChange(func(*ExposureChange) {}), nil},
		{"port in a list", nil, withChange(func(c *ExposureChange) { c.Ports = portsOf(t, "80,22,443") }), []string{"created high"}},
		{"port in a range", nil, withChange(func(c *ExposureChange) { c.Ports = portsOf(t, "20-25") }), []string{"created high"}},
		{"any port", nil, withChange(func(c *ExposureChange) { c.Ports = AnyPort }), []string{"created high"}},
		{"other port", nil, withChange(func(c *ExposureChange) { c.Ports = portsOf(t, "23-80") }), nil},
		{"rule without port (4946) is medium", nil, withChange(func(c *ExposureChange) {
			c.Ports, c.EventID, c.Direction, c.Action, c.Active, c.Protocol = PortSet{}, 4946, 0, 0, 0, 0
		}), []string{"created medium"}},
		{"protocol any", nil, withChange(func(c *ExposureChange) { c.Protocol = ProtocolAny }), []string{"created high"}},
		{"UDP rule", nil, withChange(func(c *ExposureChange) { c.Protocol = ProtocolUDP }), nil},
		{"outbound rule", nil, withChange(func(c *ExposureChange) { c.Direction = DirectionOutbound }), nil},
		{"block rule", nil, withChange(func(c *ExposureChange) { c.Action = ActionBlock }), nil},
		{"rule added inactive", nil, withChange(func(c *ExposureChange) { c.Active = TriFalse }), nil},
		{"rule deleted", nil, withChange(func(c *ExposureChange) { c.Kind = ChangeRuleDeleted }), nil},
		{"rule modified to active", nil, withChange(func(c *ExposureChange) { c.Kind = ChangeRuleModified }), []string{"created high"}},
		{"rule modified to inactive", nil, withChange(func(c *ExposureChange) { c.Kind, c.Active = ChangeRuleModified, TriFalse }), nil},
		{"added inactive then enabled", nil, func() []any {
			add := ruleAdded(chAt, p22, 1)
			add.Active = TriFalse
			en := ruleAdded(chAt.Add(100*ms), p22, 2)
			en.Kind, en.EventID = ChangeRuleEnabled, 2005
			return []any{knock3(), add, handshakeAt(attacker, victim, 22, ackAt), en}
		}(), []string{"created high"}},
		{"listener on the port", nil, withChange(func(c *ExposureChange) {
			c.Kind, c.Direction, c.Action, c.Active, c.EventID = ChangeListener, 0, 0, 0, 5154
		}), []string{"created high"}},
		{"firewall switched off", nil, withChange(func(c *ExposureChange) {
			c.Kind, c.Ports, c.EventID = ChangeFirewallDisabled, PortSet{}, 4950
		}), []string{"created high"}},
		{"service started does not count by default", nil, withChange(func(c *ExposureChange) {
			c.Kind, c.Ports, c.EventID = ChangeServiceStarted, PortSet{}, 7045
		}), nil},
		{"service started counts when configured", func(c *Config) { c.ServiceStartOpens = true }, withChange(func(c *ExposureChange) {
			c.Kind, c.Ports, c.EventID = ChangeServiceStarted, PortSet{}, 7045
		}), []string{"created medium"}},
		{"change on another host", nil, withChange(func(c *ExposureChange) { c.Host, c.HostIPs = "WS02", []netip.Addr{bystand} }), nil},
		{"admin user (SID, any case)", func(c *Config) { c.Suppression.AdminUsers = []string{"s-1-5-21-1-2-3-500"} },
			withChange(func(*ExposureChange) {}), nil},
		{"admin application by base name", func(c *Config) {
			c.Suppression.AdminApplications = []string{"NETSH.EXE"}
			c.EmitSuppressed = true
		}, withChange(func(*ExposureChange) {}), []string{"created high suppressed:admin_actor"}},
		{"other admin application", func(c *Config) { c.Suppression.AdminApplications = []string{"ccmexec.exe"} },
			withChange(func(*ExposureChange) {}), []string{"created high"}},
		{"approved change window by short host name", func(c *Config) {
			c.Suppression.ChangeWindows = []ChangeWindow{{Hosts: []string{"ws01.corp.example"}, Start: t0, End: t0.Add(time.Hour)}}
			c.EmitSuppressed = true
		}, withChange(func(*ExposureChange) {}), []string{"created high suppressed:change_window"}},
		{"approved change window by host group prefix", func(c *Config) {
			c.Suppression.HostGroups = map[string][]string{"servers": {"10.0.0.0/24"}}
			c.Suppression.ChangeWindows = []ChangeWindow{{Groups: []string{"servers"}, Start: t0, End: t0.Add(time.Hour)}}
		}, withChange(func(*ExposureChange) {}), nil},
		{"change window at another time", func(c *Config) {
			c.Suppression.ChangeWindows = []ChangeWindow{{Hosts: []string{"*"}, Start: t0.Add(time.Hour), End: t0.Add(2 * time.Hour)}}
		}, withChange(func(*ExposureChange) {}), []string{"created high"}},
		{"admin change and an unsuppressed change: the unsuppressed wins", func(c *Config) {
			c.Suppression.AdminUsers = []string{"CORP\\deploy"}
		}, func() []any {
			a := ruleAdded(chAt, p22, 1)
			a.ModifyingUser = "corp\\DEPLOY"
			return []any{knock3(), a, ruleAdded(chAt.Add(sec), p22, 2), handshakeAt(attacker, victim, 22, ackAt)}
		}(), []string{"created high"}},

		// Clause 3: the handshake.
		{"handshake exactly 300 s after the change", nil,
			hsLast(ruleAdded(chAt, p22, 1), handshakeAt(attacker, victim, 22, chAt.Add(300*sec))), []string{"created high"}},
		{"handshake 300 s + 1 ms after the change", nil,
			hsLast(ruleAdded(chAt, p22, 1), handshakeAt(attacker, victim, 22, chAt.Add(300*sec+ms))), nil},
		{"handshake 5 s before the change (skew)", nil,
			hsLast(ruleAdded(chAt, p22, 1), handshakeAt(attacker, victim, 22, chAt.Add(-5*sec))), []string{"created high"}},
		{"handshake 5 s + 1 ms before the change", nil,
			hsLast(ruleAdded(chAt, p22, 1), handshakeAt(attacker, victim, 22, chAt.Add(-5*sec-ms))), nil},
		{"handshake starting before the knock ended", nil,
			[]any{knock3(), ruleAdded(kEnd.Add(-2*sec), p22, 1), handshakeAt(attacker, victim, 22, kEnd.Add(ms))}, nil},
		{"handshake to another port", nil,
			hsLast(ruleAdded(chAt, p22, 1), handshakeAt(attacker, victim, 23, ackAt)), nil},
		{"handshake by another source", nil,
			hsLast(ruleAdded(chAt, p22, 1), handshakeAt(other, victim, 22, ackAt)), nil},
		{"someone else connected after the change", nil,
			hsLast(ruleAdded(chAt, p22, 1), func() Handshake {
				h := closedBefore(handshakeAt(attacker, victim, 22, ackAt))
				h.PortFirstOpen, h.PortLastOpen = chAt.Add(4*sec), chAt.Add(4*sec)
				h.PortOtherDone = chAt.Add(5 * sec)
				return h
			}()), nil},
		// The knocker's own half-open probe (nmap -sS) answered before its
		// connection: seen open after the knock, but nobody else
		// completed a handshake. Still the first handshake.
		{"own half-open probe before the connection", nil,
			hsLast(ruleAdded(chAt, p22, 1), func() Handshake {
				h := closedBefore(handshakeAt(attacker, victim, 22, ackAt))
				h.PortFirstOpen, h.PortLastOpen = chAt.Add(4*sec), chAt.Add(4*sec)
				return h
			}()), []string{"created high"}},
		// A spoofed source's SYN answered by a SYN-ACK before the
		// attacker's connection: no completed handshake, not "other first".
		{"SYN-ACK to a spoofed source before the connection", nil,
			hsLast(ruleAdded(chAt, p22, 1), func() Handshake {
				h := handshakeAt(attacker, victim, 22, ackAt)
				h.PortFirstOpen, h.PortLastOpen = chAt.Add(2*sec), chAt.Add(3*sec)
				return h
			}()), []string{"created high"}},
		// The knock's previous use opened the port an hour ago; it
		// closed unseen (nobody touched it while closed). An old sighting
		// is no evidence the port was open when this knock came.
		{"port seen open an hour before the knock (previous use)", nil,
			hsLast(ruleAdded(chAt, p22, 1), func() Handshake {
				h := handshakeAt(attacker, victim, 22, ackAt)
				h.PortFirstOpen, h.PortLastOpen = t0.Add(-time.Hour), t0.Add(-time.Hour)
				return h
			}()), []string{"created high"}},
		{"someone else used the port before the knock ended", nil,
			hsLast(ruleAdded(chAt, p22, 1), func() Handshake {
				h := handshakeAt(attacker, victim, 22, ackAt)
				h.PortFirstOpen, h.PortLastOpen, h.PortOtherDone = t0.Add(-time.Minute), t0.Add(-time.Minute), t0.Add(-time.Minute)
				return h
			}()), nil},
		{"port open all along", nil,
			hsLast(ruleAdded(chAt, p22, 1), func() Handshake {
				h := handshakeAt(attacker, victim, 22, ackAt)
				h.PortLastClosed, h.PortLastOpen = t0.Add(-time.Hour), t0.Add(-time.Minute)
				return h
			}()), nil},
		{"port open before the knock, closed since", nil,
			hsLast(ruleAdded(chAt, p22, 1), func() Handshake {
				h := handshakeAt(attacker, victim, 22, ackAt)
				h.PortLastClosed, h.PortLastOpen = t0.Add(-time.Minute), t0.Add(-time.Hour)
				return h
			}()), []string{"created high"}},

		// Medium from the network alone, and the upgrade.
		{"network shows closed to open, no host event", nil,
			[]any{knock3(), closedBefore(handshakeAt(attacker, victim, 22, ackAt))}, []string{"created medium"}},
		{"network medium upgraded by the late host event", nil,
			[]any{knock3(), closedBefore(handshakeAt(attacker, victim, 22, ackAt)), ruleAdded(chAt, p22, 1)},
			[]string{"created medium", "upgraded high"}},
		{"port-less medium upgraded by the port-bearing event", nil, func() []any {
			c := ruleAdded(chAt, PortSet{}, 1)
			c.EventID = 4946
			return []any{knock3(), c, handshakeAt(attacker, victim, 22, ackAt), ruleAdded(chAt.Add(ms), p22, 2)}
		}(), []string{"created medium", "upgraded high"}},
		{"network medium: closed exactly the retention before the SYN", nil,
			[]any{knock3(), func() Handshake {
				h := handshakeAt(attacker, victim, 22, ackAt)
				h.PortLastClosed = h.SYN.Add(-20 * time.Minute)
				return h
			}()}, []string{"created medium"}},
		{"network medium: closed longer ago than the retention", nil,
			[]any{knock3(), func() Handshake {
				h := handshakeAt(attacker, victim, 22, ackAt)
				h.PortLastClosed = h.SYN.Add(-20*time.Minute - ms)
				return h
			}()}, nil},
		{"network medium: port state unknown", nil, []any{knock3(), handshakeAt(attacker, victim, 22, ackAt)}, nil},
		{"network medium: handshake 360 s after the knock", nil,
			[]any{knock3(), closedBefore(handshakeAt(attacker, victim, 22, kEnd.Add(360*sec)))}, []string{"created medium"}},
		{"network medium: handshake 360 s + 1 ms after the knock", nil,
			[]any{knock3(), closedBefore(handshakeAt(attacker, victim, 22, kEnd.Add(360*sec+ms)))}, nil},
		{"network medium explained later by an admin change", func(c *Config) {
			c.Suppression.AdminUsers = []string{"S-1-5-21-1-2-3-500"}
		}, []any{knock3(), closedBefore(handshakeAt(attacker, victim, 22, ackAt)), ruleAdded(chAt, p22, 1)},
			[]string{"created medium", "upgraded high suppressed:admin_actor"}},
		{"admin change then network evidence: nothing emitted", func(c *Config) {
			c.Suppression.AdminUsers = []string{"S-1-5-21-1-2-3-500"}
		}, []any{knock3(), ruleAdded(chAt, p22, 1), closedBefore(handshakeAt(attacker, victim, 22, ackAt))}, nil},
		{"network medium in a change window", func(c *Config) {
			c.Suppression.ChangeWindows = []ChangeWindow{{Hosts: []string{"10.0.0.5"}, Start: t0, End: t0.Add(time.Hour)}}
		}, []any{knock3(), closedBefore(handshakeAt(attacker, victim, 22, ackAt))}, nil},

		// Duplicates.
		{"duplicated evidence changes nothing", nil,
			[]any{knock3(), knock3(), ruleAdded(chAt, p22, 1), handshakeAt(attacker, victim, 22, ackAt),
				ruleAdded(chAt, p22, 1), handshakeAt(attacker, victim, 22, ackAt), knock3()}, []string{"created high"}},
		{"duplicated medium evidence changes nothing", nil,
			[]any{knock3(), closedBefore(handshakeAt(attacker, victim, 22, ackAt)), closedBefore(handshakeAt(attacker, victim, 22, ackAt)),
				ruleAdded(chAt, p22, 1), ruleAdded(chAt, p22, 1)}, []string{"created medium", "upgraded high"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, col := newTestEngine(t, tc.cfg)
			feed(t, e, tc.items...)
			if got := summary(col.all()); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("records = %q, want %q", got, tc.want)
			}
			for _, a := range col.all() {
				if a.ID != AlertID(attacker, victim, 22, a.Handshake.ACK) {
					t.Errorf("alert id %s is not derived from (S, D, P, ACK)", a.ID)
				}
			}
		})
	}
}

func TestRetentionBoundary(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after time.Duration
		want  []string
	}{
		{"change arrives with the handshake exactly at the retention edge", 0, []string{"created high"}},
		{"change arrives 1 ns after the handshake expired", 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, col := newTestEngine(t, nil)
			cfg := DefaultConfig()
			// The watermark trails sensor time by the lateness bound.
			edge := ackAt.Add(cfg.Retention + cfg.SensorLateness + tc.after)
			feed(t, e, knock3(), handshakeAt(attacker, victim, 22, ackAt), edge, ruleAdded(chAt, Ports(22), 1))
			if got := summary(col.all()); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("records = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCountersByReason(t *testing.T) {
	e, _ := newTestEngine(t, func(c *Config) {
		c.Suppression.AllowedSources = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	})
	out := ruleAdded(chAt, Ports(22), 7)
	out.Direction = DirectionOutbound
	feed(t, e, out, ruleAdded(chAt, Ports(22), 1), ruleAdded(chAt, Ports(22), 1),
		knock3(), handshakeAt(attacker, victim, 22, ackAt),
		knockAt(other, victim, t0, 1, 2, 3), handshakeAt(other, victim, 22, ackAt),
		knockAt(other, bystand, t0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17))
	if err := e.AddKnock(Knock{Src: attacker}); err == nil {
		t.Fatal("invalid knock accepted")
	}
	s := e.Stats()
	checks := []struct {
		name      string
		got, want uint64
	}{
		{"alerts high", s.AlertsHigh, 1},
		{"suppressed allowed source", s.Suppressed[ReasonAllowedSource], 1},
		{"ignored outbound", s.ChangesIgnored[IgnoredOutbound], 1},
		{"duplicate change", s.Duplicates[evChange], 1},
		{"scans", s.Scans, 1},
		{"rejected knocks", s.Rejected[evKnock], 1},
		{"knocks in", s.In[evKnock], 3},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if s.Pairs != 3 || s.Hosts != 2 || s.Changes != 1 || s.Handshakes != 2 {
		t.Errorf("sizes: %+v", s)
	}
}

func TestNoAlertReasonsCounted(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	h := handshakeAt(attacker, victim, 22, ackAt)
	h.PortLastClosed, h.PortLastOpen = t0.Add(-time.Hour), t0.Add(-time.Minute)
	h2 := handshakeAt(other, victim, 22, ackAt)
	h2.PortLastClosed, h2.PortLastOpen, h2.PortOtherDone = t0.Add(-time.Hour), chAt.Add(sec), chAt.Add(sec)
	feed(t, e, knock3(), knockAt(other, victim, t0, 1, 2, 3), ruleAdded(chAt, Ports(22), 1), h, h, h2)
	s := e.Stats()
	if s.NoAlert[NoAlertOpenAllAlong] != 1 || s.NoAlert[NoAlertOtherFirst] != 1 {
		t.Fatalf("no-alert reasons = %v", s.NoAlert)
	}
}

func TestInvalidEvidence(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	bad := []struct {
		name string
		add  func() error
	}{
		{"knock without touches", func() error { return e.AddKnock(Knock{Src: attacker, Dst: victim}) }},
		{"knock with port 0", func() error {
			return e.AddKnock(Knock{Src: attacker, Dst: victim, Touches: []Touch{{Port: 0, Time: t0}}})
		}},
		{"knock with an unknown touch kind", func() error {
			return e.AddKnock(Knock{Src: attacker, Dst: victim, Touches: []Touch{{Port: 1, Time: t0, Kind: 9}}})
		}},
		{"knock without time", func() error {
			return e.AddKnock(Knock{Src: attacker, Dst: victim, Touches: []Touch{{Port: 1}}})
		}},
		{"handshake without destination", func() error {
			return e.AddHandshake(Handshake{Src: attacker, Port: 22, SYN: t0, SYNACK: t0, ACK: t0})
		}},
		{"handshake out of order", func() error {
			return e.AddHandshake(Handshake{Src: attacker, Dst: victim, Port: 22, SYN: t0, SYNACK: t0, ACK: t0.Add(-1)})
		}},
		{"change without host", func() error { return e.AddChange(ExposureChange{Time: t0, Kind: ChangeListener}) }},
		{"change without time", func() error { return e.AddChange(ExposureChange{Host: "WS01", Kind: ChangeListener}) }},
	}
	for _, b := range bad {
		if err := b.add(); err == nil {
			t.Errorf("%s: accepted", b.name)
		} else if !strings.Contains(err.Error(), "add ") {
			t.Errorf("%s: error %q does not say what failed", b.name, err)
		}
	}
	s := e.Stats()
	if s.Rejected[evKnock] != 4 || s.Rejected[evHandshake] != 2 || s.Rejected[evChange] != 2 || s.Pairs != 0 {
		t.Fatalf("stats after bad input: %+v", s)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, mod := range []func(*Config){
		func(c *Config) { c.MinPorts = 0 },
		func(c *Config) { c.MaxPorts = 2 },
		func(c *Config) { c.MaxPorts = 64 },
		func(c *Config) { c.KnockWindow = 0 },
		func(c *Config) { c.Skew = -1 },
		func(c *Config) { c.Retention = time.Minute },
		func(c *Config) { c.MaxPairs = 0 },
		func(c *Config) { c.Suppression.AllowedSources = []netip.Prefix{{}} },
		func(c *Config) {
			c.Suppression.ChangeWindows = []ChangeWindow{{Groups: []string{"nope"}, Start: t0, End: t0.Add(1)}}
		},
		func(c *Config) {
			c.Suppression.ChangeWindows = []ChangeWindow{{Hosts: []string{"*"}, Start: t0, End: t0}}
		},
	} {
		cfg := DefaultConfig()
		mod(&cfg)
		if _, err := New(cfg, nil); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
	if _, err := New(Config{}, nil); err == nil {
		t.Error("zero config accepted")
	}
	if _, err := New(DefaultConfig(), nil); err != nil {
		t.Errorf("default config rejected: %v", err)
	}
}

func TestWildcardHostIPsIgnored(t *testing.T) {
	e, col := newTestEngine(t, nil)
	c := ruleAdded(chAt, Ports(22), 1)
	c.Kind, c.HostIPs = ChangeListener, []netip.Addr{netip.MustParseAddr("::"), netip.MustParseAddr("127.0.0.1"), victim}
	feed(t, e, knock3(), c, handshakeAt(attacker, victim, 22, ackAt))
	if got := summary(col.all()); len(got) != 1 || got[0] != "created high" {
		t.Fatalf("records = %q", got)
	}
	if s := e.Stats(); s.Hosts != 1 {
		t.Fatalf("hosts = %d: a wildcard address became a host", s.Hosts)
	}
}

func TestSetSuppression(t *testing.T) {
	e, col := newTestEngine(t, nil)
	if err := e.SetSuppression(Suppression{AllowedSources: []netip.Prefix{{}}}); err == nil {
		t.Fatal("invalid suppression accepted")
	}
	if err := e.SetSuppression(Suppression{AllowedSources: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}); err != nil {
		t.Fatal(err)
	}
	feed(t, e, knock3(), ruleAdded(chAt, Ports(22), 1), handshakeAt(attacker, victim, 22, ackAt))
	if len(col.all()) != 0 || e.Stats().Suppressed[ReasonAllowedSource] != 1 {
		t.Fatalf("reloaded suppression not applied: %v", summary(col.all()))
	}
}
