package metrics

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/knockwatch/knockwatch/loader"
)

// maxIterate bounds the keys counted per map and scrape.
const maxIterate = 1 << 22

// ProgramMaps returns a BPFMaps source reading the fill level of every map
// the program uses, found through the kernel's program info (so it needs
// nothing from the loader but the program). Hash, LRU and LPM maps are
// counted key by key at scrape time (about a microsecond per entry);
// arrays and ring buffers report their capacity only.
func ProgramMaps(prog *ebpf.Program) func() ([]MapFill, error) {
	return func() ([]MapFill, error) {
		info, err := prog.Info()
		if err != nil {
			return nil, fmt.Errorf("read program info: %w", err)
		}
		ids, ok := info.MapIDs()
		if !ok {
			return nil, errors.New("read program info: map ids not available on this kernel")
		}
		var out []MapFill
		for _, id := range ids {
			m, err := ebpf.NewMapFromID(id)
			if err != nil {
				continue // map gone since
			}
			f, err := fill(m)
			m.Close()
			if err == nil && !strings.HasSuffix(f.Name, ".rodata") && !strings.HasSuffix(f.Name, ".bss") && !strings.HasSuffix(f.Name, ".data") {
				out = append(out, f)
			}
		}
		return out, nil
	}
}

// SensorMaps returns a BPFMaps source over maps the caller already holds
// (loader's Sensor.Maps), so no CAP_SYS_ADMIN is needed to open them by id.
func SensorMaps(maps []loader.Map) func() ([]MapFill, error) {
	return func() ([]MapFill, error) {
		out := make([]MapFill, 0, len(maps))
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
}

func fill(m *ebpf.Map) (MapFill, error) {
	mi, err := m.Info()
	if err != nil {
		return MapFill{}, err
	}
	f := MapFill{Name: mi.Name, Type: strings.ToLower(mi.Type.String()), MaxEntries: mi.MaxEntries, Entries: -1}
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
