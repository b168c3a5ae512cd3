package winevents

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"strings"
	"time"
)

// testEvent is one Windows event written into each supported format by
// the render functions, so table tests check every format with one table.
type testEvent struct {
	channel  string
	provider string
	id       uint32
	record   uint64
	computer string
	time     time.Time
	data     []field
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// renderXML writes native Event XML; rendering adds a RenderingInfo block.
func renderXML(e testEvent, rendering bool) string {
	var b strings.Builder
	b.WriteString(`<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System>`)
	fmt.Fprintf(&b, `<Provider Name="%s" Guid="{54849625-5478-4994-a5ba-3e3b0328c30d}"/>`, xmlEscape(e.provider))
	fmt.Fprintf(&b, `<EventID>%d</EventID><Version>0</Version><Level>0</Level><Task>12810</Task><Opcode>0</Opcode>`, e.id)
	fmt.Fprintf(&b, `<Keywords>0x8020000000000000</Keywords><TimeCreated SystemTime="%s"/>`, e.time.UTC().Format("2006-01-02T15:04:05.0000000Z"))
	fmt.Fprintf(&b, `<EventRecordID>%d</EventRecordID><Correlation/><Execution ProcessID="4" ThreadID="8"/>`, e.record)
	fmt.Fprintf(&b, `<Channel>%s</Channel><Computer>%s</Computer><Security/></System><EventData>`, xmlEscape(e.channel), xmlEscape(e.computer))
	for _, f := range e.data {
		fmt.Fprintf(&b, `<Data Name="%s">%s</Data>`, xmlEscape(f.name), xmlEscape(f.value))
	}
	b.WriteString(`</EventData>`)
	if rendering {
		b.WriteString(`<RenderingInfo Culture="en-US"><Message>The Windows Filtering Platform has permitted &lt;something&gt;.</Message><Level>Information</Level><Task>Filtering Platform Connection</Task><Keywords><Keyword>Audit Success</Keyword></Keywords></RenderingInfo>`)
	}
	b.WriteString(`</Event>`)
	return b.String()
}

func dataMap(e testEvent) map[string]string {
	m := map[string]string{}
	for _, f := range e.data {
		m[f.name] = f.value
	}
	return m
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// renderECS writes Winlogbeat 7.x/8.x ECS JSON as forwarded from a WEF
// collector (host.* names the collector); idString writes event_id as a
// string, as Winlogbeat 8 does.
func renderECS(e testEvent, idString bool) string {
	var id any = e.id
	if idString {
		id = fmt.Sprint(e.id)
	}
	return mustJSON(map[string]any{
		"@timestamp": e.time.UTC().Format(time.RFC3339Nano),
		"event":      map[string]any{"code": fmt.Sprint(e.id), "kind": "event", "provider": e.provider},
		"host":       map[string]any{"name": "wec01", "ip": []string{"10.9.9.9"}},
		"agent":      map[string]any{"type": "winlogbeat", "version": "8.11.0"},
		"winlog": map[string]any{
			"event_id": id, "channel": e.channel, "computer_name": e.computer, "record_id": e.record,
			"provider_name": e.provider, "event_data": dataMap(e), "api": "wineventlog",
		},
		"message": "rendered message",
	})
}

// renderWLB6 writes pre-ECS Winlogbeat 6.x JSON.
func renderWLB6(e testEvent) string {
	return mustJSON(map[string]any{
		"@timestamp": e.time.UTC().Format(time.RFC3339Nano), "event_id": e.id, "log_name": e.channel,
		"computer_name": e.computer, "record_number": fmt.Sprint(e.record), "source_name": e.provider,
		"event_data": dataMap(e), "beat": map[string]any{"hostname": "WECserver", "name": "WECserver"},
		"host": map[string]any{"name": "WECserver"}, "type": "wineventlog",
	})
}

// renderNXLog writes NXLog im_msvistalog JSON: flat, EventTime in the
// host's local time without zone, whole seconds.
func renderNXLog(e testEvent, loc *time.Location) string {
	m := map[string]any{
		"EventTime": e.time.In(loc).Format("2006-01-02 15:04:05"), "EventReceivedTime": e.time.In(loc).Add(2 * time.Second).Format("2006-01-02 15:04:05"),
		"Hostname": e.computer, "EventID": e.id, "Channel": e.channel, "SourceName": e.provider,
		"RecordNumber": e.record, "SourceModuleType": "im_msvistalog", "host": "wec.example", "Keywords": -9214364837600034816,
	}
	for _, f := range e.data {
		if f.value != "" { // NXLog omits empty fields
			m[f.name] = f.value
		}
	}
	return mustJSON(m)
}
