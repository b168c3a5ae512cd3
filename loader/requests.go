package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
)

// ErrTableFull is returned when flags_in or samples has no room left.
var ErrTableFull = errors.New("table full")

// SetRemoteFlag tells the program that another sensor flagged (src, dst)
// until until (a scale-out deployment: the knock crossed another tap,
// docs/SCALE-OUT.md). Until then this sensor watches the pair's handshakes
// as a flagged pair's and reports them (HANDSHAKE records with RemoteFlag
// set), whether or not it saw the knock itself. Setting a pair again moves
// its expiry.
func (s *Sensor) SetRemoteFlag(src, dst netip.Addr, until time.Time) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("set remote flag: %w", ErrSensorClosed)
	}
	k := knockwatchKwPair{}
	k.Src.B, k.Dst.B = src.As16(), dst.As16()
	return s.request(s.objs.FlagsIn, s.objs.FlagsInN, &s.flagsIn, k, s.programTime(until), "set remote flag")
}

// RequestSample asks the program for the next handshake completed to host
// before until (whoever made it): one HANDSHAKE record with Sample set, to
// measure the host's clock against its own connection logs
// (docs/COVERAGE.md). The program removes the request when it reports it.
func (s *Sensor) RequestSample(host netip.Addr, until time.Time) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("request sample: %w", ErrSensorClosed)
	}
	var k knockwatchKwAddr
	k.B = host.As16()
	return s.request(s.objs.Samples, s.objs.SamplesN, &s.samplesN, k, s.programTime(until), "request sample")
}

// request puts key -> until into m and keeps the gate gate (the number of
// entries userspace put, which the program reads to skip empty tables).
func (s *Sensor) request(m *ebpf.Map, gate *ebpf.Variable, n *uint32, key any, until uint64, what string) error {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	var old uint64
	isNew := m.Lookup(key, &old) != nil
	if err := m.Put(key, until); err != nil {
		if isNew && errors.Is(err, syscall.E2BIG) {
			return fmt.Errorf("%s: %w (%d entries)", what, ErrTableFull, m.MaxEntries())
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if isNew {
		*n++
		if err := gate.Set(*n); err != nil {
			return fmt.Errorf("%s: open the gate: %w", what, err)
		}
	}
	return nil
}

// PruneRequests removes remote flags and sample requests that expired
// before now (and sample requests the program already answered), and
// returns how many of each remain. Run it now and then (the daemon does
// with its sweep).
func (s *Sensor) PruneRequests(now time.Time) (flags, samples int, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, 0, fmt.Errorf("prune requests: %w", ErrSensorClosed)
	}
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	t := s.programTime(now)
	var fk knockwatchKwPair
	if flags, err = prune(s.objs.FlagsIn, &fk, t); err != nil {
		return 0, 0, err
	}
	var sk knockwatchKwAddr
	if samples, err = prune(s.objs.Samples, &sk, t); err != nil {
		return 0, 0, err
	}
	s.flagsIn, s.samplesN = uint32(flags), uint32(samples)
	if err := s.objs.FlagsInN.Set(s.flagsIn); err != nil {
		return 0, 0, fmt.Errorf("prune requests: %w", err)
	}
	if err := s.objs.SamplesN.Set(s.samplesN); err != nil {
		return 0, 0, fmt.Errorf("prune requests: %w", err)
	}
	return flags, samples, nil
}

// prune deletes the entries of m whose expiry is before now and returns how
// many are left.
func prune[K any](m *ebpf.Map, key *K, now uint64) (int, error) {
	var until uint64
	var stale []K
	left := 0
	it := m.Iterate()
	for it.Next(key, &until) {
		if int64(now-until) > 0 {
			stale = append(stale, *key)
		} else {
			left++
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("read %v: %w", m, err)
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, fmt.Errorf("prune %v: %w", m, err)
		}
	}
	return left, nil
}
