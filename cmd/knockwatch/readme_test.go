package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/knockwatch/knockwatch/internal/config"
)

// readmeRunCommand returns the arguments (after `knockwatch run`) of the
// deployment command in README.md, with its line continuations joined.
func readmeRunCommand(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, block := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		cmd := strings.ReplaceAll(block[1], "\\\n", " ")
		for _, line := range strings.Split(cmd, "\n") {
			f := strings.Fields(line)
			if len(f) > 2 && f[0] == "knockwatch" && f[1] == "run" {
				for _, a := range f {
					if strings.ContainsAny(a, `"'$*?<>`) || strings.Contains(a, "...") || a == "sudo" {
						t.Fatalf("README's command has %q: write it so it runs as written", a)
					}
				}
				return f[2:]
			}
		}
	}
	t.Fatal("README has no `knockwatch run` command")
	return nil
}

// TestREADMECommandValidates: the deployment command of the README parses
// and passes the same validation `run` applies before starting (a Beats
// listener on 0.0.0.0 without --client-ca, for one, is refused).
func TestREADMECommandValidates(t *testing.T) {
	args := readmeRunCommand(t)
	cfg, _, err := config.Load(args, os.Stderr)
	if err != nil {
		t.Fatalf("README command: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("README command does not validate: %v", err)
	}
	if cfg.Listeners.Beats.Addr == "" || cfg.Listeners.ClientCA == "" {
		t.Errorf("README command lost its Beats listener or its client CA: %+v", cfg.Listeners)
	}
}
