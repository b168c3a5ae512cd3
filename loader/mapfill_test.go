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
	cfg.PairSlots, cfg.PortSlots, cfg.Candidates, cfg.Flagged, cfg.Watches, cfg.RingBytes = 1024, 1024, 256, 64, 64, 1<<16
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
	c, ok := byName["candidates"]
	if !ok {
		t.Fatalf("no candidates map among %v", maps)
	}
	if c.MaxEntries != 256 || c.Entries != 0 {
		t.Fatalf("candidates = %+v, want 0 of 256", c)
	}
	if p, ok := byName["pair_slots"]; !ok || p.Entries != -1 || p.MaxEntries != 1024 {
		t.Fatalf("pair_slots = %+v", p)
	}
}
