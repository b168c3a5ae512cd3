package loader

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// CounterNames names the per-CPU counters in the order of enum kw_counter
// (bpf/include/counters.h). The names become Prometheus label values.
var CounterNames = []string{
	"packets",
	"bytes",
	"non_ip",
	"non_tcp",
	"truncated",
	"fragment",
	"unknown_ext",
	"bad_header",
	"tcp",
	"syn",
	"synack",
	"rst",
	"bad_flags",
	"syn_retrans",
	"touch_rej",
	"touch_s0",
	"backscatter",
	"synack_unmatched",
	"port_open",
	"pending_evicted",
	"slot_takeover",
	"candidates",
	"flags",
	"handshakes",
	"handshake_bad_ack",
	"handshake_repeat",
	"watch_started",
	"allowlisted",
	"ringbuf_full",
	"map_insert_fail",
	"port_slot_takeover",
	"no_meta",
	"ipv4",
	"ipv6",
	"vlan",
}

// Counters are the program's counters summed over CPUs, by name.
type Counters map[string]uint64

// Counters reads the per-CPU counters and sums them.
func (s *Sensor) Counters() (Counters, error) {
	var perCPU []knockwatchKwCounters
	if err := s.objs.Stats.Lookup(uint32(0), &perCPU); err != nil {
		return nil, fmt.Errorf("read counters: %w", err)
	}
	out := make(Counters, len(CounterNames))
	for _, cpu := range perCPU {
		for i, name := range CounterNames {
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
