package loader

import (
	"fmt"
	"time"

	"github.com/knockwatch/knockwatch/sensor"
)

// FlaggedKnocks rebuilds a KNOCK record for every candidate whose flag is
// still live at now (its last KNOCK younger than the flag TTL; in replay
// mode now is capture time), with the touches
// it holds. A sensor restarted over pinned maps hands them to its new
// correlation engine, which never saw the KNOCK records the old process
// read: the flag survived in the kernel, the knock must survive in
// userspace too. The second value counts flagged candidates without a
// touch left (none today: a flag needs touches; kept for the caller's log).
func (s *Sensor) FlaggedKnocks(at time.Time) ([]*sensor.Knock, int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, 0, fmt.Errorf("read flagged knocks: %w", ErrSensorClosed)
	}
	clock := s.Clock()
	now := s.programTime(at)
	ttl := uint64(s.cfg.FlagTTL)
	var (
		out     []*sensor.Knock
		missing int
		b       knockwatchKwCandBucket
	)
	for i := uint32(0); i < s.objs.Cands.MaxEntries(); i++ {
		if err := s.objs.Cands.Lookup(i, &b); err != nil {
			return out, missing, fmt.Errorf("read candidates: %w", err)
		}
		for _, cd := range b.C {
			if cd.FlagTs == 0 || int64(now-cd.FlagTs) > int64(ttl) {
				continue
			}
			var r knockwatchKnockRec
			r.Type = recKnock
			r.N = uint16(min(int(cd.N), len(cd.Ring)))
			r.Distinct, r.Attempted, r.Epoch = cd.Distinct, cd.Attempted, cd.Epoch
			r.Pair = cd.Pair
			r.FlagTs = cd.FlagTs
			// Oldest first, as the program stages a KNOCK.
			start := 0
			if int(cd.N) >= len(cd.Ring) {
				start = int(cd.Head)
			}
			for j := range r.Touches {
				t := cd.Ring[(start+j)%len(cd.Ring)]
				r.Touches[j].Ts, r.Touches[j].Port, r.Touches[j].Sport, r.Touches[j].Kind = t.Ts, t.Port, t.Sport, t.Kind
			}
			if r.N == 0 {
				missing++
				continue
			}
			out = append(out, knockOf(&r, clock))
		}
	}
	return out, missing, nil
}
