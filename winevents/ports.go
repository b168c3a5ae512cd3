package winevents

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// PortRange is an inclusive range of ports; a single port has Lo == Hi.
type PortRange struct {
	Lo, Hi uint16
}

// PortSet is the set of local ports a change concerns, parsed from the
// Windows notation ("22", "80,443", "5000-5010", "*", keywords such as
// "RPC"). Any means every port. Keywords keeps the keywords as written;
// the ones with a fixed meaning are also added to Ranges (see keywordPorts),
// the others (Teredo, Ply2Disc, ...) name ports chosen at run time and are
// reported in Unresolved. The zero value is the empty set: the event said
// nothing about ports (e.g. a 4946 alone, a service event).
type PortSet struct {
	Any        bool
	Ranges     []PortRange
	Keywords   []string
	Unresolved bool
}

// keywordPorts maps the LocalPorts keywords of Windows Firewall rules that
// stand for fixed ports to those ports. RPC means the dynamic RPC range
// (Windows default 49152-65535).
var keywordPorts = map[string]PortRange{
	"rpc":        {49152, 65535},
	"rpc-epmap":  {135, 135},
	"iphttps":    {443, 443},
	"iphttpsin":  {443, 443},
	"iphttpsout": {443, 443},
	"mdns":       {5353, 5353},
}

// errPortSyntax is returned by ParsePortSet for a malformed element.
var errPortSyntax = errors.New("bad port")

// AnyPorts is the set of every port.
func AnyPorts() PortSet { return PortSet{Any: true} }

// SinglePort is the set holding one port.
func SinglePort(p uint16) PortSet { return PortSet{Ranges: []PortRange{{p, p}}} }

// ParsePortSet parses the LocalPorts notation of the Windows Firewall. An
// empty string or "*" (alone or in a list) is Any: a rule without a port
// condition matches every port. Elements are separated by commas; spaces
// around them are ignored. Ranges are "lo-hi". A token that starts with a
// letter is a keyword. A number out of 0..65535 or a reversed range is an
// error; the set parsed so far is still returned.
func ParsePortSet(s string) (PortSet, error) {
	var ps PortSet
	s = strings.TrimSpace(s)
	if s == "" || s == "*" {
		ps.Any = true
		return ps, nil
	}
	var firstErr error
	for _, tok := range strings.Split(s, ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue
		}
		if tok == "*" {
			ps.Any = true
			continue
		}
		c := tok[0]
		if (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') {
			ps.Keywords = append(ps.Keywords, tok)
			if r, ok := keywordPorts[strings.ToLower(tok)]; ok {
				ps.Ranges = append(ps.Ranges, r)
			} else {
				ps.Unresolved = true
			}
			continue
		}
		lo, hi, ok := strings.Cut(tok, "-")
		a, err1 := parsePort(lo)
		b := a
		var err2 error
		if ok {
			b, err2 = parsePort(hi)
		}
		if err1 != nil || err2 != nil || b < a {
			if firstErr == nil {
				firstErr = fmt.Errorf("parse port set %q: %w %q", s, errPortSyntax, tok)
			}
			continue
		}
		ps.Ranges = append(ps.Ranges, PortRange{a, b})
	}
	ps.normalize()
	return ps, firstErr
}

func parsePort(s string) (uint16, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, errPortSyntax
	}
	return uint16(n), nil
}

// normalize sorts and merges overlapping or adjacent ranges.
func (p *PortSet) normalize() {
	if len(p.Ranges) < 2 {
		return
	}
	sort.Slice(p.Ranges, func(i, j int) bool { return p.Ranges[i].Lo < p.Ranges[j].Lo })
	out := p.Ranges[:1]
	for _, r := range p.Ranges[1:] {
		last := &out[len(out)-1]
		if uint32(r.Lo) <= uint32(last.Hi)+1 {
			if r.Hi > last.Hi {
				last.Hi = r.Hi
			}
			continue
		}
		out = append(out, r)
	}
	p.Ranges = out
}

// Contains reports whether port is in the set (always true for Any).
func (p PortSet) Contains(port uint16) bool {
	if p.Any {
		return true
	}
	for _, r := range p.Ranges {
		if port >= r.Lo && port <= r.Hi {
			return true
		}
	}
	return false
}

// Known reports whether the set says anything about ports: false for the
// zero value (the event carried no port).
func (p PortSet) Known() bool {
	return p.Any || len(p.Ranges) > 0 || len(p.Keywords) > 0
}

// Union returns the set of ports in p or q.
func (p PortSet) Union(q PortSet) PortSet {
	out := PortSet{Any: p.Any || q.Any, Unresolved: p.Unresolved || q.Unresolved}
	out.Ranges = append(append([]PortRange(nil), p.Ranges...), q.Ranges...)
	for _, k := range append(append([]string(nil), p.Keywords...), q.Keywords...) {
		if !containsFold(out.Keywords, k) {
			out.Keywords = append(out.Keywords, k)
		}
	}
	out.normalize()
	return out
}

// Covers reports whether every port of q is in p.
func (p PortSet) Covers(q PortSet) bool {
	if p.Any {
		return true
	}
	if q.Any {
		return false
	}
	for _, r := range q.Ranges {
		if !p.coversRange(r) {
			return false
		}
	}
	for _, k := range q.Keywords {
		if !containsFold(p.Keywords, k) {
			if _, fixed := keywordPorts[strings.ToLower(k)]; !fixed {
				return false
			}
		}
	}
	return true
}

func (p PortSet) coversRange(q PortRange) bool {
	for _, r := range p.Ranges {
		if q.Lo >= r.Lo && q.Hi <= r.Hi {
			return true
		}
	}
	return false
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// String renders the set in the Windows notation: "any" for Any, "" for the
// empty set, otherwise ports and ranges then keywords, comma-separated
// (keywords with a fixed meaning are shown as the keyword, not the range).
func (p PortSet) String() string {
	if p.Any {
		return "any"
	}
	var b strings.Builder
	kw := map[PortRange]bool{}
	for _, k := range p.Keywords {
		if r, ok := keywordPorts[strings.ToLower(k)]; ok {
			kw[r] = true
		}
	}
	for _, r := range p.Ranges {
		if kw[r] {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(r.Lo)))
		if r.Hi != r.Lo {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(int(r.Hi)))
		}
	}
	for _, k := range p.Keywords {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
	}
	return b.String()
}

// MarshalText renders the set as String does.
func (p PortSet) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText parses what MarshalText wrote ("any" or the Windows notation).
func (p *PortSet) UnmarshalText(b []byte) error {
	s := string(b)
	if s == "" {
		*p = PortSet{}
		return nil
	}
	if s == "any" {
		s = "*"
	}
	ps, err := ParsePortSet(s)
	*p = ps
	return err
}
