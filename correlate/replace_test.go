package correlate

import (
	"fmt"
	"reflect"
	"testing"
	"time"
)

// sec4946 is the port-less Security 4946 of the rule ruleAdded describes.
func sec4946(record uint64) ExposureChange {
	c := ruleAdded(chAt, PortSet{}, record)
	c.EventID, c.Channel = 4946, "Security"
	c.Protocol, c.Direction, c.Action, c.Active = 0, DirectionUnknown, ActionUnknown, TriUnknown
	c.Application, c.ModifyingUser, c.ModifyingApplication = "", "", ""
	return c
}

// TestReplacedChange: winevents emits a Security 4946 that arrives before
// its Firewall 2004 on its own, then the 2004 naming it in Replaces. The
// engine keeps one change, the 2004, in both arrival orders (the decoder
// never emits a 4946 that comes second), and an alert built on the 4946
// is upgraded by the 2004.
func TestReplacedChange(t *testing.T) {
	fw := ruleAdded(chAt.Add(ms), Ports(22), 7)
	replacing := fw
	replacing.Replaces = &ChangeRef{Channel: "Security", EventID: 4946, RecordID: 50}

	for _, tc := range []struct {
		name  string
		items []any
		want  []string
	}{
		{"4946 first, alert in between", []any{knock3(), sec4946(50), handshakeAt(attacker, victim, 22, ackAt), replacing},
			[]string{"created medium", "upgraded high"}},
		{"4946 first, then 2004, then the handshake", []any{knock3(), sec4946(50), replacing, handshakeAt(attacker, victim, 22, ackAt)},
			[]string{"created high"}},
		{"2004 first (the 4946 is redundant and never emitted)", []any{knock3(), fw, handshakeAt(attacker, victim, 22, ackAt)},
			[]string{"created high"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, col := newTestEngine(t, nil)
			feed(t, e, tc.items...)
			if got := summary(col.all()); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("records %q, want %q", got, tc.want)
			}
			if s := e.Stats(); s.Changes != 1 {
				t.Errorf("%d changes stored, want 1", s.Changes)
			}
			a := col.all()[len(col.all())-1]
			if a.Change == nil || a.Change.EventID != 2004 || a.Change.RecordID != 7 {
				t.Errorf("alert evidence %+v, want the 2004", a.Change)
			}
		})
	}

	// The replacement does not open (an inactive rule): the 4946 that
	// might have opened goes anyway.
	e, col := newTestEngine(t, nil)
	inactive := replacing
	inactive.Active = TriFalse
	feed(t, e, knock3(), sec4946(50), inactive, handshakeAt(attacker, victim, 22, ackAt))
	if s := e.Stats(); s.Changes != 0 || s.ChangesReplaced != 1 || len(col.all()) != 0 {
		t.Errorf("changes %d replaced %d alerts %q", s.Changes, s.ChangesReplaced, summary(col.all()))
	}

	// Replaces cannot reach another host's record: the key includes the
	// host, so an event of one host cannot drop another's change.
	e, _ = newTestEngine(t, nil)
	otherHost := replacing
	otherHost.Host, otherHost.RecordID = "WS02", 8
	feed(t, e, sec4946(50), otherHost)
	if s := e.Stats(); s.Changes != 2 || s.ChangesReplaced != 0 {
		t.Errorf("another host's record dropped: changes %d replaced %d", s.Changes, s.ChangesReplaced)
	}
}

// TestUpdatedChange: the same record emitted again with more in it (a 4946
// given its port by a later 5447) replaces the stored version; the same
// content again is a duplicate.
func TestUpdatedChange(t *testing.T) {
	e, col := newTestEngine(t, nil)
	joined := sec4946(50)
	joined.Ports, joined.Protocol, joined.Direction, joined.Action, joined.Active = Ports(22), ProtocolTCP, DirectionInbound, ActionAllow, TriTrue
	feed(t, e, knock3(), sec4946(50), handshakeAt(attacker, victim, 22, ackAt), joined, joined)
	if got := summary(col.all()); !reflect.DeepEqual(got, []string{"created medium", "upgraded high"}) {
		t.Errorf("records %q", got)
	}
	s := e.Stats()
	if s.Changes != 1 || s.ChangesUpdated != 1 || s.Duplicates["change"] != 1 {
		t.Errorf("changes %d updated %d duplicates %d", s.Changes, s.ChangesUpdated, s.Duplicates["change"])
	}
}

// TestContradictingVersionsKept: a record that claims the id of a stored
// change but contradicts it (an outbound rule where the real one is
// inbound, on another port) is not a later version of it: whichever comes
// first, the real change stays and the alert is high. Only a version that
// says all the stored one said and more (TestUpdatedChange) replaces it.
func TestContradictingVersionsKept(t *testing.T) {
	real := ruleAdded(chAt, Ports(22), 7)
	real.Origin = "wec01"
	forged := real
	forged.Ports, forged.Direction, forged.Origin = Ports(9999), DirectionOutbound, "rogue"
	blocking := real // same shape, but the stored port is contradicted
	blocking.Ports, blocking.Origin = Ports(23), "rogue"
	for _, tc := range []struct {
		name  string
		items []any
	}{
		{"forgery after", []any{knock3(), real, forged, blocking}},
		{"forgery first", []any{knock3(), forged, blocking, real}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, col := newTestEngine(t, nil)
			feed(t, e, tc.items...)
			feed(t, e, handshakeAt(attacker, victim, 22, ackAt))
			got := col.all()
			if len(got) == 0 || got[len(got)-1].Confidence != ConfidenceHigh || got[len(got)-1].Change.Ports.String() != "22" {
				t.Fatalf("real change lost to a record claiming its id: %q", summary(got))
			}
			if s := e.Stats(); s.ChangesUpdated != 0 {
				t.Errorf("a contradicting record counted as an update: %+v", s)
			}
		})
	}
}

// TestVersionFloodKeepsRealChange: a forwarder that sends many
// contradicting versions of one record id (each compared with the stored
// ones on arrival, so their number is bounded) displaces its own versions,
// never the real forwarder's, before or after the real record arrives.
func TestVersionFloodKeepsRealChange(t *testing.T) {
	for _, realFirst := range []bool{true, false} {
		e, col := newTestEngine(t, nil)
		real := ruleAdded(chAt, Ports(22), 7)
		real.Origin = "wec01"
		feed(t, e, knock3())
		if realFirst {
			feed(t, e, real)
		}
		for i := range 10 * maxVersions {
			f := real
			f.Ports, f.Origin = Ports(uint16(30000+i)), "rogue"
			feed(t, e, f)
		}
		if !realFirst {
			feed(t, e, real)
		}
		feed(t, e, handshakeAt(attacker, victim, 22, ackAt))
		if got := col.all(); len(got) == 0 || got[len(got)-1].Confidence != ConfidenceHigh {
			t.Fatalf("real first %v: alert lost under a version flood: %q", realFirst, summary(got))
		}
		s := e.Stats()
		if s.Changes > maxVersions || s.EvictedByReason[capChanges][EvictChangeVersions] == 0 {
			t.Fatalf("real first %v: %d changes stored, evictions %v", realFirst, s.Changes, s.EvictedByReason)
		}
		if len(s.TopEvictedOrigins) == 0 || s.TopEvictedOrigins[0].Key != "rogue" {
			t.Fatalf("real first %v: top evicted forwarders %v", realFirst, s.TopEvictedOrigins)
		}
	}
}

// TestReplacesOnlyItsRule: Replaces drops the named record only when it
// describes the same rule: a change naming another rule's record in
// Replaces (a forgery) cannot make that evidence vanish.
func TestReplacesOnlyItsRule(t *testing.T) {
	e, col := newTestEngine(t, nil)
	other := ruleAdded(chAt.Add(ms), Ports(8080), 9)
	other.RuleID = "{OTHER}"
	other.Replaces = &ChangeRef{Channel: "Security", EventID: 4946, RecordID: 50}
	feed(t, e, knock3(), sec4946(50), other, handshakeAt(attacker, victim, 22, ackAt))
	s := e.Stats()
	if s.ChangesReplaced != 0 || s.Changes != 2 {
		t.Fatalf("replaced %d, changes %d", s.ChangesReplaced, s.Changes)
	}
	if got := summary(col.all()); !reflect.DeepEqual(got, []string{"created medium"}) {
		t.Fatalf("records %q", got)
	}
}

// TestReplacedRecordStaysReplaced: a record that a stored change replaced
// (Replaces) and that arrives again — re-sent by its forwarder, emitted by
// a decoder restarted without the join state that made it redundant, or
// read twice from the evidence log — and the replacement read before its
// record (a log re-appended after a failed fsync) leave the one change,
// whatever the order; a port-less 4946 kept beside the 2004 would give a
// medium alert for every port. Think like the attacker: a record claiming
// the replaced record's id for another rule is not taken for it (kept),
// and a flood of replacements is bounded and counted.
func TestReplacedRecordStaysReplaced(t *testing.T) {
	replacing := ruleAdded(chAt.Add(ms), Ports(22), 7)
	replacing.Replaces = &ChangeRef{Channel: "Security", EventID: 4946, RecordID: 50}
	for _, tc := range []struct {
		name   string
		items  []any
		resent uint64
	}{
		{"4946, 2004, 4946 again", []any{sec4946(50), replacing, sec4946(50)}, 1},
		{"2004 before its 4946", []any{replacing, sec4946(50)}, 1},
		{"everything twice (a log read twice)", []any{sec4946(50), replacing, sec4946(50), replacing}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, col := newTestEngine(t, nil)
			feed(t, e, knock3())
			feed(t, e, tc.items...)
			// Port 23 is not the rule's: nothing may alert on it.
			feed(t, e, handshakeAt(attacker, victim, 23, ackAt), handshakeAt(attacker, victim, 22, ackAt.Add(ms)))
			if got := summary(col.all()); !reflect.DeepEqual(got, []string{"created high"}) {
				t.Errorf("records %q, want the 2004's high alert alone", got)
			}
			if s := e.Stats(); s.Changes != 1 || s.ReplacedResent != tc.resent || s.ReplacedRecords != 1 {
				t.Errorf("changes %d, re-sent replaced records dropped %d (want %d), remembered %d",
					s.Changes, s.ReplacedResent, tc.resent, s.ReplacedRecords)
			}
		})
	}

	// Another rule's record claiming the replaced record id is kept.
	e, _ := newTestEngine(t, nil)
	forged := sec4946(50)
	forged.RuleID = "{OTHER}"
	feed(t, e, sec4946(50), replacing, forged)
	if s := e.Stats(); s.Changes != 2 || s.ReplacedResent != 0 {
		t.Errorf("another rule's record under the replaced id: changes %d, dropped %d", s.Changes, s.ReplacedResent)
	}

	// A flood of replacements: bounded by MaxChanges, the oldest forgotten
	// and counted; a forgotten record's re-send is only kept beside its
	// replacement (a medium at worst), never hides a change.
	e, _ = newTestEngine(t, func(c *Config) { c.MaxChanges = 64 })
	for i := range 200 {
		c := ruleAdded(chAt.Add(time.Duration(i)*ms), Ports(uint16(1000+i)), uint64(1000+i))
		c.RuleID = fmt.Sprintf("{R%d}", i)
		c.Replaces = &ChangeRef{Channel: "Security", EventID: 4946, RecordID: uint64(5000 + i)}
		feed(t, e, c)
	}
	s := e.Stats()
	if s.ReplacedRecords > 64 || s.Evicted[capReplaced] != 200-64 || s.CapHits[capReplaced] == 0 {
		t.Fatalf("replaced records %d (cap 64), evicted %d, cap hits %d", s.ReplacedRecords, s.Evicted[capReplaced], s.CapHits[capReplaced])
	}

	// Retention: the memory goes with the evidence.
	e, _ = newTestEngine(t, nil)
	feed(t, e, knock3(), sec4946(50), replacing)
	e.Advance(chAt.Add(2 * DefaultConfig().Retention))
	feed(t, e, knockAt(attacker, victim, chAt.Add(2*DefaultConfig().Retention), 1, 2, 3))
	if s := e.Stats(); s.ReplacedRecords != 0 || s.Expired[capReplaced] != 1 {
		t.Fatalf("after the retention: %d replaced records remembered, %d expired", s.ReplacedRecords, s.Expired[capReplaced])
	}
}
