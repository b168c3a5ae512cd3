package gotwin

import (
	"net/netip"
	"sort"
	"time"

	"github.com/knockwatch/knockwatch/sensor"
)

// Record sizes in the ring buffer: sizeof(struct knock_rec) and
// sizeof(struct handshake_rec) (bpf/include/types.h).
const (
	knockRecSize     = 304
	handshakeRecSize = 88
	ringHeader       = 8 // BPF_RINGBUF_HDR_SZ
)

// handshakeRec is the staged struct handshake_rec.
type handshakeRec struct {
	distinct       uint16
	conn           conn
	synTS          uint64
	synackTS       uint64
	ackTS          uint64
	portLastClosed uint64
	portLastOpen   uint64
}

// reserve is bpf_ringbuf_reserve's space check: the producer may not run
// more than size-1 bytes ahead of the consumer, counting each record with
// its header, 8-byte aligned.
func (t *Twin) reserve(size uint64) bool {
	n := (size + ringHeader + 7) &^ 7
	if t.ringUsed+n > t.ringSize-1 {
		return false
	}
	t.ringUsed += n
	return true
}

// stamp converts program time as the loader's replay clock does (0: zero).
func stamp(ns uint64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return sensor.UnixClock(ns)
}

func toAddr(a addr) netip.Addr { return netip.AddrFrom16(a).Unmap() }

// emitKnock converts the staged record the way loader.DecodeRecord does.
func (t *Twin) emitKnock(p *pair, rec *knockRec, now uint64) {
	k := &sensor.Knock{
		Src:      toAddr(p.src),
		Dst:      toAddr(p.dst),
		Distinct: int(rec.distinct),
		FlagTime: stamp(now),
	}
	n := min(int(rec.n), maxTouches)
	for _, tc := range rec.touches[:n] {
		k.Touches = append(k.Touches, sensor.Touch{Port: tc.port, Time: stamp(tc.ts), Kind: sensor.TouchKind(tc.kind)})
	}
	sort.SliceStable(k.Touches, func(i, j int) bool { return k.Touches[i].Time.Before(k.Touches[j].Time) })
	t.records = append(t.records, k)
}

func (t *Twin) emitHandshake(hs *handshakeRec) {
	t.records = append(t.records, &sensor.Handshake{
		Src:            toAddr(hs.conn.pair.src),
		Dst:            toAddr(hs.conn.pair.dst),
		SrcPort:        hs.conn.sport,
		Port:           hs.conn.dport,
		SYN:            stamp(hs.synTS),
		SYNACK:         stamp(hs.synackTS),
		ACK:            stamp(hs.ackTS),
		PortLastClosed: stamp(hs.portLastClosed),
		PortLastOpen:   stamp(hs.portLastOpen),
		Distinct:       int(hs.distinct),
	})
}

// Records returns the records sent since the last call, in the order the
// program would have put them on its ring buffer, and frees the ring.
func (t *Twin) Records() []sensor.Record {
	out := t.records
	t.records = nil
	t.ringUsed = 0
	return out
}

// Pending reports how many records wait to be drained.
func (t *Twin) Pending() int { return len(t.records) }
