package intake

import (
	"reflect"
	"testing"
	"time"
)

func TestParseSyslog(t *testing.T) {
	now := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	ev := `{"winlog":{"event_id":2004}}`
	xml := `<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><EventID>2004</EventID></System></Event>`
	cases := []struct {
		name, in string
		want     SyslogMessage
		err      bool
	}{
		{name: "rfc5424 full", in: `<134>1 2026-01-02T09:59:58.123456Z wec01.corp.example NXLog 4242 fw [origin ip="10.0.0.5"][meta x="a \"quoted\" ]"] ` + ev,
			want: SyslogMessage{Format: SyslogRFC5424, Facility: 16, Severity: 6, Timestamp: time.Date(2026, 1, 2, 9, 59, 58, 123456000, time.UTC),
				Hostname: "wec01.corp.example", AppName: "NXLog", ProcID: "4242", MsgID: "fw",
				StructuredData: `[origin ip="10.0.0.5"][meta x="a \"quoted\" ]"]`, Msg: []byte(ev)}},
		{name: "rfc5424 nil values and BOM", in: "<13>1 - - - - - - \xEF\xBB\xBF" + xml,
			want: SyslogMessage{Format: SyslogRFC5424, Facility: 1, Severity: 5, Msg: []byte(xml)}},
		{name: "rfc5424 offset time", in: `<14>1 2026-01-02T11:00:00+02:00 host app - - - ` + ev,
			want: SyslogMessage{Format: SyslogRFC5424, Facility: 1, Severity: 6, Timestamp: time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC),
				Hostname: "host", AppName: "app", Msg: []byte(ev)}},
		{name: "rfc5424 without msg", in: `<14>1 2026-01-02T11:00:00Z host app - - -`,
			want: SyslogMessage{Format: SyslogRFC5424, Facility: 1, Severity: 6, Timestamp: time.Date(2026, 1, 2, 11, 0, 0, 0, time.UTC),
				Hostname: "host", AppName: "app"}},
		{name: "rfc5424 logger", in: `<13>1 2026-01-02T09:00:00.5+00:00 box tester - - [timeQuality tzKnown="1" isSynced="0"] ` + ev,
			want: SyslogMessage{Format: SyslogRFC5424, Facility: 1, Severity: 5, Timestamp: time.Date(2026, 1, 2, 9, 0, 0, 500000000, time.UTC),
				Hostname: "box", AppName: "tester", StructuredData: `[timeQuality tzKnown="1" isSynced="0"]`, Msg: []byte(ev)}},
		{name: "rfc5424 bad timestamp kept", in: `<13>1 yesterday host app - - - ` + ev,
			want: SyslogMessage{Format: SyslogRFC5424, Facility: 1, Severity: 5, Hostname: "host", AppName: "app", Msg: []byte(ev)}},
		{name: "rfc5424 truncated header", in: `<13>1 2026-01-02T09:00:00Z host app`, err: true},
		{name: "rfc5424 unterminated SD", in: `<13>1 - host app - - [x a="b" ` + ev, err: true},
		{name: "rfc5424 SD garbage", in: `<13>1 - host app - - x ` + ev, err: true},
		{name: "rfc3164 nxlog", in: `<14>Jan  2 09:59:58 WIN-DC01.corp.example Microsoft-Windows-Security-Auditing[612]: ` + ev,
			want: SyslogMessage{Format: SyslogRFC3164, Facility: 1, Severity: 6, Timestamp: time.Date(2026, 1, 2, 9, 59, 58, 0, time.UTC),
				Hostname: "WIN-DC01.corp.example", AppName: "Microsoft-Windows-Security-Auditing", ProcID: "612", Msg: []byte(ev)}},
		{name: "rfc3164 december is last year", in: `<13>Dec 31 23:59:59 host tag: ` + xml,
			want: SyslogMessage{Format: SyslogRFC3164, Facility: 1, Severity: 5, Timestamp: time.Date(2025, 12, 31, 23, 59, 59, 0, time.UTC),
				Hostname: "host", AppName: "tag", Msg: []byte(xml)}},
		{name: "rfc3164 with year", in: `<13>Jan 02 09:00:00 2026 host tag: ` + ev,
			want: SyslogMessage{Format: SyslogRFC3164, Facility: 1, Severity: 5, Timestamp: time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC),
				Hostname: "host", AppName: "tag", Msg: []byte(ev)}},
		{name: "rfc3164 no hostname", in: `<13>Jan  2 09:00:00 tag: ` + ev,
			want: SyslogMessage{Format: SyslogRFC3164, Facility: 1, Severity: 5, Timestamp: time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC),
				AppName: "tag", Msg: []byte(ev)}},
		{name: "rfc3164 no tag", in: `<13>Jan  2 09:00:00 host ` + xml,
			want: SyslogMessage{Format: SyslogRFC3164, Facility: 1, Severity: 5, Timestamp: time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC),
				Hostname: "host", Msg: []byte(xml)}},
		// rsyslog's default forwarding templates (RSYSLOG_TraditionalForwardFormat,
		// RSYSLOG_ForwardFormat) write an imfile Tag as given: ended by a space.
		{name: "rfc3164 tag ended by a space (rsyslog default)", in: `<134>Dec  5 09:50:44 vm winevt ` + xml,
			want: SyslogMessage{Format: SyslogRFC3164, Facility: 16, Severity: 6, Timestamp: time.Date(2025, 12, 5, 9, 50, 44, 0, time.UTC),
				Hostname: "vm", AppName: "winevt", Msg: []byte(xml)}},
		{name: "rfc3164 tag[pid] ended by a space", in: `<134>Jan  2 09:50:44 vm winevt[123] ` + ev,
			want: SyslogMessage{Format: SyslogRFC3164, Facility: 16, Severity: 6, Timestamp: time.Date(2026, 1, 2, 9, 50, 44, 0, time.UTC),
				Hostname: "vm", AppName: "winevt", ProcID: "123", Msg: []byte(ev)}},
		{name: "rfc3164 rfc3339 stamp, tag ended by a space", in: `<134>2026-01-02T09:50:44.123+01:00 vm.corp winevt ` + ev,
			want: SyslogMessage{Format: SyslogRFC3164, Facility: 16, Severity: 6, Timestamp: time.Date(2026, 1, 2, 8, 50, 44, 123000000, time.UTC),
				Hostname: "vm.corp", AppName: "winevt", Msg: []byte(ev)}},
		{name: "rfc3164 word then text is no tag", in: `<13>Jan  2 09:00:00 host hello world`,
			want: SyslogMessage{Format: SyslogRFC3164, Facility: 1, Severity: 5, Timestamp: time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC),
				Hostname: "host", Msg: []byte("hello world")}},
		{name: "rfc3164 tag without message", in: `<13>Jan  2 09:00:00 host winevt `,
			want: SyslogMessage{Format: SyslogRFC3164, Facility: 1, Severity: 5, Timestamp: time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC),
				Hostname: "host", Msg: []byte("winevt")}},
		{name: "rfc3164 rfc3339 stamp", in: `<13>2026-01-02T09:00:00.25Z host tag[1]: ` + ev,
			want: SyslogMessage{Format: SyslogRFC3164, Facility: 1, Severity: 5, Timestamp: time.Date(2026, 1, 2, 9, 0, 0, 250000000, time.UTC),
				Hostname: "host", AppName: "tag", ProcID: "1", Msg: []byte(ev)}},
		{name: "rfc3164 bare message", in: `<13>` + ev,
			want: SyslogMessage{Format: SyslogRFC3164, Facility: 1, Severity: 5, Msg: []byte(ev)}},
		{name: "raw json", in: "\xEF\xBB\xBF " + ev + "\r",
			want: SyslogMessage{Format: SyslogRaw, Facility: -1, Severity: -1, Msg: []byte(ev)}},
		{name: "raw xml", in: xml, want: SyslogMessage{Format: SyslogRaw, Facility: -1, Severity: -1, Msg: []byte(xml)}},
		{name: "PRI too large", in: `<192>1 - - - - - - x`, err: true},
		{name: "PRI not closed", in: `<13 hello`, err: true},
		{name: "plain text", in: `hello world`, err: true},
		{name: "empty", in: ``, err: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseSyslog([]byte(c.in), now, nil)
			if c.err {
				if err == nil {
					t.Fatalf("no error, got %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.Timestamp.Equal(c.want.Timestamp) {
				t.Errorf("timestamp %v, want %v", got.Timestamp, c.want.Timestamp)
			}
			got.Timestamp, c.want.Timestamp = time.Time{}, time.Time{}
			if string(got.Msg) != string(c.want.Msg) {
				t.Errorf("msg %q, want %q", got.Msg, c.want.Msg)
			}
			got.Msg, c.want.Msg = nil, nil
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestParseSyslogLocation(t *testing.T) {
	loc := time.FixedZone("UTC+8", 8*3600)
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	m, err := ParseSyslog([]byte("<13>Jun  1 07:30:00 host tag: {}"), now, loc)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 5, 31, 23, 30, 0, 0, time.UTC); !m.Timestamp.Equal(want) {
		t.Errorf("got %v, want %v", m.Timestamp.UTC(), want)
	}
	if md := m.meta(); md[MetaTimestamp] != "2026-05-31T23:30:00Z" || md[MetaHostname] != "host" || md[MetaAppName] != "tag" {
		t.Errorf("meta %v", md)
	}
}
