package loader

import (
	"testing"

	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
	"github.com/knockwatch/knockwatch/sensor"
)

// TestMapFills reads the fill levels of a real loaded program's maps.
func TestMapFills(t *testing.T) {
	testenv.RequirePrivileged(t)
	cfg := sensor.DefaultConfig()
	cfg.PairSlots, cfg.PortSlots, cfg.Candidates, cfg.Watches, cfg.RingBytes = 1024, 1024, 256, 64, 1<<16
	s, err := Load(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	maps, err := s.MapFills()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]sensor.MapFill{}
	for _, m := range maps {
		byName[m.Name] = m
	}
	// Tables are arrays of buckets: their capacity, no key count.
	if c, ok := byName["cands"]; !ok || c.Entries != -1 || c.MaxEntries != 256/4 {
		t.Fatalf("cands = %+v, want 64 buckets", c)
	}
	if p, ok := byName["pairs"]; !ok || p.Entries != -1 || p.MaxEntries != 1024/4 {
		t.Fatalf("pairs = %+v, want 256 buckets", p)
	}
	if a, ok := byName["allowlist"]; !ok || a.Entries != 0 {
		t.Fatalf("allowlist = %+v, want 0 entries", a)
	}
}
