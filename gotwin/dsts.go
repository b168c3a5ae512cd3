package gotwin

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/knockwatch/knockwatch/sensor"
)

// dstRefresh is KW_DST_REFRESH_NS: syn_dsts is written at most once a
// second per host.
const dstRefresh = uint64(time.Second)

// maxDstNets is the room of dst_nets (loader.MaxDestinationNets).
const maxDstNets = 256

// noteDst is kw_note_dst (bpf/include/syn.h): a SYN's destination inside
// dst_nets goes to syn_dsts; a known one is refreshed once a second; a
// full table is counted.
func (t *Twin) noteDst(d *addr, now uint64) {
	if last, ok := t.synDsts[*d]; ok {
		if int64(now-last) >= int64(dstRefresh) {
			t.synDsts[*d] = now
		}
		return
	}
	if !containsAny(t.dstNets, d) {
		return
	}
	if uint32(len(t.synDsts)) >= t.cfg.SYNDestinations {
		t.c[cSynDstFull]++
		return
	}
	t.synDsts[*d] = now
	t.c[cSynDstNew]++
}

// containsAny is an LPM trie lookup: whether a lies in one of prefixes
// (stored as mapped does).
func containsAny(prefixes []netip.Prefix, a *addr) bool {
	ip := netip.AddrFrom16(*a)
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// mapped stores p as the LPM tries key it: IPv4 IPv4-mapped.
func mapped(p netip.Prefix) netip.Prefix {
	p = p.Masked()
	b := p.Bits()
	if p.Addr().Is4() {
		b += 96
	}
	return netip.PrefixFrom(netip.AddrFrom16(p.Addr().As16()), b)
}

// SetDestinationNets is (*loader.Sensor).SetDestinationNets (the table
// starts empty again). The program's per-CPU dst_seen has no twin: it
// only skips lookups that would change nothing.
func (t *Twin) SetDestinationNets(prefixes []netip.Prefix) error {
	seen := map[netip.Prefix]bool{}
	var out []netip.Prefix
	for _, p := range prefixes {
		if !p.IsValid() {
			return fmt.Errorf("set destination networks: invalid prefix %v", p)
		}
		q := mapped(p)
		if !seen[q] {
			seen[q] = true
			out = append(out, q)
		}
	}
	if len(out) > maxDstNets {
		return fmt.Errorf("set destination networks: %d prefixes, room for %d", len(out), maxDstNets)
	}
	t.dstNets, t.dstNetsN = out, uint32(len(out))
	clear(t.synDsts)
	return nil
}

// SYNDestinations is (*loader.Sensor).SYNDestinations.
func (t *Twin) SYNDestinations(now time.Time, keep time.Duration) ([]sensor.Destination, error) {
	cut := uint64(now.Add(-keep).UnixNano())
	out := make([]sensor.Destination, 0, len(t.synDsts))
	for k, last := range t.synDsts {
		out = append(out, sensor.Destination{Addr: netip.AddrFrom16(k).Unmap(), LastSYN: time.Unix(0, int64(last)).UTC()})
		if int64(cut-last) > 0 {
			delete(t.synDsts, k)
		}
	}
	return out, nil
}
