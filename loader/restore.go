package loader

import (
	"errors"
	"fmt"
	"sort"

	"github.com/cilium/ebpf"
	"github.com/knockwatch/knockwatch/sensor"
)

// FlaggedKnocks rebuilds a KNOCK record for every pair in the flagged map,
// with the touches its candidate still holds. A sensor restarted over
// pinned maps hands them to its new correlation engine, which never saw the
// KNOCK records the old process read: the flag survived in the kernel, the
// knock must survive in userspace too. Pairs whose candidate the LRU has
// evicted come back without touches and are skipped (counted in the second
// return value).
func (s *Sensor) FlaggedKnocks() ([]*sensor.Knock, int, error) {
	clock := s.Clock()
	var (
		key     knockwatchKwPair
		fl      knockwatchFlagged
		out     []*sensor.Knock
		missing int
	)
	it := s.objs.Flagged.Iterate()
	for it.Next(&key, &fl) {
		var cd knockwatchCandidate
		if err := s.objs.Candidates.Lookup(&key, &cd); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				missing++
				continue
			}
			return out, missing, fmt.Errorf("read candidate: %w", err)
		}
		k := &sensor.Knock{
			Src:      addr(key.Src.B),
			Dst:      addr(key.Dst.B),
			Distinct: int(max(cd.Distinct, fl.Distinct)),
			FlagTime: sensor.Stamp(clock, fl.FlagTs),
		}
		for _, t := range cd.Ring[:min(int(cd.N), len(cd.Ring))] {
			k.Touches = append(k.Touches, sensor.Touch{Port: t.Port, Time: sensor.Stamp(clock, t.Ts), Kind: sensor.TouchKind(t.Kind)})
		}
		sort.SliceStable(k.Touches, func(i, j int) bool { return k.Touches[i].Time.Before(k.Touches[j].Time) })
		out = append(out, k)
	}
	if err := it.Err(); err != nil {
		return out, missing, fmt.Errorf("read flagged pairs: %w", err)
	}
	return out, missing, nil
}
