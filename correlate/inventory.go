package correlate

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// Inventory maps the host names that Windows events carry to the addresses
// the sensor sees. Names are matched case-insensitively, and a short name
// matches its FQDN (see Hosts). The engine also uses the addresses an
// exposure change carries itself.
type Inventory interface {
	IPs(host string) []netip.Addr
}

// HostNamer is optionally implemented by an Inventory to name the host of
// an alert that has no host event (the network-only medium alert).
type HostNamer interface {
	Name(ip netip.Addr) string
}

// Hosts is an inventory read from an /etc/hosts-format file: each line is
// an address followed by one or more names; '#' starts a comment.
//
// Lookup rules: an exact (case-insensitive) name wins. Otherwise a short
// name ("WS01") matches the FQDNs whose first label it is
// ("ws01.corp.example"), and an FQDN matches a short entry with its first
// label. A short name that is the first label of FQDNs with different
// address sets is ambiguous and matches nothing: naming the wrong host
// would be worse than naming none. Hosts is immutable once parsed, so it
// is safe for concurrent use; reload by parsing a new one and swapping it
// in (Engine.SetInventory).
type Hosts struct {
	byName  map[string][]netip.Addr // lower-cased full names
	byShort map[string][]netip.Addr // first label of FQDNs; nil slice = ambiguous
	names   map[netip.Addr]string   // first name given for an address
}

// ReadHostsFile parses the /etc/hosts-format inventory at path.
func ReadHostsFile(path string) (*Hosts, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read hosts file: %w", err)
	}
	defer f.Close()
	h, err := ParseHosts(f)
	if err != nil {
		return nil, fmt.Errorf("read hosts file %s: %w", path, err)
	}
	return h, nil
}

// ParseHosts reads an /etc/hosts-format inventory. Errors name the line.
func ParseHosts(r io.Reader) (*Hosts, error) {
	h := &Hosts{
		byName:  make(map[string][]netip.Addr),
		byShort: make(map[string][]netip.Addr),
		names:   make(map[netip.Addr]string),
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	line := 0
	fqdnIPs := make(map[string][]netip.Addr) // fqdn -> ips, to build byShort
	for sc.Scan() {
		line++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		ip, err := netip.ParseAddr(fields[0])
		if err != nil {
			return nil, fmt.Errorf("parse hosts line %d: invalid address %q", line, fields[0])
		}
		ip = ip.Unmap().WithZone("")
		if len(fields) < 2 {
			return nil, fmt.Errorf("parse hosts line %d: address %s has no host name", line, ip)
		}
		for _, name := range fields[1:] {
			if err := checkHostName(name); err != nil {
				return nil, fmt.Errorf("parse hosts line %d: %w", line, err)
			}
			n := normName(name)
			h.byName[n] = appendUnique(h.byName[n], ip)
			if strings.IndexByte(n, '.') > 0 {
				fqdnIPs[n] = appendUnique(fqdnIPs[n], ip)
			}
		}
		if _, ok := h.names[ip]; !ok {
			h.names[ip] = fields[1]
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read hosts line %d: %w", line+1, err)
	}
	// Index FQDNs by their first label; two FQDNs sharing a first label
	// make it ambiguous.
	owner := make(map[string]string)
	for fqdn, ips := range fqdnIPs {
		short := fqdn[:strings.IndexByte(fqdn, '.')]
		if prev, ok := owner[short]; ok && prev != fqdn {
			h.byShort[short] = nil
			continue
		}
		owner[short] = fqdn
		h.byShort[short] = ips
	}
	return h, nil
}

func checkHostName(name string) error {
	if len(name) > 253 {
		return fmt.Errorf("host name of %d bytes is too long", len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c == '-' || c == '.' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !ok {
			return fmt.Errorf("invalid character %q in host name %q", c, name)
		}
	}
	if name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("invalid host name %q", name)
	}
	return nil
}

// normName lower-cases a name and drops a trailing root dot.
func normName(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

func appendUnique(s []netip.Addr, ip netip.Addr) []netip.Addr {
	for _, x := range s {
		if x == ip {
			return s
		}
	}
	return append(s, ip)
}

// IPs returns the addresses of host (see the lookup rules on Hosts). The
// returned slice must not be modified.
func (h *Hosts) IPs(host string) []netip.Addr {
	if h == nil {
		return nil
	}
	n := normName(host)
	if n == "" {
		return nil
	}
	if ips, ok := h.byName[n]; ok {
		return ips
	}
	if dot := strings.IndexByte(n, '.'); dot > 0 {
		// An FQDN matches an entry that is only its short name.
		return h.byName[n[:dot]]
	}
	return h.byShort[n]
}

// Name returns the first name listed for ip, or "".
func (h *Hosts) Name(ip netip.Addr) string {
	if h == nil {
		return ""
	}
	return h.names[ip.Unmap()]
}

// HostEntry is one host of an inventory: its first name and addresses.
type HostEntry struct {
	Name string
	IPs  []netip.Addr
}

// Entries returns the inventory's hosts: every address under the first
// name its line gives, addresses sharing that name together, ordered by
// name.
func (h *Hosts) Entries() []HostEntry {
	if h == nil {
		return nil
	}
	byName := map[string]*HostEntry{}
	var names []string
	for ip, name := range h.names {
		n := normName(name)
		e := byName[n]
		if e == nil {
			e = &HostEntry{Name: name}
			byName[n] = e
			names = append(names, n)
		}
		e.IPs = append(e.IPs, ip)
	}
	slices.Sort(names)
	out := make([]HostEntry, 0, len(names))
	for _, n := range names {
		e := byName[n]
		slices.SortFunc(e.IPs, func(a, b netip.Addr) int { return a.Compare(b) })
		out = append(out, *e)
	}
	return out
}

// Len returns the number of addresses in the inventory.
func (h *Hosts) Len() int {
	if h == nil {
		return 0
	}
	return len(h.names)
}

// sameHost reports whether two host names denote the same host under the
// same rules as Hosts: equal ignoring case, or one is the other's short
// name.
func sameHost(a, b string) bool {
	a, b = normName(a), normName(b)
	if a == "" || b == "" {
		return false
	}
	if a == b {
		return true
	}
	ad, bd := strings.IndexByte(a, '.'), strings.IndexByte(b, '.')
	switch {
	case ad > 0 && bd < 0:
		return a[:ad] == b
	case bd > 0 && ad < 0:
		return b[:bd] == a
	}
	return false
}
