package correlate

import "time"

// Evidence kinds, the keys of the per-kind counters in Stats.
const (
	evKnock     = "knock"
	evHandshake = "handshake"
	evChange    = "change"
)

// Indexes of the per-kind counter arrays.
const (
	iKnock = iota
	iHandshake
	iChange
	numKinds
)

var kindNames = [numKinds]string{evKnock, evHandshake, evChange}

// counters are the engine's counters, guarded by Engine.mu.
type counters struct {
	in, rejected, duplicates, late           [numKinds]uint64
	ignored, noAlert, suppressed             map[string]uint64
	alerts                                   [3]uint64
	upgrades, scans, scanEvidence, scanEnded uint64
	touchesDropped, unresolvedSeen           uint64
	replaced, updated, replacedResent        uint64
	clockUpdates, clockRefused, clocked      uint64
	capHits, evicted, expired                map[string]uint64
	evictReason                              map[string]map[string]uint64 // table -> reason
	topHosts, topOrigins                     *topK
}

func (c *counters) init() {
	for _, m := range []*map[string]uint64{&c.ignored, &c.noAlert, &c.suppressed, &c.capHits, &c.evicted, &c.expired} {
		*m = make(map[string]uint64)
	}
	// The tables are known from the start: their series exist at 0.
	for _, t := range []string{capPairs, capChanges, capHandshakes, capReplaced} {
		c.capHits[t], c.evicted[t], c.expired[t] = 0, 0, 0
	}
	c.evictReason = make(map[string]map[string]uint64)
	c.topHosts, c.topOrigins = newTopK(topOffenders), newTopK(topOffenders)
}

// Stats is a snapshot of the engine's state sizes and counters, in plain
// values (maps are copies), for the command layer to export as metrics.
// Maps keyed by evidence kind use "knock", "handshake" and "change"; cap
// maps use "pairs", "changes", "handshakes" and "replaced_records".
type Stats struct {
	Watermark time.Time

	// State sizes.
	Hosts             int
	Pairs             int
	Changes           int // stored changes, resolved or not
	UnresolvedChanges int // changes whose host is not in the inventory
	Handshakes        int

	// Evidence counters by kind.
	In         map[string]uint64 // accepted for processing
	Rejected   map[string]uint64 // invalid (missing address, time, port)
	Duplicates map[string]uint64 // the same record again: no effect
	Late       map[string]uint64 // older than watermark - retention on arrival
	// ChangesIgnored counts changes that cannot open a TCP port inbound,
	// by reason (outbound, block, inactive, not_tcp, deleted, service).
	ChangesIgnored map[string]uint64
	// ChangesUnresolved counts changes that arrived naming a host the
	// inventory did not know.
	ChangesUnresolved uint64
	// ChangesReplaced counts stored changes dropped for the change that
	// named them in Replaces; ChangesUpdated stored changes replaced by a
	// new version of the same record (a join completed later).
	ChangesReplaced, ChangesUpdated uint64
	// ReplacedResent counts changes dropped on arrival because a stored
	// change had replaced their record (the record sent again after its
	// replacement); ReplacedRecords is how many replaced records the
	// engine remembers for that (bounded by MaxChanges, table
	// "replaced_records" in CapHits, Evicted and Expired).
	ReplacedResent  uint64
	ReplacedRecords int

	// Outcomes.
	AlertsHigh   uint64 // handshakes that reached an unsuppressed high alert
	AlertsMedium uint64 // handshakes that reached an unsuppressed medium alert
	Upgrades     uint64 // records emitted with event.action "upgraded"
	Scans        uint64 // pairs found scanning (more than MaxPorts ports)
	ScanEvidence uint64 // evidence from pairs already known as scans
	ScanEnded    uint64 // scanners whose later knock began a new burst
	// Host clocks (SetHostClock): hosts with a measured clock now,
	// updates taken, updates refused (beyond MaxClockOffset, or the
	// table full), and alert records whose change matched only at its
	// time corrected by the host's clock.
	HostClocks                 int
	ClockUpdates, ClockRefused uint64
	AlertsClocked              uint64
	// Suppressed counts matches by suppression reason.
	Suppressed map[string]uint64
	// NoAlert counts handshakes that cannot alert by reason
	// (open_all_along, other_first).
	NoAlert map[string]uint64

	// Bounds.
	CapHits        map[string]uint64 // times a cap was reached
	Evicted        map[string]uint64 // entries evicted by a cap
	Expired        map[string]uint64 // entries dropped by retention
	TouchesDropped uint64            // oldest touches dropped by MaxTouchesPerPair
	// EvictedByReason splits Evicted by the class of what went, per
	// table: changes by EvictChange* ("unresolved", "no_knock", "spent",
	// "usable", "versions"), handshakes by EvictHandshake*, pairs by their class
	// ("scan", "partial", "knock", "knock_changed", "handshake",
	// "alerted"). Anything but the first classes growing means a flood
	// reached evidence the rule could use.
	EvictedByReason map[string]map[string]uint64

	// TopEvictedHosts and TopEvictedOrigins are the hosts (event host name
	// or address) and forwarders (ExposureChange.Origin) whose entries were
	// evicted most, heaviest first, at most 16 each: under a flood, the
	// offenders. Counts are upper bounds (a bounded heavy-hitter count).
	TopEvictedHosts   []KeyCount
	TopEvictedOrigins []KeyCount
}

// Stats returns a snapshot.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := Stats{
		Hosts:             len(e.st.hosts),
		Pairs:             e.st.nPairs,
		Changes:           len(e.st.changes),
		UnresolvedChanges: len(e.st.unresolved),
		Handshakes:        e.st.nHS,
		In:                byKind(&e.c.in),
		Rejected:          byKind(&e.c.rejected),
		Duplicates:        byKind(&e.c.duplicates),
		Late:              byKind(&e.c.late),
		ChangesIgnored:    clone(e.c.ignored),
		ChangesUnresolved: e.c.unresolvedSeen,
		ChangesReplaced:   e.c.replaced,
		ChangesUpdated:    e.c.updated,
		ReplacedResent:    e.c.replacedResent,
		ReplacedRecords:   len(e.st.replaced),
		AlertsHigh:        e.c.alerts[ConfidenceHigh],
		AlertsMedium:      e.c.alerts[ConfidenceMedium],
		Upgrades:          e.c.upgrades,
		Scans:             e.c.scans,
		ScanEvidence:      e.c.scanEvidence,
		ScanEnded:         e.c.scanEnded,
		HostClocks:        len(e.st.clocks),
		ClockUpdates:      e.c.clockUpdates,
		ClockRefused:      e.c.clockRefused,
		AlertsClocked:     e.c.clocked,
		Suppressed:        clone(e.c.suppressed),
		NoAlert:           clone(e.c.noAlert),
		CapHits:           clone(e.c.capHits),
		Evicted:           clone(e.c.evicted),
		Expired:           clone(e.c.expired),
		TouchesDropped:    e.c.touchesDropped,
		EvictedByReason:   make(map[string]map[string]uint64, len(e.c.evictReason)),
		TopEvictedHosts:   e.c.topHosts.top(),

		TopEvictedOrigins: e.c.topOrigins.top(),
	}
	for t, m := range e.c.evictReason {
		s.EvictedByReason[t] = clone(m)
	}
	if e.maxSensor != 0 {
		s.Watermark = time.Unix(0, e.wm()).UTC()
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

func byKind(a *[numKinds]uint64) map[string]uint64 {
	out := make(map[string]uint64, numKinds)
	for i, v := range a {
		out[kindNames[i]] = v
	}
	return out
}
