package scenario

import (
	"net/netip"
	"time"

	"github.com/knockwatch/knockwatch/internal/testsupport/pkt"
	"github.com/knockwatch/knockwatch/sensor"
)

// Attacks returns the cases of an attacker who reads the sensor's code and
// tries to knock unseen (issue 11): each row is one trick, and its
// expectation is what the sensor must still report. Table includes them,
// so both engines run them; replay's end-to-end test runs them through the
// correlation rule with an exposure change (AttackE2E).
//
// Every expectation below is derived from the packets by hand, with the
// default window (30 s), S0 timeout (5 s) and flag TTL (6m10s).
func Attacks() []Case {
	a := Conv{Src: Attacker, Dst: Victim}
	shift := func(steps []Step, d time.Duration) []Step {
		out := make([]Step, len(steps))
		for i, s := range steps {
			s.At += d
			out[i] = s
		}
		return out
	}
	sweep := func(at time.Duration) []Step { return []Step{{At: at, Sweep: true}} }
	knockPorts := []uint16{7000, 8000, 9000}
	twice := []uint16{7000, 8000, 9000, 7000, 8000, 9000}
	rej6 := []sensor.TouchKind{sensor.TouchREJ, sensor.TouchREJ, sensor.TouchREJ, sensor.TouchREJ, sensor.TouchREJ, sensor.TouchREJ}
	others := func(n int) []Conv {
		var out []Conv
		for i := range n {
			out = append(out, Conv{Src: netip.AddrFrom4([4]byte{198, 51, 100, byte(101 + i)}), Dst: Victim})
		}
		return out
	}
	// probe is the attacker's own half-open probe of port (nmap -sS):
	// SYN from another source port, the SYN-ACK, the client's RST.
	probe := func(at time.Duration, port uint16) []Step {
		const sport = 50000
		syn := pkt.TCP{Src: Attacker, Dst: Victim, SPort: sport, DPort: port, Flags: pkt.SYN, Seq: 0x5000, TCPOptions: 12}
		synack := pkt.TCP{Src: Victim, Dst: Attacker, SPort: port, DPort: sport, Flags: pkt.SYN | pkt.ACK, Seq: 0x6000, Ack: 0x5001, TCPOptions: 12}
		rst := pkt.TCP{Src: Attacker, Dst: Victim, SPort: sport, DPort: port, Flags: pkt.RST, Seq: 0x5001}
		return []Step{{At: at, P: syn}, {At: at + time.Millisecond, P: synack}, {At: at + 2*time.Millisecond, P: rst}}
	}
	var cases []Case

	// Class 1: a knock is reported every time it is used.
	cases = append(cases, Case{
		// The same knock two minutes later: a new burst (more than a
		// window after the last touch) raises a new KNOCK (epoch 2), and
		// its first handshake is reported again although the port was
		// reported for epoch 1.
		Name:  "attack: knock used again two minutes later",
		Steps: Cat(a.Knock3(), a.Connect(Sec(5), 4444), sweep(Sec(40)), shift(a.Knock3(), Sec(120)), a.Connect(Sec(125), 4444)),
		Knocks: []WantKnock{
			{Src: Attacker, Dst: Victim, Ports: knockPorts, Kinds: rej3, Distinct: 3, Attempted: 3, Epoch: 1},
			{Src: Attacker, Dst: Victim, Ports: twice, Kinds: rej6, Distinct: 3, Attempted: 3, Epoch: 2,
				Times: []time.Duration{0, Sec(1), Sec(2), Sec(120), Sec(121), Sec(122)}},
		},
		Handshakes: []WantHS{
			{Src: Attacker, Dst: Victim, Port: 4444, LastClosed: Never, LastOpen: Never, FirstOpen: Never, OtherDone: Never, Epoch: 1, Distinct: 3},
			// The port state remembers the first use (its own handshake
			// is not someone else's).
			{Src: Attacker, Dst: Victim, Port: 4444, LastClosed: Never, LastOpen: Sec(5.001), FirstOpen: Sec(5.001), OtherDone: Never, Epoch: 2, Distinct: 3},
		},
		Sweeps:   []int{0},
		Counters: map[string]uint64{"flags": 2, "handshakes": 2, "candidates": 1, "handshake_repeat": 0, "knock_deferred": 0},
	}, Case{
		// An hour later, with the sweeps a running sensor makes: the
		// flag and the candidate are over and freed; the knock starts a
		// new candidate and is reported as its first.
		Name: "attack: knock used again an hour later",
		Steps: Cat(a.Knock3(), a.Connect(Sec(5), 4444), sweep(Sec(40)), sweep(31*time.Minute),
			shift(a.Knock3(), time.Hour), a.Connect(time.Hour+Sec(5), 4444)),
		Knocks: []WantKnock{
			{Src: Attacker, Dst: Victim, Ports: knockPorts, Kinds: rej3, Epoch: 1},
			{Src: Attacker, Dst: Victim, Ports: knockPorts, Kinds: rej3, Epoch: 1,
				Times: []time.Duration{time.Hour, time.Hour + Sec(1), time.Hour + Sec(2)}},
		},
		Handshakes: []WantHS{
			{Src: Attacker, Dst: Victim, Port: 4444, LastClosed: Never, LastOpen: Never, Epoch: 1},
			{Src: Attacker, Dst: Victim, Port: 4444, LastClosed: Never, LastOpen: Sec(5.001), FirstOpen: Sec(5.001), OtherDone: Never, Epoch: 1},
		},
		Sweeps:   []int{0, 0},
		Counters: map[string]uint64{"flags": 2, "handshakes": 2, "candidates": 2},
	}, Case{
		// A knock storm: the same knock again within the window of the
		// first KNOCK is deferred (at most one KNOCK per window) and the
		// sweep sends it once the window has passed.
		Name:  "attack: knock storm, one KNOCK per window",
		Steps: Cat(a.Knock3(), shift(a.Knock3(), Sec(10)), sweep(Sec(20)), sweep(Sec(33))),
		Knocks: []WantKnock{
			{Src: Attacker, Dst: Victim, Ports: knockPorts, Kinds: rej3, Epoch: 1},
			{Src: Attacker, Dst: Victim, Ports: twice, Kinds: rej6, Distinct: 3, Attempted: 3, Epoch: 2},
		},
		Sweeps:   []int{0, 0},
		Counters: map[string]uint64{"flags": 2, "knock_deferred": 1},
	})

	// Class 2: the list of reported ports is per knock and never full.
	var open []Step
	wellKnown := []uint16{135, 139, 445, 3389, 5985, 5986, 47001, 49664, 49665}
	var hsWant []WantHS
	for i, p := range wellKnown {
		open = append(open, a.Connect(Sec(5)+time.Duration(i)*100*time.Millisecond, p)...)
		hsWant = append(hsWant, WantHS{Src: Attacker, Dst: Victim, Port: p, LastClosed: Never, LastOpen: Never, Epoch: 1})
	}
	cases = append(cases, Case{
		// The attacker first uses the nine ports every Windows server
		// has open, then the new one: every first handshake is
		// reported; the list of reported ports drops its oldest (counted)
		// and a repeat to the new port is still a repeat.
		Name:       "attack: nine open ports first, then the new one",
		Steps:      Cat(a.Knock3(), open, a.Connect(Sec(6), 4444), a.Connect(Sec(7), 4444)),
		Knocks:     []WantKnock{{Src: Attacker, Dst: Victim, Ports: knockPorts, Kinds: rej3, Epoch: 1}},
		Handshakes: append(hsWant, WantHS{Src: Attacker, Dst: Victim, Port: 4444, LastClosed: Never, LastOpen: Never, Epoch: 1}),
		Counters:   map[string]uint64{"handshakes": 10, "reported_overflow": 2, "handshake_repeat": 1},
	})

	// Class 4: the knocker's own probes never make it "someone else first".
	cases = append(cases, Case{
		Name:   "attack: own half-open probe of the new port",
		Steps:  Cat(a.Knock3(), probe(Sec(4), 4444), a.Connect(Sec(5), 4444)),
		Knocks: []WantKnock{{Src: Attacker, Dst: Victim, Ports: knockPorts, Kinds: rej3, Epoch: 1}},
		Handshakes: []WantHS{{Src: Attacker, Dst: Victim, Port: 4444, LastClosed: Never,
			FirstOpen: Sec(4.001), LastOpen: Sec(4.001), OtherDone: Never, Epoch: 1}},
		// The probe's own RST matches nothing left (its SYN was answered).
		Counters: map[string]uint64{"handshakes": 1, "port_open": 2, "backscatter": 1},
	}, Case{
		// A spoofed source's SYN, answered by the host's SYN-ACK (the
		// port is open): no completed handshake, so not someone else.
		Name: "attack: SYN-ACK to a spoofed source before the connection",
		Steps: Cat(a.Knock3(), []Step{Conv{Src: Bystander, Dst: Victim}.SYN(Sec(4), 4444), Conv{Src: Bystander, Dst: Victim}.SYNACK(Sec(4.001), 4444)},
			a.Connect(Sec(5), 4444)),
		Knocks: []WantKnock{{Src: Attacker, Dst: Victim, Ports: knockPorts, Kinds: rej3}},
		Handshakes: []WantHS{{Src: Attacker, Dst: Victim, Port: 4444, LastClosed: Never,
			FirstOpen: Sec(4.001), LastOpen: Sec(4.001), OtherDone: Never, Epoch: 1}},
		Counters: map[string]uint64{"handshakes": 1, "watch_started": 2},
	}, Case{
		// The control: another source completes a handshake first.
		Name:   "attack control: another source completes first",
		Steps:  Cat(a.Knock3(), Conv{Src: Bystander, Dst: Victim}.Connect(Sec(4), 4444), a.Connect(Sec(5), 4444)),
		Knocks: []WantKnock{{Src: Attacker, Dst: Victim, Ports: knockPorts, Kinds: rej3}},
		Handshakes: []WantHS{{Src: Attacker, Dst: Victim, Port: 4444, LastClosed: Never,
			FirstOpen: Sec(4.001), LastOpen: Sec(4.001), OtherDone: Sec(4.002), Epoch: 1}},
		Counters: map[string]uint64{"handshakes": 1, "watch_started": 2},
	})

	// Class 5: a SYN scan of a filtered host counts its attempts.
	var scan []Step
	for i := range 500 {
		scan = append(scan, a.SYN(time.Duration(i)*time.Millisecond, uint16(1000+i)))
	}
	cases = append(cases, Case{
		// 500 unanswered SYNs to distinct ports: the candidate keeps 8
		// pending, each later SYN pushes the oldest out as an attempt
		// (492); at the connect 10 s later the last 8 are S0. The KNOCK
		// goes out at the third S0 (492 + 3 attempted); the handshake
		// carries the whole burst: 8 closed, 500 attempted.
		Name:   "attack: SYN scan of a filtered host, then a connect",
		Steps:  Cat(scan, a.Connect(Sec(10), 4444)),
		Knocks: []WantKnock{{Src: Attacker, Dst: Victim, Distinct: 3, Attempted: 495, Epoch: 1}},
		Handshakes: []WantHS{{Src: Attacker, Dst: Victim, Port: 4444, LastClosed: Never, LastOpen: Never,
			Distinct: 8, Attempted: 500, Epoch: 1}},
		Counters: map[string]uint64{"syn": 501, "touch_s0": 8, "attempted": 500, "pending_evicted": 492, "flags": 1},
	})

	// Class 6: answers processed before the SYN they answer.
	var early []Step
	for i, p := range knockPorts {
		at := Sec(float64(i))
		early = append(early, a.RST(at+500*time.Microsecond, p), a.SYN(at, p))
	}
	cases = append(cases, Case{
		// A two-port tap: each RST reaches the sensor before its SYN (and
		// is stamped half a millisecond after it); then the SYN-ACK of
		// the connect before its SYN. REJ stays REJ, the handshake is
		// reported, the open port is no closed touch.
		Name: "attack: answers before their SYNs",
		Steps: Cat(early, []Step{a.SYNACK(Sec(5.0005), 4444), a.SYN(Sec(5), 4444),
			a.ACK(Sec(5.002), 4444)}),
		Knocks:     []WantKnock{{Src: Attacker, Dst: Victim, Ports: knockPorts, Kinds: rej3, Times: []time.Duration{0, Sec(1), Sec(2)}}},
		Handshakes: []WantHS{{Src: Attacker, Dst: Victim, Port: 4444, LastClosed: Never, LastOpen: Never, Epoch: 1}},
		Counters:   map[string]uint64{"answer_early": 4, "touch_rej": 3, "touch_s0": 0, "handshakes": 1, "backscatter": 3, "synack_unmatched": 1},
	})

	// A knock of dropped SYNs and an immediate connection.
	cases = append(cases, Case{
		// knock && ssh against a host that drops (Windows' default):
		// the connection is answered long before the S0 timeout. The
		// answer decides the pair's older unanswered SYNs: the KNOCK goes
		// out with it and the handshake is the flagged pair's.
		Name: "attack: S0 knock, then an immediate connection",
		Steps: Cat([]Step{a.SYN(0, 7000), a.SYN(Sec(0.1), 8000), a.SYN(Sec(0.2), 9000)}, a.Connect(Sec(0.5), 4444),
			sweep(Sec(10))),
		Knocks: []WantKnock{{Src: Attacker, Dst: Victim, Ports: knockPorts, Kinds: s03,
			Times: []time.Duration{0, Sec(0.1), Sec(0.2)}, Epoch: 1}},
		Handshakes: []WantHS{{Src: Attacker, Dst: Victim, Port: 4444, LastClosed: Never, LastOpen: Never, Epoch: 1, Distinct: 3}},
		Sweeps:     []int{0},
		Counters:   map[string]uint64{"touch_s0": 3, "flags": 1, "handshakes": 1},
	}, Case{
		// Answers reordered within the skew: a SYN-ACK to the later SYN
		// before the RST to the earlier one. The earlier SYN is not
		// decided early (sent less than the skew before): it stays REJ.
		Name: "reordered answers within the skew stay REJ",
		Steps: []Step{a.SYN(0, 7000), a.SYN(Sec(0.001), 80), a.SYNACK(Sec(0.002), 80), a.RST(Sec(0.003), 7000),
			a.REJ(Sec(1), 8000)[0], a.REJ(Sec(1), 8000)[1]},
		Counters: map[string]uint64{"touch_rej": 2, "touch_s0": 0, "port_open": 1, "backscatter": 0},
	})

	// The client's own RST, a one-way tap, bad checksums.
	cases = append(cases, Case{
		Name: "attack: knock of SYNs the client resets (RSTOS0)",
		Steps: []Step{a.SYN(0, 7000), a.ClientRST(Sec(0.1), 7000), a.SYN(Sec(1), 8000), a.ClientRST(Sec(1.1), 8000),
			a.SYN(Sec(2), 9000), a.ClientRST(Sec(2.1), 9000)},
		Knocks: []WantKnock{{Src: Attacker, Dst: Victim, Ports: knockPorts,
			Kinds: []sensor.TouchKind{sensor.TouchRSTOS0, sensor.TouchRSTOS0, sensor.TouchRSTOS0}}},
		Counters: map[string]uint64{"touch_rstos0": 3, "flags": 1, "backscatter": 0},
	}, Case{
		// A one-way tap shows the client only: the knock is S0, and the
		// client's ACK proves the SYN-ACK the capture lacks.
		Name:   "attack: one-way tap, the ACK proves the handshake",
		Config: func(c *sensor.Config) { c.AckProof = true },
		Steps: Cat([]Step{a.SYN(0, 7000), a.SYN(Sec(0.5), 8000), a.SYN(Sec(1), 9000)}, sweep(Sec(7)),
			[]Step{a.SYN(Sec(10), 4444), a.ACK(Sec(10.002), 4444)}),
		Knocks:     []WantKnock{{Src: Attacker, Dst: Victim, Ports: knockPorts, Kinds: s03}},
		Handshakes: []WantHS{{Src: Attacker, Dst: Victim, Port: 4444, LastClosed: Never, LastOpen: Never, Proven: true, Epoch: 1}},
		Sweeps:     []int{3},
		Counters:   map[string]uint64{"ack_proof": 1, "handshakes": 1, "touch_s0": 3},
	}, Case{
		// RSTs the host's stack would drop (bad checksum) answer
		// nothing: the knock is seen, as S0.
		Name: "attack: RSTs with bad checksums are no answers",
		Steps: func() []Step {
			var out []Step
			for i, p := range knockPorts {
				r := a.RST(Sec(float64(i))+time.Millisecond, p)
				r.P.CsumDelta = 0x1234
				out = append(out, a.SYN(Sec(float64(i)), p), r)
			}
			return Cat(out, sweep(Sec(8)))
		}(),
		Knocks:   []WantKnock{{Src: Attacker, Dst: Victim, Ports: knockPorts, Kinds: s03}},
		Sweeps:   []int{3},
		Counters: map[string]uint64{"bad_csum": 3, "touch_rej": 0, "touch_s0": 3, "flags": 1},
	}, Case{
		// A SYN-ACK with a bad checksum (spoofed: the host never sent
		// it) opens nothing and completes nothing.
		Name: "attack: SYN-ACK with a bad checksum",
		Steps: Cat(a.Knock3(), func() []Step {
			sa := a.SYNACK(Sec(5.001), 4444)
			sa.P.CsumDelta = 7
			return []Step{a.SYN(Sec(5), 4444), sa, a.ACK(Sec(5.002), 4444)}
		}()),
		Knocks:   []WantKnock{{Src: Attacker, Dst: Victim, Ports: knockPorts, Kinds: rej3}},
		Counters: map[string]uint64{"bad_csum": 1, "port_open": 0, "handshakes": 0},
	})

	// Class 7: flags exhausted by other knockers.
	var crowd []Step
	for i, c := range others(4) {
		crowd = append(crowd, shift(c.Knock3(), Sec(3)+time.Duration(i)*Sec(3))...)
	}
	crowdKnocks := []WantKnock{{Src: Attacker, Dst: Victim, Ports: knockPorts, Kinds: rej3}}
	for _, c := range others(4) {
		crowdKnocks = append(crowdKnocks, WantKnock{Src: c.Src, Dst: Victim, Ports: knockPorts, Kinds: rej3})
	}
	cases = append(cases, Case{
		// One candidate bucket of four: four other knockers push the
		// attacker's candidate out, the flag survives in its MARK, and
		// the handshake is reported (its knock's detail lost: epoch 0).
		Name:       "attack: the candidate pushed out, the flag survives",
		Config:     func(c *sensor.Config) { c.Candidates = 4 },
		Steps:      Cat(a.Knock3(), crowd, a.Connect(Sec(20), 4444)),
		Knocks:     crowdKnocks,
		Handshakes: []WantHS{{Src: Attacker, Dst: Victim, Port: 4444, LastClosed: Never, LastOpen: Never, Epoch: -1}},
		Counters:   map[string]uint64{"candidates": 6, "cand_evicted": 2, "handshakes": 1, "flags": 5},
	})
	// Two-port spoofed pairs (all a spoofed pair can touch without being
	// flagged) do not push out a knock with all its ports in play.
	var pairs2 []Step
	for i, c := range others(6) {
		at := Sec(1) + time.Duration(i)*Sec(0.5)
		pairs2 = append(pairs2, Cat(c.REJ(at, 7100), c.REJ(at+Sec(0.1), 7200))...)
	}
	cases = append(cases, Case{
		Name:   "attack: two-port spoofed pairs around an S0 knock in progress",
		Config: func(c *sensor.Config) { c.Candidates = 4 },
		Steps: Cat([]Step{a.SYN(0, 7000), a.SYN(Sec(0.1), 8000), a.SYN(Sec(0.2), 9000)}, pairs2,
			sweep(Sec(6))),
		Knocks:   []WantKnock{{Src: Attacker, Dst: Victim, Ports: knockPorts, Kinds: s03}},
		Sweeps:   []int{3},
		Counters: map[string]uint64{"candidates": 7, "cand_evicted": 3, "flags": 1},
	})
	// What userspace asks of the program: flags from other sensors,
	// clock samples.
	b := Conv{Src: Bystander, Dst: Victim}
	cases = append(cases, Case{
		// Another tap saw the knock: its flag, set here, makes this
		// sensor report the pair's first handshake to the port.
		Name: "a flag raised by another sensor",
		Steps: Cat([]Step{{At: 0, Req: &Request{RemoteFlag: true, Src: Attacker, Dst: Victim, Until: 10 * time.Minute}}},
			a.Connect(Sec(1), 4444), b.Connect(Sec(2), 4444)),
		Handshakes: []WantHS{{Src: Attacker, Dst: Victim, Port: 4444, LastClosed: Never, LastOpen: Never, Epoch: -1, RemoteFlag: true}},
		Counters:   map[string]uint64{"remote_flag": 1, "handshakes": 1, "flags": 0},
	}, Case{
		Name: "a flag from another sensor that expired",
		Steps: Cat([]Step{{At: 0, Req: &Request{RemoteFlag: true, Src: Attacker, Dst: Victim, Until: Sec(3)}}},
			a.Connect(Sec(5), 4444)),
		Counters: map[string]uint64{"remote_flag": 0, "handshakes": 0},
	}, Case{
		// A clock sample: the next handshake completed to the host,
		// whoever made it, once per request.
		Name: "a clock sample of a host",
		Steps: Cat([]Step{{At: 0, Req: &Request{Dst: Victim, Until: time.Minute}}},
			b.Connect(Sec(1), 445), a.Connect(Sec(2), 445), []Step{{At: Sec(3), Req: &Request{Dst: Victim, Until: Sec(4)}}},
			a.Connect(Sec(5), 3389)),
		Handshakes: []WantHS{{Src: Bystander, Dst: Victim, Port: 445, LastClosed: Never, LastOpen: Never, Sample: true}},
		Counters:   map[string]uint64{"samples": 1, "handshakes": 0},
	})
	return cases
}
