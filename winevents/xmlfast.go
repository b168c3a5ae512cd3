package winevents

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// fastXMLEvent reads the common shape of one <Event> element in a single
// pass without encoding/xml (which costs ~50 µs an event). It accepts only
// what it fully understands: elements without namespace prefixes, quoted
// attributes, text with the five predefined entities and character
// references, comments. Anything else (CDATA, processing instructions or
// declarations inside the event, prefixes, odd characters, mismatched
// tags) returns ok=false and the caller falls back to encoding/xml, which
// decides. FuzzXMLFastVsStd checks that both agree whenever this one
// accepts.
func fastXMLEvent(b []byte) (p xmlParts, ok bool) {
	var (
		stack    [maxXMLDepth][]byte
		depth    int
		text     []byte
		dataName string
		inData   bool
		done     bool
	)
	elemIs := func(d int, name string) bool { return d < depth && string(stack[d]) == name }
	i := 0
	for i < len(b) {
		if b[i] != '<' {
			k := bytes.IndexByte(b[i:], '<')
			if k < 0 {
				k = len(b) - i
			}
			chunk := b[i : i+k]
			i += k
			if depth == 0 {
				if !isXMLSpace(chunk) {
					return p, false
				}
				continue
			}
			if depth == 3 {
				var good bool
				if text, good = appendXMLText(text, chunk); !good {
					return p, false
				}
			} else if !validXMLText(chunk) {
				return p, false
			}
			continue
		}
		if done {
			return p, false // something after the root element
		}
		rest := b[i:]
		switch {
		case bytes.HasPrefix(rest, []byte("<!--")):
			end := bytes.Index(rest[4:], []byte("-->"))
			if end < 0 || bytes.Contains(rest[4:4+end], []byte("--")) || !validXMLText(rest[4:4+end]) {
				return p, false
			}
			i += 4 + end + 3
			continue
		case len(rest) > 1 && (rest[1] == '!' || rest[1] == '?'):
			return p, false
		case len(rest) > 1 && rest[1] == '/':
			end := bytes.IndexByte(rest, '>')
			if end < 0 || depth == 0 {
				return p, false
			}
			name := bytes.TrimRight(rest[2:end], " \t\r\n")
			if !bytes.Equal(name, stack[depth-1]) {
				return p, false
			}
			if depth == 3 && elemIs(1, "System") {
				p.systemText(string(stack[2]), string(text))
			}
			if depth == 3 && inData {
				p.data = append(p.data, field{name: dataName, value: string(text)})
				inData = false
			}
			depth--
			text = text[:0]
			i += end + 1
			if depth == 0 {
				done = true
			}
			continue
		}
		// Start tag.
		j := i + 1
		n := xmlNameEnd(b, j)
		if n == j || n >= len(b) {
			return p, false
		}
		name := b[j:n]
		if bytes.IndexByte(name, ':') >= 0 || depth >= maxXMLDepth {
			return p, false
		}
		stack[depth] = name
		depth++
		text = text[:0]
		if depth == 1 {
			if string(name) != "Event" {
				return p, false
			}
			p.sawEvent = true
		}
		want3 := ""
		if depth == 3 && elemIs(1, "System") {
			switch string(name) {
			case "TimeCreated":
				want3 = "SystemTime"
			case "Provider":
				want3 = "Name"
			}
		}
		isData := depth == 3 && elemIs(1, "EventData") && string(name) == "Data"
		if isData {
			inData, dataName = true, ""
		}
		// Attributes.
		k := n
		selfClose := false
		for {
			sp := k
			for k < len(b) && isXMLSpaceByte(b[k]) {
				k++
			}
			if k >= len(b) {
				return p, false
			}
			if b[k] == '>' {
				k++
				break
			}
			if b[k] == '/' {
				if k+1 >= len(b) || b[k+1] != '>' {
					return p, false
				}
				k += 2
				selfClose = true
				break
			}
			if sp == k { // attributes must be separated by space
				return p, false
			}
			an := xmlNameEnd(b, k)
			if an == k || an >= len(b) {
				return p, false
			}
			aname := b[k:an]
			k = an
			for k < len(b) && isXMLSpaceByte(b[k]) {
				k++
			}
			if k >= len(b) || b[k] != '=' {
				return p, false
			}
			k++
			for k < len(b) && isXMLSpaceByte(b[k]) {
				k++
			}
			if k >= len(b) || (b[k] != '"' && b[k] != '\'') {
				return p, false
			}
			q := b[k]
			end := bytes.IndexByte(b[k+1:], q)
			if end < 0 {
				return p, false
			}
			raw := b[k+1 : k+1+end]
			k += end + 2
			if bytes.IndexByte(raw, '<') >= 0 {
				return p, false
			}
			if bytes.IndexByte(aname, ':') >= 0 {
				return p, false
			}
			val, good := appendXMLText(nil, raw)
			if !good {
				return p, false
			}
			switch {
			case want3 != "" && string(aname) == want3:
				if want3 == "SystemTime" {
					p.timeText = string(val)
				} else {
					p.provider = string(val)
				}
			case isData && string(aname) == "Name":
				dataName = string(val)
			}
		}
		i = k
		if selfClose {
			if depth == 3 && elemIs(1, "System") {
				p.systemText(string(name), "")
			}
			if depth == 3 && inData {
				p.data = append(p.data, field{name: dataName, value: ""})
				inData = false
			}
			depth--
			if depth == 0 {
				done = true
			}
		}
	}
	if !done {
		return p, false
	}
	return p, true
}

func isXMLSpaceByte(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isXMLSpace(b []byte) bool {
	for _, c := range b {
		if !isXMLSpaceByte(c) {
			return false
		}
	}
	return true
}

// xmlNameEnd returns the end of an XML name starting at i (ASCII names
// only; anything else makes the caller fall back).
func xmlNameEnd(b []byte, i int) int {
	j := i
	for j < len(b) {
		c := b[j]
		ok := c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			(j > i && (c == '-' || c == '.' || (c >= '0' && c <= '9')))
		if !ok {
			break
		}
		j++
	}
	if j < len(b) && b[j] >= 0x80 {
		return i // non-ASCII name: let encoding/xml decide
	}
	return j
}

// validXMLText checks text the fast path skips: valid UTF-8, XML
// characters only, and well-formed entity references.
func validXMLText(b []byte) bool {
	_, ok := appendXMLText(nil, b)
	return ok
}

// appendXMLText appends decoded text (entities resolved, CR LF and lone CR
// turned into LF as encoding/xml does) and reports whether the text is
// well formed.
func appendXMLText(dst, b []byte) ([]byte, bool) {
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c == '&':
			semi := bytes.IndexByte(b[i:], ';')
			if semi < 0 {
				return dst, false
			}
			ent := b[i+1 : i+semi]
			i += semi + 1
			switch string(ent) {
			case "lt":
				dst = append(dst, '<')
			case "gt":
				dst = append(dst, '>')
			case "amp":
				dst = append(dst, '&')
			case "apos":
				dst = append(dst, '\'')
			case "quot":
				dst = append(dst, '"')
			default:
				if len(ent) < 2 || ent[0] != '#' {
					return dst, false
				}
				var n uint64
				var err error
				if ent[1] == 'x' {
					n, err = strconv.ParseUint(string(ent[2:]), 16, 32)
				} else {
					n, err = strconv.ParseUint(string(ent[1:]), 10, 32)
				}
				if err != nil || !isXMLChar(rune(n)) {
					return dst, false
				}
				dst = utf8.AppendRune(dst, rune(n))
			}
		case c == '\r':
			dst = append(dst, '\n')
			i++
			if i < len(b) && b[i] == '\n' {
				i++
			}
		case c < 0x80:
			if c < 0x20 && c != '\t' && c != '\n' {
				return dst, false
			}
			if c == '>' && i >= 2 && b[i-1] == ']' && b[i-2] == ']' {
				return dst, false // "]]>" is not allowed in text
			}
			dst = append(dst, c)
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 || !isXMLChar(r) {
				return dst, false
			}
			dst = append(dst, b[i:i+size]...)
			i += size
		}
	}
	return dst, true
}

// isXMLChar is the XML 1.0 Char production.
func isXMLChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D || (r >= 0x20 && r <= 0xD7FF) ||
		(r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= 0x10FFFF)
}
