package loader

import (
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/sensor"
	"golang.org/x/sys/unix"
)

// TestSYNDestinations: the program records the destinations of SYNs inside
// the destination networks with the time of the latest SYN, refreshed at
// most once a second; nothing outside the networks, nothing for answers,
// nothing while no network is set; a full table is counted, and
// SYNDestinations deletes what aged. Expectations are the rows' packets
// read by hand.
func TestSYNDestinations(t *testing.T) {
	inside := netip.MustParseAddr("10.0.0.5")
	inside2 := netip.MustParseAddr("10.0.0.6")
	outside := netip.MustParseAddr("192.0.2.9")
	nets := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}
	to := func(d netip.Addr) conv { return conv{Src: attacker, Dst: d} }
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for _, c := range []struct {
		name      string
		nets      []netip.Prefix
		size      uint32
		steps     []step
		want      []sensor.Destination
		new, full uint64
	}{
		{"first SYN, then refreshed only a second later", nets, 16,
			[]step{to(inside).SYN(0, 80), to(inside).SYN(sec(0.5), 81), to(inside).SYN(sec(1.2), 82), to(inside).SYN(sec(1.9), 83)},
			[]sensor.Destination{{Addr: inside, LastSYN: at(sec(1.2))}}, 1, 0},
		{"outside the networks, and answers, are not recorded", nets, 16,
			[]step{to(outside).SYN(0, 80), to(inside).SYNACK(sec(1), 80), to(inside).RST(sec(2), 81)},
			nil, 0, 0},
		{"no networks: nothing recorded", nil, 16,
			[]step{to(inside).SYN(0, 80)},
			nil, 0, 0},
		{"a full table is counted", nets, 1,
			[]step{to(inside).SYN(0, 80), to(inside2).SYN(sec(1), 80), to(inside2).SYN(sec(3), 80)},
			[]sensor.Destination{{Addr: inside, LastSYN: at(0)}}, 1, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := loadReplay(t, func(cfg *sensor.Config) { cfg.SYNDestinations = c.size })
			if err := s.SetDestinationNets(c.nets); err != nil {
				t.Fatal(err)
			}
			o := runSteps(t, s, c.steps)
			got, err := s.SYNDestinations(at(time.Minute), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("destinations %v, want %v", got, c.want)
			}
			if o.Counters["syn_dst_new"] != c.new || o.Counters["syn_dst_full"] != c.full {
				t.Errorf("syn_dst_new %d, syn_dst_full %d, want %d, %d", o.Counters["syn_dst_new"], o.Counters["syn_dst_full"], c.new, c.full)
			}
		})
	}
	t.Run("entries older than keep are read once, then deleted", func(t *testing.T) {
		s := loadReplay(t, nil)
		if err := s.SetDestinationNets(nets); err != nil {
			t.Fatal(err)
		}
		runSteps(t, s, []step{to(inside).SYN(0, 80), to(inside2).SYN(sec(50), 80)})
		got, err := s.SYNDestinations(at(sec(70)), 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 {
			t.Fatalf("first read %v, want both hosts", got)
		}
		got, _ = s.SYNDestinations(at(sec(70)), 30*time.Second)
		if want := []sensor.Destination{{Addr: inside2, LastSYN: at(sec(50))}}; !slices.Equal(got, want) {
			t.Fatalf("second read %v, want %v (the host idle for 70 s deleted)", got, want)
		}
		if err := s.SetDestinationNets(make([]netip.Prefix, MaxDestinationNets+1)); err == nil {
			t.Error("invalid prefixes accepted")
		}
	})
}

// TestSYNDestinationsAcrossCPUs: each CPU skips the lookup for the host it
// saw last within the second (dst_seen); the table must still end as if
// every SYN had looked (the times below are worked out that way by hand),
// whichever CPU each SYN runs on, and a cleared table must not be trusted
// from a CPU's memory of it.
func TestSYNDestinationsAcrossCPUs(t *testing.T) {
	s := loadReplay(t, nil)
	host := netip.MustParseAddr("10.0.0.5")
	if err := s.SetDestinationNets([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &all)
	var cpus []int
	for c := 0; c < 1024 && len(cpus) < 2; c++ {
		if all.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	t.Logf("CPUs %v", cpus)
	h := conv{Src: attacker, Dst: host}
	syn := func(cpu int, at time.Duration) {
		t.Helper()
		var set unix.CPUSet
		set.Set(cpus[cpu%len(cpus)])
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			t.Fatal(err)
		}
		runSteps(t, s, []step{h.SYN(at, uint16(1000+at/time.Millisecond))})
	}
	last := func() time.Time {
		t.Helper()
		got, err := s.SYNDestinations(t0, time.Hour)
		if err != nil || len(got) != 1 || got[0].Addr != host {
			t.Fatalf("destinations %v, %v", got, err)
		}
		return got[0].LastSYN
	}
	// (CPU, time) -> the table's time for host, as every SYN looking
	// would leave it: written when a second or more after it.
	for _, st := range []struct {
		cpu  int
		at   time.Duration
		want time.Duration
	}{
		{0, 0, 0}, {1, sec(1.5), sec(1.5)}, {0, sec(1.6), sec(1.5)}, {0, sec(2.7), sec(2.7)},
		{1, sec(2.8), sec(2.7)}, {1, sec(3.6), sec(2.7)}, {0, sec(3.75), sec(3.75)},
	} {
		syn(st.cpu, st.at)
		if got := last(); !got.Equal(t0.Add(st.want)) {
			t.Fatalf("after a SYN at %v on CPU %d: the table says %v, want %v", st.at, cpus[st.cpu%len(cpus)], got.Sub(t0), st.want)
		}
	}
	// The table is cleared (new networks): CPU 0 remembers host at 3.75 s,
	// yet a SYN 10 ms later must put it back.
	if err := s.SetDestinationNets([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	syn(0, sec(3.76))
	if got := last(); !got.Equal(t0.Add(sec(3.76))) {
		t.Fatalf("after the clear: the table says %v, want 3.76s", got.Sub(t0))
	}
	c, err := s.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c["syn_dst_new"] != 2 {
		t.Errorf("syn_dst_new %d, want 2 (the first SYN, and the one after the clear)", c["syn_dst_new"])
	}
}
