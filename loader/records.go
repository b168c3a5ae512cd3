package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"
	"unsafe"
)

// TouchKind says how a closed port was touched.
type TouchKind uint8

// Touch kinds, as Zeek names the connection states.
const (
	TouchREJ TouchKind = 1 // SYN answered by an RST
	TouchS0  TouchKind = 2 // SYN never answered
)

func (k TouchKind) String() string {
	switch k {
	case TouchREJ:
		return "REJ"
	case TouchS0:
		return "S0"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MarshalText writes REJ or S0.
func (k TouchKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Touch is one closed-port touch.
type Touch struct {
	Port uint16    `json:"port"`
	Time time.Time `json:"time"`
	Kind TouchKind `json:"kind"`
}

// Knock is a KNOCK record: Src touched at least MinPorts distinct closed
// ports on Dst within the window. Touches are ordered by time (the last 16).
type Knock struct {
	Src, Dst netip.Addr
	Touches  []Touch
	// Distinct closed ports of Src on Dst in the current burst (saturating
	// at 65535): a knock is a handful, a scan is hundreds.
	Distinct int
	FlagTime time.Time
}

// Handshake is a HANDSHAKE record: the first completed three-way handshake
// of a flagged pair to one port.
type Handshake struct {
	Src, Dst       netip.Addr
	SrcPort, Port  uint16
	SYN, SYNACK    time.Time
	ACK            time.Time
	PortLastClosed time.Time // zero: the sensor never saw the port closed
	PortLastOpen   time.Time // zero: never seen open before this connection
	Distinct       int
}

// Record is one record from the ring buffer: a *Knock or a *Handshake.
type Record interface{ isRecord() }

func (*Knock) isRecord()     {}
func (*Handshake) isRecord() {}

// Record type tags (enum kw_record_type).
const (
	recKnock     = 1
	recHandshake = 2
)

// ErrShortRecord is returned for a record shorter than its type says.
var ErrShortRecord = errors.New("short record")

// Clock converts the program's timestamps to wall-clock time. Live mode
// stamps CLOCK_TAI; replay mode stamps unix ns.
type Clock func(ns uint64) time.Time

// UnixClock reads ns as nanoseconds since the Unix epoch (replay mode).
func UnixClock(ns uint64) time.Time { return time.Unix(0, int64(ns)).UTC() }

func stamp(c Clock, ns uint64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return c(ns)
}

func addr(b [16]uint8) netip.Addr { return netip.AddrFrom16(b).Unmap() }

// DecodeRecord decodes one raw ring-buffer record.
func DecodeRecord(raw []byte, clock Clock) (Record, error) {
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
		k := &Knock{
			Src:      addr(r.Pair.Src.B),
			Dst:      addr(r.Pair.Dst.B),
			Distinct: int(r.Distinct),
			FlagTime: stamp(clock, r.FlagTs),
		}
		n := min(int(r.N), len(r.Touches))
		for _, t := range r.Touches[:n] {
			k.Touches = append(k.Touches, Touch{Port: t.Port, Time: stamp(clock, t.Ts), Kind: TouchKind(t.Kind)})
		}
		// The ring is in detection order; an S0 touch is detected after
		// later REJ touches. Analysts want the sequence as sent.
		sort.SliceStable(k.Touches, func(i, j int) bool { return k.Touches[i].Time.Before(k.Touches[j].Time) })
		return k, nil
	case recHandshake:
		var r knockwatchHandshakeRec
		if len(raw) < int(unsafe.Sizeof(r)) {
			return nil, fmt.Errorf("decode handshake: %w: %d bytes", ErrShortRecord, len(raw))
		}
		if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, &r); err != nil {
			return nil, fmt.Errorf("decode handshake: %w", err)
		}
		return &Handshake{
			Src:            addr(r.Conn.Pair.Src.B),
			Dst:            addr(r.Conn.Pair.Dst.B),
			SrcPort:        r.Conn.Sport,
			Port:           r.Conn.Dport,
			SYN:            stamp(clock, r.SynTs),
			SYNACK:         stamp(clock, r.SynackTs),
			ACK:            stamp(clock, r.AckTs),
			PortLastClosed: stamp(clock, r.PortLastClosed),
			PortLastOpen:   stamp(clock, r.PortLastOpen),
			Distinct:       int(r.Distinct),
		}, nil
	default:
		return nil, fmt.Errorf("decode record: unknown type %d", typ)
	}
}
