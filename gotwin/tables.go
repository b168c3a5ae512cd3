package gotwin

import "github.com/knockwatch/knockwatch/sensor"

// Sizes from bpf/include/types.h and maps.h.
const (
	ways          = 4  // KW_WAYS: entries per pair bucket
	candWays      = 4  // KW_CAND_WAYS
	cpend         = 8  // KW_CPEND: unanswered SYNs a candidate keeps
	maxTouches    = 16 // KW_MAX_TOUCHES
	reportedPorts = 8  // KW_REPORTED_PORTS
	stageMax      = 12 // KW_STAGE
	workMax       = 24 // KW_WORK
	dueEvicted    = cpend
)

// Touch kinds (enum kw_touch_kind) and the staging flags of touch.h/cands.h.
const (
	touchREJ     = 1
	touchS0      = 2
	touchRSTOS0  = 3
	touchAttempt = 4

	noPair   = 0x80 // KW_NOPAIR: a staged touch whose pair the sweep does not know
	recorded = 0x80 // KW_RECORDED: a first touch moving into its candidate
	noWay    = 0xffffffff
)

// Pair-bucket entry kinds (enum kw_slot_kind) and tag layout.
const (
	kFree        = 0
	kSYN         = 1
	kMark        = 2
	kEarlyRST    = 3
	kEarlySYNACK = 4
	kTouchREJ    = 5

	tagBusy = 0x10
)

func tagFP(tag uint32) uint32           { return tag >> 8 }
func tagKind(tag uint32) uint32         { return (tag >> 5) & 7 }
func tagVer(tag uint32) uint32          { return tag & 0xf }
func mkTag(fp, kind, ver uint32) uint32 { return fp<<8 | kind<<5 | ver&0xf }

// Why a handshake is watched and reported (enum kw_hs_why).
const (
	hsFlagged = 1
	hsSample  = 2
	hsRemote  = 4
)

// Victim ranks of pairs.h.
const (
	vFree  = 0
	vStale = 1
	vOld   = 2
	vMark  = 3
	vNone  = 4
)

// Work-queue steps (enum kw_op) and answer matches (enum kw_match).
const (
	wTouch     = 1
	wPromote   = 2
	wCandSYN   = 3
	wCandTouch = 4
	wOpened    = 5
	wEmit      = 6
	wMark      = 7
	wFlag      = 8
	wRecheck   = 9

	mRST     = 1
	mSYNACK  = 2
	mOrigRST = 3
	mACK     = 4
)

// slot is struct kw_slot.
type slot struct {
	tag, t, seq  uint32
	sport, dport uint16
}

// bucket is struct kw_bucket.
type bucket [ways]slot

// pend is struct kw_pend.
type pend struct {
	t            uint64
	seq          uint32
	sport, dport uint16
}

// touch is struct kw_touch.
type touch struct {
	ts          uint64
	port, sport uint16
	kind        uint8
}

// cand is struct kw_cand.
type cand struct {
	pair                                 pair
	lastTS, touchTS, flagTS, flagTouchTS uint64
	epoch                                uint32
	distinct, attempted                  uint16
	n, head, nrep, rephead, due          uint8
	reported                             [reportedPorts]uint16
	pend                                 [cpend]pend
	ring                                 [maxTouches]touch
}

// candBucket is struct kw_cand_bucket without its lock.
type candBucket [candWays]cand

// portSlot is struct port_slot.
type portSlot struct {
	key, doneFP                             uint32
	lastClosed, firstOpen, lastOpen, doneTS uint64
}

// watch is struct kw_watch without its lock.
type watch struct {
	state                                                 uint32
	conn                                                  conn
	synSeq, synackSeq, epoch                              uint32
	flagged, hasSynack, why                               uint8
	synTS, synackTS                                       uint64
	portLastClosed, portFirstOpen, portLastOpen, portDone uint64
	portDoneFP                                            uint32
}

// portSnap is struct kw_port_snap.
type portSnap struct {
	lastClosed, firstOpen, lastOpen, done uint64
	doneFP                                uint32
}

// openEv is struct kw_open_ev.
type openEv struct {
	conn              conn
	synTS, synackTS   uint64
	synSeq, synackSeq uint32
	hasSynack         uint8
	flagged           uint8
	why               uint8
	epoch             uint32
}

// knockRec is struct knock_rec.
type knockRec struct {
	n                   uint16
	distinct, attempted uint16
	epoch               uint32
	pair                pair
	flagTS              uint64
	touches             [maxTouches]touch
}

// handshakeRec is struct handshake_rec.
type handshakeRec struct {
	distinct, attempted uint16
	epoch               uint32
	why                 uint32
	conn                conn
	synTS, synackTS     uint64
	ackTS               uint64
	portLastClosed      uint64
	portFirstOpen       uint64
	portLastOpen        uint64
	portOtherDone       uint64
}

// tev is struct kw_tev (its kind is set by the C and never read).
type tev struct {
	conn    conn
	ts, now uint64
	seq     uint32
}

// staged is struct kw_staged.
type staged struct {
	conn  [stageMax]conn
	ts    [stageMax]uint64
	kind  [stageMax]uint8
	n     uint32
	knock uint8
}

// synScan is struct kw_syn_scan.
type synScan struct {
	same, early, mark       int32
	sameTag, earlyTag, cidx uint32
	due                     uint32
	other, flagged          uint32
}

// touchScan is struct kw_touch_scan.
type touchScan struct {
	mark, touch, other int32
	cidx, same         uint32
}

// ans is struct kw_ans.
type ans struct {
	pair         pair
	sport, dport uint16
	v, how       uint32
	epoch        uint32
	flagged      uint32
	found, mark  int32
	tag, cidx    uint32
}

// work is struct kw_work.
type work struct {
	ts          uint64
	a, b        uint32
	port, sport uint16
	op, kind    uint8
}

// scratch is the program's per-CPU struct kw_scratch: the twin keeps the
// same staging, so a value one step leaves for another is the same value.
type scratch struct {
	work  [workMax]work
	nwork uint32
	cur   struct {
		pair    pair
		h, fp   uint32
		hasPair bool
	}
	pkt   packet
	ans   ans
	oev   openEv
	scan  synScan
	tscan touchScan
	ins   struct {
		t, seq       uint32
		sport, dport uint16
		keepFP       uint32
	}
	hs                  handshakeRec
	rec                 knockRec
	st                  staged
	ev                  tev
	dues                [cpend + 1]touch
	moved               [ways]pend
	tags                [ways]uint32
	firsts              [ways]touch
	nmoved, nfirsts     uint32
	epoch               uint32
	distinct, attempted uint16
	matchT              uint64
	matchSeq            uint32
}

// Time arithmetic of helpers.h and pairs.h.

// after is kw_after: a later than b by more than d, robust to a < b.
func after(a, b, d uint64) bool { return int64(a-b) > int64(d) }

// within is kw_within: newest - ts <= d in signed arithmetic.
func within(newest, ts, d uint64) bool { return int64(d)-int64(newest-ts) >= 0 }

func us32(ns uint64) uint32 { return uint32(ns / 1000) }
func ms32(ns uint64) uint32 { return uint32(ns / 1000000) }

// usFull is kw_us_full: a 32-bit microsecond stamp read back near now.
func usFull(now uint64, t uint32) uint64 {
	nowUs := now / 1000
	d := int32(uint32(nowUs) - t)
	return (nowUs - uint64(int64(d))) * 1000
}

func age(now32, t uint32) int32 { return int32(now32 - t) }

// le32s is kw_le32s with b taken as the C's __s32 parameter.
func le32s(a int32, b uint32) bool { return int64(int32(b))-int64(a) >= 0 }

// later is kw_later: ts later than since (signed), or since is 0.
func later(ts, since uint64) bool { return (since-ts)>>63 != 0 || since == 0 }

func closedKind(kind uint8) bool { return kind == touchREJ || kind == touchS0 || kind == touchRSTOS0 }

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// Hashes of helpers.h, keyed by the load's seed.

// mix and hashAddr are kw_mix and kw_hash_addr; the pair hash is
// sensor.PairHash (one Go copy of the program's hashes).
func mix(h, v uint32) uint32 { return sensor.HashMix(h, v) }

func hashAddr(h uint32, a *addr) uint32 { return sensor.HashAddr(h, (*[16]byte)(a)) }

func (t *Twin) hashPair(p *pair) uint32 {
	return sensor.PairHash(t.seed, (*[16]byte)(&p.src), (*[16]byte)(&p.dst))
}

// fp is kw_fp: the 24-bit fingerprint of a hash, never 0.
func fp(h uint32) uint32 {
	f := (h * 0x9e3779b1) >> 8
	if f == 0 {
		return 1
	}
	return f
}

func (t *Twin) hashConn(c *conn) uint32 {
	h := hashAddr(t.seed^0x27d4eb2f, &c.pair.src)
	h = hashAddr(h, &c.pair.dst)
	h = mix(h, uint32(c.sport)<<16|uint32(c.dport))
	h *= 0x85ebca6b
	return h ^ (h >> 13)
}

func (t *Twin) hashPort(host *addr, port uint16) uint32 {
	h := hashAddr(t.seed^0x5bd1e995, host)
	h = mix(h, uint32(port))
	h *= 0x85ebca6b
	return h ^ (h >> 13)
}

func (t *Twin) srcFP(src *addr) uint32 { return fp(hashAddr(t.seed, src)) }
