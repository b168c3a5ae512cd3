package main

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/internal/ecs"
)

// TestReplayAlertsAreECS replays every case of the corpus with `knockwatch
// replay` and checks every field of every alert line against the ECS
// 8.17.0 field reference (testdata/ecs): each is an ECS field of the right
// type, shape (array or not) and, where ECS enumerates them, an allowed
// value; or it lives under knockwatch.*. The same cases are replayed
// without their Windows events (network-only alerts) and with an
// administrator suppression emitted (suppressed alerts), so every kind of
// record replay writes is covered.
func TestReplayAlertsAreECS(t *testing.T) {
	schema, err := ecs.Load("../../testdata/ecs/ecs_flat_8.17.0.yml")
	if err != nil {
		t.Fatal(err)
	}
	suppress := filepath.Join(t.TempDir(), "suppress.yaml")
	if err := os.WriteFile(suppress, []byte("rule:\n  emit_suppressed: true\nsuppression:\n  admin_applications: [netsh.exe, powershell.exe, mmc.exe, wmiprvse.exe, svchost.exe]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dirs, _ := filepath.Glob(filepath.Join(corpus, "*", "expected.json"))
	if len(dirs) < 15 {
		t.Fatalf("corpus has %d cases", len(dirs))
	}
	kinds := map[string]int{}
	for _, exp := range dirs {
		dir := filepath.Dir(exp)
		caps, _ := filepath.Glob(filepath.Join(dir, "capture*"))
		sort.Strings(caps)
		hosts := filepath.Join(dir, "hosts")
		if _, err := os.Stat(hosts); err != nil {
			hosts = filepath.Join(corpus, "hosts")
		}
		base := []string{"--engine", "go", "--hosts", hosts}
		for _, c := range caps {
			base = append(base, "--pcap", c)
		}
		events := []string{"--events", filepath.Join(dir, "events.xml")}
		for _, v := range []struct {
			name string
			args []string
		}{
			{"as recorded", append(append([]string(nil), base...), events...)},
			{"network only", base},
			{"suppressed", append(append(append([]string(nil), base...), events...), "--config", suppress)},
		} {
			t.Run(filepath.Base(dir)+"/"+v.name, func(t *testing.T) {
				out, errOut, err := runReplayArgs(t, v.args...)
				if err != nil {
					t.Fatalf("replay: %v\n%s", err, errOut)
				}
				for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
					if line == "" {
						continue
					}
					for _, e := range schema.Validate([]byte(line), "knockwatch") {
						t.Errorf("%v\n  in %s", e, line)
					}
					if !strings.Contains(line, `"ecs":{"version":"`+correlate.ECSVersion+`"}`) {
						t.Errorf("ecs.version is not the reference's %s: %s", correlate.ECSVersion, line)
					}
					switch {
					case strings.Contains(line, `"suppressed":true`):
						kinds["suppressed"]++
					case strings.Contains(line, `"basis":"network"`):
						kinds["network"]++
					default:
						kinds["host_event"]++
					}
				}
			})
		}
	}
	// The variants must have produced each kind, or the test proves less
	// than it says.
	for _, k := range []string{"host_event", "network", "suppressed"} {
		if kinds[k] == 0 {
			t.Errorf("no %s alert was produced by the corpus variants: %v", k, kinds)
		}
	}
}
