package correlate

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const hostsFile = `# knockwatch inventory
10.0.0.5   ws01.corp.example  WS01-ALIAS   # the victim
10.0.0.6   ws02.corp.example
fd00::6    ws02.corp.example
10.0.0.7   fs01.corp.example
10.0.1.7   fs01.lab.example
10.0.0.8   jump01

::ffff:10.0.0.9 mapped
`

func TestParseHostsLookup(t *testing.T) {
	h, err := ParseHosts(strings.NewReader(hostsFile))
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	cases := []struct {
		name string
		want []netip.Addr
	}{
		{"ws01.corp.example", []netip.Addr{a("10.0.0.5")}},
		{"WS01.CORP.EXAMPLE.", []netip.Addr{a("10.0.0.5")}},
		{"WS01", []netip.Addr{a("10.0.0.5")}},       // short name matches its FQDN
		{"ws01-alias", []netip.Addr{a("10.0.0.5")}}, // alias
		{"ws02", []netip.Addr{a("10.0.0.6"), a("fd00::6")}},
		{"fs01", nil}, // two FQDNs share the short name: ambiguous
		{"fs01.lab.example", []netip.Addr{a("10.0.1.7")}},
		{"JUMP01.offsec.lan", []netip.Addr{a("10.0.0.8")}}, // FQDN matches a short entry
		{"ws01.other.example", nil},                        // different domain, no short entry
		{"mapped", []netip.Addr{a("10.0.0.9")}},            // IPv4-mapped stored unmapped
		{"unknown", nil},
		{"", nil},
	}
	for _, c := range cases {
		if got := h.IPs(c.name); !reflect.DeepEqual(got, c.want) {
			t.Errorf("IPs(%q) = %v, want %v", c.name, got, c.want)
		}
	}
	if got := h.Name(a("10.0.0.5")); got != "ws01.corp.example" {
		t.Errorf("Name = %q", got)
	}
	if h.Len() != 7 {
		t.Errorf("Len = %d", h.Len())
	}
}

func TestParseHostsErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"10.0.0.1 ok\n300.1.1.1 bad\n", "line 2: invalid address"},
		{"\n\n10.0.0.1\n", "line 3: address 10.0.0.1 has no host name"},
		{"10.0.0.1 bad/name\n", "line 1: invalid character"},
		{"10.0.0.1 " + strings.Repeat("a", 300) + "\n", "line 1: host name of 300 bytes"},
		{"10.0.0.1 " + strings.Repeat("a", 70000) + "\n", "read hosts line 1"},
	} {
		_, err := ParseHosts(strings.NewReader(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseHosts(%.30q) error = %v, want %q", c.in, err, c.want)
		}
	}
}

func TestReadHostsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, []byte("10.0.0.5 ws01\nbad line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadHostsFile(path); err == nil || !strings.Contains(err.Error(), path+": parse hosts line 2") {
		t.Fatalf("error = %v", err)
	}
	if _, err := ReadHostsFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
	if err := os.WriteFile(path, []byte("10.0.0.5 ws01\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if h, err := ReadHostsFile(path); err != nil || h.Len() != 1 {
		t.Fatalf("ReadHostsFile = %v, %v", h, err)
	}
}

func TestSameHost(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"WS01", "ws01", true},
		{"ws01", "WS01.corp.example", true},
		{"ws01.corp.example", "WS01", true},
		{"ws01.a.example", "ws01.b.example", false},
		{"ws01", "ws011", false},
		{"", "", false},
	} {
		if got := sameHost(c.a, c.b); got != c.want {
			t.Errorf("sameHost(%q, %q) = %v", c.a, c.b, got)
		}
	}
}

// A change naming only a host resolves through the inventory; a change
// for a host the inventory does not know is kept and resolved after a
// reload.
func TestEngineInventory(t *testing.T) {
	h, err := ParseHosts(strings.NewReader("10.0.0.5 ws01.corp.example\n"))
	if err != nil {
		t.Fatal(err)
	}
	e, col := newTestEngine(t, nil, WithInventory(h))
	c := ruleAdded(chAt, Ports(22), 1)
	c.HostIPs = nil
	feed(t, e, knock3(), c, handshakeAt(attacker, victim, 22, ackAt))
	if got := summary(col.all()); len(got) != 1 || got[0] != "created high" {
		t.Fatalf("with inventory: %q", got)
	}
	if a := col.all()[0]; a.HostName != "WS01" {
		t.Errorf("host name %q", a.HostName)
	}

	e2, col2 := newTestEngine(t, nil)
	feed(t, e2, knock3(), c, handshakeAt(attacker, victim, 22, ackAt))
	if s := e2.Stats(); len(col2.all()) != 0 || s.UnresolvedChanges != 1 || s.ChangesUnresolved != 1 {
		t.Fatalf("without inventory: alerts %d, stats %+v", len(col2.all()), s)
	}
	e2.SetInventory(h)
	if got := summary(col2.all()); len(got) != 1 || got[0] != "created high" {
		t.Fatalf("after reload: %q", got)
	}
	if s := e2.Stats(); s.UnresolvedChanges != 0 {
		t.Fatalf("still unresolved: %d", s.UnresolvedChanges)
	}
	// The network-only alert takes its host name from the inventory.
	e3, col3 := newTestEngine(t, nil, WithInventory(h))
	hs := handshakeAt(attacker, victim, 22, ackAt)
	hs.PortLastClosed = t0.Add(-60 * sec)
	feed(t, e3, knock3(), hs)
	if a := col3.all(); len(a) != 1 || a[0].HostName != "ws01.corp.example" {
		t.Fatalf("network-only alert: %+v", a)
	}
}

func FuzzParseHosts(f *testing.F) {
	f.Add(hostsFile)
	f.Add("10.0.0.1 a\n")
	f.Add("fe80::1%eth0 ll\n")
	f.Add("# only a comment\n\n")
	f.Add("10.0.0.1\tA.B.C a\n10.0.0.2 a.b.d\n")
	f.Fuzz(func(t *testing.T, in string) {
		h, err := ParseHosts(strings.NewReader(in))
		if err != nil {
			if !strings.Contains(err.Error(), "hosts line ") {
				t.Fatalf("error without a line number: %v", err)
			}
			return
		}
		// Every name listed on a line resolves to at least that line's
		// address, whatever its case.
		for _, line := range strings.Split(in, "\n") {
			if i := strings.IndexByte(line, '#'); i >= 0 {
				line = line[:i]
			}
			fields := strings.Fields(line)
			if len(fields) < 2 {
				continue
			}
			ip := netip.MustParseAddr(fields[0]).Unmap().WithZone("")
			for _, name := range fields[1:] {
				found := false
				for _, got := range h.IPs(strings.ToUpper(name)) {
					found = found || got == ip
				}
				if !found {
					t.Fatalf("name %q does not resolve to %v", name, ip)
				}
			}
		}
	})
}
