package winevents

import "time"

// The name join: Security 4946/4947/4948 name a rule (RuleId, RuleName)
// but carry no port; the WFP filters the firewall service adds for that
// rule (5447, FilterName = RuleName) carry the ports and protocol as
// conditions. Two rules may share a name (the "allow python.exe" prompt
// adds a TCP and a UDP rule), so filters are grouped in batches (added
// within batchGap of each other) and a rule is joined with the batch
// closest to it in event time, within JoinWindow.

const (
	batchGap          = 20 * time.Millisecond
	maxBatchesPerName = 8
	maxRulesPerName   = 8
)

// nameInfo is the join state of one rule name on one host.
type nameInfo struct {
	batches []filterBatch
	rules   []ruleRef
	pending []pendingRule
}

type filterBatch struct {
	time   time.Time
	ports  PortSet
	proto  Protocol
	action Action
	dir    Direction
	src    SourceRef // the first filter of the batch
}

type ruleRef struct {
	id   string
	time time.Time
}

// pendingRule is a 4946/4947 emitted before (or without) its filters.
type pendingRule struct {
	c       keptChange
	joined  bool
	dist    time.Duration // distance to the batch it was joined with
	emitted PortSet
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// addFilter merges a filter into its batch (or starts one) and returns it.
func (n *nameInfo) addFilter(f filterBatch) *filterBatch {
	for i := range n.batches {
		b := &n.batches[i]
		if absDur(b.time.Sub(f.time)) <= batchGap {
			b.ports = b.ports.Union(f.ports)
			if f.proto != ProtoUnknown {
				b.proto = f.proto
			}
			if f.action != "" {
				b.action = f.action
			}
			if f.dir != "" && b.dir == "" {
				b.dir = f.dir
			}
			return b
		}
	}
	if len(n.batches) >= maxBatchesPerName {
		n.batches = n.batches[1:]
	}
	n.batches = append(n.batches, f)
	return &n.batches[len(n.batches)-1]
}

// closestBatch returns the batch nearest to t within w, or nil.
func (n *nameInfo) closestBatch(t time.Time, w time.Duration) *filterBatch {
	var best *filterBatch
	for i := range n.batches {
		b := &n.batches[i]
		d := absDur(b.time.Sub(t))
		if d > w {
			continue
		}
		if best == nil || d < absDur(best.time.Sub(t)) {
			best = b
		}
	}
	return best
}

func (n *nameInfo) addRule(id string, t time.Time) {
	if len(n.rules) >= maxRulesPerName {
		n.rules = n.rules[1:]
	}
	n.rules = append(n.rules, ruleRef{id, t})
}

// ruleIDAt returns the id of the rule of this name nearest to t within w.
func (n *nameInfo) ruleIDAt(t time.Time, w time.Duration) string {
	best, bestD := "", w+1
	for _, r := range n.rules {
		if d := absDur(r.time.Sub(t)); d <= w && d < bestD {
			best, bestD = r.id, d
		}
	}
	return best
}

// applyTo gives a port-less rule change the ports of the batch.
func (b *filterBatch) applyTo(c *ExposureChange) {
	c.Ports = b.ports
	c.Protocol = b.proto
	if c.Protocol == ProtoUnknown {
		c.Protocol = ProtoAny
	}
	if b.action != "" {
		c.Action = b.action
	}
	if b.dir != "" {
		c.Direction = b.dir
	}
	c.Active = true // WFP filters exist only for enabled rules
	c.Joined = refPtr(b.src)
}
