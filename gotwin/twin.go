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

	// CFG of bpf/include/config.h.
	window, s0Timeout, hsTimeout, portRefresh, flagTTL, answerSkew uint64
	windowUs, s0TimeoutUs, answerSkewUs, flagTTLMs                 uint32
	minPorts                                                       uint32
	seed, pairMask, candMask, portMask, watchMask                  uint32

	// The maps of bpf/include/maps.h.
	pairs   []bucket
	owners  []pair
	cands   []candBucket
	ports   []portSlot
	watches []watch
	allow   []netip.Prefix // IPv4 stored IPv4-mapped, as the LPM trie keys it

	watchUntil uint64 // the .bss gate watch_until

	// flags_in and samples, and their gates flags_in_n and samples_n
	// (the entries userspace put; the program's own removals of samples
	// do not lower them).
	flagsIn            map[pair]uint64
	samples            map[addr]uint64
	flagsInN, samplesN uint32
	// dst_nets (IPv4 stored IPv4-mapped, as the trie keys it), its gate
	// dst_nets_n, and syn_dsts.
	dstNets  []netip.Prefix
	dstNetsN uint32
	synDsts  map[addr]uint64
	c        [numCounters]uint64
	s        scratch

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
	tb := cfg.Tables()
	t := &Twin{
		cfg:          cfg,
		verdict:      sensor.XDPDrop,
		window:       uint64(cfg.Window),
		s0Timeout:    uint64(cfg.S0Timeout),
		hsTimeout:    uint64(cfg.HandshakeTimeout),
		portRefresh:  uint64(cfg.PortRefresh),
		flagTTL:      uint64(cfg.FlagTTL),
		answerSkew:   uint64(cfg.AnswerSkew),
		windowUs:     uint32(cfg.Window / time.Microsecond),
		s0TimeoutUs:  uint32(cfg.S0Timeout / time.Microsecond),
		answerSkewUs: uint32(cfg.AnswerSkew / time.Microsecond),
		flagTTLMs:    uint32(cfg.FlagTTL / time.Millisecond),
		minPorts:     uint32(cfg.MinPorts),
		seed:         seed,
		pairMask:     tb.PairBuckets - 1,
		candMask:     tb.CandBuckets - 1,
		portMask:     tb.PortSlots - 1,
		watchMask:    tb.Watches - 1,
		ringSize:     uint64(cfg.RingBytes),
	}
	if cfg.Pass {
		t.verdict = sensor.XDPPass
	}
	// Allocated up front, as the kernel preallocates its arrays: the
	// memory a replay takes is set by the configuration.
	t.pairs = make([]bucket, tb.PairBuckets)
	t.cands = make([]candBucket, tb.CandBuckets)
	t.ports = make([]portSlot, tb.PortSlots)
	t.watches = make([]watch, tb.Watches)
	if cfg.ReportTouches {
		t.owners = make([]pair, tb.PairBuckets*ways)
	}
	t.flagsIn = map[pair]uint64{}
	t.samples = map[addr]uint64{}
	t.synDsts = map[addr]uint64{}
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
		q := mapped(p)
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

// Run pushes one packet (starting at the Ethernet header) stamped with ts
// through the program's entry point (bpf/knockwatch.c, knockwatch) and
// returns the verdict (sensor.XDPDrop or sensor.XDPPass), as
// (*loader.Replayer).Run does.
func (t *Twin) Run(frame []byte, ts time.Time) uint32 {
	s := &t.s
	t.c[cPackets]++
	t.c[cBytes] += uint64(len(frame))
	// Fast lane: a plain ACK or data segment of the usual shape leaves
	// before the full parse (same counters).
	if fl, v6 := peekFlags(frame); fl >= 0 && fl&(thSYN|thRST) == 0 && (fl&thACK == 0 || (t.watchUntil == 0 && !t.cfg.AckProof)) {
		t.c[cTCP]++
		if v6 {
			t.c[cIPv6]++
		} else {
			t.c[cIPv4]++
		}
		return t.verdict
	}
	p := &s.pkt
	p.vlan, p.ipv6 = 0, false
	rc := parse(frame, p)
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
	// Fast path: a plain ACK or data segment leaves unless a watched
	// handshake may be in flight or ACKs are to prove unseen answers.
	if p.flags&(thSYN|thRST) == 0 && (p.flags&thACK == 0 || (t.watchUntil == 0 && !t.cfg.AckProof)) {
		return t.verdict
	}
	// Replay mode: every packet carries its capture time (unix ns); 0
	// reads as missing.
	now := uint64(ts.UnixNano())
	if now == 0 {
		t.c[cNoMeta]++
		return t.verdict
	}
	s.nwork, s.st.n, s.st.knock = 0, 0, 0
	switch {
	case p.flags&(thSYN|thRST) == 0:
		if t.watchUntil != 0 && t.onWatchACK(frame, now) {
			return t.verdict
		}
		if !t.cfg.AckProof {
			return t.verdict
		}
		if t.cfg.VerifyChecksums && !csumOK(frame, p) {
			t.c[cBadCsum]++
			return t.verdict
		}
		t.onACKProof(now)
	case p.flags&thSYN != 0 && p.flags&thRST != 0:
		t.c[cBadFlags]++
		return t.verdict
	case p.flags&thSYN != 0 && p.flags&thACK == 0:
		// A SYN's checksum is not checked: it is an attempt either way.
		t.onSYN(now)
	default:
		if t.cfg.VerifyChecksums && !csumOK(frame, p) {
			t.c[cBadCsum]++
			return t.verdict
		}
		if p.flags&thSYN != 0 {
			t.onSYNACK(now)
		} else {
			t.onRST(now)
		}
	}
	t.runWork(now)
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
