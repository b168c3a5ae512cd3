package coverage

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Host states, worst first (a host is in the worst that applies).
const (
	// HostNetworkBlind: SYNs to the host are never answered in the capture.
	HostNetworkBlind = "network_blind"
	// HostBlind: the host takes traffic but sends no events (or its
	// channels went quiet): no high alert is possible.
	HostBlind = "host_blind"
	// HostClockUnverified: the host sends events, but its clock could not
	// be measured: alerts assume it within rule.skew.
	HostClockUnverified = "clock_unverified"
	// HostDegraded: covered, with a problem worth fixing (a large event
	// lag, conflicting connection events, a clock beyond the bound).
	HostDegraded = "degraded"
	// HostCovered: events flow, and the clock is measured.
	HostCovered = "covered"
	// HostUnseen: no event of the host seen, and no verdict yet (an
	// inventory host nothing was seen of, or traffic for less than
	// no_events_after).
	HostUnseen = "unseen"
)

// HostStates lists the host states, worst first.
var HostStates = []string{HostNetworkBlind, HostBlind, HostClockUnverified, HostDegraded, HostCovered, HostUnseen}

// Finding kinds (docs/COVERAGE.md has one section each).
const (
	FindHostNoEvents     = "host_no_events"
	FindChannelQuiet     = "host_channel_quiet"
	FindClockUnverified  = "clock_unverified"
	FindClockOffset      = "clock_offset"
	FindClockBeyondBound = "clock_beyond_bound"
	FindClockConflicts   = "clock_conflicts"
	FindEventLag         = "event_lag"
	FindHostNoAnswers    = "host_no_answers"
	FindOneWay           = "one_way"
	FindAnswersOnly      = "answers_without_syns"
)

// Severities of findings.
const (
	SevCritical = "critical" // the rule cannot alert (high) for what this covers
	SevWarning  = "warning"  // it can, with less certainty than it should
	SevInfo     = "info"     // worth knowing; handled
)

// Finding is one thing the sensor cannot see, or assumes, with the fix.
type Finding struct {
	Kind      string     `json:"kind"`
	Severity  string     `json:"severity"`
	Host      string     `json:"host,omitempty"`
	IPs       []string   `json:"ips,omitempty"`
	Interface string     `json:"interface,omitempty"`
	Since     *time.Time `json:"since,omitempty"`
	// Missing says what the sensor is missing (or assuming); Fix what to
	// do about it.
	Missing  string         `json:"missing"`
	Fix      string         `json:"fix"`
	Evidence map[string]any `json:"evidence,omitempty"`
}

// Report is the coverage as of one moment: GET /v1/coverage, `knockwatch
// coverage --format json`, `knockwatch replay --coverage`.
type Report struct {
	// Generated is the sensor time of the report (the capture's time in a
	// replay). Final: a replay's report, the recording is all there is
	// (nothing is "not yet").
	Generated  time.Time    `json:"generated"`
	Final      bool         `json:"final"`
	Summary    Summary      `json:"summary"`
	Findings   []Finding    `json:"findings"`
	Hosts      []HostReport `json:"hosts"`
	Sensor     PathReport   `json:"sensor"`
	Interfaces []PathReport `json:"interfaces"`
}

// Summary counts hosts by state and findings by severity.
type Summary struct {
	Hosts         int            `json:"hosts"`
	States        map[string]int `json:"states"`
	ClockMeasured int            `json:"clock_measured"`
	// LargestOffset is the largest |offset| of a measured clock, seconds.
	LargestOffset float64        `json:"largest_offset_seconds"`
	Findings      map[string]int `json:"findings"`
}

// HostReport is one host.
type HostReport struct {
	Host      string        `json:"host"`
	IPs       []string      `json:"ips"`
	Inventory bool          `json:"inventory"`
	State     string        `json:"state"`
	Events    EventsReport  `json:"events"`
	Traffic   TrafficReport `json:"traffic"`
	Clock     ClockReport   `json:"clock"`
	Lag       *LagReport    `json:"lag,omitempty"`
	Requests  struct {
		Sent     uint64 `json:"sent"`
		Answered uint64 `json:"answered"`
	} `json:"sample_requests"`
}

// EventsReport is what the host's events showed (host-clock times).
type EventsReport struct {
	Count       uint64                   `json:"count"`
	Connections uint64                   `json:"connections"`
	First       *time.Time               `json:"first,omitempty"`
	Last        *time.Time               `json:"last,omitempty"`
	Channels    map[string]ChannelReport `json:"channels,omitempty"`
}

// ChannelReport is one class of channel (firewall, security, sysmon,
// system, other).
type ChannelReport struct {
	Count uint64    `json:"count"`
	Last  time.Time `json:"last"`
}

// TrafficReport is what the sensor saw of the host (sensor times).
type TrafficReport struct {
	First        *time.Time `json:"first,omitempty"`
	Last         *time.Time `json:"last,omitempty"`
	LastAnswered *time.Time `json:"last_answered,omitempty"`
	// Unanswered are S0/RSTOS0 touches to the host within the host window.
	Unanswered int `json:"unanswered_touches"`
}

// ClockReport is the host's clock.
type ClockReport struct {
	// State: measured, measuring (connection events, not enough
	// matches yet), unverified (no connection events), beyond_bound.
	State      string         `json:"state"`
	Offset     *float64       `json:"offset_seconds,omitempty"`
	Samples    int            `json:"samples"`
	Sources    int            `json:"sources"`
	Peers      int            `json:"peers"`
	Spread     *float64       `json:"spread_seconds,omitempty"`
	MeasuredAt *time.Time     `json:"measured_at,omitempty"`
	Conflicts  uint64         `json:"conflicts"`
	Rejected   uint64         `json:"rejected"`
	Evidence   []SampleReport `json:"evidence,omitempty"`
}

// SampleReport is one matched connection.
type SampleReport struct {
	Peer       string    `json:"peer"`
	PeerPort   uint16    `json:"peer_port"`
	Address    string    `json:"address"`
	Port       uint16    `json:"port"`
	HostTime   time.Time `json:"host_time"`
	SensorTime time.Time `json:"sensor_time"`
	Offset     float64   `json:"offset_seconds"`
	EventID    uint32    `json:"event_id"`
	RecordID   uint64    `json:"record_id,omitempty"`
}

// LagReport is the host's event lag: arrival minus event time on the
// sensor's clock (the measured offset taken out), seconds.
type LagReport struct {
	Samples int     `json:"samples"`
	P50     float64 `json:"p50_seconds"`
	P90     float64 `json:"p90_seconds"`
	// Mode: "minimize_latency" (p90 within 2 min), "batched" (a WEF
	// subscription in Normal mode: 15-minute batches), or "slow".
	Mode string `json:"mode"`
}

// PathReport is the sensor's capture as a whole or one interface.
type PathReport struct {
	Name  string     `json:"name,omitempty"`
	State string     `json:"state"`
	Since *time.Time `json:"since,omitempty"`
	By    string     `json:"by,omitempty"`
	// What the window held.
	SYN           uint64  `json:"syn"`
	Answers       uint64  `json:"answers"`
	Unmatched     uint64  `json:"answers_unmatched"`
	OtherTCP      uint64  `json:"other_tcp"`
	AckProof      uint64  `json:"ack_proof"`
	WindowSeconds float64 `json:"window_seconds"`
}

// Report returns the coverage at the latest tick. final: the input is all
// there will be (a replay): hosts are judged without waiting.
func (t *Tracker) Report(final bool) Report {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now
	r := Report{Generated: now, Final: final, Findings: []Finding{}, Hosts: []HostReport{}, Interfaces: []PathReport{},
		Summary: Summary{States: map[string]int{}, Findings: map[string]int{}}}
	for _, s := range HostStates {
		r.Summary.States[s] = 0
	}
	for _, s := range []string{SevCritical, SevWarning, SevInfo} {
		r.Summary.Findings[s] = 0
	}
	for _, h := range t.hosts {
		fs := t.hostFindings(h, final)
		hr := t.hostReport(h, fs)
		r.Hosts = append(r.Hosts, hr)
		r.Summary.States[hr.State]++
		r.Findings = append(r.Findings, fs...)
		if h.est.valid && !h.est.beyond {
			r.Summary.ClockMeasured++
			r.Summary.LargestOffset = max(r.Summary.LargestOffset, absDur(h.est.offset).Seconds())
		}
	}
	r.Summary.Hosts = len(r.Hosts)
	r.Sensor = t.pathReport("", &t.net.sensor)
	named := false
	for _, name := range t.net.order {
		v := &t.net.ifaces[name].verdict
		r.Interfaces = append(r.Interfaces, t.pathReport(name, v))
		fs := t.pathFindings(name, v)
		named = named || len(fs) > 0
		r.Findings = append(r.Findings, fs...)
	}
	if !named {
		// The sensor-wide finding, unless an interface's names the
		// culprit more precisely.
		r.Findings = append(r.Findings, t.pathFindings("", &t.net.sensor)...)
	}
	for _, f := range r.Findings {
		r.Summary.Findings[f.Severity]++
	}
	rank := func(list []string, s string) int { return slices.Index(list, s) }
	sevs := []string{SevCritical, SevWarning, SevInfo}
	slices.SortStableFunc(r.Findings, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(rank(sevs, a.Severity), rank(sevs, b.Severity)), cmp.Compare(a.Kind, b.Kind),
			cmp.Compare(a.Interface, b.Interface), cmp.Compare(a.Host, b.Host))
	})
	slices.SortStableFunc(r.Hosts, func(a, b HostReport) int {
		return cmp.Or(cmp.Compare(rank(HostStates, a.State), rank(HostStates, b.State)), cmp.Compare(a.Host, b.Host))
	})
	return r
}

func (t *Tracker) pathReport(name string, v *verdict) PathReport {
	st := v.state
	if st == "" {
		st = StateIdle
	}
	p := PathReport{Name: name, State: st, By: v.by, SYN: v.sum.syn, Answers: v.sum.ans, Unmatched: v.sum.unmatched,
		OtherTCP: v.sum.other, AckProof: v.sum.proof, WindowSeconds: t.cfg.NetWindow.Seconds()}
	if !v.since.IsZero() {
		s := v.since
		p.Since = &s
	}
	return p
}

// pathFindings are the findings of the sensor's capture (name "") or of
// one interface.
func (t *Tracker) pathFindings(name string, v *verdict) []Finding {
	where := "the sensor's capture"
	if name != "" {
		where = "capture interface " + name
	}
	ev := map[string]any{"syn": v.sum.syn, "answers": v.sum.ans, "answers_unmatched": v.sum.unmatched,
		"other_tcp": v.sum.other, "window_seconds": t.cfg.NetWindow.Seconds()}
	if v.by != "" {
		ev["by"] = v.by
	}
	var since *time.Time
	if !v.since.IsZero() {
		s := v.since
		since = &s
	}
	switch v.state {
	case StateOneWay:
		return []Finding{{Kind: FindOneWay, Severity: SevCritical, Interface: name, Since: since, Evidence: ev,
			Missing: fmt.Sprintf("%s sees SYNs (%d in %v) but almost never their answers (SYN-ACK or RST: %d) while the connections carry data: "+
				"the server-to-client direction is missing, so every connection attempt looks like an unanswered (S0) touch; "+
				"knocks of unanswered touches on this path are held, not alerted", where, v.sum.syn, t.cfg.NetWindow, v.sum.ans),
			Fix: "attach the tap's other port (a passive tap has one port per direction) or mirror both directions on the span port; " +
				"if the other direction cannot be had, set sensor.ack_proof: true so the clients' ACKs prove the answers"}}
	case StateAnswersOnly:
		return []Finding{{Kind: FindAnswersOnly, Severity: SevCritical, Interface: name, Since: since, Evidence: ev,
			Missing: fmt.Sprintf("%s sees answers (SYN-ACK, RST: %d in %v) to SYNs it never saw (SYNs: %d): the client-to-server direction is missing, "+
				"so no knock and no handshake can be seen", where, max(v.sum.unmatched, v.sum.ans), t.cfg.NetWindow, v.sum.syn),
			Fix: "attach the tap's other port or mirror both directions (ingress and egress) of the monitored port"}}
	}
	return nil
}

// hostState is the worst state h's findings put it in.
func (t *Tracker) hostState(h *host) string {
	return stateOf(h, t.hostFindings(h, false))
}

func stateOf(h *host, fs []Finding) string {
	// Without events, and no verdict yet (not long enough, nothing seen):
	// unseen.
	st := HostCovered
	if h.events == 0 {
		st = HostUnseen
	}
	for _, f := range fs {
		var s string
		switch f.Kind {
		case FindHostNoAnswers:
			s = HostNetworkBlind
		case FindHostNoEvents, FindChannelQuiet:
			s = HostBlind
		case FindClockUnverified:
			s = HostClockUnverified
		case FindClockBeyondBound, FindClockConflicts, FindEventLag:
			s = HostDegraded
		default:
			continue
		}
		if slices.Index(HostStates, s) < slices.Index(HostStates, st) {
			st = s
		}
	}
	return st
}

func (t *Tracker) hostRef(h *host) (string, []string) {
	name := h.name
	if name == "" {
		name = h.key
	}
	ips := make([]string, 0, len(h.ips))
	for _, ip := range h.ips {
		ips = append(ips, ip.String())
	}
	return name, ips
}

// hostFindings are what is missing for h.
func (t *Tracker) hostFindings(h *host, final bool) []Finding {
	name, ips := t.hostRef(h)
	now := t.now
	if now.IsZero() {
		now = h.lastTraffic
	}
	var out []Finding
	add := func(kind, sev, missing, fix string, ev map[string]any) {
		out = append(out, Finding{Kind: kind, Severity: sev, Host: name, IPs: ips, Missing: missing, Fix: fix, Evidence: ev})
	}
	if t.hostNoAnswers(h) {
		n := 0
		for _, u := range h.unanswered {
			if now.Sub(u.at) <= t.cfg.HostWindow {
				n++
			}
		}
		add(FindHostNoAnswers, SevCritical,
			fmt.Sprintf("SYNs to this host are never answered in the capture (%d unanswered touches and no SYN-ACK or RST in %v): "+
				"either its path through the capture lacks the server-to-client direction, or it drops everything; its knocks are held, not alerted", n, t.cfg.HostWindow),
			"mirror both directions of the host's path (the tap's other port, or a span port set to both directions); "+
				"with a one-way tap that cannot be fixed, set sensor.ack_proof: true", map[string]any{"unanswered_touches": n})
	}
	traffic := !h.lastTraffic.IsZero()
	if h.events == 0 && traffic && (final || now.Sub(h.firstTraffic) >= t.cfg.NoEventsAfter) {
		sev, what, fix := SevCritical, "the sensor saw connections to it", ""
		if !h.inventory && !h.recorded {
			// Known from SYN destinations alone: maybe not a Windows
			// host at all, so a warning, with the other fix too.
			sev, what = SevWarning, "SYNs to it inside coverage.networks"
			fix = "; if it is not a Windows host, list the networks behind the tap in coverage.networks more narrowly"
		}
		add(FindHostNoEvents, sev,
			fmt.Sprintf("the host takes traffic (%s since %s) but not one of its Windows events arrived: "+
				"a firewall change or a new listener on it cannot be seen, so no knock on it can give a high alert",
				what, h.firstTraffic.UTC().Format(time.RFC3339)),
			"forward the host's Security and Windows Firewall With Advanced Security/Firewall channels (WEF subscription, Winlogbeat or NXLog) "+
				"to the sensor, and enable auditing of firewall rule changes (auditpol /set /subcategory:\"MPSSVC Rule-Level Policy Change\" /success:enable)"+fix,
			map[string]any{"first_traffic": h.firstTraffic.UTC(), "last_traffic": h.lastTraffic.UTC(), "known_from_records": h.recorded})
	}
	off := time.Duration(0)
	if h.est.valid && !h.est.beyond {
		off = h.est.offset
	}
	for i, c := range h.chans {
		if c.count == 0 || !traffic {
			continue
		}
		last := c.last.Add(-off) // on the sensor's clock
		if h.lastTraffic.Sub(last) >= t.cfg.QuietAfter && (final || now.Sub(last) >= t.cfg.QuietAfter) {
			add(FindChannelQuiet, SevWarning,
				fmt.Sprintf("the host's %s events stopped at %s while traffic to it continued (last seen %s): "+
					"its auditing or its forwarding of that channel may have been switched off", channelClasses[i],
					last.UTC().Format(time.RFC3339), h.lastTraffic.UTC().Format(time.RFC3339)),
				"check the host's audit policy (auditpol /get /category:*) and event log, and the forwarder's subscription for the channel",
				map[string]any{"channel": channelClasses[i], "events": c.count, "last_event": last.UTC()})
		}
	}
	switch {
	case h.events == 0:
	case h.est.valid && h.est.beyond:
		add(FindClockBeyondBound, SevCritical,
			fmt.Sprintf("the host's clock is %s off the sensor's, beyond max_offset (%v): its events are not corrected, so its changes "+
				"cannot meet its knocks", fmtOffset(h.est.offset), t.cfg.MaxOffset),
			"fix the host's time synchronisation (w32tm /query /status; w32tm /resync)", map[string]any{"offset_seconds": h.est.offset.Seconds()})
	case h.est.valid && absDur(h.est.offset) > t.cfg.Skew:
		add(FindClockOffset, SevInfo,
			fmt.Sprintf("the host's clock is %s (measured from %d connections of %d peers): beyond rule.skew (%v), corrected "+
				"in alerts (knockwatch.clock)", fmtOffset(h.est.offset), h.est.samples, h.est.sources, t.cfg.Skew),
			"fix the host's time synchronisation (w32tm /query /status; w32tm /resync): alerts depend on the correction until then",
			map[string]any{"offset_seconds": h.est.offset.Seconds(), "samples": h.est.samples, "sources": h.est.sources})
	case !h.est.valid && h.beyond >= uint64(t.cfg.MinSamples):
		add(FindClockBeyondBound, SevCritical,
			fmt.Sprintf("%d connections put the host's clock beyond max_offset (%v; the latest %s): its events are not corrected",
				h.beyond, t.cfg.MaxOffset, fmtOffset(h.lastBeyond)),
			"fix the host's time synchronisation (w32tm /query /status; w32tm /resync)",
			map[string]any{"rejected_samples": h.beyond, "latest_offset_seconds": h.lastBeyond.Seconds()})
	case !h.est.valid && h.connEvents == 0:
		add(FindClockUnverified, SevWarning,
			fmt.Sprintf("the host sends no connection events (Security 5156, Sysmon 3), so its clock cannot be measured: its events are "+
				"trusted to within rule.skew (%v) of the sensor, and a host further off gives no alert", t.cfg.Skew),
			"enable \"Filtering Platform Connection\" auditing (auditpol /set /subcategory:\"Filtering Platform Connection\" /success:enable) "+
				"and forward Security 5156, or forward Sysmon event 3",
			nil)
	case !h.est.valid:
		add(FindClockUnverified, SevWarning,
			fmt.Sprintf("the host's clock is not measured yet: %d of its connections matched the sensor's (%d peers; %d in agreement, "+
				"%d needed from %d peers): its events are trusted to within rule.skew (%v)", h.est.total, h.est.peers, h.est.samples,
				t.cfg.MinSamples, t.cfg.MinSources, t.cfg.Skew),
			"nothing, if connections to the host pass the capture: samples come every "+t.cfg.SampleInterval.String()+
				"; otherwise make sure the connections its 5156/Sysmon 3 events log cross the tap",
			map[string]any{"matched": h.est.total, "peers": h.est.peers, "connection_events": h.connEvents})
	}
	if h.conflicts+h.mismatched > 0 {
		add(FindClockConflicts, SevWarning,
			fmt.Sprintf("%d connections were logged more than once with different times, and %d named an address the inventory gives "+
				"another host: forged or rewritten events; those samples are not used", h.conflicts, h.mismatched),
			"check which forwarder sends this host's events (listeners.forwarders binds forwarders to hosts) and the host itself",
			map[string]any{"conflicts": h.conflicts, "address_mismatch": h.mismatched})
	}
	if lr := t.lagReport(h); lr != nil && lr.Samples >= 5 && time.Duration(lr.P50*float64(time.Second)) > t.cfg.LagWarn {
		add(FindEventLag, SevWarning,
			fmt.Sprintf("the host's events arrive %.0f s after they happen (median; p90 %.0f s): a change is known that much later, "+
				"and beyond rule.retention it is too late", lr.P50, lr.P90),
			"switch the WEF subscription to Minimize Latency (wecutil ss SUBSCRIPTION /cm:MinLatency) or shorten the forwarder's batching",
			map[string]any{"p50_seconds": lr.P50, "p90_seconds": lr.P90, "mode": lr.Mode})
	}
	return out
}

func fmtOffset(d time.Duration) string {
	if d < 0 {
		return fmt.Sprintf("%.3f s behind", (-d).Seconds())
	}
	return fmt.Sprintf("%.3f s ahead", d.Seconds())
}

func (t *Tracker) lagReport(h *host) *LagReport {
	if len(h.lags) == 0 {
		return nil
	}
	s := slices.Clone(h.lags)
	slices.Sort(s)
	p := func(q float64) float64 { return s[int(q*float64(len(s)-1))].Seconds() }
	lr := &LagReport{Samples: len(s), P50: p(0.5), P90: p(0.9), Mode: "minimize_latency"}
	switch {
	case lr.P90 > 20*60:
		lr.Mode = "slow"
	case lr.P90 > 120:
		lr.Mode = "batched"
	}
	return lr
}

func (t *Tracker) hostReport(h *host, fs []Finding) HostReport {
	name, ips := t.hostRef(h)
	hr := HostReport{Host: name, IPs: ips, Inventory: h.inventory, State: stateOf(h, fs)}
	tp := func(x time.Time) *time.Time {
		if x.IsZero() {
			return nil
		}
		x = x.UTC()
		return &x
	}
	hr.Events = EventsReport{Count: h.events, Connections: h.connEvents, First: tp(h.firstEvent), Last: tp(h.lastEvent)}
	for i, c := range h.chans {
		if c.count > 0 {
			if hr.Events.Channels == nil {
				hr.Events.Channels = map[string]ChannelReport{}
			}
			hr.Events.Channels[channelClasses[i]] = ChannelReport{Count: c.count, Last: c.last.UTC()}
		}
	}
	hr.Traffic = TrafficReport{First: tp(h.firstTraffic), Last: tp(h.lastTraffic), LastAnswered: tp(h.lastAnswered)}
	now := t.now
	if now.IsZero() {
		now = h.lastTraffic
	}
	for _, u := range h.unanswered {
		if now.Sub(u.at) <= t.cfg.HostWindow {
			hr.Traffic.Unanswered++
		}
	}
	e := h.est
	c := ClockReport{Samples: e.samples, Sources: e.sources, Peers: e.peers, Conflicts: h.conflicts, Rejected: h.beyond + h.mismatched}
	switch {
	case e.valid && e.beyond:
		c.State = "beyond_bound"
	case e.valid:
		c.State = "measured"
	case h.connEvents > 0:
		c.State = "measuring"
	default:
		c.State = "unverified"
	}
	if e.samples > 0 {
		off, spread := e.offset.Seconds(), e.spread.Seconds()
		c.Offset, c.Spread, c.MeasuredAt = &off, &spread, tp(e.measured)
		for _, s := range e.evidence {
			c.Evidence = append(c.Evidence, SampleReport{Peer: s.Peer.String(), PeerPort: s.PeerPort, Address: s.Host.String(),
				Port: s.Port, HostTime: s.HostTime.UTC(), SensorTime: s.SensorTime.UTC(), Offset: s.Offset.Seconds(),
				EventID: s.EventID, RecordID: s.RecordID})
		}
	}
	hr.Clock = c
	hr.Lag = t.lagReport(h)
	hr.Requests.Sent, hr.Requests.Answered = h.requests, h.answered
	return hr
}

// HostIPs is a helper for tests and callers: the addresses of the host
// named name, or nil.
func (t *Tracker) HostIPs(name string) []netip.Addr {
	t.mu.Lock()
	defer t.mu.Unlock()
	if h := t.namedHost(name, false); h != nil {
		return slices.Clone(h.ips)
	}
	return nil
}
