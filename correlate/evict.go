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
	// capReplaced: the records stored changes replaced (bounded by
	// MaxChanges too).
	capReplaced = "replaced_records"
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
	for ; i < len(q) && (q[i].gone || q[i].latest()+e.rule.skew < cutoff); i++ {
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
	e.expireReplaced(cutoff)
	if i > 0 {
		e.st.unresolved = slices.DeleteFunc(e.st.unresolved, func(c *chg) bool { return c.gone })
	}
}

// fullExpireChanges checks every stored change.
func (e *Engine) fullExpireChanges(cutoff int64) {
	for k, c := range e.st.changes {
		if c.latest()+e.rule.skew < cutoff {
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
	if k.record != 0 {
		ref := k.ref()
		vs := slices.DeleteFunc(e.st.byRecord[ref], func(x *chg) bool { return x == c })
		if len(vs) == 0 {
			delete(e.st.byRecord, ref)
		} else {
			e.st.byRecord[ref] = vs
		}
	}
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

// rememberReplaced remembers that c replaced the record ref (whether or
// not it was stored: it may arrive later), for as long as c's evidence is
// retained. At MaxChanges remembered records the oldest is forgotten
// (counted): a flood of replacements can only make a later re-send of a
// replaced record come back beside its replacement, never hide a change.
func (e *Engine) rememberReplaced(ref recordRef, c *ExposureChange, r *ChangeRef) {
	e.st.replSeq++
	e.st.replaced[ref] = replacedRecord{ruleID: clampField(c.RuleID, maxKeptBytes), eventID: r.EventID,
		t: c.Time.UnixNano(), seq: e.st.replSeq}
	e.st.replacedQ = append(e.st.replacedQ, replacedEntry{ref: ref, seq: e.st.replSeq})
	for len(e.st.replaced) > e.cfg.MaxChanges {
		e.c.capHits[capReplaced]++
		if e.popReplaced() {
			e.c.evicted[capReplaced]++
		}
	}
}

// popReplaced drops the oldest entry of the replaced-record queue and
// reports whether it was still remembered (not replaced by a newer entry
// for the same record).
func (e *Engine) popReplaced() bool {
	q := e.st.replacedQ[0]
	e.st.replacedQ[0] = replacedEntry{}
	e.st.replacedQ = e.st.replacedQ[1:]
	if len(e.st.replacedQ) == 0 {
		e.st.replacedQ = nil // let the backing array go
	}
	if r, ok := e.st.replaced[q.ref]; ok && r.seq == q.seq {
		delete(e.st.replaced, q.ref)
		return true
	}
	return false
}

// expireReplaced forgets replaced records whose replacement's time (plus
// the skew) is older than cutoff, from the front of the queue (arrival
// order, roughly time order; the bound takes what an out-of-order arrival
// leaves behind).
func (e *Engine) expireReplaced(cutoff int64) {
	for len(e.st.replacedQ) > 0 {
		q := e.st.replacedQ[0]
		if r, ok := e.st.replaced[q.ref]; ok && r.seq == q.seq && r.t+e.rule.skew >= cutoff {
			return
		}
		if e.popReplaced() {
			e.c.expired[capReplaced]++
		}
	}
}

// maxVersions bounds the stored changes that claim one record id with
// contradicting content (each arrival compares itself with them).
const maxVersions = 8

// evictVersion makes room for one more version of the record ref from
// origin: it evicts the oldest version of the forwarder with the most
// versions of that record, counting the newcomer, so that a forwarder
// forging versions of a record displaces its own, never another
// forwarder's.
func (e *Engine) evictVersion(ref recordRef, origin string) {
	vs := e.st.byRecord[ref]
	n := map[string]int{origin: 1}
	for _, v := range vs {
		n[v.c.Origin]++
	}
	var victim *chg
	for _, v := range vs {
		if victim == nil || n[v.c.Origin] > n[victim.c.Origin] ||
			(n[v.c.Origin] == n[victim.c.Origin] && v.seq < victim.seq) {
			victim = v
		}
	}
	e.removeChange(victim.key, victim)
	e.countEviction(capChanges, EvictChangeVersions, ref.host, victim.c.Origin)
}

// evictBatch is how many entries one cap hit evicts: a sixteenth of the
// cap, so that the sort behind it is amortised over many inserts.
func evictBatch(cap int) int { return max(1, cap/16) }

// Eviction reasons: the class of what was evicted, the keys of
// Stats.EvictedByReason.
const (
	// Changes, least valuable first.
	EvictChangeUnresolved = "unresolved" // host not in the inventory: cannot match anything yet
	EvictChangeNoKnock    = "no_knock"   // no stored knock on its host can use it
	EvictChangeSpent      = "spent"      // fits a knock, but its handshake window has passed
	EvictChangeUsable     = "usable"     // a stored knock can still use it
	// A record id claimed by more than maxVersions contradicting versions.
	EvictChangeVersions = "versions"
	// Handshakes.
	EvictHandshakeNoKnock = "no_knock"
	EvictHandshakeKnocked = "knocked"
	EvictHandshakeAlerted = "alerted"
)

var pairClassNames = [numClasses]string{"scan", "partial", "knock", "knock_changed", "handshake", "alerted"}

// topOffenders is how many hosts and forwarders the engine keeps eviction
// counts for (Stats.TopEvictedHosts, TopEvictedOrigins).
const topOffenders = 16

func (e *Engine) countEviction(table, reason, host, origin string) {
	m := e.c.evictReason[table]
	if m == nil {
		m = make(map[string]uint64)
		e.c.evictReason[table] = m
	}
	m[reason]++
	e.c.evicted[table]++
	e.c.topHosts.add(host, 1)
	if origin != "" {
		e.c.topOrigins.add(origin, 1)
	}
}

func (e *Engine) evictHandshakes() {
	e.c.capHits[capHandshakes]++
	e.expire()
	if e.st.nHS < e.cfg.MaxHandshakes {
		return
	}
	type cand struct {
		p *pair
		r *hsRec
	}
	var items []fairItem[cand]
	e.st.eachPair(func(p *pair) {
		for _, r := range p.hs {
			class := 0
			switch {
			case r.best.conf != ConfidenceNone:
				class = 2
			case p.knocked:
				class = 1
			}
			// The class is the outer group in reverse (a lower class must
			// go first whatever the sizes): see fairClass.
			items = append(items, fairItem[cand]{outer: fairClass(class), inner: p.h.dst.String(), rank: r.ack, v: cand{p, r}})
		}
	})
	victims := pickByClass(items, evictBatch(e.cfg.MaxHandshakes))
	reasons := [...]string{EvictHandshakeNoKnock, EvictHandshakeKnocked, EvictHandshakeAlerted}
	batch := newTopK(3)
	for _, c := range victims {
		class := 0
		switch {
		case c.r.best.conf != ConfidenceNone:
			class = 2
		case c.p.knocked:
			class = 1
		}
		c.p.hs = slices.DeleteFunc(c.p.hs, func(r *hsRec) bool { return r == c.r })
		e.st.syncHS(c.p)
		e.st.nHS--
		e.st.touch(c.p)
		host := c.p.h.dst.String()
		e.countEviction(capHandshakes, reasons[class], host, "")
		batch.add(host, 1)
	}
	e.log.Warn("handshake cap reached: evicted handshakes without a knock or alert first, from the hosts with the most first",
		zap.Int(logFieldCap, e.cfg.MaxHandshakes), zap.Int(logFieldEvicted, len(victims)), zap.String(logFieldKind, capHandshakes),
		zap.Any(logFieldTopHosts, batch.top()))
}

// fairClass names a class as an outer group of pickByClass.
func fairClass(class int) string { return string(rune('0' + class)) }

// pickByClass picks n items, all of the lowest class (the outer group,
// see fairClass) before any of the next, and within a class fairly by the
// inner group (fairPick).
func pickByClass[T any](items []fairItem[T], n int) []T {
	slices.SortStableFunc(items, func(a, b fairItem[T]) int { return cmp.Compare(a.outer, b.outer) })
	var out []T
	for i := 0; i < len(items) && len(out) < n; {
		j := i
		for j < len(items) && items[j].outer == items[i].outer {
			j++
		}
		group := items[i:j]
		for k := range group {
			group[k].outer = "" // one outer group: fair by the inner group
		}
		out = append(out, fairPick(group, n-len(out))...)
		i = j
	}
	return out
}

// changeClass ranks a stored change for eviction (higher is kept longer).
func (e *Engine) changeClass(c *chg) int {
	if len(c.ips) == 0 {
		return 0
	}
	usable := false
	for _, h := range c.hosts {
		for _, t := range c.times() {
			usable = usable || h.knockFits(t)
		}
		if usable {
			break
		}
	}
	switch {
	case !usable:
		return 1
	case e.maxSensor != 0 && c.latest()+e.rule.hsAfter+e.rule.skew < e.wm():
		return 2 // no handshake can still come in time
	}
	return 3
}

var changeClassNames = [...]string{EvictChangeUnresolved, EvictChangeNoKnock, EvictChangeSpent, EvictChangeUsable}

// evictChanges makes room in the change table. What goes first is what
// can least become an alert: changes of hosts not in the inventory, then
// changes no stored knock can use, then changes whose handshake window
// has passed, and only then changes a knock can still use. Within each
// class it evicts from the forwarder (Origin) with the most such changes
// first and, within that forwarder, from the host with the most: a flood
// of changes for one host, or from one forwarder, is evicted before the
// single change of another host or forwarder. Among the changes of one
// forwarder and host, those a knock can use go newest arrival first (a
// flood that follows a real change cannot displace it), the others oldest
// event time first. Evictions are counted by class (EvictedByReason) and
// by host and forwarder (TopEvictedHosts, TopEvictedOrigins).
func (e *Engine) evictChanges() {
	e.c.capHits[capChanges]++
	e.expire()
	if len(e.st.changes) < e.cfg.MaxChanges {
		return
	}
	items := make([]fairItem[*chg], 0, len(e.st.changes))
	for _, c := range e.st.changes {
		class := e.changeClass(c)
		rank := c.t
		if class == 3 {
			rank = -int64(c.seq)
		}
		items = append(items, fairItem[*chg]{outer: fairClass(class), rank: rank, v: c})
	}
	// Two levels within a class: the forwarder, then the host.
	victims := pickChanges(items, evictBatch(e.cfg.MaxChanges))
	batchHosts, batchOrigins := newTopK(3), newTopK(3)
	for _, c := range victims {
		class := e.changeClass(c)
		e.dropChange(c.key, c)
		e.countEviction(capChanges, changeClassNames[class], c.key.host, c.c.Origin)
		batchHosts.add(c.key.host, 1)
		if c.c.Origin != "" {
			batchOrigins.add(c.c.Origin, 1)
		}
	}
	e.st.unresolved = slices.DeleteFunc(e.st.unresolved, func(x *chg) bool { return x.gone })
	e.log.Warn("change cap reached: evicted changes no knock can use first, from the forwarders and hosts with the most first",
		zap.Int(logFieldCap, e.cfg.MaxChanges), zap.Int(logFieldEvicted, len(victims)), zap.String(logFieldKind, capChanges),
		zap.Any(logFieldTopHosts, batchHosts.top()), zap.Any(logFieldTopOrigins, batchOrigins.top()))
}

// pickChanges is pickByClass with two fair levels inside a class:
// forwarder, then host.
func pickChanges(items []fairItem[*chg], n int) []*chg {
	slices.SortStableFunc(items, func(a, b fairItem[*chg]) int { return cmp.Compare(a.outer, b.outer) })
	var out []*chg
	for i := 0; i < len(items) && len(out) < n; {
		j := i
		for j < len(items) && items[j].outer == items[i].outer {
			j++
		}
		group := items[i:j]
		for k := range group {
			c := group[k].v
			group[k].outer, group[k].inner = c.c.Origin, c.key.host
		}
		out = append(out, fairPick(group, n-len(out))...)
		i = j
	}
	return out
}
