package loader

import (
	"math/rand/v2"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/knockwatch/knockwatch/internal/testsupport/pkt"
	"github.com/knockwatch/knockwatch/internal/testsupport/scenario"
)

// TestProgramTable runs the table both engines share
// (internal/testsupport/scenario; gotwin's TestTwinTable runs the same
// rows against the Go twin) through the XDP program with BPF_PROG_RUN.
func TestProgramTable(t *testing.T) {
	for _, c := range scenario.Table() {
		t.Run(c.Name, func(t *testing.T) {
			s := loadReplay(t, c.Config)
			if err := s.SetAllowlist(c.Allow); err != nil {
				t.Fatal(err)
			}
			o := runSteps(t, s, c.Steps)
			c.Check(t, o)
			// BPF_PROG_RUN runs XDP as received on the namespace's
			// loopback (ifindex 1): its per-interface counters see every
			// packet too.
			ifc, err := s.InterfaceCounters(1)
			if err != nil {
				t.Fatal(err)
			}
			got := o.Counters
			if ifc["packets"] != got["packets"] || ifc["tcp"] != got["tcp"] || ifc["bytes"] != got["bytes"] {
				t.Errorf("interface counters %v disagree with the global ones %v", ifc, got)
			}
		})
	}
}

// TestTruncatedAndGarbage cuts a valid packet at every length and feeds
// random bytes: nothing may be counted as TCP that is not whole, and the
// program must never fail.
func TestTruncatedAndGarbage(t *testing.T) {
	s := loadReplay(t, nil)
	run, err := s.NewRunner()
	if err != nil {
		t.Fatal(err)
	}
	a6 := conv{Src: attacker6, Dst: victim6, Ext: []pkt.Ext{{Proto: 0, Len: 8}, {Proto: 60, Len: 16}}}
	for _, c := range []conv{a, a6, {Src: attacker, Dst: victim, VLANs: []uint16{1, 2}, IPOpts: 8}} {
		full := c.SYN(0, 7000).P.Bytes()
		for n := 14; n < len(full); n++ {
			if _, err := run.Run(full[:n], t0); err != nil {
				t.Fatalf("len %d: %v", n, err)
			}
		}
	}
	got, _ := s.Counters()
	if got["tcp"] != 0 || got["syn"] != 0 {
		t.Errorf("truncated packets parsed as TCP: %v", got)
	}
	if got["truncated"] == 0 {
		t.Errorf("no truncation counted: %v", got)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, 14+rng.IntN(120))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if rng.IntN(2) == 0 {
			b[12], b[13] = 0x08, 0x00
		}
		if _, err := run.Run(b, t0); err != nil {
			t.Fatal(err)
		}
	}
	got, _ = s.Counters()
	parsed := got["non_ip"] + got["non_tcp"] + got["truncated"] + got["fragment"] + got["unknown_ext"] + got["bad_header"] + got["tcp"]
	if parsed != got["packets"] {
		t.Errorf("parse outcomes %d do not add up to packets %d: %v", parsed, got["packets"], got)
	}
}

// TestNoMetadata: replay mode without the timestamp is counted, not guessed.
func TestNoMetadata(t *testing.T) {
	s := loadReplay(t, nil)
	if _, err := s.Program().Run(&ebpf.RunOptions{Data: a.SYN(0, 80).P.Bytes()}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Counters()
	if got["no_meta"] != 1 || got["syn"] != 0 {
		t.Errorf("counters %v, want no_meta=1 syn=0", got)
	}
}

// TestInterfaceSYNAnswers: each interface counts its SYNs, SYN-ACKs and
// RSTs (coverage tells a tap missing one direction from them: SYNs
// almost never answered, or answers with no SYNs). Expectations are
// counted by hand from each row's packets; a SYN+RST is neither, a
// plain ACK or data segment is none, a fragment or a cut header is not
// TCP at all.
func TestInterfaceSYNAnswers(t *testing.T) {
	synRST := a.SYN(0, 81)
	synRST.P.Flags |= pkt.RST
	frag := a.SYN(0, 82)
	frag.P.FragOffset = 1
	for _, c := range []struct {
		name                 string
		steps                []step
		syn, synack, rst, tc uint64
	}{
		{"one-way client side", []step{a.SYN(0, 80), a.SYN(sec(1), 81), a.SYN(sec(2), 82), a.ACK(sec(3), 80)}, 3, 0, 0, 4},
		{"one-way server side", []step{a.SYNACK(0, 80), a.RST(sec(1), 81), a.RST(sec(2), 82)}, 0, 1, 2, 3},
		{"both ways", cat(a.Connect(0, 80), a.REJ(sec(1), 81), []step{a.ClientRST(sec(2), 82)}), 2, 1, 2, 6},
		{"SYN+RST, fragment", []step{synRST, frag}, 0, 0, 0, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := loadReplay(t, nil)
			runSteps(t, s, c.steps)
			ifc, err := s.InterfaceCounters(1)
			if err != nil {
				t.Fatal(err)
			}
			if ifc["syn"] != c.syn || ifc["synack"] != c.synack || ifc["rst"] != c.rst || ifc["tcp"] != c.tc {
				t.Errorf("syn/synack/rst/tcp = %d/%d/%d/%d, want %d/%d/%d/%d (%v)",
					ifc["syn"], ifc["synack"], ifc["rst"], ifc["tcp"], c.syn, c.synack, c.rst, c.tc, ifc)
			}
		})
	}
}
