package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/sensor"
)

const corpus = "../../testdata/replay"

func runReplayArgs(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), append([]string{"replay"}, args...), &out, &errb)
	return out.String(), errb.String(), err
}

func TestReplayCommandAlerts(t *testing.T) {
	dir := filepath.Join(corpus, "pos_rej_knock")
	out, errOut, err := runReplayArgs(t, "--engine", "go", "--pcap", filepath.Join(dir, "capture.pcap"),
		"--events", filepath.Join(dir, "events.xml"), "--hosts", filepath.Join(corpus, "hosts"))
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one alert line, got %d:\n%s", len(lines), out)
	}
	var a struct {
		Rule        struct{ ID string } `json:"rule"`
		Source      struct{ IP string } `json:"source"`
		Destination struct {
			IP   string `json:"ip"`
			Port uint16 `json:"port"`
		} `json:"destination"`
		Timestamp string `json:"@timestamp"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &a); err != nil {
		t.Fatal(err)
	}
	if a.Rule.ID != "AN0842" || a.Source.IP != "198.51.100.7" || a.Destination.IP != "10.0.0.5" || a.Destination.Port != 4444 ||
		!strings.HasPrefix(a.Timestamp, "2026-11-20T14:30:25") {
		t.Fatalf("alert %s", lines[0])
	}
	for _, want := range []string{"engine: go", "packets    30", "touches    3 (REJ 3, S0 0, RSTOS0 0)", "knocks     1",
		"handshakes 1", "changes used 1", "alerts     1 (high 1, medium 0)", "time taken"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("summary lacks %q:\n%s", want, errOut)
		}
	}
}

func TestReplayCommandTable(t *testing.T) {
	dir := filepath.Join(corpus, "pos_split_tap")
	out, errOut, err := runReplayArgs(t, "--engine", "go", "--format", "table",
		"--pcap", filepath.Join(dir, "capture-a.pcap"), "--pcap", filepath.Join(dir, "capture-b.pcap"),
		"--events", filepath.Join(dir, "events.xml"), "--hosts", filepath.Join(corpus, "hosts"))
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, errOut)
	}
	for _, want := range []string{"HIGH", "198.51.100.7 -> 10.0.0.5:4444", "7000 REJ", "rule_added \"Remote Support 4444\"", "SYN-ACK"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestReplayCommandAllowSource(t *testing.T) {
	dir := filepath.Join(corpus, "pos_rej_knock")
	out, errOut, err := runReplayArgs(t, "--engine", "go", "--pcap", filepath.Join(dir, "capture.pcap"),
		"--events", filepath.Join(dir, "events.xml"), "--allow-source", "198.51.100.0/24")
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, errOut)
	}
	if strings.TrimSpace(out) != "" || !strings.Contains(errOut, "knocks     0 (allowlisted 1)") {
		t.Fatalf("allowlisted source alerted:\n%s\n%s", out, errOut)
	}
}

func TestReplayCommandNoAlerts(t *testing.T) {
	dir := filepath.Join(corpus, "neg_other_source_first")
	out, errOut, err := runReplayArgs(t, "--engine", "go", "--pcap", filepath.Join(dir, "capture.pcap"),
		"--events", filepath.Join(dir, "events.xml"), "--hosts", filepath.Join(corpus, "hosts"))
	if err != nil || strings.TrimSpace(out) != "" || !strings.Contains(errOut, "alerts     0") {
		t.Fatalf("err %v\nstdout %s\nstderr %s", err, out, errOut)
	}
}

func TestReplayCommandErrors(t *testing.T) {
	tmp := t.TempDir()
	text := filepath.Join(tmp, "notes.txt")
	os.WriteFile(text, []byte("not a capture at all\n"), 0o644)
	usb := filepath.Join(tmp, "usb.pcap")
	os.WriteFile(usb, []byte{0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 189, 0, 0, 0}, 0o644)
	junkEvents := filepath.Join(tmp, "events.xml")
	os.WriteFile(junkEvents, []byte("hello\n"), 0o644)
	good := filepath.Join(corpus, "pos_rej_knock", "capture.pcap")
	tests := []struct {
		name  string
		args  []string
		usage bool
		want  string
	}{
		{"no pcap", []string{"--events", junkEvents}, true, "no --pcap given"},
		{"bad engine", []string{"--pcap", good, "--engine", "ebpf"}, true, "--engine"},
		{"bad format", []string{"--pcap", good, "--format", "csv"}, true, "--format"},
		{"bad allow", []string{"--pcap", good, "--allow-source", "10.0.0.0/33"}, true, "--allow-source"},
		{"missing capture", []string{"--pcap", filepath.Join(tmp, "nope.pcap")}, false, "nope.pcap"},
		{"not a capture", []string{"--pcap", text}, false, "not a pcap or pcapng file"},
		{"unsupported link type", []string{"--pcap", usb}, false, "link type"},
		{"missing events", []string{"--pcap", good, "--engine", "go", "--events", filepath.Join(tmp, "nope.xml")}, false, "nope.xml"},
		{"unreadable events", []string{"--pcap", good, "--engine", "go", "--events", junkEvents}, false, "events.xml"},
		{"missing hosts", []string{"--pcap", good, "--engine", "go", "--hosts", filepath.Join(tmp, "hosts")}, false, "hosts"},
		{"missing config", []string{"--pcap", good, "--config", filepath.Join(tmp, "kw.yaml")}, false, "kw.yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runReplayArgs(t, tc.args...)
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, errUsage) != tc.usage {
				t.Errorf("usage error %v, want %v: %v", errors.Is(err, errUsage), tc.usage, err)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line naming %q", msg, tc.want)
			}
		})
	}
}

// TestTouchOutput: the line formats of replay --touches, from records made
// by hand.
func TestTouchOutput(t *testing.T) {
	at := time.Date(2026, 11, 20, 14, 30, 21, 123456789, time.UTC)
	recs := []sensor.TouchRecord{
		{Src: netip.MustParseAddr("198.51.100.7"), SrcPort: 40001, Dst: netip.MustParseAddr("10.0.0.5"), Port: 7000, Time: at, Kind: sensor.TouchREJ},
		{Src: netip.MustParseAddr("2001:db8::7"), SrcPort: 40002, Dst: netip.MustParseAddr("2001:db8::5"), Port: 8000,
			Time: at.Add(time.Second).In(time.FixedZone("CET", 3600)), Kind: sensor.TouchS0},
		{Src: netip.MustParseAddr("::ffff:198.51.100.7"), SrcPort: 40003, Dst: netip.MustParseAddr("::ffff:10.0.0.5"), Port: 9000,
			Time: at.Add(2 * time.Second), Kind: sensor.TouchRSTOS0},
		{Src: netip.MustParseAddr("198.51.100.7"), SrcPort: 40004, Dst: netip.MustParseAddr("10.0.0.5"), Port: 9001, Time: at, Kind: sensor.TouchKind(7)},
	}
	var js, tab bytes.Buffer
	jo, to := newTouchOutput(&js, false), newTouchOutput(&tab, true)
	for i := range recs {
		if err := jo.write(&recs[i]); err != nil {
			t.Fatal(err)
		}
		if err := to.write(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := jo.close(); err != nil {
		t.Fatal(err)
	}
	if err := to.close(); err != nil {
		t.Fatal(err)
	}
	wantJSON := `{"@timestamp":"2026-11-20T14:30:21.123456789Z","source":{"ip":"198.51.100.7","port":40001},"destination":{"ip":"10.0.0.5","port":7000},"network":{"transport":"tcp"},"knockwatch":{"touch":{"kind":"REJ"}}}
{"@timestamp":"2026-11-20T14:30:22.123456789Z","source":{"ip":"2001:db8::7","port":40002},"destination":{"ip":"2001:db8::5","port":8000},"network":{"transport":"tcp"},"knockwatch":{"touch":{"kind":"S0"}}}
{"@timestamp":"2026-11-20T14:30:23.123456789Z","source":{"ip":"198.51.100.7","port":40003},"destination":{"ip":"10.0.0.5","port":9000},"network":{"transport":"tcp"},"knockwatch":{"touch":{"kind":"RSTOS0"}}}
{"@timestamp":"2026-11-20T14:30:21.123456789Z","source":{"ip":"198.51.100.7","port":40004},"destination":{"ip":"10.0.0.5","port":9001},"network":{"transport":"tcp"},"knockwatch":{"touch":{"kind":"kind(7)"}}}
`
	if js.String() != wantJSON {
		t.Errorf("json:\n%s\nwant:\n%s", js.String(), wantJSON)
	}
	wantTable := `2026-11-20 14:30:21.123456  REJ    198.51.100.7:40001 -> 10.0.0.5:7000
2026-11-20 14:30:22.123456  S0     [2001:db8::7]:40002 -> [2001:db8::5]:8000
2026-11-20 14:30:23.123456  RSTOS0 198.51.100.7:40003 -> 10.0.0.5:9000
2026-11-20 14:30:21.123456  kind(7) 198.51.100.7:40004 -> 10.0.0.5:9001
`
	if tab.String() != wantTable {
		t.Errorf("table:\n%s\nwant:\n%s", tab.String(), wantTable)
	}
	var empty bytes.Buffer
	if o := newTouchOutput(&empty, true); o.close() != nil || empty.String() != "no touches\n" {
		t.Errorf("empty table %q", empty.String())
	}
	// The names agree with the sensor's for the kinds it spells.
	for _, k := range []sensor.TouchKind{sensor.TouchREJ, sensor.TouchS0} {
		if touchKindName(k) != k.String() {
			t.Errorf("kind %d: %s here, %s in sensor", k, touchKindName(k), k)
		}
	}
}

// failingWriter fails every write, as a closed stdout does.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestTouchOutputWriteError(t *testing.T) {
	o := newTouchOutput(failingWriter{}, false)
	r := sensor.TouchRecord{Src: netip.MustParseAddr("198.51.100.7"), Dst: netip.MustParseAddr("10.0.0.5"), Kind: sensor.TouchREJ}
	var err error
	for i := 0; i < 2000 && err == nil; i++ { // past the buffer
		err = o.write(&r)
	}
	if err == nil {
		err = o.close()
	}
	if err == nil || !strings.Contains(err.Error(), "broken pipe") {
		t.Fatalf("error %v, want the write error", err)
	}
}

// nmapTouches are the touches of testdata/zeek/traces/nmap-vsn.pcap (a
// real nmap service scan), read by hand from the packets with tshark:
// each SYN's time and 4-tuple, REJ where a RST-ACK acknowledged the SYN,
// S0 where nothing answered (testdata/zeek/derived/nmap-vsn.conn.log).
// The three SYNs answered by a SYN-ACK are no touch.
var nmapTouches = []string{
	"2011-09-27T18:07:20.497541Z REJ 58024 192.168.1.1:80",
	"2011-09-27T18:07:21.099765Z REJ 58100 192.168.1.50:80",
	"2011-09-27T18:07:21.100604Z REJ 58113 192.168.1.65:80",
	"2011-09-27T18:07:22.201221Z REJ 58588 192.168.1.65:80",
	"2011-09-27T18:07:22.20178Z REJ 58604 192.168.1.65:443",
	"2011-09-27T18:07:22.302278Z REJ 58680 192.168.1.65:443",
	"2011-09-27T18:07:21.100521Z S0 58111 192.168.1.63:80",
	"2011-09-27T18:07:21.100732Z S0 58116 192.168.1.68:80",
	"2011-09-27T18:07:22.201153Z S0 58586 192.168.1.63:80",
	"2011-09-27T18:07:22.201323Z S0 58591 192.168.1.68:80",
	"2011-09-27T18:07:22.201718Z S0 58602 192.168.1.63:443",
	"2011-09-27T18:07:22.20187Z S0 58607 192.168.1.68:443",
	"2011-09-27T18:07:22.302223Z S0 58678 192.168.1.63:443",
	"2011-09-27T18:07:22.302351Z S0 58683 192.168.1.68:443",
}

// TestReplayTouches: replay --touches on a real scan prints one ECS line
// per touch, exactly the touches read from the packets, and the summary.
func TestReplayTouches(t *testing.T) {
	out, errOut, err := runReplayArgs(t, "--engine", "go", "--touches", "--pcap", "../../testdata/zeek/traces/nmap-vsn.pcap")
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, errOut)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %v: %s", err, line)
		}
		var keys []string
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if strings.Join(keys, ",") != "@timestamp,destination,knockwatch,network,source" {
			t.Errorf("keys %v: %s", keys, line)
		}
		var l touchLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatal(err)
		}
		if l.Source.IP != "192.168.1.71" || l.Network.Transport != "tcp" {
			t.Errorf("line %s", line)
		}
		got = append(got, fmt.Sprintf("%s %s %d %s:%d", l.Timestamp, l.Knockwatch.Touch.Kind, l.Source.Port, l.Destination.IP, l.Destination.Port))
	}
	want := append([]string(nil), nmapTouches...)
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("touches:\n%s\nwant:\n%s\nsummary:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), errOut)
	}
	for _, s := range []string{"engine: go", "packets    547", "printed    14 touch lines", "alerts     0"} {
		if !strings.Contains(errOut, s) {
			t.Errorf("summary lacks %q:\n%s", s, errOut)
		}
	}

	tab, errOut, err := runReplayArgs(t, "--engine", "go", "--touches", "--format", "table", "--pcap", "../../testdata/zeek/traces/nmap-vsn.pcap")
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, errOut)
	}
	for _, s := range []string{"2011-09-27 18:07:20.497541  REJ    192.168.1.71:58024 -> 192.168.1.1:80",
		"2011-09-27 18:07:22.302351  S0     192.168.1.71:58683 -> 192.168.1.68:443"} {
		if !strings.Contains(tab, s) {
			t.Errorf("table lacks %q:\n%s", s, tab)
		}
	}
	if n := strings.Count(tab, "\n"); n != len(nmapTouches) {
		t.Errorf("table has %d lines, want %d:\n%s", n, len(nmapTouches), tab)
	}
}

// TestReplayTouchesNoAlerts: with --touches stdout holds touches only; a
// capture whose knock makes an alert prints no alert line, and the
// summary still counts the alert.
func TestReplayTouchesNoAlerts(t *testing.T) {
	dir := filepath.Join(corpus, "pos_rej_knock")
	out, errOut, err := runReplayArgs(t, "--engine", "go", "--touches", "--pcap", filepath.Join(dir, "capture.pcap"),
		"--events", filepath.Join(dir, "events.xml"), "--hosts", filepath.Join(corpus, "hosts"))
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, errOut)
	}
	if strings.Contains(out, "AN0842") || strings.Contains(out, `"rule"`) {
		t.Errorf("an alert on stdout with --touches:\n%s", out)
	}
	if !strings.Contains(errOut, "alerts     1 (high 1, medium 0)") || !strings.Contains(errOut, "touch lines") {
		t.Errorf("summary:\n%s", errOut)
	}
	// stdout holds the touches instead: the knock's REJ touches, as many
	// as the summary says were printed.
	lines := strings.Split(strings.TrimSpace(out), "\n")
	rej := 0
	for _, l := range lines {
		var tl struct {
			Knockwatch struct {
				Touch struct{ Kind string } `json:"touch"`
			} `json:"knockwatch"`
		}
		if err := json.Unmarshal([]byte(l), &tl); err != nil {
			t.Fatalf("touch line is not JSON: %v: %q", err, l)
		}
		if tl.Knockwatch.Touch.Kind == "REJ" {
			rej++
		}
	}
	if rej < 3 || !strings.Contains(errOut, fmt.Sprintf("printed    %d touch lines", len(lines))) {
		t.Errorf("%d touch lines (%d REJ) on stdout, want the knock's 3 REJ at least, as many as the summary says:\n%s\n%s", len(lines), rej, out, errOut)
	}
}
