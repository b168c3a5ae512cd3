package gotwin

// handshake.go mirrors bpf/include/handshake.h: watched handshakes and the
// HANDSHAKE record.

// watchStart is kw_watch_start.
func (t *Twin) watchStart(ev *openEv, snap *portSnap, now uint64) {
	w := &t.watches[t.hashConn(&ev.conn)&t.watchMask]
	if w.state == 2 && !after(now, w.synTS, t.hsTimeout) && w.conn != ev.conn {
		if w.flagged != 0 && ev.flagged == 0 {
			return
		}
		t.c[cWatchLost]++
	}
	*w = watch{state: 2, conn: ev.conn, synSeq: ev.synSeq, synackSeq: ev.synackSeq, hasSynack: ev.hasSynack,
		flagged: ev.flagged, why: ev.why, epoch: ev.epoch, synTS: ev.synTS, synackTS: ev.synackTS,
		portLastClosed: snap.lastClosed, portFirstOpen: snap.firstOpen, portLastOpen: snap.lastOpen,
		portDone: snap.done, portDoneFP: snap.doneFP}
	t.c[cWatchStarted]++
	if until := now + t.hsTimeout; after(until, t.watchUntil, 0) {
		t.watchUntil = until
	}
}

// done is kw_done_body: a completed watched handshake (scratch.hs).
func (t *Twin) done(flagged bool, srcFP, doneFP, why uint32) {
	s := &t.s
	hs := &s.hs
	t.portDone(&hs.conn.pair.dst, hs.conn.dport, hs.ackTS, srcFP)
	hs.why = why
	if flagged {
		hs.why |= hsFlagged
	}
	if !flagged {
		if why&hsSample == 0 {
			return
		}
		delete(t.samples, hs.conn.pair.dst)
		if !t.reserve(handshakeRecSize) {
			t.c[cRingbufFull]++
			return
		}
		t.emitHandshake(hs)
		t.c[cSamples]++
		return
	}
	if hs.portOtherDone != 0 && doneFP == srcFP {
		hs.portOtherDone = 0
	}
	h := t.hashPair(&hs.conn.pair)
	f := fp(h)
	b := t.bucketOf(h)
	var cidx uint32
	for w := range b {
		sl := &b[w]
		if tg := sl.tag; tg != 0 && tg&tagBusy == 0 && tagFP(tg) == f && tagKind(tg) == kMark {
			cidx = sl.seq
		}
	}
	s.ev.conn = hs.conn
	first := t.gHandshake(h, cidx)
	if first == 0 {
		t.c[cHandshakeRepeat]++
		return
	}
	if first > 0 {
		hs.epoch, hs.distinct, hs.attempted = s.epoch, s.distinct, s.attempted
	}
	if !t.reserve(handshakeRecSize) {
		t.c[cRingbufFull]++
		return
	}
	t.emitHandshake(hs)
	t.c[cHandshakes]++
}

// pairFlagged is kw_pair_flagged: the pair's MARK carries a live flag.
func (t *Twin) pairFlagged(p *pair, now uint64) uint8 {
	h := t.hashPair(p)
	f := fp(h)
	var flagged uint8
	for w := range t.bucketOf(h) {
		sl := &t.bucketOf(h)[w]
		if tg := sl.tag; tg != 0 && tg&tagBusy == 0 && tagFP(tg) == f && tagKind(tg) == kMark && t.markFlagged(sl, ms32(now)) {
			flagged = 1
		}
	}
	return flagged
}

// stepOpened is kw_step_opened: a SYN of scratch.oev was answered (proven:
// by the client's ACK).
func (t *Twin) stepOpened(now uint64, proven uint32) {
	s := &t.s
	ev := &s.oev
	t.c[cPortOpen]++
	if ev.flagged == 0 {
		ev.flagged = t.pairFlagged(&ev.conn.pair, now)
	}
	if ev.flagged == 0 && t.flagsInN != 0 {
		if until, ok := t.flagsIn[ev.conn.pair]; ok && !after(now, until, 0) {
			ev.flagged = 1
			ev.why |= hsRemote
			t.c[cRemoteFlag]++
		}
	}
	if ev.flagged == 0 && t.samplesN != 0 {
		if until, ok := t.samples[ev.conn.pair.dst]; ok && !after(now, until, 0) {
			ev.why |= hsSample
		}
	}
	snap := t.portOpen(&ev.conn.pair.dst, ev.conn.dport, now)
	if ev.flagged == 0 && ev.why&hsSample == 0 && !snap.wantsFirst() {
		return
	}
	if proven == 0 {
		t.watchStart(ev, &snap, now)
		return
	}
	s.hs = handshakeRec{conn: ev.conn, synTS: ev.synTS, ackTS: now, epoch: ev.epoch,
		portLastClosed: snap.lastClosed, portFirstOpen: snap.firstOpen, portLastOpen: snap.lastOpen,
		portOtherDone: snap.done}
	t.done(ev.flagged != 0, t.srcFP(&ev.conn.pair.src), snap.doneFP, uint32(ev.why))
}

// onWatchACK is kw_watch_ack_body: an ACK while a watched handshake may be
// in flight; true when it belonged to a watched connection.
func (t *Twin) onWatchACK(frame []byte, now uint64) bool {
	s := &t.s
	p := &s.pkt
	c := conn{pair: pair{src: p.saddr, dst: p.daddr}, sport: p.sport, dport: p.dport}
	w := &t.watches[t.hashConn(&c)&t.watchMask]
	if w.state != 2 || w.conn != c {
		return false
	}
	if t.cfg.VerifyChecksums && !csumOK(frame, p) {
		t.c[cBadCsum]++
		return true
	}
	s.hs = handshakeRec{}
	if (w.hasSynack == 0 || p.ack == w.synackSeq+1) && p.seq == w.synSeq+1 && !after(now, w.synTS, t.hsTimeout) {
		s.hs.synTS = w.synTS
		s.hs.synackTS = w.synackTS
		s.hs.portLastClosed = w.portLastClosed
		s.hs.portFirstOpen = w.portFirstOpen
		s.hs.portLastOpen = w.portLastOpen
		s.hs.portOtherDone = w.portDone
		s.hs.epoch = w.epoch
		doneFP, flagged, why := w.portDoneFP, w.flagged != 0, uint32(w.why)
		w.state = 3
		s.hs.conn = c
		s.hs.ackTS = now
		t.done(flagged, t.srcFP(&c.pair.src), doneFP, why)
		return true
	}
	t.c[cHandshakeBadAck]++
	return true
}
