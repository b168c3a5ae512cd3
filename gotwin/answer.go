package gotwin

// answer.go mirrors bpf/include/answer.h: the server's RST or SYN-ACK, the
// client's own RST, the client's proving ACK.

// answer is kw_answer_body: match scratch.ans to the pair's pending SYN in
// the bucket or in its candidate.
func (t *Twin) answer(now uint64) bool {
	s := &t.s
	a := &s.ans
	h := t.hashPair(&a.pair)
	f := fp(h)
	b := t.bucketOf(h)
	a.flagged, a.epoch = 0, 0
	t.curSet(&a.pair, h, f, true)
	a.found, a.mark = -1, -1
	for w := range b {
		sl := &b[w]
		tg := sl.tag
		if tg == 0 || tg&tagBusy != 0 || tagFP(tg) != f {
			continue
		}
		k := tagKind(tg)
		if k == kMark {
			a.mark = int32(w)
			a.cidx = sl.seq
			a.flagged |= b2u(t.markFlagged(sl, ms32(now)))
			continue
		}
		if k != kSYN || sl.sport != a.sport || sl.dport != a.dport {
			continue
		}
		if a.v == sl.seq+1 || (a.how == mOrigRST && a.v == sl.seq) {
			a.found = int32(w)
			a.tag = tg
		}
	}
	if a.found >= 0 {
		found := uint32(a.found) & (ways - 1)
		sl := &b[found]
		ts := usFull(now, sl.t)
		seq := sl.seq
		if !claim(sl, a.tag) {
			return false
		}
		s.matchT, s.matchSeq = ts, seq
		if a.how == mRST || a.how == mOrigRST {
			kind := uint8(touchRSTOS0)
			if a.how == mRST {
				kind = touchREJ
			}
			t.push(wTouch, kind, a.dport, a.sport, ts, found, tagBusy)
			t.push(wEmit, 0, 0, 0, 0, 0, 0)
		} else {
			sl.tag = 0
		}
		return true
	}
	if a.mark < 0 {
		return false
	}
	cidx := a.cidx
	idx := h & t.candMask
	cb := &t.cands[idx]
	for j := range s.dues {
		s.dues[j].kind = 0
	}
	var w int32
	if cidx>>2 == idx && cb[cidx&3].pair == a.pair {
		w = int32(cidx & 3)
	} else {
		w = candFind(cb, &a.pair)
	}
	if w < 0 {
		return false
	}
	cd := &cb[w&3]
	i, ts, seq := candMatch(cd, a.how, a.v, a.sport, a.dport)
	var answered uint64
	if i >= 0 && a.how != mOrigRST {
		answered = ts
	}
	t.candDue(cd, now, answered)
	epoch := cd.epoch
	cidx = idx<<2 | uint32(w&3)
	for j := range s.dues {
		if d := &s.dues[j]; d.kind != 0 {
			t.push(wCandTouch, d.kind, d.port, d.sport, d.ts, cidx, 0)
		}
	}
	if i >= 0 && (a.how == mRST || a.how == mOrigRST) {
		kind := uint8(touchRSTOS0)
		if a.how == mRST {
			kind = touchREJ
		}
		t.push(wCandTouch, kind, a.dport, a.sport, ts, cidx, 0)
	}
	t.push(wEmit, 0, 0, 0, 0, cidx, 0)
	if i < 0 {
		return false
	}
	s.matchT, s.matchSeq = ts, seq
	a.epoch = epoch
	return true
}

// early is kw_early: an answer that matched nothing waits for its SYN.
func (t *Twin) early(p *pair, sport, dport uint16, ack, kind uint32, now uint64) {
	if t.cfg.AnswerSkew == 0 {
		return
	}
	h := t.hashPair(p)
	e := t.insert(h, fp(h), kind, now, us32(now), ack, sport, dport, 0)
	if e < 0 {
		return
	}
	a := &t.s.ans
	a.pair, a.sport, a.dport, a.v = *p, sport, dport, ack
	t.ansRecheck(uint32(e), kind, now)
}

// onRST is kw_rst_body.
func (t *Twin) onRST(now uint64) {
	s := &t.s
	p := &s.pkt
	a := &s.ans
	t.c[cRST]++
	if p.flags&thACK != 0 {
		a.pair = pair{src: p.daddr, dst: p.saddr}
		a.sport, a.dport, a.v, a.how = p.dport, p.sport, p.ack, mRST
		if t.answer(now) {
			return
		}
	}
	a.pair = pair{src: p.saddr, dst: p.daddr}
	a.sport, a.dport, a.v, a.how = p.sport, p.dport, p.seq, mOrigRST
	if t.answer(now) {
		return
	}
	t.c[cBackscatter]++
	if p.flags&thACK != 0 {
		pr := pair{src: p.daddr, dst: p.saddr}
		t.early(&pr, p.dport, p.sport, p.ack, kEarlyRST, now)
	}
}

// onSYNACK is kw_synack_body.
func (t *Twin) onSYNACK(now uint64) {
	s := &t.s
	p := &s.pkt
	a := &s.ans
	t.c[cSYNACK]++
	a.pair = pair{src: p.daddr, dst: p.saddr}
	a.sport, a.dport, a.v, a.how = p.dport, p.sport, p.ack, mSYNACK
	if !t.answer(now) {
		pr := pair{src: p.daddr, dst: p.saddr}
		t.c[cSYNACKUnmatched]++
		t.early(&pr, p.dport, p.sport, p.ack, kEarlySYNACK, now)
		return
	}
	s.oev = openEv{conn: conn{pair: a.pair, sport: p.dport, dport: p.sport}, synTS: s.matchT, synSeq: s.matchSeq,
		synackTS: now, synackSeq: p.seq, hasSynack: 1, flagged: uint8(a.flagged), epoch: a.epoch}
	t.push(wOpened, 0, 0, 0, 0, 0, 0)
}

// onACKProof is kw_ack_proof_body.
func (t *Twin) onACKProof(now uint64) {
	s := &t.s
	p := &s.pkt
	a := &s.ans
	a.pair = pair{src: p.saddr, dst: p.daddr}
	a.sport, a.dport, a.v, a.how = p.sport, p.dport, p.seq, mACK
	if !t.answer(now) {
		return
	}
	t.c[cAckProof]++
	s.oev = openEv{conn: conn{pair: a.pair, sport: p.sport, dport: p.dport}, synTS: s.matchT, synSeq: s.matchSeq,
		flagged: uint8(a.flagged), epoch: a.epoch}
	t.push(wOpened, 0, 0, 0, 0, 1, 0)
}
