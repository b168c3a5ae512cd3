package winevents

import (
	"fmt"
	"testing"
	"time"
)

// Benchmarks: events per second per core for each format, one event per
// Decode call as the transports deliver them, on
//   - a realistic mix: a workstation's forwarded Security, System and
//     Sysmon stream with WFP auditing on, where most records are unrelated
//     (logons, process creation, Sysmon 1/10/11/13, outbound 5156) and
//     about 15% carry a supported event ID (5158 binds, inbound 5156,
//     Sysmon 3, 5447, 4946, 2004, 5154, 7036);
//   - relevant events only (the same supported IDs, all fully decoded).
// Run: go test -run '^$' -bench . -benchmem -cpu 1 ./winevents/

func benchMix(relevantOnly bool) []testEvent {
	var out []testEvent
	add := func(n int, e testEvent) {
		for i := 0; i < n; i++ {
			out = append(out, e)
		}
	}
	sid := "S-1-5-21-3940915590-64593676-1414006259-500"
	proc := testEvent{channel: chanSecurity, provider: "Microsoft-Windows-Security-Auditing", id: 4688, data: pairs(
		"SubjectUserSid", sid, "SubjectUserName", "wardog", "SubjectDomainName", "WORKSTATION5", "SubjectLogonId", "0xc61d9",
		"NewProcessId", "0x27cc", "NewProcessName", `C:\Windows\System32\netsh.exe`, "TokenElevationType", "%%1936",
		"ProcessId", "0x1040", "CommandLine", `netsh advfirewall show allprofiles state`, "TargetUserSid", "S-1-0-0",
		"TargetUserName", "-", "TargetDomainName", "-", "TargetLogonId", "0x0", "ParentProcessName", `C:\Windows\System32\cmd.exe`,
		"MandatoryLabel", "S-1-16-12288")}
	logon := testEvent{channel: chanSecurity, provider: "Microsoft-Windows-Security-Auditing", id: 4624, data: pairs(
		"SubjectUserSid", "S-1-5-18", "SubjectUserName", "WORKSTATION5$", "SubjectDomainName", "THESHIRE", "SubjectLogonId", "0x3e7",
		"TargetUserSid", sid, "TargetUserName", "wardog", "TargetDomainName", "THESHIRE", "TargetLogonId", "0x2990d17",
		"LogonType", "3", "LogonProcessName", "Kerberos", "AuthenticationPackageName", "Kerberos", "WorkstationName", "-",
		"LogonGuid", "{00000000-0000-0000-0000-000000000000}", "ProcessId", "0x0", "ProcessName", "-", "IpAddress", "172.18.39.5",
		"IpPort", "56610", "ImpersonationLevel", "%%1833", "ElevatedToken", "%%1842")}
	sysmon1 := testEvent{channel: chanSysmon, provider: "Microsoft-Windows-Sysmon", id: 1, data: pairs(
		"RuleName", "-", "UtcTime", "2020-10-21 04:19:04.410", "ProcessGuid", "{39e4a257-b6b8-5f8f-710c-000000000700}",
		"ProcessId", "10188", "Image", `C:\Windows\System32\netsh.exe`, "FileVersion", "10.0.18362.1 (WinBuild.160101.0800)",
		"Description", "Network Command Shell", "Product", "Microsoft Windows Operating System", "Company", "Microsoft Corporation",
		"OriginalFileName", "netsh.exe", "CommandLine", `netsh advfirewall firewall add rule name="x" dir=in localport=450`,
		"CurrentDirectory", `C:\Users\wardog\`, "User", `WORKSTATION5\wardog`, "LogonGuid", "{39e4a257-f1ac-5f8b-d961-0c0000000000}",
		"LogonId", "0xc61d9", "TerminalSessionId", "2", "IntegrityLevel", "High",
		"Hashes", "SHA1=E7A3B17F625283E3064D91A988D0B1694BA3E9B8,MD5=79CBBF946E797103BED792740AEBFEC1",
		"ParentProcessGuid", "{39e4a257-b6a7-5f8f-6f0c-000000000700}", "ParentProcessId", "4160", "ParentImage", `C:\Windows\System32\cmd.exe`)}
	sysmon10 := sysmon1
	sysmon10.id = 10
	out5156 := secEvent(5156, "ProcessID", "3304", "Application", `\device\harddiskvolume2\windowsazure\guestagent\waappagent.exe`,
		"Direction", "%%14593", "SourceAddress", "192.168.2.5", "SourcePort", "65353", "DestAddress", "168.63.129.16", "DestPort", "80",
		"Protocol", "6", "FilterRTID", "69895", "LayerName", "%%14611", "LayerRTID", "48", "RemoteUserID", "S-1-0-0", "RemoteMachineID", "S-1-0-0")
	in5156 := withData(out5156, "Direction", "%%14592")
	bind := secEvent(5158, "ProcessId", "3304", "Application", `\device\harddiskvolume2\windowsazure\guestagent\waappagent.exe`,
		"SourceAddress", "0.0.0.0", "SourcePort", "65353", "Protocol", "6", "FilterRTID", "0", "LayerName", "%%14608", "LayerRTID", "36")
	listen := withData(bind, "LayerName", "%%14609")
	listen.id = 5154
	sysmon3 := testEvent{channel: chanSysmon, provider: "Microsoft-Windows-Sysmon", id: 3, data: pairs(
		"RuleName", "-", "UtcTime", "2020-09-20 16:16:56.010", "ProcessGuid", "{d273d0f0-e867-5f64-1200-000000000800}", "ProcessId", "292",
		"Image", `C:\Windows\System32\svchost.exe`, "User", `NT AUTHORITY\NETWORK SERVICE`, "Protocol", "tcp", "Initiated", "true",
		"SourceIsIpv6", "false", "SourceIp", "172.18.39.5", "SourceHostname", "-", "SourcePort", "57638", "SourcePortName", "-",
		"DestinationIsIpv6", "false", "DestinationIp", "172.18.39.102", "DestinationHostname", "-", "DestinationPort", "5985", "DestinationPortName", "-")}
	filter := secEvent(5447, "ProcessId", "2948", "UserSid", "S-1-5-19", "UserName", `NT AUTHORITY\LOCAL SERVICE`,
		"ProviderKey", "{decc16ca-3f33-4346-be1e-8fb4ae0f3d62}", "ProviderName", "Microsoft Corporation", "ChangeType", "%%16384",
		"FilterKey", "{b50f244f-e656-44f6-8e24-0790228fd67d}", "FilterName", "atomic testing", "FilterType", "%%16388", "FilterId", "75143",
		"LayerKey", "{88bb5dad-76d7-4227-9c71-df0a3ed7be7e}", "LayerName", "ALE Listen v4 Layer", "LayerId", "40", "Weight", "10376293542535364352",
		"Conditions", portCond+protoCond, "Action", "%%16390", "CalloutKey", "{00000000-0000-0000-0000-000000000000}", "CalloutName", "-")
	rule := secEvent(4946, "ProfileChanged", "All", "RuleId", "{F7259D6F-D580-4DF1-8371-60520B42164D}", "RuleName", "atomic testing")
	svc := testEvent{channel: "System", provider: "Service Control Manager", id: 7036, data: pairs("param1", "Windows Update", "param2", "running")}
	if !relevantOnly {
		add(25, proc)
		add(15, logon)
		add(12, sysmon1)
		add(8, sysmon10)
		add(25, out5156)
	}
	add(5, bind)
	add(3, in5156)
	add(2, sysmon3)
	add(2, filter)
	add(1, rule)
	add(1, fwEvent(2004, ruleData...))
	add(1, listen)
	add(1, svc)
	for i := range out {
		out[i].computer = fmt.Sprintf("WS%02d.corp.example", i%7)
		out[i].time = tTest.Add(time.Duration(i) * time.Millisecond)
		out[i].record = uint64(i + 1)
	}
	return out
}

func withData(e testEvent, k, v string) testEvent {
	e.data = append([]field(nil), e.data...)
	for i := range e.data {
		if e.data[i].name == k {
			e.data[i].value = v
		}
	}
	return e
}

func benchFormat(b *testing.B, relevantOnly bool, render func(testEvent, int) string) {
	evs := benchMix(relevantOnly)
	payloads := make([][]byte, len(evs))
	var size int
	for i, e := range evs {
		payloads[i] = []byte(render(e, i))
		size += len(payloads[i])
	}
	b.SetBytes(int64(size / len(payloads)))
	b.ReportAllocs()
	var d *Decoder
	b.ResetTimer()
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		k := i % len(payloads)
		if k == 0 {
			d = NewDecoder(Options{}) // fresh state: no record is a duplicate
		}
		d.Decode(payloads[k])
	}
	cpu := processCPU() - cpu0
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	if cpu > 0 {
		// CPU time includes the garbage collector's work on other threads.
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "events/cpu-s")
	}
}

var benchFormats = []struct {
	name   string
	render func(testEvent, int) string
}{
	// WEF forwards RenderedText for many subscriptions: half the XML
	// events carry RenderingInfo.
	{"xml", func(e testEvent, i int) string { return renderXML(e, i%2 == 0) }},
	{"winlogbeat_ecs", func(e testEvent, i int) string { return renderECS(e, i%2 == 0) }},
	{"winlogbeat6", func(e testEvent, _ int) string { return renderWLB6(e) }},
	{"nxlog", func(e testEvent, _ int) string { return renderNXLog(e, time.UTC) }},
}

func BenchmarkDecodeMix(b *testing.B) {
	for _, f := range benchFormats {
		b.Run(f.name, func(b *testing.B) { benchFormat(b, false, f.render) })
	}
}

func BenchmarkDecodeRelevant(b *testing.B) {
	for _, f := range benchFormats {
		b.Run(f.name, func(b *testing.B) { benchFormat(b, true, f.render) })
	}
}

// BenchmarkXMLParser compares the fast Event XML scanner with the
// encoding/xml path it falls back to, on one relevant 2004 event with
// RenderingInfo.
func BenchmarkXMLParser(b *testing.B) {
	ev := []byte(renderXML(fwEvent(2004, ruleData...), true))
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(ev)))
		for i := 0; i < b.N; i++ {
			if _, ok := fastXMLEvent(ev); !ok {
				b.Fatal("fast path declined")
			}
		}
	})
	b.Run("encoding_xml", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(ev)))
		for i := 0; i < b.N; i++ {
			if _, _, err := parseXMLEventStd(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}
