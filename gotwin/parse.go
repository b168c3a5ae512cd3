package gotwin

import "encoding/binary"

// Parse outcomes (enum kw_parse_outcome in bpf/include/parsing.h).
const (
	parseOK = iota
	parseNonIP
	parseNonTCP
	parseTruncated
	parseFragment
	parseUnknownExt
	parseBadHeader
)

// TCP flag bits as in byte 13 of the TCP header.
const (
	thFIN = 0x01
	thSYN = 0x02
	thRST = 0x04
	thACK = 0x10
)

const (
	maxVLAN = 2 // KW_MAX_VLAN
	maxExt  = 4 // KW_MAX_EXT
)

// addr is a 16-byte address; IPv4 is stored IPv4-mapped, as the program
// keys it.
type addr [16]byte

type pair struct{ src, dst addr }

type conn struct {
	pair         pair
	sport, dport uint16
}

// packet is struct kw_packet.
type packet struct {
	saddr, daddr addr
	sport, dport uint16
	seq, ack     uint32
	flags        uint8
	vlan         uint8
	ipv6         bool
	l4off        uint16 // TCP header offset from the start of the frame
	seglen       uint16 // TCP segment length from the IP header (wraps as the C's __u16)
}

func mapV4(a *addr, b []byte) {
	*a = addr{10: 0xff, 11: 0xff}
	copy(a[12:], b[:4])
}

// parse mirrors kw_parse: every bound check of the C is a length check here,
// in the same order, so every malformed packet ends in the same outcome.
func parse(b []byte, p *packet) int {
	if len(b) < 14 {
		return parseTruncated
	}
	proto := binary.BigEndian.Uint16(b[12:])
	cur := 14
	for i := 0; i < maxVLAN; i++ {
		if proto != 0x8100 && proto != 0x88a8 {
			break
		}
		if cur+4 > len(b) {
			return parseTruncated
		}
		proto = binary.BigEndian.Uint16(b[cur+2:])
		cur += 4
		p.vlan++
	}
	switch proto {
	case 0x0800:
		return parseIPv4(b, cur, p)
	case 0x86dd:
		return parseIPv6(b, cur, p)
	}
	return parseNonIP
}

func parseIPv4(b []byte, cur int, p *packet) int {
	if cur+20 > len(b) {
		return parseTruncated
	}
	ihl := int(b[cur] & 0x0f)
	if b[cur]>>4 != 4 || ihl < 5 {
		return parseBadHeader
	}
	if cur+ihl*4 > len(b) {
		return parseTruncated
	}
	if binary.BigEndian.Uint16(b[cur+6:])&0x1fff != 0 {
		return parseFragment
	}
	if b[cur+9] != 6 {
		return parseNonTCP
	}
	p.seglen = binary.BigEndian.Uint16(b[cur+2:]) - uint16(ihl*4)
	mapV4(&p.saddr, b[cur+12:])
	mapV4(&p.daddr, b[cur+16:])
	return parseTCP(b, cur+ihl*4, p)
}

func parseIPv6(b []byte, cur int, p *packet) int {
	if cur+40 > len(b) {
		return parseTruncated
	}
	if b[cur]>>4 != 6 {
		return parseBadHeader
	}
	ip6 := cur
	next := b[cur+6]
	cur += 40
	for i := 0; i < maxExt; i++ {
		switch next {
		case 6:
			goto tcp
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if cur+2 > len(b) {
				return parseTruncated
			}
			next = b[cur]
			cur += (int(b[cur+1]) + 1) * 8
		case 44: // fragment
			return parseFragment
		case 59, 17, 58: // no next header, UDP, ICMPv6
			return parseNonTCP
		default:
			return parseUnknownExt
		}
	}
	if next != 6 {
		return parseUnknownExt // more extension headers than we walk
	}
tcp:
	p.seglen = binary.BigEndian.Uint16(b[ip6+4:]) - uint16(cur-(ip6+40))
	copy(p.saddr[:], b[ip6+8:ip6+24])
	copy(p.daddr[:], b[ip6+24:ip6+40])
	p.ipv6 = true
	return parseTCP(b, cur, p)
}

func parseTCP(b []byte, off int, p *packet) int {
	if off+20 > len(b) {
		return parseTruncated
	}
	doff := int(b[off+12] >> 4)
	if doff < 5 {
		return parseBadHeader
	}
	if off+doff*4 > len(b) {
		return parseTruncated
	}
	p.sport = binary.BigEndian.Uint16(b[off:])
	p.dport = binary.BigEndian.Uint16(b[off+2:])
	p.seq = binary.BigEndian.Uint32(b[off+4:])
	p.ack = binary.BigEndian.Uint32(b[off+8:])
	p.flags = b[off+13]
	p.l4off = uint16(off)
	return parseOK
}

// peekFlags is kw_peek_flags: the TCP flags of an untagged IPv4 (no
// options, not a fragment) or IPv6 (TCP next) segment whose header fits,
// else -1.
func peekFlags(b []byte) (int, bool) {
	if len(b) < 14 {
		return -1, false
	}
	var th int
	v6 := false
	switch binary.BigEndian.Uint16(b[12:]) {
	case 0x0800:
		if len(b) < 14+20 || b[14] != 0x45 || binary.BigEndian.Uint16(b[14+6:])&0x1fff != 0 || b[14+9] != 6 {
			return -1, false
		}
		th = 14 + 20
	case 0x86dd:
		if len(b) < 14+40 || b[14]>>4 != 6 || b[14+6] != 6 {
			return -1, false
		}
		th, v6 = 14+40, true
	default:
		return -1, false
	}
	if th+20 > len(b) {
		return -1, false
	}
	doff := int(b[th+12] >> 4)
	if doff < 5 || th+doff*4 > len(b) {
		return -1, false
	}
	return int(b[th+13]), v6
}

// csumMax is KW_CSUM_MAX: longer segments are not checked (counted good).
const csumMax = 1500

// csumOK mirrors kw_csum_ok: the one's complement sum of the pseudo-header
// and the segment folds to 0xffff. The C sums native (little-endian) words,
// this sums big-endian ones; a one's complement sum does not depend on the
// byte order and never folds to 0 here (the protocol word is not 0), so the
// verdicts are the same. A segment the program cannot check passes.
func csumOK(b []byte, p *packet) bool {
	n := int(p.seglen)
	off := int(p.l4off)
	if n < 20 || n > csumMax || off != off&0x1ff {
		return true
	}
	if off+n > len(b) {
		return true
	}
	var sum uint64
	if p.ipv6 {
		for i := 0; i < 16; i += 2 {
			sum += uint64(binary.BigEndian.Uint16(p.saddr[i:])) + uint64(binary.BigEndian.Uint16(p.daddr[i:]))
		}
	} else {
		for i := 12; i < 16; i += 2 {
			sum += uint64(binary.BigEndian.Uint16(p.saddr[i:])) + uint64(binary.BigEndian.Uint16(p.daddr[i:]))
		}
	}
	sum += 6 + uint64(n)
	seg := b[off : off+n]
	for i := 0; i+1 < n; i += 2 {
		sum += uint64(binary.BigEndian.Uint16(seg[i:]))
	}
	if n%2 == 1 {
		sum += uint64(seg[n-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}
