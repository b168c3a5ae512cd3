package loader

import (
	"os"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/testsupport/scenario"
	"github.com/knockwatch/knockwatch/sensor"
	"golang.org/x/sys/unix"
)

// bpffsDir returns a fresh directory on bpffs, mounting /sys/fs/bpf if
// needed, removed with everything pinned in it at cleanup.
func bpffsDir(t *testing.T) string {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		if err := unix.Mount("bpf", "/sys/fs/bpf", "bpf", 0, ""); err != nil {
			t.Fatalf("mount bpffs: %v", err)
		}
	}
	dir, err := os.MkdirTemp("/sys/fs/bpf", "knockwatch-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestPinnedRestart: a sensor restarted between the knock and the
// handshake keeps its state when its maps are pinned.
func TestPinnedRestart(t *testing.T) {
	dir := bpffsDir(t)
	load := func() *Sensor {
		cfg := sensor.DefaultConfig()
		cfg.Replay = true
		cfg.PairSlots, cfg.Candidates, cfg.RingBytes = 1<<12, 1024, 1<<16
		s, err := Load(cfg, Options{PinPath: dir})
		if err != nil {
			t.Fatalf("load: %+v", err)
		}
		return s
	}
	s := load()
	recs := runSteps(t, s, cat(a.REJ(0, 7000), a.REJ(sec(1), 8000))).Records
	if len(recs) != 0 {
		t.Fatalf("records before the third touch: %v", recs)
	}
	s.Close()

	s = load() // a new program, same pinned maps and seed
	defer s.Close()
	if ks, _, err := s.FlaggedKnocks(scenario.T0.Add(sec(2))); err != nil || len(ks) != 0 {
		t.Fatalf("flagged knocks before any flag: %v, %v", ks, err)
	}
	o := runSteps(t, s, cat(a.REJ(sec(2), 9000), a.Connect(sec(10), 4444)))
	recs = o.Records
	if len(knocks(recs)) != 1 {
		t.Logf("counters after the restart: %v", o.Counters)
	}
	scenario.CheckKnocks(t, knocks(recs), []scenario.WantKnock{{Src: attacker, Dst: victim, Ports: []uint16{7000, 8000, 9000},
		Kinds: []sensor.TouchKind{sensor.TouchREJ, sensor.TouchREJ, sensor.TouchREJ}}})
	scenario.CheckHandshakes(t, handshakes(recs), []scenario.WantHS{{Src: attacker, Dst: victim, Port: 4444, LastClosed: -1, LastOpen: -1}})

	// Restarted after the flag: the knock comes back from the pinned maps
	// for the new process's correlation engine.
	s.Close()
	s = load()
	defer s.Close()
	ks, missing, err := s.FlaggedKnocks(scenario.T0.Add(sec(12)))
	if err != nil || missing != 0 {
		t.Fatalf("FlaggedKnocks: %v (missing %d)", err, missing)
	}
	scenario.CheckKnocks(t, ks, []scenario.WantKnock{{Src: attacker, Dst: victim, Ports: []uint16{7000, 8000, 9000},
		Kinds: []sensor.TouchKind{sensor.TouchREJ, sensor.TouchREJ, sensor.TouchREJ}, Times: []time.Duration{0, sec(1), sec(2)}}})

	// Other sizes cannot reuse the pinned maps: a clear error, not garbage.
	cfg := sensor.DefaultConfig()
	cfg.Replay = true
	cfg.PairSlots = 1 << 13
	if _, err := Load(cfg, Options{PinPath: dir}); err == nil {
		t.Fatal("load with other sizes over pinned maps succeeded")
	} else {
		t.Logf("expected error: %v", err)
	}
}
