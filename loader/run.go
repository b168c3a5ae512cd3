package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
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
	want := map[knockwatchLpmKey]bool{}
	for _, p := range prefixes {
		want[lpmKey(p)] = true
	}
	if uint32(len(want)) > s.cfg.Allowlist {
		return fmt.Errorf("set allowlist: %d prefixes, room for %d", len(want), s.cfg.Allowlist)
	}
	var k knockwatchLpmKey
	var stale []knockwatchLpmKey
	it := s.objs.Allowlist.Iterate()
	var v uint8
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read allowlist: %w", err)
	}
	for key := range want {
		if err := s.objs.Allowlist.Put(key, uint8(1)); err != nil {
			return fmt.Errorf("add %v to allowlist: %w", key, err)
		}
	}
	for _, key := range stale {
		if err := s.objs.Allowlist.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove stale allowlist entry: %w", err)
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
	k.Addr.B = p.Addr().As16() // IPv4 comes out IPv4-mapped, as the program keys it
	return k
}
