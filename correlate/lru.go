package correlate

import "go.uber.org/zap"

// Pairs live in one list per eviction class, least recently updated
// first. Evicting under the pair cap takes the front of the lowest
// non-empty class, so a flood of scanners and half-knocks goes before any
// pair that knocked, and those before pairs whose host changed after the
// knock, that connected, or that alerted: O(1) per eviction however large
// the table. Expiry by retention walks the same lists from the front.

// Eviction classes, least suspicious first.
const (
	classScan         = iota // more than MaxPorts ports: a scanner
	classPartial             // fewer than MinPorts ports so far
	classKnock               // a knock, or a handshake still waiting for its knock
	classKnockChanged        // a knock followed by a change on its host
	classHandshake           // a knock and a handshake
	classAlerted             // a handshake with an outcome (kept for upgrades)
	numClasses
)

func (p *pair) computeClass() uint8 {
	switch {
	case p.scan:
		return classScan
	case p.alerted:
		return classAlerted
	case p.knocked && len(p.hs) > 0:
		return classHandshake
	case p.knocked && p.changed:
		return classKnockChanged
	case p.knocked || len(p.hs) > 0:
		return classKnock
	}
	return classPartial
}

func (s *state) unlink(p *pair) {
	if p.prev != nil {
		p.prev.next, p.next.prev = p.next, p.prev
		p.prev, p.next = nil, nil
	}
}

// touch recomputes p's class and moves it to the back of its list.
func (s *state) touch(p *pair) {
	s.unlink(p)
	p.class = p.computeClass()
	head := &s.classes[p.class]
	p.prev, p.next = head.prev, head
	head.prev.next = p
	head.prev = p
}

// dropPair removes p from every index, and its host when that is empty.
func (e *Engine) dropPair(p *pair) {
	e.st.unlink(p)
	h := p.h
	e.st.removePair(p)
	e.st.nHS -= len(p.hs)
	e.dropHostIfEmpty(h)
}

func (e *Engine) dropHostIfEmpty(h *host) {
	if h.npairs == 0 && len(h.changes) == 0 && e.st.hosts[h.dst.As16()] == h {
		delete(e.st.hosts, h.dst.As16())
	}
}

// pairSample is how many pairs at the front of a class list evictPairs
// looks at to find one of the host with the most pairs.
const pairSample = 32

// evictPairs makes room for one pair: it expires what it can, then evicts
// from the lowest class: among the least recently updated pairs of that
// class (the first pairSample), the one whose host has the most pairs, so
// that a flood of pairs on one host goes before another host's pair of the
// same class.
func (e *Engine) evictPairs() {
	e.c.capHits[capPairs]++
	e.expirePairs(e.cutoff())
	for c := range e.st.classes {
		head := &e.st.classes[c]
		if e.st.nPairs < e.cfg.MaxPairs {
			break
		}
		for head.next != head && e.st.nPairs >= e.cfg.MaxPairs {
			p := head.next
			if e.promote(c, p) {
				continue
			}
			victim := p
			q := p.next
			for i := 1; i < pairSample && q != head; i, q = i+1, q.next {
				if q.h.npairs > victim.h.npairs && !e.wouldPromote(c, q) {
					victim = q
				}
			}
			e.countEviction(capPairs, pairClassNames[c], victim.h.dst.String(), "")
			e.dropPair(victim)
		}
	}
	if n := e.c.capHits[capPairs]; n&(n-1) == 0 { // log at 1, 2, 4, 8... hits
		e.log.Warn("pair cap reached: evicting the least suspicious, least recently updated pairs of the hosts with the most pairs first",
			zap.Int(logFieldCap, e.cfg.MaxPairs), zap.Uint64(logFieldEvicted, e.c.evicted[capPairs]), zap.String(logFieldKind, capPairs),
			zap.Any(logFieldTopHosts, e.c.topHosts.top()[:min(3, len(e.c.topHosts.counts))]))
	}
}

// wouldPromote reports whether a pair of class c has a knock followed by a
// change on its host that it was not yet promoted for: changes arriving
// after the knock promote it lazily, at eviction, rather than by walking
// the host's pairs.
func (e *Engine) wouldPromote(c int, p *pair) bool {
	return c == classKnock && !p.changed && p.knocked && len(p.h.changes) > 0 && e.fitsAny(p, p.h.changes)
}

// promote moves p to its class for a knock followed by a change, if it
// has one.
func (e *Engine) promote(c int, p *pair) bool {
	if !e.wouldPromote(c, p) {
		return false
	}
	p.changed = true
	e.st.touch(p)
	return true
}

// expirePairs drops pairs whose newest evidence is older than cutoff,
// walking each class list from the front until a live pair; a pair
// updated out of event-time order may hide expired ones behind it until
// the periodic full pass (fullExpire).
func (e *Engine) expirePairs(cutoff int64) {
	for c := range e.st.classes {
		head := &e.st.classes[c]
		for head.next != head && head.next.last < cutoff {
			e.dropPair(head.next)
			e.c.expired[capPairs]++
		}
	}
}

// fullExpire checks every pair.
func (e *Engine) fullExpire(cutoff int64) {
	e.st.eachPair(func(p *pair) {
		if p.last < cutoff {
			e.dropPair(p)
			e.c.expired[capPairs]++
		}
	})
}
