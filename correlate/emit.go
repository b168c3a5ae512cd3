package correlate

import "net/netip"

// Emitter receives alerts. It is defined here, by its consumer; the alert
// sinks implement it. Emit is called from a goroutine that delivered
// evidence (usually the one that completed the alert), never with the
// engine's state locked, and alerts reach it one at a time in the order
// the engine decided them. A slow Emit delays that caller, so sinks
// should buffer or spool.
type Emitter interface {
	Emit(a Alert)
}

// EmitterFunc adapts a function to Emitter.
type EmitterFunc func(Alert)

// Emit calls f(a).
func (f EmitterFunc) Emit(a Alert) { f(a) }

// evalHS evaluates one handshake and queues an alert record when its
// outcome improved.
func (e *Engine) evalHS(d netip.Addr, h *host, src netip.Addr, p *pair, r *hsRec) {
	best, noAlert := e.rule.evaluate(e.sup, e.cutoff(), e.arriving, src, d, func() string { return e.hostName(d, nil) }, p, h, r)
	if best.conf == ConfidenceNone {
		if noAlert != "" && r.noAlert == "" {
			r.noAlert = noAlert
			e.c.noAlert[noAlert]++
		}
		return
	}
	if !p.alerted {
		p.alerted = true
		e.st.touch(p)
	}
	if !best.better(r.best) {
		return
	}
	prev := r.best.rank()
	r.best = best
	if best.rank() <= prev {
		return // same standing, evidence that sorts first: no new record
	}
	if best.suppressed != "" {
		e.c.suppressed[best.suppressed]++
		// Once a record with this id is out, the analyst hears that it
		// is now explained, even if suppressed matches are not emitted.
		if !e.cfg.EmitSuppressed && !r.emitted {
			return
		}
	} else {
		e.c.alerts[best.conf]++
	}
	if best.clocked {
		e.c.clocked++
	}
	action := ActionCreated
	if r.emitted {
		action = ActionUpgraded
		e.c.upgrades++
	}
	r.emitted = true
	if e.out != nil {
		e.pending = append(e.pending, e.buildAlert(action, d, p, r))
	}
}

func (e *Engine) hostName(d netip.Addr, c *chg) string {
	if c != nil && c.c.Host != "" {
		return c.c.Host
	}
	if n, ok := e.inv.(HostNamer); ok {
		return n.Name(d)
	}
	return ""
}

// unlockAndEmit releases the state lock and hands the queued alerts to the
// emitter. One goroutine at a time drains the queue, in decision order,
// with no lock held while Emit runs; the others leave their alerts in the
// queue and return. So records of one alert id never overtake each other,
// and Emit may call back into the engine.
func (e *Engine) unlockAndEmit() {
	if len(e.pending) == 0 || e.draining {
		e.mu.Unlock()
		return
	}
	e.draining = true
	defer func() {
		if r := recover(); r != nil {
			// An Emit that panics must not leave the queue stuck.
			e.mu.Lock()
			e.draining = false
			e.mu.Unlock()
			panic(r)
		}
	}()
	for len(e.pending) > 0 {
		out := e.pending
		e.pending = nil
		e.mu.Unlock()
		for _, a := range out {
			e.out.Emit(a)
		}
		e.mu.Lock()
	}
	e.draining = false
	e.mu.Unlock()
}
