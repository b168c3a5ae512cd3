package winevents

import (
	"net/netip"
	"strings"
	"sync"
	"time"
)

// JSON decoding for the three JSON shapes:
//   - Winlogbeat ECS (7.x/8.x): winlog.{event_id,channel,computer_name,
//     record_id,event_data.*}, @timestamp, host.ip;
//   - Winlogbeat 6.x (pre-ECS): event_id, log_name, computer_name,
//     record_number, event_data.*, @timestamp;
//   - NXLog im_msvistalog and other flat exports: EventID, Channel,
//     Hostname, RecordNumber, EventTime (local, no zone) or TimeCreated,
//     with the event data as top-level members.
// One scan collects the members of interest as byte spans; strings are only
// made for events that pass the relevance check.

type jscope uint8

const (
	jsTop    jscope = iota // top-level scalar
	jsData                 // event_data.* (Winlogbeat 6 or winlog.event_data)
	jsWinlog               // winlog.* scalar
	jsHost                 // host.* scalar (ip may repeat)
)

type jspan struct {
	scope    jscope
	key, val []byte
	kesc     bool
	vesc     bool
	null     bool
}

type jsonObj struct {
	spans []jspan
}

var jsonObjPool = sync.Pool{New: func() any { return &jsonObj{spans: make([]jspan, 0, 64)} }}

func (o *jsonObj) find(scope jscope, key string) (jspan, bool) {
	for i := range o.spans {
		if o.spans[i].scope == scope && string(o.spans[i].key) == key {
			return o.spans[i], true
		}
	}
	return jspan{}, false
}

func (o *jsonObj) str(scope jscope, key string) string {
	if sp, ok := o.find(scope, key); ok && !sp.null {
		return jsonString(sp.val, sp.vesc)
	}
	return ""
}

// get returns a data member as a string: exact key first, then
// case-insensitive (exporters differ: ProcessId, ProcessID).
func (o *jsonObj) get(scope jscope, name string) string {
	for i := range o.spans {
		sp := &o.spans[i]
		if sp.scope == scope && !sp.null && string(sp.key) == name {
			return jsonString(sp.val, sp.vesc)
		}
	}
	for i := range o.spans {
		sp := &o.spans[i]
		if sp.scope == scope && !sp.null && equalFoldKey(sp, name) {
			return jsonString(sp.val, sp.vesc)
		}
	}
	return ""
}

// equalFoldKey compares a member key with name, ignoring ASCII case,
// without allocating for the common unescaped key.
func equalFoldKey(sp *jspan, name string) bool {
	if sp.kesc {
		return strings.EqualFold(jsonString(sp.key, true), name)
	}
	if len(sp.key) != len(name) {
		return false
	}
	for i := 0; i < len(name); i++ {
		a, b := sp.key[i], name[i]
		if a >= 'A' && a <= 'Z' {
			a += 'a' - 'A'
		}
		if b >= 'A' && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

func (o *jsonObj) has(scope jscope, key string) bool {
	_, ok := o.find(scope, key)
	return ok
}

// scanJSONObject scans one object at s.i and fills o.
func scanJSONObject(s *jsonScanner, o *jsonObj) error {
	s.ws()
	if s.i >= len(s.b) {
		return errJSONEOF
	}
	if s.b[s.i] != '{' {
		return errJSONSyntax
	}
	return s.object(1, func(key []byte, kesc bool, depth int) (bool, error) {
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == '{' {
			switch string(key) {
			case "event_data":
				return true, collectScalars(s, o, jsData, depth, nil)
			case "winlog":
				return true, collectScalars(s, o, jsWinlog, depth, func(k []byte) bool {
					return string(k) == "event_data"
				})
			case "host":
				return true, collectScalars(s, o, jsHost, depth, nil)
			}
			return false, nil
		}
		return true, collectScalar(s, o, jsTop, key, kesc, depth)
	})
}

// collectScalars scans a nested object, keeping its scalar members (and
// the members of a nested event_data object when nested(k) says so).
func collectScalars(s *jsonScanner, o *jsonObj, scope jscope, depth int, nested func([]byte) bool) error {
	return s.object(depth+1, func(key []byte, kesc bool, d int) (bool, error) {
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == '{' && nested != nil && nested(key) {
			return true, collectScalars(s, o, jsData, d, nil)
		}
		if s.i < len(s.b) && s.b[s.i] == '[' && scope == jsHost {
			// host.ip is an array of strings.
			return true, s.array(d+1, func(dd int) error {
				return collectScalar(s, o, scope, key, kesc, dd)
			})
		}
		return true, collectScalar(s, o, scope, key, kesc, d)
	})
}

func collectScalar(s *jsonScanner, o *jsonObj, scope jscope, key []byte, kesc bool, depth int) error {
	raw, vesc, ok, err := s.scalar(depth)
	if err != nil || !ok {
		return err
	}
	o.spans = append(o.spans, jspan{scope: scope, key: key, kesc: kesc, val: raw, vesc: vesc, null: raw == nil})
	return nil
}

// jsonHead is what the cheap pass learns about an object.
type jsonHead struct {
	format  Format
	eventID uint32
	idOK    bool
	cls     channelClass
	channel string
}

func (o *jsonObj) head() jsonHead {
	var h jsonHead
	var idKey, chKey, provKey string
	var idScope jscope
	switch {
	case o.has(jsWinlog, "event_id") || o.has(jsWinlog, "channel"):
		h.format, idScope, idKey, chKey, provKey = FormatECS, jsWinlog, "event_id", "channel", "provider_name"
	case o.has(jsTop, "event_id") || o.has(jsTop, "log_name") || o.has(jsTop, "computer_name"):
		h.format, idScope, idKey, chKey, provKey = FormatWinlogbeat, jsTop, "event_id", "log_name", "source_name"
	case o.has(jsTop, "EventID"):
		h.format, idScope, idKey, chKey, provKey = FormatNXLog, jsTop, "EventID", "Channel", "SourceName"
	default:
		h.format = FormatUnknown
		return h
	}
	if sp, ok := o.find(idScope, idKey); ok && !sp.null {
		if n, ok := parseUint(string(sp.val), 32); ok {
			h.eventID, h.idOK = uint32(n), true
		}
	}
	if sp, ok := o.find(idScope, chKey); ok && !sp.null && !sp.vesc {
		h.cls = classifyChannel(string(sp.val))
		if h.cls != clsOther {
			h.channel = canonicalChannel(h.cls)
		} else {
			h.channel = jsonString(sp.val, sp.vesc)
		}
	} else if sp, ok := o.find(idScope, chKey); ok && sp.vesc {
		h.channel = jsonString(sp.val, sp.vesc)
		h.cls = classifyChannel(h.channel)
	}
	if h.channel == "" {
		if sp, ok := o.find(idScope, provKey); ok {
			h.cls = classifyProvider(jsonString(sp.val, sp.vesc))
			h.channel = canonicalChannel(h.cls)
		}
	}
	return h
}

func canonicalChannel(c channelClass) string {
	switch c {
	case clsFirewall:
		return chanFirewall
	case clsSecurity:
		return chanSecurity
	case clsSystem:
		return chanSystem
	case clsSysmon:
		return chanSysmon
	}
	return ""
}

// buildRecord turns the spans of a relevant object into a record.
func (o *jsonObj) buildRecord(h jsonHead, zones *zoneTable) (*record, Reason) {
	r := &record{format: h.format, channel: h.channel, eventID: h.eventID}
	var dataScope jscope
	switch h.format {
	case FormatECS:
		dataScope = jsData
		r.computer = o.str(jsWinlog, "computer_name")
		r.provider = o.str(jsWinlog, "provider_name")
		if n, ok := parseUint(o.str(jsWinlog, "record_id"), 64); ok {
			r.recordID = n
		}
		t, ok := parseUTCTime(o.str(jsTop, "@timestamp"))
		if !ok {
			return nil, ReasonBadTime
		}
		r.time = t
		if hostMatches(o.str(jsHost, "name"), r.computer) {
			for i := range o.spans {
				if o.spans[i].scope == jsHost && string(o.spans[i].key) == "ip" {
					if a, err := netip.ParseAddr(jsonString(o.spans[i].val, o.spans[i].vesc)); err == nil {
						r.hostIPs = append(r.hostIPs, a.Unmap())
					}
				}
			}
		}
	case FormatWinlogbeat:
		dataScope = jsData
		r.computer = o.str(jsTop, "computer_name")
		r.provider = o.str(jsTop, "source_name")
		if n, ok := parseUint(o.str(jsTop, "record_number"), 64); ok {
			r.recordID = n
		}
		t, ok := parseUTCTime(o.str(jsTop, "@timestamp"))
		if !ok {
			return nil, ReasonBadTime
		}
		r.time = t
	case FormatNXLog:
		dataScope = jsTop
		r.computer = o.str(jsTop, "Hostname")
		r.provider = o.str(jsTop, "SourceName")
		if n, ok := parseUint(o.str(jsTop, "RecordNumber"), 64); ok {
			r.recordID = n
		}
		loc := zones.lookup(r.computer)
		var t time.Time
		ok := false
		if s := o.str(jsTop, "EventTime"); s != "" {
			t, ok = parseTimeIn(s, loc)
		} else if s := o.str(jsTop, "TimeCreated"); s != "" {
			t, ok = parseTimeIn(s, loc)
		}
		if !ok {
			return nil, ReasonBadTime
		}
		r.time = t
	}
	if r.computer == "" {
		return nil, ReasonMissingHost
	}
	r.jobj, r.jscope = o, dataScope
	return r, ""
}

// hostMatches reports whether the collector-side host.name names the
// source computer (then host.ip is the source's). Short names match FQDNs.
func hostMatches(hostName, computer string) bool {
	if hostName == "" || computer == "" {
		return false
	}
	if strings.EqualFold(hostName, computer) {
		return true
	}
	short := func(s string) string {
		if i := strings.IndexByte(s, '.'); i >= 0 {
			return s[:i]
		}
		return s
	}
	return strings.EqualFold(short(hostName), short(computer)) &&
		(!strings.Contains(hostName, ".") || !strings.Contains(computer, "."))
}
