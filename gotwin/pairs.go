package gotwin

// pairs.go mirrors bpf/include/pairs.h: the flood tier's buckets. The
// compare-and-swap protocol has one CPU here, so a claim succeeds when the
// tag is what the caller read, exactly as on an uncontended CPU; the BUSY
// tags and version bumps are kept, since what a bucket holds while a step
// runs decides the victims of the steps after it.

func (t *Twin) bucketOf(h uint32) *bucket { return &t.pairs[h&t.pairMask] }

func claim(s *slot, old uint32) bool {
	if s.tag != old {
		return false
	}
	s.tag = tagBusy
	return true
}

func take(s *slot, old uint32) bool {
	if s.tag != old {
		return false
	}
	s.tag = 0
	return true
}

func publish(s *slot, fp, kind, old uint32) { s.tag = mkTag(fp, kind, tagVer(old)+1) }

// markFlagged is kw_mark_flagged.
func (t *Twin) markFlagged(s *slot, nowMs uint32) bool {
	flagMs := uint32(s.sport)<<16 | uint32(s.dport)
	return flagMs != 0 && le32s(age(nowMs, flagMs), t.flagTTLMs)
}

// markLive is kw_mark_live.
func (t *Twin) markLive(s *slot, nowUs, nowMs uint32) bool {
	return le32s(age(nowUs, s.t), t.windowUs) || t.markFlagged(s, nowMs)
}

// stale is kw_stale.
func (t *Twin) stale(s *slot, kind, nowUs, nowMs uint32) bool {
	a := age(nowUs, s.t)
	switch {
	case kind == kEarlyRST || kind == kEarlySYNACK:
		return !le32s(a, t.answerSkewUs)
	case kind >= kTouchREJ:
		return !le32s(a, t.windowUs)
	case kind == kMark:
		return !t.markLive(s, nowUs, nowMs)
	}
	return false
}

// due is kw_due: a pending SYN unanswered past the S0 timeout.
func (t *Twin) due(s *slot, nowUs uint32) bool { return !le32s(age(nowUs, s.t), t.s0TimeoutUs) }

// score is kw_score.
func (t *Twin) score(s *slot, nowUs, nowMs uint32, newMark bool, keepFP uint32) uint64 {
	tg := s.tag
	k := tagKind(tg)
	a := nowUs - s.t
	var r uint32
	switch {
	case tg == 0:
		r = vFree
	case t.stale(s, k, nowUs, nowMs):
		r = vStale
	case k != kMark:
		r = vOld
	case newMark:
		r = vMark
	default:
		r = vNone
	}
	if tg&tagBusy != 0 || (keepFP != 0 && tg != 0 && tagFP(tg) == keepFP) {
		r = vNone
	}
	return uint64(r)<<32 | uint64(0xffffffff-a)
}

// victim is kw_victim: the way a new entry of kind takes, what it held and
// its rank. (The C also skips a way whose tag changed while it was scored,
// and claims with the tag it scored; with one thread tags do not change.)
func (t *Twin) victim(b *bucket, kind uint32, now uint64, keepFP uint32) (way, tag, rank uint32) {
	nowUs, nowMs := us32(now), ms32(now)
	best, bestScore := uint32(0), ^uint64(0)
	for w := uint32(0); w < ways; w++ {
		if sc := t.score(&b[w], nowUs, nowMs, kind == kMark, keepFP); sc < bestScore {
			best, bestScore = w, sc
		}
	}
	return best, b[best].tag, uint32(bestScore >> 32)
}

// insert is kw_insert and kw_insert_body: a new entry of fp in the bucket
// of h; the way, or -1 when no entry could be taken (counted).
func (t *Twin) insert(h, fp, kind uint32, now uint64, ts, seq uint32, sport, dport uint16, keepFP uint32) int32 {
	s := &t.s
	s.ins.t, s.ins.seq, s.ins.sport, s.ins.dport, s.ins.keepFP = ts, seq, sport, dport, keepFP
	b := t.bucketOf(h)
	for try := 0; try < 2; try++ {
		w, old, rank := t.victim(b, kind, now, s.ins.keepFP)
		if rank >= vNone {
			t.c[cPairFull]++
			return -1
		}
		sl := &b[w]
		if old&tagBusy != 0 || !claim(sl, old) {
			continue
		}
		if old != 0 && rank >= vOld {
			if tagFP(old) != fp {
				t.c[cSlotTakeover]++
			}
			if tagKind(old) == kSYN {
				t.c[cPendingEvicted]++
			}
			if tagKind(old) == kMark {
				t.c[cMarkEvicted]++
			}
		}
		sl.t, sl.seq, sl.sport, sl.dport = s.ins.t, s.ins.seq, s.ins.sport, s.ins.dport
		publish(sl, fp, kind, old)
		return int32(w)
	}
	t.c[cPairFull]++
	return -1
}

// rewrite is kw_rewrite.
func rewrite(s *slot, old, fp, kind, ts, seq uint32, sport, dport uint16) bool {
	if !claim(s, old) {
		return false
	}
	s.t, s.seq, s.sport, s.dport = ts, seq, sport, dport
	publish(s, fp, kind, old)
	return true
}

// ownerSet is kw_owner_set (CFG.report_touches only).
func (t *Twin) ownerSet(h uint32, way int32, p *pair) {
	if !t.cfg.ReportTouches || way < 0 {
		return
	}
	t.owners[(h&t.pairMask)<<2|uint32(way)&(ways-1)] = *p
}
