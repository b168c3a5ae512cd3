package correlate

import (
	"cmp"
	"slices"

	"go.uber.org/zap"
)

// Cap names, the keys of Stats.CapHits, Evicted and Expired.
const (
	capPairs      = "pairs"
	capChanges    = "changes"
	capHandshakes = "handshakes"
)

// maybeSweep expires state each time the watermark has moved by a
// sixteenth of the retention, so state lives at most 17/16 of the
// retention; every fourth retention it checks every pair and change for
// those that an out-of-order update left behind a newer one (see
// expirePairs).
func (e *Engine) maybeSweep() {
	if e.maxSensor == 0 {
		return
	}
	w := e.wm()
	if w-e.lastSweep >= e.rule.retention/16 {
		e.expire()
		e.lastSweep = w
	}
	if w-e.lastFull >= 4*e.rule.retention {
		e.fullExpire(e.cutoff())
		e.fullExpireChanges(e.cutoff())
		e.lastFull = w
	}
}

// expire drops pairs whose newest evidence, and changes whose time (plus
// the skew), is older than watermark - retention.
func (e *Engine) expire() {
	if e.maxSensor == 0 {
		return
	}
	cutoff := e.cutoff()
	e.expirePairs(cutoff)
	// Changes arrive roughly in time order: pop expired ones from the
	// front of the arrival queue; a change that arrived out of order may
	// wait behind a newer one until the full pass.
	q := e.st.changeQ
	i := 0
	for ; i < len(q) && (q[i].gone || q[i].t+e.rule.skew < cutoff); i++ {
		if !q[i].gone {
			e.dropChange(q[i].key, q[i])
			e.c.expired[capChanges]++
		}
		q[i] = nil
	}
	e.st.changeQ = q[i:]
	if len(e.st.changeQ) == 0 {
		e.st.changeQ = nil // let the backing array go
	}
	if i > 0 {
		e.st.unresolved = slices.DeleteFunc(e.st.unresolved, func(c *chg) bool { return c.gone })
	}
}

// fullExpireChanges checks every stored change.
func (e *Engine) fullExpireChanges(cutoff int64) {
	for k, c := range e.st.changes {
		if c.t+e.rule.skew < cutoff {
			e.dropChange(k, c)
			e.c.expired[capChanges]++
		}
	}
	e.st.unresolved = slices.DeleteFunc(e.st.unresolved, func(c *chg) bool { return c.gone })
	e.st.changeQ = slices.DeleteFunc(e.st.changeQ, func(c *chg) bool { return c.gone })
}

// dropChange removes a change from the duplicate index and its hosts (not
// from the unresolved list).
func (e *Engine) dropChange(k changeKey, c *chg) {
	c.gone = true
	delete(e.st.changes, k)
	for _, h := range c.hosts {
		h.changes = slices.DeleteFunc(h.changes, func(x *chg) bool { return x == c })
		e.dropHostIfEmpty(h)
	}
	c.hosts = nil
}

// removeChange drops a change that a newer version or a replacing record
// supersedes, from the index, its hosts and the unresolved list.
func (e *Engine) removeChange(k changeKey, c *chg) {
	e.dropChange(k, c)
	if len(c.ips) == 0 {
		e.st.unresolved = slices.DeleteFunc(e.st.unresolved, func(x *chg) bool { return x == c })
	}
}

// evictBatch is how many entries one cap hit evicts: a sixteenth of the
// cap, so that the sort behind it is amortised over many inserts.
func evictBatch(cap int) int { return max(1, cap/16) }

func (e *Engine) evictHandshakes() {
	e.c.capHits[capHandshakes]++
	e.expire()
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
	e.st.eachPair(func(p *pair) {
		for _, r := range p.hs {
			class := 0
			switch {
			case r.best.conf != ConfidenceNone:
				class = 2
			case p.knocked:
				class = 1
			}
			cands = append(cands, cand{class, r.ack, p, r})
		}
	})
	slices.SortFunc(cands, func(a, b cand) int {
		return cmp.Or(cmp.Compare(a.class, b.class), cmp.Compare(a.ack, b.ack))
	})
	n := min(evictBatch(e.cfg.MaxHandshakes), len(cands))
	for _, c := range cands[:n] {
		c.p.hs = slices.DeleteFunc(c.p.hs, func(r *hsRec) bool { return r == c.r })
		e.st.syncHS(c.p)
		e.st.nHS--
		e.st.touch(c.p)
	}
	e.c.evicted[capHandshakes] += uint64(n)
	e.log.Warn("handshake cap reached: evicted the oldest handshakes without a knock or alert first",
		zap.Int(logFieldCap, e.cfg.MaxHandshakes), zap.Int(logFieldEvicted, n), zap.String(logFieldKind, capHandshakes))
}

func (e *Engine) evictChanges() {
	e.c.capHits[capChanges]++
	e.expire()
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
	for _, c := range cands[:n] {
		e.dropChange(c.c.key, c.c)
	}
	e.st.unresolved = slices.DeleteFunc(e.st.unresolved, func(x *chg) bool { return x.gone })
	e.c.evicted[capChanges] += uint64(n)
	e.log.Warn("change cap reached: evicted the oldest changes with no knock on their host first",
		zap.Int(logFieldCap, e.cfg.MaxChanges), zap.Int(logFieldEvicted, n), zap.String(logFieldKind, capChanges))
}

// changeHasKnock reports whether one of the change's hosts saw a knock
// recently enough for the change to complete it (approximately: the
// host's latest knock end is within the retention before the change and
// no more than ChangeAfter before it).
func (e *Engine) changeHasKnock(c *chg) bool {
	for _, h := range c.hosts {
		if h.knockHi != 0 && c.t <= h.knockHi+e.rule.after && c.t >= h.knockHi-e.rule.retention {
			return true
		}
	}
	return false
}
