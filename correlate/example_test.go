package correlate_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/knockwatch/knockwatch/correlate"
)

// A knock, a firewall rule opening 22 on WS01 that arrives late (after the
// handshake), and the knocker's first handshake: one high alert.
func Example() {
	inv, err := correlate.ParseHosts(strings.NewReader("10.0.0.5 ws01.corp.example\n"))
	if err != nil {
		panic(err)
	}
	emit := correlate.EmitterFunc(func(a correlate.Alert) {
		line, _ := json.Marshal(a)
		var m struct {
			Event      struct{ ID, Action string }
			Knockwatch struct {
				Confidence string
				Knock      struct{ Ports []uint16 }
			}
		}
		_ = json.Unmarshal(line, &m)
		fmt.Println(m.Event.Action, m.Knockwatch.Confidence, m.Knockwatch.Knock.Ports)
	})
	e, err := correlate.New(correlate.DefaultConfig(), emit, correlate.WithInventory(inv))
	if err != nil {
		panic(err)
	}
	src, dst := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("10.0.0.5")
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	_ = e.AddKnock(correlate.Knock{Src: src, Dst: dst, Touches: []correlate.Touch{
		{Port: 7000, Time: t0, Kind: correlate.TouchREJ},
		{Port: 8000, Time: t0.Add(time.Second), Kind: correlate.TouchREJ},
		{Port: 9000, Time: t0.Add(2 * time.Second), Kind: correlate.TouchS0},
	}})
	ack := t0.Add(40 * time.Second)
	_ = e.AddHandshake(correlate.Handshake{Src: src, Dst: dst, SrcPort: 50000, Port: 22,
		SYN: ack.Add(-2 * time.Millisecond), SYNACK: ack.Add(-time.Millisecond), ACK: ack})
	_ = e.AddChange(correlate.ExposureChange{
		Time: t0.Add(10 * time.Second), Host: "WS01", Kind: correlate.ChangeRuleAdded,
		Ports: correlate.Ports(22), Protocol: correlate.ProtocolTCP, Direction: correlate.DirectionInbound,
		Action: correlate.ActionAllow, Active: correlate.TriTrue, RuleName: "updater",
		EventID: 2004, Channel: "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall", RecordID: 17,
	})
	fmt.Println("high alerts:", e.Stats().AlertsHigh)
	// Output:
	// created high [7000 8000 9000]
	// high alerts: 1
}
