package scenario

import (
	"net/netip"
	"time"

	"github.com/knockwatch/knockwatch/internal/testsupport/pkt"
)

// opSrc4 and friends: a few fixed sources of both families; op sources beyond them
// are drawn from a /16 so floods and slot collisions happen.
var (
	opSrc4 = []netip.Addr{Attacker, Bystander, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.0.0.9")}
	opSrc6 = []netip.Addr{Attacker6, netip.MustParseAddr("2001:db8::99"), netip.MustParseAddr("::"), netip.MustParseAddr("fe80::1")}
	opDst4 = []netip.Addr{Victim, netip.MustParseAddr("10.0.0.6")}
	opDst6 = []netip.Addr{Victim6, netip.MustParseAddr("2001:db8:1::6")}
)

// DecodeOps turns bytes into a packet sequence: each 4-byte op picks a
// packet kind, a conversation (source, destination, family, VLAN tags,
// IPv6 extension headers), a port and a time step, so generated inputs
// explore the state machine (knocks, retransmissions, answers to other
// SYNs, wrong acks, handshakes, sweeps, time going backwards) as well as
// the parser (garbage, truncation, fragments, bad headers). The idea is
// the fuzzers' and the differential test's.
func DecodeOps(data []byte) []Step {
	var out []Step
	var at time.Duration
	for len(data) >= 4 && len(out) < 512 {
		op, sel, port, dt := data[0], data[1], data[2], data[3]
		data = data[4:]
		if op&0x80 != 0 && dt < 16 {
			at -= time.Duration(dt) * 10 * time.Millisecond // capture timestamps are not always monotonic
		} else {
			at += time.Duration(dt) * 50 * time.Millisecond
		}
		var src, dst netip.Addr
		v6 := sel&0x08 != 0
		switch {
		case sel&0x04 != 0 && !v6:
			src = netip.AddrFrom4([4]byte{198, 18, port >> 4, dt}) // many sources
		case sel&0x04 != 0:
			src = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xff, 14: port >> 4, 15: dt})
		case v6:
			src = opSrc6[sel&3]
		default:
			src = opSrc4[sel&3]
		}
		if v6 {
			dst = opDst6[(sel>>4)&1]
		} else {
			dst = opDst4[(sel>>4)&1]
		}
		c := Conv{Src: src, Dst: dst}
		switch (sel >> 5) & 3 {
		case 1:
			c.VLANs = []uint16{7}
		case 2:
			c.VLANs = []uint16{100, 7}
		case 3:
			if v6 {
				c.Ext = []pkt.Ext{{Proto: 0, Len: 8}, {Proto: 60, Len: 16}}
			} else {
				c.IPOpts = 8
			}
		}
		p := uint16(7000 + int(port&15))
		var st Step
		switch op & 0x7f % 16 {
		case 14: // another sensor's flag for the conversation
			out = append(out, Step{At: at, Req: &Request{RemoteFlag: true, Src: src, Dst: dst, Until: at + time.Duration(dt)*time.Second}})
			continue
		case 15: // a clock sample of the host
			out = append(out, Step{At: at, Req: &Request{Dst: dst, Until: at + time.Duration(dt)*time.Second}})
			continue
		case 0:
			st = c.SYN(at, p)
		case 1: // a REJ touch: SYN, RST 1 ms later
			out = append(out, c.REJ(at, p)...)
			continue
		case 12: // a complete handshake
			out = append(out, c.Connect(at, p)...)
			continue
		case 13: // not TCP: UDP over IPv4 or IPv6
			st = c.SYN(at, p)
			st.P.Ext = nil
			st.P.IPOptions = 0
			b := st.P.Bytes()
			off := 14 + 4*len(c.VLANs)
			if v6 {
				b[off+6] = 17
			} else {
				b[off+9] = 17
			}
			out = append(out, Step{At: at, Raw: b})
			continue
		case 2:
			st = c.RST(at, p)
			if port&0x80 != 0 { // the client's own RST (RSTOS0), with the SYN's seq or seq + 1
				st = c.ClientRST(at, p)
				st.P.Seq -= uint32(dt>>1) & 1
				if dt&4 != 0 {
					st.P.Flags |= pkt.ACK
				}
			}
		case 3:
			st = c.SYNACK(at, p)
		case 4:
			st = c.ACK(at, p)
		case 5: // an answer with a wrong ack
			if port&0x80 != 0 {
				st = c.SYNACK(at, p)
			} else {
				st = c.RST(at, p)
			}
			st.P.Ack += uint32(sel) | 1
		case 6: // retransmission with a new sequence number (or source port)
			st = c.SYN(at, p)
			st.P.Seq += uint32(port)
			if port&0x10 != 0 {
				st.P.SPort++
			}
		case 7: // raw bytes after an Ethernet header with a chosen EtherType
			n := min(int(port), len(data))
			types := []byte{0x08, 0x00, 0x86, 0xdd, 0x81, 0x00, 0x88, 0xa8}
			k := int(sel&3) * 2
			raw := append([]byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, types[k], types[k+1]}, data[:n]...)
			data = data[n:]
			out = append(out, Step{At: at, Raw: raw})
			continue
		case 8:
			out = append(out, Step{At: at, Sweep: true})
			continue
		case 9: // a valid packet cut short
			st = c.SYN(at, p)
			if port&0x40 != 0 {
				st = c.RST(at, p)
			}
			b := st.P.Bytes()
			cut := 14 + int(dt)%(len(b)-14)
			out = append(out, Step{At: at, Raw: b[:cut]})
			continue
		case 10: // odd flags and headers: SYN|RST, FIN|ACK, fragments, ext headers we do not walk
			st = c.SYN(at, p)
			switch port >> 6 {
			case 0:
				st.P.Flags = pkt.SYN | pkt.RST
			case 1:
				st.P.Flags = pkt.FIN | pkt.ACK
			case 2:
				if v6 {
					st.P.Ext = []pkt.Ext{{Proto: 44, Len: 8}}
				} else {
					st.P.FragOffset = uint16(dt)
					st.P.MoreFrags = true
				}
			case 3:
				if v6 {
					st.P.Ext = []pkt.Ext{{Proto: 0, Len: 8}, {Proto: 43, Len: 8}, {Proto: 60, Len: 8}, {Proto: 60, Len: 8}}
				} else {
					st.P.Flags = pkt.SYN | pkt.ACK | pkt.PSH
				}
			}
		case 11: // a completing ACK with a wrong sequence number, or data
			st = c.ACK(at, p)
			if port&0x80 != 0 {
				st.P.Seq++
			} else {
				st.P.Payload = []byte("GET / HTTP/1.0\r\n\r\n")[:17+int(dt&1)] // odd and even lengths
				st.P.Flags |= pkt.PSH
			}
		}
		if sel&0x80 != 0 && port&0x20 != 0 {
			st.P.CsumDelta = 1 + uint16(dt) // a segment with a wrong checksum
		}
		out = append(out, st)
	}
	return out
}
