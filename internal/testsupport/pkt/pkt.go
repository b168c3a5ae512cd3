// Package pkt builds Ethernet/IP/TCP packets byte by byte for tests,
// benchmarks and the replay corpus: VLAN and QinQ tags, IPv4 options,
// IPv6 extension headers, fragments, any TCP data offset. Checksums are
// computed so captures open cleanly in Wireshark.
package pkt

import (
	"encoding/binary"
	"net/netip"
)

// TCP flag bits.
const (
	FIN = 0x01
	SYN = 0x02
	RST = 0x04
	PSH = 0x08
	ACK = 0x10
)

// EtherType values.
const (
	EtherIPv4   = 0x0800
	EtherIPv6   = 0x86dd
	Ether8021Q  = 0x8100
	Ether8021AD = 0x88a8
	EtherARP    = 0x0806
)

// Ext is an IPv6 extension header: Proto is its protocol number (0
// hop-by-hop, 43 routing, 60 destination options, 44 fragment), Len its
// total length in bytes (a multiple of 8, at least 8).
type Ext struct {
	Proto uint8
	Len   int
}

// TCP describes one packet. Src and Dst pick the IP version.
type TCP struct {
	Src, Dst     netip.Addr
	SPort, DPort uint16
	Seq, Ack     uint32
	Flags        uint8
	VLANs        []uint16 // outermost first; the first of two uses 802.1ad
	IPOptions    int      // IPv4 option bytes (multiple of 4, <= 40)
	TCPOptions   int      // TCP option bytes (multiple of 4, <= 40)
	Ext          []Ext    // IPv6 extension headers, in order
	FragOffset   uint16   // IPv4 fragment offset in 8-byte units
	MoreFrags    bool
	Payload      []byte
	// CsumDelta is added to the computed TCP checksum: 0 leaves it right,
	// anything else makes it wrong (a segment the host's stack drops).
	CsumDelta uint16
}

var (
	srcMAC = []byte{0x02, 0, 0, 0, 0, 1}
	dstMAC = []byte{0x02, 0, 0, 0, 0, 2}
)

// Bytes serializes the packet starting at the Ethernet header.
func (t TCP) Bytes() []byte {
	b := make([]byte, 0, 128+len(t.Payload))
	b = append(b, dstMAC...)
	b = append(b, srcMAC...)
	ethType := uint16(EtherIPv4)
	if t.Src.Is6() && !t.Src.Is4In6() {
		ethType = EtherIPv6
	}
	for i, v := range t.VLANs {
		tpid := uint16(Ether8021Q)
		if i == 0 && len(t.VLANs) > 1 {
			tpid = Ether8021AD
		}
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, v&0x0fff)
	}
	b = binary.BigEndian.AppendUint16(b, ethType)
	tcp := t.tcpHeader()
	if ethType == EtherIPv4 {
		return t.appendIPv4(b, tcp)
	}
	return t.appendIPv6(b, tcp)
}

func (t TCP) tcpHeader() []byte {
	hl := 20 + t.TCPOptions
	h := make([]byte, hl, hl+len(t.Payload))
	binary.BigEndian.PutUint16(h[0:], t.SPort)
	binary.BigEndian.PutUint16(h[2:], t.DPort)
	binary.BigEndian.PutUint32(h[4:], t.Seq)
	binary.BigEndian.PutUint32(h[8:], t.Ack)
	h[12] = byte(hl/4) << 4
	h[13] = t.Flags
	binary.BigEndian.PutUint16(h[14:], 64240)
	for i := 20; i < hl; i++ {
		h[i] = 1 // NOP
	}
	return append(h, t.Payload...)
}

func (t TCP) appendIPv4(b, tcp []byte) []byte {
	hl := 20 + t.IPOptions
	ip := make([]byte, hl)
	ip[0] = 0x40 | byte(hl/4)
	binary.BigEndian.PutUint16(ip[2:], uint16(hl+len(tcp)))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	frag := t.FragOffset & 0x1fff
	if t.MoreFrags {
		frag |= 0x2000
	}
	binary.BigEndian.PutUint16(ip[6:], frag)
	ip[8] = 64
	ip[9] = 6
	s, d := t.Src.Unmap().As4(), t.Dst.Unmap().As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	for i := 20; i < hl; i++ {
		ip[i] = 1 // NOP option
	}
	binary.BigEndian.PutUint16(ip[10:], ^fold(sum(ip, 0)))
	pseudo := sum(s[:], 0)
	pseudo = sum(d[:], pseudo)
	pseudo += 6 + uint32(len(tcp))
	binary.BigEndian.PutUint16(tcp[16:], ^fold(sum(tcp, pseudo))+t.CsumDelta)
	b = append(b, ip...)
	return append(b, tcp...)
}

func (t TCP) appendIPv6(b, tcp []byte) []byte {
	ip := make([]byte, 40)
	ip[0] = 0x60
	extLen := 0
	for _, e := range t.Ext {
		extLen += e.Len
	}
	binary.BigEndian.PutUint16(ip[4:], uint16(extLen+len(tcp)))
	next := uint8(6)
	if len(t.Ext) > 0 {
		next = t.Ext[0].Proto
	}
	ip[6] = next
	ip[7] = 64
	s, d := t.Src.As16(), t.Dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	b = append(b, ip...)
	for i, e := range t.Ext {
		nh := uint8(6)
		if i+1 < len(t.Ext) {
			nh = t.Ext[i+1].Proto
		}
		h := make([]byte, e.Len)
		h[0] = nh
		if e.Proto == 44 {
			h[1] = 0 // fragment header: reserved byte, fixed 8 bytes
		} else {
			h[1] = byte(e.Len/8 - 1)
			h[2] = 1 // PadN
			h[3] = byte(e.Len - 4)
		}
		b = append(b, h...)
	}
	pseudo := sum(s[:], 0)
	pseudo = sum(d[:], pseudo)
	pseudo += uint32(len(tcp)) + 6
	binary.BigEndian.PutUint16(tcp[16:], ^fold(sum(tcp, pseudo))+t.CsumDelta)
	return append(b, tcp...)
}

func sum(b []byte, s uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// FixChecksums recomputes the IPv4 header and TCP checksums of an
// untagged IPv4 frame built by Bytes after its addresses, ports or
// sequence numbers were rewritten in place (floods reuse one buffer).
// Frames of any other shape are left alone.
func FixChecksums(b []byte) {
	if len(b) < 14+20 || binary.BigEndian.Uint16(b[12:]) != EtherIPv4 {
		return
	}
	ip := b[14:]
	hl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if hl < 20 || total < hl+20 || len(ip) < total || ip[9] != 6 {
		return
	}
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ^fold(sum(ip[:hl], 0)))
	tcp := ip[hl:total]
	tcp[16], tcp[17] = 0, 0
	pseudo := sum(ip[12:20], 0) + 6 + uint32(len(tcp))
	binary.BigEndian.PutUint16(tcp[16:], ^fold(sum(tcp, pseudo)))
}
