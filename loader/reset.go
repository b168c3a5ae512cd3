package loader

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/cilium/ebpf"
)

// Reset empties every state table, the gates and the counters, as a fresh
// load would leave them (the allowlist and the destination networks stay). Tests and fuzzers use it to
// start each input from a clean program without paying a load.
func (s *Sensor) Reset() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("reset: %w", ErrSensorClosed)
	}
	for _, m := range []*ebpf.Map{s.objs.Pairs, s.objs.Cands, s.objs.PortSlots, s.objs.Watches, s.objs.Owners} {
		if err := zeroArray(m); err != nil {
			return fmt.Errorf("reset: %w", err)
		}
	}
	if err := s.objs.WatchUntil.Set(uint64(0)); err != nil {
		return fmt.Errorf("reset watch gate: %w", err)
	}
	if err := s.clearDsts(); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	for _, m := range []*ebpf.Map{s.objs.FlagsIn, s.objs.Samples} {
		if err := clearHash(m); err != nil {
			return fmt.Errorf("reset: %w", err)
		}
	}
	s.reqMu.Lock()
	s.flagsIn, s.samplesN = 0, 0
	err1, err2 := s.objs.FlagsInN.Set(uint32(0)), s.objs.SamplesN.Set(uint32(0))
	s.reqMu.Unlock()
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("reset request gates: %w", err)
	}
	n, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("reset counters: %w", err)
	}
	if err := s.objs.Stats.Put(uint32(0), make([]knockwatchKwCounters, n)); err != nil {
		return fmt.Errorf("reset counters: %w", err)
	}
	return nil
}

// clearHash deletes every key of a hash map.
func clearHash(m *ebpf.Map) error {
	key := make([]byte, m.KeySize())
	for {
		if err := m.NextKey(nil, &key); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				return nil
			}
			return fmt.Errorf("clear %v: %w", m, err)
		}
		if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("clear %v: %w", m, err)
		}
	}
}

// zeroArray writes zeros over every entry of an array map, in batches.
func zeroArray(m *ebpf.Map) error {
	const chunk = 4096
	n := m.MaxEntries()
	keys := make([]uint32, 0, chunk)
	// A slice of value-sized byte arrays: batch updates take one value
	// per key.
	vals := reflect.MakeSlice(reflect.SliceOf(reflect.ArrayOf(int(m.ValueSize()), reflect.TypeFor[byte]())), chunk, chunk)
	one := make([]byte, m.ValueSize())
	for start := uint32(0); start < n; start += chunk {
		keys = keys[:0]
		for k := start; k < min(n, start+chunk); k++ {
			keys = append(keys, k)
		}
		if _, err := m.BatchUpdate(keys, vals.Slice(0, len(keys)).Interface(), nil); err != nil {
			if !errors.Is(err, ebpf.ErrNotSupported) {
				return fmt.Errorf("zero %v: %w", m, err)
			}
			for _, k := range keys {
				if err := m.Put(k, one); err != nil {
					return fmt.Errorf("zero %v: %w", m, err)
				}
			}
		}
	}
	return nil
}
