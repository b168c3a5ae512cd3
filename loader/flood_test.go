package loader

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/testsupport/pkt"
	"github.com/knockwatch/knockwatch/internal/testsupport/scenario"
	"github.com/knockwatch/knockwatch/sensor"
)

// floodSize is the size of the flood in TestFloodWithKnock: 1 million
// packets in `make test`, KNOCKWATCH_FLOOD_PACKETS (10 million in
// `make soak`) when set.
func floodSize(t *testing.T) int {
	if v := os.Getenv("KNOCKWATCH_FLOOD_PACKETS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 {
			t.Fatalf("KNOCKWATCH_FLOOD_PACKETS=%q: want a number >= 2", v)
		}
		return n
	}
	if testing.Short() {
		return 100_000
	}
	return 1_000_000
}

// TestFloodWithKnock interleaves a random-source SYN flood answered by RSTs
// (every SYN a new source) with one knock sequence, a connect to the opened
// port, and a second attacker flagged before the flood, all through the
// real program at BPF_PROG_RUN speed. Both attackers must come out flagged
// with their handshakes reported; the flood must show in the counters and
// create no candidate.
//
// The flood runs at 100,000 packets/s of capture time (50,000 new sources/s)
// and the knock's touches are 100 ms apart: the pair-slot table
// (2^18 slots by default) then keeps a knocker's first touch with
// probability exp(-50000*0.1/2^18) ~ 98%; see docs/ARCHITECTURE.md.
func TestFloodWithKnock(t *testing.T) {
	s := loadReplay(t, func(c *sensor.Config) { *c = sensor.DefaultConfig(); c.Replay = true; c.HashSeed = 0x2545f491 })
	rd, err := s.NewReader()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	run, err := s.NewRunner()
	if err != nil {
		t.Fatal(err)
	}
	send := func(st step) {
		t.Helper()
		if _, err := run.Run(st.P.Bytes(), t0.Add(st.At)); err != nil {
			t.Fatal(err)
		}
	}
	// The early attacker knocks and is flagged before the flood starts.
	early := conv{Src: bystander, Dst: victim}
	for _, st := range cat(early.REJ(0, 7100), early.REJ(sec(0.1), 7200), early.REJ(sec(0.2), 7300)) {
		send(st)
	}

	n := floodSize(t)
	const pps = 100_000
	gap := time.Second / pps
	start := sec(1)
	syn := pkt.TCP{Src: attacker, Dst: victim, SPort: 1234, DPort: 80, Flags: pkt.SYN, Seq: 1}.Bytes()
	rst := pkt.TCP{Src: victim, Dst: attacker, SPort: 80, DPort: 1234, Flags: pkt.RST | pkt.ACK, Ack: 2}.Bytes()
	const srcOff, dstOff, seqOff, ackOff = 14 + 12, 14 + 16, 14 + 20 + 4, 14 + 20 + 8
	rng := rand.New(rand.NewPCG(7, 11))
	mid := n / 2
	var knock []step
	for _, st := range cat(a.REJ(0, 7000), a.REJ(sec(0.1), 8000), a.REJ(sec(0.2), 9000), a.Connect(sec(5), 4444),
		early.Connect(sec(6), 4444)) {
		st.At += start + time.Duration(mid)*gap
		knock = append(knock, st)
	}
	for i := 0; i < n; i += 2 {
		at := start + time.Duration(i)*gap
		for len(knock) > 0 && knock[0].At <= at {
			send(knock[0])
			knock = knock[1:]
		}
		src := rng.Uint32() | 0x01000000 // never 0.x.x.x
		seq := rng.Uint32()
		binary.BigEndian.PutUint32(syn[srcOff:], src)
		binary.BigEndian.PutUint32(syn[seqOff:], seq)
		binary.BigEndian.PutUint32(rst[dstOff:], src)
		binary.BigEndian.PutUint32(rst[ackOff:], seq+1)
		pkt.FixChecksums(syn)
		pkt.FixChecksums(rst)
		if _, err := run.Run(syn, t0.Add(at)); err != nil {
			t.Fatal(err)
		}
		if _, err := run.Run(rst, t0.Add(at+gap/2)); err != nil {
			t.Fatal(err)
		}
	}
	for _, st := range knock {
		send(st)
	}

	recs := drain(t, rd)
	scenario.CheckKnocks(t, knocks(recs), []scenario.WantKnock{
		{Src: bystander, Dst: victim, Ports: []uint16{7100, 7200, 7300}, Kinds: []sensor.TouchKind{sensor.TouchREJ, sensor.TouchREJ, sensor.TouchREJ}},
		{Src: attacker, Dst: victim, Ports: []uint16{7000, 8000, 9000}, Kinds: []sensor.TouchKind{sensor.TouchREJ, sensor.TouchREJ, sensor.TouchREJ}},
	})
	hs := handshakes(recs)
	if len(hs) != 2 || hs[0].Src != attacker || hs[1].Src != bystander || hs[0].Port != 4444 {
		t.Errorf("handshakes = %+v, want attacker then early attacker to 4444", hs)
	}
	c, err := s.Counters()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flood of %d packets: touch_rej %d, slot_takeover %d, candidates %d, flags %d",
		n, c["touch_rej"], c["slot_takeover"], c["candidates"], c["flags"])
	if c["touch_rej"] < uint64(n/2) {
		t.Errorf("touch_rej %d: the flood's touches were not counted", c["touch_rej"])
	}
	if c["candidates"] != 2 || c["flags"] != 2 {
		t.Errorf("candidates %d, flags %d: want 2 each (the flood creates none)", c["candidates"], c["flags"])
	}
}
