package correlate

import (
	"bytes"
	"fmt"
	"net/netip"
)

// Confidence of an alert.
type Confidence uint8

// Confidences, ordered.
const (
	ConfidenceNone Confidence = iota
	ConfidenceMedium
	ConfidenceHigh
)

// String returns "medium", "high" or "none".
func (c Confidence) String() string {
	switch c {
	case ConfidenceMedium:
		return "medium"
	case ConfidenceHigh:
		return "high"
	}
	return "none"
}

// Reasons a change does not open a port inbound, counted in
// Stats.ChangesIgnored.
const (
	IgnoredOutbound = "outbound"
	IgnoredBlock    = "block"
	IgnoredInactive = "inactive"
	IgnoredNotTCP   = "not_tcp"
	IgnoredDeleted  = "deleted"
	IgnoredService  = "service"
	IgnoredKind     = "unknown_kind"
)

// Reasons a handshake cannot alert, counted in Stats.NoAlert.
const (
	NoAlertOpenAllAlong = "open_all_along"
	NoAlertOtherFirst   = "other_first"
)

// opens reports whether the change can open a TCP port inbound, or why not.
// Whatever the kind, a change that says it is outbound or blocks opens
// nothing inbound.
func (r *rule) opens(c *ExposureChange) (ok bool, why string) {
	if c.Kind != ChangeRuleDeleted && c.Kind != ChangeFirewallDisabled {
		switch {
		case c.Direction == DirectionOutbound:
			return false, IgnoredOutbound
		case c.Action == ActionBlock:
			return false, IgnoredBlock
		}
	}
	switch c.Kind {
	case ChangeRuleAdded, ChangeRuleModified, ChangeRuleEnabled:
		switch {
		case c.Active == TriFalse:
			return false, IgnoredInactive
		case !c.Protocol.coversTCP():
			return false, IgnoredNotTCP
		}
		return true, ""
	case ChangeListener:
		if !c.Protocol.coversTCP() {
			return false, IgnoredNotTCP
		}
		return true, ""
	case ChangeFirewallDisabled:
		return true, ""
	case ChangeServiceStarted:
		if r.cfg.ServiceStartOpens {
			return true, ""
		}
		return false, IgnoredService
	case ChangeRuleDeleted:
		return false, IgnoredDeleted
	}
	return false, IgnoredKind
}

// names returns the confidence a change gives port p: high when it names
// the port (exactly, in a list, in a range, any port, or the firewall
// switched off), medium when it carries no port, none when it names other
// ports.
func names(c *ExposureChange, p uint16) Confidence {
	switch {
	case c.Kind == ChangeFirewallDisabled:
		return ConfidenceHigh
	case !c.Ports.Known():
		return ConfidenceMedium
	case c.Ports.Contains(p):
		return ConfidenceHigh
	}
	return ConfidenceNone
}

// outcome is a candidate match for one handshake.
type outcome struct {
	conf       Confidence
	suppressed string // suppression reason, "" if not suppressed
	knock      knockEnd
	change     *chg // nil for the network-only medium match
	// clocked: the change matched at its time corrected by its host's
	// measured clock (HostClock), not at its own.
	clocked bool
}

// rank orders outcomes: confidence first, then unsuppressed before
// suppressed. The engine only ever moves a handshake to a higher rank, so
// the final outcome is the best over all evidence whatever the order.
func (o outcome) rank() int {
	if o.conf == ConfidenceNone {
		return 0
	}
	r := int(o.conf) * 2
	if o.suppressed == "" {
		r++
	}
	return r
}

// better reports whether o should replace cur: a higher rank, or the same
// rank with evidence that sorts first (so that the choice does not depend
// on arrival order).
func (o outcome) better(cur outcome) bool {
	if o.rank() != cur.rank() {
		return o.rank() > cur.rank()
	}
	if o.knock.t != cur.knock.t {
		return o.knock.t > cur.knock.t
	}
	switch {
	case o.change == nil || cur.change == nil:
		// Evidence from a host event beats the network alone.
		return o.change != nil && cur.change == nil
	case o.change.t != cur.change.t:
		return o.change.t < cur.change.t
	}
	return lessKey(o.change.key, cur.change.key)
}

func lessKey(a, b changeKey) bool {
	if a.host != b.host {
		return a.host < b.host
	}
	if a.channel != b.channel {
		return a.channel < b.channel
	}
	if a.record != b.record {
		return a.record < b.record
	}
	return bytes.Compare(a.content[:], b.content[:]) < 0
}

// rule evaluates the AN0842 rule; all times are in ns.
type rule struct {
	cfg                                            Config
	window, after, skew, hsAfter, retention, total int64
}

func newRule(cfg Config) *rule {
	return &rule{
		cfg:       cfg,
		window:    int64(cfg.KnockWindow),
		after:     int64(cfg.ChangeAfter),
		skew:      int64(cfg.Skew),
		hsAfter:   int64(cfg.HandshakeAfter),
		retention: int64(cfg.Retention),
		total:     int64(cfg.ChangeAfter + cfg.HandshakeAfter),
	}
}

// portState says what the sensor's port-state observations allow for a
// knock ending at kEnd: "" if the port may have been opened after the
// knock, or the reason it cannot alert.
//
// Someone else was first only if another source completed a handshake
// (PortOtherDone) after the knock ended: a SYN-ACK alone proves nothing
// about who connected (it answers spoofed SYNs and the knocker's own
// half-open probes too). The port was open all along if it was seen open
// shortly before the knock ended (within recent: the knock window and the
// change delay) and not seen closed since. An older sighting is no
// evidence: a port a knock opened an hour ago and that closed unseen
// (nobody touched it while closed) opens anew for the knock's next use.
func portState(h *hsRec, kEnd, recent int64) string {
	if other := ns(h.h.PortOtherDone); other != 0 {
		if other > kEnd {
			return NoAlertOtherFirst
		}
		if kEnd-other <= recent {
			return NoAlertOpenAllAlong // someone else used it just before the knock ended
		}
	}
	first, last, closed := ns(h.h.PortFirstOpen), ns(h.h.PortLastOpen), ns(h.h.PortLastClosed)
	// The latest sighting of the port open no later than the knock's end.
	var o int64
	switch {
	case last != 0 && last <= kEnd:
		o = last
	case first != 0 && first <= kEnd:
		o = first
	}
	if o != 0 && kEnd-o <= recent && closed <= o {
		return NoAlertOpenAllAlong
	}
	return ""
}

// evaluate returns the best outcome for handshake h of pair p to host d
// with the changes of host hs, and the reason it cannot alert when no
// outcome exists.
// Stored changes older than cutoff (plus the skew) have expired and are
// ignored even if no sweep has removed them yet; arriving is the change
// being added now, which is evaluated however late it is.
func (r *rule) evaluate(sup *suppressor, cutoff int64, arriving *chg, src, dst netip.Addr, hostName func() string, p *pair, hst *host, h *hsRec) (best outcome, noAlert string) {
	if p.scan {
		return outcome{}, ""
	}
	port := h.h.Port
	allowed := sup.allowedSource(src)
	p.knockWindows(r.window, r.cfg.MinPorts, func(k knockEnd) bool {
		if k.t > h.syn {
			return true // a knock must end before the handshake starts
		}
		if why := portState(h, k.t, r.window+r.after); why != "" {
			if noAlert == "" {
				noAlert = why
			}
			return true
		}
		for _, c := range hst.changes {
			if c.latest()+r.skew < cutoff && c != arriving {
				continue
			}
			conf := names(&c.c, port)
			if conf == ConfidenceNone {
				continue
			}
			// The change's time on the sensor's clock (its host's
			// measured clock applied), and its own time: either may
			// match, so a measurement only ever adds a match.
			for i, ct := range c.times() {
				if ct < k.t-r.skew || ct > k.t+r.after || h.ack < ct-r.skew || h.ack > ct+r.hsAfter {
					continue
				}
				o := outcome{conf: conf, knock: k, change: c, clocked: i == 0 && c.clock != nil}
				switch {
				case allowed:
					o.suppressed = ReasonAllowedSource
				case sup.adminActor(&c.c):
					o.suppressed = ReasonAdminActor
				case sup.inWindow(dst, c.c.Host, ct):
					o.suppressed = ReasonChangeWindow
				}
				if o.better(best) {
					best = o
				}
				break
			}
		}
		// The network alone shows the port went from closed to open.
		closed, open := ns(h.h.PortLastClosed), ns(h.h.PortFirstOpen)
		if open == 0 {
			open = ns(h.h.PortLastOpen)
		}
		if h.ack > k.t && h.ack-k.t <= r.total && closed != 0 && closed <= h.syn &&
			h.syn-closed <= r.retention && (open == 0 || open < closed) {
			o := outcome{conf: ConfidenceMedium, knock: k}
			switch {
			case allowed:
				o.suppressed = ReasonAllowedSource
			case sup.inWindow(dst, hostName(), h.ack):
				o.suppressed = ReasonChangeWindow
			}
			if o.better(best) {
				best = o
			}
		}
		return true
	})
	if best.conf != ConfidenceNone {
		noAlert = ""
	}
	return best, noAlert
}

// contentKey fingerprints a change's content (part of every change key).
func contentKey(c *ExposureChange) string {
	return fmt.Sprintf("%d|%v|%d|%s|%d|%d|%d|%d|%s|%s|%s|%s|%s|%s|%d|%d",
		c.Time.UnixNano(), c.HostIPs, c.Kind, c.Ports.String(), c.Protocol, c.Direction, c.Action, c.Active,
		c.RuleID, c.RuleName, c.Application, c.Service, c.ModifyingUser, c.ModifyingApplication, c.ProcessID, c.EventID)
}
