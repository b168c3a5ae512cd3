package winevents

import (
	"container/list"
	"hash/maphash"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// state is everything the Decoder remembers between records: recently seen
// record ids (duplicates) and, per host, what the joins need. Every table
// is an LRU with a cap; evictions are counted. One mutex guards it all:
// parsing happens outside the lock, only the short state step inside.
type state struct {
	mu     sync.Mutex
	opts   Options
	seen   *lru[dedupeKey, fingerprints]
	seed   maphash.Seed // content fingerprints; random, so collisions cannot be crafted
	hosts  *lru[string, *hostState]
	counts stateCounts
	// entries is the number of join-table entries over all hosts, kept
	// under opts.MaxJoinEntries by dropping the least recently active hosts.
	entries int
	// long holds the whole values of kept changes' cut strings, oldest
	// first; longBytes their size, under maxLongBytes (whole.go).
	long      *list.List
	longBytes int
}

// stateCounts are guarded by state.mu and copied into Stats.
type stateCounts struct {
	DedupeEvicted uint64
	// DedupeConflicts counts records whose key (computer, channel, record
	// id) was seen before with other content: processed, not dropped.
	DedupeConflicts uint64
	HostsEvicted    uint64
	JoinEvicted     uint64
	Joins           uint64
	Redundant       uint64
	PendingDropped  uint64
	// LongDropped counts whole values of cut strings dropped at the
	// budget (maxLongBytes): changes emitted again from them are cut.
	LongDropped uint64
}

type dedupeKey struct {
	host, channel string
	record        uint64
}

type hostState struct {
	rules     *lru[string, *ruleInfo]    // by lower-case RuleId
	names     *lru[string, *nameInfo]    // by rule name = 5447 FilterName
	filters   *lru[uint64, *filterInfo]  // by 5447 FilterId
	waiting   *lru[uint64, []keptChange] // listeners waiting for their FilterRTID
	listening *lru[uint32, struct{}]     // proto<<16 | port seen in 5154/5158
	ips       []netip.Addr               // learned local addresses (bounded)
	// stored counts the changes kept inside entries (4946/4947 pending
	// their filters, listeners waiting for theirs): each counts as an
	// entry, so MaxJoinEntries bounds the changes kept, not only the keys.
	stored int
}

// ruleInfo is the last known state of a rule.
type ruleInfo struct {
	fw     keptChange // last Firewall-channel change (haveFW)
	haveFW bool
	fwKind Kind // kind as first emitted for fw (to upgrade modified->enabled once)
	// fwSeen is the event time of the newest Firewall-channel record of
	// each operation (add, modify, delete): a Security record of the same
	// operation within JoinWindow of it is redundant.
	fwSeen [numOps]time.Time
	// sec is the newest Security 4946/4947/4948 of each operation that was
	// emitted on its own (nil: none); a Firewall-channel record of the same
	// operation arriving later replaces it (ExposureChange.Replaces).
	sec [numOps]*SourceRef
	// secName is the rule name the Security records gave (their pending
	// name-join entries are dropped when replaced).
	secName string
}

// Rule operations, for matching a Security 4946/4947/4948 with the
// Firewall-channel record of the same change (2004/2071/2097,
// 2005/2073/2099, 2006/2052).
const (
	opAdd = iota
	opModify
	opDelete
	numOps
)

// ruleOp returns the operation of a rule change kind, or -1.
func ruleOp(k Kind) int {
	switch k {
	case KindRuleAdded:
		return opAdd
	case KindRuleModified, KindRuleEnabled:
		return opModify
	case KindRuleDeleted:
		return opDelete
	}
	return -1
}

type filterInfo struct {
	name string
	src  SourceRef
}

const (
	maxPendingPerName = 8
	maxWaitingPerID   = 8
	maxLearnedIPs     = 16
)

func newState(o Options) *state {
	s := &state{opts: o, long: list.New()}
	s.seen = newLRU[dedupeKey, fingerprints](o.DedupeSize, &s.counts.DedupeEvicted)
	s.seed = maphash.MakeSeed()
	s.hosts = newLRU[string, *hostState](o.MaxHosts, &s.counts.HostsEvicted)
	s.hosts.onEvict = func(_ string, h *hostState) { s.entries -= h.size() }
	return s
}

// size is the number of join-table entries the host holds.
func (h *hostState) size() int {
	return h.rules.len() + h.names.len() + h.filters.len() + h.waiting.len() + h.listening.len() + h.stored
}

// account adds a host's growth to the total and, over the budget, drops
// the least recently active other hosts. One host's flood is bounded by
// its own per-host caps first, so it cannot push the others out unless
// many hosts flood at once.
func (s *state) account(h *hostState, before int) {
	s.entries += h.size() - before
	for s.entries > s.opts.MaxJoinEntries && s.hosts.len() > 1 {
		if old, ok := s.hosts.oldest(); ok && old == h {
			break
		}
		s.hosts.removeOldest()
	}
}

func (s *state) host(name string) *hostState {
	k := strings.ToLower(name)
	if h, ok := s.hosts.get(k); ok {
		return h
	}
	n := s.opts.MaxPerHost
	ev := &s.counts.JoinEvicted
	h := &hostState{
		rules:     newLRU[string, *ruleInfo](n, ev),
		names:     newLRU[string, *nameInfo](n, ev),
		filters:   newLRU[uint64, *filterInfo](n, ev),
		waiting:   newLRU[uint64, []keptChange](n, ev),
		listening: newLRU[uint32, struct{}](n, ev),
	}
	h.rules.onEvict = func(_ string, ri *ruleInfo) { s.release(ri.fw.long) }
	h.names.onEvict = func(_ string, ni *nameInfo) {
		h.stored -= len(ni.pending)
		for _, p := range ni.pending {
			s.release(p.c.long)
		}
	}
	h.waiting.onEvict = func(_ uint64, w []keptChange) {
		h.stored -= len(w)
		for _, l := range w {
			s.release(l.long)
		}
	}
	s.hosts.put(k, h)
	return h
}

// fingerprints are the content fingerprints seen under one record key
// (a few: the real record and what claimed its id).
type fingerprints struct {
	fp [maxFingerprints]uint64
	n  uint8
}

const maxFingerprints = 4

// contentFields are the EventData fields the semantics read: what a
// record means. Two copies of one record agree on them whatever format
// they were forwarded in.
var contentFields = [...]string{
	"RuleId", "RuleName", "Direction", "Protocol", "LocalPorts", "Action", "Active", "Profiles", "ApplicationPath",
	"ServiceName", "ModifyingUser", "ModifyingApplication", "EmbeddedContext", "SettingType", "SettingValue",
	"SettingValueDisplay", "SettingValueString", "ProfileChanged", "FilterId", "FilterName", "FilterRTID", "ChangeType",
	"LayerName", "Conditions", "ProcessId", "ProcessID", "Application", "SourceAddress", "SourcePort", "DestAddress",
	"DestPort", "SourceIp", "DestinationIp", "Initiated", "Image", "ImagePath", "StartType", "AccountName", "param1", "param2",
}

// fingerprint hashes what r says (event id, time and the content fields)
// with the state's random seed.
func (s *state) fingerprint(r *record) uint64 {
	var h maphash.Hash
	h.SetSeed(s.seed)
	var b [12]byte
	// Seconds: NXLog writes event times with one-second resolution.
	t := r.time.Unix()
	for i := range 8 {
		b[i] = byte(t >> (8 * i))
	}
	b[8], b[9], b[10], b[11] = byte(r.eventID), byte(r.eventID>>8), byte(r.eventID>>16), byte(r.eventID>>24)
	_, _ = h.Write(b[:])
	for _, f := range contentFields {
		_, _ = h.WriteString(r.get(f))
		_ = h.WriteByte(0)
	}
	return h.Sum64()
}

// duplicate records the key and content of r and reports whether the same
// record was seen already: the same (computer, channel, record id) and the
// same content. A record whose key was seen with other content is not a
// duplicate: one of the two was forged (or rewritten on the way), and
// dropping the later one would let a forged record that claims the next
// record id of a host make the real record vanish. It is processed and
// counted (DedupeConflicts). Records without a record id cannot be
// recognised and are never duplicates.
func (s *state) duplicate(r *record) bool {
	if r.recordID == 0 {
		return false
	}
	k := dedupeKey{strings.ToLower(r.computer), strings.ToLower(r.channel), r.recordID}
	fp := s.fingerprint(r)
	v, ok := s.seen.get(k)
	if ok {
		for _, x := range v.fp[:v.n] {
			if x == fp {
				return true
			}
		}
		s.counts.DedupeConflicts++
	}
	if int(v.n) == maxFingerprints {
		copy(v.fp[:], v.fp[1:])
		v.n--
	}
	v.fp[v.n] = fp
	v.n++
	s.seen.put(k, v)
	return false
}

func (h *hostState) learnIP(a netip.Addr) {
	if !a.IsValid() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() {
		return
	}
	for _, x := range h.ips {
		if x == a {
			return
		}
	}
	if len(h.ips) >= maxLearnedIPs {
		copy(h.ips, h.ips[1:])
		h.ips = h.ips[:len(h.ips)-1]
	}
	h.ips = append(h.ips, a)
}

func (h *hostState) isLocalIP(a netip.Addr, extra []netip.Addr) bool {
	for _, x := range extra {
		if x == a {
			return true
		}
	}
	for _, x := range h.ips {
		if x == a {
			return true
		}
	}
	return false
}

func within(a, b time.Time, w time.Duration) bool {
	d := a.Sub(b)
	if d < 0 {
		d = -d
	}
	return d <= w
}
