package correlate

import (
	"fmt"
	"strconv"
	"strings"
)

// PortRange is an inclusive range of ports; a single port has Lo == Hi.
type PortRange struct {
	Lo, Hi uint16
}

// PortSet is the set of local ports an exposure change opens: any port, a
// list of ranges, or nothing known (the zero value: the event carried no
// port).
type PortSet struct {
	Any    bool
	Ranges []PortRange
}

// AnyPort is the set of every port ("*", or the firewall switched off).
var AnyPort = PortSet{Any: true}

// Ports returns the set of the given single ports.
func Ports(ports ...uint16) PortSet {
	s := PortSet{Ranges: make([]PortRange, 0, len(ports))}
	for _, p := range ports {
		s.Ranges = append(s.Ranges, PortRange{p, p})
	}
	return s
}

// Known reports whether the set says anything about ports.
func (s PortSet) Known() bool { return s.Any || len(s.Ranges) > 0 }

// Contains reports whether p is in the set (exactly, in the list, in a
// range, or because the set is Any).
func (s PortSet) Contains(p uint16) bool {
	if s.Any {
		return true
	}
	for _, r := range s.Ranges {
		if p >= r.Lo && p <= r.Hi {
			return true
		}
	}
	return false
}

// String renders the set the way Windows writes LocalPorts: "*" for any,
// "80,443,5000-5010" for a list, "" when unknown.
func (s PortSet) String() string {
	if s.Any {
		return "*"
	}
	var b strings.Builder
	for i, r := range s.Ranges {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(r.Lo)))
		if r.Hi != r.Lo {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(int(r.Hi)))
		}
	}
	return b.String()
}

// ParsePortSet parses "22", "80,443", "5000-5010", "*" or "any" (spaces
// around items are ignored; an empty string is the unknown set). Keywords
// such as "RPC" are not ports and are rejected.
func ParsePortSet(text string) (PortSet, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return PortSet{}, nil
	}
	if text == "*" || strings.EqualFold(text, "any") {
		return AnyPort, nil
	}
	var s PortSet
	for _, item := range strings.Split(text, ",") {
		item = strings.TrimSpace(item)
		lo, hi, isRange := strings.Cut(item, "-")
		l, err := parsePort(lo)
		if err != nil {
			return PortSet{}, fmt.Errorf("parse port set %q: %w", text, err)
		}
		h := l
		if isRange {
			if h, err = parsePort(hi); err != nil {
				return PortSet{}, fmt.Errorf("parse port set %q: %w", text, err)
			}
			if h < l {
				return PortSet{}, fmt.Errorf("parse port set %q: range %d-%d is reversed", text, l, h)
			}
		}
		s.Ranges = append(s.Ranges, PortRange{l, h})
	}
	return s, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("invalid port %q", s)
	}
	return uint16(n), nil
}
