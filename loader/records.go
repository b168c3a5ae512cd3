package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"unsafe"

	"github.com/knockwatch/knockwatch/sensor"
)

// Record type tags (enum kw_record_type).
const (
	recKnock     = 1
	recHandshake = 2
	recTouch     = 3
)

// Why a HANDSHAKE was sent (enum kw_hs_why).
const (
	hsFlagged = 1
	hsSample  = 2
	hsRemote  = 4
)

// ErrShortRecord is returned for a record shorter than its type says.
var ErrShortRecord = errors.New("short record")

func addr(b [16]uint8) netip.Addr { return netip.AddrFrom16(b).Unmap() }

// DecodeRecord decodes one raw ring-buffer record.
func DecodeRecord(raw []byte, clock sensor.Clock) (sensor.Record, error) {
	if len(raw) < 4 {
		return nil, fmt.Errorf("decode record: %w: %d bytes", ErrShortRecord, len(raw))
	}
	switch typ := binary.NativeEndian.Uint32(raw); typ {
	case recKnock:
		var r knockwatchKnockRec
		if len(raw) < int(unsafe.Sizeof(r)) {
			return nil, fmt.Errorf("decode knock: %w: %d bytes", ErrShortRecord, len(raw))
		}
		if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, &r); err != nil {
			return nil, fmt.Errorf("decode knock: %w", err)
		}
		return knockOf(&r, clock), nil
	case recHandshake:
		var r knockwatchHandshakeRec
		if len(raw) < int(unsafe.Sizeof(r)) {
			return nil, fmt.Errorf("decode handshake: %w: %d bytes", ErrShortRecord, len(raw))
		}
		if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, &r); err != nil {
			return nil, fmt.Errorf("decode handshake: %w", err)
		}
		return &sensor.Handshake{
			Src:            addr(r.Conn.Pair.Src.B),
			Dst:            addr(r.Conn.Pair.Dst.B),
			SrcPort:        r.Conn.Sport,
			Port:           r.Conn.Dport,
			SYN:            sensor.Stamp(clock, r.SynTs),
			SYNACK:         sensor.Stamp(clock, r.SynackTs),
			ACK:            sensor.Stamp(clock, r.AckTs),
			PortLastClosed: sensor.Stamp(clock, r.PortLastClosed),
			PortFirstOpen:  sensor.Stamp(clock, r.PortFirstOpen),
			PortLastOpen:   sensor.Stamp(clock, r.PortLastOpen),
			PortOtherDone:  sensor.Stamp(clock, r.PortOtherDone),
			Distinct:       int(r.Distinct),
			Attempted:      int(r.Attempted),
			Epoch:          r.Epoch,
			RemoteFlag:     r.Why&hsRemote != 0,
			Sample:         r.Why&hsFlagged == 0 && r.Why&hsSample != 0,
		}, nil
	case recTouch:
		var r knockwatchTouchRec
		if len(raw) < int(unsafe.Sizeof(r)) {
			return nil, fmt.Errorf("decode touch: %w: %d bytes", ErrShortRecord, len(raw))
		}
		if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, &r); err != nil {
			return nil, fmt.Errorf("decode touch: %w", err)
		}
		return &sensor.TouchRecord{
			Src:     addr(r.Conn.Pair.Src.B),
			Dst:     addr(r.Conn.Pair.Dst.B),
			SrcPort: r.Conn.Sport,
			Port:    r.Conn.Dport,
			Time:    sensor.Stamp(clock, r.Ts),
			Kind:    sensor.TouchKind(r.Kind),
		}, nil
	default:
		return nil, fmt.Errorf("decode record: unknown type %d", typ)
	}
}

// knockOf converts a KNOCK record; its touches come out ordered by time
// (the ring is in detection order, and an S0 touch is detected after later
// REJ touches; analysts want the sequence as sent).
func knockOf(r *knockwatchKnockRec, clock sensor.Clock) *sensor.Knock {
	k := &sensor.Knock{
		Src:       addr(r.Pair.Src.B),
		Dst:       addr(r.Pair.Dst.B),
		Distinct:  int(r.Distinct),
		Attempted: int(r.Attempted),
		Epoch:     r.Epoch,
		FlagTime:  sensor.Stamp(clock, r.FlagTs),
	}
	n := min(int(r.N), len(r.Touches))
	for _, t := range r.Touches[:n] {
		k.Touches = append(k.Touches, sensor.Touch{Port: t.Port, SrcPort: t.Sport, Time: sensor.Stamp(clock, t.Ts),
			Kind: sensor.TouchKind(t.Kind)})
	}
	sort.SliceStable(k.Touches, func(i, j int) bool { return k.Touches[i].Time.Before(k.Touches[j].Time) })
	return k
}
