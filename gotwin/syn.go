package gotwin

// syn.go mirrors bpf/include/syn.h: a client's SYN.
func (t *Twin) onSYN(now uint64) {
	s := &t.s
	p := &s.pkt
	sc := &s.scan
	pr := pair{src: p.saddr, dst: p.daddr}
	h := t.hashPair(&pr)
	f := fp(h)
	b := t.bucketOf(h)
	t.c[cSYN]++
	if t.dstNetsN != 0 {
		t.noteDst(&pr.dst, now)
	}
	t.curSet(&pr, h, f, true)
	sc.same, sc.early, sc.mark = -1, -1, -1
	sc.due, sc.other, sc.flagged = 0, 0, 0
	for w := range b {
		sl := &b[w]
		tg := sl.tag
		if tg == 0 || tg&tagBusy != 0 || tagFP(tg) != f {
			continue
		}
		switch k := tagKind(tg); {
		case k == kMark:
			sc.mark = int32(w)
			sc.cidx = sl.seq
			sc.flagged |= b2u(t.markFlagged(sl, ms32(now)))
		case k == kSYN:
			if sl.sport == p.sport && sl.dport == p.dport {
				sc.same = int32(w)
				sc.sameTag = tg
			} else {
				sc.other |= b2u(sl.dport != p.dport)
				sc.due |= b2u(t.due(sl, us32(now))) << w
			}
		case k == kEarlyRST || k == kEarlySYNACK:
			if sl.sport == p.sport && sl.dport == p.dport && sl.seq == p.seq+1 && !t.stale(sl, k, us32(now), ms32(now)) {
				sc.early = int32(w)
				sc.earlyTag = tg
			}
		default:
			sc.other |= b2u(sl.dport != p.dport && !t.stale(sl, k, us32(now), ms32(now)))
		}
	}
	// The answer came first: this SYN is answered already.
	if sc.early >= 0 {
		sl := &b[sc.early&(ways-1)]
		seq, at, tag := sl.seq, sl.t, sc.earlyTag
		if take(sl, tag) {
			t.c[cAnswerEarly]++
			if tagKind(tag) == kEarlyRST {
				t.push(wTouch, touchREJ, p.dport, p.sport, now, noWay, 0)
				t.push(wEmit, 0, 0, 0, 0, 0, 0)
			} else {
				s.oev = openEv{conn: conn{pair: pr, sport: p.sport, dport: p.dport}, synTS: now, synSeq: seq - 1,
					synackTS: usFull(now, at), flagged: uint8(sc.flagged)}
				t.push(wOpened, 0, 0, 0, 0, 0, 0)
			}
			return
		}
	}
	s.ev = tev{conn: conn{pair: pr, sport: p.sport, dport: p.dport}, seq: p.seq, ts: now, now: now}
	if sc.mark >= 0 {
		t.push(wCandSYN, 0, p.dport, p.sport, now, sc.cidx, 0)
		return
	}
	if sc.other != 0 {
		t.push(wPromote, 0, p.dport, p.sport, now, 0, 0)
		return
	}
	for w := range b {
		sl := &b[w]
		tg := sl.tag
		if sc.due&(1<<w) == 0 || tagFP(tg) != f || tagKind(tg) != kSYN {
			continue
		}
		if !claim(sl, tg) {
			continue
		}
		t.push(wTouch, touchS0, sl.dport, sl.sport, usFull(now, sl.t), uint32(w), tagBusy)
	}
	if sc.same >= 0 {
		sl := &b[sc.same&(ways-1)]
		if rewrite(sl, sc.sameTag, f, kSYN, us32(now), p.seq, p.sport, p.dport) {
			t.c[cSYNRetrans]++
		}
	} else {
		w := t.insert(h, f, kSYN, now, us32(now), p.seq, p.sport, p.dport, 0)
		t.ownerSet(h, w, &pr)
		if w >= 0 && t.cfg.AnswerSkew != 0 {
			t.synRecheck(uint32(w), now)
		}
	}
	if sc.due != 0 {
		t.push(wEmit, 0, 0, 0, 0, 0, 0)
	}
}
