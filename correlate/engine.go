package correlate

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Option configures an Engine.
type Option func(*Engine)

// WithInventory sets the host inventory (see SetInventory).
func WithInventory(inv Inventory) Option { return func(e *Engine) { e.inv = inv } }

// WithLogger sets the logger (the engine names it "correlate").
func WithLogger(l *zap.Logger) Option {
	return func(e *Engine) {
		if l != nil {
			e.log = l.Named("correlate")
		}
	}
}

// Log field names.
const (
	logFieldCap        = "cap"
	logFieldEvicted    = "evicted"
	logFieldKind       = "evidence"
	logFieldTopHosts   = "top_hosts"
	logFieldTopOrigins = "top_forwarders"
)

// Engine evaluates AN0842 over knocks, handshakes and exposure changes.
// All methods are safe for concurrent use: state is guarded by one mutex,
// and alerts are handed to the Emitter outside it, in decision order.
type Engine struct {
	mu       sync.Mutex
	draining bool // a goroutine is handing e.pending to the emitter

	cfg  Config
	rule *rule
	sup  *suppressor
	inv  Inventory
	out  Emitter
	log  *zap.Logger
	// observer is written into every alert (WithObserver).
	observer Observer

	st        *state
	maxSensor int64 // newest sensor event time seen (or Advance'd)
	lastSweep int64
	lastFull  int64
	c         counters
	arriving  *chg // the change being attached, evaluated even if late
	pending   []Alert
}

// New returns an engine for cfg that hands alerts to out (nil: alerts are
// only counted).
func New(cfg Config, out Emitter, opts ...Option) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new engine: %w", err)
	}
	sup, err := compileSuppression(cfg.Suppression)
	if err != nil {
		return nil, fmt.Errorf("new engine: %w", err)
	}
	e := &Engine{cfg: cfg, rule: newRule(cfg), sup: sup, out: out, log: zap.NewNop(), st: newState(),
		observer: Observer{}.withDefaults()}
	e.c.init()
	for _, o := range opts {
		o(e)
	}
	return e, nil
}

// SetInventory swaps the inventory (for a SIGHUP reload). Changes whose
// host name was not in the old inventory are resolved again and evaluated.
func (e *Engine) SetInventory(inv Inventory) {
	e.mu.Lock()
	e.inv = inv
	still := e.st.unresolved[:0]
	var now []*chg
	for _, c := range e.st.unresolved {
		if c.ips = e.resolve(&c.c); len(c.ips) == 0 {
			still = append(still, c)
		} else {
			e.retime(c)
			now = append(now, c)
		}
	}
	clear(e.st.unresolved[len(still):])
	e.st.unresolved = still
	for _, c := range now {
		e.attach(c)
	}
	e.unlockAndEmit()
}

// SetSuppression swaps the suppression settings. It affects matches
// decided from now on; alerts already emitted stay as they are.
func (e *Engine) SetSuppression(s Suppression) error {
	sup, err := compileSuppression(s)
	if err != nil {
		return fmt.Errorf("set suppression: %w", err)
	}
	e.mu.Lock()
	e.sup = sup
	e.cfg.Suppression = s
	e.mu.Unlock()
	return nil
}

// Watermark returns the engine's event-time watermark: the newest sensor
// event time seen (or passed to Advance) minus Config.SensorLateness.
// Evidence older than Watermark - Retention is dropped.
func (e *Engine) Watermark() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.maxSensor == 0 {
		return time.Time{}
	}
	return time.Unix(0, e.wm()).UTC()
}

func (e *Engine) wm() int64 { return e.maxSensor - int64(e.cfg.SensorLateness) }

// Advance moves the watermark as if sensor evidence with time t had
// arrived. In live mode call it periodically with the sensor's clock so
// that state expires while the network is quiet; in replay mode the
// evidence's own times drive it and Advance is not needed.
func (e *Engine) Advance(t time.Time) {
	e.mu.Lock()
	e.observe(t.UnixNano())
	e.maybeSweep()
	e.mu.Unlock()
}

// observe raises the watermark with a sensor event time.
func (e *Engine) observe(t int64) {
	if t > e.maxSensor {
		e.maxSensor = t
	}
}

func (e *Engine) late(t int64) bool { return t < e.cutoff() }

// cutoff is the event time before which evidence has expired.
func (e *Engine) cutoff() int64 {
	if e.maxSensor == 0 {
		return math.MinInt64
	}
	return e.wm() - e.rule.retention
}

// AddKnock adds a knock record from the sensor.
func (e *Engine) AddKnock(k Knock) error {
	if err := k.validate(); err != nil {
		e.mu.Lock()
		e.c.rejected[iKnock]++
		e.mu.Unlock()
		return fmt.Errorf("add knock: %w", err)
	}
	src, dst := plain(k.Src), plain(k.Dst)
	e.mu.Lock()
	e.c.in[iKnock]++
	var newest int64
	for _, t := range k.Touches {
		newest = max(newest, t.Time.UnixNano())
	}
	if e.late(newest) {
		e.c.late[iKnock]++
	}
	e.observe(newest)
	h, p := e.pairFor(dst, src)
	touches := k.Touches
	if p.scan {
		// A scan silences its own burst, not what the pair does after it:
		// a KNOCK whose burst counts are a knock's and whose touches
		// start more than a window after the scan's last evidence is a
		// new use (the sensor's bursts end after a window of silence).
		if burstCount(k.DistinctClosed, k.Attempted) > e.cfg.MaxPorts || newest-e.rule.window <= p.scanLast {
			p.last = max(p.last, newest)
			p.scanLast = max(p.scanLast, newest)
			e.c.scanEvidence++
			e.st.touch(p)
			e.unlockAndEmit()
			return nil
		}
		touches = make([]Touch, 0, len(k.Touches))
		for _, t := range k.Touches {
			if t.Time.UnixNano() > p.scanLast {
				touches = append(touches, t)
			}
		}
		p.scan, p.sensorDistinct = false, 0
		e.c.scanEnded++
	}
	added, dropped := p.mergeTouches(touches, e.cfg.MaxTouchesPerPair)
	e.c.touchesDropped += uint64(dropped)
	if added == 0 {
		e.c.duplicates[iKnock]++
	}
	p.sensorDistinct = max(p.sensorDistinct, sat8(burstCount(k.DistinctClosed, k.Attempted)))
	maxDistinct := p.knockWindows(e.rule.window, 0, nil)
	switch {
	case maxDistinct > e.cfg.MaxPorts || int(p.sensorDistinct) > e.cfg.MaxPorts:
		e.markScan(p, newest)
	case added > 0:
		p.knocked = maxDistinct >= e.cfg.MinPorts
		if p.knocked {
			e.noteKnockEnds(h, p, k.Touches)
		}
		if p.knocked && !p.changed && len(h.changes) > 0 {
			p.changed = e.fitsAny(p, h.changes)
		}
		e.st.touch(p)
		for _, r := range p.hs {
			e.evalHS(dst, h, src, p, r)
		}
	default:
		e.st.touch(p)
	}
	e.maybeSweep()
	e.unlockAndEmit()
	return nil
}

// noteKnockEnds records on h the change intervals of p's knock windows
// that end at one of the new touches (for the change eviction order).
func (e *Engine) noteKnockEnds(h *host, p *pair, added []Touch) {
	oldest := int64(math.MaxInt64)
	for _, t := range added {
		oldest = min(oldest, t.Time.UnixNano())
	}
	// Changes older than the cutoff (minus the skew) have expired: so have
	// intervals that end before it.
	stale := int64(math.MinInt64)
	if e.maxSensor != 0 {
		stale = e.cutoff() - e.rule.skew
	}
	p.knockWindows(e.rule.window, e.cfg.MinPorts, func(k knockEnd) bool {
		if k.t < oldest {
			return false
		}
		h.addKnockInterval(k.t-e.rule.skew, k.t+e.rule.after, stale)
		return true
	})
}

// AddHandshake adds a first-handshake record from the sensor.
func (e *Engine) AddHandshake(hs Handshake) error {
	if err := hs.validate(); err != nil {
		e.mu.Lock()
		e.c.rejected[iHandshake]++
		e.mu.Unlock()
		return fmt.Errorf("add handshake: %w", err)
	}
	hs.Src, hs.Dst = plain(hs.Src), plain(hs.Dst)
	src, dst := hs.Src, hs.Dst
	ack := hs.ACK.UnixNano()
	e.mu.Lock()
	e.c.in[iHandshake]++
	if e.late(ack) {
		e.c.late[iHandshake]++
	}
	e.observe(ack)
	if e.st.nHS >= e.cfg.MaxHandshakes {
		// Evict before looking the pair up: eviction sweeps expired state.
		e.evictHandshakes()
	}
	h, p := e.pairFor(dst, src)
	p.last = max(p.last, ack)
	p.sensorDistinct = max(p.sensorDistinct, sat8(burstCount(hs.DistinctClosed, hs.Attempted)))
	switch {
	case p.scan:
		p.scanLast = max(p.scanLast, hs.SYN.UnixNano())
		e.c.scanEvidence++
		e.st.touch(p)
	case int(p.sensorDistinct) > e.cfg.MaxPorts:
		// The burst current at the SYN is a scan (the sensor's counts are
		// per burst): whatever knock ended before it is part of it.
		e.markScan(p, hs.SYN.UnixNano())
	default:
		syn := hs.SYN.UnixNano()
		for _, r := range p.hs {
			if r.h.Port == hs.Port && r.ack == ack && r.syn == syn {
				e.c.duplicates[iHandshake]++
				e.unlockAndEmit()
				return nil
			}
		}
		r := &hsRec{h: hs, ack: ack, syn: syn}
		p.hs = append(p.hs, r)
		e.st.syncHS(p)
		e.st.nHS++
		e.st.touch(p)
		e.evalHS(dst, h, src, p, r)
	}
	e.maybeSweep()
	e.unlockAndEmit()
	return nil
}

// AddChange adds an exposure change from winevents. Changes that cannot
// open a TCP port inbound (outbound, block, inactive, deleted, UDP) are
// counted by reason and not kept.
func (e *Engine) AddChange(c ExposureChange) error {
	if err := c.validate(); err != nil {
		e.mu.Lock()
		e.c.rejected[iChange]++
		e.mu.Unlock()
		return fmt.Errorf("add change: %w", err)
	}
	e.mu.Lock()
	e.c.in[iChange]++
	key := keyOf(&c)
	if _, dup := e.st.changes[key]; dup {
		// The same record with the same content: forwarded twice.
		e.c.duplicates[iChange]++
		e.mu.Unlock()
		return nil
	}
	if key.record != 0 {
		if r, ok := e.st.replaced[key.ref()]; ok && r.covers(&c) {
			// A record a stored change replaced, again: re-sent by its
			// forwarder, emitted by a decoder restarted without the join
			// state that made it redundant, or read twice from the
			// evidence log. Kept, it would stand beside its replacement
			// (a port-less 4946 gives a medium alert for every port).
			e.c.replacedResent++
			e.mu.Unlock()
			return nil
		}
	}
	if r := c.Replaces; r != nil && r.RecordID != 0 {
		// Before the opens check: a replaced change that opened must go
		// even when its replacement does not open (an inactive rule).
		ref := recordRef{host: key.host, channel: clampField(r.Channel, maxKeptBytes), record: r.RecordID}
		if ref != key.ref() {
			for _, old := range e.st.byRecord[ref] {
				if replaceable(old, &c, r) {
					e.removeChange(old.key, old)
					e.c.replaced++
				}
			}
			e.rememberReplaced(ref, &c, r)
		}
	}
	if key.record != 0 {
		// The same record again with other content. Either winevents
		// emitted it again with more in it (the partner of a join arrived:
		// a 4946 given its ports by its 5447, a listener given its rule, a
		// modify that an older record shows to be an enable): that version
		// replaces the stored one. Or the content contradicts the stored
		// one (one of the two is forged): both are kept, so that a record
		// claiming the id of a real one can never make it vanish. A
		// handshake's outcome only ever improves, so nothing already
		// alerted is taken back.
		for _, old := range e.st.byRecord[key.ref()] {
			if refines(&c, &old.c) {
				e.removeChange(old.key, old)
				e.c.updated++
			}
		}
	}
	if ok, why := e.rule.opens(&c); !ok {
		e.c.ignored[why]++
		e.mu.Unlock()
		return nil
	}

	t := c.Time.UnixNano()
	if e.late(t + e.rule.skew) {
		e.c.late[iChange]++
	}
	if len(e.st.changes) >= e.cfg.MaxChanges {
		e.evictChanges()
	}
	if key.record != 0 && len(e.st.byRecord[key.ref()]) >= maxVersions {
		e.evictVersion(key.ref(), c.Origin)
	}
	c.HostIPs = slices.Clone(c.HostIPs)
	c.Ports.Ranges = slices.Clone(c.Ports.Ranges)
	if c.Replaces != nil {
		r := *c.Replaces
		c.Replaces = &r
	}
	clampChange(&c)
	e.st.changeSeq++
	ch := &chg{c: c, t: t, raw: t, key: key, seq: e.st.changeSeq}
	ch.ips = e.resolve(&ch.c)
	e.retime(ch)
	e.st.changes[key] = ch
	if key.record != 0 {
		e.st.byRecord[key.ref()] = append(e.st.byRecord[key.ref()], ch)
	}
	e.st.changeQ = append(e.st.changeQ, ch)
	if len(e.st.changeQ) > 2*e.cfg.MaxChanges {
		// Evicted changes wait in the queue until popped; keep it bounded.
		e.st.changeQ = slices.DeleteFunc(e.st.changeQ, func(c *chg) bool { return c.gone })
	}
	if len(ch.ips) == 0 {
		e.st.unresolved = append(e.st.unresolved, ch)
		e.c.unresolvedSeen++
	} else {
		e.attach(ch)
	}
	e.unlockAndEmit()
	return nil
}

// plain returns ip without IPv4 mapping and zone: the form every key uses.
func plain(ip netip.Addr) netip.Addr { return ip.Unmap().WithZone("") }

// burstCount is what the sensor's counts say of a burst's size: the
// distinct closed ports, or the distinct ports tried without an open
// answer when more (a SYN scan of a filtered host decides few closed).
func burstCount(distinct, attempted int) int { return max(distinct, attempted) }

func sat8(n int) uint8 {
	switch {
	case n < 0:
		return 0
	case n > 255:
		return 255
	}
	return uint8(n)
}
