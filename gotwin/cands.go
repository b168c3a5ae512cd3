package gotwin

// cands.go mirrors bpf/include/cands.h: candidates, their touch rings,
// burst counts and flags. The C runs these under the candidate bucket's
// lock; the twin has one thread.

func (t *Twin) cbucket(h uint32) *candBucket { return &t.cands[h&t.candMask] }

func (c *cand) free() bool { return c.pair == pair{} }

// candFind is kw_cand_find.
func candFind(cb *candBucket, p *pair) int32 {
	for w := range cb {
		if cb[w].pair == *p {
			return int32(w)
		}
	}
	return -1
}

// cway is kw_cway: the candidate's way, at cidx when cidx names this
// bucket, else by search.
func (t *Twin) cway(cb *candBucket, h, cidx uint32, p *pair) int32 {
	if cidx>>2 == h&t.candMask && cb[cidx&3].pair == *p {
		return int32(cidx & 3)
	}
	return candFind(cb, p)
}

func (t *Twin) candFlagged(cd *cand, now uint64) bool {
	return cd.flagTS != 0 && !after(now, cd.flagTS, t.flagTTL)
}

// pendPorts is kw_pend_ports: distinct ports among the pending SYNs.
func pendPorts(cd *cand) uint32 {
	var n uint32
	for i := 0; i < cpend; i++ {
		if cd.pend[i].t == 0 {
			continue
		}
		dup := false
		for j := i + 1; j < cpend; j++ {
			if cd.pend[j].t != 0 && cd.pend[j].dport == cd.pend[i].dport {
				dup = true
			}
		}
		if !dup {
			n++
		}
	}
	return n
}

// candAlloc is kw_cand_alloc: free, else over, else flagged, else a knock
// in progress; within a rank the fewest ports in play (at most N), then the
// least recently active.
func (t *Twin) candAlloc(cb *candBucket, now uint64) int32 {
	const lim = uint64(1)<<58 - 1
	best, bestRank, bestScore := uint32(0), uint32(9), ^uint64(0)
	for w := uint32(0); w < candWays; w++ {
		cd := &cb[w]
		free := cd.free()
		flagged := cd.flagTS != 0 && within(now, cd.flagTS, t.flagTTL)
		over := !flagged && !within(now, cd.lastTS, t.window)
		var rank uint32
		switch {
		case free:
			rank = 0
		case over:
			rank = 1
		case flagged:
			rank = 2
		default:
			rank = 3
		}
		play := min(uint32(cd.distinct)+pendPorts(cd), t.minPorts) & 15
		a := now - cd.lastTS
		if a>>58 != 0 {
			a = lim
		}
		score := uint64(rank)<<62 | uint64(play)<<58 | (lim - a)
		if score < bestScore || bestScore == ^uint64(0) {
			best, bestRank, bestScore = w, rank, score
		}
	}
	if bestRank >= 2 {
		t.c[cCandEvicted]++
	}
	return int32(best)
}

// distinct is kw_distinct: distinct closed ports among the ring's touches
// within the window of newest and later than since.
func (t *Twin) distinct(cd *cand, newest, since uint64) uint32 {
	var inwin uint32
	for i := 0; i < maxTouches; i++ {
		r := &cd.ring[i]
		if i < int(cd.n) && within(newest, r.ts, t.window) && closedKind(r.kind) && later(r.ts, since) {
			inwin |= 1 << i
		}
	}
	var d uint32
	for i := 0; i < maxTouches; i++ {
		if inwin>>i&1 == 0 {
			continue
		}
		dup := false
		for j := i + 1; j < maxTouches; j++ {
			if inwin>>j&1 != 0 && cd.ring[j].port == cd.ring[i].port {
				dup = true
			}
		}
		if !dup {
			d++
		}
	}
	return d
}

// ringSeen is kw_ring_seen.
func (t *Twin) ringSeen(cd *cand, port uint16, ts uint64, any bool) bool {
	for i := 0; i < maxTouches; i++ {
		r := &cd.ring[i]
		if i < int(cd.n) && r.port == port && within(ts, r.ts, t.window) && (closedKind(r.kind) || any) {
			return true
		}
	}
	return false
}

// stageKnock is kw_stage_knock.
func stageKnock(cd *cand, rec *knockRec, now uint64) {
	h := uint32(0)
	if cd.n > maxTouches-1 {
		h = uint32(cd.head)
	}
	rec.n = uint16(cd.n)
	rec.distinct = cd.distinct
	rec.attempted = cd.attempted
	rec.epoch = cd.epoch
	rec.pair = cd.pair
	rec.flagTS = now
	for i := uint32(0); i < maxTouches; i++ {
		rec.touches[i] = cd.ring[(h+i)&(maxTouches-1)]
	}
}

// candFlag is kw_cand_flag.
func (t *Twin) candFlag(cd *cand, newest uint64) {
	s := &t.s
	now := s.ev.now
	d := t.distinct(cd, newest, cd.flagTouchTS)
	if d < t.minPorts {
		return
	}
	if cd.flagTouchTS != 0 && !after(now, cd.flagTouchTS, t.window) {
		if cd.due == 0 {
			t.c[cKnockDeferred]++
		}
		cd.due = 1
		return
	}
	if uint32(cd.distinct) < d {
		cd.distinct = uint16(d)
	}
	cd.epoch++
	cd.flagTS = now
	cd.flagTouchTS = newest
	cd.nrep = 0
	cd.rephead = 0
	cd.due = 0
	stageKnock(cd, &s.rec, now)
	s.st.knock = 1
}

// ringAdd is kw_ring_add.
func (t *Twin) ringAdd(cd *cand, tc *touch) {
	ts, port, kind := tc.ts, tc.port, tc.kind
	h := cd.head & (maxTouches - 1)
	seenAny, seenClosed := t.ringSeen(cd, port, ts, true), t.ringSeen(cd, port, ts, false)
	if after(ts, cd.touchTS, t.window) {
		cd.distinct = 0
		cd.attempted = 0
		seenAny, seenClosed = false, false
	}
	if !seenAny && cd.attempted < 0xffff {
		cd.attempted++
		t.c[cAttempted]++
	}
	if closedKind(kind) && !seenClosed && cd.distinct < 0xffff {
		cd.distinct++
	}
	if int64(ts-cd.lastTS) > 0 {
		cd.lastTS = ts
	}
	if int64(ts-cd.touchTS) > 0 {
		cd.touchTS = ts
	}
	cd.ring[h].ts = ts
	cd.ring[h].port = port
	cd.ring[h].sport = tc.sport
	cd.ring[h].kind = kind
	cd.head = (h + 1) & (maxTouches - 1)
	if cd.n < maxTouches {
		cd.n++
	}
}

// stageTouch is kw_stage_touch.
func stageTouch(st *staged, p *pair, sport, port uint16, kind uint8, ts uint64) {
	i := st.n
	if i >= stageMax {
		return
	}
	st.conn[i] = conn{pair: *p, sport: sport, dport: port}
	st.ts[i] = ts
	st.kind[i] = kind
	st.n = i + 1
}

// candTouch is kw_cand_touch.
func (t *Twin) candTouch(cd *cand, tc *touch) {
	s := &t.s
	tt := *tc
	kind := tc.kind &^ recorded
	tt.kind = kind
	t.ringAdd(cd, &tt)
	if !closedKind(kind) {
		return
	}
	if tc.kind&recorded == 0 {
		stageTouch(&s.st, &cd.pair, tc.sport, tc.port, kind, tc.ts)
	}
	if s.st.knock == 0 {
		t.candFlag(cd, cd.touchTS)
	}
}

// candDue is kw_cand_due: pending SYNs past the S0 timeout, or sent more
// than the answer skew before a later SYN the host just answered
// (answered: its time, else 0), become S0 touches in scratch.dues[0..7].
func (t *Twin) candDue(cd *cand, now, answered uint64) {
	s := &t.s
	for i := 0; i < cpend; i++ {
		e := &cd.pend[i]
		d := &s.dues[i]
		ts := e.t
		due := ts != 0 && (!within(now, ts, t.s0Timeout) || ts+t.answerSkew < answered)
		d.ts = ts
		d.port = e.dport
		d.sport = e.sport
		d.kind = 0
		if due {
			d.kind = touchS0
			e.t = 0
		}
	}
}

// candPend is kw_cand_pend: a retransmission refreshes its entry; a new
// attempt takes a free entry or pushes out the oldest (an attempt, staged in
// scratch.dues[dueEvicted]).
func (t *Twin) candPend(cd *cand, ev *tev) {
	s := &t.s
	var found, anyfree bool
	var at, best uint32
	bestT := ^uint64(0)
	for i := uint32(0); i < cpend; i++ {
		e := &cd.pend[i]
		used := e.t != 0
		hit := used && e.sport == ev.conn.sport && e.dport == ev.conn.dport && !found
		if hit {
			at = i
			found = true
		}
		if e.t < bestT {
			best, bestT = i, e.t
		}
		if !used {
			anyfree = true
		}
	}
	target := best
	if found {
		target = at
	}
	evict := !found && !anyfree
	d := &s.dues[dueEvicted]
	d.kind = 0
	e := &cd.pend[target]
	d.ts, d.port, d.sport = e.t, e.dport, e.sport
	e.t, e.seq, e.sport, e.dport = ev.now, ev.seq, ev.conn.sport, ev.conn.dport
	if evict {
		d.kind = touchAttempt
	}
	if found {
		t.c[cSYNRetrans]++
	}
	if evict {
		t.c[cPendingEvicted]++
	}
	if int64(ev.now-cd.lastTS) > 0 {
		cd.lastTS = ev.now
	}
}

// candMatch is kw_cand_match: finds and frees the pending SYN v answers.
func candMatch(cd *cand, how uint32, v uint32, sport, dport uint16) (int32, uint64, uint32) {
	for i := range cd.pend {
		e := &cd.pend[i]
		if e.t == 0 || e.sport != sport || e.dport != dport {
			continue
		}
		ok := v == e.seq+1
		if how == mOrigRST {
			ok = v == e.seq || v == e.seq+1
		}
		if !ok {
			continue
		}
		ts, seq := e.t, e.seq
		e.t = 0
		return int32(i), ts, seq
	}
	return -1, 0, 0
}

// candFirstPort is kw_cand_first_port.
func (t *Twin) candFirstPort(cd *cand, port uint16) int {
	n := cd.nrep
	for i := 0; i < reportedPorts; i++ {
		if i < int(n) && cd.reported[i] == port {
			return 0
		}
	}
	h := cd.rephead & (reportedPorts - 1)
	cd.reported[h] = port
	cd.rephead = (h + 1) & (reportedPorts - 1)
	if n < reportedPorts {
		cd.nrep = n + 1
	} else {
		t.c[cReportedOverflow]++
	}
	return 1
}
