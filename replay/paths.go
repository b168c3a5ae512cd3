package replay

import (
	"encoding/binary"

	"github.com/knockwatch/knockwatch/sensor"
)

// TCP flag bits.
const (
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// countPath counts one Ethernet frame into a capture's Path counters: TCP
// packets, and SYNs, SYN-ACKs and RSTs with ACK among them (what the program counts
// per interface, so coverage can tell a capture that holds one direction
// from a tap's two halves). Frames it cannot parse are not counted.
func countPath(c sensor.Counters, f []byte) {
	flags, ok := tcpFlags(f)
	if !ok {
		return
	}
	c["tcp"]++
	switch {
	case flags&tcpSYN != 0 && flags&tcpRST != 0:
	case flags&tcpSYN != 0 && flags&tcpACK != 0:
		c["synack"]++
	case flags&tcpSYN != 0:
		c["syn"]++
	case flags&tcpRST != 0 && flags&tcpACK != 0:
		// An answer's RST acks the SYN; a bare RST is a client
		// abandoning its own SYN (a half-open scan), not an answer.
		c["rst"]++
	}
}

// tcpFlags returns the TCP flags of an Ethernet frame: up to two VLAN
// tags, IPv4 (first fragments) or IPv6 (hop-by-hop, routing and
// destination options walked).
func tcpFlags(f []byte) (byte, bool) {
	if len(f) < 14 {
		return 0, false
	}
	et, off := binary.BigEndian.Uint16(f[12:]), 14
	for i := 0; i < 2 && (et == 0x8100 || et == 0x88a8); i++ {
		if len(f) < off+4 {
			return 0, false
		}
		et, off = binary.BigEndian.Uint16(f[off+2:]), off+4
	}
	var proto byte
	switch et {
	case 0x0800:
		if len(f) < off+20 {
			return 0, false
		}
		ihl := int(f[off]&0x0f) * 4
		if ihl < 20 || binary.BigEndian.Uint16(f[off+6:])&0x1fff != 0 {
			return 0, false
		}
		proto, off = f[off+9], off+ihl
	case 0x86dd:
		if len(f) < off+40 {
			return 0, false
		}
		proto, off = f[off+6], off+40
		for i := 0; i < 4 && (proto == 0 || proto == 43 || proto == 60); i++ {
			if len(f) < off+8 {
				return 0, false
			}
			proto, off = f[off], off+(int(f[off+1])+1)*8
		}
	default:
		return 0, false
	}
	if proto != 6 || len(f) < off+14 {
		return 0, false
	}
	return f[off+13], true
}
