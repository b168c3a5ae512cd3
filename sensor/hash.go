package sensor

import (
	"encoding/binary"
	"net/netip"
)

// PairHash is the program's kw_hash_pair (bpf/include/helpers.h): the hash
// of (src, dst) keyed by the load's seed, over the 16-byte (IPv4-mapped)
// addresses read as little-endian words as on bpfel. A pair's bucket is
// PairHash & (Tables().PairBuckets - 1), its candidate bucket the same
// hash & (CandBuckets - 1). The Go twin hashes with it; tests use it to
// aim packets at one bucket.
func PairHash(seed uint32, src, dst *[16]byte) uint32 {
	h := seed
	h = hashAddr(h, src)
	h = hashAddr(h, dst)
	h *= 0x85ebca6b
	return h ^ (h >> 13)
}

// PairHashAddr is PairHash of two netip addresses (IPv4 mapped).
func PairHashAddr(seed uint32, src, dst netip.Addr) uint32 {
	s, d := src.As16(), dst.As16()
	return PairHash(seed, &s, &d)
}

// HashMix is kw_mix: one step of the program's hashes.
func HashMix(h, v uint32) uint32 {
	h ^= v
	h *= 0x9e3779b1
	h ^= h >> 16
	return h
}

func hashAddr(h uint32, a *[16]byte) uint32 {
	h = HashMix(h, binary.LittleEndian.Uint32(a[0:]))
	h = HashMix(h, binary.LittleEndian.Uint32(a[4:]))
	h = HashMix(h, binary.LittleEndian.Uint32(a[8:]))
	h = HashMix(h, binary.LittleEndian.Uint32(a[12:]))
	return h
}

// HashAddr is kw_hash_addr: h mixed with the address's four words.
func HashAddr(h uint32, a *[16]byte) uint32 { return hashAddr(h, a) }
