package correlate

import (
	"cmp"
	"net/netip"
	"slices"

	"go.uber.org/zap"
)

// Cap names, the keys of Stats.CapHits, Evicted and Expired.
const (
	capPairs      = "pairs"
	capChanges    = "changes"
	capHandshakes = "handshakes"
)

// maybeSweep drops expired state each time the watermark has moved by an
// eighth of the retention since the last sweep, so the cost is amortised
// and state lives at most 9/8 of the retention.
func (e *Engine) maybeSweep() {
	if e.maxSensor == 0 {
		return
	}
	if w := e.wm(); w-e.lastSweep >= e.rule.retention/8 {
		e.sweep()
		e.lastSweep = w
	}
}

// sweep drops every pair whose newest evidence, and every change whose
// time (plus the skew), is older than watermark - retention.
func (e *Engine) sweep() {
	if e.maxSensor == 0 {
		return
	}
	cutoff := e.wm() - e.rule.retention
	expired := func(c *chg) bool { return c.t+e.rule.skew < cutoff }
	for k, c := range e.st.changes {
		if expired(c) {
			delete(e.st.changes, k)
			e.c.expired[capChanges]++
		}
	}
	e.st.unresolved = slices.DeleteFunc(e.st.unresolved, expired)
	for d, h := range e.st.hosts {
		for s, p := range h.pairs {
			if p.last < cutoff {
				e.dropPair(h, s, p)
				e.c.expired[capPairs]++
			}
		}
		h.changes = slices.DeleteFunc(h.changes, expired)
		if len(h.pairs) == 0 && len(h.changes) == 0 {
			delete(e.st.hosts, d)
		}
	}
}

func (e *Engine) dropPair(h *host, src netip.Addr, p *pair) {
	delete(h.pairs, src)
	e.st.nPairs--
	e.st.nHS -= len(p.hs)
}

// Eviction classes: lower classes go first, oldest first within a class,
// so a flood of scanners and half-knocks cannot push out a pair that
// knocked, saw its host change, connected or alerted.
const (
	classScan = iota
	classPartial
	classKnock
	classKnockChanged
	classHandshake
	classAlerted
)

func (e *Engine) pairClass(h *host, p *pair) int {
	if p.scan {
		return classScan
	}
	for _, r := range p.hs {
		if r.best.conf != ConfidenceNone {
			return classAlerted
		}
	}
	var ends []int64
	p.knockWindows(e.rule.window, e.cfg.MinPorts, func(k knockEnd) bool {
		ends = append(ends, k.t)
		return true
	})
	switch {
	case len(ends) == 0:
		return classPartial
	case len(p.hs) > 0:
		return classHandshake
	}
	for _, c := range h.changes {
		for _, t := range ends {
			if c.t >= t-e.rule.skew && c.t <= t+e.rule.after {
				return classKnockChanged
			}
		}
	}
	return classKnock
}

// evictBatch is how many entries one cap hit evicts: a sixteenth of the
// cap, so that the sort behind it is amortised over many inserts.
func evictBatch(cap int) int { return max(1, cap/16) }

func (e *Engine) evictPairs() {
	e.c.capHits[capPairs]++
	e.sweep()
	if e.st.nPairs < e.cfg.MaxPairs {
		return
	}
	type cand struct {
		class int
		last  int64
		d, s  netip.Addr
	}
	cands := make([]cand, 0, e.st.nPairs)
	for d, h := range e.st.hosts {
		for s, p := range h.pairs {
			cands = append(cands, cand{e.pairClass(h, p), p.last, d, s})
		}
	}
	slices.SortFunc(cands, func(a, b cand) int {
		return cmp.Or(cmp.Compare(a.class, b.class), cmp.Compare(a.last, b.last))
	})
	n := min(evictBatch(e.cfg.MaxPairs), len(cands))
	for _, c := range cands[:n] {
		h := e.st.hosts[c.d]
		e.dropPair(h, c.s, h.pairs[c.s])
		if len(h.pairs) == 0 && len(h.changes) == 0 {
			delete(e.st.hosts, c.d)
		}
	}
	e.c.evicted[capPairs] += uint64(n)
	e.log.Warn("pair cap reached: evicted the least suspicious, oldest pairs",
		zap.Int(logFieldCap, e.cfg.MaxPairs), zap.Int(logFieldEvicted, n), zap.String(logFieldKind, capPairs))
}

func (e *Engine) evictHandshakes() {
	e.c.capHits[capHandshakes]++
	e.sweep()
	if e.st.nHS < e.cfg.MaxHandshakes {
		return
	}
	type cand struct {
		class int
		ack   int64
		p     *pair
		r     *hsRec
	}
	var cands []cand
	for _, h := range e.st.hosts {
		for _, p := range h.pairs {
			for _, r := range p.hs {
				class := 0
				switch {
				case r.best.conf != ConfidenceNone:
					class = 2
				case p.knockWindows(e.rule.window, e.cfg.MinPorts, nil) >= e.cfg.MinPorts:
					class = 1
				}
				cands = append(cands, cand{class, r.ack, p, r})
			}
		}
	}
	slices.SortFunc(cands, func(a, b cand) int {
		return cmp.Or(cmp.Compare(a.class, b.class), cmp.Compare(a.ack, b.ack))
	})
	n := min(evictBatch(e.cfg.MaxHandshakes), len(cands))
	for _, c := range cands[:n] {
		c.p.hs = slices.DeleteFunc(c.p.hs, func(r *hsRec) bool { return r == c.r })
		e.st.nHS--
	}
	e.c.evicted[capHandshakes] += uint64(n)
	e.log.Warn("handshake cap reached: evicted the oldest handshakes without a knock or alert first",
		zap.Int(logFieldCap, e.cfg.MaxHandshakes), zap.Int(logFieldEvicted, n), zap.String(logFieldKind, capHandshakes))
}

func (e *Engine) evictChanges() {
	e.c.capHits[capChanges]++
	e.sweep()
	if len(e.st.changes) < e.cfg.MaxChanges {
		return
	}
	type cand struct {
		class int
		t     int64
		c     *chg
	}
	cands := make([]cand, 0, len(e.st.changes))
	for _, c := range e.st.changes {
		class := 0 // unresolved: cannot match anything yet
		if len(c.ips) > 0 {
			class = 1
			if e.changeHasKnock(c) {
				class = 2
			}
		}
		cands = append(cands, cand{class, c.t, c})
	}
	slices.SortFunc(cands, func(a, b cand) int {
		return cmp.Or(cmp.Compare(a.class, b.class), cmp.Compare(a.t, b.t))
	})
	n := min(evictBatch(e.cfg.MaxChanges), len(cands))
	gone := make(map[*chg]bool, n)
	for _, c := range cands[:n] {
		gone[c.c] = true
		delete(e.st.changes, c.c.key)
		for _, d := range c.c.ips {
			if h := e.st.hosts[d]; h != nil {
				h.changes = slices.DeleteFunc(h.changes, func(x *chg) bool { return x == c.c })
			}
		}
	}
	e.st.unresolved = slices.DeleteFunc(e.st.unresolved, func(x *chg) bool { return gone[x] })
	e.c.evicted[capChanges] += uint64(n)
	e.log.Warn("change cap reached: evicted the oldest changes with no knock on their host first",
		zap.Int(logFieldCap, e.cfg.MaxChanges), zap.Int(logFieldEvicted, n), zap.String(logFieldKind, capChanges))
}

// changeHasKnock reports whether a knock on one of the change's hosts ends
// in the window that the change could complete.
func (e *Engine) changeHasKnock(c *chg) bool {
	for _, d := range c.ips {
		h := e.st.hosts[d]
		if h == nil {
			continue
		}
		for _, p := range h.pairs {
			found := false
			p.knockWindows(e.rule.window, e.cfg.MinPorts, func(k knockEnd) bool {
				found = c.t >= k.t-e.rule.skew && c.t <= k.t+e.rule.after
				return !found
			})
			if found {
				return true
			}
		}
	}
	return false
}
