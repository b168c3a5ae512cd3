package main

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/knockwatch/knockwatch/coverage"
)

// TestReplayCoverage: knockwatch replay --coverage prints the recording's
// coverage report (JSON: the /v1/coverage document; table: one screen),
// with the alerts kept in --alerts FILE; the host 90 s behind is measured
// and its alert is high, corrected.
func TestReplayCoverage(t *testing.T) {
	dir := filepath.Join(corpus, "pos_clock_90s_behind")
	alerts := filepath.Join(t.TempDir(), "alerts.jsonl")
	out, errOut, err := runCmd(t, "replay", "--engine", "go", "--pcap", filepath.Join(dir, "capture.pcap"),
		"--events", filepath.Join(dir, "events.xml"), "--hosts", filepath.Join(corpus, "hosts"), "--coverage", "--alerts", alerts)
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, errOut)
	}
	var r coverage.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("stdout is not a coverage report: %v\n%s", err, out)
	}
	if !r.Final || r.Summary.ClockMeasured != 1 || r.Summary.LargestOffset < 89 || r.Summary.LargestOffset > 91 {
		t.Fatalf("report %+v", r.Summary)
	}
	b, err := os.ReadFile(alerts)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"confidence":"high"`) || !strings.Contains(string(b), `"applied":true`) {
		t.Fatalf("alerts file: %s", b)
	}
	if !strings.Contains(errOut, "coverage   3 hosts, clocks measured 1") {
		t.Errorf("summary: %s", errOut)
	}

	out, _, err = runCmd(t, "replay", "--engine", "go", "--pcap", filepath.Join(corpus, "neg_one_way_capture", "capture.pcap"),
		"--events", filepath.Join(corpus, "neg_one_way_capture", "events.xml"), "--hosts", filepath.Join(corpus, "hosts"),
		"--coverage", "--format", "table")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"(a recording: final)", "sensor one_way", "CRITICAL  one_way  capture interface capture.pcap",
		"fix:     attach the tap's other port"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n > 60 {
		t.Errorf("the table is %d lines: more than a screen", n)
	}
	if _, _, err := runCmd(t, "replay", "--pcap", "x.pcap", "--coverage", "--touches"); !errors.Is(err, errUsage) {
		t.Errorf("--coverage --touches: %v", err)
	}
}

// TestCoverageCommand: knockwatch coverage reads /v1/coverage from a
// running sensor and prints it; clear errors when nothing answers or
// coverage is off.
func TestCoverageCommand(t *testing.T) {
	rep := coverage.Report{Summary: coverage.Summary{Hosts: 1, States: map[string]int{coverage.HostBlind: 1},
		Findings: map[string]int{coverage.SevCritical: 1}},
		Hosts: []coverage.HostReport{{Host: "ws02.corp.example", IPs: []string{"10.0.0.6"}, State: coverage.HostBlind}},
		Findings: []coverage.Finding{{Kind: coverage.FindHostNoEvents, Severity: coverage.SevCritical, Host: "ws02.corp.example",
			Missing: "not one of its Windows events arrived", Fix: "forward the host's Security channel"}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/coverage" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(rep)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	out, errOut, err := runCmd(t, "coverage", "--addr", addr)
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	for _, want := range []string{"ws02.corp.example", "host_blind", "CRITICAL  host_no_events", "missing: not one of its Windows events arrived",
		"fix:     forward the host's Security channel"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	out, _, err = runCmd(t, "coverage", "--addr", addr, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var back coverage.Report
	if err := json.Unmarshal([]byte(out), &back); err != nil || len(back.Findings) != 1 {
		t.Fatalf("json: %v %s", err, out)
	}
	cfg := filepath.Join(t.TempDir(), "kw.yaml")
	if err := os.WriteFile(cfg, []byte("metrics:\n  addr: "+addr+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, err := runCmd(t, "coverage", "--config", cfg); err != nil {
		t.Fatalf("--config: %v %s", err, errOut)
	}

	// Nothing listening: one clear line.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	if _, _, err := runCmd(t, "coverage", "--addr", dead); err == nil || !strings.Contains(err.Error(), "no sensor answers") {
		t.Errorf("dead address: %v", err)
	}
	off := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "coverage is off (coverage.enabled: false)", http.StatusNotFound)
	}))
	defer off.Close()
	if _, _, err := runCmd(t, "coverage", "--addr", strings.TrimPrefix(off.URL, "http://")); err == nil || !strings.Contains(err.Error(), "coverage is off") {
		t.Errorf("coverage off: %v", err)
	}
	if _, _, err := runCmd(t, "coverage", "--format", "xml"); !errors.Is(err, errUsage) {
		t.Errorf("--format xml: %v", err)
	}
}
