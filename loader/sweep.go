package loader

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
)

// sweepChunk is the number of buckets one BPF_PROG_RUN of the sweep visits;
// a pass over the default 2^18 pair buckets takes four runs.
const sweepChunk = 1 << 16

// Sweep ages pending SYNs older than the S0 timeout at now into S0 touches
// and sends KNOCKs whose one-per-window wait is over, over every pair
// bucket and then every candidate bucket, through the program's
// knockwatch_sweep. The packet path ages a pair's SYNs when the pair sends
// again; this catches the source that knocked and went quiet. Returns the
// S0 touches found.
func (s *Sensor) Sweep(now time.Time) (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, fmt.Errorf("sweep: %w", ErrSensorClosed)
	}
	ns := s.programTime(now)
	buf := make([]byte, 24+14) // metadata, then a dummy Ethernet header
	total := 0
	for which, m := range []*ebpf.Map{s.objs.Pairs, s.objs.Cands} {
		n := m.MaxEntries()
		for start := uint32(0); start < n; start += sweepChunk {
			binary.NativeEndian.PutUint64(buf[0:], ns)
			binary.NativeEndian.PutUint32(buf[8:], start)
			binary.NativeEndian.PutUint32(buf[12:], min(sweepChunk, n-start))
			binary.NativeEndian.PutUint32(buf[16:], uint32(which))
			ret, err := s.objs.KnockwatchSweep.Run(&ebpf.RunOptions{
				Data:    buf,
				Context: &xdpMD{Data: 24, DataEnd: uint32(len(buf))},
			})
			if err != nil {
				return total, fmt.Errorf("sweep: %w", err)
			}
			total += int(ret)
		}
	}
	return total, nil
}

// SweepEvery runs Sweep every interval until ctx ends (live mode). Errors
// go to onErr, which may be nil.
func (s *Sensor) SweepEvery(ctx context.Context, interval time.Duration, onErr func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if _, err := s.Sweep(now); err != nil && onErr != nil {
				onErr(err)
			}
		}
	}
}
