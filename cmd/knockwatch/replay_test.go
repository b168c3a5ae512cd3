package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	for _, want := range []string{"engine: go", "packets    30", "touches    3 (REJ 3, S0 0)", "knocks     1",
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
