package coverage

import (
	"container/list"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Resolver maps names to addresses and back (the inventory:
// correlate.Hosts).
type Resolver interface {
	IPs(host string) []netip.Addr
	Name(ip netip.Addr) string
}

// Tracker is the coverage state. Its methods are safe for concurrent use.
type Tracker struct {
	mu  sync.Mutex
	cfg Config
	res Resolver

	hosts   map[string]*host     // by key
	byIP    map[netip.Addr]*host // every address of a host
	short   map[string]string    // first label of a named host -> its key ("" ambiguous)
	lru     *list.List           // hosts not in the inventory, least recently active first
	invKeys map[string]bool      // keys of inventory hosts

	match matcher
	net   netState
	st    counters

	now     time.Time // the latest Tick (sensor time)
	started time.Time // the first Tick
}

// counters are the Tracker's counts (Stats).
type counters struct {
	samples     map[string]uint64 // by outcome: matched, conflict, beyond_bound, address_mismatch, duplicate, agreeing
	requests    map[string]uint64 // by outcome: sent, answered, expired, failed
	evicted     map[string]uint64 // by table: hosts, connections, handshakes, matches
	events      uint64
	connEvents  uint64
	handshakes  uint64
	knocks      uint64
	dsts        uint64
	clockPub    uint64
	held        uint64
	hostsCapHit uint64
}

// maxHostIPs bounds the addresses kept per host; maxUnanswered the
// unanswered touch times; maxLags the lag samples.
const (
	maxHostIPs    = 16
	maxUnanswered = 64
	maxLags       = 64
)

// host is one host as coverage sees it.
type host struct {
	key       string
	name      string // as first named ("" for a host known only by address)
	ips       []netip.Addr
	inventory bool
	elem      *list.Element

	// Events (times on the host's clock).
	events                uint64
	firstEvent, lastEvent time.Time
	chans                 [5]chanStat
	connEvents            uint64

	// Traffic (sensor times).
	firstTraffic, lastTraffic, lastAnswered time.Time
	// recorded: the sensor reported traffic to the host in a record (a
	// knock, a handshake, a sample); false while it is known from the
	// table of SYN destinations alone.
	recorded   bool
	unanswered []touchRef

	// Sample requests (sensor times). trafficIPs are the addresses the
	// sensor reported traffic to (a request goes to those first).
	lastReq, reqUntil, lastSample time.Time
	trafficIPs                    []netip.Addr
	requests, answered            uint64

	// Clock.
	samples                       []*Sample
	conflicts, beyond, mismatched uint64
	lastBeyond                    time.Duration
	est                           estimate
	pub                           *Clock
	pubIPs                        []netip.Addr
	clockIPs                      []netip.Addr // addresses samples verified

	// Event lag (arrival minus event time on the sensor's clock).
	lags   []time.Duration
	lagPos int
}

// touchRef is one unanswered touch: a later KNOCK of the same pair
// repeats its touches, so (source, time) recognises them.
type touchRef struct {
	src netip.Addr
	at  time.Time
}

type chanStat struct {
	count uint64
	last  time.Time // event time, host clock
	// lastArrival is when the newest event of the channel arrived (sensor
	// time when the arrival is known, else zero).
	lastArrival time.Time
}

// New returns a Tracker. res may be nil (no inventory).
func New(cfg Config, res Resolver) (*Tracker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := &Tracker{cfg: cfg, res: res, hosts: map[string]*host{}, byIP: map[netip.Addr]*host{}, short: map[string]string{},
		lru: list.New(), invKeys: map[string]bool{}}
	t.match.init()
	t.st = counters{samples: map[string]uint64{}, requests: map[string]uint64{}, evicted: map[string]uint64{}}
	for _, k := range sampleOutcomes {
		t.st.samples[k] = 0
	}
	for _, k := range requestOutcomes {
		t.st.requests[k] = 0
	}
	for _, k := range evictTables {
		t.st.evicted[k] = 0
	}
	return t, nil
}

// Outcomes and tables of the counters (their series exist at 0).
var (
	sampleOutcomes  = []string{"matched", "duplicate", "conflict", "beyond_bound", "address_mismatch"}
	requestOutcomes = []string{"sent", "answered", "expired", "failed"}
	evictTables     = []string{"hosts", "connections", "handshakes", "matches"}
)

// Config returns the configuration.
func (t *Tracker) Config() Config { return t.cfg }

// SetResolver swaps the inventory resolver (a SIGHUP reload).
func (t *Tracker) SetResolver(res Resolver) {
	t.mu.Lock()
	t.res = res
	t.mu.Unlock()
}

// SetInventory declares the inventory's hosts: they are reported whether
// or not anything was seen of them, and never evicted.
func (t *Tracker) SetInventory(hosts []InventoryHost) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k := range t.invKeys {
		if h := t.hosts[k]; h != nil {
			h.inventory = false
			h.elem = t.lru.PushBack(h)
		}
	}
	t.invKeys = map[string]bool{}
	for _, ih := range hosts {
		if normName(ih.Name) == "" {
			continue
		}
		h := t.namedHost(ih.Name, true)
		for _, ip := range ih.IPs {
			t.addIP(h, ip)
		}
		h.inventory = true
		if h.elem != nil {
			t.lru.Remove(h.elem)
			h.elem = nil
		}
		t.invKeys[h.key] = true
	}
}

// namedHost returns the host named name (creating it with create).
func (t *Tracker) namedHost(name string, create bool) *host {
	key := normName(name)
	if len(key) > maxNameBytes {
		key = key[:maxNameBytes] // as newHost keeps it
	}
	if key == "" {
		return nil
	}
	if h := t.hosts[key]; h != nil {
		return h
	}
	// A short name matches its FQDN and the reverse.
	if dot := indexDot(key); dot > 0 {
		if h := t.hosts[key[:dot]]; h != nil && h.name != "" {
			return h
		}
	} else if k, ok := t.short[key]; ok && k != "" {
		return t.hosts[k]
	}
	if t.res != nil {
		for _, ip := range t.res.IPs(name) {
			if h := t.byIP[plain(ip)]; h != nil && h.name != "" {
				return h // the inventory names both: aliases of one host
			}
		}
	}
	if !create {
		return nil
	}
	h := t.newHost(key, name)
	if t.res != nil {
		for _, ip := range t.res.IPs(name) {
			t.addIP(h, ip)
		}
	}
	return h
}

func indexDot(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			return i
		}
	}
	return -1
}

// ipHost returns the host of address ip (creating an address-only host,
// or the inventory's named host, with create).
func (t *Tracker) ipHost(ip netip.Addr, create bool) *host {
	ip = plain(ip)
	if !ip.IsValid() {
		return nil
	}
	if h := t.byIP[ip]; h != nil {
		return h
	}
	if t.res != nil {
		if n := t.res.Name(ip); n != "" {
			if h := t.namedHost(n, create); h != nil {
				t.addIP(h, ip)
				return h
			}
		}
	}
	if !create {
		return nil
	}
	h := t.newHost(ip.String(), "")
	t.addIP(h, ip)
	return h
}

func (t *Tracker) newHost(key, name string) *host {
	if len(t.hosts) >= t.cfg.MaxHosts {
		t.evictHost()
	}
	key, name = keep(key, maxNameBytes), keep(name, maxNameBytes)
	h := &host{key: key, name: name}
	t.hosts[key] = h
	h.elem = t.lru.PushBack(h)
	if name != "" {
		if dot := indexDot(key); dot > 0 {
			s := key[:dot]
			if prev, ok := t.short[s]; ok && prev != key {
				t.short[s] = ""
			} else {
				t.short[s] = key
			}
		}
	}
	return h
}

// evictScan is how many of the least recently active hosts eviction looks
// at for one that knows nothing but traffic.
const evictScan = 64

// evictHost drops a host outside the inventory (counted), so a flood of
// addresses cannot grow the table: among the least recently active, one
// known only from traffic (no event, no clock sample) goes first, so
// spoofed knocks to random addresses evict each other, not a host whose
// events and clock coverage has learned.
func (t *Tracker) evictHost() {
	t.st.hostsCapHit++
	victim := t.lru.Front()
	i := 0
	for e := victim; e != nil && i < evictScan; e, i = e.Next(), i+1 {
		if h := e.Value.(*host); h.events == 0 && len(h.samples) == 0 {
			victim = e
			break
		}
	}
	if victim == nil {
		return
	}
	t.dropHost(victim.Value.(*host))
	t.st.evicted["hosts"]++
}

func (t *Tracker) dropHost(h *host) {
	if h.elem != nil {
		t.lru.Remove(h.elem)
		h.elem = nil
	}
	delete(t.hosts, h.key)
	for _, ip := range h.ips {
		if t.byIP[ip] == h {
			delete(t.byIP, ip)
		}
	}
}

// active marks h recently active (for eviction).
func (t *Tracker) active(h *host) {
	if h.elem != nil {
		t.lru.MoveToBack(h.elem)
	}
}

// addIP files ip under h. An address-only host of the same address is
// merged into h; an address another named host holds stays with it.
func (t *Tracker) addIP(h *host, ip netip.Addr) {
	ip = plain(ip)
	if !ip.IsValid() || ip.IsUnspecified() || ip.IsLoopback() || slices.Contains(h.ips, ip) {
		return
	}
	if o := t.byIP[ip]; o != nil && o != h {
		if o.name != "" {
			return
		}
		t.merge(h, o)
	}
	if len(h.ips) >= maxHostIPs {
		return
	}
	h.ips = append(h.ips, ip)
	t.byIP[ip] = h
}

// merge moves what the address-only host o knew into h and drops o.
func (t *Tracker) merge(h, o *host) {
	h.firstTraffic = minTime(h.firstTraffic, o.firstTraffic)
	h.lastTraffic = maxTime(h.lastTraffic, o.lastTraffic)
	h.lastAnswered = maxTime(h.lastAnswered, o.lastAnswered)
	h.recorded = h.recorded || o.recorded
	h.unanswered = append(h.unanswered, o.unanswered...)
	if n := len(h.unanswered) - maxUnanswered; n > 0 {
		h.unanswered = h.unanswered[n:]
	}
	h.lastReq = maxTime(h.lastReq, o.lastReq)
	h.reqUntil = maxTime(h.reqUntil, o.reqUntil)
	h.lastSample = maxTime(h.lastSample, o.lastSample)
	h.requests += o.requests
	h.answered += o.answered
	for _, ip := range o.trafficIPs {
		if !slices.Contains(h.trafficIPs, ip) && len(h.trafficIPs) < maxHostIPs {
			h.trafficIPs = append(h.trafficIPs, ip)
		}
	}
	t.dropHost(o)
}

func minTime(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// ObserveEvent takes one decoded Windows event (every kind: a connection
// is clock evidence, any event shows the host's channels work). It returns
// the clock changes it caused.
func (t *Tracker) ObserveEvent(ev Event) []ClockUpdate {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.st.events++
	var h *host
	if ev.Host != "" {
		h = t.namedHost(ev.Host, true)
	}
	for _, ip := range ev.HostIPs {
		if h == nil {
			h = t.ipHost(ip, true)
		}
		t.addIP(h, ip)
	}
	if h == nil {
		return nil
	}
	t.active(h)
	h.events++
	h.firstEvent = minTime(h.firstEvent, ev.Time)
	h.lastEvent = maxTime(h.lastEvent, ev.Time)
	c := &h.chans[channelClass(ev.Channel)]
	c.count++
	c.last = maxTime(c.last, ev.Time)
	if !ev.Arrival.IsZero() {
		c.lastArrival = maxTime(c.lastArrival, ev.Arrival)
		lag := ev.Arrival.Sub(ev.Time)
		if h.est.valid {
			lag += h.est.offset // the event's time on the sensor's clock
		}
		if len(h.lags) < maxLags {
			h.lags = append(h.lags, lag)
		} else {
			h.lags[h.lagPos] = lag
			h.lagPos = (h.lagPos + 1) % maxLags
		}
	}
	if ev.Conn == nil {
		return nil
	}
	t.st.connEvents++
	h.connEvents++
	return t.matchEvent(h, &ev)
}

// ObserveHandshake takes a HANDSHAKE record (a sample or a flagged
// source's) and returns the clock changes it caused.
func (t *Tracker) ObserveHandshake(hs Handshake) []ClockUpdate {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.st.handshakes++
	h := t.ipHost(hs.Dst, true)
	if h == nil {
		return nil
	}
	t.active(h)
	t.traffic(h, hs.Dst, hs.ACK)
	if !hs.SYNACK.IsZero() {
		h.lastAnswered = maxTime(h.lastAnswered, hs.ACK)
	}
	if hs.Sample {
		h.lastSample = maxTime(h.lastSample, hs.ACK)
		if !h.reqUntil.IsZero() {
			h.reqUntil = time.Time{}
			h.answered++
			t.st.requests["answered"]++
		}
	}
	return t.matchHandshake(&hs)
}

// traffic notes that the sensor reported traffic to h's address ip at at.
func (t *Tracker) traffic(h *host, ip netip.Addr, at time.Time) {
	h.recorded = true
	t.seen(h, ip, at)
}

// seen notes traffic to h's address ip at at.
func (t *Tracker) seen(h *host, ip netip.Addr, at time.Time) {
	h.firstTraffic = minTime(h.firstTraffic, at)
	h.lastTraffic = maxTime(h.lastTraffic, at)
	if ip = plain(ip); ip.IsValid() && !slices.Contains(h.trafficIPs, ip) && len(h.trafficIPs) < maxHostIPs {
		h.trafficIPs = append(h.trafficIPs, ip)
	}
}

// maxRequestIPs bounds the addresses one host's request covers.
const maxRequestIPs = 4

// requestIPs are the addresses a sample request of h goes to: those the
// sensor saw traffic to, else all of them (at most maxRequestIPs; a host
// known by an IPv4 and an IPv6 address is asked for on both).
func (h *host) requestIPs() []netip.Addr {
	ips := h.trafficIPs
	if len(ips) == 0 {
		ips = h.ips
	}
	if len(ips) > maxRequestIPs {
		ips = ips[:maxRequestIPs]
	}
	return ips
}

// ObserveKnock takes a KNOCK record: its host takes traffic, and its
// touches say whether SYNs to it are answered.
func (t *Tracker) ObserveKnock(k Knock) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.st.knocks++
	h := t.ipHost(k.Dst, true)
	if h == nil {
		return
	}
	t.active(h)
	for _, at := range k.Answered {
		t.traffic(h, k.Dst, at)
		h.lastAnswered = maxTime(h.lastAnswered, at)
	}
	for _, at := range k.Unanswered {
		t.traffic(h, k.Dst, at)
		ref := touchRef{plain(k.Src), at}
		if slices.Contains(h.unanswered, ref) {
			continue // a touch a later KNOCK of the pair repeats
		}
		h.unanswered = append(h.unanswered, ref)
	}
	if n := len(h.unanswered) - maxUnanswered; n > 0 {
		h.unanswered = h.unanswered[n:]
	}
}

// ObserveDestination takes a host the program saw SYNs go to (its
// syn_dsts table: hosts inside coverage.networks) with the time of its
// latest SYN: the host takes traffic, whether or not an event, a record
// or the inventory names it, so a host nobody forwards events from is
// listed (host_blind) instead of staying unseen.
func (t *Tracker) ObserveDestination(ip netip.Addr, lastSYN time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.st.dsts++
	if lastSYN.IsZero() {
		return
	}
	h := t.ipHost(ip, true)
	if h == nil {
		return
	}
	if lastSYN.After(h.lastTraffic) {
		t.active(h)
	}
	t.seen(h, ip, lastSYN)
}

// Blind reports whether knocks to dst cannot be trusted now, and why: the
// sensor sees one direction only ("one_way") or SYNs to dst are never
// answered ("no_answers"). A path that showed an answer within the host
// window is never blind.
func (t *Tracker) Blind(dst netip.Addr) (bool, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.byIP[plain(dst)]
	now := t.now
	if h != nil && !h.lastAnswered.IsZero() && (now.IsZero() || now.Sub(h.lastAnswered) <= t.cfg.HostWindow) {
		return false, ""
	}
	if t.net.sensor.state == StateOneWay {
		return true, "one_way"
	}
	if h != nil && t.hostNoAnswers(h) {
		return true, "no_answers"
	}
	return false, ""
}

// hostNoAnswers: enough unanswered touches within the host window and no
// answer in it.
func (t *Tracker) hostNoAnswers(h *host) bool {
	now := t.now
	if now.IsZero() {
		now = h.lastTraffic
	}
	n := 0
	for _, u := range h.unanswered {
		if now.Sub(u.at) <= t.cfg.HostWindow {
			n++
		}
	}
	if n < t.cfg.HostMinUnanswered {
		return false
	}
	return h.lastAnswered.IsZero() || now.Sub(h.lastAnswered) > t.cfg.HostWindow
}

// Tick moves the tracker to now (the sensor's time): expires what waited
// too long, asks s for samples of the hosts due for one (s may be nil)
// and returns the clock changes (samples that aged out).
func (t *Tracker) Tick(now time.Time, s Sampler) []ClockUpdate {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Before(t.now) {
		now = t.now
	}
	t.now = now
	if t.started.IsZero() {
		t.started = now
	}
	t.match.expire(t, now)
	var ups []ClockUpdate
	for _, h := range t.hosts {
		if !h.reqUntil.IsZero() && now.After(h.reqUntil) {
			h.reqUntil = time.Time{}
			t.st.requests["expired"]++
		}
		if len(h.samples) > 0 || h.pub != nil {
			ups = append(ups, t.estimate(h)...) // samples age out
		}
	}
	if s != nil {
		t.request(now, s)
	}
	return ups
}

// request asks for samples of the hosts due for one, those waiting the
// longest first, at most MaxRequests out at once.
func (t *Tracker) request(now time.Time, s Sampler) {
	out := 0
	var due []*host
	for _, h := range t.hosts {
		if !h.reqUntil.IsZero() {
			out += len(h.requestIPs())
			continue
		}
		if len(h.ips) == 0 {
			continue
		}
		every := t.cfg.RefreshInterval
		if h.lastSample.IsZero() || (h.connEvents > 0 && !h.est.valid) {
			every = t.cfg.SampleInterval
		}
		if h.lastReq.IsZero() || now.Sub(h.lastReq) >= every {
			due = append(due, h)
		}
	}
	slices.SortFunc(due, func(a, b *host) int {
		if c := a.lastReq.Compare(b.lastReq); c != 0 {
			return c
		}
		return compareStr(a.key, b.key)
	})
	for _, h := range due {
		ips := h.requestIPs()
		if out+len(ips) > t.cfg.MaxRequests {
			return
		}
		h.lastReq = now
		for _, ip := range ips {
			if err := s.RequestSample(ip, now.Add(t.cfg.SampleTTL)); err != nil {
				t.st.requests["failed"]++
				return // the table is full or the sensor gone: next tick
			}
		}
		t.st.requests["sent"]++
		h.requests++
		h.reqUntil = now.Add(t.cfg.SampleTTL)
		out += len(ips)
	}
}

func compareStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// NoteHeld counts a knock the pipeline held because its path is blind.
func (t *Tracker) NoteHeld() {
	t.mu.Lock()
	t.st.held++
	t.mu.Unlock()
}

// Stats is a snapshot of the counters and gauges, for metrics.
type Stats struct {
	Hosts      int
	HostsState map[string]int // by host state (HostStates)
	// ClockMeasured are hosts with a valid clock; LargestOffset the
	// largest |offset| among them.
	ClockMeasured int
	LargestOffset time.Duration
	// Interfaces by network state (InterfaceStates); Sensor is the
	// sensor-wide state.
	Interfaces map[string]int
	Sensor     string
	Samples    map[string]uint64 // matched connections by outcome
	Requests   map[string]uint64 // sample requests by outcome
	Evicted    map[string]uint64 // entries dropped at a bound, by table
	HostsCap   uint64            // times the host table was full
	Pending    map[string]int    // waiting for their match: connections, handshakes
	Events     uint64            // events observed
	ConnEvents uint64            // of them connection events
	Handshakes uint64
	Knocks     uint64
	// Destinations counts the hosts read from the program's table of SYN
	// destinations (one per host and reading).
	Destinations uint64
	// Held counts knocks the pipeline held for a blind path.
	Held uint64
}

// Stats returns a snapshot.
func (t *Tracker) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := Stats{Hosts: len(t.hosts), HostsState: map[string]int{}, Interfaces: map[string]int{},
		Samples: clone(t.st.samples), Requests: clone(t.st.requests), Evicted: clone(t.st.evicted),
		HostsCap: t.st.hostsCapHit, Events: t.st.events, ConnEvents: t.st.connEvents, Handshakes: t.st.handshakes,
		Knocks: t.st.knocks, Destinations: t.st.dsts, Held: t.st.held, Sensor: t.net.sensor.state,
		Pending: map[string]int{"connections": t.match.nConn, "handshakes": len(t.match.hs)}}
	for _, st := range HostStates {
		s.HostsState[st] = 0
	}
	for _, st := range InterfaceStates {
		s.Interfaces[st] = 0
	}
	for _, h := range t.hosts {
		s.HostsState[t.hostState(h)]++
		if h.est.valid && !h.est.beyond {
			s.ClockMeasured++
			s.LargestOffset = max(s.LargestOffset, absDur(h.est.offset))
		}
	}
	for _, ifc := range t.net.ifaces {
		s.Interfaces[ifc.verdict.state]++
	}
	if s.Sensor == "" {
		s.Sensor = StateUnknown
	}
	return s
}

func clone(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func (h *host) String() string { return fmt.Sprintf("%s%v", h.key, h.ips) }
