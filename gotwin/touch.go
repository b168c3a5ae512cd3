package gotwin

// tier1 is kw_tier1: records a touch of the slot's owner (hash h). Returns
// what must follow; on tierPromote *first receives the earlier touch.
func (t *Twin) tier1(slot *pairSlot, h uint32, port uint16, kind uint8, ts uint64, first *touch) uint8 {
	if slot.candHash == h {
		return tierCandidate
	}
	if slot.firstTS != 0 && slot.firstPort != port &&
		!after(ts, slot.firstTS, t.window) && !after(slot.firstTS, ts, t.window) {
		*first = touch{ts: slot.firstTS, port: slot.firstPort, kind: slot.firstKind}
		slot.candHash = h
		return tierPromote
	}
	if slot.firstTS == 0 || slot.firstPort != port || after(ts, slot.firstTS, t.window) {
		slot.firstTS = ts
		slot.firstPort = port
		slot.firstKind = kind
	}
	return tierDone
}

// distinct is kw_distinct: distinct ports among the ring's touches within
// the window of newest.
func (t *Twin) distinct(cd *candidate, newest uint64) uint32 {
	var inwin [maxTouches]bool
	for i := 0; i < maxTouches; i++ {
		inwin[i] = i < int(cd.n) && within(newest, cd.ring[i].ts, t.window)
	}
	var n uint32
	for i := 0; i < maxTouches; i++ {
		if !inwin[i] {
			continue
		}
		dup := false
		for j := i + 1; j < maxTouches; j++ {
			if inwin[j] && cd.ring[j].port == cd.ring[i].port {
				dup = true
			}
		}
		if !dup {
			n++
		}
	}
	return n
}

// candidateAdd is kw_candidate_add: appends the touch and decides whether to
// flag; on a flag it stages the ring, oldest first, in rec.
func (t *Twin) candidateAdd(cd *candidate, port uint16, kind uint8, ts uint64, rec *knockRec) bool {
	n := cd.n
	seen := false
	for i := 0; i < maxTouches; i++ {
		if i < int(n) && cd.ring[i].port == port && within(ts, cd.ring[i].ts, t.window) {
			seen = true
		}
	}
	if after(ts, cd.lastTS, t.window) {
		cd.distinct = 1 // a new burst
	} else if !seen && cd.distinct < 0xffff {
		cd.distinct++
	}
	if int64(ts-cd.lastTS) > 0 {
		cd.lastTS = ts
	}
	h := cd.head & (maxTouches - 1)
	cd.ring[h] = touch{ts: ts, port: port, kind: kind}
	cd.head = (h + 1) & (maxTouches - 1)
	if n < maxTouches {
		n++
		cd.n = n
	}
	d := t.distinct(cd, cd.lastTS)
	if cd.flagSent || d < t.minPorts {
		return false
	}
	cd.flagSent = true
	rec.n = uint16(n)
	rec.distinct = max(cd.distinct, uint16(d))
	var start uint8
	if n > maxTouches-1 {
		start = cd.head
	}
	for i := 0; i < maxTouches; i++ {
		rec.touches[i] = cd.ring[(int(start)+i)&(maxTouches-1)]
	}
	return true
}

// flag is kw_flag: raises the flag for p once and sends the staged KNOCK.
func (t *Twin) flag(p *pair, rec *knockRec, now uint64) {
	if t.allowlisted(&p.src) {
		t.c[cAllowlisted]++
		return
	}
	if !t.flagged.insert(*p, flagged{flagTS: now, distinct: rec.distinct}) {
		return // already flagged
	}
	t.anyFlagged = true
	t.c[cFlags]++
	if !t.reserve(knockRecSize) {
		t.c[cRingbufFull]++
		return
	}
	t.emitKnock(p, rec, now)
}

// tier2 is kw_tier2: creates the candidate on tierPromote, adds the touch,
// flags when it is time.
func (t *Twin) tier2(p *pair, a *tier2Args) {
	if a.tier == tierDone {
		return
	}
	cd := t.cands.lookup(*p)
	if cd == nil {
		// Promotion: start from the slot's first touch. A candidate the
		// LRU evicted starts again from this touch.
		init := candidate{lastTS: a.ts}
		if a.tier == tierPromote {
			init.ring[0] = a.first
			init.n = 1
			init.head = 1
			init.distinct = 1
			init.lastTS = a.first.ts
		}
		if t.cands.insert(*p, init) {
			t.c[cCandidates]++
		}
		cd = t.cands.lookup(*p)
		if cd == nil {
			t.c[cMapInsertFail]++
			return
		}
	}
	if t.candidateAdd(cd, a.port, a.kind, a.ts, &t.rec) {
		t.flag(p, &t.rec, a.now)
	}
}
