package gotwin

// portstate.go mirrors bpf/include/portstate.h: per (host, port) closed,
// open and first completer. The C's slot lock has no counterpart with one
// thread, and its compare-and-swap loops succeed on the first try.

func (t *Twin) portSlot(host *addr, port uint16) (*portSlot, uint32) {
	h := t.hashPort(host, port)
	return &t.ports[h&t.portMask], fp(h)<<2 | 2
}

// own is kw_own; with one thread a slot is never KW_PORT_BUSY.
func (t *Twin) own(ps *portSlot, key uint32) {
	cur := ps.key
	if cur == key {
		return
	}
	if cur != 0 {
		t.c[cPortSlotTakeover]++
	}
	*ps = portSlot{key: key}
}

// advance is kw_advance.
func advance(v *uint64, ts, refresh uint64) {
	if *v != 0 && !after(ts, *v, refresh) {
		return
	}
	*v = ts
}

// portClosed is kw_port_closed.
func (t *Twin) portClosed(host *addr, port uint16, ts uint64) {
	ps, key := t.portSlot(host, port)
	if lc, fo := ps.lastClosed, ps.firstOpen; ps.key == key && lc != 0 && !after(ts, lc, t.portRefresh) && !(fo != 0 && after(ts, fo, 0)) {
		return // nothing to change
	}
	t.own(ps, key)
	advance(&ps.lastClosed, ts, t.portRefresh)
	if fo := ps.firstOpen; fo != 0 && after(ts, fo, 0) {
		ps.firstOpen = 0
		ps.doneTS = 0
	}
}

// portOpen is kw_port_open: returns the state from before the answer.
func (t *Twin) portOpen(host *addr, port uint16, ts uint64) portSnap {
	ps, key := t.portSlot(host, port)
	t.own(ps, key)
	lc, fo := ps.lastClosed, ps.firstOpen
	snap := portSnap{lastClosed: lc, firstOpen: fo, lastOpen: ps.lastOpen, done: ps.doneTS, doneFP: ps.doneFP}
	advance(&ps.lastOpen, ts, t.portRefresh)
	if fo == 0 || (lc != 0 && after(lc, fo, 0)) {
		ps.firstOpen = ts
	}
	return snap
}

// wantsFirst is kw_port_wants_first.
func (snap *portSnap) wantsFirst() bool {
	return snap.done == 0 || (snap.lastClosed != 0 && after(snap.lastClosed, snap.done, 0))
}

// portDone is kw_port_done.
func (t *Twin) portDone(host *addr, port uint16, ts uint64, srcFP uint32) {
	ps, key := t.portSlot(host, port)
	t.own(ps, key)
	d := ps.doneTS
	if d != 0 && !(ps.lastClosed != 0 && after(ps.lastClosed, d, 0)) {
		return
	}
	ps.doneTS = ts
	ps.doneFP = srcFP
}
