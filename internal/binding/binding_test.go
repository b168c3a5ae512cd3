package binding

import (
	"net/netip"
	"testing"
)

func TestBindings(t *testing.T) {
	p, err := New(Config{Bindings: []Binding{
		{Name: "branch", Token: "wec-branch", Hosts: []string{"*.branch.example", "ws01", "10.1.0.0/16"}},
		{Name: "dc", CertSubject: "dc-forwarder.corp.example", Hosts: []string{"dc01.corp.example", "10.0.0.10"}},
		{Name: "full-dn", CertSubject: "CN=wec01,O=Corp", Hosts: []string{"*"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		id    Identity
		host  string
		addr  string
		host0 bool // allowed host
		addr0 bool // allowed addr
		nil0  bool // no restriction
	}{
		{id: Identity{Token: "wec-branch"}, host: "PC7.Branch.Example", addr: "10.1.2.3", host0: true, addr0: true},
		{id: Identity{Token: "wec-branch"}, host: "WS01.corp.example", addr: "10.0.0.5", host0: true},
		{id: Identity{Token: "wec-branch"}, host: "dc01.corp.example", addr: "10.0.0.10"},
		{id: Identity{Token: "wec-branch"}, host: "branch.example.evil", addr: "10.2.0.1"},
		{id: Identity{CertSubject: "CN=dc-forwarder.corp.example,O=Corp"}, host: "DC01.corp.example", addr: "10.0.0.10", host0: true, addr0: true},
		{id: Identity{CertSubject: "CN=dc-forwarder.corp.example,O=Corp"}, host: "ws01.corp.example", addr: "10.0.0.11"},
		{id: Identity{CertSubject: `CN=x\,CN=dc-forwarder.corp.example,O=Corp`}, nil0: true}, // an escaped comma is not a second CN
		{id: Identity{CertSubject: "CN=wec01,O=Corp"}, host: "anything", addr: "192.0.2.1", host0: true, addr0: true},
		{id: Identity{Token: "other"}, nil0: true},
		{id: Identity{Local: true, Token: "wec-branch"}, nil0: true},
	}
	for i, c := range cases {
		hp := p.For(c.id)
		if (hp == nil) != c.nil0 {
			t.Fatalf("case %d: policy %v, want nil %v", i, hp, c.nil0)
		}
		if hp == nil {
			continue
		}
		if got := hp.AllowsHost(c.host); got != c.host0 {
			t.Errorf("case %d: host %s allowed %v", i, c.host, got)
		}
		if got := hp.AllowsAddr(netip.MustParseAddr(c.addr)); got != c.addr0 {
			t.Errorf("case %d: addr %s allowed %v", i, c.addr, got)
		}
	}
	s := p.Stats()
	if s.Refused["branch"] != 2 || s.Accepted["branch"] != 2 || s.Refused["dc"] != 1 || s.Accepted["full-dn"] != 1 {
		t.Fatalf("stats %+v", s)
	}
	strict, _ := New(Config{RefuseUnbound: true})
	if hp := strict.For(Identity{Token: "default"}); hp == nil || hp.AllowsHost("ws01") {
		t.Fatal("unbound forwarder allowed with RefuseUnbound")
	}
	if strict.Stats().Refused[Unbound] != 1 {
		t.Fatal("unbound refusal not counted")
	}
	for _, bad := range []Binding{{Name: "x", Hosts: []string{"a"}}, {Name: "x", Token: "t"}, {Token: "t", Hosts: []string{"a"}},
		{Name: "x", Token: "t", Hosts: []string{"10.0.0.0/33"}}, {Name: "x", Token: "t", Hosts: []string{"[a"}}} {
		if _, err := New(Config{Bindings: []Binding{bad}}); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
