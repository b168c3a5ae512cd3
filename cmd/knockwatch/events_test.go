package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const samples = "../../testdata/winevents"

func runCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = run(context.Background(), args, &o, &e)
	return o.String(), e.String(), err
}

func TestEventsPrintsChanges(t *testing.T) {
	out, errOut, err := runCmd(t, "events", "--tz", "+08:00",
		filepath.Join(samples, "otrf_cmd_netsh_fw_mod_open_ports.subset.jsonl"),
		filepath.Join(samples, "psmths_2004_2071_2006_5156_examples.xml"))
	if err != nil {
		t.Fatalf("events: %v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 7 {
		t.Fatalf("got %d lines, want 7:\n%s", len(lines), out)
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	// netsh ... localport=450 at 12:19:04.518 local time (UTC+8).
	want := map[string]any{"host": "WORKSTATION5", "time": "2020-10-21T04:19:04.518Z", "kind": "rule_added",
		"ports": "450", "protocol": "tcp", "rule_name": "atomic testing", "event_id": float64(4946), "opens": true}
	for k, v := range want {
		if first[k] != v {
			t.Errorf("%s = %v, want %v", k, first[k], v)
		}
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line is not JSON: %s", l)
		}
		for _, k := range []string{"host", "time", "kind", "ports", "event_id", "channel", "file"} {
			if _, ok := m[k]; !ok {
				t.Errorf("line without %s: %s", k, l)
			}
		}
	}
	if !strings.Contains(errOut, "read 21, relevant 15, skipped 6, duplicates 0, rejected 0, changes 7") {
		t.Errorf("summary: %q", errOut)
	}
}

func TestEventsZoneFlag(t *testing.T) {
	out, _, err := runCmd(t, "events", "--zone", "*.theshire.local=-04:00",
		filepath.Join(samples, "otrf_nxlog_wec_5031_5154_excel.subset.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"time":"2020-09-17T21:46:12Z"`) {
		t.Errorf("EventTime 17:46:12 at UTC-4 not converted: %s", out)
	}
}

func TestEventsBadFiles(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.log")
	if err := os.WriteFile(garbage, []byte("#Fields: date time action\n2024-01-01 00:00:00 DROP\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(dir, "broken.jsonl")
	if err := os.WriteFile(broken, []byte("{\"EventID\": 5154, \"Hostname\":\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(samples, "mdecrevoisier_2004_any_any_rule_created.xml")
	for _, tc := range []struct {
		name, file, msg string
	}{
		{"missing", filepath.Join(dir, "nope.xml"), "open file"},
		{"directory", dir, "is a directory"},
		{"not events", garbage, "neither XML nor JSON"},
		{"truncated", broken, "truncated: 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := runCmd(t, "events", good, tc.file)
			if err == nil {
				t.Fatalf("no error for %s", tc.file)
			}
			if !strings.Contains(errOut, tc.msg) {
				t.Errorf("stderr %q does not say %q", errOut, tc.msg)
			}
			// The readable file is still printed.
			if !strings.Contains(out, "any crazy rule") {
				t.Errorf("good file not printed: %q", out)
			}
		})
	}
}

func TestEventsUsage(t *testing.T) {
	_, errOut, err := runCmd(t, "events")
	if !errors.Is(err, errUsage) || !strings.Contains(errOut, "usage: knockwatch events") {
		t.Errorf("no files: err %v, stderr %q", err, errOut)
	}
	_, errOut, err = runCmd(t, "events", "--help")
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(errOut, "--tz") && !strings.Contains(errOut, "-tz") {
		t.Errorf("--help: err %v, stderr %q", err, errOut)
	}
	if _, _, err = runCmd(t, "events", "--tz", "Mars/Olympus", "x"); !errors.Is(err, errUsage) {
		t.Errorf("bad zone: %v", err)
	}
	if _, _, err = runCmd(t, "events", "--zone", "nohost", "x"); !errors.Is(err, errUsage) {
		t.Errorf("bad --zone: %v", err)
	}
}

func TestEventsStdin(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(samples, "psmths_2004_2071_2006_5156_examples.xml"))
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdin
	os.Stdin = r
	defer func() { os.Stdin = old }()
	go func() { _, _ = w.Write(b); w.Close() }()
	out, _, err := runCmd(t, "events", "-")
	if err != nil || strings.Count(out, "\n") != 5 {
		t.Errorf("stdin: %v, %q", err, out)
	}
}
