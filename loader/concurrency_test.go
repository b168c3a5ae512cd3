package loader

import (
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/sensor"
	"golang.org/x/sys/unix"
)

// TestConcurrentPair drives the touches of the same (S, D) pairs from one
// goroutine per CPU at once, each pinned to its CPU, as a multi-queue NIC
// whose RSS spreads a pair's ports over queues would. Every pair must be
// flagged exactly once, with every touch counted and no record lost or
// doubled.
func TestConcurrentPair(t *testing.T) {
	s := loadReplay(t, func(c *sensor.Config) {
		c.PairSlots = 1 << 20 // no slot collisions between the test's pairs
		c.RingBytes = 1 << 20
	})
	rd, err := s.NewReader()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()

	cpus := runtime.NumCPU()
	if cpus < 2 {
		t.Skip("needs two CPUs")
	}
	const pairs = 64
	const portsPerCPU = 3
	var wg sync.WaitGroup
	errs := make(chan error, cpus)
	start := make(chan struct{})
	for cpu := range cpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				errs <- err
				return
			}
			run, err := s.NewRunner()
			if err != nil {
				errs <- err
				return
			}
			<-start
			for round := range portsPerCPU {
				for p := range pairs {
					c := conv{Src: netip.AddrFrom4([4]byte{198, 51, 100, byte(p)}), Dst: victim}
					port := uint16(1000 + cpu*100 + round)
					at := time.Duration(round)*100*time.Millisecond + time.Duration(cpu)*time.Millisecond
					for _, st := range c.REJ(at, port) {
						if _, err := run.Run(st.P.Bytes(), t0.Add(st.At)); err != nil {
							errs <- err
							return
						}
					}
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	got, err := s.Counters()
	if err != nil {
		t.Fatal(err)
	}
	touches := uint64(pairs * portsPerCPU * cpus)
	if got["touch_rej"] != touches || got["backscatter"] != 0 {
		t.Errorf("touch_rej %d (want %d), backscatter %d (want 0)", got["touch_rej"], touches, got["backscatter"])
	}
	if got["flags"] != pairs || got["candidates"] != pairs {
		t.Errorf("flags %d, candidates %d; want %d each", got["flags"], got["candidates"], pairs)
	}
	ks := knocks(drain(t, rd))
	perSrc := map[netip.Addr]int{}
	for _, k := range ks {
		perSrc[k.Src]++
		if len(k.Touches) < 3 {
			t.Errorf("knock of %v with %d touches", k.Src, len(k.Touches))
		}
	}
	if len(perSrc) != pairs {
		t.Errorf("%d sources flagged, want %d", len(perSrc), pairs)
	}
	for src, n := range perSrc {
		if n != 1 {
			t.Errorf("%v flagged %d times", src, n)
		}
	}
}
