package winevents

import (
	"net/netip"
	"slices"
	"strings"
)

// apply interprets one relevant, non-duplicate record against the state
// and emits its changes. It is called with s.mu held.
func (s *state) apply(r *record, emit func(ExposureChange)) {
	h := s.host(r.computer)
	defer s.account(h, h.size())
	for _, a := range r.hostIPs {
		h.learnIP(a)
	}
	inner := emit
	emit = func(c ExposureChange) {
		// Give every change the host's known addresses: the sensor sees
		// addresses, the events name computers.
		if len(c.HostIPs) == 0 && len(h.ips) > 0 {
			c.HostIPs = append([]netip.Addr(nil), h.ips...)
		}
		inner(c)
	}
	switch classifyChannel(r.channel) {
	case clsFirewall:
		s.firewallEvent(h, r, emit)
	case clsSecurity:
		s.securityEvent(h, r, emit)
	case clsSystem:
		serviceEvent(r, emit)
	case clsSysmon:
		s.sysmonEvent(h, r, emit)
	}
}

func (s *state) firewallEvent(h *hostState, r *record, emit func(ExposureChange)) {
	c := baseChange(r)
	switch r.eventID {
	case 2004, 2071, 2097:
		c.Kind = KindRuleAdded
		ruleFields(r, &c)
		s.ruleChange(h, c, emit)
	case 2005, 2073, 2099:
		c.Kind = KindRuleModified
		ruleFields(r, &c)
		s.ruleChange(h, c, emit)
	case 2006, 2052:
		c.Kind = KindRuleDeleted
		c.RuleID, c.RuleName = r.get("RuleId"), r.get("RuleName")
		modifierFields(r, &c)
		key := strings.ToLower(c.RuleID)
		ri, ok := h.rules.get(key)
		if ok && ri.haveFW {
			last := ri.fw.whole()
			copyRuleShape(&c, &last)
			c.Joined = refPtr(ri.fw.Source)
		}
		if !ok {
			ri = &ruleInfo{}
			h.rules.put(key, ri)
		}
		s.replaceSecurity(h, ri, &c)
		if !ri.haveFW || !c.Time.Before(ri.fw.Time) {
			s.release(ri.fw.long)
			ri.fw, ri.haveFW, ri.fwKind = s.keep(c), true, c.Kind
		}
		emit(c)
	case 2033, 2059:
		c.Kind = KindRuleDeleted
		c.Ports = AnyPorts()
		c.Protocol = ProtoAny
		c.Setting = "all rules deleted"
		modifierFields(r, &c)
		emit(c)
	case 2003, 2082:
		value := r.get("SettingValueString")
		if value == "" {
			value = r.get("SettingValueDisplay")
		}
		if value == "" {
			value = r.get("SettingValue")
		}
		st := r.get("SettingType")
		if firewallSettingDisables(st, value) {
			c.Kind = KindFirewallDisabled
			disabledShape(&c, r.get("Profiles"), st, value)
			modifierFields(r, &c)
			emit(c)
		}
	}
}

func disabledShape(c *ExposureChange, profiles, setting, value string) {
	c.Ports = AnyPorts()
	c.Protocol = ProtoAny
	c.Direction = DirIn
	c.Action = ActionAllow
	c.Active = true
	c.Profiles = profilesText(profiles)
	c.Setting = strings.TrimSpace(setting) + " = " + strings.TrimSpace(value)
}

// copyRuleShape copies what a deletion or a port-less Security event does
// not carry from the rule's last known state.
func copyRuleShape(c, from *ExposureChange) {
	c.Ports, c.Protocol, c.Direction, c.Action = from.Ports, from.Protocol, from.Direction, from.Action
	c.Profiles, c.Application, c.Service = from.Profiles, from.Application, from.Service
	if c.RuleName == "" {
		c.RuleName = from.RuleName
	}
	if c.RuleGroup == "" {
		c.RuleGroup, c.AppPackageRule = from.RuleGroup, from.AppPackageRule
	}
}

func refPtr(r SourceRef) *SourceRef { return &r }

// ruleChange handles a Firewall-channel add or modify of a rule, in event
// time: a modify with Active=1 of a rule last seen inactive is an enable;
// an older record arriving after a newer one does not overwrite the state
// (and turns an already emitted "modified, active" into "enabled" when it
// shows the rule was inactive before).
func (s *state) ruleChange(h *hostState, c ExposureChange, emit func(ExposureChange)) {
	key := strings.ToLower(c.RuleID)
	ri, ok := h.rules.get(key)
	if !ok {
		ri = &ruleInfo{}
		h.rules.put(key, ri)
	}
	s.replaceSecurity(h, ri, &c)
	if ri.haveFW && c.Time.Before(ri.fw.Time) {
		emit(c)
		if !c.Active && ri.fw.Active && ri.fwKind == KindRuleModified && within(ri.fw.Time, c.Time, s.opts.JoinWindow) {
			// Emitted again with its whole values, not the kept cut.
			up := ri.fw.whole()
			up.Kind = KindRuleEnabled
			up.Joined = refPtr(c.Source)
			ri.fw.Kind, ri.fw.Joined, ri.fwKind = up.Kind, up.Joined, KindRuleEnabled
			s.counts.Joins++
			emit(up)
		}
		return
	}
	if c.Kind == KindRuleModified && c.Active && ri.haveFW && !ri.fw.Active && ri.fw.Kind != KindRuleDeleted {
		c.Kind = KindRuleEnabled
		c.Joined = refPtr(ri.fw.Source)
		s.counts.Joins++
	}
	s.release(ri.fw.long)
	ri.fw, ri.haveFW, ri.fwKind = s.keep(c), true, c.Kind
	emit(c)
}

// replaceSecurity is the Firewall-channel side of the join with Security
// 4946/4947/4948, which describe the same rule change without its ports.
// WEF does not order records across channels, so either may come first:
// the Firewall record first makes the Security one redundant (mpssvcRule);
// the Security record first was emitted on its own, and the Firewall
// record of the same operation within JoinWindow replaces it: c.Replaces
// names it, its pending name join is dropped (a late 5447 must not bring
// it back), and it is counted redundant, as in the other order. Either way
// one change remains, the Firewall record's.
func (s *state) replaceSecurity(h *hostState, ri *ruleInfo, c *ExposureChange) {
	op := ruleOp(c.Kind)
	if op < 0 {
		return
	}
	if c.Time.After(ri.fwSeen[op]) {
		ri.fwSeen[op] = c.Time
	}
	sec := ri.sec[op]
	if sec == nil || !within(sec.Time, c.Time, s.opts.JoinWindow) {
		return
	}
	ri.sec[op] = nil
	c.Replaces = sec
	s.counts.Redundant++
	if ni, ok := h.names.get(ri.secName); ok {
		ni.pending = slices.DeleteFunc(ni.pending, func(p pendingRule) bool {
			if p.c.Source == *sec {
				s.release(p.c.long)
				return true
			}
			return false
		})
	}
}

func (s *state) securityEvent(h *hostState, r *record, emit func(ExposureChange)) {
	switch r.eventID {
	case 4946, 4947, 4948:
		s.mpssvcRule(h, r, emit)
	case 4950:
		st, v := r.get("SettingType"), r.get("SettingValue")
		if firewallSettingDisables(st, v) {
			c := baseChange(r)
			c.Kind = KindFirewallDisabled
			disabledShape(&c, r.get("ProfileChanged"), st, v)
			emit(c)
		}
	case 5447:
		s.filterChange(h, r, emit)
	case 5154, 5158:
		s.listener(h, r, emit)
	case 5156:
		s.wfpConnection(h, r, emit)
	}
}

// mpssvcRule handles 4946/4947/4948, which name a rule but carry no port.
// When the Firewall channel already described the same rule (same RuleId,
// within JoinWindow) the Security record adds nothing and is counted as
// redundant. Otherwise it is emitted at once (without ports unless a 5447
// of the same name already gave them) and kept pending so that a later
// 5447 re-emits it with ports.
func (s *state) mpssvcRule(h *hostState, r *record, emit func(ExposureChange)) {
	c := baseChange(r)
	c.RuleID, c.RuleName = r.get("RuleId"), r.get("RuleName")
	c.Profiles = r.get("ProfileChanged")
	switch r.eventID {
	case 4946:
		c.Kind = KindRuleAdded
	case 4947:
		c.Kind = KindRuleModified
	default:
		c.Kind = KindRuleDeleted
	}
	key := strings.ToLower(c.RuleID)
	op := ruleOp(c.Kind)
	ri, ok := h.rules.get(key)
	if ok && !ri.fwSeen[op].IsZero() && within(ri.fwSeen[op], c.Time, s.opts.JoinWindow) {
		s.counts.Redundant++
		return
	}
	if !ok {
		ri = &ruleInfo{}
		h.rules.put(key, ri)
	}
	ri.sec[op], ri.secName = refPtr(c.Source), c.RuleName
	if c.Kind == KindRuleDeleted {
		if ri.haveFW {
			last := ri.fw.whole()
			copyRuleShape(&c, &last)
			c.Joined = refPtr(ri.fw.Source)
		} else if ni, ok := h.names.get(c.RuleName); ok {
			if b := ni.closestBatch(c.Time, s.opts.JoinWindow); b != nil {
				b.applyTo(&c)
				c.Active = false
				s.counts.Joins++
			}
		}
		emit(c)
		return
	}
	ni, ok := h.names.get(c.RuleName)
	if !ok {
		ni = &nameInfo{}
		h.names.put(c.RuleName, ni)
	}
	ni.addRule(c.RuleID, c.Time)
	p := pendingRule{c: s.keep(c)}
	if b := ni.closestBatch(c.Time, s.opts.JoinWindow); b != nil {
		joined := c
		b.applyTo(&joined)
		p.joined, p.dist, p.emitted = true, absDur(c.Time.Sub(b.time)), joined.Ports
		s.counts.Joins++
		emit(joined)
	} else {
		emit(c)
	}
	if len(ni.pending) >= maxPendingPerName {
		s.release(ni.pending[0].c.long)
		ni.pending = ni.pending[1:]
		h.stored--
		s.counts.PendingDropped++
	}
	ni.pending = append(ni.pending, p)
	h.stored++
}

// filterChange handles 5447. It never emits on its own: it remembers the
// filter (for 5154/5158 FilterRTID) and, for an added permit/block filter
// with a local-port condition, the ports of the rule of that name, giving
// them to pending 4946/4947 records and to waiting listeners.
func (s *state) filterChange(h *hostState, r *record, emit func(ExposureChange)) {
	name := r.get("FilterName")
	id, _ := parseUint(r.get("FilterId"), 64)
	src := r.source()
	change := strings.TrimSpace(r.get("ChangeType"))
	if change == codeChangeDelete {
		if id != 0 {
			h.filters.remove(id)
		}
		return
	}
	if id != 0 {
		h.filters.put(id, &filterInfo{name: name, src: src})
		if waiting, ok := h.waiting.get(id); ok {
			h.waiting.remove(id)
			h.stored -= len(waiting)
			for _, w := range waiting {
				l := w.whole()
				s.release(w.long)
				l.RuleName = name
				if ni, ok := h.names.get(name); ok {
					l.RuleID = ni.ruleIDAt(src.Time, s.opts.JoinWindow)
				}
				l.Joined = refPtr(src)
				s.counts.Joins++
				emit(l)
			}
		}
	}
	if change != "" && change != codeChangeAdd && !strings.EqualFold(change, "add") {
		return
	}
	if name == "" {
		return
	}
	layer := r.get("LayerName")
	action := strings.TrimSpace(r.get("Action"))
	ports, proto, ok := parseConditions(r.get("Conditions"))
	if !ok {
		// A permit or block filter of an inbound ALE layer without a
		// local-port condition (a program rule such as "allow python.exe")
		// applies to every port.
		if (action != codeActionPermit && action != codeActionBlock) || wfpLayerDirection(layer) != DirIn {
			return
		}
		ports = AnyPorts()
	}
	if proto == ProtoUnknown && strings.Contains(strings.ToLower(layer), "listen") {
		proto = ProtoTCP // the ALE listen layers see TCP only
	}
	ni, found := h.names.get(name)
	if !found {
		ni = &nameInfo{}
		h.names.put(name, ni)
	}
	fb := filterBatch{time: src.Time, ports: ports, proto: proto, dir: wfpLayerDirection(layer), src: src}
	switch action {
	case codeActionPermit:
		fb.action = ActionAllow
	case codeActionBlock:
		fb.action = ActionBlock
	}
	b := ni.addFilter(fb)
	kept := ni.pending[:0]
	for _, p := range ni.pending {
		if !within(p.c.Time, b.time, s.opts.JoinWindow) {
			s.release(p.c.long)
			continue
		}
		d := absDur(p.c.Time.Sub(b.time))
		if !p.joined || d < p.dist || (d == p.dist && !p.emitted.Covers(b.ports)) {
			c := p.c.whole()
			b.applyTo(&c)
			p.joined, p.dist, p.emitted = true, d, c.Ports
			s.counts.Joins++
			emit(c)
		}
		kept = append(kept, p)
	}
	h.stored -= len(ni.pending) - len(kept)
	ni.pending = kept
}

// listener handles 5154 (listen permitted) and 5158 (bind permitted).
func (s *state) listener(h *hostState, r *record, emit func(ExposureChange)) {
	port, ok := parsePortField(r.get("SourcePort"))
	if !ok || port == 0 {
		return
	}
	c := baseChange(r)
	c.Kind = KindListener
	c.Ports = SinglePort(port)
	c.Protocol = parseProtocol(r.get("Protocol"))
	c.Direction = DirIn
	c.Action = ActionAllow
	c.Active = true
	c.Application = r.get("Application")
	if pid, ok := parseUint(r.get("ProcessId"), 32); ok {
		c.ProcessID = uint32(pid)
	}
	c.LocalAddress = parseAddr(r.get("SourceAddress"))
	h.learnIP(c.LocalAddress)
	c.Layer = layerText(r.get("LayerName"))
	if c.Layer == "listen" || r.eventID == 5154 {
		h.listening.put(uint32(c.Protocol)<<16|uint32(port), struct{}{})
	}
	rtid, _ := parseUint(r.get("FilterRTID"), 64)
	c.FilterID = rtid
	if rtid != 0 {
		if f, ok := h.filters.get(rtid); ok {
			c.RuleName = f.name
			if ni, ok := h.names.get(f.name); ok {
				c.RuleID = ni.ruleIDAt(f.src.Time, s.opts.JoinWindow)
			}
			c.Joined = refPtr(f.src)
			s.counts.Joins++
		} else {
			w, _ := h.waiting.get(rtid)
			if len(w) >= maxWaitingPerID {
				s.release(w[0].long)
				w = w[1:]
				h.stored--
				s.counts.PendingDropped++
			}
			h.stored++
			h.waiting.put(rtid, append(w, s.keep(c)))
		}
	}
	emit(c)
}
