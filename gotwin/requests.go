package gotwin

import (
	"fmt"
	"net/netip"
	"time"
)

// SetRemoteFlag is (*loader.Sensor).SetRemoteFlag: (src, dst) was flagged
// by another sensor until until.
func (t *Twin) SetRemoteFlag(src, dst netip.Addr, until time.Time) error {
	p := pair{src: src.As16(), dst: dst.As16()}
	if _, ok := t.flagsIn[p]; !ok {
		if uint32(len(t.flagsIn)) >= t.cfg.RemoteFlags {
			return fmt.Errorf("set remote flag: table full (%d entries)", t.cfg.RemoteFlags)
		}
		t.flagsInN++
	}
	t.flagsIn[p] = uint64(until.UnixNano())
	return nil
}

// RequestSample is (*loader.Sensor).RequestSample: report the next
// handshake completed to host before until.
func (t *Twin) RequestSample(host netip.Addr, until time.Time) error {
	h := addr(host.As16())
	if _, ok := t.samples[h]; !ok {
		if uint32(len(t.samples)) >= t.cfg.Samples {
			return fmt.Errorf("request sample: table full (%d entries)", t.cfg.Samples)
		}
		t.samplesN++
	}
	t.samples[h] = uint64(until.UnixNano())
	return nil
}

// PruneRequests is (*loader.Sensor).PruneRequests.
func (t *Twin) PruneRequests(now time.Time) (flags, samples int) {
	ns := uint64(now.UnixNano())
	for k, until := range t.flagsIn {
		if int64(ns-until) > 0 {
			delete(t.flagsIn, k)
		}
	}
	for k, until := range t.samples {
		if int64(ns-until) > 0 {
			delete(t.samples, k)
		}
	}
	t.flagsInN, t.samplesN = uint32(len(t.flagsIn)), uint32(len(t.samples))
	return len(t.flagsIn), len(t.samples)
}
