package correlate

import (
	"crypto/sha256"
	"hash/maphash"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// touch is Touch packed into 16 bytes.
type touch struct {
	t    int64
	port uint16
	kind TouchKind
}

// pair is the state of one (source, destination) pair. Its size matters:
// with a 3-touch knock a pair costs its share of the table (16 bytes plus
// the table's slack) and this struct (160 bytes, the touches inline).
type pair struct {
	touches    []touch  // sorted by (t, port), no duplicates
	hs         []*hsRec // handshakes of the source to the destination
	prev, next *pair    // the pair's eviction-class list (lru.go)
	coll       *pair    // next pair with the same table hash
	h          *host
	src        netip.Addr
	last       int64 // newest sensor event time of the pair's evidence
	// sensorDistinct is the largest distinct-closed-port count the sensor
	// reported for the pair (saturating).
	sensorDistinct uint8
	scan           bool
	// scanLast is the newest event time of scan evidence: a KNOCK whose
	// touches start a window later begins a new burst (engine.go).
	scanLast int64
	class    uint8 // eviction class, see lru.go
	knocked  bool  // the touches hold a valid knock window
	changed  bool  // a change on the host fits one of its knock windows
	alerted  bool  // one of its handshakes has an outcome
	hsIdx    int32 // 1 + index in h.hsPairs; 0 when not listed
	// inline holds the touches of a typical knock without a second
	// allocation; touches points into it until it outgrows it.
	inline [3]touch
}

// hsRec is a handshake and what the engine decided about it.
type hsRec struct {
	h        Handshake
	ack, syn int64
	best     outcome // best outcome so far (zero: none)
	emitted  bool    // a record with this alert id was emitted
	noAlert  string  // why it cannot alert (counted once), if known
}

// chg is a stored exposure change.
type chg struct {
	c ExposureChange
	// t is the change's time on the sensor's clock: its event time (raw)
	// corrected by its host's measured clock (clock), or raw without one.
	t, raw int64
	clock  *HostClock
	key    changeKey
	ips    []netip.Addr // resolved destination addresses; empty = unresolved
	// hosts are the hosts the change is filed under (one per address); a
	// host with changes is never dropped, so these stay valid.
	hosts []*host
	gone  bool // dropped; still in state.changeQ until popped
	// seq is the change's arrival number (eviction keeps what arrived
	// first among changes a knock can use).
	seq uint64
}

// changeKey identifies a stored change: its Windows record (host, channel,
// record id) and its content, so that two records claiming one id are two
// changes.
type changeKey struct {
	host    string
	channel string
	record  uint64
	content [sha256.Size]byte // of contentKey: bounded whatever the strings
}

// recordRef identifies a Windows record whatever its content: the stored
// changes that claim it are the versions of one record (state.byRecord).
type recordRef struct {
	host    string
	channel string
	record  uint64
}

func (k changeKey) ref() recordRef {
	return recordRef{host: k.host, channel: k.channel, record: k.record}
}

// refines reports whether n is a later version of the stored change o of
// the same record, as winevents emits one when the partner of a join
// arrives: n says everything o says (same time; every field o has is
// equal in n, a field o lacks may be set) and more. The one other change
// a version may make is a modified rule found to be an enable. A record
// whose content contradicts the stored one does not refine it.
func refines(n, o *ExposureChange) bool {
	if !n.Time.Equal(o.Time) {
		return false
	}
	kindOK := o.Kind == n.Kind || o.Kind == 0 || (o.Kind == ChangeRuleModified && n.Kind == ChangeRuleEnabled)
	if !kindOK || !zeroOrEq(o.Protocol, n.Protocol) || !zeroOrEq(o.Direction, n.Direction) ||
		!zeroOrEq(o.Action, n.Action) || !zeroOrEq(o.Active, n.Active) || !zeroOrEq(o.ProcessID, n.ProcessID) ||
		!zeroOrEq(o.EventID, n.EventID) {
		return false
	}
	// o's strings were cut when it was stored: compare n's cut the same way.
	for _, f := range [][2]string{{o.RuleID, n.RuleID}, {o.RuleName, n.RuleName}, {o.Application, n.Application},
		{o.Service, n.Service}, {o.ModifyingUser, n.ModifyingUser}, {o.ModifyingApplication, n.ModifyingApplication}} {
		if f[0] != "" && f[0] != clampField(f[1], maxKeptBytes) {
			return false
		}
	}
	if len(o.Ports.Ranges) > 0 &&
		o.Ports.String() != (PortSet{Ranges: boundRanges(slices.Clone(n.Ports.Ranges), maxKeptRanges)}).String() {
		return false
	}
	for _, ip := range o.HostIPs {
		if !slices.Contains(n.HostIPs, ip) {
			return false
		}
	}
	return true
}

func zeroOrEq[T comparable](o, n T) bool {
	var zero T
	return o == zero || o == n
}

// replacedRecord is a record a change replaced: the rule it described
// (the replacing change's RuleID, cut as stored), its event id (0: any),
// and the replacing change's time (unix ns), for expiry.
type replacedRecord struct {
	ruleID  string
	eventID uint32
	t       int64
	seq     uint64
}

type replacedEntry struct {
	ref recordRef
	seq uint64
}

// covers reports whether c, a change of r's record, is the record a
// stored change replaced: the same rule and event id, so that a record id
// alone can never make another rule's change vanish.
func (r replacedRecord) covers(c *ExposureChange) bool {
	return (r.eventID == 0 || c.EventID == r.eventID) && strings.EqualFold(clampField(c.RuleID, maxKeptBytes), r.ruleID)
}

// replaceable reports whether the stored change o is one that n, naming
// o's record in Replaces, supersedes: a port-less record of the same rule
// (winevents names only a Security 4946/4947/4948 of the same RuleId), so
// that a change can never drop evidence of another rule.
func replaceable(o *chg, n *ExposureChange, r *ChangeRef) bool {
	return (r.EventID == 0 || o.c.EventID == r.EventID) &&
		strings.EqualFold(o.c.RuleID, clampField(n.RuleID, maxKeptBytes))
}

// keyOf returns the change's key: the record's identity and its content,
// so that a forged record that claims the id of a real one (or the real
// one after a forgery) is not taken for a duplicate.
func keyOf(c *ExposureChange) changeKey {
	host := normName(c.Host)
	if host == "" && len(c.HostIPs) > 0 {
		host = c.HostIPs[0].String()
	}
	return changeKey{host: clampField(host, maxKeptBytes), channel: clampField(c.Channel, maxKeptBytes), record: c.RecordID,
		content: sha256.Sum256([]byte(contentKey(c)))}
}

// maxKeptBytes bounds every string of a stored change: a forwarder could
// otherwise make each of the MaxChanges stored changes as large as an
// event (1 MiB). The key is computed from the whole values first.
const maxKeptBytes = 512

// truncatedMark ends a value cut at maxKeptBytes ('<' and '>' cannot be in
// a Windows path: a cut path never matches an admin application).
const truncatedMark = "<truncated>"

func clampField(v string, max int) string {
	if len(v) <= max {
		return v
	}
	cut := max - len(truncatedMark)
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return v[:cut] + truncatedMark
}

// clampChange bounds the strings of a change the engine stores.
func clampChange(c *ExposureChange) {
	for _, f := range []*string{&c.Host, &c.RuleID, &c.RuleName, &c.Application, &c.Service, &c.ModifyingUser,
		&c.ModifyingApplication, &c.Channel, &c.Origin} {
		*f = clampField(*f, maxKeptBytes)
	}
	if len(c.HostIPs) > maxKeptIPs {
		c.HostIPs = c.HostIPs[:maxKeptIPs]
	}
	c.Ports.Ranges = boundRanges(c.Ports.Ranges, maxKeptRanges)
}

// maxKeptRanges bounds the port ranges a stored change keeps.
const maxKeptRanges = 256

// boundRanges returns at most max ranges covering rs: beyond it, the
// ranges separated by the smallest gaps are merged. The result names more
// ports, never fewer, so no port the change opens is lost.
func boundRanges(rs []PortRange, max int) []PortRange {
	if len(rs) <= max {
		return rs
	}
	slices.SortFunc(rs, func(a, b PortRange) int { return int(a.Lo) - int(b.Lo) })
	merged := rs[:0]
	for _, r := range rs {
		if n := len(merged); n > 0 && int(r.Lo) <= int(merged[n-1].Hi)+1 {
			merged[n-1].Hi = maxU16(merged[n-1].Hi, r.Hi)
			continue
		}
		merged = append(merged, r)
	}
	for len(merged) > max {
		// Merge every gap no larger than the smallest one until it fits.
		smallest := -1
		for i := 1; i < len(merged); i++ {
			if g := int(merged[i].Lo) - int(merged[i-1].Hi); smallest < 0 || g < smallest {
				smallest = g
			}
		}
		out := merged[:1]
		for _, r := range merged[1:] {
			n := len(out)
			if int(r.Lo)-int(out[n-1].Hi) <= smallest {
				out[n-1].Hi = maxU16(out[n-1].Hi, r.Hi)
				continue
			}
			out = append(out, r)
		}
		merged = out
	}
	return merged
}

func maxU16(a, b uint16) uint16 {
	if a > b {
		return a
	}
	return b
}

// maxKeptIPs bounds the addresses a stored change keeps (winevents sends
// at most 16).
const maxKeptIPs = 16

// host is the state of one destination address: everything is keyed by
// it, so that the engine can be partitioned by host.
type host struct {
	dst    netip.Addr
	npairs int
	// hsPairs are the host's pairs that hold handshakes: the only ones a
	// change arriving for the host can complete.
	hsPairs []*pair
	changes []*chg
	// knockIv are the event-time intervals in which a change completes a
	// knock of one of the host's pairs ([end - skew, end + change-after]
	// for every knock end), merged and sorted, newest last; the change
	// eviction order uses them.
	knockIv []interval
}

// interval is a closed range of event times (ns).
type interval struct{ lo, hi int64 }

// maxKnockIntervals bounds host.knockIv. Knock ends are sensor times
// within the retention, so the merged intervals of a host rarely number
// more than retention / change-after; beyond the bound the oldest go.
const maxKnockIntervals = 64

// addKnockInterval merges [lo, hi] into h.knockIv and drops intervals
// that end before stale.
func (h *host) addKnockInterval(lo, hi, stale int64) {
	iv := h.knockIv
	if len(iv) > 0 && iv[0].hi < stale {
		iv = slices.DeleteFunc(iv, func(x interval) bool { return x.hi < stale })
	}
	i, _ := slices.BinarySearchFunc(iv, lo, func(x interval, t int64) int {
		switch {
		case x.lo < t:
			return -1
		case x.lo > t:
			return 1
		}
		return 0
	})
	iv = slices.Insert(iv, i, interval{lo, hi})
	// Merge around i.
	out := iv[:0]
	for _, x := range iv {
		if n := len(out); n > 0 && x.lo <= out[n-1].hi {
			out[n-1].hi = max(out[n-1].hi, x.hi)
			continue
		}
		out = append(out, x)
	}
	if len(out) > maxKnockIntervals {
		out = slices.Delete(out, 0, len(out)-maxKnockIntervals)
	}
	h.knockIv = out
}

// knockFits reports whether a change at t falls in one of the host's
// knock intervals.
func (h *host) knockFits(t int64) bool {
	for i := len(h.knockIv) - 1; i >= 0; i-- {
		x := h.knockIv[i]
		if t >= x.lo && t <= x.hi {
			return true
		}
	}
	return false
}

// syncHS keeps p listed in its host's hsPairs exactly while it holds
// handshakes.
func (s *state) syncHS(p *pair) {
	h := p.h
	switch {
	case len(p.hs) > 0 && p.hsIdx == 0:
		h.hsPairs = append(h.hsPairs, p)
		p.hsIdx = int32(len(h.hsPairs))
	case len(p.hs) == 0 && p.hsIdx > 0:
		i, last := p.hsIdx-1, len(h.hsPairs)-1
		h.hsPairs[i] = h.hsPairs[last]
		h.hsPairs[i].hsIdx = i + 1
		h.hsPairs[last] = nil
		h.hsPairs = h.hsPairs[:last]
		p.hsIdx = 0
	}
}

// addrKey is a host map key that hashes as plain bytes (netip.Addr
// carries a zone handle).
type addrKey [16]byte

// pairHash hashes (destination, source) with the state's random seed: the
// pair table is keyed by it (a uint64 map is markedly cheaper than one
// keyed by 32 bytes), colliding pairs are chained through pair.coll, and
// the seed keeps collisions out of an attacker's control.
func (s *state) pairHash(dst, src netip.Addr) uint64 {
	if s.testHash != nil {
		return s.testHash(dst, src)
	}
	var k [32]byte
	d, a := dst.As16(), src.As16()
	copy(k[:16], d[:])
	copy(k[16:], a[:])
	return maphash.Comparable(s.seed, k)
}

// lookup returns the pair (src, dst) or nil, and the pair's hash.
func (s *state) lookup(dst, src netip.Addr) (*pair, uint64) {
	k := s.pairHash(dst, src)
	for p := s.pairs[k]; p != nil; p = p.coll {
		if p.src == src && p.h.dst == dst {
			return p, k
		}
	}
	return nil, k
}

// eachPair calls fn for every pair; fn may drop the pair.
func (s *state) eachPair(fn func(*pair)) {
	for _, head := range s.pairs {
		for p := head; p != nil; {
			next := p.coll
			fn(p)
			p = next
		}
	}
}

// state is the engine's whole table.
type state struct {
	hosts    map[addrKey]*host
	pairs    map[uint64]*pair // by pairHash, chained through pair.coll
	seed     maphash.Seed
	testHash func(dst, src netip.Addr) uint64 // tests force collisions
	changes  map[changeKey]*chg               // every stored change, for duplicates
	byRecord map[recordRef][]*chg             // stored changes with a record id, by record (versions)
	// replaced remembers the records stored changes replaced (Replaces),
	// so that such a record arriving again is not kept beside its
	// replacement; replacedQ holds them in arrival order for expiry and
	// the bound (MaxChanges).
	replaced   map[recordRef]replacedRecord
	replacedQ  []replacedEntry
	replSeq    uint64
	unresolved []*chg
	changeQ    []*chg // stored changes in arrival order, for expiry
	changeSeq  uint64 // arrivals so far (chg.seq)
	nPairs     int
	nHS        int
	classes    [numClasses]pair // list heads, see lru.go
	// clocks are the hosts' measured clocks by address (SetHostClock).
	clocks map[addrKey]*HostClock
}

func newState() *state {
	s := &state{hosts: make(map[addrKey]*host), pairs: make(map[uint64]*pair), changes: make(map[changeKey]*chg),
		byRecord: make(map[recordRef][]*chg), replaced: make(map[recordRef]replacedRecord), seed: maphash.MakeSeed(),
		clocks: make(map[addrKey]*HostClock)}
	for i := range s.classes {
		s.classes[i].prev, s.classes[i].next = &s.classes[i], &s.classes[i]
	}
	return s
}

func (s *state) host(d netip.Addr, create bool) *host {
	h := s.hosts[d.As16()]
	if h == nil && create {
		h = &host{dst: d}
		s.hosts[d.As16()] = h
	}
	return h
}

// addPair links a new pair with hash k into the table and its host.
func (s *state) addPair(h *host, p *pair, k uint64) {
	p.coll = s.pairs[k]
	s.pairs[k] = p
	h.npairs++
	s.nPairs++
}

// removePair unlinks p from the table and its host.
func (s *state) removePair(p *pair) {
	h := p.h
	k := s.pairHash(h.dst, p.src)
	if head := s.pairs[k]; head == p {
		if p.coll != nil {
			s.pairs[k] = p.coll
		} else {
			delete(s.pairs, k)
		}
	} else {
		for q := head; q != nil; q = q.coll {
			if q.coll == p {
				q.coll = p.coll
				break
			}
		}
	}
	p.coll = nil
	if p.hsIdx > 0 {
		hs := p.hs
		p.hs = nil
		s.syncHS(p)
		p.hs = hs
	}
	h.npairs--
	s.nPairs--
}

// mergeTouches adds touches to p keeping them sorted and unique; it
// returns how many were new and how many were dropped by the cap (the
// oldest go first).
func (p *pair) mergeTouches(ts []Touch, max int) (added, dropped int) {
	if len(p.touches) == 0 {
		// The common case, a new pair: no allocation for a short knock,
		// then sort.
		if len(ts) <= len(p.inline) {
			p.touches = p.inline[:0]
		} else {
			p.touches = make([]touch, 0, len(ts))
		}
		for _, t := range ts {
			n := touch{t: t.Time.UnixNano(), port: t.Port, kind: t.Kind}
			p.touches = append(p.touches, n)
			p.last = maxInt64(p.last, n.t)
		}
		if !slices.IsSortedFunc(p.touches, cmpTouch) {
			slices.SortStableFunc(p.touches, cmpTouch)
		}
		p.touches = slices.CompactFunc(p.touches, func(a, b touch) bool { return cmpTouch(a, b) == 0 })
		added = len(p.touches)
		if over := len(p.touches) - max; over > 0 {
			p.touches = slices.Delete(p.touches, 0, over)
			dropped = over
		}
		return added, dropped
	}
	p.touches = slices.Grow(p.touches, len(ts))
	for _, t := range ts {
		n := touch{t: t.Time.UnixNano(), port: t.Port, kind: t.Kind}
		i, found := slices.BinarySearchFunc(p.touches, n, cmpTouch)
		if found {
			continue
		}
		p.touches = slices.Insert(p.touches, i, n)
		added++
		if n.t > p.last {
			p.last = n.t
		}
	}
	if over := len(p.touches) - max; over > 0 {
		p.touches = slices.Delete(p.touches, 0, over)
		dropped = over
	}
	return added, dropped
}

func cmpTouch(a, b touch) int {
	switch {
	case a.t < b.t:
		return -1
	case a.t > b.t:
		return 1
	}
	return int(a.port) - int(b.port)
}

// knockEnd is a touch that ends a valid knock window.
type knockEnd struct {
	t        int64
	first    int // index of the window's first touch
	last     int // index of the ending touch
	distinct int
}

// knockWindows calls fn for every touch that ends a window of at most
// window ns holding at least min distinct ports, latest first, and returns
// the largest distinct count of any window (for scan detection).
func (p *pair) knockWindows(window int64, min int, fn func(knockEnd) bool) (maxDistinct int) {
	var seen [64]uint16
	stop := false
	for i := len(p.touches) - 1; i >= 0; i-- {
		end := p.touches[i].t
		n, first := 0, i
		for j := i; j >= 0 && end-p.touches[j].t <= window; j-- {
			first = j
			port := p.touches[j].port
			dup := false
			for _, s := range seen[:min2(n, len(seen))] {
				if s == port {
					dup = true
					break
				}
			}
			if !dup {
				if n < len(seen) {
					seen[n] = port
				}
				n++
			}
		}
		if n > maxDistinct {
			maxDistinct = n
		}
		if !stop && n >= min && fn != nil {
			stop = !fn(knockEnd{t: end, first: first, last: i, distinct: n})
		}
	}
	return maxDistinct
}

func maxInt64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

func min2(a, b int) int {
	if a < b {
		return a
	}
	return b
}

func ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
