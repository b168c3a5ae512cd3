package pipeline

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents"
)

func TestKnockAndHandshakeFromLoader(t *testing.T) {
	at := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	k := KnockFromLoader(&sensor.Knock{
		Src: attacker, Dst: host, Distinct: 4,
		Touches: []sensor.Touch{{Port: 1, Time: at, Kind: sensor.TouchREJ}, {Port: 2, Time: at.Add(time.Second), Kind: sensor.TouchS0}, {Port: 3, Time: at, Kind: 9}},
	})
	want := correlate.Knock{Src: attacker, Dst: host, DistinctClosed: 4, Touches: []correlate.Touch{
		{Port: 1, Time: at, Kind: correlate.TouchREJ}, {Port: 2, Time: at.Add(time.Second), Kind: correlate.TouchS0}, {Port: 3, Time: at, Kind: 0},
	}}
	if !reflect.DeepEqual(k, want) {
		t.Fatalf("knock = %+v, want %+v", k, want)
	}
	h := HandshakeFromLoader(&sensor.Handshake{
		Src: attacker, Dst: host, SrcPort: 5, Port: 6, SYN: at, SYNACK: at.Add(1), ACK: at.Add(2),
		PortLastClosed: at.Add(-3), PortLastOpen: at.Add(-4), Distinct: 7,
	})
	wantH := correlate.Handshake{Src: attacker, Dst: host, SrcPort: 5, Port: 6, SYN: at, SYNACK: at.Add(1), ACK: at.Add(2),
		PortLastClosed: at.Add(-3), PortLastOpen: at.Add(-4), DistinctClosed: 7}
	if h != wantH {
		t.Fatalf("handshake = %+v, want %+v", h, wantH)
	}
}

func TestChangeFromWinevents(t *testing.T) {
	at := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	fw := winevents.SourceRef{Format: winevents.FormatXML, Channel: "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall", EventID: 2004, RecordID: 77, Time: at}
	sec4946 := winevents.SourceRef{Format: winevents.FormatECS, Channel: "Security", EventID: 4946, RecordID: 78, Time: at}
	ports, _ := winevents.ParsePortSet("80,443,5000-5010,RPC,Teredo")
	full := winevents.ExposureChange{
		Time: at, Host: "WS01", HostIPs: []netip.Addr{host}, Kind: winevents.KindRuleAdded, Ports: ports,
		Protocol: winevents.ProtoTCP, Direction: winevents.DirIn, Action: winevents.ActionAllow, Active: true,
		RuleID: "{R}", RuleName: "open", Application: `C:\x.exe`, Service: "svc", ProcessID: 42,
		ModifyingUser: "S-1-5-21-1", ModifyingApplication: `C:\Windows\System32\netsh.exe`, Source: fw,
	}
	wantPorts := correlate.PortSet{Ranges: []correlate.PortRange{{Lo: 80, Hi: 80}, {Lo: 443, Hi: 443}, {Lo: 5000, Hi: 5010}}}
	for _, r := range ports.Ranges[3:] { // RPC's fixed range, kept after the numbers
		wantPorts.Ranges = append(wantPorts.Ranges, correlate.PortRange{Lo: r.Lo, Hi: r.Hi})
	}
	tests := []struct {
		name   string
		in     winevents.ExposureChange
		mutate func(*winevents.ExposureChange)
		want   func(*correlate.ExposureChange)
		skip   string
	}{
		{name: "every field", in: full, want: func(c *correlate.ExposureChange) {}},
		{name: "modified outbound block", in: full, mutate: func(c *winevents.ExposureChange) {
			c.Kind, c.Direction, c.Action = winevents.KindRuleModified, winevents.DirOut, winevents.ActionBlock
		}, want: func(c *correlate.ExposureChange) {
			c.Kind, c.Direction, c.Action = correlate.ChangeRuleModified, correlate.DirectionOutbound, correlate.ActionBlock
		}},
		{name: "enabled any port any protocol", in: full, mutate: func(c *winevents.ExposureChange) {
			c.Kind, c.Ports, c.Protocol = winevents.KindRuleEnabled, winevents.AnyPorts(), winevents.ProtoAny
		}, want: func(c *correlate.ExposureChange) {
			c.Kind, c.Ports, c.Protocol = correlate.ChangeRuleEnabled, correlate.AnyPort, correlate.ProtocolAny
		}},
		{name: "added inactive", in: full, mutate: func(c *winevents.ExposureChange) { c.Active = false },
			want: func(c *correlate.ExposureChange) { c.Active = correlate.TriFalse }},
		{name: "4946 alone: active not reported, no port", in: full, mutate: func(c *winevents.ExposureChange) {
			c.Active, c.Source, c.Ports, c.Direction, c.Action, c.Protocol = false, sec4946, winevents.PortSet{}, "", "", 0
		}, want: func(c *correlate.ExposureChange) {
			c.Active, c.Ports, c.Direction, c.Action, c.Protocol = correlate.TriUnknown, correlate.PortSet{}, 0, 0, 0
			c.EventID, c.Channel, c.RecordID = 4946, "Security", 78
		}},
		{name: "only run-time keywords: no port known", in: full, mutate: func(c *winevents.ExposureChange) {
			c.Ports, _ = winevents.ParsePortSet("Teredo")
		}, want: func(c *correlate.ExposureChange) { c.Ports = correlate.PortSet{} }},
		{name: "deleted", in: full, mutate: func(c *winevents.ExposureChange) { c.Kind = winevents.KindRuleDeleted },
			want: func(c *correlate.ExposureChange) { c.Kind, c.Active = correlate.ChangeRuleDeleted, correlate.TriFalse }},
		{name: "listener bound to a host address", in: full, mutate: func(c *winevents.ExposureChange) {
			c.Kind, c.Layer, c.LocalAddress, c.HostIPs = winevents.KindListener, "listen", netip.MustParseAddr("10.0.0.9"), nil
		}, want: func(c *correlate.ExposureChange) {
			c.Kind, c.HostIPs = correlate.ChangeListener, []netip.Addr{netip.MustParseAddr("10.0.0.9")}
		}},
		{name: "listener on the wildcard address", in: full, mutate: func(c *winevents.ExposureChange) {
			c.Kind, c.Layer, c.LocalAddress = winevents.KindListener, "listen", netip.IPv6Unspecified()
		}, want: func(c *correlate.ExposureChange) { c.Kind = correlate.ChangeListener }},
		{name: "firewall disabled", in: full, mutate: func(c *winevents.ExposureChange) { c.Kind = winevents.KindFirewallDisabled },
			want: func(c *correlate.ExposureChange) { c.Kind = correlate.ChangeFirewallDisabled }},
		{name: "service", in: full, mutate: func(c *winevents.ExposureChange) { c.Kind = winevents.KindService },
			want: func(c *correlate.ExposureChange) { c.Kind = correlate.ChangeServiceStarted }},
		{name: "tcp bind only", in: full, mutate: func(c *winevents.ExposureChange) { c.Kind, c.Layer = winevents.KindListener, "bind" }, skip: SkipBindOnly},
		{name: "connection", in: full, mutate: func(c *winevents.ExposureChange) { c.Kind = winevents.KindConnection }, skip: SkipConnection},
		{name: "appx churn", in: full, mutate: func(c *winevents.ExposureChange) { c.WindowsManaged, c.AppPackageRule = true, true }, skip: SkipAppPackage},
		{name: "unknown kind", in: full, mutate: func(c *winevents.ExposureChange) { c.Kind = "future" }, skip: SkipUnknownKind},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			if tc.mutate != nil {
				tc.mutate(&in)
			}
			got, ok, skip := ChangeFromWinevents(&in)
			if tc.skip != "" {
				if ok || skip != tc.skip {
					t.Fatalf("got ok=%v skip=%q, want skip %q", ok, skip, tc.skip)
				}
				return
			}
			want := correlate.ExposureChange{
				Time: at, Host: "WS01", HostIPs: []netip.Addr{host}, Kind: correlate.ChangeRuleAdded, Ports: wantPorts,
				Protocol: correlate.ProtocolTCP, Direction: correlate.DirectionInbound, Action: correlate.ActionAllow,
				Active: correlate.TriTrue, RuleID: "{R}", RuleName: "open", Application: `C:\x.exe`, Service: "svc",
				ProcessID: 42, ModifyingUser: "S-1-5-21-1", ModifyingApplication: `C:\Windows\System32\netsh.exe`,
				EventID: 2004, Channel: fw.Channel, RecordID: 77,
			}
			tc.want(&want)
			if !ok || !reflect.DeepEqual(got, want) {
				t.Fatalf("got ok=%v skip=%q\n%+v\nwant\n%+v", ok, skip, got, want)
			}
		})
	}
}
