package winevents

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
)

// Native Event XML: one <Event> element per event, as WEF forwards it
// (with or without RenderingInfo), concatenated without a root as
// `wevtutil qe /f:xml` prints it, or wrapped in <Events>.
//
// Events are split by a byte scan for "<Event" and "</Event>"; a peek at
// the first <EventID> and <Channel> (both in <System>, which comes first)
// decides relevance without parsing. Relevant events are parsed with
// encoding/xml in strict mode, refusing DTDs (so no entity can be
// declared or expanded) and nesting deeper than maxXMLDepth.

const maxXMLDepth = 16

var (
	errXMLDTD   = errors.New("xml DTD or entity declaration not allowed")
	errXMLDepth = errors.New("xml nested too deep")
	errNoEvent  = errors.New("no <Event> element")
)

var (
	tagEventOpen  = []byte("<Event")
	tagEventClose = []byte("</Event>")
)

// nextXMLEvent finds the next <Event ...>...</Event> in b at or after i.
// It returns the bounds of the element; found=false when there is none.
// incomplete=true when an <Event starts but its end is not in b.
func nextXMLEvent(b []byte, i int) (start, end int, found, incomplete bool) {
	for {
		k := bytes.Index(b[i:], tagEventOpen)
		if k < 0 {
			return 0, 0, false, false
		}
		start = i + k
		j := start + len(tagEventOpen)
		if j >= len(b) {
			return start, 0, false, true
		}
		if c := b[j]; c != '>' && c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '/' {
			i = j // <Events>, <EventData>, <EventID>, ...
			continue
		}
		e := bytes.Index(b[j:], tagEventClose)
		if e < 0 {
			return start, 0, false, true
		}
		return start, j + e + len(tagEventClose), true, false
	}
}

// peekXML reads EventID and Channel (or the provider name when there is
// no channel) from an event's bytes without parsing it.
func peekXML(ev []byte) (id uint32, idOK bool, cls channelClass, channel string) {
	if k := bytes.Index(ev, []byte("<EventID")); k >= 0 {
		rest := ev[k+len("<EventID"):]
		if gt := bytes.IndexByte(rest, '>'); gt >= 0 {
			txt := rest[gt+1:]
			if lt := bytes.IndexByte(txt, '<'); lt >= 0 {
				if n, ok := parseUint(string(bytes.TrimSpace(txt[:lt])), 32); ok {
					id, idOK = uint32(n), true
				}
			}
		}
	}
	if k := bytes.Index(ev, []byte("<Channel>")); k >= 0 {
		txt := ev[k+len("<Channel>"):]
		if lt := bytes.IndexByte(txt, '<'); lt >= 0 {
			raw := bytes.TrimSpace(txt[:lt])
			cls = classifyChannel(string(raw))
			if cls != clsOther {
				return id, idOK, cls, canonicalChannel(cls)
			}
			if len(raw) > 0 {
				return id, idOK, cls, string(raw)
			}
		}
	}
	if k := bytes.Index(ev, []byte("<Provider Name=")); k >= 0 && k+len("<Provider Name=")+1 < len(ev) {
		rest := ev[k+len("<Provider Name="):]
		q := rest[0]
		if e := bytes.IndexByte(rest[1:], q); e >= 0 {
			cls = classifyProvider(string(rest[1 : 1+e]))
			channel = canonicalChannel(cls)
		}
	}
	return id, idOK, cls, channel
}

// xmlParts is what both XML parsers extract from one <Event>.
type xmlParts struct {
	sawEvent                                                   bool
	idText, recText, timeText, channelText, computer, provider string
	data                                                       []field
}

// parseXMLEvent parses one <Event> element: the fast scanner when it is
// sure of the input, else encoding/xml in strict mode, which decides.
func parseXMLEvent(ev []byte) (*record, Reason, error) {
	if bytes.Contains(ev, []byte("<!")) && hasDTD(ev) {
		return nil, ReasonDTD, errXMLDTD
	}
	if p, ok := fastXMLEvent(ev); ok {
		return p.record()
	}
	return parseXMLEventStd(ev)
}

// parseXMLEventStd parses one <Event> element with encoding/xml.
func parseXMLEventStd(ev []byte) (*record, Reason, error) {
	d := xml.NewDecoder(bytes.NewReader(ev))
	d.Strict = true
	var (
		p        xmlParts
		path     [maxXMLDepth + 1]string
		depth    int
		text     strings.Builder
		dataName string
		inData   bool
	)
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, ReasonMalformedXML, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth >= maxXMLDepth {
				return nil, ReasonTooDeep, errXMLDepth
			}
			path[depth] = t.Name.Local
			depth++
			text.Reset()
			switch {
			case depth == 1:
				if t.Name.Local != "Event" {
					return nil, ReasonMalformedXML, errNoEvent
				}
				p.sawEvent = true
			case depth == 3 && path[1] == "System":
				switch t.Name.Local {
				case "TimeCreated":
					p.timeText = attr(t, "SystemTime")
				case "Provider":
					p.provider = attr(t, "Name")
				}
			case depth == 3 && path[1] == "EventData" && t.Name.Local == "Data":
				inData, dataName = true, attr(t, "Name")
			}
		case xml.EndElement:
			if depth == 3 && path[1] == "System" {
				p.systemText(path[2], text.String())
			}
			if depth == 3 && inData {
				p.data = append(p.data, field{name: dataName, value: text.String()})
				inData = false
			}
			depth--
			text.Reset()
		case xml.CharData:
			if depth == 3 {
				text.Write(t)
			}
		case xml.Directive:
			return nil, ReasonDTD, errXMLDTD
		}
	}
	return p.record()
}

func (p *xmlParts) systemText(elem, text string) {
	s := strings.TrimSpace(text)
	switch elem {
	case "EventID":
		p.idText = s
	case "EventRecordID":
		p.recText = s
	case "Channel":
		p.channelText = s
	case "Computer":
		p.computer = s
	}
}

func (p *xmlParts) record() (*record, Reason, error) {
	if !p.sawEvent {
		return nil, ReasonMalformedXML, errNoEvent
	}
	r := &record{format: FormatXML, computer: p.computer, provider: p.provider, data: p.data}
	n, ok := parseUint(p.idText, 32)
	if !ok {
		return nil, ReasonMissingEventID, errors.New("parse event: no EventID")
	}
	r.eventID = uint32(n)
	if n, ok := parseUint(p.recText, 64); ok {
		r.recordID = n
	}
	cls := classifyChannel(p.channelText)
	if cls == clsOther && p.channelText == "" {
		cls = classifyProvider(r.provider)
	}
	r.channel = p.channelText
	if cls != clsOther {
		r.channel = canonicalChannel(cls)
	}
	t, ok := parseUTCTime(p.timeText)
	if !ok {
		return nil, ReasonBadTime, errors.New("parse event: bad SystemTime")
	}
	r.time = t
	if r.computer == "" {
		return nil, ReasonMissingHost, errors.New("parse event: no Computer")
	}
	return r, "", nil
}

func attr(t xml.StartElement, name string) string {
	for _, a := range t.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}
