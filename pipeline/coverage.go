package pipeline

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/coverage"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents"
)

// Coverage returns the coverage tracker (nil without Config.Coverage).
func (p *Pipeline) Coverage() *coverage.Tracker { return p.cfg.Coverage }

// SetInventory swaps the host inventory of the engine and of coverage (a
// SIGHUP reload).
func (p *Pipeline) SetInventory(inv correlate.Inventory) {
	p.engine.SetInventory(inv)
	if p.cfg.Coverage == nil {
		return
	}
	if r, ok := inv.(coverage.Resolver); ok {
		p.cfg.Coverage.SetResolver(r)
	}
	if h, ok := inv.(*correlate.Hosts); ok {
		p.cfg.Coverage.SetInventory(InventoryHosts(h))
	}
}

// InventoryHosts lists an inventory's hosts for coverage.
func InventoryHosts(h *correlate.Hosts) []coverage.InventoryHost {
	var out []coverage.InventoryHost
	for _, e := range h.Entries() {
		out = append(out, coverage.InventoryHost{Name: e.Name, IPs: e.IPs})
	}
	return out
}

// CoverageTick moves coverage to now (the sensor's time), asks s for the
// samples due, passes the clocks it measured to the engine and lets held
// knocks of paths that are no longer blind through. The daemon calls it
// every second, a replay at every sweep.
func (p *Pipeline) CoverageTick(now time.Time, s coverage.Sampler) {
	cov := p.cfg.Coverage
	if cov == nil {
		return
	}
	p.applyClocks(cov.Tick(now, s))
	p.releaseHeld(now)
}

// ObserveSensor gives coverage the sensor's counters at now (global and
// per capture interface), then ticks it (CoverageTick).
func (p *Pipeline) ObserveSensor(now time.Time, global map[string]uint64, ifaces []coverage.Interface, s coverage.Sampler) {
	if p.cfg.Coverage == nil {
		return
	}
	if global != nil {
		p.cfg.Coverage.ObserveCounters(now, global, ifaces)
	}
	p.CoverageTick(now, s)
}

// applyClocks hands measured clocks to the engine.
func (p *Pipeline) applyClocks(ups []coverage.ClockUpdate) {
	for _, u := range ups {
		var hc *correlate.HostClock
		if c := u.Clock; c != nil {
			hc = &correlate.HostClock{Host: c.Host, Offset: c.Offset, Samples: c.Samples, Sources: c.Sources,
				Spread: c.Spread, Measured: c.Measured}
			for _, s := range c.Evidence {
				hc.Evidence = append(hc.Evidence, correlate.ClockSample{Src: s.Peer, SrcPort: s.PeerPort, Port: s.Port,
					HostTime: s.HostTime, SensorTime: s.SensorTime, EventID: s.EventID, Channel: s.Channel, RecordID: s.RecordID})
			}
		}
		if err := p.engine.SetHostClock(u.IP, hc); err != nil {
			p.log.Debug("host clock not applied", zap.Stringer("ip", u.IP), zap.Error(err))
		}
	}
}

// observeEvent shows coverage one decoded change (any kind); arrival zero
// means unknown (a file replayed).
func (p *Pipeline) observeEvent(c *winevents.ExposureChange, arrival time.Time) {
	cov := p.cfg.Coverage
	if cov == nil {
		return
	}
	ev := coverage.Event{Host: c.Host, HostIPs: c.HostIPs, Time: c.Time, Arrival: arrival, Channel: c.Source.Channel,
		EventID: c.Source.EventID, RecordID: c.Source.RecordID}
	if c.Kind == winevents.KindConnection && c.Protocol == winevents.ProtoTCP && len(c.Ports.Ranges) == 1 &&
		c.Ports.Ranges[0].Lo == c.Ports.Ranges[0].Hi {
		ev.Conn = &coverage.Conn{Local: c.LocalAddress, Remote: c.RemoteAddress, LocalPort: c.Ports.Ranges[0].Lo,
			RemotePort: c.RemotePort, SideKnown: c.LocalSideBy != "unknown", At: c.Observed}
	}
	p.applyClocks(cov.ObserveEvent(ev))
}

// observeRecord shows coverage a sensor record; it reports whether the
// record is a clock sample (which goes nowhere else).
func (p *Pipeline) observeRecord(r sensor.Record) (sample bool) {
	cov := p.cfg.Coverage
	switch r := r.(type) {
	case *sensor.Handshake:
		if cov != nil {
			p.applyClocks(cov.ObserveHandshake(coverage.Handshake{Src: r.Src, Dst: r.Dst, SrcPort: r.SrcPort, Port: r.Port,
				SYN: r.SYN, SYNACK: r.SYNACK, ACK: r.ACK, Sample: r.Sample}))
		}
		return r.Sample
	case *sensor.Knock:
		if cov != nil {
			k := coverage.Knock{Src: r.Src, Dst: r.Dst}
			for _, t := range r.Touches {
				switch t.Kind {
				case sensor.TouchREJ:
					k.Answered = append(k.Answered, t.Time)
				case sensor.TouchS0, sensor.TouchRSTOS0, sensor.TouchAttempt:
					// An attempt (a SYN pushed out of the program's
					// pending SYNs undecided) went unanswered too.
					k.Unanswered = append(k.Unanswered, t.Time)
				}
			}
			cov.ObserveKnock(k)
		}
	}
	return false
}

// Held knocks: on a path the sensor cannot see both directions of, every
// connection attempt looks like an unanswered (S0) touch, so a knock made
// only of unanswered touches proves nothing and a busy one-way path would
// flood the engine with them. They wait here instead (bounded), and go to
// the engine as soon as the path shows an answer — the knocker's own
// handshake seen with its SYN-ACK is one — so a "blind" verdict that an
// attacker provokes delays their knock by nothing that matters. At the
// bound the oldest held knock of the fullest host goes to the engine, not
// away: an attacker who knocks, then floods spoofed knocks to push theirs
// out, pushes it into the engine (whose own bounds resist floods).

// maxHeldPerHost and maxHeld bound the held knocks.
const (
	maxHeldPerHost = 64
	maxHeld        = 4096
)

type heldKnocks struct {
	mu    sync.Mutex
	byDst map[netip.Addr][]correlate.Knock
	n     int
}

// unverifiable: every touch is unanswered (S0 or RSTOS0); a REJ needs the
// host's RST, which a one-way path cannot show.
func unverifiable(k *correlate.Knock) bool {
	for _, t := range k.Touches {
		if t.Kind == correlate.TouchREJ {
			return false
		}
	}
	return len(k.Touches) > 0
}

// hold keeps k if its path is blind; it reports whether it did, and the
// knock the bound pushed out (to go to the engine instead), if any.
func (p *Pipeline) hold(k *correlate.Knock) (held bool, overflow *correlate.Knock) {
	cov := p.cfg.Coverage
	if cov == nil || !unverifiable(k) {
		return false, nil
	}
	blind, _ := cov.Blind(k.Dst)
	if !blind {
		return false, nil
	}
	dst := k.Dst.Unmap()
	h := &p.held
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byDst == nil {
		h.byDst = map[netip.Addr][]correlate.Knock{}
	}
	from := netip.Addr{}
	switch {
	case len(h.byDst[dst]) >= maxHeldPerHost:
		from = dst
	case h.n >= maxHeld:
		// The host with the most held knocks gives its oldest.
		for d, ks := range h.byDst {
			if !from.IsValid() || len(ks) > len(h.byDst[from]) || (len(ks) == len(h.byDst[from]) && d.Less(from)) {
				from = d
			}
		}
	}
	if from.IsValid() {
		old := h.byDst[from][0]
		overflow = &old
		h.byDst[from] = slices.Delete(h.byDst[from], 0, 1)
		if len(h.byDst[from]) == 0 {
			delete(h.byDst, from)
		}
		h.n--
		p.counters.heldOverflow.Add(1)
	}
	h.byDst[dst] = append(h.byDst[dst], *k)
	h.n++
	cov.NoteHeld()
	p.counters.heldNow.Store(int64(h.n))
	return true, overflow
}

// releaseHeld feeds the held knocks of paths no longer blind to the
// engine, and drops those older than the engine keeps anything.
func (p *Pipeline) releaseHeld(now time.Time) {
	cov := p.cfg.Coverage
	if cov == nil {
		return
	}
	h := &p.held
	h.mu.Lock()
	var out []correlate.Knock
	expired := now.Add(-p.cfg.Engine.Retention - p.cfg.Engine.SensorLateness)
	for d, ks := range h.byDst {
		if blind, _ := cov.Blind(d); !blind {
			out = append(out, ks...)
			h.n -= len(ks)
			delete(h.byDst, d)
			continue
		}
		keep := ks[:0]
		for _, k := range ks {
			if newestTouch(&k).Before(expired) {
				h.n--
				p.counters.reject("knock", "held_expired")
				continue
			}
			keep = append(keep, k)
		}
		if len(keep) == 0 {
			delete(h.byDst, d)
		} else {
			h.byDst[d] = keep
		}
	}
	p.counters.heldNow.Store(int64(h.n))
	h.mu.Unlock()
	for i := range out {
		p.counters.in("knock")
		if err := p.engine.AddKnock(out[i]); err != nil {
			p.counters.reject("knock", reasonOf(err))
		}
	}
}

func newestTouch(k *correlate.Knock) time.Time {
	var t time.Time
	for _, x := range k.Touches {
		if x.Time.After(t) {
			t = x.Time
		}
	}
	return t
}
