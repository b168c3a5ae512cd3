package config

import (
	"strings"
	"testing"
)

// FuzzParse: any input gives a config or an error, never a panic, and an
// error names the input.
func FuzzParse(f *testing.F) {
	f.Add([]byte(full))
	f.Add([]byte("rule:\n  skew: 10s\n"))
	f.Add([]byte("listeners: {http: {addr: '127.0.0.1:1'}}"))
	f.Add([]byte("a: &x [1]\nb: *x\n"))
	f.Add([]byte("suppression:\n  change_windows:\n    - {hosts: ['*'], start: 2026-01-01T00:00:00Z, end: 2026-01-02T00:00:00Z}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := Default()
		err := Parse(data, "fuzz.yaml", &cfg)
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		_ = cfg.Validate()
	})
}
