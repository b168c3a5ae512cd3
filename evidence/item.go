package evidence

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/knockwatch/knockwatch/correlate"
)

// Kind is what an Item holds.
type Kind uint8

// Kinds of evidence.
const (
	KindKnock     Kind = 1
	KindHandshake Kind = 2
	KindChange    Kind = 3
)

// Kinds lists every kind, in the order the metrics use.
var Kinds = []Kind{KindKnock, KindHandshake, KindChange}

// String returns knock, handshake or change: the names the pipeline's and
// the engine's counters use.
func (k Kind) String() string {
	switch k {
	case KindKnock:
		return "knock"
	case KindHandshake:
		return "handshake"
	case KindChange:
		return "change"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Item is one piece of evidence as the engine takes it: a KNOCK or a
// HANDSHAKE record from the sensor, or an exposure change decoded from a
// forwarded Windows event. Exactly one of Knock, Handshake and Change is
// set.
type Item struct {
	// Arrival is when knockwatch received the evidence (its wall clock).
	// A rebuild moves the engine's watermark to each item's arrival
	// before the item, as the live clock had.
	Arrival   time.Time
	Knock     *correlate.Knock
	Handshake *correlate.Handshake
	Change    *correlate.ExposureChange
}

// Kind returns the kind of evidence it holds (0 when none or more than one
// is set).
func (it *Item) Kind() Kind {
	var k Kind
	n := 0
	if it.Knock != nil {
		k, n = KindKnock, n+1
	}
	if it.Handshake != nil {
		k, n = KindHandshake, n+1
	}
	if it.Change != nil {
		k, n = KindChange, n+1
	}
	if n != 1 {
		return 0
	}
	return k
}

// Time is the item's event time: a knock's newest touch, a handshake's
// completing ACK, a change's host time. It is what the engine's retention
// compares, and so what the log's age bound and a rebuild's start compare.
func (it *Item) Time() time.Time {
	switch it.Kind() {
	case KindKnock:
		var t time.Time
		for _, x := range it.Knock.Touches {
			if x.Time.After(t) {
				t = x.Time
			}
		}
		return t
	case KindHandshake:
		return it.Handshake.ACK
	case KindChange:
		return it.Change.Time
	}
	return time.Time{}
}

// Validate reports why the engine would refuse the item.
func (it *Item) Validate() error {
	switch it.Kind() {
	case KindKnock:
		return it.Knock.Validate()
	case KindHandshake:
		return it.Handshake.Validate()
	case KindChange:
		return it.Change.Validate()
	}
	return ErrNoEvidence
}

// ErrNoEvidence is an Item with none (or more than one) of its fields set.
var ErrNoEvidence = errors.New("item holds no single piece of evidence")

// The encoding of an item (a frame's payload in the log), version 1:
//
//	version 1 | kind | arrival | event time | body
//
// Times are a signed varint of Unix seconds and an unsigned varint of
// nanoseconds (exact for every time.Time; the zero time round-trips).
// Addresses are a length byte (0, 4 or 16) and the bytes (zones are
// dropped: the engine ignores them). Strings and lists are a uvarint length
// and the elements; small enums are one byte. A change ends with the
// forwarder that delivered it (Origin) and the record it replaces (a flag
// byte, then channel, event id and record id), which a rebuilt engine needs
// to evict fairly and to keep one change per rule change. The event time is in the
// header so that reading a segment's age does not decode bodies. A
// decoder refuses any other version, so a log written by a newer
// knockwatch is skipped and counted, never misread.
//
// Version 2 adds what the sensor's records gained after version 1 was
// written: a knock ends with its Attempted count and Epoch, a handshake
// with PortFirstOpen, PortOtherDone, Attempted and Epoch. Without them a
// rebuilt engine (or a correlator reading the evidence from Kafka) would
// take "another source connected first" for "nobody did". Version 1
// payloads still decode, with those fields zero (unknown).
const (
	itemVersion   = 2
	itemVersionV1 = 1
)

// AppendItem appends the encoding of it to b.
func AppendItem(b []byte, it *Item) ([]byte, error) {
	return appendItemVersion(b, it, itemVersion)
}

func appendItemVersion(b []byte, it *Item, version byte) ([]byte, error) {
	k := it.Kind()
	if k == 0 {
		return b, ErrNoEvidence
	}
	b = append(b, version, byte(k))
	b = appendTime(b, it.Arrival)
	b = appendTime(b, it.Time())
	switch k {
	case KindKnock:
		kn := it.Knock
		b = appendAddr(b, kn.Src)
		b = appendAddr(b, kn.Dst)
		b = binary.AppendUvarint(b, uint64(max(kn.DistinctClosed, 0)))
		b = binary.AppendUvarint(b, uint64(len(kn.Touches)))
		for _, t := range kn.Touches {
			b = binary.AppendUvarint(b, uint64(t.Port))
			b = appendTime(b, t.Time)
			b = append(b, byte(t.Kind))
		}
		if version >= 2 {
			b = binary.AppendUvarint(b, uint64(max(kn.Attempted, 0)))
			b = binary.AppendUvarint(b, uint64(kn.Epoch))
		}
	case KindHandshake:
		h := it.Handshake
		b = appendAddr(b, h.Src)
		b = appendAddr(b, h.Dst)
		b = binary.AppendUvarint(b, uint64(h.SrcPort))
		b = binary.AppendUvarint(b, uint64(h.Port))
		for _, t := range []time.Time{h.SYN, h.SYNACK, h.ACK, h.PortLastClosed, h.PortLastOpen} {
			b = appendTime(b, t)
		}
		b = binary.AppendUvarint(b, uint64(max(h.DistinctClosed, 0)))
		if version >= 2 {
			b = appendTime(b, h.PortFirstOpen)
			b = appendTime(b, h.PortOtherDone)
			b = binary.AppendUvarint(b, uint64(max(h.Attempted, 0)))
			b = binary.AppendUvarint(b, uint64(h.Epoch))
		}
	case KindChange:
		c := it.Change
		b = appendTime(b, c.Time)
		b = appendString(b, c.Host)
		b = binary.AppendUvarint(b, uint64(len(c.HostIPs)))
		for _, ip := range c.HostIPs {
			b = appendAddr(b, ip)
		}
		b = append(b, byte(c.Kind))
		if c.Ports.Any {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
		b = binary.AppendUvarint(b, uint64(len(c.Ports.Ranges)))
		for _, r := range c.Ports.Ranges {
			b = binary.AppendUvarint(b, uint64(r.Lo))
			b = binary.AppendUvarint(b, uint64(r.Hi))
		}
		b = binary.AppendUvarint(b, uint64(c.Protocol))
		b = append(b, byte(c.Direction), byte(c.Action), byte(c.Active))
		for _, s := range []string{c.RuleID, c.RuleName, c.Application, c.Service, c.ModifyingUser, c.ModifyingApplication} {
			b = appendString(b, s)
		}
		b = binary.AppendUvarint(b, uint64(c.ProcessID))
		b = binary.AppendUvarint(b, uint64(c.EventID))
		b = appendString(b, c.Channel)
		b = binary.AppendUvarint(b, c.RecordID)
		b = appendString(b, c.Origin)
		if r := c.Replaces; r != nil {
			b = append(b, 1)
			b = appendString(b, r.Channel)
			b = binary.AppendUvarint(b, uint64(r.EventID))
			b = binary.AppendUvarint(b, r.RecordID)
		} else {
			b = append(b, 0)
		}
	}
	return b, nil
}

// zeroUnix is the Unix second of the zero time.Time.
var zeroUnix = time.Time{}.Unix()

func appendTime(b []byte, t time.Time) []byte {
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

func appendAddr(b []byte, a netip.Addr) []byte {
	switch {
	case !a.IsValid():
		return append(b, 0)
	case a.Is4():
		v := a.As4()
		return append(append(b, 4), v[:]...)
	}
	v := a.As16()
	return append(append(b, 16), v[:]...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// ErrBadItem is a payload that does not decode as an item.
var ErrBadItem = errors.New("bad evidence item")

// itemHeader reads the version, kind, arrival and event time of a payload.
func itemHeader(p []byte) (k Kind, arrival, event time.Time, rest []byte, err error) {
	_, k, arrival, event, rest, err = itemHeaderVersion(p)
	return k, arrival, event, rest, err
}

func itemHeaderVersion(p []byte) (v byte, k Kind, arrival, event time.Time, rest []byte, err error) {
	d := decoder{b: p}
	if v = d.byte(); v != itemVersion && v != itemVersionV1 {
		return v, 0, arrival, event, nil, fmt.Errorf("%w: version %d (this knockwatch reads %d and %d)", ErrBadItem, v, itemVersionV1, itemVersion)
	}
	k = Kind(d.byte())
	arrival, event = d.time(), d.time()
	if d.err != nil {
		return v, 0, arrival, event, nil, d.err
	}
	if k < KindKnock || k > KindChange {
		return v, 0, arrival, event, nil, fmt.Errorf("%w: kind %d", ErrBadItem, k)
	}
	return v, k, arrival, event, d.b, nil
}

// DecodeItem decodes a payload AppendItem wrote. The item does not alias
// p.
func DecodeItem(p []byte) (Item, error) {
	version, k, arrival, _, rest, err := itemHeaderVersion(p)
	if err != nil {
		return Item{}, err
	}
	d := decoder{b: rest}
	it := Item{Arrival: arrival}
	switch k {
	case KindKnock:
		kn := &correlate.Knock{Src: d.addr(), Dst: d.addr(), DistinctClosed: d.int()}
		n := d.count(3)
		if n > 0 {
			kn.Touches = make([]correlate.Touch, n)
		}
		for i := range kn.Touches {
			kn.Touches[i] = correlate.Touch{Port: d.port(), Time: d.time(), Kind: correlate.TouchKind(d.byte())}
		}
		if version >= 2 {
			kn.Attempted, kn.Epoch = d.int(), uint32(d.uint(1<<32))
		}
		it.Knock = kn
	case KindHandshake:
		h := &correlate.Handshake{Src: d.addr(), Dst: d.addr(), SrcPort: d.port(), Port: d.port()}
		h.SYN, h.SYNACK, h.ACK, h.PortLastClosed, h.PortLastOpen = d.time(), d.time(), d.time(), d.time(), d.time()
		h.DistinctClosed = d.int()
		if version >= 2 {
			h.PortFirstOpen, h.PortOtherDone = d.time(), d.time()
			h.Attempted, h.Epoch = d.int(), uint32(d.uint(1<<32))
		}
		it.Handshake = h
	case KindChange:
		c := &correlate.ExposureChange{Time: d.time(), Host: d.string()}
		if n := d.count(1); n > 0 {
			c.HostIPs = make([]netip.Addr, n)
			for i := range c.HostIPs {
				c.HostIPs[i] = d.addr()
			}
		}
		c.Kind = correlate.ChangeKind(d.byte())
		c.Ports.Any = d.byte() == 1
		if n := d.count(2); n > 0 {
			c.Ports.Ranges = make([]correlate.PortRange, n)
			for i := range c.Ports.Ranges {
				c.Ports.Ranges[i] = correlate.PortRange{Lo: d.port(), Hi: d.port()}
			}
		}
		c.Protocol = correlate.Protocol(d.uint(1 << 16))
		c.Direction, c.Action, c.Active = correlate.Direction(d.byte()), correlate.Action(d.byte()), correlate.Tri(d.byte())
		c.RuleID, c.RuleName, c.Application, c.Service = d.string(), d.string(), d.string(), d.string()
		c.ModifyingUser, c.ModifyingApplication = d.string(), d.string()
		c.ProcessID, c.EventID = uint32(d.uint(1<<32)), uint32(d.uint(1<<32))
		c.Channel = d.string()
		c.RecordID = d.uint(0)
		c.Origin = d.string()
		switch d.byte() {
		case 0:
		case 1:
			c.Replaces = &correlate.ChangeRef{Channel: d.string(), EventID: uint32(d.uint(1 << 32)), RecordID: d.uint(0)}
		default:
			d.fail("bad replaces flag")
		}
		it.Change = c
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return Item{}, fmt.Errorf("decode %s: %w", k, d.err)
	}
	return it, nil
}

// decoder reads the encoding; the first error sticks and every later read
// returns zero values, so decoding code needs no error checks per field.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrBadItem, fmt.Sprintf(format, args...))
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.fail("short")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// uint reads a uvarint below limit (0: any).
func (d *decoder) uint(limit uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || (limit > 0 && v >= limit) {
		d.fail("bad unsigned number")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int() int { return int(d.uint(1 << 31)) }

func (d *decoder) port() uint16 { return uint16(d.uint(1 << 16)) }

// count reads a list length; each element takes at least minBytes, so a
// damaged length cannot make the decoder allocate more than the payload.
func (d *decoder) count(minBytes int) int {
	n := d.uint(0)
	if d.err == nil && n > uint64(len(d.b)/minBytes) {
		d.fail("list of %d longer than the payload", n)
		return 0
	}
	return int(n)
}

func (d *decoder) time() time.Time {
	if d.err != nil {
		return time.Time{}
	}
	s, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad time")
		return time.Time{}
	}
	d.b = d.b[n:]
	ns := d.uint(1e9)
	if d.err != nil || (s == zeroUnix && ns == 0) {
		return time.Time{}
	}
	return time.Unix(s, int64(ns)).UTC()
}

func (d *decoder) addr() netip.Addr {
	switch n := d.byte(); {
	case d.err != nil || n == 0:
		return netip.Addr{}
	case n != 4 && n != 16:
		d.fail("address of %d bytes", n)
		return netip.Addr{}
	case len(d.b) < int(n):
		d.fail("short address")
		return netip.Addr{}
	default:
		a, _ := netip.AddrFromSlice(d.b[:n])
		d.b = d.b[n:]
		return a
	}
}

func (d *decoder) string() string {
	n := d.uint(0)
	if d.err == nil && n > uint64(len(d.b)) {
		d.fail("string of %d bytes longer than the payload", n)
	}
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
