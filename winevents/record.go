package winevents

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// record is one Windows event after format decoding and before semantics:
// the System part plus the EventData as name/value pairs.
type record struct {
	format   Format
	channel  string
	provider string
	eventID  uint32
	recordID uint64
	computer string
	time     time.Time
	hostIPs  []netip.Addr
	data     []field
	// For JSON records the data stay as spans of the payload and become
	// strings only when asked for (jobj is valid while the record is being
	// processed, never after).
	jobj   *jsonObj
	jscope jscope
}

type field struct {
	name, value string
}

// get returns the value of a data field ("" when absent). Names compare
// exactly first, then case-insensitively (exporters differ: ProcessId,
// ProcessID).
func (r *record) get(name string) string {
	v := r.getRaw(name)
	switch name {
	case "RuleId", "RuleName", "FilterName":
		// Join keys: kept by the join state, so bounded.
		v = clampField(v, maxKeptFieldBytes)
	}
	return v
}

func (r *record) getRaw(name string) string {
	if r.jobj != nil {
		return r.jobj.get(r.jscope, name)
	}
	for i := range r.data {
		if r.data[i].name == name {
			return r.data[i].value
		}
	}
	for i := range r.data {
		if strings.EqualFold(r.data[i].name, name) {
			return r.data[i].value
		}
	}
	return ""
}

// maxKeptFieldBytes bounds every string of a change the join state keeps
// (rule names, paths, users): a forwarder could otherwise make each kept
// change as large as an event (1 MiB). Emitted changes keep their values
// whole (whole.go: also those emitted again from the join state), except
// the join keys RuleId, RuleName and FilterName, cut when read; real
// values are far shorter (MAX_PATH is 260 characters).
const maxKeptFieldBytes = 512

// truncatedMark ends a value cut at a bound. '<' and '>' cannot be in a
// Windows path, so a cut path never matches an admin application.
const truncatedMark = "<truncated>"

// clampField cuts v to at most max bytes, on a rune boundary, marked.
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

func (r *record) source() SourceRef {
	return SourceRef{Format: r.format, Channel: r.channel, EventID: r.eventID, RecordID: r.recordID, Time: r.time}
}

// Channel names as Windows writes them.
const (
	chanFirewall = "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall"
	chanSecurity = "Security"
	chanSystem   = "System"
	chanSysmon   = "Microsoft-Windows-Sysmon/Operational"
)

// channelClass maps a channel (or, when the channel is missing, a provider
// name) to one of the four channels knockwatch reads.
type channelClass uint8

const (
	clsOther channelClass = iota
	clsFirewall
	clsSecurity
	clsSystem
	clsSysmon
)

func classifyChannel(ch string) channelClass {
	switch {
	case strings.EqualFold(ch, chanSecurity):
		return clsSecurity
	case strings.EqualFold(ch, chanFirewall):
		return clsFirewall
	case strings.EqualFold(ch, chanSystem):
		return clsSystem
	case strings.EqualFold(ch, chanSysmon):
		return clsSysmon
	}
	return clsOther
}

func classifyProvider(p string) channelClass {
	switch {
	case strings.EqualFold(p, "Microsoft-Windows-Security-Auditing"):
		return clsSecurity
	case strings.EqualFold(p, "Microsoft-Windows-Windows Firewall With Advanced Security"):
		return clsFirewall
	case strings.EqualFold(p, "Service Control Manager"):
		return clsSystem
	case strings.EqualFold(p, "Microsoft-Windows-Sysmon"):
		return clsSysmon
	}
	return clsOther
}

// relevant reports whether an event ID on a channel class is one the
// semantics handle. It is the cheap pre-filter run before a full parse.
func relevant(cls channelClass, id uint32) bool {
	switch cls {
	case clsFirewall:
		switch id {
		case 2004, 2071, 2097, 2005, 2073, 2099, 2006, 2052, 2033, 2059, 2003, 2082:
			return true
		}
	case clsSecurity:
		switch id {
		case 4946, 4947, 4948, 4950, 5447, 5154, 5158, 5156:
			return true
		}
	case clsSystem:
		return id == 7045 || id == 7036
	case clsSysmon:
		return id == 3
	}
	return false
}

// Time layouts seen in the wild.
const (
	layoutSpaceFrac = "2006-01-02 15:04:05.999999999"
	layoutTFrac     = "2006-01-02T15:04:05.999999999"
)

// parseUTCTime parses a timestamp that is UTC when it carries no zone:
// SystemTime (ISO-8601 with Z, or "YYYY-MM-DD hh:mm:ss.ffffff" as some
// exporters write it), @timestamp, Sysmon UtcTime.
func parseUTCTime(s string) (time.Time, bool) {
	return parseTimeIn(s, time.UTC)
}

// parseTimeIn parses a timestamp with or without a zone; without one it is
// read in loc.
func parseTimeIn(s string, loc *time.Location) (time.Time, bool) {
	s = strings.TrimSpace(s)
	if len(s) < 19 {
		return time.Time{}, false
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), true
	}
	for _, layout := range [...]string{layoutSpaceFrac, layoutTFrac} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t.UTC(), true
		}
	}
	// "2006-01-02 15:04:05Z" and offsets after a space-separated time.
	if t, err := time.Parse("2006-01-02 15:04:05.999999999Z07:00", s); err == nil {
		return t.UTC(), true
	}
	return time.Time{}, false
}

func parseUint(s string, bits int) (uint64, bool) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X") {
		n, err := strconv.ParseUint(s[2:], 16, bits)
		return n, err == nil
	}
	n, err := strconv.ParseUint(s, 10, bits)
	return n, err == nil
}
