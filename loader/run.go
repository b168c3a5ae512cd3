package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/knockwatch/knockwatch/sensor"
)

// xdpMD mirrors struct xdp_md for BPF_PROG_RUN's context.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// ErrNotReplay is returned by RunPacket on a sensor loaded in live mode.
var ErrNotReplay = errors.New("sensor not loaded in replay mode")

// Runner pushes packets through the program with BPF_PROG_RUN, each with its
// capture time in the XDP metadata (replay mode). It reuses its buffer, so
// one Runner serves one goroutine.
type Runner struct {
	prog *ebpf.Program
	buf  []byte
}

// NewRunner returns a Runner for a sensor loaded with sensor.Config.Replay.
func (s *Sensor) NewRunner() (*Runner, error) {
	if !s.cfg.Replay {
		return nil, ErrNotReplay
	}
	return &Runner{prog: s.objs.Knockwatch, buf: make([]byte, 0, 2048)}, nil
}

// Run runs one packet (starting at the Ethernet header) stamped with ts and
// returns the verdict.
func (r *Runner) Run(pkt []byte, ts time.Time) (uint32, error) {
	return r.run(pkt, ts, 1)
}

func (r *Runner) run(pkt []byte, ts time.Time, repeat uint32) (uint32, error) {
	r.buf = append(r.buf[:0], make([]byte, 8)...)
	binary.NativeEndian.PutUint64(r.buf, uint64(ts.UnixNano()))
	r.buf = append(r.buf, pkt...)
	ctx := xdpMD{Data: 8, DataEnd: uint32(len(r.buf))}
	ret, err := r.prog.Run(&ebpf.RunOptions{Data: r.buf, Context: &ctx, Repeat: repeat})
	if err != nil {
		return 0, fmt.Errorf("run packet: %w", err)
	}
	return ret, nil
}

// SetAllowlist replaces the allowlisted source prefixes. Sources inside are
// counted but never flagged.
func (s *Sensor) SetAllowlist(prefixes []netip.Prefix) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("set allowlist: %w", ErrSensorClosed)
	}
	want := map[knockwatchLpmKey]bool{}
	for _, p := range prefixes {
		want[lpmKey(p)] = true
	}
	if uint32(len(want)) > s.cfg.Allowlist {
		return fmt.Errorf("set allowlist: %d prefixes, room for %d", len(want), s.cfg.Allowlist)
	}
	return syncLPM(s.objs.Allowlist, want, "allowlist")
}

// syncLPM makes the LPM trie m hold exactly the keys of want (value 1):
// the new ones are added before the stale ones go, so a prefix in both
// the old and the new set is never missing.
func syncLPM(m *ebpf.Map, want map[knockwatchLpmKey]bool, what string) error {
	var k knockwatchLpmKey
	var v uint8
	var stale []knockwatchLpmKey
	it := m.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	for key := range want {
		if err := m.Put(key, uint8(1)); err != nil {
			return fmt.Errorf("add %v to %s: %w", key, what, err)
		}
	}
	for _, key := range stale {
		if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove stale %s entry: %w", what, err)
		}
	}
	return nil
}

func lpmKey(p netip.Prefix) knockwatchLpmKey {
	p = p.Masked()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	var k knockwatchLpmKey
	k.Prefixlen = uint32(bits)
	k.Addr = p.Addr().As16() // IPv4 comes out IPv4-mapped, as the program keys it
	return k
}

// Replayer drives a sensor loaded in replay mode packet by packet: each
// frame through BPF_PROG_RUN with its capture time, the sweep on capture
// time, and the records as they come. `knockwatch replay`'s xdp engine and
// the tests that hold the program to its Go twin use it. One goroutine.
type Replayer struct {
	s   *Sensor
	run *Runner
	rd  *Reader
}

// NewReplayer opens a runner and the ring buffer of a replay-mode sensor.
func (s *Sensor) NewReplayer() (*Replayer, error) {
	run, err := s.NewRunner()
	if err != nil {
		return nil, err
	}
	rd, err := s.NewReader()
	if err != nil {
		return nil, err
	}
	return &Replayer{s: s, run: run, rd: rd}, nil
}

// Run runs one frame stamped ts and returns the verdict.
func (r *Replayer) Run(frame []byte, ts time.Time) (uint32, error) { return r.run.Run(frame, ts) }

// Sweep ages pending SYNs at now (capture time) and returns the touches found.
func (r *Replayer) Sweep(now time.Time) (int, error) { return r.s.Sweep(now) }

// Counters reads the program's counters.
func (r *Replayer) Counters() (sensor.Counters, error) { return r.s.Counters() }

// Records drains every record already in the ring buffer, in order. It
// never waits for records still to come: a record the reader cannot decode
// is skipped (counted in Malformed) within a deadline of a second.
func (r *Replayer) Records() ([]sensor.Record, error) {
	var out []sensor.Record
	if r.rd.Pending() == 0 {
		return nil, nil
	}
	r.rd.SetDeadline(time.Now().Add(time.Second))
	for r.rd.Pending() > 0 {
		rec, err := r.rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			return out, fmt.Errorf("drain records: %w", err)
		}
		out = append(out, rec)
	}
	return out, nil
}

// Close closes the ring buffer (not the sensor).
func (r *Replayer) Close() error { return r.rd.Close() }

// SetRemoteFlag is (*Sensor).SetRemoteFlag (until in capture time).
func (r *Replayer) SetRemoteFlag(src, dst netip.Addr, until time.Time) error {
	return r.s.SetRemoteFlag(src, dst, until)
}

// RequestSample is (*Sensor).RequestSample (until in capture time).
func (r *Replayer) RequestSample(host netip.Addr, until time.Time) error {
	return r.s.RequestSample(host, until)
}
