package loader

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/knockwatch/knockwatch/sensor"
)

// maxIterate bounds the keys counted per map and scrape.
const maxIterate = 1 << 22

// MapFills reads the size and use of every map of the program, for the
// bpf_map_* metrics. It uses the maps the sensor holds, so no
// CAP_SYS_ADMIN is needed to open them by id. Hash, LRU and LPM maps are
// counted key by key (about a microsecond per entry, at most maxIterate);
// arrays and ring buffers report their capacity only.
func (s *Sensor) MapFills() ([]sensor.MapFill, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("read map fill levels: %w", ErrSensorClosed)
	}
	maps := s.Maps()
	out := make([]sensor.MapFill, 0, len(maps))
	for _, m := range maps {
		f, err := fill(m.Map)
		if err != nil {
			return out, fmt.Errorf("read map %s: %w", m.Name, err)
		}
		f.Name = m.Name
		out = append(out, f)
	}
	return out, nil
}

func fill(m *ebpf.Map) (sensor.MapFill, error) {
	mi, err := m.Info()
	if err != nil {
		return sensor.MapFill{}, err
	}
	f := sensor.MapFill{Name: mi.Name, Type: strings.ToLower(mi.Type.String()), MaxEntries: mi.MaxEntries, Entries: -1}
	if mem, ok := mi.Memlock(); ok {
		f.MemlockBytes = mem
	}
	switch mi.Type {
	case ebpf.Hash, ebpf.LRUHash, ebpf.PerCPUHash, ebpf.LRUCPUHash, ebpf.LPMTrie:
		n, err := countKeys(m, int(mi.KeySize))
		if err != nil {
			return f, err
		}
		f.Entries = n
	}
	return f, nil
}

func countKeys(m *ebpf.Map, keySize int) (int64, error) {
	key := make([]byte, keySize)
	next := make([]byte, keySize)
	var n int64
	var cur any // nil: first key
	for n < maxIterate {
		if err := m.NextKey(cur, next); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				return n, nil
			}
			return n, fmt.Errorf("count map keys: %w", err)
		}
		n++
		copy(key, next)
		cur = key
	}
	return n, nil
}
