package coverage

import (
	"net/netip"
	"slices"
	"time"
)

// tuple is a connection's 4-tuple, client first.
type tuple struct {
	src, dst   netip.Addr
	sport, dpt uint16
}

// connWait is a host's connection event waiting for the sensor's
// handshake of the same connection.
type connWait struct {
	key      tuple
	host     *host
	hostTime time.Time
	eventID  uint32
	channel  string
	record   uint64
	gone     bool
}

// hsWait is a sensor handshake waiting for its host's event.
type hsWait struct {
	hs   Handshake
	gone bool
}

// matched is a connection both sides saw: later events of the same
// connection are checked against it.
type matched struct {
	key      tuple
	hostTime time.Time
	eventID  uint32
	channel  string
	record   uint64
	sensor   time.Time // the handshake's ACK
	sample   *Sample   // nil when the match was refused
	host     *host
}

// matcher joins host connection events with sensor handshakes.
type matcher struct {
	conn  map[tuple][]*connWait
	connQ []*connWait
	nConn int
	hs    map[tuple]*hsWait
	hsQ   []*hsWait
	done  map[tuple]*matched
	doneQ []*matched
}

func (m *matcher) init() {
	m.conn, m.hs, m.done = map[tuple][]*connWait{}, map[tuple]*hsWait{}, map[tuple]*matched{}
}

// sensorRef is the sensor's time of the moment the host logged: Security
// 5156 is written when the connection is permitted, as the SYN arrives
// and before the SYN-ACK leaves; Sysmon 3 when the connection is
// established (the ACK).
func sensorRef(hs *Handshake, eventID uint32) time.Time {
	if eventID == 3 {
		return hs.ACK
	}
	if !hs.SYNACK.IsZero() {
		return hs.SYNACK
	}
	return hs.SYN
}

// matchEvent joins a connection event of host h with the sensor's
// handshake of it (now or when the handshake comes).
func (t *Tracker) matchEvent(h *host, ev *Event) []ClockUpdate {
	c := ev.Conn
	ev.Channel = keep(ev.Channel, maxChannelBytes)
	at := ev.Time
	if !c.At.IsZero() {
		at = c.At
	}
	keys := []tuple{{plain(c.Remote), plain(c.Local), c.RemotePort, c.LocalPort}}
	if !c.SideKnown {
		keys = append(keys, tuple{plain(c.Local), plain(c.Remote), c.LocalPort, c.RemotePort})
	}
	m := &t.match
	for _, k := range keys {
		if d := m.done[k]; d != nil && absDur(at.Sub(d.hostTime)) <= t.cfg.MatchWait+t.cfg.MaxOffset {
			return t.again(d, h, ev, at)
		}
	}
	for _, k := range keys {
		if w := m.hs[k]; w != nil && !w.gone {
			w.gone = true
			delete(m.hs, k)
			cw := &connWait{key: k, host: h, hostTime: at, eventID: ev.EventID, channel: ev.Channel, record: ev.RecordID}
			return t.join(&w.hs, []*connWait{cw})
		}
	}
	for _, k := range keys {
		cw := &connWait{key: k, host: h, hostTime: at, eventID: ev.EventID, channel: ev.Channel, record: ev.RecordID}
		if m.nConn >= t.cfg.MaxPending {
			m.evictConn(t)
		}
		m.conn[k] = append(m.conn[k], cw)
		m.connQ = append(m.connQ, cw)
		m.nConn++
	}
	return nil
}

// matchHandshake joins a sensor handshake with its host's connection
// event (now or when the event comes).
func (t *Tracker) matchHandshake(hs *Handshake) []ClockUpdate {
	k := tuple{plain(hs.Src), plain(hs.Dst), hs.SrcPort, hs.Port}
	m := &t.match
	if d := m.done[k]; d != nil && absDur(hs.ACK.Sub(d.sensor)) < time.Second {
		return nil // the same connection reported twice
	}
	if ws := m.conn[k]; len(ws) > 0 {
		var live []*connWait
		for _, w := range ws {
			if !w.gone {
				w.gone = true
				m.nConn--
				live = append(live, w)
			}
		}
		delete(m.conn, k)
		if len(live) > 0 {
			return t.join(hs, live)
		}
	}
	if len(m.hs) >= t.cfg.MaxPending {
		m.evictHS(t)
	}
	if old := m.hs[k]; old != nil {
		old.gone = true
	}
	w := &hsWait{hs: *hs}
	m.hs[k] = w
	m.hsQ = append(m.hsQ, w)
	return nil
}

// join makes a sample of a handshake and the host events of it. Events
// that disagree with each other (a forged one beside the real one) make
// no sample; both are counted as a conflict.
func (t *Tracker) join(hs *Handshake, evs []*connWait) []ClockUpdate {
	first := evs[0]
	for _, e := range evs[1:] {
		if e.channel == first.channel && e.record == first.record && e.hostTime.Equal(first.hostTime) {
			t.st.samples["duplicate"]++
			continue
		}
		if absDur(e.hostTime.Sub(first.hostTime)) > t.cfg.Agreement {
			t.st.samples["conflict"]++
			first.host.conflicts++
			t.remember(&matched{key: first.key, hostTime: first.hostTime, eventID: first.eventID, channel: first.channel,
				record: first.record, sensor: hs.ACK, host: first.host})
			return nil
		}
	}
	h := first.host
	d := &matched{key: first.key, hostTime: first.hostTime, eventID: first.eventID, channel: first.channel,
		record: first.record, sensor: hs.ACK, host: h}
	defer t.remember(d)
	// The address must be the host's: the inventory (when it knows the
	// address) names the same computer.
	if t.res != nil {
		if n := t.res.Name(hs.Dst); n != "" && h.name != "" && !sameHost(n, h.name) &&
			!slices.Contains(t.res.IPs(h.name), plain(hs.Dst)) {
			t.st.samples["address_mismatch"]++
			h.mismatched++
			return nil
		}
	}
	ref := sensorRef(hs, first.eventID)
	off := first.hostTime.Sub(ref)
	if absDur(off) > t.cfg.MaxOffset {
		t.st.samples["beyond_bound"]++
		h.beyond++
		h.lastBeyond = off
		return nil
	}
	t.st.samples["matched"]++
	s := &Sample{Peer: plain(hs.Src), PeerPort: hs.SrcPort, Host: plain(hs.Dst), Port: hs.Port, HostTime: first.hostTime,
		SensorTime: ref, EventID: first.eventID, Channel: first.channel, RecordID: first.record, Offset: off}
	d.sample = s
	h.addSample(s, t.cfg.MaxSamples)
	if !slices.Contains(h.clockIPs, s.Host) && len(h.clockIPs) < maxHostIPs {
		h.clockIPs = append(h.clockIPs, s.Host)
	}
	t.addIP(h, s.Host)
	t.traffic(h, hs.Dst, hs.ACK)
	return t.estimate(h)
}

// again handles a second event of a connection already matched: the same
// record forwarded twice, or the same connection logged by another
// channel (5156 and Sysmon 3 agree), changes nothing; a different time is
// a conflict: the sample goes, whichever of the two is forged.
func (t *Tracker) again(d *matched, h *host, ev *Event, at time.Time) []ClockUpdate {
	if ev.Channel == d.channel && ev.RecordID == d.record && at.Equal(d.hostTime) {
		t.st.samples["duplicate"]++
		return nil
	}
	if absDur(at.Sub(d.hostTime)) <= t.cfg.Agreement && h == d.host {
		t.st.samples["duplicate"]++
		return nil
	}
	t.st.samples["conflict"]++
	d.host.conflicts++
	if h != d.host {
		h.conflicts++
	}
	if d.sample != nil && !d.sample.conflicted {
		d.sample.conflicted = true
		return t.estimate(d.host)
	}
	return nil
}

// remember keeps a match for later events of the same connection
// (bounded: the oldest go first).
func (t *Tracker) remember(d *matched) {
	m := &t.match
	if len(m.done) >= t.cfg.MaxPending {
		for len(m.doneQ) > 0 && len(m.done) >= t.cfg.MaxPending {
			o := m.doneQ[0]
			m.doneQ = m.doneQ[1:]
			if m.done[o.key] == o {
				delete(m.done, o.key)
				t.st.evicted["matches"]++
			}
		}
	}
	m.done[d.key] = d
	m.doneQ = append(m.doneQ, d)
}

// evictConn drops the oldest waiting connection event of the host with
// the most waiting (a flood from one host, or of forged events, goes
// first).
func (m *matcher) evictConn(t *Tracker) {
	count := map[*host]int{}
	var top *host
	for _, w := range m.connQ {
		if w.gone {
			continue
		}
		count[w.host]++
		if top == nil || count[w.host] > count[top] {
			top = w.host
		}
	}
	for i, w := range m.connQ {
		if !w.gone && w.host == top {
			w.gone = true
			m.nConn--
			m.conn[w.key] = slices.DeleteFunc(m.conn[w.key], func(x *connWait) bool { return x == w })
			if len(m.conn[w.key]) == 0 {
				delete(m.conn, w.key)
			}
			m.connQ = slices.Delete(m.connQ, i, i+1)
			t.st.evicted["connections"]++
			return
		}
	}
}

func (m *matcher) evictHS(t *Tracker) {
	for len(m.hsQ) > 0 {
		w := m.hsQ[0]
		m.hsQ = m.hsQ[1:]
		if w.gone {
			continue
		}
		w.gone = true
		k := tuple{plain(w.hs.Src), plain(w.hs.Dst), w.hs.SrcPort, w.hs.Port}
		if m.hs[k] == w {
			delete(m.hs, k)
		}
		t.st.evicted["handshakes"]++
		return
	}
}

// expire drops what waited longer than MatchWait (events: beyond what any
// clock within MaxOffset could still match).
func (m *matcher) expire(t *Tracker, now time.Time) {
	wait := t.cfg.MatchWait
	i := 0
	for ; i < len(m.hsQ) && (m.hsQ[i].gone || now.Sub(m.hsQ[i].hs.ACK) > wait); i++ {
		w := m.hsQ[i]
		if !w.gone {
			w.gone = true
			k := tuple{plain(w.hs.Src), plain(w.hs.Dst), w.hs.SrcPort, w.hs.Port}
			if m.hs[k] == w {
				delete(m.hs, k)
			}
		}
	}
	m.hsQ = m.hsQ[i:]
	i = 0
	for ; i < len(m.connQ) && (m.connQ[i].gone || now.Sub(m.connQ[i].hostTime) > wait+t.cfg.MaxOffset); i++ {
		w := m.connQ[i]
		if !w.gone {
			w.gone = true
			m.nConn--
			m.conn[w.key] = slices.DeleteFunc(m.conn[w.key], func(x *connWait) bool { return x == w })
			if len(m.conn[w.key]) == 0 {
				delete(m.conn, w.key)
			}
		}
	}
	m.connQ = m.connQ[i:]
	i = 0
	for ; i < len(m.doneQ) && now.Sub(m.doneQ[i].sensor) > wait; i++ {
		if d := m.doneQ[i]; m.done[d.key] == d {
			delete(m.done, d.key)
		}
	}
	m.doneQ = m.doneQ[i:]
}

// estimate is a host's clock estimate.
type estimate struct {
	valid, beyond bool
	offset        time.Duration
	samples       int // agreeing samples
	sources       int // agreeing peers
	peers         int // peers with samples
	total         int // usable samples
	spread        time.Duration
	measured      time.Time
	evidence      []*Sample
}

// estimate recomputes h's clock and returns the updates for the engine
// when what it publishes changed.
func (t *Tracker) estimate(h *host) []ClockUpdate {
	h.est = t.compute(h)
	var next *Clock
	if h.est.valid && !h.est.beyond {
		next = &Clock{Host: h.name, Offset: h.est.offset, Samples: h.est.samples, Sources: h.est.sources,
			Spread: h.est.spread, Measured: h.est.measured}
		for _, s := range h.est.evidence {
			next.Evidence = append(next.Evidence, *s)
		}
	}
	if sameClock(h.pub, next) && slices.Equal(h.pubIPs, h.clockIPs) {
		return nil
	}
	var ups []ClockUpdate
	for _, ip := range h.pubIPs {
		if !slices.Contains(h.clockIPs, ip) {
			ups = append(ups, ClockUpdate{IP: ip})
		}
	}
	for _, ip := range h.clockIPs {
		ups = append(ups, ClockUpdate{IP: ip, Clock: next})
	}
	h.pub, h.pubIPs = next, slices.Clone(h.clockIPs)
	t.st.clockPub++
	return ups
}

func sameClock(a, b *Clock) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Offset == b.Offset && a.Samples == b.Samples && a.Sources == b.Sources && a.Spread == b.Spread &&
		a.Measured.Equal(b.Measured)
}

// compute is the estimate from h's samples: each peer votes with the
// median of its samples; the offset is the median of the samples of the
// peers that agree with the median vote, valid with MinSamples samples
// from MinSources peers that are more than half of all peers.
func (t *Tracker) compute(h *host) estimate {
	var e estimate
	byPeer := map[netip.Addr][]*Sample{}
	var peers []netip.Addr
	for _, s := range h.samples {
		if s.conflicted || (!t.now.IsZero() && t.now.Sub(s.SensorTime) > t.cfg.SampleMaxAge) {
			continue
		}
		if byPeer[s.Peer] == nil {
			peers = append(peers, s.Peer)
		}
		byPeer[s.Peer] = append(byPeer[s.Peer], s)
		e.total++
	}
	e.peers = len(peers)
	if e.total == 0 {
		return e
	}
	votes := make([]time.Duration, 0, len(peers))
	for _, p := range peers {
		votes = append(votes, medianOf(byPeer[p]))
	}
	mid := median(votes)
	var agree []*Sample
	for i, p := range peers {
		if absDur(votes[i]-mid) > t.cfg.Agreement {
			continue
		}
		e.sources++
		for _, s := range byPeer[p] {
			if absDur(s.Offset-mid) <= t.cfg.Agreement {
				agree = append(agree, s)
			}
		}
	}
	e.samples = len(agree)
	if len(agree) == 0 {
		return e
	}
	offs := make([]time.Duration, len(agree))
	for i, s := range agree {
		offs[i] = s.Offset
		e.measured = maxTime(e.measured, s.SensorTime)
	}
	e.offset = median(offs)
	e.spread = slices.Max(offs) - slices.Min(offs)
	e.valid = e.samples >= t.cfg.MinSamples && e.sources >= t.cfg.MinSources && 2*e.sources > e.peers
	e.beyond = absDur(e.offset) > t.cfg.MaxOffset
	slices.SortFunc(agree, func(a, b *Sample) int { return b.SensorTime.Compare(a.SensorTime) })
	if len(agree) > 4 {
		agree = agree[:4]
	}
	e.evidence = agree
	return e
}

func medianOf(ss []*Sample) time.Duration {
	offs := make([]time.Duration, len(ss))
	for i, s := range ss {
		offs[i] = s.Offset
	}
	return median(offs)
}

// median of ds (the mean of the middle two for an even count).
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return s[n/2-1] + (s[n/2]-s[n/2-1])/2
}

// maxPerPeer bounds one peer's samples of a host, whatever MaxSamples.
const maxPerPeer = 4

// addSample keeps s among h's samples: at most maxPerPeer per peer (its
// oldest goes) and max in all (the oldest of the peer with the most goes),
// so one peer's many connections cannot push the others' out.
func (h *host) addSample(s *Sample, max int) {
	per := 0
	for _, x := range h.samples {
		if x.Peer == s.Peer {
			per++
		}
	}
	if per >= maxPerPeer {
		i := slices.IndexFunc(h.samples, func(x *Sample) bool { return x.Peer == s.Peer })
		h.samples = slices.Delete(h.samples, i, i+1)
	} else if len(h.samples) >= max {
		count := map[netip.Addr]int{}
		var top netip.Addr
		for _, x := range h.samples {
			count[x.Peer]++
			if count[x.Peer] > count[top] {
				top = x.Peer
			}
		}
		i := slices.IndexFunc(h.samples, func(x *Sample) bool { return x.Peer == top })
		h.samples = slices.Delete(h.samples, i, i+1)
	}
	h.samples = append(h.samples, s)
}
