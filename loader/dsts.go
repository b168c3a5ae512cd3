package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/knockwatch/knockwatch/sensor"
)

// MaxDestinationNets is the room of dst_nets (bpf/include/maps.h).
const MaxDestinationNets = 256

// SetDestinationNets replaces the networks whose SYN destinations the
// program records in syn_dsts (coverage.networks): the hosts inside that
// take traffic. The table starts empty again (hosts outside the new
// networks must not stay; the others come back with their next SYN). An
// empty list stops the recording (the SYN path skips the tables).
func (s *Sensor) SetDestinationNets(prefixes []netip.Prefix) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("set destination networks: %w", ErrSensorClosed)
	}
	want := map[knockwatchLpmKey]bool{}
	for _, p := range prefixes {
		if !p.IsValid() {
			return fmt.Errorf("set destination networks: invalid prefix %v", p)
		}
		want[lpmKey(p)] = true
	}
	if len(want) > MaxDestinationNets {
		return fmt.Errorf("set destination networks: %d prefixes, room for %d", len(want), MaxDestinationNets)
	}
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	// Close the gate while the trie changes; open it on what is there.
	if err := s.objs.DstNetsN.Set(uint32(0)); err != nil {
		return fmt.Errorf("set destination networks: close the gate: %w", err)
	}
	if err := syncLPM(s.objs.DstNets, want, "destination networks"); err != nil {
		return fmt.Errorf("set destination networks: %w", err)
	}
	if err := s.clearDsts(); err != nil {
		return fmt.Errorf("set destination networks: %w", err)
	}
	if err := s.objs.DstNetsN.Set(uint32(len(want))); err != nil {
		return fmt.Errorf("set destination networks: open the gate: %w", err)
	}
	return nil
}

// SYNDestinations returns every host syn_dsts holds with the time of its
// latest SYN (the program refreshes it at most once a second), and deletes
// the entries whose latest SYN is older than keep before now, so the table
// keeps room for new hosts (read them before they age: keep well above
// the reading interval).
func (s *Sensor) SYNDestinations(now time.Time, keep time.Duration) ([]sensor.Destination, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("read SYN destinations: %w", ErrSensorClosed)
	}
	clock := s.Clock()
	cut := s.programTime(now.Add(-keep))
	var (
		k     knockwatchKwAddr
		last  uint64
		out   []sensor.Destination
		stale []knockwatchKwAddr
	)
	it := s.objs.SynDsts.Iterate()
	for it.Next(&k, &last) {
		out = append(out, sensor.Destination{Addr: netip.AddrFrom16(k.B).Unmap(), LastSYN: clock(last)})
		if int64(cut-last) > 0 {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read SYN destinations: %w", err)
	}
	for _, key := range stale {
		if err := s.objs.SynDsts.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, fmt.Errorf("prune SYN destinations: %w", err)
		}
	}
	return out, nil
}

// clearDsts empties syn_dsts and every CPU's dst_seen (which must never
// hold a time the table does not).
func (s *Sensor) clearDsts() error {
	if err := clearHash(s.objs.SynDsts); err != nil {
		return err
	}
	n, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("clear dst_seen: %w", err)
	}
	if err := s.objs.DstSeen.Put(uint32(0), make([]knockwatchKwDstSeen, n)); err != nil {
		return fmt.Errorf("clear dst_seen: %w", err)
	}
	return nil
}
