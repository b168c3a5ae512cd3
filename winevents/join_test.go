package winevents

import (
	"fmt"
	"reflect"
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

// liveChanges applies the consumer contract to an emitted sequence: a
// change re-emitted with the same Source replaces the earlier one, and a
// change with Replaces drops the change it names. What remains is what a
// consumer (the correlation engine, a SIEM keyed by record) ends up with.
func liveChanges(cs []ExposureChange) map[SourceRef]ExposureChange {
	live := map[SourceRef]ExposureChange{}
	for _, c := range cs {
		if c.Replaces != nil {
			delete(live, *c.Replaces)
		}
		live[c.Source] = c
	}
	return live
}

// permutations returns every order of evs.
func permutations(evs []testEvent) [][]testEvent {
	if len(evs) <= 1 {
		return [][]testEvent{append([]testEvent(nil), evs...)}
	}
	var out [][]testEvent
	for i := range evs {
		rest := append(append([]testEvent(nil), evs[:i]...), evs[i+1:]...)
		for _, p := range permutations(rest) {
			out = append(out, append([]testEvent{evs[i]}, p...))
		}
	}
	return out
}

func knockRule(id uint32, ms int, record uint64) testEvent {
	if id >= 4946 && id <= 4948 {
		return at(secEvent(id, "RuleId", "{11111111-2222-3333-4444-555555555555}", "RuleName", "knock", "ProfileChanged", "All"), ms, record)
	}
	return at(fwEvent(id, ruleData...), ms, record)
}

// TestFirewallAndSecurityJoinOrderIndependent: Firewall 2004 and Security
// 4946 of one rule change (same RuleId) leave one change, the Firewall
// record's with its ports, whichever WEF delivers first, with or without
// other records in between and with the Security record written up to
// seconds before or after the Firewall one; the same for 2005/4947 and
// 2006/4948. Records of the same rule further apart than JoinWindow are
// two changes in both orders.
func TestFirewallAndSecurityJoinOrderIndependent(t *testing.T) {
	other := func(ms int, record uint64) testEvent { // an unrelated rule on the same host
		return at(fwEvent(2004, withField(withField(ruleData, "RuleId", "{99999999-0000-0000-0000-000000000000}"), "LocalPorts", "8080")...), ms, record)
	}
	cases := []struct {
		name        string
		fw, sec     uint32
		secOffsetMs int // Security record's event time minus the Firewall record's
		between     bool
		window      time.Duration
		wantLive    int // changes of the rule that remain
		wantKind    Kind
	}{
		{"2004 and 4946, same millisecond", 2004, 4946, 0, false, 0, 1, KindRuleAdded},
		{"2004 and 4946, Security 3 ms later", 2004, 4946, 3, false, 0, 1, KindRuleAdded},
		{"2004 and 4946, Security 2 s earlier, records between", 2004, 4946, -2000, true, 0, 1, KindRuleAdded},
		{"2004 and 4946, 29 s apart, window 30 s", 2004, 4946, 29000, true, 0, 1, KindRuleAdded},
		{"2005 and 4947", 2005, 4947, 5, true, 0, 1, KindRuleModified},
		{"2006 and 4948", 2006, 4948, 5, true, 0, 1, KindRuleDeleted},
		{"2004 and 4946 outside a 1 s window", 2004, 4946, 1500, false, time.Second, 2, ""},
		{"2004 and a 4948 of another operation", 2004, 4948, 5, false, 0, 2, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fw := knockRule(tc.fw, 10000, 1)
			sec := knockRule(tc.sec, 10000+tc.secOffsetMs, 2)
			orders := [][]testEvent{{fw, sec}, {sec, fw}}
			if tc.between {
				orders = [][]testEvent{{fw, other(10001, 3), other(10002, 4), sec}, {sec, other(10001, 3), other(10002, 4), fw}}
			}
			var first map[SourceRef]ExposureChange
			for i, evs := range orders {
				d := NewDecoder(Options{JoinWindow: tc.window})
				live := liveChanges(decodeAll(t, d, evs...))
				mine := map[SourceRef]ExposureChange{}
				for k, c := range live {
					if c.RuleID == "{11111111-2222-3333-4444-555555555555}" {
						mine[k] = c
					}
				}
				if len(mine) != tc.wantLive {
					t.Fatalf("order %d: %d changes remain, want %d: %+v", i, len(mine), tc.wantLive, mine)
				}
				if tc.wantLive == 1 {
					for _, c := range mine {
						if c.Source.EventID != tc.fw || c.Kind != tc.wantKind || (c.Kind != KindRuleDeleted && c.Ports.String() != "4444,5000-5010") {
							t.Errorf("order %d: the remaining change is not the Firewall record's: %+v", i, c)
						}
					}
					if s := d.Stats(); s.Redundant != 1 {
						t.Errorf("order %d: redundant = %d, want 1 in both orders", i, s.Redundant)
					}
				}
				if tc.wantLive != 1 {
					continue // two changes: a deletion takes the ports of a rule known before it, so content may differ
				}
				// Both orders end with the same change (Replaces aside).
				for k, c := range mine {
					c.Replaces = nil
					mine[k] = c
				}
				if i == 0 {
					first = mine
				} else if !reflect.DeepEqual(first, mine) {
					t.Errorf("orders differ:\n fw first  %+v\n sec first %+v", first, mine)
				}
			}
		})
	}
}

// TestSecurityFilterFirewallAllOrders: 4946, its 5447 filters and the
// Firewall 2004 of the same netsh rule, in all six orders, leave exactly one
// change with the port. A 5447 that comes after the 2004 replaced the 4946
// must not bring the 4946 back.
func TestSecurityFilterFirewallAllOrders(t *testing.T) {
	rule := at(secEvent(4946, "ProfileChanged", "All", "RuleId", "{F7259D6F-D580-4DF1-8371-60520B42164D}", "RuleName", "atomic testing"), 2, 50)
	fw := at(fwEvent(2004, withField(withField(withField(ruleData, "RuleId", "{F7259D6F-D580-4DF1-8371-60520B42164D}"),
		"RuleName", "atomic testing"), "LocalPorts", "450")...), 1, 7)
	filter := filter5447(0, "75144", "ALE Receive/Accept v4 Layer")
	for _, order := range permutations([]testEvent{rule, fw, filter}) {
		d := NewDecoder(Options{})
		live := liveChanges(decodeAll(t, d, order...))
		var ids []uint32
		for _, e := range order {
			ids = append(ids, e.id)
		}
		if len(live) != 1 {
			t.Errorf("order %v: %d changes remain: %+v", ids, len(live), live)
			continue
		}
		for _, c := range live {
			if c.Source.EventID != 2004 || c.Ports.String() != "450" || !c.Opens() {
				t.Errorf("order %v: remaining change %+v", ids, c)
			}
		}
	}
}

// TestReplacedSecurityIsNotReplayable: an attacker who gets a rule's
// Firewall record replaced cannot make the decoder drop another change:
// Replaces only ever names a Security record of the same RuleId and
// operation, once.
func TestReplacedSecurityIsNotReplayable(t *testing.T) {
	d := NewDecoder(Options{})
	got := decodeAll(t, d, knockRule(4946, 0, 2), knockRule(2004, 1, 1), at(fwEvent(2005, ruleData...), 2, 3))
	var replaces []SourceRef
	for _, c := range got {
		if c.Replaces != nil {
			replaces = append(replaces, *c.Replaces)
		}
	}
	if len(replaces) != 1 || replaces[0].EventID != 4946 {
		t.Errorf("replaces = %+v, want the 4946 once", replaces)
	}
}

// TestSysmonOrientationDoesNotTeachAddresses: older Sysmon versions write
// the local side as Source for Initiated=false (the OTRF empire sample: the
// DC's DNS answer to a client shows Source 172.18.39.5:53). The side named
// like the computer is local; and a client's address must never become
// the host's, or every later change of the host would be filed under it.
func TestSysmonOrientationDoesNotTeachAddresses(t *testing.T) {
	sysmon := func(ms int, record uint64, src, sport, srcName, dst, dport, dstName string) testEvent {
		e := testEvent{channel: "Microsoft-Windows-Sysmon/Operational", provider: "Microsoft-Windows-Sysmon", id: 3,
			computer: "HFDC01.shire.com", data: pairs("Protocol", "udp", "Initiated", "false", "SourceIp", src, "SourcePort", sport,
				"SourceHostname", srcName, "DestinationIp", dst, "DestinationPort", dport, "DestinationHostname", dstName)}
		return at(e, ms, record)
	}
	fw := at(fwEvent(2004, ruleData...), 2, 3)
	fw.computer = "HFDC01.shire.com"
	d := NewDecoder(Options{})
	got := decodeAll(t, d,
		sysmon(0, 1, "172.18.39.5", "53", "HFDC01.shire.com", "172.18.39.106", "55998", "HR001"),
		// both ports dynamic, no name: only Sysmon's orientation is left
		sysmon(1, 2, "172.18.39.5", "49667", "-", "172.18.39.106", "53120", "-"),
		fw)
	if got[0].LocalSideBy != "sysmon_hostname" || got[0].Ports.String() != "53" || got[0].LocalAddress.String() != "172.18.39.5" {
		t.Errorf("named side: %+v", got[0])
	}
	if got[1].LocalSideBy != "sysmon_initiated" {
		t.Errorf("undecidable: %+v", got[1])
	}
	for _, c := range got {
		for _, ip := range c.HostIPs {
			if ip.String() == "172.18.39.106" {
				t.Errorf("the client's address became the host's: %+v", c)
			}
		}
	}
	if len(got) != 3 || got[2].Kind != KindRuleAdded {
		t.Fatalf("unexpected: %+v", got)
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

// TestReemittedChangesKeepWholeValues: the join state keeps its changes'
// strings cut at 512 bytes (bounded memory), but a change it emits again —
// a modify found to be an enable, a 4946 given its ports by a late 5447, a
// listener given its rule, a deletion given the rule's shape — carries the
// whole values, like every other emitted change: a long path must not come
// out cut (with "<truncated>") because its partner arrived second.
func TestReemittedChangesKeepWholeValues(t *testing.T) {
	longApp := `C:\Program Files\` + strings.Repeat(`Vendor Software Folder\`, 30) + `tool.exe`
	longMod := `C:\Tools\` + strings.Repeat(`deploy\`, 90) + `netsh.exe`
	longProfiles := strings.Repeat("Domain,Private,Public,", 30)
	if len(longApp) <= maxKeptFieldBytes || len(longMod) <= maxKeptFieldBytes || len(longProfiles) <= maxKeptFieldBytes {
		t.Fatal("test values must be over the join state's cut")
	}
	whole := func(what string, c ExposureChange, field, want string) {
		t.Helper()
		got := map[string]string{"Application": c.Application, "ModifyingApplication": c.ModifyingApplication, "Profiles": c.Profiles}[field]
		if got != want {
			t.Errorf("%s: %s is %d bytes (%q…), want the whole %d", what, field, len(got), got[max(0, len(got)-24):], len(want))
		}
	}

	// The enable forwarded before the older inactive add: the enable is
	// emitted again from the join state.
	data := withField(withField(ruleData, "ApplicationPath", longApp), "ModifyingApplication", longMod)
	enable := at(fwEvent(2005, data...), 100, 1649)
	add := at(fwEvent(2004, withField(data, "Active", "0")...), 0, 1648)
	got := decodeAll(t, NewDecoder(Options{}), enable, add)
	if len(got) != 3 || got[2].Kind != KindRuleEnabled {
		t.Fatalf("modify then older inactive add: %+v", got)
	}
	whole("modified → enabled", got[2], "Application", longApp)
	whole("modified → enabled", got[2], "ModifyingApplication", longMod)

	// A deletion takes the rule's shape from the join state.
	del := at(fwEvent(2006, "RuleId", "{11111111-2222-3333-4444-555555555555}", "RuleName", "knock"), 200, 1650)
	got = decodeAll(t, NewDecoder(Options{}), enable, del)
	if len(got) != 2 || got[1].Kind != KindRuleDeleted {
		t.Fatalf("delete: %+v", got)
	}
	whole("deleted", got[1], "Application", longApp)

	// A 4946 first, then the 5447 of its rule name: the 4946 again, with
	// ports. (Its join keys RuleId and RuleName are cut when read, in
	// every change alike.)
	sec := at(secEvent(4946, "ProfileChanged", longProfiles, "RuleId", "{F7259D6F-D580-4DF1-8371-60520B42164D}", "RuleName", "atomic testing"), 1, 50)
	got = decodeAll(t, NewDecoder(Options{}), sec, filter5447(0, "75144", "ALE Receive/Accept v4 Layer"))
	if len(got) != 2 || got[1].Ports.String() != "450" {
		t.Fatalf("4946 then 5447: %+v", got)
	}
	whole("4946 first emitted", got[0], "Profiles", longProfiles)
	whole("4946 joined", got[1], "Profiles", longProfiles)

	// A listener first, then the 5447 of its filter: the listener again,
	// with its rule.
	lst := at(secEvent(5154, "ProcessId", "42", "Application", longApp, "SourceAddress", "0.0.0.0", "SourcePort", "450",
		"Protocol", "6", "FilterRTID", "75143", "LayerName", "%%14609"), 500, 60)
	got = decodeAll(t, NewDecoder(Options{}), lst, filter5447(0, "75143", "ALE Listen v4 Layer"))
	if len(got) != 2 || got[1].RuleName != "atomic testing" {
		t.Fatalf("listener then 5447: %+v", got)
	}
	whole("listener joined", got[1], "Application", longApp)
}

// Think like the attacker: rules with long paths from many hosts, to make
// the join state keep megabytes of whole values. They share one budget;
// past it the oldest go (counted), and what replaced or dropped state held
// is given back.
func TestWholeValuesBudget(t *testing.T) {
	d := NewDecoder(Options{})
	long := strings.Repeat(`C:\x\`, 300) // 1,500 bytes
	n := 2 * maxLongBytes / (2 * len(long))
	for i := range n {
		e := at(fwEvent(2004, withField(withField(withField(ruleData, "RuleId", fmt.Sprintf("{R%d}", i)),
			"ApplicationPath", long), "ModifyingApplication", long)...), i, uint64(1000+i))
		e.computer = fmt.Sprintf("WS%02d.corp.example", i%16)
		if _, res := d.Decode([]byte(renderXML(e, false))); res.Relevant != 1 {
			t.Fatalf("event %d: %+v", i, res)
		}
	}
	d.st.mu.Lock()
	held, entries := d.st.longBytes, d.st.long.Len()
	d.st.mu.Unlock()
	if held > maxLongBytes || held != entries*2*len(long) {
		t.Fatalf("whole values hold %d bytes in %d entries, budget %d", held, entries, maxLongBytes)
	}
	if s := d.Stats(); s.LongValuesDropped == 0 {
		t.Fatalf("the budget was never hit: %+v", s)
	}
	// A rule replaced by a newer record gives its whole values back.
	d = NewDecoder(Options{})
	data := withField(ruleData, "ApplicationPath", long)
	decodeAll(t, d, at(fwEvent(2004, data...), 0, 1), at(fwEvent(2005, data...), 10, 2), at(fwEvent(2005, data...), 20, 3))
	if d.st.longBytes != len(long) {
		t.Fatalf("one rule's state holds %d bytes of whole values, want %d", d.st.longBytes, len(long))
	}
}
