package gotwin

// touch.go mirrors bpf/include/touch.h: the work queue and the steps that
// carry a closed touch to the state that remembers it.

// push is kw_push: queue a step (dropped and counted when the queue is full).
func (t *Twin) push(op, kind uint8, port, sport uint16, ts uint64, a, b uint32) {
	s := &t.s
	n := s.nwork
	if n >= workMax {
		t.c[cMapInsertFail]++
		return
	}
	s.work[n] = work{op: op, kind: kind, port: port, sport: sport, ts: ts, a: a, b: b}
	s.nwork = n + 1
}

// curSet is kw_cur_set.
func (t *Twin) curSet(p *pair, h, fp uint32, hasPair bool) {
	t.s.cur.pair, t.s.cur.h, t.s.cur.fp, t.s.cur.hasPair = *p, h, fp, hasPair
}

func (t *Twin) allowlisted(a *addr) bool { return containsAny(t.allow, a) }

// markSet is kw_mark_set: refresh the pair's MARK or write it anew.
func (t *Twin) markSet(h uint32, now uint64, cidx uint32, flag bool) {
	b := t.bucketOf(h)
	f, ms := fp(h), ms32(now)
	if ms == 0 {
		ms = 1
	}
	for try := 0; try < 4; try++ {
		busy, seen, done := false, false, false
		for w := range b {
			s := &b[w]
			tg := s.tag
			if tg&tagBusy != 0 {
				busy = true
			}
			if tg == 0 || tg&tagBusy != 0 || tagFP(tg) != f || tagKind(tg) != kMark || seen {
				continue
			}
			seen = true
			v := uint32(s.sport)<<16 | uint32(s.dport)
			if flag {
				v = ms
			}
			done = rewrite(s, tg, f, kMark, us32(now), cidx, uint16(v>>16), uint16(v))
		}
		if done {
			return
		}
		if !seen && !busy {
			break
		}
	}
	var hi, lo uint16
	if flag {
		hi, lo = uint16(ms>>16), uint16(ms)
	}
	t.insert(h, f, kMark, now, us32(now), cidx, hi, lo, 0)
	t.markDedupe(h, f, now)
}

// stepEmit is kw_step_emit: per staged touch the port state, the counter
// and (report_touches) a TOUCH record; then the KNOCK unless allowlisted.
func (t *Twin) stepEmit(cidx uint32, now uint64) {
	s := &t.s
	st := &s.st
	for i := uint32(0); i < stageMax; i++ {
		if i >= st.n {
			break
		}
		kind := st.kind[i]
		if kind&noPair != 0 {
			t.c[cTouchS0]++
			continue
		}
		t.portClosed(&st.conn[i].pair.dst, st.conn[i].dport, st.ts[i])
		switch kind {
		case touchREJ:
			t.c[cTouchREJ]++
		case touchS0:
			t.c[cTouchS0]++
		default:
			t.c[cTouchRSTOS0]++
		}
		if t.cfg.ReportTouches {
			if !t.reserve(touchRecSize) {
				t.c[cRingbufFull]++
				continue
			}
			t.emitTouch(&st.conn[i], kind, st.ts[i])
		}
	}
	st.n = 0
	if st.knock == 0 {
		return
	}
	st.knock = 0
	if t.allowlisted(&s.rec.pair.src) {
		t.c[cAllowlisted]++
		return
	}
	t.c[cFlags]++
	t.markSet(t.hashPair(&s.rec.pair), now, cidx, true)
	if !t.reserve(knockRecSize) {
		t.c[cRingbufFull]++
		return
	}
	t.emitKnock(&s.rec)
}

// stepTouch is kw_step_touch: a closed touch (queued item i) of the current
// pair, which has no candidate: kept in the bucket, or handed to its
// candidate or a promotion.
func (t *Twin) stepTouch(i uint32, now uint64) {
	s := &t.s
	ts_ := &s.tscan
	wk := s.work[i]
	f := s.cur.fp
	b := t.bucketOf(s.cur.h)
	port, sport, kind, ts, way, wayTag := wk.port, wk.sport, wk.kind, wk.ts, wk.a, wk.b
	ts_.mark, ts_.touch, ts_.other, ts_.same = -1, -1, -1, 0
	for w := range b {
		sl := &b[w]
		tg := sl.tag
		if tg == 0 || tg&tagBusy != 0 || tagFP(tg) != f {
			continue
		}
		k := tagKind(tg)
		switch {
		case k == kMark:
			ts_.mark = int32(w)
			ts_.cidx = sl.seq
		case k >= kTouchREJ && !t.stale(sl, k, us32(now), ms32(now)):
			if sl.dport == port {
				ts_.touch = int32(w)
				ts_.same = b2u(kind == touchS0 && sl.sport == sport)
			} else {
				ts_.other = int32(w)
			}
		case k == kSYN && sl.dport != port:
			ts_.other = int32(w)
		}
	}
	if s.cur.hasPair && (ts_.mark >= 0 || ts_.other >= 0) {
		if way != noWay {
			take(&b[way&(ways-1)], wayTag)
		}
		if ts_.mark >= 0 {
			t.push(wCandTouch, kind, port, sport, ts, ts_.cidx, 0)
			t.push(wEmit, 0, 0, 0, 0, ts_.cidx, 0)
		} else {
			t.push(wPromote, kind, port, sport, ts, 0, 0)
		}
		return
	}
	if ts_.same == 0 && s.st.n < stageMax {
		n := s.st.n
		k := kind
		if !s.cur.hasPair {
			k |= noPair
		}
		s.st.conn[n] = conn{pair: s.cur.pair, sport: sport, dport: port}
		s.st.ts[n] = ts
		s.st.kind[n] = k
		s.st.n = n + 1
	}
	if ts_.touch >= 0 {
		sl := &b[ts_.touch&(ways-1)]
		tg := sl.tag
		if tagFP(tg) == f && tagKind(tg) >= kTouchREJ && rewrite(sl, tg, f, 4+uint32(kind), us32(ts), 0, sport, port) {
			if way != noWay {
				take(&b[way&(ways-1)], wayTag)
			}
			if s.cur.hasPair {
				t.push(wRecheck, 0, 0, 0, 0, 0, 0)
			}
			return
		}
	}
	if way != noWay && rewrite(&b[way&(ways-1)], wayTag, f, 4+uint32(kind), us32(ts), 0, sport, port) {
		if s.cur.hasPair {
			t.push(wRecheck, 0, 0, 0, 0, 0, 0)
		}
		return
	}
	t.ownerSet(s.cur.h, t.insert(s.cur.h, f, 4+uint32(kind), now, us32(ts), 0, sport, port, 0), &s.cur.pair)
	if s.cur.hasPair {
		t.push(wRecheck, 0, 0, 0, 0, 0, 0)
	}
}

// stageMoves is kw_stage_moves: the pair's SYN and TOUCH entries, claimed,
// copied into scratch for a promotion; returns the ways held.
func (t *Twin) stageMoves(b *bucket, f uint32, now uint64) uint32 {
	s := &t.s
	var held uint32
	s.nmoved, s.nfirsts = 0, 0
	for w := range b {
		sl := &b[w]
		tg := sl.tag
		s.tags[w] = 0
		if tg == 0 || tg&tagBusy != 0 || tagFP(tg) != f {
			continue
		}
		k := tagKind(tg)
		if k != kSYN && k < kTouchREJ {
			continue
		}
		if k >= kTouchREJ && t.stale(sl, k, us32(now), ms32(now)) {
			continue
		}
		if !claim(sl, tg) {
			continue
		}
		s.tags[w] = tg
		held |= 1 << w
		if k == kSYN {
			i := s.nmoved & (ways - 1)
			s.moved[i] = pend{t: usFull(now, sl.t), seq: sl.seq, sport: sl.sport, dport: sl.dport}
			s.nmoved++
		} else {
			i := s.nfirsts & (ways - 1)
			s.firsts[i].ts = usFull(now, sl.t)
			s.firsts[i].port = sl.dport
			s.firsts[i].sport = sl.sport
			s.firsts[i].kind = uint8(k - 4)
			s.nfirsts++
		}
	}
	return held
}

// settle is kw_settle: the first held entry becomes the MARK (or all go
// back when the promotion failed), the others are freed.
func (t *Twin) settle(b *bucket, f, held uint32, ok bool, cidx uint32, now uint64) bool {
	s := &t.s
	marked := false
	for w := range b {
		sl := &b[w]
		tg := s.tags[w]
		if held&(1<<w) == 0 {
			continue
		}
		switch {
		case !ok:
			publish(sl, f, tagKind(tg), tg)
		case !marked:
			sl.t, sl.seq, sl.sport, sl.dport = us32(now), cidx, 0, 0
			publish(sl, f, kMark, tg)
			marked = true
		default:
			sl.tag = 0
		}
	}
	return marked
}
