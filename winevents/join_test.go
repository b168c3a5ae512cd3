package winevents

import (
	"strings"
	"testing"
	"time"
)

func at(e testEvent, ms int, record uint64) testEvent {
	e.time = tTest.Add(time.Duration(ms) * time.Millisecond)
	e.record = record
	return e
}

func decodeAll(t *testing.T, d *Decoder, evs ...testEvent) []ExposureChange {
	t.Helper()
	var out []ExposureChange
	for _, e := range evs {
		got, res := d.Decode([]byte(renderXML(e, false)))
		if res.Err != nil || res.Rejected != 0 {
			t.Fatalf("decode: %+v", res)
		}
		out = append(out, got...)
	}
	return out
}

const portCond = "\n\tCondition ID:\t{0c1ba1af-5765-453f-af22-a8f791ac775b}\n\tMatch value:\tEqual to\n\tCondition value:\t0x01c2\n"
const protoCond = "\n\tCondition ID:\t{3971ef2b-623e-4f9a-8cb1-6e79b806b9a7}\n\tMatch value:\tEqual to\n\tCondition value:\t0x06\n"

func rule4946(ms int) testEvent {
	return at(secEvent(4946, "ProfileChanged", "All", "RuleId", "{F7259D6F-D580-4DF1-8371-60520B42164D}", "RuleName", "atomic testing"), ms, 50)
}

func filter5447(ms int, id string, layer string) testEvent {
	return at(secEvent(5447, "FilterName", "atomic testing", "FilterId", id, "ChangeType", "%%16384", "Action", "%%16390",
		"LayerName", layer, "Conditions", portCond+protoCond), ms, 40)
}

func listen5154(ms int, rtid string) testEvent {
	return at(secEvent(5154, "ProcessId", "42", "Application", "backdoor.exe", "SourceAddress", "0.0.0.0", "SourcePort", "450",
		"Protocol", "6", "FilterRTID", rtid, "LayerName", "%%14609"), ms, 60)
}

func TestJoin4946With5447BothOrders(t *testing.T) {
	// 4946 first: emitted without port, then again with it.
	d := NewDecoder(Options{})
	got := decodeAll(t, d, rule4946(1), filter5447(0, "75144", "ALE Receive/Accept v4 Layer"))
	if len(got) != 2 {
		t.Fatalf("got %d changes, want 2: %+v", len(got), got)
	}
	if got[0].Ports.Known() || got[0].Opens() {
		t.Errorf("first change should carry no port: %+v", got[0])
	}
	c := got[1]
	if c.Kind != KindRuleAdded || c.Ports.String() != "450" || c.Protocol != ProtoTCP || !c.Opens() ||
		c.RuleID != got[0].RuleID || c.Source != got[0].Source || c.Joined == nil || c.Joined.EventID != 5447 {
		t.Errorf("joined change: %+v", c)
	}
	if !c.Time.Equal(tTest.Add(time.Millisecond)) {
		t.Errorf("time %v, want the 4946's", c.Time)
	}
	// 5447 first: one change, with the port.
	d = NewDecoder(Options{})
	got = decodeAll(t, d, filter5447(0, "75144", "ALE Receive/Accept v4 Layer"), rule4946(1))
	if len(got) != 1 || got[0].Ports.String() != "450" || got[0].Joined == nil {
		t.Fatalf("got %+v", got)
	}
	if s := d.Stats(); s.Joins != 1 {
		t.Errorf("joins = %d", s.Joins)
	}
	// More filters of the same rule with the same port add nothing.
	got = decodeAll(t, d, filter5447(0, "75145", "ALE Listen v6 Layer"))
	if len(got) != 0 {
		t.Errorf("a second filter re-emitted: %+v", got)
	}
}

func TestJoinOutsideWindow(t *testing.T) {
	d := NewDecoder(Options{JoinWindow: time.Second})
	got := decodeAll(t, d, rule4946(5000), filter5447(0, "75144", "ALE Receive/Accept v4 Layer"))
	if len(got) != 1 || got[0].Ports.Known() {
		t.Fatalf("joined across %v: %+v", time.Second, got)
	}
}

func TestJoinListenerWithFilterBothOrders(t *testing.T) {
	d := NewDecoder(Options{})
	got := decodeAll(t, d, filter5447(0, "75143", "ALE Listen v4 Layer"), rule4946(1), listen5154(500, "75143"))
	l := got[len(got)-1]
	if l.Kind != KindListener || l.RuleName != "atomic testing" || l.RuleID != "{F7259D6F-D580-4DF1-8371-60520B42164D}" || l.Joined == nil {
		t.Errorf("listener: %+v", l)
	}
	// Listener first (its 5447 forwarded late): emitted at once, then
	// again with the rule name.
	d = NewDecoder(Options{})
	got = decodeAll(t, d, listen5154(500, "75143"), filter5447(0, "75143", "ALE Listen v4 Layer"))
	if len(got) != 2 || got[0].RuleName != "" || got[1].RuleName != "atomic testing" || got[1].Source != got[0].Source {
		t.Fatalf("got %+v", got)
	}
}

func TestJoinInactiveAddThenEnable(t *testing.T) {
	add := at(fwEvent(2004, withField(ruleData, "Active", "0")...), 0, 1648)
	enable := at(fwEvent(2005, ruleData...), 100, 1649)
	d := NewDecoder(Options{})
	got := decodeAll(t, d, add, enable)
	if len(got) != 2 || got[0].Opens() || got[1].Kind != KindRuleEnabled || !got[1].Opens() ||
		got[1].Joined == nil || got[1].Joined.RecordID != 1648 || !got[1].Time.Equal(enable.time) {
		t.Fatalf("in order: %+v", got)
	}
	// The enable forwarded first: a modify that opens, then, once the
	// inactive add arrives, the same change again as an enable.
	d = NewDecoder(Options{})
	got = decodeAll(t, d, enable, add)
	if len(got) != 3 {
		t.Fatalf("reversed: got %d changes: %+v", len(got), got)
	}
	if got[0].Kind != KindRuleModified || !got[0].Opens() || got[1].Kind != KindRuleAdded || got[1].Active ||
		got[2].Kind != KindRuleEnabled || got[2].Source != got[0].Source || !got[2].Time.Equal(enable.time) {
		t.Errorf("reversed: %+v", got)
	}
	// An older record never overwrites newer state: a later modify with
	// Active=1 is a modify, not an enable.
	again := decodeAll(t, d, at(fwEvent(2005, ruleData...), 200, 1650))
	if len(again) != 1 || again[0].Kind != KindRuleModified {
		t.Errorf("after: %+v", again)
	}
}

func TestSecurityRedundantWithFirewallChannel(t *testing.T) {
	d := NewDecoder(Options{})
	got := decodeAll(t, d, at(fwEvent(2004, ruleData...), 0, 1),
		at(secEvent(4946, "RuleId", "{11111111-2222-3333-4444-555555555555}", "RuleName", "knock", "ProfileChanged", "All"), 2, 2))
	if len(got) != 1 || got[0].Source.EventID != 2004 {
		t.Fatalf("got %+v", got)
	}
	if s := d.Stats(); s.Redundant != 1 {
		t.Errorf("redundant = %d", s.Redundant)
	}
	// 4948 after 2006 for the same rule is redundant too; 2006 carries the
	// ports of the rule it deletes.
	got = decodeAll(t, d, at(fwEvent(2006, "RuleId", "{11111111-2222-3333-4444-555555555555}", "RuleName", "knock"), 5000, 3),
		at(secEvent(4948, "RuleId", "{11111111-2222-3333-4444-555555555555}", "RuleName", "knock"), 5001, 4))
	if len(got) != 1 || got[0].Kind != KindRuleDeleted || got[0].Ports.String() != "4444,5000-5010" {
		t.Fatalf("delete: %+v", got)
	}
}

func TestDuplicates(t *testing.T) {
	d := NewDecoder(Options{})
	p := []byte(renderXML(fwEvent(2004, ruleData...), false))
	if got, res := d.Decode(p); len(got) != 1 || res.Relevant != 1 {
		t.Fatalf("first: %+v", res)
	}
	got, res := d.Decode(p)
	if len(got) != 0 || res.Duplicates != 1 || res.Relevant != 0 {
		t.Fatalf("second: %d changes, %+v", len(got), res)
	}
	// Same record id on another computer or channel is not a duplicate.
	e := fwEvent(2004, ruleData...)
	e.computer = "WS02"
	if _, res := d.Decode([]byte(renderXML(e, false))); res.Duplicates != 0 {
		t.Errorf("other host counted as duplicate")
	}
	// Across formats the same record is recognised.
	if _, res := d.Decode([]byte(renderWLB6(fwEvent(2004, ruleData...)))); res.Duplicates != 1 {
		t.Errorf("same record in another format not recognised: %+v", res)
	}
	if s := d.Stats(); s.ByFormat[FormatXML].Duplicates != 1 || s.ByFormat[FormatWinlogbeat].Duplicates != 1 {
		t.Errorf("stats: %+v", s.ByFormat)
	}
}

func TestCapsAreCounted(t *testing.T) {
	d := NewDecoder(Options{DedupeSize: 2, MaxHosts: 1, MaxPerHost: 2})
	for i := 0; i < 4; i++ {
		e := at(fwEvent(2004, withField(ruleData, "RuleId", "{r"+strings.Repeat("x", i)+"}")...), i, uint64(10+i))
		if i%2 == 1 {
			e.computer = "OTHER"
		}
		decodeAll(t, d, e)
	}
	s := d.Stats()
	if s.DedupeEvicted != 2 || s.HostsEvicted != 3 || s.Hosts != 1 {
		t.Errorf("stats: %+v", s)
	}
	d = NewDecoder(Options{MaxPerHost: 2})
	for i := 0; i < 5; i++ {
		decodeAll(t, d, at(fwEvent(2004, withField(ruleData, "RuleId", "{r"+strings.Repeat("x", i)+"}")...), i, uint64(10+i)))
	}
	if s := d.Stats(); s.JoinEvicted != 3 {
		t.Errorf("join evictions = %d, want 3", s.JoinEvicted)
	}
}

func TestConnectionLocalSide(t *testing.T) {
	d := NewDecoder(Options{})
	// The host listens on 4444: the side with that port is local, whatever
	// the field names say (here the newer-Windows orientation: local = Source).
	got := decodeAll(t, d, listen5154(0, "0"),
		at(secEvent(5156, "ProcessID", "42", "Application", "backdoor.exe", "Direction", "%%14592", "SourceAddress", "10.1.1.5", "SourcePort", "450",
			"DestAddress", "203.0.113.7", "DestPort", "62000", "Protocol", "6"), 10, 61))
	c := got[len(got)-1]
	if c.LocalSideBy != "listener" || c.Ports.String() != "450" || c.RemoteAddress.String() != "203.0.113.7" || c.RemotePort != 62000 {
		t.Errorf("connection: %+v", c)
	}
	// Both ports ephemeral, no knowledge: undecided, said so.
	got = decodeAll(t, d, at(secEvent(5156, "Direction", "%%14592", "SourceAddress", "198.51.100.1", "SourcePort", "50001",
		"DestAddress", "198.51.100.2", "DestPort", "50002", "Protocol", "6"), 20, 62))
	if got[0].LocalSideBy != "unknown" {
		t.Errorf("undecided connection: %+v", got[0])
	}
}

func TestJoinBudget(t *testing.T) {
	d := NewDecoder(Options{MaxJoinEntries: 10, MaxPerHost: 4})
	// A quiet host with one rule, then a flood from another host.
	decodeAll(t, d, at(fwEvent(2004, ruleData...), 0, 1))
	for i := 0; i < 50; i++ {
		e := at(fwEvent(2004, withField(ruleData, "RuleId", "{f"+strings.Repeat("x", i)+"}")...), i, uint64(100+i))
		e.computer = "FLOOD"
		decodeAll(t, d, e)
	}
	s := d.Stats()
	if s.Hosts != 2 || s.JoinEvicted == 0 {
		t.Errorf("a single flooding host pushed others out or was not capped: %+v", s)
	}
	// Many flooding hosts exceed the global budget: old hosts go, counted.
	for hst := 0; hst < 5; hst++ {
		for i := 0; i < 4; i++ {
			e := at(fwEvent(2004, withField(ruleData, "RuleId", "{g"+strings.Repeat("y", i)+"}")...), i, uint64(1000+hst*10+i))
			e.computer = "H" + strings.Repeat("h", hst)
			decodeAll(t, d, e)
		}
	}
	s = d.Stats()
	if s.JoinEntries > 10 || s.HostsEvicted == 0 {
		t.Errorf("budget not kept: %+v", s)
	}
}

// A forged record that claims the computer and next record id of a host
// (a harmless outbound rule) must not make the real record that follows a
// "duplicate": the real change is emitted and the conflict counted; a
// re-send of either is still a duplicate.
func TestForgedRecordDoesNotPreClaimTheRealOne(t *testing.T) {
	d := NewDecoder(Options{})
	forged := at(fwEvent(2004, withField(withField(ruleData, "Direction", "2"), "RuleName", "harmless")...), 0, 7)
	real := at(fwEvent(2004, ruleData...), 100, 7)
	if got := decodeAll(t, d, forged); len(got) != 1 || got[0].Direction != DirOut {
		t.Fatalf("forged: %+v", got)
	}
	got, res := d.Decode([]byte(renderXML(real, false)))
	if len(got) != 1 || res.Duplicates != 0 || !got[0].Opens() || got[0].Source.RecordID != 7 {
		t.Fatalf("the real record was dropped as a duplicate of the forged one: %d changes, %+v", len(got), res)
	}
	if s := d.Stats(); s.DedupeConflicts != 1 {
		t.Fatalf("conflicts %d, want 1", s.DedupeConflicts)
	}
	for _, e := range []testEvent{real, forged} {
		if _, res := d.Decode([]byte(renderECS(e, false))); res.Duplicates != 1 {
			t.Errorf("re-send (another format) not recognised: %+v", res)
		}
	}
	if s := d.Stats(); s.DedupeConflicts != 1 {
		t.Fatalf("conflicts %d after re-sends, want 1", s.DedupeConflicts)
	}
}
