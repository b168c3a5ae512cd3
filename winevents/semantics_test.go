package winevents

import (
	"reflect"
	"testing"
	"time"
)

var tTest = time.Date(2024, 3, 10, 14, 5, 6, 0, time.UTC)

func fwEvent(id uint32, data ...string) testEvent {
	return testEvent{channel: chanFirewall, provider: "Microsoft-Windows-Windows Firewall With Advanced Security", id: id, record: 100 + uint64(id), computer: "WS01.corp.example", time: tTest, data: pairs(data...)}
}

func secEvent(id uint32, data ...string) testEvent {
	return testEvent{channel: chanSecurity, provider: "Microsoft-Windows-Security-Auditing", id: id, record: 9000 + uint64(id), computer: "WS01.corp.example", time: tTest, data: pairs(data...)}
}

func pairs(kv ...string) []field {
	var out []field
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, field{kv[i], kv[i+1]})
	}
	return out
}

var ruleData = []string{"RuleId", "{11111111-2222-3333-4444-555555555555}", "RuleName", "knock", "Origin", "1",
	"ApplicationPath", "", "ServiceName", "", "Direction", "1", "Protocol", "6", "LocalPorts", "4444,5000-5010",
	"RemotePorts", "*", "Action", "3", "Profiles", "2147483647", "LocalAddresses", "*", "RemoteAddresses", "*",
	"Active", "1", "ModifyingUser", "S-1-5-21-1-2-3-1001", "ModifyingApplication", `C:\Windows\System32\netsh.exe`}

func withField(base []string, k, v string) []string {
	out := append([]string(nil), base...)
	for i := 0; i+1 < len(out); i += 2 {
		if out[i] == k {
			out[i+1] = v
			return out
		}
	}
	return append(out, k, v)
}

// TestEventTable decodes every supported event ID (and unrelated ones) in
// every format and checks the change it yields and that all formats agree.
func TestEventTable(t *testing.T) {
	sysmon := func(initiated string) testEvent {
		return testEvent{channel: chanSysmon, provider: "Microsoft-Windows-Sysmon", id: 3, record: 77, computer: "WS01.corp.example", time: tTest,
			data: pairs("Image", `C:\tools\back.exe`, "ProcessId", "4242", "Protocol", "tcp", "Initiated", initiated,
				"SourceIp", "203.0.113.7", "SourcePort", "51111", "DestinationIp", "10.1.1.5", "DestinationPort", "4444")}
	}
	cases := []struct {
		name  string
		ev    testEvent
		kind  Kind // "" = no change
		ports string
		opens bool
	}{
		{"2004 added active", fwEvent(2004, ruleData...), KindRuleAdded, "4444,5000-5010", true},
		{"2071 added (Win11)", fwEvent(2071, ruleData...), KindRuleAdded, "4444,5000-5010", true},
		{"2097 added", fwEvent(2097, ruleData...), KindRuleAdded, "4444,5000-5010", true},
		{"2004 added inactive", fwEvent(2004, withField(ruleData, "Active", "0")...), KindRuleAdded, "4444,5000-5010", false},
		{"2004 outbound", fwEvent(2004, withField(ruleData, "Direction", "2")...), KindRuleAdded, "4444,5000-5010", false},
		{"2004 block", fwEvent(2004, withField(ruleData, "Action", "2")...), KindRuleAdded, "4444,5000-5010", false},
		{"2004 any port", fwEvent(2004, withField(ruleData, "LocalPorts", "*")...), KindRuleAdded, "any", true},
		{"2004 empty ports", fwEvent(2004, withField(ruleData, "LocalPorts", "")...), KindRuleAdded, "any", true},
		{"2004 RPC keyword", fwEvent(2004, withField(ruleData, "LocalPorts", "RPC")...), KindRuleAdded, "RPC", true},
		{"2005 modified", fwEvent(2005, ruleData...), KindRuleModified, "4444,5000-5010", true},
		{"2073 modified", fwEvent(2073, ruleData...), KindRuleModified, "4444,5000-5010", true},
		{"2099 modified", fwEvent(2099, ruleData...), KindRuleModified, "4444,5000-5010", true},
		{"2006 deleted", fwEvent(2006, "RuleId", "{1}", "RuleName", "knock", "ModifyingUser", "S-1-5-21-1-2-3-1001"), KindRuleDeleted, "", false},
		{"2052 deleted", fwEvent(2052, "RuleId", "{1}", "RuleName", "knock"), KindRuleDeleted, "", false},
		{"2033 all deleted", fwEvent(2033, "ModifyingUser", "S-1-5-21-1-2-3-1001"), KindRuleDeleted, "any", false},
		{"2059 all deleted", fwEvent(2059), KindRuleDeleted, "any", false},
		{"2003 firewall off", fwEvent(2003, "Profiles", "2", "SettingType", "Enable Windows Defender Firewall", "SettingValueString", "No"), KindFirewallDisabled, "any", true},
		{"2082 firewall off (type 1)", fwEvent(2082, "Profiles", "4", "SettingType", "1", "SettingValue", "0"), KindFirewallDisabled, "any", true},
		{"2003 firewall on", fwEvent(2003, "Profiles", "2", "SettingType", "Enable Windows Defender Firewall", "SettingValueString", "Yes"), "", "", false},
		{"2003 other setting", fwEvent(2003, "Profiles", "2", "SettingType", "Log dropped packets", "SettingValueString", "No"), "", "", false},
		{"2002 unrelated firewall event", fwEvent(2002, "SettingType", "x"), "", "", false},
		{"4946 alone", secEvent(4946, "ProfileChanged", "All", "RuleId", "{2}", "RuleName", "solo"), KindRuleAdded, "", false},
		{"4947 alone", secEvent(4947, "ProfileChanged", "All", "RuleId", "{2}", "RuleName", "solo"), KindRuleModified, "", false},
		{"4948 alone", secEvent(4948, "ProfileChanged", "All", "RuleId", "{2}", "RuleName", "solo"), KindRuleDeleted, "", false},
		{"4950 firewall off", secEvent(4950, "ProfileChanged", "Public", "SettingType", "Enable Windows Firewall", "SettingValue", "No"), KindFirewallDisabled, "any", true},
		{"4950 default inbound allow", secEvent(4950, "ProfileChanged", "Public", "SettingType", "Default Inbound Action", "SettingValue", "Allow"), KindFirewallDisabled, "any", true},
		{"4950 shielded mode", secEvent(4950, "ProfileChanged", "Domain", "SettingType", "Windows Firewall Shielded Mode", "SettingValue", "No"), "", "", false},
		{"5447 alone never emits", secEvent(5447, "FilterName", "x", "FilterId", "5", "ChangeType", "%%16384", "Action", "%%16390", "LayerName", "ALE Listen v4 Layer",
			"Conditions", "\n\tCondition ID:\t{0c1ba1af-5765-453f-af22-a8f791ac775b}\n\tMatch value:\tEqual to\n\tCondition value:\t0x115c\n"), "", "", false},
		{"5154 listen", secEvent(5154, "ProcessId", "4242", "Application", `\device\harddiskvolume2\tools\back.exe`, "SourceAddress", "0.0.0.0", "SourcePort", "4444", "Protocol", "6", "FilterRTID", "0", "LayerName", "%%14609", "LayerRTID", "40"), KindListener, "4444", true},
		{"5158 tcp bind", secEvent(5158, "ProcessId", "4242", "Application", "x.exe", "SourceAddress", "::", "SourcePort", "4444", "Protocol", "6", "FilterRTID", "0", "LayerName", "%%14608", "LayerRTID", "36"), KindListener, "4444", false},
		{"5158 udp bind", secEvent(5158, "ProcessId", "4242", "Application", "x.exe", "SourceAddress", "::", "SourcePort", "5353", "Protocol", "17", "FilterRTID", "0", "LayerName", "%%14608", "LayerRTID", "36"), KindListener, "5353", true},
		{"5156 inbound", secEvent(5156, "ProcessID", "4242", "Application", "x.exe", "Direction", "%%14592", "SourceAddress", "203.0.113.7", "SourcePort", "51111", "DestAddress", "10.1.1.5", "DestPort", "4444", "Protocol", "6", "FilterRTID", "70000", "LayerName", "%%14610"), KindConnection, "4444", false},
		{"5156 outbound skipped", secEvent(5156, "ProcessID", "4242", "Application", "x.exe", "Direction", "%%14593", "SourceAddress", "10.1.1.5", "SourcePort", "51111", "DestAddress", "203.0.113.7", "DestPort", "443", "Protocol", "6"), "", "", false},
		{"4688 unrelated", secEvent(4688, "NewProcessName", `C:\Windows\System32\netsh.exe`), "", "", false},
		{"7045 service installed", testEvent{channel: "System", provider: "Service Control Manager", id: 7045, record: 5, computer: "WS01.corp.example", time: tTest,
			data: pairs("ServiceName", "Updater", "ImagePath", `C:\x\upd.exe`, "ServiceType", "user mode service", "StartType", "auto start", "AccountName", "LocalSystem")}, KindService, "", false},
		{"7036 running", testEvent{channel: "System", provider: "Service Control Manager", id: 7036, record: 6, computer: "WS01.corp.example", time: tTest,
			data: pairs("param1", "Updater", "param2", "running")}, KindService, "", false},
		{"7036 stopped", testEvent{channel: "System", provider: "Service Control Manager", id: 7036, record: 7, computer: "WS01.corp.example", time: tTest,
			data: pairs("param1", "Updater", "param2", "stopped")}, "", "", false},
		{"7040 unrelated", testEvent{channel: "System", provider: "Service Control Manager", id: 7040, record: 8, computer: "WS01.corp.example", time: tTest}, "", "", false},
		{"sysmon 3 inbound", sysmon("false"), KindConnection, "4444", false},
		{"sysmon 3 outbound", sysmon("true"), "", "", false},
		{"sysmon 1 unrelated", testEvent{channel: chanSysmon, provider: "Microsoft-Windows-Sysmon", id: 1, record: 9, computer: "WS01.corp.example", time: tTest}, "", "", false},
	}
	est := time.FixedZone("UTC-5", -5*3600)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			payloads := map[string]string{
				"xml":           renderXML(tc.ev, false),
				"xml_rendering": renderXML(tc.ev, true),
				"ecs":           renderECS(tc.ev, false),
				"ecs_string_id": renderECS(tc.ev, true),
				"winlogbeat6":   renderWLB6(tc.ev),
				"nxlog":         renderNXLog(tc.ev, est),
			}
			var ref *ExposureChange
			for _, name := range []string{"xml", "xml_rendering", "ecs", "ecs_string_id", "winlogbeat6", "nxlog"} {
				d := NewDecoder(Options{Zones: map[string]*time.Location{"*.corp.example": est}})
				got, res := d.Decode([]byte(payloads[name]))
				if res.Err != nil || res.Rejected != 0 || res.Read != 1 {
					t.Fatalf("%s: result %+v", name, res)
				}
				if tc.kind == "" {
					if len(got) != 0 {
						t.Fatalf("%s: got %d changes, want none: %+v", name, len(got), got)
					}
					continue
				}
				if len(got) != 1 {
					t.Fatalf("%s: got %d changes, want 1", name, len(got))
				}
				c := got[0]
				if c.Kind != tc.kind || c.Ports.String() != tc.ports || c.Opens() != tc.opens {
					t.Errorf("%s: kind %s ports %q opens %v, want %s %q %v", name, c.Kind, c.Ports, c.Opens(), tc.kind, tc.ports, tc.opens)
				}
				if !c.Time.Equal(tc.ev.time) || c.Host != tc.ev.computer || c.Source.EventID != tc.ev.id || c.Source.RecordID != tc.ev.record {
					t.Errorf("%s: time %v host %q id %d record %d", name, c.Time, c.Host, c.Source.EventID, c.Source.RecordID)
				}
				for _, a := range c.HostIPs {
					if a.String() == "10.9.9.9" {
						t.Errorf("%s: host IPs %v taken from the collector", name, c.HostIPs)
					}
				}
				c.Source.Format = ""
				if ref == nil {
					ref = &c
				} else if !reflect.DeepEqual(*ref, c) {
					t.Errorf("%s differs from xml:\n got %+v\nwant %+v", name, c, *ref)
				}
			}
		})
	}
}

func TestRuleFieldsDetail(t *testing.T) {
	d := NewDecoder(Options{})
	got, _ := d.Decode([]byte(renderXML(fwEvent(2004, ruleData...), false)))
	c := got[0]
	want := ExposureChange{Time: tTest, Host: "WS01.corp.example", Kind: KindRuleAdded,
		Ports: PortSet{Ranges: []PortRange{{4444, 4444}, {5000, 5010}}}, Protocol: ProtoTCP, Direction: DirIn,
		Action: ActionAllow, Active: true, Profiles: "All", RuleID: "{11111111-2222-3333-4444-555555555555}",
		RuleName: "knock", ModifyingUser: "S-1-5-21-1-2-3-1001", ModifyingApplication: `C:\Windows\System32\netsh.exe`,
		Actor: ActorUser, Source: SourceRef{Format: FormatXML, Channel: chanFirewall, EventID: 2004, RecordID: 2104, Time: tTest}}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
}

func TestECSHostIPOnlyWhenHostIsTheSource(t *testing.T) {
	ev := secEvent(5156, "ProcessID", "4", "Application", "System", "Direction", "%%14592", "SourceAddress", "10.1.1.5",
		"SourcePort", "4444", "DestAddress", "203.0.113.7", "DestPort", "51111", "Protocol", "6")
	ecs := `{"@timestamp":"2024-03-10T14:05:06Z","host":{"name":"WS01","ip":["10.1.1.5","fe80::1"]},` +
		`"winlog":{"event_id":5156,"channel":"Security","computer_name":"WS01.corp.example","record_id":1,"event_data":` + mustJSON(dataMap(ev)) + `}}`
	got, res := NewDecoder(Options{}).Decode([]byte(ecs))
	if len(got) != 1 {
		t.Fatalf("got %d changes (%+v)", len(got), res)
	}
	c := got[0]
	if len(c.HostIPs) != 2 {
		t.Errorf("host IPs = %v", c.HostIPs)
	}
	// The source side is the host's own address here (Windows versions
	// differ in which field is local): decided by the host IP, not the name.
	if c.LocalSideBy != "host_ip" || c.LocalAddress.String() != "10.1.1.5" || c.Ports.String() != "4444" ||
		c.RemoteAddress.String() != "203.0.113.7" || c.RemotePort != 51111 {
		t.Errorf("connection sides: %+v", c)
	}
}
