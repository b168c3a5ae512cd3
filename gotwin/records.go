package gotwin

import (
	"net/netip"
	"sort"
	"time"

	"github.com/knockwatch/knockwatch/sensor"
)

// Record sizes in the ring buffer: sizeof(struct knock_rec),
// sizeof(struct handshake_rec) and sizeof(struct touch_rec)
// (bpf/include/types.h; loader's TestDecode*Bytes hold the C layouts, and
// the differential test fills a small ring with every kind).
const (
	knockRecSize     = 312
	handshakeRecSize = 112
	touchRecSize     = 56
	ringHeader       = 8 // BPF_RINGBUF_HDR_SZ
)

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

func stamp(ns uint64) time.Time { return sensor.Stamp(sensor.UnixClock, ns) }

func toAddr(a addr) netip.Addr { return netip.AddrFrom16(a).Unmap() }

// emitKnock converts the staged record as loader.DecodeRecord does.
func (t *Twin) emitKnock(rec *knockRec) {
	k := &sensor.Knock{
		Src:       toAddr(rec.pair.src),
		Dst:       toAddr(rec.pair.dst),
		Distinct:  int(rec.distinct),
		Attempted: int(rec.attempted),
		Epoch:     rec.epoch,
		FlagTime:  stamp(rec.flagTS),
	}
	n := min(int(rec.n), maxTouches)
	for _, tc := range rec.touches[:n] {
		k.Touches = append(k.Touches, sensor.Touch{Port: tc.port, SrcPort: tc.sport, Time: stamp(tc.ts),
			Kind: sensor.TouchKind(tc.kind)})
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
		PortFirstOpen:  stamp(hs.portFirstOpen),
		PortLastOpen:   stamp(hs.portLastOpen),
		PortOtherDone:  stamp(hs.portOtherDone),
		Distinct:       int(hs.distinct),
		Attempted:      int(hs.attempted),
		Epoch:          hs.epoch,
		RemoteFlag:     hs.why&hsRemote != 0,
		Sample:         hs.why&hsFlagged == 0 && hs.why&hsSample != 0,
	})
}

func (t *Twin) emitTouch(c *conn, kind uint8, ts uint64) {
	t.records = append(t.records, &sensor.TouchRecord{
		Src:     toAddr(c.pair.src),
		Dst:     toAddr(c.pair.dst),
		SrcPort: c.sport,
		Port:    c.dport,
		Time:    stamp(ts),
		Kind:    sensor.TouchKind(kind),
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
