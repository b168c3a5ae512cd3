package correlate

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Suppression reasons, as counted in Stats and written to event.reason.
const (
	ReasonAllowedSource = "allowed_source"
	ReasonChangeWindow  = "change_window"
	ReasonAdminActor    = "admin_actor"
)

// Suppression holds the analyst's tuning knobs from the analytic's
// guidance. A match that any of them covers is suppressed: counted by
// reason, and emitted with knockwatch.suppressed true only when
// Config.EmitSuppressed is set.
type Suppression struct {
	// AllowedSources are sources whose knocks are expected (authorised
	// vulnerability scanners), IPv4 or IPv6 prefixes.
	AllowedSources []netip.Prefix
	// HostGroups names sets of hosts for change windows: each member is a
	// host name (matched like the inventory: case-insensitive, short name
	// matches FQDN), an address or a CIDR prefix.
	HostGroups map[string][]string
	// ChangeWindows are approved maintenance windows.
	ChangeWindows []ChangeWindow
	// AdminUsers are modifying users (SIDs or DOMAIN\user, any case) whose
	// changes do not count.
	AdminUsers []string
	// AdminApplications are modifying applications whose changes do not
	// count: full paths (C:\Windows\CCM\CcmExec.exe, %ProgramFiles%\...),
	// directories under %SystemRoot% or %ProgramFiles% (ending in \), or
	// base names (ccmexec.exe), which match only below those directories:
	// never a name alone, which anyone could give a renamed tool (see
	// adminapps.go). Any case.
	AdminApplications []string
}

// ChangeWindow is an approved change window: changes on the listed hosts
// (or, for a match without a host event, the port opening seen by the
// network) between Start and End are approved.
type ChangeWindow struct {
	// Hosts lists host names, addresses or prefixes; Groups lists
	// HostGroups names. "*" in Hosts means every host.
	Hosts  []string
	Groups []string
	Start  time.Time
	End    time.Time
}

// suppressor is Suppression compiled for lookups.
type suppressor struct {
	allowed    []netip.Prefix
	windows    []compiledWindow
	adminUsers map[string]bool
	adminApps  *appMatcher
}

type compiledWindow struct {
	all      bool
	names    []string
	prefixes []netip.Prefix
	start    int64
	end      int64
}

func compileSuppression(s Suppression) (*suppressor, error) {
	c := &suppressor{adminUsers: make(map[string]bool)}
	for _, p := range s.AllowedSources {
		if !p.IsValid() {
			return nil, fmt.Errorf("compile suppression: invalid allowed source prefix %v", p)
		}
		c.allowed = append(c.allowed, unmapPrefix(p))
	}
	for i, w := range s.ChangeWindows {
		if w.Start.IsZero() || w.End.IsZero() || !w.End.After(w.Start) {
			return nil, fmt.Errorf("compile suppression: change window %d: end must be after start", i)
		}
		cw := compiledWindow{start: w.Start.UnixNano(), end: w.End.UnixNano()}
		members := append([]string(nil), w.Hosts...)
		for _, g := range w.Groups {
			m, ok := s.HostGroups[g]
			if !ok {
				return nil, fmt.Errorf("compile suppression: change window %d: unknown host group %q", i, g)
			}
			members = append(members, m...)
		}
		if len(members) == 0 {
			return nil, fmt.Errorf("compile suppression: change window %d names no host", i)
		}
		for _, m := range members {
			m = strings.TrimSpace(m)
			switch {
			case m == "*":
				cw.all = true
			case strings.Contains(m, "/"):
				p, err := netip.ParsePrefix(m)
				if err != nil {
					return nil, fmt.Errorf("compile suppression: change window %d: %w", i, err)
				}
				cw.prefixes = append(cw.prefixes, unmapPrefix(p.Masked()))
			default:
				if ip, err := netip.ParseAddr(m); err == nil {
					ip = ip.Unmap()
					cw.prefixes = append(cw.prefixes, netip.PrefixFrom(ip, ip.BitLen()))
					continue
				}
				if err := checkHostName(m); err != nil {
					return nil, fmt.Errorf("compile suppression: change window %d: %w", i, err)
				}
				cw.names = append(cw.names, m)
			}
		}
		c.windows = append(c.windows, cw)
	}
	for _, u := range s.AdminUsers {
		if u = strings.ToLower(strings.TrimSpace(u)); u != "" {
			c.adminUsers[u] = true
		}
	}
	apps, err := compileAdminApps(s.AdminApplications)
	if err != nil {
		return nil, fmt.Errorf("compile suppression: %w", err)
	}
	c.adminApps = apps
	return c, nil
}

func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() {
		bits := p.Bits() - 96
		if bits < 0 {
			bits = 0
		}
		return netip.PrefixFrom(p.Addr().Unmap(), bits).Masked()
	}
	return p.Masked()
}

func (s *suppressor) allowedSource(ip netip.Addr) bool {
	for _, p := range s.allowed {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// inWindow reports whether time t (ns) on host (dst, name) is in an
// approved change window.
func (s *suppressor) inWindow(dst netip.Addr, name string, t int64) bool {
	for i := range s.windows {
		w := &s.windows[i]
		if t < w.start || t > w.end {
			continue
		}
		if w.all {
			return true
		}
		for _, p := range w.prefixes {
			if p.Contains(dst) {
				return true
			}
		}
		for _, n := range w.names {
			if sameHost(n, name) {
				return true
			}
		}
	}
	return false
}

// adminActor reports whether the change was made by a known administrative
// user or application.
func (s *suppressor) adminActor(c *ExposureChange) bool {
	if len(s.adminUsers) > 0 && c.ModifyingUser != "" && s.adminUsers[strings.ToLower(c.ModifyingUser)] {
		return true
	}
	return s.adminApps.match(c.ModifyingApplication)
}
