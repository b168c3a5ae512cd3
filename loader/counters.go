package loader

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/knockwatch/knockwatch/sensor"
)

// Counters reads the per-CPU counters and sums them.
func (s *Sensor) Counters() (sensor.Counters, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("read counters: %w", ErrSensorClosed)
	}
	var perCPU []knockwatchKwCounters
	if err := s.objs.Stats.Lookup(uint32(0), &perCPU); err != nil {
		return nil, fmt.Errorf("read counters: %w", err)
	}
	out := make(sensor.Counters, len(sensor.CounterNames))
	for _, cpu := range perCPU {
		for i, name := range sensor.CounterNames {
			out[name] += cpu.C[i]
		}
	}
	return out, nil
}

// ResetCounters zeroes the counters on every CPU (tests and benchmarks).
func (s *Sensor) ResetCounters() error {
	n, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("reset counters: %w", err)
	}
	zero := make([]knockwatchKwCounters, n)
	if err := s.objs.Stats.Put(uint32(0), zero); err != nil {
		return fmt.Errorf("reset counters: %w", err)
	}
	return nil
}

// ifSlots is KW_IF_SLOTS: interfaces share a slot when their indexes are
// equal modulo it.
const ifSlots = 1024

// InterfaceCounters reads the per-CPU counters of the interface with the
// given index (packets, bytes and parse outcomes) and sums them.
func (s *Sensor) InterfaceCounters(ifindex int) (sensor.Counters, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("read counters of interface %d: %w", ifindex, ErrSensorClosed)
	}
	var perCPU []knockwatchKwIfCounters
	if err := s.objs.IfaceStats.Lookup(uint32(ifindex)&(ifSlots-1), &perCPU); err != nil {
		return nil, fmt.Errorf("read counters of interface %d: %w", ifindex, err)
	}
	out := make(sensor.Counters, len(sensor.InterfaceCounterNames))
	for _, cpu := range perCPU {
		for i, name := range sensor.InterfaceCounterNames {
			out[name] += cpu.C[i]
		}
	}
	return out, nil
}

// Map is one of the program's maps, named as in bpf/include/maps.h.
type Map struct {
	Name string
	*ebpf.Map
}

// Maps returns the program's maps, for fill-level metrics: the caller
// needs no CAP_SYS_ADMIN to open them by id.
func (s *Sensor) Maps() []Map {
	o := &s.objs
	return []Map{
		{"pairs", o.Pairs}, {"cands", o.Cands}, {"watches", o.Watches}, {"port_slots", o.PortSlots},
		{"owners", o.Owners}, {"allowlist", o.Allowlist}, {"events", o.Events}, {"stats", o.Stats},
		{"iface_stats", o.IfaceStats}, {"scratch", o.Scratch}, {"flags_in", o.FlagsIn}, {"samples", o.Samples},
		{"dst_nets", o.DstNets}, {"syn_dsts", o.SynDsts},
	}
}
