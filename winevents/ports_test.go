package winevents

import "testing"

func TestParsePortSet(t *testing.T) {
	cases := []struct {
		in      string
		str     string
		in1     []uint16
		out     []uint16
		wantErr bool
		unres   bool
	}{
		{in: "22", str: "22", in1: []uint16{22}, out: []uint16{21, 23}},
		{in: "80,443", str: "80,443", in1: []uint16{80, 443}, out: []uint16{81, 442}},
		{in: " 80 , 443 ", str: "80,443", in1: []uint16{80, 443}},
		{in: "5000-5010", str: "5000-5010", in1: []uint16{5000, 5005, 5010}, out: []uint16{4999, 5011}},
		{in: "5000-5010,5005-5020,5021", str: "5000-5021", in1: []uint16{5021}, out: []uint16{5022}},
		{in: "*", str: "any", in1: []uint16{0, 1, 65535}},
		{in: "", str: "any", in1: []uint16{12345}},
		{in: "22,*", str: "any", in1: []uint16{7}},
		{in: "RPC", str: "RPC", in1: []uint16{49152, 65535}, out: []uint16{135}},
		{in: "RPC-EPMap", str: "RPC-EPMap", in1: []uint16{135}, out: []uint16{136}},
		{in: "IPHTTPSIn", str: "IPHTTPSIn", in1: []uint16{443}},
		{in: "Teredo", str: "Teredo", out: []uint16{3544}, unres: true},
		{in: "Ply2Disc,445", str: "445,Ply2Disc", in1: []uint16{445}, unres: true},
		{in: "0-65535", str: "0-65535", in1: []uint16{0, 65535}},
		{in: "70000", str: "", wantErr: true, out: []uint16{4464}},
		{in: "10-5", str: "", wantErr: true},
		{in: "22,abc-", str: "22,abc-", in1: []uint16{22}, unres: true},
		{in: "22,-5", str: "22", wantErr: true, in1: []uint16{22}},
	}
	for _, tc := range cases {
		ps, err := ParsePortSet(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("%q: err %v, wantErr %v", tc.in, err, tc.wantErr)
		}
		if ps.String() != tc.str {
			t.Errorf("%q: String %q, want %q", tc.in, ps.String(), tc.str)
		}
		if ps.Unresolved != tc.unres {
			t.Errorf("%q: Unresolved %v", tc.in, ps.Unresolved)
		}
		for _, p := range tc.in1 {
			if !ps.Contains(p) {
				t.Errorf("%q: should contain %d", tc.in, p)
			}
		}
		for _, p := range tc.out {
			if ps.Contains(p) {
				t.Errorf("%q: should not contain %d", tc.in, p)
			}
		}
	}
}

func TestPortSetZeroAndText(t *testing.T) {
	var z PortSet
	if z.Known() || z.Contains(22) || z.String() != "" {
		t.Errorf("zero set: %+v", z)
	}
	for _, s := range []string{"", "any", "22", "80,443,5000-5010", "8080,RPC"} {
		var p PortSet
		if err := p.UnmarshalText([]byte(s)); err != nil {
			t.Fatal(err)
		}
		if b, _ := p.MarshalText(); string(b) != s {
			t.Errorf("round trip %q -> %q", s, b)
		}
	}
	a, _ := ParsePortSet("80,443")
	b, _ := ParsePortSet("443")
	if !a.Covers(b) || b.Covers(a) || !AnyPorts().Covers(a) || a.Covers(AnyPorts()) {
		t.Errorf("Covers wrong")
	}
	if u := b.Union(SinglePort(444)); u.String() != "443-444" {
		t.Errorf("union %q", u)
	}
}
