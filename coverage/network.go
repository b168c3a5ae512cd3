package coverage

import (
	"slices"
	"time"
)

// States of a capture path: the sensor as a whole or one interface.
const (
	// StateOK: SYNs and their answers both seen.
	StateOK = "ok"
	// StateOneWay: SYNs almost never answered (no SYN-ACK, no RST) while
	// the connections carry data: only the client-to-server direction.
	StateOneWay = "one_way"
	// StateAnswersOnly: answers to SYNs never seen: only the
	// server-to-client direction.
	StateAnswersOnly = "answers_only"
	// StateTapHalf: one direction only, and another interface carries the
	// other (a passive tap's two ports): fine.
	StateTapHalf = "tap_half"
	// StateIdle: too few SYNs and answers in the window to judge.
	StateIdle = "idle"
	// StateUnknown: the interface never carried TCP alone in a second and
	// the program keeps no per-interface SYN counts for it.
	StateUnknown = "unknown"
)

// InterfaceStates lists the states of a capture path, in a stable order.
var InterfaceStates = []string{StateOK, StateOneWay, StateAnswersOnly, StateTapHalf, StateIdle, StateUnknown}

// maxIfaces bounds the interfaces tracked (names come from the
// configuration or the capture files).
const maxIfaces = 64

// delta is what a path carried in one tick (or a window's sum).
type delta struct {
	syn, ans, unmatched, other, proof uint64
}

func (d *delta) add(o delta) {
	d.syn += o.syn
	d.ans += o.ans
	d.unmatched += o.unmatched
	d.other += o.other
	d.proof += o.proof
}

type ifTick struct {
	tcp   uint64
	exact bool
	d     delta
}

type netTick struct {
	at time.Time
	g  delta
	fs map[string]ifTick
}

type verdict struct {
	state string
	since time.Time
	sum   delta
	// by says how an interface's numbers were had: "counters" (the
	// program's per-interface SYN counts) or "solo_seconds" (the seconds
	// only it carried TCP).
	by string
}

type netState struct {
	prevG  map[string]uint64
	prevIf map[string]map[string]uint64
	ticks  []netTick
	sensor verdict
	ifaces map[string]*ifaceState
	order  []string
}

type ifaceState struct {
	name    string
	verdict verdict
}

// counterDelta is cur - prev of name (0 when the counter went back: the
// program was reloaded).
func counterDelta(cur, prev map[string]uint64, name string) uint64 {
	c, p := cur[name], prev[name]
	if c < p {
		return 0
	}
	return c - p
}

// pathDelta is what a path carried between two snapshots. The sensor's
// global counters say which answers matched a SYN it saw: port_open (a
// SYN-ACK, or the client's ACK proving one: ack_proof) and touch_rej (an
// RST acking the SYN); answers to no SYN seen are synack_unmatched and
// backscatter. An interface's (or a capture's) counters have only syn,
// synack and rst: there every SYN-ACK and RST is an answer.
func pathDelta(cur, prev map[string]uint64) delta {
	d := func(n string) uint64 { return counterDelta(cur, prev, n) }
	syn, synack, rst := d("syn"), d("synack"), d("rst")
	var other uint64
	if tcp := d("tcp"); tcp > syn+synack+rst {
		other = tcp - syn - synack - rst
	}
	out := delta{syn: syn, ans: synack + rst, unmatched: d("synack_unmatched") + d("backscatter"), other: other, proof: d("ack_proof")}
	if _, global := cur["port_open"]; global {
		var seen uint64
		if po := d("port_open"); po > out.proof {
			seen = po - out.proof
		}
		out.ans = seen + d("touch_rej") + out.unmatched
	}
	return out
}

// ObserveCounters takes the program's counters at now: the global ones
// (sensor.CounterNames) and each capture interface's. Call it about once a
// second (the daemon does; a replay at each sweep).
func (t *Tracker) ObserveCounters(now time.Time, global map[string]uint64, ifaces []Interface) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := &t.net
	if n.ifaces == nil {
		n.ifaces = map[string]*ifaceState{}
	}
	tick := netTick{at: now, fs: map[string]ifTick{}}
	if n.prevG != nil {
		tick.g = pathDelta(global, n.prevG)
	}
	n.prevG = clone(global)
	if n.prevIf == nil {
		n.prevIf = map[string]map[string]uint64{}
	}
	for _, f := range ifaces {
		if n.ifaces[f.Name] == nil {
			if len(n.ifaces) >= maxIfaces {
				continue
			}
			n.ifaces[f.Name] = &ifaceState{name: f.Name, verdict: verdict{state: StateIdle}}
			n.order = append(n.order, f.Name)
		}
		_, exact := f.Counters["syn"]
		if prev := n.prevIf[f.Name]; prev != nil {
			it := ifTick{tcp: counterDelta(f.Counters, prev, "tcp"), exact: exact}
			if exact {
				it.d = pathDelta(f.Counters, prev)
			}
			tick.fs[f.Name] = it
		}
		n.prevIf[f.Name] = clone(f.Counters)
	}
	n.ticks = append(n.ticks, tick)
	i := 0
	for i < len(n.ticks) && now.Sub(n.ticks[i].at) > t.cfg.NetWindow {
		i++
	}
	n.ticks = slices.Delete(n.ticks, 0, i)
	t.judgeNetwork(now)
}

// judgeNetwork classifies the sensor and every interface over the window.
func (t *Tracker) judgeNetwork(now time.Time) {
	n := &t.net
	min := uint64(t.cfg.MinSYN)
	var g delta
	sums := map[string]*delta{}
	by := map[string]string{}
	for _, tk := range n.ticks {
		g.add(tk.g)
		busy := ""
		nbusy := 0
		for name, it := range tk.fs {
			if it.exact {
				if sums[name] == nil {
					sums[name] = &delta{}
				}
				sums[name].add(it.d)
				by[name] = "counters"
			}
			if it.tcp > 0 {
				busy = name
				nbusy++
			}
		}
		if nbusy == 1 && !tk.fs[busy].exact {
			if sums[busy] == nil {
				sums[busy] = &delta{}
			}
			sums[busy].add(tk.g)
			by[busy] = "solo_seconds"
		}
	}
	sensor := classifySensor(g, min)
	setVerdict(&n.sensor, sensor, g, "", now)
	// Interfaces: one direction each, unless another carries the other.
	states := map[string]string{}
	var reqSide, ansSide []string
	for _, name := range n.order {
		s := sums[name]
		switch {
		case s == nil:
			states[name] = StateUnknown
			if len(n.ticks) == 0 || allIdle(n.ticks, name) {
				states[name] = StateIdle
			}
		default:
			states[name] = classifyIface(*s, min)
		}
		switch states[name] {
		case StateOneWay:
			reqSide = append(reqSide, name)
		case StateAnswersOnly:
			ansSide = append(ansSide, name)
		}
	}
	if len(reqSide) > 0 && len(ansSide) > 0 {
		for _, name := range complement(reqSide, ansSide, sums) {
			states[name] = StateTapHalf
		}
	}
	for _, name := range n.order {
		var sum delta
		if s := sums[name]; s != nil {
			sum = *s
		}
		setVerdict(&n.ifaces[name].verdict, states[name], sum, by[name], now)
	}
}

// complement returns the interfaces that are halves of taps: the
// answer-only interfaces and the SYN-only ones whose SYNs those answers
// explain best (the subset whose SYNs are nearest the answers; a dead
// port's stray packets do not make a tap: the two must be within a factor
// of ten). The SYN-only interfaces left out stay one way.
func complement(reqSide, ansSide []string, sums map[string]*delta) []string {
	var ans uint64
	for _, name := range ansSide {
		ans += sums[name].ans
	}
	if len(reqSide) > 12 {
		reqSide = reqSide[:12] // 4096 subsets at most
	}
	best, bestDiff := -1, uint64(0)
	for mask := 1; mask < 1<<len(reqSide); mask++ {
		var syn uint64
		for i, name := range reqSide {
			if mask&(1<<i) != 0 {
				syn += sums[name].syn
			}
		}
		diff := syn - ans
		if ans > syn {
			diff = ans - syn
		}
		if 10*ans < syn || 10*syn < ans {
			continue
		}
		if best < 0 || diff < bestDiff {
			best, bestDiff = mask, diff
		}
	}
	if best < 0 {
		return nil
	}
	out := append([]string(nil), ansSide...)
	for i, name := range reqSide {
		if best&(1<<i) != 0 {
			out = append(out, name)
		}
	}
	return out
}

func allIdle(ticks []netTick, name string) bool {
	for _, tk := range ticks {
		if tk.fs[name].tcp > 0 {
			return false
		}
	}
	return true
}

// setVerdict records a path's state. A window too quiet to judge keeps
// the last verdict (a one-way tap stays one way while nobody connects).
func setVerdict(v *verdict, state string, sum delta, by string, now time.Time) {
	if (state == StateIdle || state == StateUnknown) && v.state != "" && v.state != StateIdle && v.state != StateUnknown {
		return
	}
	if v.state != state {
		v.state, v.since = state, now
	}
	v.sum, v.by = sum, by
}

// matchedAnswers are the answers that answered a SYN the sensor saw.
func matchedAnswers(d delta) uint64 {
	if d.ans > d.unmatched {
		return d.ans - d.unmatched
	}
	return 0
}

// classifySensor judges the sensor's whole capture: one way when SYNs
// flow, at most 1% of them are answered and the connections carry data
// (or the clients' ACKs prove answers the capture lacks) — SYNs alone,
// answered by nobody, are a scan of empty addresses or a flood, not a
// missing direction; answers only when answers to unseen SYNs flow and
// SYNs are at most 1% of them.
func classifySensor(d delta, min uint64) string {
	switch {
	case d.syn >= min && 100*matchedAnswers(d) <= d.syn && (d.other >= d.syn || d.proof > 0):
		return StateOneWay
	case d.unmatched >= min && 100*d.syn <= d.unmatched:
		return StateAnswersOnly
	case d.syn+d.ans < min:
		return StateIdle
	}
	return StateOK
}

// classifyIface judges one interface: requests only (one way), answers
// only, idle or ok. Which answers match which SYNs is known only
// sensor-wide, so an interface with answers and no SYNs is "answers
// only" until another interface shows the SYNs (a tap's other port).
func classifyIface(d delta, min uint64) string {
	switch {
	case d.syn >= min && 100*d.ans <= d.syn && (d.other >= d.syn || d.proof > 0):
		return StateOneWay
	case d.ans >= min && 100*d.syn <= d.ans:
		return StateAnswersOnly
	case d.syn+d.ans < min:
		return StateIdle
	}
	return StateOK
}
