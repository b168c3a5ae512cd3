// Package binding says which hosts each event forwarder may speak for.
//
// Any authenticated forwarder can put any computer name in the events it
// sends. Without a binding, one compromised host (or its forwarder) can
// file forged evidence under another host's name: forged records that
// claim the victim's record ids, or a flood that fills the correlation
// tables with the victim's name. A binding ties a forwarder identity — a
// named bearer token or a client certificate subject — to the host names,
// globs, addresses and CIDRs it may send for; records for any other
// computer are refused by the decoder before they touch its state, and
// counted per binding. Forwarders that no binding names are allowed
// everything unless RefuseUnbound is set.
package binding

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"strings"
	"sync/atomic"
)

// Binding ties one forwarder identity to the hosts it may send for.
type Binding struct {
	// Name identifies the binding in metrics and logs.
	Name string
	// Token is the name of a bearer token (listeners.tokens; "default"
	// for listeners.token_file).
	Token string
	// CertSubject is a client certificate subject: the full distinguished
	// name as Go prints it ("CN=wec01.corp.example,O=Corp") or just its
	// common name.
	CertSubject string
	// Hosts are computer names (case-insensitive; a name without a dot
	// also matches that host in any domain), globs ("*.branch.example",
	// "*" for all), addresses and CIDRs (for the host addresses events
	// carry).
	Hosts []string
}

// Config is the whole set of bindings.
type Config struct {
	Bindings []Binding
	// RefuseUnbound refuses every record from an authenticated or
	// network forwarder that no binding names (default: allowed).
	RefuseUnbound bool
}

// Identity is who sent a message, as the listener authenticated it.
type Identity struct {
	Token       string // bearer token name, "" when none
	CertSubject string // verified client certificate subject, "" when none
	Local       bool   // a local source (followed files): never restricted
}

// Unbound is the Stats key of records refused because no binding names
// their forwarder.
const Unbound = "unbound"

// Policy is a compiled Config. It is safe for concurrent use.
type Policy struct {
	bindings      []*compiled
	refuseUnbound bool
	unbound       *compiled // allows nothing; counts refusals
}

type compiled struct {
	name     string
	token    string
	subject  string // lower case
	cn       bool   // subject is a common name only
	all      bool
	exact    map[string]bool
	short    map[string]bool
	globs    []string
	prefixes []netip.Prefix
	refused  atomic.Uint64
	accepted atomic.Uint64
}

// New compiles cfg; it reports the first invalid binding.
func New(cfg Config) (*Policy, error) {
	p := &Policy{refuseUnbound: cfg.RefuseUnbound, unbound: &compiled{name: Unbound}}
	names := map[string]bool{}
	for i, b := range cfg.Bindings {
		c, err := compile(b)
		if err != nil {
			return nil, fmt.Errorf("binding %d (%s): %w", i, b.Name, err)
		}
		if names[c.name] {
			return nil, fmt.Errorf("binding %d: name %q used twice", i, c.name)
		}
		names[c.name] = true
		p.bindings = append(p.bindings, c)
	}
	return p, nil
}

func compile(b Binding) (*compiled, error) {
	c := &compiled{name: strings.TrimSpace(b.Name), token: strings.TrimSpace(b.Token),
		exact: map[string]bool{}, short: map[string]bool{}}
	if c.name == "" || c.name == Unbound {
		return nil, fmt.Errorf("needs a name (not %q)", Unbound)
	}
	if s := strings.TrimSpace(b.CertSubject); s != "" {
		c.subject = strings.ToLower(s)
		c.cn = !strings.Contains(s, "=")
	}
	if c.token == "" && c.subject == "" {
		return nil, errors.New("names neither a token nor a certificate subject")
	}
	if len(b.Hosts) == 0 {
		return nil, errors.New("names no host")
	}
	for _, h := range b.Hosts {
		h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
		switch {
		case h == "":
			return nil, errors.New("empty host")
		case h == "*":
			c.all = true
		case strings.Contains(h, "/"):
			pr, err := netip.ParsePrefix(h)
			if err != nil {
				return nil, fmt.Errorf("host %q: %w", h, err)
			}
			c.prefixes = append(c.prefixes, netip.PrefixFrom(pr.Addr().Unmap(), unmapBits(pr)).Masked())
		case strings.ContainsAny(h, "*?["):
			if _, err := path.Match(h, ""); err != nil {
				return nil, fmt.Errorf("host glob %q: %w", h, err)
			}
			c.globs = append(c.globs, h)
		default:
			if ip, err := netip.ParseAddr(h); err == nil {
				ip = ip.Unmap()
				c.prefixes = append(c.prefixes, netip.PrefixFrom(ip, ip.BitLen()))
				continue
			}
			if strings.Contains(h, ".") {
				c.exact[h] = true
			} else {
				c.short[h] = true
			}
		}
	}
	return c, nil
}

func unmapBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return max(0, p.Bits()-96)
	}
	return p.Bits()
}

// Enabled reports whether any restriction applies.
func (p *Policy) Enabled() bool { return p != nil && (len(p.bindings) > 0 || p.refuseUnbound) }

// HostPolicy restricts the hosts a sender may speak for (it matches
// winevents.HostPolicy).
type HostPolicy interface {
	AllowsHost(name string) bool
	AllowsAddr(ip netip.Addr) bool
}

// For returns the restriction for a message from id, or nil when none
// applies (no binding names it and unbound forwarders are allowed, or a
// local source).
func (p *Policy) For(id Identity) HostPolicy {
	if !p.Enabled() || id.Local {
		return nil
	}
	var match []*compiled
	for _, b := range p.bindings {
		if b.matches(id) {
			match = append(match, b)
		}
	}
	switch {
	case len(match) == 1:
		return match[0]
	case len(match) > 1:
		return union(match)
	case p.refuseUnbound:
		return p.unbound
	}
	return nil
}

func (b *compiled) matches(id Identity) bool {
	if b.token != "" && id.Token == b.token {
		return true
	}
	if b.subject == "" || id.CertSubject == "" {
		return false
	}
	if !b.cn {
		return strings.EqualFold(id.CertSubject, b.subject)
	}
	return strings.EqualFold(commonName(id.CertSubject), b.subject)
}

// commonName returns the CN of a subject as pkix.Name.String prints it.
func commonName(subject string) string {
	// RFC 4514 escapes a comma inside a value as "\,": split on the
	// unescaped ones.
	var cur strings.Builder
	var parts []string
	for i := 0; i < len(subject); i++ {
		switch {
		case subject[i] == '\\' && i+1 < len(subject):
			cur.WriteByte(subject[i+1])
			i++
		case subject[i] == ',':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(subject[i])
		}
	}
	parts = append(parts, cur.String())
	for _, part := range parts {
		if k, v, ok := strings.Cut(part, "="); ok && strings.EqualFold(strings.TrimSpace(k), "CN") {
			return v
		}
	}
	return ""
}

// AllowsHost implements HostPolicy (and counts).
func (b *compiled) AllowsHost(name string) bool {
	ok := b.allowsHost(name)
	if ok {
		b.accepted.Add(1)
	} else {
		b.refused.Add(1)
	}
	return ok
}

func (b *compiled) allowsHost(name string) bool {
	if b.all {
		return true
	}
	n := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
	if n == "" {
		return false
	}
	if b.exact[n] {
		return true
	}
	first, _, _ := strings.Cut(n, ".")
	if b.short[first] {
		return true
	}
	for _, g := range b.globs {
		if ok, _ := path.Match(g, n); ok {
			return true
		}
	}
	if ip, err := netip.ParseAddr(n); err == nil {
		return b.AllowsAddr(ip)
	}
	return false
}

// AllowsAddr implements HostPolicy.
func (b *compiled) AllowsAddr(ip netip.Addr) bool {
	if b.all {
		return true
	}
	ip = ip.Unmap().WithZone("")
	for _, p := range b.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// union allows what any of its bindings allows; a refusal is counted on
// each.
type union []*compiled

func (u union) AllowsHost(name string) bool {
	for _, b := range u {
		if b.allowsHost(name) {
			b.accepted.Add(1)
			return true
		}
	}
	for _, b := range u {
		b.refused.Add(1)
	}
	return false
}

func (u union) AllowsAddr(ip netip.Addr) bool {
	for _, b := range u {
		if b.AllowsAddr(ip) {
			return true
		}
	}
	return false
}

// Stats are the records accepted and refused per binding name (and
// Unbound).
type Stats struct {
	Accepted, Refused map[string]uint64
}

// Stats returns a snapshot (every configured binding is present).
func (p *Policy) Stats() Stats {
	s := Stats{Accepted: map[string]uint64{}, Refused: map[string]uint64{}}
	if p == nil {
		return s
	}
	for _, b := range append(p.bindings, p.unbound) {
		s.Accepted[b.name] = b.accepted.Load()
		s.Refused[b.name] = b.refused.Load()
	}
	return s
}
