package winevents

import (
	"bytes"
	"errors"
	"unicode/utf16"
	"unicode/utf8"
)

// A small validating JSON scanner: it walks objects without building them,
// so an irrelevant event costs one pass over its bytes and no allocation.
// Only the members the decoders ask for are turned into strings.

var (
	errJSONSyntax = errors.New("json syntax error")
	errJSONDepth  = errors.New("json nested too deep")
	errJSONEOF    = errors.New("json value truncated")
)

const maxJSONDepth = 64

type jsonScanner struct {
	b []byte
	i int
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (s *jsonScanner) ws() {
	for s.i < len(s.b) && isJSONSpace(s.b[s.i]) {
		s.i++
	}
}

// str scans a string starting at the opening quote and returns its raw
// content (between the quotes) and whether it holds escapes.
func (s *jsonScanner) str() (raw []byte, esc bool, err error) {
	if s.i >= len(s.b) {
		return nil, false, errJSONEOF
	}
	if s.b[s.i] != '"' {
		return nil, false, errJSONSyntax
	}
	start := s.i + 1
	j := start
	for {
		k := bytes.IndexByte(s.b[j:], '"')
		if k < 0 {
			return nil, false, errJSONEOF
		}
		seg := s.b[j : j+k]
		if bs := bytes.IndexByte(seg, '\\'); bs >= 0 {
			if hasControl(seg[:bs]) {
				return nil, false, errJSONSyntax
			}
			esc = true
			e := j + bs + 1 // the escaped character
			if e >= len(s.b) {
				return nil, false, errJSONEOF
			}
			switch s.b[e] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j = e + 1
			case 'u':
				if e+4 >= len(s.b) {
					return nil, false, errJSONEOF
				}
				for m := 1; m <= 4; m++ {
					if hexVal(s.b[e+m]) < 0 {
						return nil, false, errJSONSyntax
					}
				}
				j = e + 5
			default:
				return nil, false, errJSONSyntax
			}
			continue
		}
		if hasControl(seg) {
			return nil, false, errJSONSyntax
		}
		s.i = j + k + 1
		return s.b[start : j+k], esc, nil
	}
}

func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 {
			return true
		}
	}
	return false
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// skip scans any value (validating it) and returns its kind: '"', '{',
// '[', 'n' (number), 't'/'f' (bool) or 'z' (null).
func (s *jsonScanner) skip(depth int) (byte, error) {
	s.ws()
	if s.i >= len(s.b) {
		return 0, errJSONEOF
	}
	switch c := s.b[s.i]; {
	case c == '"':
		_, _, err := s.str()
		return '"', err
	case c == '{':
		return '{', s.object(depth+1, nil)
	case c == '[':
		return '[', s.array(depth+1, nil)
	case c == 't':
		return 't', s.lit("true")
	case c == 'f':
		return 'f', s.lit("false")
	case c == 'n':
		return 'z', s.lit("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return 'n', s.number()
	}
	return 0, errJSONSyntax
}

func (s *jsonScanner) lit(w string) error {
	if len(s.b)-s.i < len(w) {
		return errJSONEOF
	}
	if string(s.b[s.i:s.i+len(w)]) != w {
		return errJSONSyntax
	}
	s.i += len(w)
	return nil
}

func (s *jsonScanner) number() error {
	j := s.i
	if j < len(s.b) && s.b[j] == '-' {
		j++
	}
	digits := func() int {
		k := j
		for j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9' {
			j++
		}
		return j - k
	}
	if n := digits(); n == 0 || (n > 1 && s.b[j-n] == '0') {
		return errJSONSyntax
	}
	if j < len(s.b) && s.b[j] == '.' {
		j++
		if digits() == 0 {
			return errJSONSyntax
		}
	}
	if j < len(s.b) && (s.b[j] == 'e' || s.b[j] == 'E') {
		j++
		if j < len(s.b) && (s.b[j] == '+' || s.b[j] == '-') {
			j++
		}
		if digits() == 0 {
			return errJSONSyntax
		}
	}
	s.i = j
	return nil
}

// member is called for each member of an object with the raw key (no
// escapes resolved; esc tells whether it had any); it must consume the
// value by calling s.skip or s.value, or return handled=false to let object
// skip it.
type memberFunc func(key []byte, esc bool, depth int) (handled bool, err error)

// object scans an object starting at '{'.
func (s *jsonScanner) object(depth int, fn memberFunc) error {
	if depth > maxJSONDepth {
		return errJSONDepth
	}
	s.i++ // '{'
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	for {
		s.ws()
		key, esc, err := s.str()
		if err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return errJSONEOF
		}
		if s.b[s.i] != ':' {
			return errJSONSyntax
		}
		s.i++
		handled := false
		if fn != nil {
			if handled, err = fn(key, esc, depth); err != nil {
				return err
			}
		}
		if !handled {
			if _, err := s.skip(depth); err != nil {
				return err
			}
		}
		s.ws()
		if s.i >= len(s.b) {
			return errJSONEOF
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return errJSONSyntax
		}
	}
}

// array scans an array starting at '['; fn (if not nil) is called at the
// start of each element and must consume it.
func (s *jsonScanner) array(depth int, fn func(depth int) error) error {
	if depth > maxJSONDepth {
		return errJSONDepth
	}
	s.i++ // '['
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return nil
	}
	for {
		s.ws()
		if fn != nil {
			if err := fn(depth); err != nil {
				return err
			}
		} else if _, err := s.skip(depth); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return errJSONEOF
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return errJSONSyntax
		}
	}
}

// scalar scans a scalar value and returns its raw bytes (string content
// without quotes, or the number/bool literal); null gives nil. ok is false
// (and the value is skipped) for objects and arrays.
func (s *jsonScanner) scalar(depth int) (raw []byte, esc bool, ok bool, err error) {
	s.ws()
	if s.i >= len(s.b) {
		return nil, false, false, errJSONEOF
	}
	start := s.i
	if s.b[s.i] == '"' {
		raw, esc, err = s.str()
		return raw, esc, err == nil, err
	}
	kind, err := s.skip(depth)
	if err != nil {
		return nil, false, false, err
	}
	switch kind {
	case 'n', 't', 'f':
		return s.b[start:s.i], false, true, nil
	case 'z':
		return nil, false, true, nil
	}
	return nil, false, false, nil
}

// unescapeJSON resolves the escapes of a raw JSON string (already validated
// by str). Invalid surrogates become U+FFFD, as encoding/json does.
func unescapeJSON(raw []byte) string {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		switch raw[i] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := rune(hex4(raw[i+1 : i+5]))
			i += 4
			if utf16.IsSurrogate(r) {
				if i+6 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u' {
					r2 := rune(hex4(raw[i+3 : i+7]))
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						out = utf8.AppendRune(out, dec)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			out = utf8.AppendRune(out, r)
		default: // '"', '\\', '/'
			out = append(out, raw[i])
		}
	}
	return string(out)
}

func hex4(b []byte) int {
	return hexVal(b[0])<<12 | hexVal(b[1])<<8 | hexVal(b[2])<<4 | hexVal(b[3])
}

// jsonString converts a raw scalar to a Go string, resolving escapes and
// replacing invalid UTF-8 (as encoding/json does).
func jsonString(raw []byte, esc bool) string {
	if esc {
		return toValidUTF8(unescapeJSON(raw))
	}
	return toValidUTF8(string(raw))
}

func toValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	b := make([]byte, 0, len(s))
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		if r == utf8.RuneError && n == 1 {
			b = utf8.AppendRune(b, utf8.RuneError)
		} else {
			b = append(b, s[:n]...)
		}
		s = s[n:]
	}
	return string(b)
}
