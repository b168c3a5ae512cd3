package replay

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/knockwatch/knockwatch/internal/testsupport/pkt"
)

// The coverage cases (issue 15): host clocks measured from connections
// both the sensor and the host saw, and blind spots. Their expectations
// are written by hand from what each capture and events file hold.

// wantCoverage is what a case expects of `knockwatch replay --coverage`.
type wantCoverage struct {
	// Findings must be reported (kind, and the host or the interface:
	// "" for the sensor's whole capture, else the capture file's name).
	Findings []wantFinding `json:"findings"`
	// Absent are finding kinds that must not be reported.
	Absent []string `json:"absent,omitempty"`
	// Clocks are hosts whose clock must be measured: offset (host minus
	// sensor, seconds) within a second; AlertApplied: every alert carries
	// knockwatch.clock with the correction applied.
	Clocks []wantClock `json:"clocks,omitempty"`
	// HostStates are the states hosts must be in.
	HostStates map[string]string `json:"host_states,omitempty"`
	// Sensor is the sensor-wide path state.
	Sensor string `json:"sensor,omitempty"`
	// EngineKnocks is the most knocks the correlation engine may have
	// taken; KnocksHeld the fewest held for a blind path (no flood of
	// the engine's state).
	EngineKnocks *int `json:"max_engine_knocks,omitempty"`
	KnocksHeld   int  `json:"min_knocks_held,omitempty"`
}

type wantFinding struct {
	Kind      string `json:"kind"`
	Host      string `json:"host,omitempty"`
	Interface string `json:"interface,omitempty"`
}

type wantClock struct {
	Host         string  `json:"host"`
	Offset       float64 `json:"offset_seconds"`
	AlertApplied bool    `json:"alert_applied"`
}

// sessionFrom is a complete connection from sport: handshake, a request,
// the FIN exchange (the server's side included).
func (f flow) sessionFrom(at time.Duration, sport, port uint16) []frame {
	s, srv := 0x2a000000+uint32(sport)*7919, 0x61000000+uint32(sport)*104723
	ms := time.Millisecond
	data := f.pk(sport, port, pkt.ACK|pkt.PSH, s+1, srv+1, false)
	data.Payload = []byte("\x00\x00\x00\x2fSMB request")
	return []frame{
		{at, f.pk(sport, port, pkt.SYN, s, 0, false)},
		{at + ms, f.pk(sport, port, pkt.SYN|pkt.ACK, srv, s+1, true)},
		{at + 2*ms, f.pk(sport, port, pkt.ACK, s+1, srv+1, false)},
		{at + 3*ms, data},
		{at + 40*ms, f.pk(sport, port, pkt.FIN|pkt.ACK, s+1+uint32(len(data.Payload)), srv+1, false)},
		{at + 41*ms, f.pk(sport, port, pkt.FIN|pkt.ACK, srv+1, s+2+uint32(len(data.Payload)), true)},
		{at + 42*ms, f.pk(sport, port, pkt.ACK, s+2+uint32(len(data.Payload)), srv+2, false)},
	}
}

// probe is a monitoring system's half-open check of an open port: SYN,
// the server's SYN-ACK, the prober's bare RST.
func (f flow) probe(at time.Duration, sport, port uint16) []frame {
	s, srv := 0x3b000000+uint32(sport)*7919, 0x72000000+uint32(sport)*104723
	return []frame{
		{at, f.pk(sport, port, pkt.SYN, s, 0, false)},
		{at + time.Millisecond, f.pk(sport, port, pkt.SYN|pkt.ACK, srv, s+1, true)},
		{at + 2*time.Millisecond, f.pk(sport, port, pkt.RST, s+1, 0, false)},
	}
}

// clientSide keeps the frames a capture of the client-to-server direction
// alone holds.
func clientSide(fs []frame, servers ...netip.Addr) []frame {
	var out []frame
	for _, f := range fs {
		keep := true
		for _, s := range servers {
			if f.p.Src == s {
				keep = false
			}
		}
		if keep {
			out = append(out, f)
		}
	}
	return out
}

// wfpConnXML is a Security 5156 (the Windows Filtering Platform permitted
// a connection) for an inbound TCP connection, as `wevtutil qe /f:xml`
// prints it: Source is the local side for inbound on current Windows.
func wfpConnXML(host string, at time.Time, record int, local netip.Addr, lport uint16, remote netip.Addr, rport uint16) string {
	return fmt.Sprintf(`<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><Provider Name="Microsoft-Windows-Security-Auditing" Guid="{54849625-5478-4994-a5ba-3e3b0328c30d}"/><EventID>5156</EventID><Version>1</Version><Level>0</Level><Task>12810</Task><Opcode>0</Opcode><Keywords>0x8020000000000000</Keywords><TimeCreated SystemTime="%s"/><EventRecordID>%d</EventRecordID><Correlation/><Execution ProcessID="4" ThreadID="5128"/><Channel>Security</Channel><Computer>%s</Computer><Security/></System><EventData><Data Name="ProcessID">4</Data><Data Name="Application">System</Data><Data Name="Direction">%%%%14592</Data><Data Name="SourceAddress">%s</Data><Data Name="SourcePort">%d</Data><Data Name="DestAddress">%s</Data><Data Name="DestPort">%d</Data><Data Name="Protocol">6</Data><Data Name="FilterRTID">67281</Data><Data Name="LayerName">%%%%14610</Data><Data Name="LayerRTID">44</Data><Data Name="RemoteUserID">S-1-0-0</Data><Data Name="RemoteMachineID">S-1-0-0</Data></EventData></Event>`,
		at.UTC().Format("2006-01-02T15:04:05.0000000Z"), record, host, local, lport, remote, rport)
}

// sysmon3JSON is a Sysmon event 3 (network connection, Initiated=false:
// inbound) as Winlogbeat 8 (ECS) writes it. Sysmon writes network events
// late: @timestamp is the record's time, UtcTime the connection's.
func sysmon3JSON(host string, utc, written time.Time, record int, local netip.Addr, lport uint16, remote netip.Addr, rport uint16) string {
	m := map[string]any{
		"@timestamp": written.UTC().Format("2006-01-02T15:04:05.000Z"),
		"event":      map[string]any{"code": "3", "kind": "event", "provider": "Microsoft-Windows-Sysmon", "module": "sysmon"},
		"host":       map[string]any{"name": "wec01.corp.example"},
		"agent":      map[string]any{"type": "winlogbeat", "version": "8.11.0"},
		"winlog": map[string]any{
			"channel": "Microsoft-Windows-Sysmon/Operational", "event_id": "3", "computer_name": host,
			"provider_name": "Microsoft-Windows-Sysmon", "record_id": fmt.Sprint(record),
			"event_data": map[string]any{
				"RuleName": "-", "UtcTime": utc.UTC().Format("2006-01-02 15:04:05.000"),
				"ProcessGuid": "{6b1c1f2a-0001-0000-0000-000000000000}", "ProcessId": "4", "Image": "System",
				"User": "NT AUTHORITY\\SYSTEM", "Protocol": "tcp", "Initiated": "false",
				"SourceIsIpv6": "false", "SourceIp": remote.String(), "SourceHostname": "-", "SourcePort": fmt.Sprint(rport),
				"SourcePortName": "-", "DestinationIsIpv6": "false", "DestinationIp": local.String(),
				"DestinationHostname": host, "DestinationPort": fmt.Sprint(lport), "DestinationPortName": "microsoft-ds",
			},
		},
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// coverageCases are the issue-15 cases.
func coverageCases() []corpusCase {
	s := time.Second
	a := flow{src: attacker, dst: ws01}
	clients := []netip.Addr{netip.MustParseAddr("10.0.0.40"), netip.MustParseAddr("10.0.0.41"), netip.MustParseAddr("10.0.0.42")}
	knock := frames(a.rej(0, 7000), a.rej(s, 8000), a.rej(2*s, 9000))
	intPtr := func(n int) *int { return &n }

	// A file server's morning: three clients open sessions to WS01:445,
	// each at its own pace (every 9.1, 11.3 and 13.7 s), from 170 s
	// before the knock to 60 s after; with each, the host's audit log
	// gets a 5156 (or Sysmon 3).
	type sess struct {
		c     netip.Addr
		sport uint16
		at    time.Duration
	}
	var sessions []sess
	for j, c := range clients {
		every := []time.Duration{9100, 11300, 13700}[j] * time.Millisecond
		for i, at := 0, -170*s+time.Duration(j)*1700*time.Millisecond; at < 60*s; i, at = i+1, at+every {
			sessions = append(sessions, sess{c, uint16(51000 + j*100 + i), at})
		}
	}
	var busy []frame
	for _, x := range sessions {
		busy = append(busy, flow{src: x.c, dst: ws01}.sessionFrom(x.at, x.sport, 445)...)
	}
	attackSession := sess{attacker, 49990, 25 * s}
	attackConnect := a.sessionFrom(attackSession.at, attackSession.sport, 4444)

	// The host's events on its own clock (offset: host minus sensor).
	wfp := func(off time.Duration) []string {
		var out []string
		for i, x := range append(append([]sess(nil), sessions...), attackSession) {
			port := uint16(445)
			if x.c == attacker {
				port = 4444
			}
			// Written as the SYN arrives, a fraction of a millisecond
			// after the tap saw it.
			out = append(out, wfpConnXML("WS01.corp.example", ct0.Add(x.at+300*time.Microsecond+off), 500000+i,
				ws01, port, x.c, x.sport))
		}
		return out
	}
	open4444 := func(off time.Duration, rec int) string {
		return eventXML(fwEvent{id: 2004, at: 12*s + off, host: "WS01.corp.example", record: rec, rule: "Remote Support 4444",
			port: "4444", direction: 1, action: 3})
	}
	high := wantAlert{Source: attacker.String(), Dest: ws01.String(), Port: 4444, Confidence: "high"}

	// The one-way capture: the same kind of day, seen through a tap
	// whose server-to-client port is not attached. Monitoring systems
	// check three open ports half-open every 10 s (SYN, SYN-ACK, RST):
	// seen one way, every check is an unanswered touch, and every
	// monitor "knocks".
	monitors := []netip.Addr{netip.MustParseAddr("10.0.0.50"), netip.MustParseAddr("10.0.0.51"),
		netip.MustParseAddr("10.0.0.52"), netip.MustParseAddr("10.0.0.53")}
	var oneWay []frame
	for i := 0; i < 40; i++ {
		// The clients: six sessions every 5 s, from 120 s before.
		for j := 0; j < 6; j++ {
			c := netip.AddrFrom4([4]byte{10, 0, 0, byte(40 + j)})
			at := time.Duration(i*5-120)*s + time.Duration(j)*800*time.Millisecond
			oneWay = append(oneWay, flow{src: c, dst: ws01}.sessionFrom(at, uint16(52000+i*6+j), 445)...)
		}
	}
	for i := 0; i < 12; i++ {
		// The monitors, from 80 s before.
		for j, m := range monitors {
			f := flow{src: m, dst: ws01}
			at := time.Duration(i*10-80)*s + time.Duration(j)*700*time.Millisecond
			for k, port := range []uint16{3389, 5985, 8080} {
				oneWay = append(oneWay, f.probe(at+time.Duration(k)*200*time.Millisecond, uint16(40000+i*16+j*4+k), port)...)
			}
		}
	}
	// An administrator opens 8443 (a benign 2004 at 12 s) and the first
	// monitor starts checking it at 25 s with a full connection.
	mon := flow{src: monitors[0], dst: ws01}
	oneWay = append(oneWay, mon.sessionFrom(25*s, 44443, 8443)...)
	oneWay = clientSide(frames(oneWay), ws01)

	// WS02 takes traffic (the clients use its file shares) and sends no
	// event at all; WS01 forwards its firewall events.
	b2 := flow{src: attacker, dst: ws02}
	var ws02Busy []frame
	for i := 0; i < 18; i++ {
		for j, c := range clients {
			at := time.Duration(i*10-120)*s + time.Duration(j)*3300*time.Millisecond
			ws02Busy = append(ws02Busy, flow{src: c, dst: ws02}.sessionFrom(at, uint16(53000+i*3+j), 445)...)
		}
	}

	// Sysmon 3 through Winlogbeat: WS01's clock 75 s ahead; Sysmon
	// writes each record 20 s after the connection.
	var sysmon []string
	for i, x := range append(append([]sess(nil), sessions...), attackSession) {
		port := uint16(445)
		if x.c == attacker {
			port = 4444
		}
		utc := ct0.Add(x.at + 2*time.Millisecond + 75*s) // established: the client's ACK
		sysmon = append(sysmon, sysmon3JSON("WS01.corp.example", utc, utc.Add(20*s), 710000+i, ws01, port, x.c, x.sport))
	}

	return []corpusCase{
		{name: "pos_clock_90s_behind", format: fmtPcap,
			about: "WS01's clock is 90 s behind the sensor: its 2004 opening 4444 says 12 s before the knock's end plus 90 s, far beyond " +
				"rule.skew; its Security 5156 events (Event XML) log the file-share sessions the capture holds, which measure the offset, " +
				"so the change meets the knock and the knocker's first connection alerts high",
			frames: frames(busy, knock, attackConnect),
			events: append(wfp(-90*s), open4444(-90*s, 90101)),
			want:   []wantAlert{high},
			cov: &wantCoverage{
				Findings:   []wantFinding{{Kind: "clock_offset", Host: "WS01.corp.example"}},
				Absent:     []string{"clock_unverified", "one_way", "host_no_events"},
				Clocks:     []wantClock{{Host: "WS01.corp.example", Offset: -90, AlertApplied: true}},
				HostStates: map[string]string{"ws01.corp.example": "covered"},
			}},
		{name: "neg_clock_90s_unverified", format: fmtPcap,
			about: "the same traffic and the same 2004 from a clock 90 s behind, but WS01 sends no connection events: nothing measures " +
				"its clock, the change stays 90 s off the knock, no alert; coverage says the clock is unverified and how to fix it",
			frames: frames(busy, knock, attackConnect),
			events: []string{open4444(-90*s, 90102)},
			cov: &wantCoverage{
				Findings:   []wantFinding{{Kind: "clock_unverified", Host: "WS01.corp.example"}},
				Absent:     []string{"clock_offset"},
				HostStates: map[string]string{"ws01.corp.example": "clock_unverified"},
			}},
		{name: "pos_clock_sysmon_winlogbeat", format: fmtPcap,
			about: "WS01's clock is 75 s ahead; its connections come as Sysmon event 3 (Initiated=false) in Winlogbeat 8 JSON, each written " +
				"20 s after the connection (UtcTime is the connection's time): the offset is measured from UtcTime, the 2004 " +
				"(Event XML) is corrected, high alert",
			frames:     frames(busy, knock, attackConnect),
			events:     []string{open4444(75*s, 90103)},
			jsonEvents: sysmon,
			want:       []wantAlert{high},
			cov: &wantCoverage{
				Findings: []wantFinding{{Kind: "clock_offset", Host: "WS01.corp.example"}},
				Clocks:   []wantClock{{Host: "WS01.corp.example", Offset: 75, AlertApplied: true}},
			}},
		{name: "neg_one_way_capture", format: fmtPcap,
			about: "a tap whose server-to-client port is missing: only the clients' packets. Four monitors check three open ports of WS01 " +
				"half-open every 10 s; seen one way each check is an unanswered touch, so every monitor looks like a knocker, and after a " +
				"benign 2004 opens 8443 a monitor connects to it. Coverage finds the capture one way; the monitors' knocks are held, " +
				"not alerted, and do not reach the engine",
			frames: oneWay,
			events: []string{eventXML(fwEvent{id: 2004, at: 12 * s, host: "WS01.corp.example", record: 90104, rule: "Web admin 8443",
				port: "8443", direction: 1, action: 3})},
			cov: &wantCoverage{
				Findings:     []wantFinding{{Kind: "one_way", Interface: "capture.pcap"}},
				Sensor:       "one_way",
				EngineKnocks: intPtr(0),
				KnocksHeld:   4,
			}},
		{name: "neg_host_without_events", format: fmtPcap,
			about: "WS02 (in the inventory) takes traffic all along, is knocked and connected to, but not one of its events arrives " +
				"(only WS01's): no alert is possible, and coverage says WS02 is host-side blind and what to forward",
			frames: frames(ws02Busy, b2.rej(0, 7000), b2.rej(s, 8000), b2.rej(2*s, 9000), b2.sessionFrom(25*s, 49991, 4444)),
			events: []string{eventXML(fwEvent{id: 2004, at: 12 * s, host: "WS01.corp.example", record: 90105, rule: "Remote Support 4444",
				port: "4444", direction: 1, action: 3})},
			cov: &wantCoverage{
				Findings:   []wantFinding{{Kind: "host_no_events", Host: "ws02.corp.example"}, {Kind: "clock_unverified", Host: "WS01.corp.example"}},
				Absent:     []string{"one_way"},
				HostStates: map[string]string{"ws02.corp.example": "host_blind", "ws03.corp.example": "unseen"},
			}},
	}
}
