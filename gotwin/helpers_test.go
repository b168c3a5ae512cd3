package gotwin

import (
	"net/netip"
	"time"

	"github.com/knockwatch/knockwatch/internal/testsupport/pkt"
	"github.com/knockwatch/knockwatch/sensor"
)

// Scenario builders, after loader/helpers_test.go (not importable).

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

var (
	attacker  = netip.MustParseAddr("198.51.100.7")
	victim    = netip.MustParseAddr("10.0.0.5")
	bystander = netip.MustParseAddr("203.0.113.9")
	attacker6 = netip.MustParseAddr("2001:db8::7")
	victim6   = netip.MustParseAddr("2001:db8:1::5")
)

type step struct {
	at    time.Duration
	p     pkt.TCP
	raw   []byte // when set, sent instead of p
	sweep bool   // run Sweep at `at` instead of a packet
}

func (s step) bytes() []byte {
	if s.raw != nil {
		return s.raw
	}
	return s.p.Bytes()
}

type conv struct {
	src, dst netip.Addr
	vlans    []uint16
	ext      []pkt.Ext
	ipopts   int
}

func (c conv) base(sport, dport uint16, flags uint8, seq, ack uint32, fromServer bool) pkt.TCP {
	p := pkt.TCP{Src: c.src, Dst: c.dst, SPort: sport, DPort: dport, Flags: flags, Seq: seq, Ack: ack,
		VLANs: c.vlans, Ext: c.ext, IPOptions: c.ipopts, TCPOptions: 12}
	if fromServer {
		p.Src, p.Dst, p.SPort, p.DPort = c.dst, c.src, dport, sport
	}
	return p
}

func isn(port uint16) uint32 { return 0x10000000 + uint32(port)*7919 }

func (c conv) syn(at time.Duration, port uint16) step {
	return step{at: at, p: c.base(40000+port%20000, port, pkt.SYN, isn(port), 0, false)}
}

func (c conv) rst(at time.Duration, port uint16) step {
	return step{at: at, p: c.base(40000+port%20000, port, pkt.RST|pkt.ACK, 0, isn(port)+1, true)}
}

func (c conv) synack(at time.Duration, port uint16) step {
	return step{at: at, p: c.base(40000+port%20000, port, pkt.SYN|pkt.ACK, 0x70000000, isn(port)+1, true)}
}

func (c conv) ack(at time.Duration, port uint16) step {
	return step{at: at, p: c.base(40000+port%20000, port, pkt.ACK, isn(port)+1, 0x70000000+1, false)}
}

func (c conv) rej(at time.Duration, port uint16) []step {
	return []step{c.syn(at, port), c.rst(at+time.Millisecond, port)}
}

func (c conv) connect(at time.Duration, port uint16) []step {
	return []step{c.syn(at, port), c.synack(at+time.Millisecond, port), c.ack(at+2*time.Millisecond, port)}
}

func cat(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func sec(n float64) time.Duration { return time.Duration(n * float64(time.Second)) }

// testConfig is the configuration both engines run with in tests: small
// direct-mapped tables (collisions and takeovers happen) and LRU tables
// large enough that nothing is evicted (the kernel's LRU is approximate,
// see the package doc).
func testConfig() sensor.Config {
	cfg := sensor.DefaultConfig()
	cfg.Replay = true
	cfg.HashSeed = 0x2545f491
	cfg.PairSlots = 64
	cfg.PortSlots = 64
	cfg.Candidates = 4096
	cfg.Flagged = 4096
	cfg.Watches = 4096
	cfg.RingBytes = 1 << 16
	return cfg
}

// opSources: a few fixed sources of both families; op sources beyond them
// are drawn from a /16 so floods and slot collisions happen.
var (
	opSrc4 = []netip.Addr{attacker, bystander, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.0.0.9")}
	opSrc6 = []netip.Addr{attacker6, netip.MustParseAddr("2001:db8::99"), netip.MustParseAddr("::"), netip.MustParseAddr("fe80::1")}
	opDst4 = []netip.Addr{victim, netip.MustParseAddr("10.0.0.6")}
	opDst6 = []netip.Addr{victim6, netip.MustParseAddr("2001:db8:1::6")}
)

// decodeOps turns bytes into a packet sequence: each 4-byte op picks a
// packet kind, a conversation (source, destination, family, VLAN tags,
// IPv6 extension headers), a port and a time step, so generated inputs
// explore the state machine (knocks, retransmissions, answers to other
// SYNs, wrong acks, handshakes, sweeps, time going backwards) as well as
// the parser (garbage, truncation, fragments, bad headers). The idea is
// loader/fuzz_test.go's fuzzOps, widened.
func decodeOps(data []byte) []step {
	var out []step
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
		c := conv{src: src, dst: dst}
		switch (sel >> 5) & 3 {
		case 1:
			c.vlans = []uint16{7}
		case 2:
			c.vlans = []uint16{100, 7}
		case 3:
			if v6 {
				c.ext = []pkt.Ext{{Proto: 0, Len: 8}, {Proto: 60, Len: 16}}
			} else {
				c.ipopts = 8
			}
		}
		p := uint16(7000 + int(port&15))
		var st step
		switch op & 0x7f % 14 {
		case 0:
			st = c.syn(at, p)
		case 1: // a REJ touch: SYN, RST 1 ms later
			out = append(out, c.rej(at, p)...)
			continue
		case 12: // a complete handshake
			out = append(out, c.connect(at, p)...)
			continue
		case 13: // not TCP: UDP over IPv4 or IPv6
			st = c.syn(at, p)
			st.p.Ext = nil
			st.p.IPOptions = 0
			b := st.p.Bytes()
			off := 14 + 4*len(c.vlans)
			if v6 {
				b[off+6] = 17
			} else {
				b[off+9] = 17
			}
			out = append(out, step{at: at, raw: b})
			continue
		case 2:
			st = c.rst(at, p)
		case 3:
			st = c.synack(at, p)
		case 4:
			st = c.ack(at, p)
		case 5: // an answer with a wrong ack
			if port&0x80 != 0 {
				st = c.synack(at, p)
			} else {
				st = c.rst(at, p)
			}
			st.p.Ack += uint32(sel) | 1
		case 6: // retransmission with a new sequence number (or source port)
			st = c.syn(at, p)
			st.p.Seq += uint32(port)
			if port&0x10 != 0 {
				st.p.SPort++
			}
		case 7: // raw bytes after an Ethernet header with a chosen EtherType
			n := min(int(port), len(data))
			types := []byte{0x08, 0x00, 0x86, 0xdd, 0x81, 0x00, 0x88, 0xa8}
			k := int(sel&3) * 2
			raw := append([]byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, types[k], types[k+1]}, data[:n]...)
			data = data[n:]
			out = append(out, step{at: at, raw: raw})
			continue
		case 8:
			out = append(out, step{at: at, sweep: true})
			continue
		case 9: // a valid packet cut short
			st = c.syn(at, p)
			if port&0x40 != 0 {
				st = c.rst(at, p)
			}
			b := st.p.Bytes()
			cut := 14 + int(dt)%(len(b)-14)
			out = append(out, step{at: at, raw: b[:cut]})
			continue
		case 10: // odd flags and headers: SYN|RST, FIN|ACK, fragments, ext headers we do not walk
			st = c.syn(at, p)
			switch port >> 6 {
			case 0:
				st.p.Flags = pkt.SYN | pkt.RST
			case 1:
				st.p.Flags = pkt.FIN | pkt.ACK
			case 2:
				if v6 {
					st.p.Ext = []pkt.Ext{{Proto: 44, Len: 8}}
				} else {
					st.p.FragOffset = uint16(dt)
					st.p.MoreFrags = true
				}
			case 3:
				if v6 {
					st.p.Ext = []pkt.Ext{{Proto: 0, Len: 8}, {Proto: 43, Len: 8}, {Proto: 60, Len: 8}, {Proto: 60, Len: 8}}
				} else {
					st.p.Flags = pkt.SYN | pkt.ACK | pkt.PSH
				}
			}
		case 11: // a completing ACK with a wrong sequence number, or data
			st = c.ack(at, p)
			if port&0x80 != 0 {
				st.p.Seq++
			} else {
				st.p.Payload = []byte("GET / HTTP/1.0\r\n\r\n")
				st.p.Flags |= pkt.PSH
			}
		}
		out = append(out, st)
	}
	return out
}
