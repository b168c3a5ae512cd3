package gotwin

import "encoding/binary"

// Sizes from bpf/include/types.h.
const (
	maxTouches     = 16 // KW_MAX_TOUCHES
	pendingPerPair = 4  // KW_PENDING
	reportedPorts  = 8  // KW_REPORTED_PORTS
)

// Touch kinds (enum kw_touch_kind) and tiers (enum kw_tier).
const (
	touchREJ = 1
	touchS0  = 2

	tierDone      = 0
	tierPromote   = 1
	tierCandidate = 2
)

type touch struct {
	ts   uint64
	port uint16
	kind uint8
}

type pending struct {
	ts    uint64
	seq   uint32
	sport uint16
	dport uint16
}

// pairSlot is struct pair_slot without its lock.
type pairSlot struct {
	firstPort uint16
	firstKind uint8
	candHash  uint32
	firstTS   uint64
	owner     pair
	pend      [pendingPerPair]pending
}

type candidate struct {
	head     uint8
	n        uint8
	distinct uint16
	flagSent bool
	lastTS   uint64
	ring     [maxTouches]touch
}

type flagged struct {
	nreported uint16
	distinct  uint16
	flagTS    uint64
	reported  [reportedPorts]uint16
}

type watch struct {
	synSeq, synackSeq uint32
	state             uint32
	synTS, synackTS   uint64
	portLastClosed    uint64
	portLastOpen      uint64
}

type portSlot struct {
	host       addr
	port       uint16
	lastClosed uint64
	lastOpen   uint64
}

// knockRec is the staged struct knock_rec (the program's per-CPU scratch).
type knockRec struct {
	n        uint16
	distinct uint16
	touches  [maxTouches]touch
}

type tier2Args struct {
	first touch
	ts    uint64
	now   uint64
	port  uint16
	kind  uint8
	tier  uint8
}

// after is kw_after: a later than b by more than d, robust to a < b.
func after(a, b, d uint64) bool { return int64(a-b) > int64(d) }

// within is kw_within: newest - ts <= d in signed arithmetic.
func within(newest, ts, d uint64) bool { return int64(d)-int64(newest-ts) >= 0 }

func mix(h, v uint32) uint32 {
	h ^= v
	h *= 0x9e3779b1
	h ^= h >> 16
	return h
}

// hashAddr loads the address as four native-endian words, as kw_hash_addr
// does on bpfel (the only byte order the program is built for).
func hashAddr(h uint32, a *addr) uint32 {
	h = mix(h, binary.LittleEndian.Uint32(a[0:]))
	h = mix(h, binary.LittleEndian.Uint32(a[4:]))
	h = mix(h, binary.LittleEndian.Uint32(a[8:]))
	h = mix(h, binary.LittleEndian.Uint32(a[12:]))
	return h
}

func (t *Twin) hashPair(p *pair) uint32 {
	h := t.seed
	h = hashAddr(h, &p.src)
	h = hashAddr(h, &p.dst)
	h *= 0x85ebca6b
	return h ^ (h >> 13)
}

func (t *Twin) hashPort(host *addr, port uint16) uint32 {
	h := hashAddr(t.seed^0x5bd1e995, host)
	h = mix(h, uint32(port))
	h *= 0x85ebca6b
	return h ^ (h >> 13)
}

// portSeen is kw_port_seen; it returns the timestamps from before the
// update (0 = never seen).
func (t *Twin) portSeen(host *addr, port uint16, open bool, ts uint64) (closed, opened uint64) {
	ps := &t.ports[t.hashPort(host, port)&t.portMask]
	if ps.port != port || ps.host != *host {
		if ps.lastClosed != 0 || ps.lastOpen != 0 {
			t.c[cPortSlotTakeover]++
		}
		ps.host = *host
		ps.port = port
		ps.lastClosed = 0
		ps.lastOpen = 0
	}
	closed, opened = ps.lastClosed, ps.lastOpen
	if open {
		if after(ts, opened, t.portRefresh) || opened == 0 {
			ps.lastOpen = ts
		}
	} else {
		if after(ts, closed, t.portRefresh) || closed == 0 {
			ps.lastClosed = ts
		}
	}
	return closed, opened
}
