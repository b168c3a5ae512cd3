package correlate

import (
	"encoding/binary"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

func FuzzParsePortSet(f *testing.F) {
	for _, s := range []string{"22", "80,443", "5000-5010", "*", "any", "", "RPC", "1-65535", " 7 , 8-9 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParsePortSet(in)
		if err != nil {
			return
		}
		// What parses renders to a form that parses to the same set.
		again, err := ParsePortSet(s.String())
		if err != nil || !reflect.DeepEqual(again, s) && !(len(again.Ranges) == 0 && len(s.Ranges) == 0 && again.Any == s.Any) {
			t.Fatalf("%q -> %q -> %+v, %v", in, s.String(), again, err)
		}
		for _, r := range s.Ranges {
			if r.Lo == 0 || r.Hi < r.Lo || !s.Contains(r.Lo) || !s.Contains(r.Hi) {
				t.Fatalf("bad range %+v from %q", r, in)
			}
		}
	})
}

// FuzzEngine drives the engine with arbitrary evidence decoded from the
// fuzzer's bytes, with small caps so that eviction and expiry run, and
// checks that it never panics and that its bookkeeping stays consistent.
func FuzzEngine(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})
	f.Add([]byte("knock knock, who is there? a firewall rule, then a handshake"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := DefaultConfig()
		cfg.MaxPairs, cfg.MaxChanges, cfg.MaxHandshakes, cfg.MaxTouchesPerPair = 8, 4, 4, 20
		cfg.EmitSuppressed = true
		cfg.Suppression.AdminUsers = []string{"admin"}
		e, col := newTestEngine(t, func(c *Config) { *c = cfg })
		addrs := []netip.Addr{victim, bystand, attacker, other, netip.MustParseAddr("2001:db8::1")}
		next := func(n int) int {
			if len(data) == 0 {
				return 0
			}
			v := int(data[0])
			data = data[1:]
			return v % n
		}
		at := func() time.Time {
			var b [2]byte
			b[0], b[1] = byte(next(256)), byte(next(256))
			return t0.Add(time.Duration(binary.BigEndian.Uint16(b[:])) * 100 * time.Millisecond)
		}
		for len(data) > 0 {
			switch next(4) {
			case 0:
				k := Knock{Src: addrs[next(5)], Dst: addrs[next(5)], DistinctClosed: next(40)}
				for i := next(20); i >= 0; i-- {
					k.Touches = append(k.Touches, Touch{Port: uint16(next(30)), Time: at(), Kind: TouchKind(next(3))})
				}
				_ = e.AddKnock(k)
			case 1:
				h := handshakeAt(addrs[next(5)], addrs[next(5)], uint16(next(30)), at())
				if next(2) == 1 {
					h.PortLastClosed = at()
				}
				if next(2) == 1 {
					h.PortLastOpen = at()
				}
				h.DistinctClosed = next(40)
				_ = e.AddHandshake(h)
			case 2:
				c := ExposureChange{Time: at(), Host: []string{"", "WS01", "ws02.corp"}[next(3)], Kind: ChangeKind(next(9)),
					Protocol: []Protocol{0, 6, 17, 256}[next(4)], Direction: Direction(next(3)), Action: Action(next(3)),
					Active: Tri(next(3)), ModifyingUser: []string{"", "ADMIN"}[next(2)], RecordID: uint64(next(8)), Channel: "fw"}
				if next(2) == 1 {
					c.HostIPs = []netip.Addr{addrs[next(5)]}
				}
				switch next(3) {
				case 0:
					c.Ports = AnyPort
				case 1:
					lo := uint16(next(30))
					c.Ports = PortSet{Ranges: []PortRange{{lo, lo + uint16(next(5))}}}
				}
				_ = e.AddChange(c)
			default:
				e.Advance(at().Add(time.Duration(next(40)) * time.Minute))
			}
			checkBookkeeping(t, e)
		}
		for _, a := range col.all() {
			if _, err := a.MarshalJSON(); err != nil {
				t.Fatalf("alert does not marshal: %v", err)
			}
		}
	})
}

// checkBookkeeping compares the engine's counts with its tables.
func checkBookkeeping(t *testing.T, e *Engine) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	pairs, hs, listed := 0, 0, 0
	e.st.eachPair(func(p *pair) {
		pairs++
		hs += len(p.hs)
		if e.st.hosts[p.h.dst.As16()] != p.h {
			t.Fatalf("pair of a dropped host")
		}
	})
	for c := range e.st.classes {
		head := &e.st.classes[c]
		for p := head.next; p != head; p = p.next {
			listed++
		}
	}
	perHost := make(map[*host]int)
	e.st.eachPair(func(p *pair) {
		perHost[p.h]++
		listed := p.hsIdx > 0 && int(p.hsIdx) <= len(p.h.hsPairs) && p.h.hsPairs[p.hsIdx-1] == p
		if listed != (len(p.hs) > 0) {
			t.Fatalf("pair with %d handshakes listed=%v", len(p.hs), listed)
		}
	})
	hostPairs := 0
	for _, h := range e.st.hosts {
		if perHost[h] != h.npairs {
			t.Fatalf("host %v counts %d pairs, has %d", h.dst, h.npairs, perHost[h])
		}
		hostPairs += h.npairs
		for _, p := range h.hsPairs {
			if p.h != h || len(p.hs) == 0 {
				t.Fatalf("host %v lists a pair without handshakes", h.dst)
			}
		}
		if h.npairs == 0 && len(h.changes) == 0 {
			t.Fatalf("empty host %v kept", h.dst)
		}
	}
	if pairs != e.st.nPairs || listed != pairs || hostPairs != pairs || hs != e.st.nHS {
		t.Fatalf("pairs %d (count %d, listed %d, by host %d), handshakes %d (count %d)",
			pairs, e.st.nPairs, listed, hostPairs, hs, e.st.nHS)
	}
	if pairs > e.cfg.MaxPairs || hs > e.cfg.MaxHandshakes || len(e.st.changes) > e.cfg.MaxChanges {
		t.Fatalf("over a cap: pairs %d, handshakes %d, changes %d", pairs, hs, len(e.st.changes))
	}
}
