package intake

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Syslog message formats reported in SyslogMessage.Format.
const (
	SyslogRFC5424 = "rfc5424"
	SyslogRFC3164 = "rfc3164"
	SyslogRaw     = "raw" // no syslog header: a bare JSON or XML event (e.g. NXLog om_tcp without xm_syslog)
)

// SyslogMessage is a parsed syslog message. Msg aliases the parsed input.
type SyslogMessage struct {
	Format         string
	Facility       int // -1 when Format is raw
	Severity       int // -1 when Format is raw
	Timestamp      time.Time
	Hostname       string
	AppName        string
	ProcID         string
	MsgID          string
	StructuredData string
	Msg            []byte
}

var errNoSyslog = errors.New("not a syslog message: no <PRI> header and not a JSON or XML event")

const maxHeaderField = 255

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// ParseSyslog parses one syslog message in RFC 5424 or RFC 3164 (BSD) form.
// A frame without a <PRI> header whose content starts like a JSON or XML
// event is accepted as Format "raw". RFC 3164 timestamps have no year and no
// zone: they are read in loc (nil: UTC) and given the year that puts them
// closest before now (a December stamp received in January is last year's).
// The timestamp is informational: the event's own time is what counts.
func ParseSyslog(b []byte, now time.Time, loc *time.Location) (SyslogMessage, error) {
	if loc == nil {
		loc = time.UTC
	}
	m := SyslogMessage{Facility: -1, Severity: -1}
	pri, rest, ok := parsePRI(b)
	if !ok {
		t := trimMsg(b)
		if looksLikeEvent(t) {
			m.Format, m.Msg = SyslogRaw, t
			return m, nil
		}
		return m, errNoSyslog
	}
	m.Facility, m.Severity = pri/8, pri%8
	if len(rest) >= 2 && rest[0] >= '1' && rest[0] <= '9' && rest[1] == ' ' {
		m.Format = SyslogRFC5424
		return m, parse5424(&m, rest[2:])
	}
	m.Format = SyslogRFC3164
	parse3164(&m, rest, now, loc)
	return m, nil
}

// looksLikeEvent reports whether b starts like a JSON value or an Event XML
// document.
func looksLikeEvent(b []byte) bool {
	return len(b) > 0 && (b[0] == '{' || b[0] == '[') ||
		bytes.HasPrefix(b, []byte("<Event")) || bytes.HasPrefix(b, []byte("<?xml"))
}

func parsePRI(b []byte) (int, []byte, bool) {
	if len(b) < 3 || b[0] != '<' {
		return 0, nil, false
	}
	v, i := 0, 1
	for ; i < len(b) && i <= 4 && b[i] >= '0' && b[i] <= '9'; i++ {
		v = v*10 + int(b[i]-'0')
	}
	if i == 1 || i > 4 || i >= len(b) || b[i] != '>' || v > 191 {
		return 0, nil, false
	}
	return v, b[i+1:], true
}

// token splits b at the first space.
func token(b []byte) (tok, rest []byte, ok bool) {
	i := bytes.IndexByte(b, ' ')
	if i < 0 {
		return b, nil, false
	}
	return b[:i], b[i+1:], true
}

func nilValue(b []byte) string {
	if len(b) == 1 && b[0] == '-' {
		return ""
	}
	return string(b)
}

func parse5424(m *SyslogMessage, b []byte) error {
	var fields [5][]byte
	for i := range fields {
		tok, rest, ok := token(b)
		if !ok || len(tok) == 0 || len(tok) > maxHeaderField {
			return fmt.Errorf("parse rfc5424 header: field %d missing or malformed", i+2)
		}
		fields[i], b = tok, rest
	}
	if ts := nilValue(fields[0]); ts != "" {
		if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			m.Timestamp = t
		}
	}
	m.Hostname, m.AppName = nilValue(fields[1]), nilValue(fields[2])
	m.ProcID, m.MsgID = nilValue(fields[3]), nilValue(fields[4])
	sd, rest, err := structuredData(b)
	if err != nil {
		return err
	}
	m.StructuredData = sd
	switch {
	case len(rest) == 0:
	case rest[0] == ' ':
		m.Msg = trimMsg(rest[1:])
	default:
		return errors.New("parse rfc5424: no space after structured data")
	}
	return nil
}

// structuredData returns the SD part ("" for the nil value) and the rest.
func structuredData(b []byte) (string, []byte, error) {
	if len(b) == 0 {
		return "", nil, errors.New("parse rfc5424: structured data missing")
	}
	if b[0] == '-' {
		return "", b[1:], nil
	}
	i := 0
	for i < len(b) && b[i] == '[' {
		inQuote, closed := false, false
		for i++; i < len(b); i++ {
			c := b[i]
			if inQuote {
				if c == '\\' {
					i++
				} else if c == '"' {
					inQuote = false
				}
				continue
			}
			if c == '"' {
				inQuote = true
			} else if c == ']' {
				closed = true
				i++
				break
			}
		}
		if !closed {
			return "", nil, errors.New("parse rfc5424: unterminated structured data element")
		}
	}
	if i == 0 {
		return "", nil, errors.New("parse rfc5424: structured data must be '-' or start with '['")
	}
	return string(b[:i]), b[i:], nil
}

func parse3164(m *SyslogMessage, b []byte, now time.Time, loc *time.Location) {
	b = bytes.TrimLeft(b, " ")
	if t, n, ok := bsdTime(b, now, loc); ok {
		m.Timestamp = t
		b = bytes.TrimLeft(b[n:], " ")
		// a hostname follows a timestamp, unless the next token is already the tag
		if tok, rest, ok := token(b); ok && len(tok) <= maxHeaderField &&
			!bytes.HasSuffix(tok, []byte(":")) && !bytes.ContainsAny(tok, "[{<") {
			m.Hostname, b = string(tok), rest
		}
	}
	m.AppName, m.ProcID, b = bsdTag(b)
	m.Msg = trimMsg(b)
}

// bsdTime reads "Mmm dd hh:mm:ss" (optionally followed by a year) or an
// RFC 3339 stamp (as rsyslog's high-precision BSD format writes).
func bsdTime(b []byte, now time.Time, loc *time.Location) (time.Time, int, bool) {
	if len(b) >= 15 && b[3] == ' ' && b[9] == ':' && b[12] == ':' {
		day := b[4:6]
		if day[0] == ' ' {
			day = day[1:]
		}
		s := string(b[:3]) + " " + string(day) + " " + string(b[7:15])
		if t, err := time.ParseInLocation("Jan 2 15:04:05", s, loc); err == nil {
			n := 15
			year := now.In(loc).Year()
			if len(b) >= 20 && b[15] == ' ' && isDigits(b[16:20]) && (len(b) == 20 || b[20] == ' ') {
				year, _ = strconv.Atoi(string(b[16:20]))
				n = 20
			}
			t = time.Date(year, t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, loc)
			if n == 15 && t.Sub(now) > 7*24*time.Hour {
				t = t.AddDate(-1, 0, 0)
			}
			return t, n, true
		}
	}
	if tok, _, _ := token(b); len(tok) >= 20 && tok[4] == '-' && tok[10] == 'T' {
		if t, err := time.Parse(time.RFC3339Nano, string(tok)); err == nil {
			return t, len(tok), true
		}
	}
	return time.Time{}, 0, false
}

// bsdTag reads the TAG at the start of b: "TAG[PID]: ", "TAG: ",
// "TAG[PID] " or "TAG " (RFC 3164 §4.1.3: the TAG ends at the first
// character that is not alphanumeric, most often '[', ':' or a space;
// rsyslog's default forwarding templates send an imfile Tag="winevt" as
// "winevt <Event ..."). A tag ended by a space is taken only when the
// message after it starts like an event (JSON or XML), so a message
// without a tag keeps its first word. Without a tag the whole of b is
// the message.
func bsdTag(b []byte) (app, pid string, rest []byte) {
	i := 0
	for i < len(b) && i <= 128 && isTagChar(b[i]) {
		i++
	}
	if i == 0 || i >= len(b) {
		return "", "", b
	}
	app, j := string(b[:i]), i
	if b[j] == '[' {
		k := bytes.IndexByte(b[j:], ']')
		if k < 0 || k > 130 {
			return "", "", b
		}
		pid, j = string(b[j+1:j+k]), j+k+1
	}
	switch {
	case j < len(b) && b[j] == ':':
		j++
		if j < len(b) && b[j] == ' ' {
			j++
		}
		return app, pid, b[j:]
	case j < len(b) && b[j] == ' ' && looksLikeEvent(trimMsg(b[j+1:])):
		return app, pid, b[j+1:]
	}
	return "", "", b
}

func isTagChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '_' || c == '.' || c == '/'
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

// trimMsg strips a leading UTF-8 BOM and surrounding white space/NULs.
func trimMsg(b []byte) []byte {
	b = bytes.TrimLeft(b, " \t\r\n\x00")
	b = bytes.TrimPrefix(b, utf8BOM)
	return bytes.Trim(b, " \t\r\n\x00")
}

// meta turns the header into Message.Meta.
func (m *SyslogMessage) meta() map[string]string {
	md := map[string]string{MetaSyslogFmt: m.Format}
	set := func(k, v string) {
		if v != "" {
			md[k] = v
		}
	}
	set(MetaHostname, m.Hostname)
	set(MetaAppName, m.AppName)
	set(MetaProcID, m.ProcID)
	set(MetaMsgID, m.MsgID)
	if !m.Timestamp.IsZero() {
		md[MetaTimestamp] = m.Timestamp.UTC().Format(time.RFC3339Nano)
	}
	if m.Facility >= 0 {
		md[MetaFacility] = strconv.Itoa(m.Facility)
		md[MetaSeverity] = strconv.Itoa(m.Severity)
	}
	return md
}
