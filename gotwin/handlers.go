package gotwin

// found is struct kw_found: a touch found under a pair slot's lock.
type found struct {
	ts   uint64
	port uint16
	kind uint8
	tier uint8
}

// onSYN is kw_on_syn: records the SYN as pending in the pair slot, ages the
// pair's earlier pending SYNs into S0 touches (left in t.work).
func (t *Twin) onSYN(p *packet, now uint64) {
	pr := pair{src: p.saddr, dst: p.daddr}
	h := t.hashPair(&pr)
	slot := &t.slots[h&t.slotMask]
	var fnd [pendingPerPair]found
	var first touch
	same, oldest, nfound := -1, 0, 0
	oldestTS := ^uint64(0)

	t.c[cSYN]++
	if slot.owner != pr {
		busy := slot.firstTS != 0
		for i := range slot.pend {
			if slot.pend[i].ts != 0 {
				t.c[cPendingEvicted]++
				busy = true
			}
		}
		if busy {
			t.c[cSlotTakeover]++
		}
		slot.owner = pr
		slot.firstTS = 0
		slot.pend = [pendingPerPair]pending{}
	}
	for i := range slot.pend {
		e := &slot.pend[i]
		if e.ts == 0 {
			oldestTS = 0
			oldest = i
			continue
		}
		if after(now, e.ts, t.s0Timeout) {
			// Unanswered past the timeout: an S0 touch.
			fnd[i] = found{ts: e.ts, port: e.dport, kind: touchS0,
				tier: t.tier1(slot, h, e.dport, touchS0, e.ts, &first)}
			nfound++
			if e.dport == p.dport {
				same = i // a new attempt at the same port
				e.ts = now
				e.seq = p.seq
				e.sport = p.sport
			} else {
				e.ts = 0
				oldestTS = 0
				oldest = i
			}
			continue
		}
		if e.dport == p.dport {
			// Retransmission (or a new attempt) within the timeout.
			same = i
			e.seq = p.seq
			e.sport = p.sport
			t.c[cSYNRetrans]++
			continue
		}
		if oldestTS != 0 && e.ts < oldestTS {
			oldestTS = e.ts
			oldest = i
		}
	}
	if same < 0 {
		e := &slot.pend[oldest&(pendingPerPair-1)]
		if e.ts != 0 {
			t.c[cPendingEvicted]++
		}
		*e = pending{ts: now, seq: p.seq, sport: p.sport, dport: p.dport}
	}
	if nfound == 0 {
		return
	}
	t.work.pair = pr
	n := 0
	for i := range fnd {
		if fnd[i].ts == 0 {
			continue
		}
		t.portSeen(&pr.dst, fnd[i].port, false, fnd[i].ts)
		t.c[cTouchS0]++
		t.work.t[n&(pendingPerPair-1)] = tier2Args{first: first, now: now, ts: fnd[i].ts,
			port: fnd[i].port, kind: touchS0, tier: fnd[i].tier}
		n++
		t.work.n = n
	}
}

// answer is kw_answer: finds and frees the pending SYN the packet from
// D:sport to S:dport answers (ack == seq+1). Returns the SYN's time, 0 when
// nothing matches; for an RST it runs the touch's tier-1 step.
func (t *Twin) answer(slot *pairSlot, h uint32, p *packet, rst bool, f *found, first *touch, pr *pair) uint64 {
	var synTS uint64
	if slot.owner != *pr {
		return 0
	}
	for i := range slot.pend {
		e := &slot.pend[i]
		if e.ts == 0 || e.dport != p.sport || e.sport != p.dport || p.ack != e.seq+1 {
			continue
		}
		synTS = e.ts
		e.ts = 0
		break
	}
	if synTS != 0 && rst {
		*f = found{ts: synTS, port: p.sport, kind: touchREJ,
			tier: t.tier1(slot, h, p.sport, touchREJ, synTS, first)}
	}
	return synTS
}

// onRST is kw_on_rst: a REJ touch when the RST answers a pending SYN. It
// reads no clock: the touch, the port's last-closed time and a flag it
// raises take the time of the SYN it answers.
func (t *Twin) onRST(p *packet) {
	pr := pair{src: p.daddr, dst: p.saddr}
	var f found
	var first touch
	h := t.hashPair(&pr)
	slot := &t.slots[h&t.slotMask]

	t.c[cRST]++
	if t.answer(slot, h, p, true, &f, &first, &pr) == 0 {
		t.c[cBackscatter]++
		return
	}
	t.portSeen(&pr.dst, f.port, false, f.ts)
	t.c[cTouchREJ]++
	if f.tier == tierDone {
		return
	}
	t.work.pair = pr
	t.work.t[0] = tier2Args{first: first, ts: f.ts, now: f.ts, port: f.port, kind: touchREJ, tier: f.tier}
	t.work.n = 1
}

// onSYNACK is kw_on_synack: a SYN-ACK answering a pending SYN shows the
// port open. If (S, D) is flagged the handshake is watched from here: the
// SYN's seq and time come from its pending entry, and the port state is
// snapshotted before this SYN-ACK updates it.
func (t *Twin) onSYNACK(p *packet, now uint64) {
	pr := pair{src: p.daddr, dst: p.saddr}
	var f found
	var first touch
	h := t.hashPair(&pr)
	slot := &t.slots[h&t.slotMask]

	t.c[cSYNACK]++
	synTS := t.answer(slot, h, p, false, &f, &first, &pr)
	if synTS == 0 {
		t.c[cSYNACKUnmatched]++
		return
	}
	t.c[cPortOpen]++
	if !t.anyFlagged || t.flagged.lookup(pr) == nil {
		t.portSeen(&pr.dst, p.sport, true, now)
		return
	}
	w := watch{synSeq: p.ack - 1, synackSeq: p.seq, synTS: synTS, synackTS: now, state: 2}
	w.portLastClosed, w.portLastOpen = t.portSeen(&pr.dst, p.sport, true, now)
	c := conn{pair: pr, sport: p.dport, dport: p.sport}
	if old := t.watches.peek(c); old == nil || old.state != 2 {
		t.inFlight++
	}
	t.watches.put(c, w)
	t.c[cWatchStarted]++
	if after(now+t.hsTimeout, t.watchUntil, 0) {
		t.watchUntil = now + t.hsTimeout
	}
}

// firstForPort is kw_first_for_port.
func firstForPort(fl *flagged, port uint16) bool {
	n := fl.nreported
	for i := 0; i < reportedPorts; i++ {
		if i < int(n) && fl.reported[i] == port {
			return false
		}
	}
	if n >= reportedPorts {
		return false
	}
	fl.reported[n&(reportedPorts-1)] = port
	fl.nreported = n + 1
	return true
}

// onACK is kw_on_ack: a packet without SYN/RST while a watched handshake is
// in flight; reports the first completed handshake of a flagged pair to
// each port. Completed watches stay (state 3) for the LRU to reclaim.
func (t *Twin) onACK(p *packet, now uint64) {
	c := conn{pair: pair{src: p.saddr, dst: p.daddr}, sport: p.sport, dport: p.dport}
	if p.flags&thACK == 0 || t.inFlight == 0 {
		return
	}
	w := t.watches.lookup(c)
	if w == nil || w.state != 2 || now == 0 {
		return
	}
	var hs handshakeRec
	if p.ack != w.synackSeq+1 || p.seq != w.synSeq+1 || after(now, w.synTS, t.hsTimeout) {
		t.c[cHandshakeBadAck]++
		return
	}
	hs.synTS = w.synTS
	hs.synackTS = w.synackTS
	hs.portLastClosed = w.portLastClosed
	hs.portLastOpen = w.portLastOpen
	w.state = 3 // one completion, even if the ACK is repeated
	t.inFlight--
	fl := t.flagged.lookup(c.pair)
	if fl == nil {
		return
	}
	if !firstForPort(fl, c.dport) {
		t.c[cHandshakeRepeat]++
		return
	}
	hs.conn = c
	hs.ackTS = now
	hs.distinct = fl.distinct
	if cd := t.cands.lookup(c.pair); cd != nil {
		hs.distinct = cd.distinct
	}
	if !t.reserve(handshakeRecSize) {
		t.c[cRingbufFull]++
		return
	}
	t.emitHandshake(&hs)
	t.c[cHandshakes]++
}
