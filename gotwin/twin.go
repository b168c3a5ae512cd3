package gotwin

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/knockwatch/knockwatch/sensor"
)

// Twin is one instance of the tracking state, the Go counterpart of one
// loaded program in replay mode. It is not safe for concurrent use.
type Twin struct {
	cfg     sensor.Config
	verdict uint32

	window, s0Timeout, hsTimeout, portRefresh uint64
	minPorts                                  uint32
	seed, slotMask, portMask                  uint32

	slots   []pairSlot
	ports   []portSlot
	cands   *lru[pair, candidate]
	flagged *lru[pair, flagged]
	watches *lru[conn, watch]
	allow   []netip.Prefix // IPv4 stored IPv4-mapped, as the LPM trie keys it

	anyFlagged bool
	watchUntil uint64
	// inFlight counts watches in state 2 (SYN-ACK seen, ACK awaited). Only
	// those can complete, so while it is 0 a plain ACK needs no lookup —
	// a shortcut of the twin's own, invisible in records and counters.
	inFlight int

	c [numCounters]uint64

	// The program's per-CPU scratch: a staged KNOCK record and the touches
	// a handler leaves to the entry point.
	rec  knockRec
	work struct {
		pair pair
		n    int
		t    [pendingPerPair]tier2Args
	}

	ringSize, ringUsed uint64
	records            []sensor.Record
}

// New checks cfg as loader.Load does and returns an empty twin. Replay is
// implied: the twin always runs on the times it is given. A zero HashSeed
// picks a random one, as the loader does; set it to compare with a program
// loaded with the same seed.
func New(cfg sensor.Config) (*Twin, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("check config: %w", err)
	}
	seed := cfg.HashSeed
	if seed == 0 {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("read random hash seed: %w", err)
		}
		seed = binary.LittleEndian.Uint32(b[:]) | 1
	}
	t := &Twin{
		cfg:         cfg,
		verdict:     sensor.XDPDrop,
		window:      uint64(cfg.Window),
		s0Timeout:   uint64(cfg.S0Timeout),
		hsTimeout:   uint64(cfg.HandshakeTimeout),
		portRefresh: uint64(cfg.PortRefresh),
		minPorts:    uint32(cfg.MinPorts),
		seed:        seed,
		slotMask:    sensor.RoundPow2(cfg.PairSlots) - 1,
		portMask:    sensor.RoundPow2(cfg.PortSlots) - 1,
		cands:       newLRU[pair, candidate](int(cfg.Candidates)),
		flagged:     newLRU[pair, flagged](int(cfg.Flagged)),
		watches:     newLRU[conn, watch](int(cfg.Watches)),
		ringSize:    uint64(cfg.RingBytes),
	}
	if cfg.Pass {
		t.verdict = sensor.XDPPass
	}
	t.watches.onEvict = func(w *watch) {
		if w.state == 2 {
			t.inFlight--
		}
	}
	t.slots = make([]pairSlot, t.slotMask+1)
	t.ports = make([]portSlot, t.portMask+1)
	// Touch the tables as the kernel's preallocated maps are: the memory
	// a replay takes is set by the configuration from the first packet.
	for i := range t.slots {
		t.slots[i].candHash = 0
	}
	for i := range t.ports {
		t.ports[i].port = 0
	}
	return t, nil
}

// Config returns the configuration the twin was made with.
func (t *Twin) Config() sensor.Config { return t.cfg }

// SetAllowlist replaces the allowlisted source prefixes, with the loader's
// capacity check. Sources inside are counted but never flagged.
func (t *Twin) SetAllowlist(prefixes []netip.Prefix) error {
	seen := map[netip.Prefix]bool{}
	var out []netip.Prefix
	for _, p := range prefixes {
		p = p.Masked()
		a := netip.AddrFrom16(p.Addr().As16())
		b := p.Bits()
		if p.Addr().Is4() {
			b += 96
		}
		q := netip.PrefixFrom(a, b)
		if !seen[q] {
			seen[q] = true
			out = append(out, q)
		}
	}
	if uint32(len(out)) > t.cfg.Allowlist {
		return fmt.Errorf("set allowlist: %d prefixes, room for %d", len(out), t.cfg.Allowlist)
	}
	t.allow = out
	return nil
}

func (t *Twin) allowlisted(a *addr) bool {
	ip := netip.AddrFrom16(*a)
	for _, p := range t.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Run pushes one packet (starting at the Ethernet header) stamped with ts
// through the state machine and returns the verdict (sensor.XDPDrop or
// sensor.XDPPass), as (*loader.Runner).Run does.
func (t *Twin) Run(pkt []byte, ts time.Time) uint32 {
	var p packet
	t.c[cPackets]++
	t.c[cBytes] += uint64(len(pkt))

	rc := parse(pkt, &p)
	if p.vlan != 0 {
		t.c[cVLAN]++
	}
	if rc != parseOK {
		t.countParse(rc)
		return t.verdict
	}
	t.c[cTCP]++
	if p.ipv6 {
		t.c[cIPv6]++
	} else {
		t.c[cIPv4]++
	}
	// Replay mode: every packet carries its capture time (unix ns); 0
	// reads as missing.
	now := uint64(ts.UnixNano())
	if now == 0 {
		t.c[cNoMeta]++
		return t.verdict
	}
	if p.flags&(thSYN|thRST) == 0 {
		if t.watchUntil != 0 {
			t.onACK(&p, now)
		}
		return t.verdict
	}
	if p.flags&thSYN != 0 && p.flags&thRST != 0 {
		t.c[cBadFlags]++
		return t.verdict
	}
	if p.flags&thSYN != 0 && p.flags&thACK != 0 {
		t.onSYNACK(&p, now)
		return t.verdict
	}
	t.work.n = 0
	if p.flags&thRST != 0 {
		t.onRST(&p)
	} else {
		t.onSYN(&p, now)
	}
	for i := 0; i < pendingPerPair && i < t.work.n; i++ {
		t.tier2(&t.work.pair, &t.work.t[i])
	}
	return t.verdict
}

func (t *Twin) countParse(rc int) {
	switch rc {
	case parseNonIP:
		t.c[cNonIP]++
	case parseNonTCP:
		t.c[cNonTCP]++
	case parseTruncated:
		t.c[cTruncated]++
	case parseFragment:
		t.c[cFragment]++
	case parseUnknownExt:
		t.c[cUnknownExt]++
	default:
		t.c[cBadHeader]++
	}
}

// Sweep ages pending SYNs older than the S0 timeout at now into S0 touches,
// over every pair slot in slot order, as knockwatch_sweep does. Returns the
// S0 touches found.
func (t *Twin) Sweep(now time.Time) int {
	ns := uint64(now.UnixNano())
	total := 0
	// Close the watched-ACK gate once nothing can be in flight.
	if t.watchUntil != 0 && after(ns, t.watchUntil, 0) {
		t.watchUntil = 0
	}
	for i := range t.slots {
		slot := &t.slots[i]
		if slot.pend[0].ts == 0 && slot.pend[1].ts == 0 && slot.pend[2].ts == 0 && slot.pend[3].ts == 0 {
			continue
		}
		var first touch
		var args [pendingPerPair]tier2Args
		owner := slot.owner
		h := t.hashPair(&owner)
		for j := range slot.pend {
			e := &slot.pend[j]
			if e.ts == 0 || !after(ns, e.ts, t.s0Timeout) {
				continue
			}
			args[j] = tier2Args{ts: e.ts, now: ns, port: e.dport, kind: touchS0,
				tier: t.tier1(slot, h, e.dport, touchS0, e.ts, &first)}
			e.ts = 0
		}
		for j := range args {
			a := &args[j]
			if a.ts == 0 {
				continue
			}
			total++
			a.first = first
			t.portSeen(&owner.dst, a.port, false, a.ts)
			t.c[cTouchS0]++
			t.tier2(&owner, a)
		}
	}
	return total
}
