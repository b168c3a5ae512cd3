package gotwin

// work.go mirrors bpf/include/work.h (the candidate steps and the runner)
// and kw_g_handshake of bpf/knockwatch.c.

// runWork is kw_run_work: drain the queue in order; steps may queue more.
func (t *Twin) runWork(now uint64) {
	s := &t.s
	for i := uint32(0); i < workMax; i++ {
		if i >= s.nwork {
			break
		}
		switch s.work[i].op {
		case wTouch:
			t.stepTouch(i, now)
		case wPromote:
			t.stepPromote(i, now)
		case wCandSYN:
			t.stepCandSYN(i, now)
		case wCandTouch:
			t.stepCandTouch(i, now)
		case wOpened:
			t.stepOpened(now, s.work[i].a)
		case wEmit:
			t.stepEmit(s.work[i].a, now)
		case wMark:
			t.markSet(s.cur.h, now, s.work[i].a, false)
		case wFlag:
			t.stepFlag(i, now)
		case wRecheck:
			t.stepRecheck(now)
		}
	}
	s.nwork = 0
}

// pushDues is kw_push_dues.
func (t *Twin) pushDues(cidx uint32) {
	for j := range t.s.dues {
		d := &t.s.dues[j]
		if d.kind != 0 {
			t.push(wCandTouch, d.kind, d.port, d.sport, d.ts, cidx, 0)
		}
		d.kind = 0
	}
}

func (t *Twin) clearDues() {
	for j := range t.s.dues {
		t.s.dues[j].kind = 0
	}
}

// promoteCand is kw_promote_cand_body: find or make the current pair's
// candidate, move in the staged SYNs, add the SYN (kind 0), age.
func (t *Twin) promoteCand(kind uint8, ts, now uint64) int64 {
	s := &t.s
	h := s.cur.h
	cb := t.cbucket(h)
	nmoved := s.nmoved
	t.clearDues()
	w := candFind(cb, &s.cur.pair)
	if w < 0 {
		w = t.candAlloc(cb, now)
		cb[w&3] = cand{pair: s.cur.pair, lastTS: ts}
		t.c[cCandidates]++
	}
	cd := &cb[w&3]
	for j := uint32(0); j < ways; j++ {
		if j >= nmoved {
			continue
		}
		m := &s.moved[j]
		cd.pend[j] = *m
		if (cd.lastTS-m.t)>>63 != 0 {
			cd.lastTS = m.t
		}
	}
	if kind == 0 {
		t.candPend(cd, &s.ev)
	}
	t.candDue(cd, now, 0)
	return int64((h&t.candMask)<<2 | uint32(w&3))
}

// stepPromote is kw_step_promote.
func (t *Twin) stepPromote(i uint32, now uint64) {
	s := &t.s
	f := s.cur.fp
	b := t.bucketOf(s.cur.h)
	wk := s.work[i]
	held := t.stageMoves(b, f, now)
	cidx := t.promoteCand(wk.kind, wk.ts, now)
	if !t.settle(b, f, held, cidx >= 0, uint32(cidx), now) && cidx >= 0 {
		t.push(wMark, 0, 0, 0, 0, uint32(cidx), 0)
	} else {
		t.markDedupe(s.cur.h, f, now)
	}
	if cidx < 0 {
		return
	}
	for j := uint32(0); j < ways; j++ {
		if j >= s.nfirsts {
			break
		}
		ft := &s.firsts[j]
		t.push(wCandTouch, ft.kind|recorded, ft.port, ft.sport, ft.ts, uint32(cidx), 0)
	}
	t.pushDues(uint32(cidx))
	if wk.kind != 0 {
		t.push(wCandTouch, wk.kind, wk.port, wk.sport, wk.ts, uint32(cidx), 0)
	}
	t.push(wEmit, 0, 0, 0, 0, uint32(cidx), 0)
	t.push(wRecheck, 0, 0, 0, 0, 0, 0)
}

// stepCandSYN is kw_step_cand_syn: a SYN (scratch.ev) of candidate a.
func (t *Twin) stepCandSYN(i uint32, now uint64) {
	s := &t.s
	h := s.cur.h
	cidx := s.work[i].a
	cb := t.cbucket(h)
	t.clearDues()
	w := t.cway(cb, h, cidx, &s.cur.pair)
	if w < 0 {
		t.push(wPromote, 0, s.ev.conn.dport, s.ev.conn.sport, now, 0, 0)
		return
	}
	t.candDue(&cb[w&3], now, 0)
	t.candPend(&cb[w&3], &s.ev)
	cidx = (h&t.candMask)<<2 | uint32(w&3)
	t.pushDues(cidx)
	t.push(wMark, 0, 0, 0, 0, cidx, 0)
	t.push(wEmit, 0, 0, 0, 0, cidx, 0)
	t.push(wRecheck, 0, 0, 0, 0, 0, 0)
}

// stepCandTouch is kw_step_cand_touch.
func (t *Twin) stepCandTouch(i uint32, now uint64) {
	s := &t.s
	h := s.cur.h
	wk := s.work[i]
	cb := t.cbucket(h)
	tc := touch{ts: wk.ts, port: wk.port, sport: wk.sport, kind: wk.kind}
	s.ev.now = now
	w := t.cway(cb, h, wk.a, &s.cur.pair)
	if w < 0 {
		if s.cur.hasPair && wk.kind&recorded == 0 && wk.kind != touchAttempt {
			t.push(wPromote, wk.kind, wk.port, wk.sport, wk.ts, 0, 0)
		}
		return
	}
	t.candTouch(&cb[w&3], &tc)
}

// stepFlag is kw_step_flag: a deferred KNOCK whose window has passed.
func (t *Twin) stepFlag(i uint32, now uint64) {
	s := &t.s
	h := s.cur.h
	cb := t.cbucket(h)
	s.ev.now = now
	w := t.cway(cb, h, s.work[i].a, &s.cur.pair)
	if w < 0 {
		return
	}
	cd := &cb[w&3]
	if cd.due != 0 && s.st.knock == 0 && after(now, cd.flagTouchTS, t.window) {
		t.candFlag(cd, cd.touchTS)
	}
}

// gHandshake is kw_g_handshake: 1 when scratch.ev.conn is the first
// completed handshake to its port for the pair's current knock (epoch and
// counts in scratch), 0 a repeat, -1 the candidate is gone.
func (t *Twin) gHandshake(h, cidx uint32) int {
	s := &t.s
	cb := t.cbucket(h)
	w := t.cway(cb, h, cidx, &s.ev.conn.pair)
	if w < 0 {
		return -1
	}
	cd := &cb[w&3]
	first := t.candFirstPort(cd, s.ev.conn.dport)
	s.epoch, s.distinct, s.attempted = cd.epoch, cd.distinct, cd.attempted
	return first
}
