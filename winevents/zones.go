package winevents

import (
	"path"
	"strings"
	"time"
)

// zoneTable resolves the time zone of a host for formats whose timestamps
// carry none (NXLog EventTime). Keys are host names or host-group patterns
// (path.Match globs such as "*.branch.example"), compared in lower case; an
// exact name wins over a pattern, a longer pattern over a shorter one. A
// short name also matches the first label of an FQDN.
type zoneTable struct {
	exact    map[string]*time.Location
	patterns []zonePattern
	def      *time.Location
}

type zonePattern struct {
	pattern string
	loc     *time.Location
}

func newZoneTable(zones map[string]*time.Location, def *time.Location) *zoneTable {
	if def == nil {
		def = time.UTC
	}
	z := &zoneTable{exact: map[string]*time.Location{}, def: def}
	for k, loc := range zones {
		if loc == nil {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if strings.ContainsAny(k, "*?[") {
			z.patterns = append(z.patterns, zonePattern{k, loc})
		} else {
			z.exact[k] = loc
		}
	}
	// Longest pattern first; ties by text for a stable order.
	for i := 1; i < len(z.patterns); i++ {
		for j := i; j > 0; j-- {
			a, b := z.patterns[j-1], z.patterns[j]
			if len(a.pattern) > len(b.pattern) || (len(a.pattern) == len(b.pattern) && a.pattern <= b.pattern) {
				break
			}
			z.patterns[j-1], z.patterns[j] = b, a
		}
	}
	return z
}

func (z *zoneTable) lookup(host string) *time.Location {
	if z == nil {
		return time.UTC
	}
	if len(z.exact) == 0 && len(z.patterns) == 0 {
		return z.def
	}
	h := strings.ToLower(host)
	if loc, ok := z.exact[h]; ok {
		return loc
	}
	if i := strings.IndexByte(h, '.'); i > 0 {
		if loc, ok := z.exact[h[:i]]; ok {
			return loc
		}
	}
	for _, p := range z.patterns {
		if ok, _ := path.Match(p.pattern, h); ok {
			return p.loc
		}
	}
	return z.def
}
