package winevents

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"
)

// Options configures a Decoder. The zero value is usable.
type Options struct {
	// Zones gives the time zone of hosts whose events carry local time
	// without a zone (NXLog EventTime, flat TimeCreated without offset).
	// Keys are host names (FQDN or short name) or host-group globs such as
	// "*.branch.example"; case-insensitive.
	Zones map[string]*time.Location
	// DefaultZone applies to hosts not in Zones; nil means UTC.
	DefaultZone *time.Location
	// DedupeSize caps the remembered (computer, channel, record id) keys
	// (default 65536).
	DedupeSize int
	// MaxHosts caps the hosts with join state (default 4096); MaxPerHost
	// caps each of a host's join tables (default 1024); MaxJoinEntries caps
	// the join entries of all hosts together (default 262144, a few hundred
	// MB at worst), dropping the least recently active hosts beyond it.
	MaxHosts       int
	MaxPerHost     int
	MaxJoinEntries int
	// JoinWindow is the largest event-time distance between two records
	// that are joined (default 30 s).
	JoinWindow time.Duration
	// MaxEventBytes caps one event (default 1 MiB); MaxPayloadBytes caps
	// what Decode accepts at once (default 64 MiB).
	MaxEventBytes   int
	MaxPayloadBytes int
}

func (o Options) withDefaults() Options {
	if o.DedupeSize <= 0 {
		o.DedupeSize = 65536
	}
	if o.MaxHosts <= 0 {
		o.MaxHosts = 4096
	}
	if o.MaxPerHost <= 0 {
		o.MaxPerHost = 1024
	}
	if o.MaxJoinEntries <= 0 {
		o.MaxJoinEntries = 65536
	}
	if o.JoinWindow <= 0 {
		o.JoinWindow = 30 * time.Second
	}
	if o.MaxEventBytes <= 0 {
		o.MaxEventBytes = 1 << 20
	}
	if o.MaxPayloadBytes <= 0 {
		o.MaxPayloadBytes = 64 << 20
	}
	return o
}

// Decoder turns forwarded Windows events into ExposureChanges. It is safe
// for concurrent use; the dedupe and join state is shared by all callers.
type Decoder struct {
	opts  Options
	zones *zoneTable
	st    *state
	c     counters
}

// counters are the cumulative Stats, updated atomically.
type counters struct {
	hostIPsDropped atomic.Uint64
	byFormat       [5]formatCounters
	reasons        [16]atomic.Uint64 // by index in Reasons
}

type formatCounters struct {
	read, relevant, skipped, duplicates, rejected, emitted atomic.Uint64
}

// NewDecoder returns a Decoder with opts (zero fields take defaults).
func NewDecoder(opts Options) *Decoder {
	opts = opts.withDefaults()
	return &Decoder{opts: opts, zones: newZoneTable(opts.Zones, opts.DefaultZone), st: newState(opts)}
}

// Result counts what one payload (or one stream) held.
type Result struct {
	Read       int // records found
	Relevant   int // records of a supported event ID, decoded, not duplicates
	Skipped    int // records of unrelated event IDs (recognised cheaply)
	Duplicates int // relevant records seen before (same computer, channel, record id)
	Rejected   int // records that could not be decoded
	Emitted    int // exposure changes produced
	Reasons    map[Reason]int
	// Err is set when the payload as a whole is unreadable: empty, neither
	// XML nor JSON, or no record in it could be decoded at all.
	Err error

	from HostPolicy // the sender's policy (DecodeFrom), nil: any host
}

// HostPolicy says which hosts the sender of a payload may speak for: a
// forwarder bound to some hosts must not file evidence under another
// host's name or address. The decoder checks every record before its
// duplicate check and join state, so a refused record leaves no trace.
type HostPolicy interface {
	// AllowsHost reports whether the sender may send records whose
	// computer is name.
	AllowsHost(name string) bool
	// AllowsAddr reports whether the sender may name ip as an address of
	// a host (Winlogbeat host.ip); other addresses are dropped from the
	// record and counted.
	AllowsAddr(ip netip.Addr) bool
}

func (r *Result) reject(reason Reason) {
	r.Rejected++
	if r.Reasons == nil {
		r.Reasons = map[Reason]int{}
	}
	r.Reasons[reason]++
}

// ErrUnreadable wraps Result.Err.
var ErrUnreadable = errors.New("unreadable payload")

// Decode decodes one transport message in any supported format and
// returns the exposure changes it yields, in input order.
func (d *Decoder) Decode(payload []byte) ([]ExposureChange, Result) {
	return d.DecodeFrom(payload, nil)
}

// DecodeFrom is Decode for a sender that may speak only for the hosts
// from allows (nil: any host). A record for another computer is rejected
// (ReasonHostNotAllowed) before it touches the duplicate and join state;
// host addresses the sender may not name are dropped and counted
// (Stats.HostIPsDropped).
func (d *Decoder) DecodeFrom(payload []byte, from HostPolicy) ([]ExposureChange, Result) {
	var out []ExposureChange
	res := d.decodePayload(payload, from, func(c ExposureChange) { out = append(out, c) })
	return out, res
}

func (d *Decoder) decodePayload(payload []byte, from HostPolicy, emit func(ExposureChange)) Result {
	res := Result{from: from}
	if len(payload) > d.opts.MaxPayloadBytes {
		res.Read++
		d.reject(&res, FormatUnknown, ReasonTooLarge)
		res.Err = fmt.Errorf("%w: %d bytes over the %d byte limit", ErrUnreadable, len(payload), d.opts.MaxPayloadBytes)
		return res
	}
	trimmed := bytes.TrimLeft(payload, " \t\r\n\ufeff")
	switch {
	case len(trimmed) == 0:
		res.Err = fmt.Errorf("%w: empty", ErrUnreadable)
	case trimmed[0] == '<':
		d.decodeXMLPayload(trimmed, &res, emit, true)
	case trimmed[0] == '{' || trimmed[0] == '[':
		d.decodeJSONPayload(trimmed, &res, emit)
	default:
		res.Read++
		d.reject(&res, FormatUnknown, ReasonUnknownFormat)
		res.Err = fmt.Errorf("%w: neither XML nor JSON", ErrUnreadable)
	}
	if res.Err == nil && res.Read > 0 && res.Rejected == res.Read && allSyntax(res.Reasons) {
		res.Err = fmt.Errorf("%w: no record could be decoded", ErrUnreadable)
	}
	return res
}

func allSyntax(m map[Reason]int) bool {
	for r := range m {
		switch r {
		case ReasonMalformedJSON, ReasonMalformedXML, ReasonTruncated, ReasonUnknownFormat, ReasonTooDeep, ReasonDTD, ReasonTooLarge:
		default:
			return false
		}
	}
	return true
}

// decodeXMLPayload decodes every <Event> in b. final says b is complete
// (an <Event> without its end is then truncated); it returns the offset
// up to which b was consumed, or -1 when the rest must be refused (DTD).
func (d *Decoder) decodeXMLPayload(b []byte, res *Result, emit func(ExposureChange), final bool) int {
	i := 0
	for {
		start, end, found, incomplete := nextXMLEvent(b, i)
		if incomplete {
			if hasDTD(b[i:start]) {
				res.Read++
				d.reject(res, FormatXML, ReasonDTD)
				return -1
			}
			if !final {
				return start
			}
			res.Read++
			d.reject(res, FormatXML, ReasonTruncated)
			return len(b)
		}
		if !found {
			if hasDTD(b[i:]) {
				res.Read++
				d.reject(res, FormatXML, ReasonDTD)
				return -1
			}
			if res.Read == 0 && final {
				res.Read++
				d.reject(res, FormatXML, ReasonMalformedXML)
			}
			return len(b)
		}
		if hasDTD(b[i:start]) {
			// A DTD may declare entities for what follows: refuse the rest.
			res.Read++
			d.reject(res, FormatXML, ReasonDTD)
			return -1
		}
		d.xmlEvent(b[start:end], res, emit)
		i = end
	}
}

func (d *Decoder) xmlEvent(ev []byte, res *Result, emit func(ExposureChange)) {
	res.Read++
	fc := &d.c.byFormat[formatIndex(FormatXML)]
	fc.read.Add(1)
	if len(ev) > d.opts.MaxEventBytes {
		d.reject(res, FormatXML, ReasonTooLarge)
		return
	}
	id, idOK, cls, _ := peekXML(ev)
	if idOK && cls != clsOther && !relevant(cls, id) {
		res.Skipped++
		fc.skipped.Add(1)
		return
	}
	if idOK && cls == clsSecurity && id == 5156 && bytes.Contains(ev, []byte(codeDirOutbound)) {
		res.Skipped++
		fc.skipped.Add(1)
		return
	}
	r, reason, _ := parseXMLEvent(ev)
	if r == nil {
		d.reject(res, FormatXML, reason)
		return
	}
	if !relevant(classifyChannel(r.channel), r.eventID) {
		res.Skipped++
		fc.skipped.Add(1)
		return
	}
	d.process(r, res, emit)
}

func (d *Decoder) decodeJSONPayload(b []byte, res *Result, emit func(ExposureChange)) {
	s := &jsonScanner{b: b}
	if b[0] == '[' {
		err := s.array(0, func(depth int) error {
			start := s.i
			if _, err := s.skip(depth); err != nil {
				return err
			}
			d.jsonObject(b[start:s.i], res, emit)
			return nil
		})
		if err != nil {
			res.Read++
			d.reject(res, FormatUnknown, jsonReason(err))
		}
		s.ws()
		if err == nil && s.i < len(b) {
			res.Read++
			d.reject(res, FormatUnknown, ReasonMalformedJSON)
		}
		return
	}
	// One object, JSON lines, or concatenated objects (pretty-printed or
	// not). A malformed object is rejected and reading resumes at the next
	// line that starts an object.
	for {
		s.ws()
		if s.i >= len(b) {
			return
		}
		start := s.i
		if _, err := s.skip(0); err != nil {
			res.Read++
			d.reject(res, FormatUnknown, jsonReason(err))
			s.i = resyncJSON(b, start+1)
			continue
		}
		d.jsonObject(b[start:s.i], res, emit)
	}
}

// resyncJSON returns the start of the next line beginning with '{' after i.
func resyncJSON(b []byte, i int) int {
	for i < len(b) {
		k := bytes.IndexByte(b[i:], '\n')
		if k < 0 {
			return len(b)
		}
		i += k + 1
		j := i
		for j < len(b) && (b[j] == ' ' || b[j] == '\t' || b[j] == '\r') {
			j++
		}
		if j < len(b) && b[j] == '{' {
			return j
		}
	}
	return len(b)
}

func jsonReason(err error) Reason {
	switch {
	case errors.Is(err, errJSONDepth):
		return ReasonTooDeep
	case errors.Is(err, errJSONEOF):
		return ReasonTruncated
	}
	return ReasonMalformedJSON
}

// jsonObject decodes one JSON value that should be an event object.
func (d *Decoder) jsonObject(b []byte, res *Result, emit func(ExposureChange)) {
	res.Read++
	if len(b) > d.opts.MaxEventBytes {
		d.c.byFormat[formatIndex(FormatUnknown)].read.Add(1)
		d.reject(res, FormatUnknown, ReasonTooLarge)
		return
	}
	o := jsonObjPool.Get().(*jsonObj)
	o.spans = o.spans[:0]
	defer jsonObjPool.Put(o)
	s := &jsonScanner{b: b}
	if err := scanJSONObject(s, o); err != nil {
		d.c.byFormat[formatIndex(FormatUnknown)].read.Add(1)
		d.reject(res, FormatUnknown, jsonReason(err))
		return
	}
	h := o.head()
	fc := &d.c.byFormat[formatIndex(h.format)]
	fc.read.Add(1)
	if h.format == FormatUnknown {
		d.reject(res, FormatUnknown, ReasonUnknownFormat)
		return
	}
	if !h.idOK {
		d.reject(res, h.format, ReasonMissingEventID)
		return
	}
	if !relevant(h.cls, h.eventID) {
		res.Skipped++
		fc.skipped.Add(1)
		return
	}
	if h.cls == clsSecurity && h.eventID == 5156 && bytes.Contains(b, []byte(codeDirOutbound)) {
		res.Skipped++
		fc.skipped.Add(1)
		return
	}
	r, reason := o.buildRecord(h, d.zones)
	if r == nil {
		d.reject(res, h.format, reason)
		return
	}
	d.process(r, res, emit)
}

func (d *Decoder) reject(res *Result, f Format, reason Reason) {
	res.reject(reason)
	d.c.byFormat[formatIndex(f)].rejected.Add(1)
	d.c.reasons[reasonIndex(reason)].Add(1)
}

// process runs dedupe and the state step for a relevant record.
func (d *Decoder) process(r *record, res *Result, emit func(ExposureChange)) {
	fc := &d.c.byFormat[formatIndex(r.format)]
	if len(r.computer) > maxHostNameBytes {
		r.computer = clampField(r.computer, maxHostNameBytes)
	}
	if res.from != nil {
		if !res.from.AllowsHost(r.computer) {
			d.reject(res, r.format, ReasonHostNotAllowed)
			return
		}
		if len(r.hostIPs) > 0 {
			kept := r.hostIPs[:0:0]
			for _, ip := range r.hostIPs {
				if res.from.AllowsAddr(ip) {
					kept = append(kept, ip)
				}
			}
			d.c.hostIPsDropped.Add(uint64(len(r.hostIPs) - len(kept)))
			r.hostIPs = kept
		}
	}
	var out []ExposureChange
	d.st.mu.Lock()
	dup := d.st.duplicate(r)
	if !dup {
		d.st.apply(r, func(c ExposureChange) { out = append(out, c) })
	}
	d.st.mu.Unlock()
	if dup {
		res.Duplicates++
		fc.duplicates.Add(1)
		return
	}
	res.Relevant++
	fc.relevant.Add(1)
	for _, c := range out {
		if res.from != nil {
			d.restrictAddrs(&c, res.from)
		}
		res.Emitted++
		fc.emitted.Add(1)
		emit(c)
	}
}

func hasDTD(b []byte) bool {
	return bytes.Contains(b, []byte("<!DOCTYPE")) || bytes.Contains(b, []byte("<!ENTITY"))
}

// maxHostNameBytes is the longest DNS name; a longer computer name is cut.
const maxHostNameBytes = 255

// restrictAddrs drops from c the addresses its sender may not name: host
// addresses (some learned by the join state) and a listener's bound
// address, which the pipeline takes as the host's own.
func (d *Decoder) restrictAddrs(c *ExposureChange, from HostPolicy) {
	if len(c.HostIPs) > 0 {
		kept := make([]netip.Addr, 0, len(c.HostIPs))
		for _, ip := range c.HostIPs {
			if from.AllowsAddr(ip) {
				kept = append(kept, ip)
			}
		}
		d.c.hostIPsDropped.Add(uint64(len(c.HostIPs) - len(kept)))
		c.HostIPs = kept
	}
	if c.Kind == KindListener && c.LocalAddress.IsValid() && !c.LocalAddress.IsUnspecified() &&
		!c.LocalAddress.IsLoopback() && !from.AllowsAddr(c.LocalAddress) {
		d.c.hostIPsDropped.Add(1)
		c.LocalAddress = netip.Addr{}
	}
}
