package correlate

import (
	"net/netip"
)

// resolve returns the destination addresses of a change: the ones it
// carries and the inventory's for its host name. Wildcard and loopback
// addresses (a listener bound to "::") name no host the sensor can see.
func (e *Engine) resolve(c *ExposureChange) []netip.Addr {
	var ips []netip.Addr
	add := func(ip netip.Addr) {
		if ip = plain(ip); ip.IsValid() && !ip.IsUnspecified() && !ip.IsLoopback() {
			ips = appendUnique(ips, ip)
		}
	}
	for _, ip := range c.HostIPs {
		add(ip)
	}
	if e.inv != nil && c.Host != "" {
		for _, ip := range e.inv.IPs(c.Host) {
			add(ip)
		}
	}
	return ips
}

// attach files a resolved change under each of its hosts and evaluates
// the handshakes pending there.
func (e *Engine) attach(ch *chg) {
	e.arriving = ch
	defer func() { e.arriving = nil }()
	for _, d := range ch.ips {
		h := e.st.host(d, true)
		h.changes = append(h.changes, ch)
		ch.hosts = append(ch.hosts, h)
		cutoff := e.cutoff()
		for _, p := range h.hsPairs {
			if p.last < cutoff {
				continue // expired, not swept yet
			}
			if p.knocked && !p.changed && e.fits(p, ch) {
				p.changed = true
				e.st.touch(p)
			}
			for _, r := range p.hs {
				e.evalHS(d, h, p.src, p, r)
			}
		}
	}
}

// pairFor returns the pair (src, dst), creating it (after eviction when
// the cap is reached).
func (e *Engine) pairFor(dst, src netip.Addr) (*host, *pair) {
	p, k := e.st.lookup(dst, src)
	if p != nil {
		return p.h, p
	}
	if e.st.nPairs >= e.cfg.MaxPairs {
		e.evictPairs()
	}
	h := e.st.host(dst, true)
	p = &pair{h: h, src: src}
	e.st.addPair(h, p, k)
	e.st.touch(p)
	return h, p
}

// fits reports whether change c falls in the change window of one of p's
// knocks.
func (e *Engine) fits(p *pair, c *chg) bool {
	return e.fitsAny(p, []*chg{c})
}

// fitsAny reports whether one of the changes falls in the change window of
// one of p's knocks.
func (e *Engine) fitsAny(p *pair, cs []*chg) bool {
	if len(p.touches) == 0 {
		return false
	}
	// Cheap bounds first: knock windows end between the first and the
	// last touch, so most pairs of a busy host are ruled out in O(1).
	lo, hi := p.touches[0].t-e.rule.skew, p.touches[len(p.touches)-1].t+e.rule.after
	near := false
	for _, c := range cs {
		for _, t := range c.times() {
			near = near || (t >= lo && t <= hi)
		}
	}
	if !near {
		return false
	}
	found := false
	p.knockWindows(e.rule.window, e.cfg.MinPorts, func(k knockEnd) bool {
		for _, c := range cs {
			for _, t := range c.times() {
				found = found || (t >= k.t-e.rule.skew && t <= k.t+e.rule.after)
			}
		}
		return !found
	})
	return found
}

// markScan makes p a scanner from evidence at time at (event ns): its
// touches and handshakes go, and evidence of the same burst keeps it one.
func (e *Engine) markScan(p *pair, at int64) {
	p.scan = true
	p.scanLast = max(p.scanLast, at)
	p.touches = nil
	e.st.nHS -= len(p.hs)
	p.hs = nil
	e.st.syncHS(p)
	e.c.scans++
	e.st.touch(p)
}
