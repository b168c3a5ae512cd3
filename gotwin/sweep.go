package gotwin

import "time"

// Sweep mirrors (*loader.Sensor).Sweep running knockwatch_sweep
// (bpf/include/sweep.h): every pair bucket, then every candidate bucket,
// aged at now. Returns the S0 touches found.
func (t *Twin) Sweep(now time.Time) int {
	ns := uint64(now.UnixNano())
	s := &t.s
	// Close the watched-ACK gate once nothing can be in flight.
	if t.watchUntil != 0 && after(ns, t.watchUntil, 0) {
		t.watchUntil = 0
	}
	found := 0
	for idx := range t.pairs {
		b := &t.pairs[idx]
		if b[0].tag == 0 && b[1].tag == 0 && b[2].tag == 0 && b[3].tag == 0 {
			continue
		}
		for w := uint32(0); w < ways; w++ {
			s.nwork, s.st.n, s.st.knock = 0, 0, 0
			found += t.sweepPair(uint32(idx), w, ns)
			t.runWork(ns)
		}
	}
	for idx := range t.cands {
		for w := uint32(0); w < candWays; w++ {
			s.nwork, s.st.n, s.st.knock = 0, 0, 0
			found += t.sweepCand(uint32(idx), w, ns)
			t.runWork(ns)
		}
	}
	return found
}

// sweepPair is kw_sweep_pair_body.
func (t *Twin) sweepPair(idx, w uint32, now uint64) int {
	s := &t.s
	sl := &t.pairs[idx][w&(ways-1)]
	tg := sl.tag
	k := tagKind(tg)
	if tg == 0 || tg&tagBusy != 0 {
		return 0
	}
	if k != kSYN {
		if t.stale(sl, k, us32(now), ms32(now)) {
			take(sl, tg)
		}
		return 0
	}
	if !t.due(sl, us32(now)) {
		return 0
	}
	if !claim(sl, tg) {
		return 0
	}
	s.cur.pair, s.cur.hasPair = pair{}, false
	s.cur.h, s.cur.fp = idx, tagFP(tg)
	if t.cfg.ReportTouches {
		o := t.owners[idx<<2|w&3]
		s.cur.pair = o
		s.cur.h = t.hashPair(&o)
		s.cur.hasPair = s.cur.h&t.pairMask == idx && fp(s.cur.h) == tagFP(tg)
		if !s.cur.hasPair {
			s.cur.h = idx
		}
	}
	t.push(wTouch, touchS0, sl.dport, sl.sport, usFull(now, sl.t), w&3, tagBusy)
	t.push(wEmit, 0, 0, 0, 0, 0, 0)
	return 1
}

// sweepCand is kw_sweep_cand_body.
func (t *Twin) sweepCand(bucket, w uint32, now uint64) int {
	s := &t.s
	cd := &t.cands[bucket][w&3]
	cidx := bucket<<2 | w&3
	t.clearDues()
	if cd.free() {
		return 0
	}
	t.candDue(cd, now, 0)
	var n uint8
	for j := 0; j < cpend; j++ {
		n |= s.dues[j].kind
	}
	due := cd.due != 0 && after(now, cd.flagTouchTS, t.window)
	var pending uint64
	for j := range cd.pend {
		pending |= cd.pend[j].t
	}
	over := n == 0 && cd.due == 0 && !t.candFlagged(cd, now) && after(now, cd.lastTS, t.window) && pending == 0
	s.cur.pair = cd.pair
	if over {
		cd.pair = pair{}
	}
	if over || (n == 0 && !due) {
		return 0
	}
	s.cur.h = t.hashPair(&s.cur.pair)
	s.cur.fp = fp(s.cur.h)
	s.cur.hasPair = true
	found := 0
	for j := 0; j < cpend; j++ {
		if s.dues[j].kind == touchS0 {
			found++
		}
	}
	t.pushDues(cidx)
	if due {
		t.push(wFlag, 0, 0, 0, 0, cidx, 0)
	}
	t.push(wEmit, 0, 0, 0, 0, cidx, 0)
	return found
}
