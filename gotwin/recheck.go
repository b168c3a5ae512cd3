package gotwin

// recheck.go mirrors bpf/include/recheck.h: looking again after
// publishing, for what another CPU published meanwhile. With one thread
// these find nothing the first look did not, but they run all the same,
// branch for branch.

// candPeek is kw_cand_peek: a pending SYN (sport, dport) that v answers.
func candPeek(cd *cand, v uint32, sport, dport uint16) bool {
	hit := false
	for i := range cd.pend {
		e := &cd.pend[i]
		if e.t != 0 && e.sport == sport && e.dport == dport && v == e.seq+1 {
			hit = true
		}
	}
	return hit
}

// synRecheck is kw_syn_recheck_body: the SYN just inserted at way w, and an
// answer that came first and was published meanwhile.
func (t *Twin) synRecheck(w uint32, now uint64) {
	s := &t.s
	p := &s.pkt
	f := s.cur.fp
	b := t.bucketOf(s.cur.h)
	sl := &b[w&(ways-1)]
	tg := sl.tag
	if tg == 0 || tg&tagBusy != 0 || tagFP(tg) != f || tagKind(tg) != kSYN || sl.sport != p.sport || sl.dport != p.dport || sl.seq != p.seq {
		return
	}
	var etag, ew, at uint32
	found := false
	for i := range b {
		x := &b[i]
		xt := x.tag
		if xt == 0 || xt&tagBusy != 0 || tagFP(xt) != f {
			continue
		}
		k := tagKind(xt)
		if (k == kEarlyRST || k == kEarlySYNACK) && x.sport == p.sport && x.dport == p.dport && x.seq == p.seq+1 &&
			!t.stale(x, k, us32(now), ms32(now)) {
			ew, etag, at, found = uint32(i), xt, x.t, true
		}
	}
	if !found || !claim(sl, tg) {
		return
	}
	el := &b[ew&(ways-1)]
	if !take(el, etag) {
		publish(sl, f, kSYN, tg)
		return
	}
	t.c[cAnswerEarly]++
	if tagKind(etag) == kEarlyRST {
		t.push(wTouch, touchREJ, p.dport, p.sport, now, w&(ways-1), tagBusy)
		t.push(wEmit, 0, 0, 0, 0, 0, 0)
		return
	}
	sl.tag = 0
	s.oev = openEv{conn: conn{pair: s.cur.pair, sport: p.sport, dport: p.dport}, synTS: now, synSeq: p.seq, synackTS: usFull(now, at)}
	t.push(wOpened, 0, 0, 0, 0, 0, 0)
}

// ansRecheck is kw_ans_recheck_body: the early answer just inserted at way
// e (scratch.ans), and a SYN published meanwhile, in the bucket or in the
// pair's candidate.
func (t *Twin) ansRecheck(e, kind uint32, now uint64) {
	s := &t.s
	a := &s.ans
	h := t.hashPair(&a.pair)
	f := fp(h)
	b := t.bucketOf(h)
	t.curSet(&a.pair, h, f, true)
	v := a.v
	el := &b[e&(ways-1)]
	etag := el.tag
	if etag == 0 || etag&tagBusy != 0 || tagFP(etag) != f || tagKind(etag) != kind || el.sport != a.sport || el.dport != a.dport || el.seq != v {
		return
	}
	found, mark := int32(-1), int32(-1)
	var stag, cidx, epoch, seq uint32
	var flagged uint32
	var ts uint64
	for j := range b {
		x := &b[j]
		xt := x.tag
		if xt == 0 || xt&tagBusy != 0 || tagFP(xt) != f {
			continue
		}
		k := tagKind(xt)
		if k == kMark {
			mark = int32(j)
			cidx = x.seq
			flagged |= b2u(t.markFlagged(x, ms32(now)))
		} else if k == kSYN && x.sport == a.sport && x.dport == a.dport && x.seq+1 == v {
			found, stag = int32(j), xt
		}
	}
	if found >= 0 {
		sl := &b[found&(ways-1)]
		ts = usFull(now, sl.t)
		seq = sl.seq
		if !claim(sl, stag) {
			return
		}
		if !take(el, etag) {
			publish(sl, f, kSYN, stag)
			return
		}
		t.c[cAnswerEarly]++
		if kind == kEarlyRST {
			t.push(wTouch, touchREJ, a.dport, a.sport, ts, uint32(found)&(ways-1), tagBusy)
			t.push(wEmit, 0, 0, 0, 0, 0, 0)
			return
		}
		sl.tag = 0
		t.ansOpened(ts, seq, flagged, epoch, now)
		return
	}
	if mark < 0 {
		return
	}
	cb := t.cbucket(h)
	peek := false
	if w := t.cway(cb, h, cidx, &a.pair); w >= 0 {
		peek = candPeek(&cb[w&3], v, a.sport, a.dport)
	}
	if !peek || !take(el, etag) {
		return
	}
	i := int32(-1)
	w := t.cway(cb, h, cidx, &a.pair)
	if w >= 0 {
		how := uint32(mSYNACK)
		if kind == kEarlyRST {
			how = mRST
		}
		i, ts, seq = candMatch(&cb[w&3], how, v, a.sport, a.dport)
		epoch = cb[w&3].epoch
	}
	if i < 0 {
		return
	}
	t.c[cAnswerEarly]++
	cidx = (h&t.candMask)<<2 | uint32(w&3)
	if kind == kEarlyRST {
		t.push(wCandTouch, touchREJ, a.dport, a.sport, ts, cidx, 0)
		t.push(wEmit, 0, 0, 0, 0, cidx, 0)
		return
	}
	t.ansOpened(ts, seq, flagged, epoch, now)
}

// ansOpened is the end of kw_ans_recheck_body for a SYN-ACK.
func (t *Twin) ansOpened(ts uint64, seq, flagged, epoch uint32, now uint64) {
	s := &t.s
	a := &s.ans
	s.oev = openEv{conn: conn{pair: a.pair, sport: a.sport, dport: a.dport}, synTS: ts, synSeq: seq, synackTS: now,
		synackSeq: s.pkt.seq, hasSynack: 1, flagged: uint8(flagged), epoch: epoch}
	t.push(wOpened, 0, 0, 0, 0, 0, 0)
}

// recheckOne is kw_recheck_one_body: the early answer at way e of the
// current pair's bucket answers a SYN pending in its candidate cidx.
func (t *Twin) recheckOne(e, cidx uint32, now uint64) {
	s := &t.s
	h, f := s.cur.h, s.cur.fp
	b := t.bucketOf(h)
	cb := t.cbucket(h)
	el := &b[e&(ways-1)]
	etag := el.tag
	k := tagKind(etag)
	if etag == 0 || etag&tagBusy != 0 || tagFP(etag) != f || (k != kEarlyRST && k != kEarlySYNACK) || t.stale(el, k, us32(now), ms32(now)) {
		return
	}
	v, at, sport, dport := el.seq, el.t, el.sport, el.dport
	var flagged uint32
	for j := range b {
		x := &b[j]
		if xt := x.tag; xt != 0 && xt&tagBusy == 0 && tagFP(xt) == f && tagKind(xt) == kMark {
			flagged |= b2u(t.markFlagged(x, ms32(now)))
		}
	}
	peek := false
	if w := t.cway(cb, h, cidx, &s.cur.pair); w >= 0 {
		peek = candPeek(&cb[w&3], v, sport, dport)
	}
	if !peek || !take(el, etag) {
		return
	}
	i := int32(-1)
	var ts uint64
	var seq, epoch uint32
	w := t.cway(cb, h, cidx, &s.cur.pair)
	if w >= 0 {
		how := uint32(mSYNACK)
		if k == kEarlyRST {
			how = mRST
		}
		i, ts, seq = candMatch(&cb[w&3], how, v, sport, dport)
		epoch = cb[w&3].epoch
	}
	if i < 0 {
		return
	}
	t.c[cAnswerEarly]++
	cidx = (h&t.candMask)<<2 | uint32(w&3)
	if k == kEarlyRST {
		t.push(wCandTouch, touchREJ, dport, sport, ts, cidx, 0)
		t.push(wEmit, 0, 0, 0, 0, cidx, 0)
		return
	}
	s.oev = openEv{conn: conn{pair: s.cur.pair, sport: sport, dport: dport}, synTS: ts, synSeq: seq,
		synackTS: usFull(now, at), flagged: uint8(flagged), epoch: epoch}
	t.push(wOpened, 0, 0, 0, 0, 0, 0)
}

// stepRecheck is kw_step_recheck: touches left beside the current pair's
// MARK move into its candidate, early answers of its pending SYNs are
// taken.
func (t *Twin) stepRecheck(now uint64) {
	s := &t.s
	f := s.cur.fp
	b := t.bucketOf(s.cur.h)
	if !s.cur.hasPair {
		return
	}
	mark := -1
	var cidx uint32
	for j := range b {
		x := &b[j]
		if xt := x.tag; xt != 0 && xt&tagBusy == 0 && tagFP(xt) == f && tagKind(xt) == kMark {
			mark, cidx = j, x.seq
		}
	}
	if mark < 0 {
		return
	}
	for j := range b {
		x := &b[j]
		xt := x.tag
		k := tagKind(xt)
		if xt == 0 || xt&tagBusy != 0 || tagFP(xt) != f {
			continue
		}
		if k >= kTouchREJ && !t.stale(x, k, us32(now), ms32(now)) {
			ts, port, sport := usFull(now, x.t), x.dport, x.sport
			if !take(x, xt) {
				continue
			}
			t.push(wCandTouch, uint8(k-4)|recorded, port, sport, ts, cidx, 0)
			t.push(wEmit, 0, 0, 0, 0, cidx, 0)
		} else if k == kEarlyRST || k == kEarlySYNACK {
			t.recheckOne(uint32(j), cidx, now)
		}
	}
}

// markDedupe is kw_mark_dedupe_body: keep the first MARK of fp, carry a
// live flag over from the others, drop them.
func (t *Twin) markDedupe(h, f uint32, now uint64) {
	b := t.bucketOf(h)
	keep := -1
	var keepTag, flagMs uint32
	for j := range b {
		x := &b[j]
		xt := x.tag
		if xt == 0 || xt&tagBusy != 0 || tagFP(xt) != f || tagKind(xt) != kMark {
			continue
		}
		if keep < 0 {
			keep, keepTag = j, xt
			continue
		}
		if t.markFlagged(x, ms32(now)) {
			flagMs = uint32(x.sport)<<16 | uint32(x.dport)
		}
		take(x, xt)
	}
	if keep >= 0 && flagMs != 0 {
		k := &b[keep&(ways-1)]
		cur := uint32(k.sport)<<16 | uint32(k.dport)
		if !t.markFlagged(k, ms32(now)) || int32(flagMs-cur) > 0 {
			rewrite(k, keepTag, f, kMark, k.t, k.seq, uint16(flagMs>>16), uint16(flagMs))
		}
	}
}
