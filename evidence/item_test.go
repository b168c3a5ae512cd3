package evidence

import (
	"bytes"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/correlate"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

func knockItem(src, dst string, at time.Time, ports ...uint16) Item {
	k := &correlate.Knock{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), DistinctClosed: len(ports),
		Attempted: len(ports) + 2, Epoch: 7}
	for i, p := range ports {
		k.Touches = append(k.Touches, correlate.Touch{Port: p, Time: at.Add(time.Duration(i) * time.Second), Kind: correlate.TouchS0})
	}
	return Item{Arrival: at.Add(time.Duration(len(ports)) * time.Second), Knock: k}
}

func handshakeItem(src, dst string, port uint16, ack time.Time) Item {
	return Item{Arrival: ack.Add(time.Millisecond), Handshake: &correlate.Handshake{
		Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), SrcPort: 40001, Port: port,
		SYN: ack.Add(-2 * time.Millisecond), SYNACK: ack.Add(-time.Millisecond), ACK: ack,
		PortLastClosed: ack.Add(-time.Minute), PortFirstOpen: ack.Add(-30 * time.Second), PortOtherDone: ack.Add(-20 * time.Second),
		DistinctClosed: 3, Attempted: 5, Epoch: 2,
	}}
}

func changeItem(host string, port uint16, at time.Time, rec uint64) Item {
	return Item{Arrival: at.Add(3 * time.Second), Change: &correlate.ExposureChange{
		Time: at, Host: host, HostIPs: []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("2001:db8::5")},
		Kind: correlate.ChangeRuleAdded, Ports: correlate.PortSet{Ranges: []correlate.PortRange{{Lo: port, Hi: port}, {Lo: 5000, Hi: 5010}}},
		Protocol: correlate.ProtocolTCP, Direction: correlate.DirectionInbound, Action: correlate.ActionAllow,
		Active: correlate.TriTrue, RuleID: "{5C0FFEE0}", RuleName: "Remote Management (TCP-In) ünïcode",
		Application: `C:\Windows\system32\svchost.exe`, Service: "WinRM", ModifyingUser: "S-1-5-21-1",
		ModifyingApplication: `C:\Windows\System32\netsh.exe`, ProcessID: 4242, EventID: 2004, Channel: "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall",
		RecordID: rec,
	}}
}

// Every field of every kind survives the encoding, including the zero
// times a handshake carries for "never seen".
func TestItemRoundTrip(t *testing.T) {
	hs := handshakeItem("198.51.100.7", "10.0.0.5", 4444, t0)
	hs.Handshake.PortLastOpen = time.Time{}
	v6 := knockItem("2001:db8::66", "2001:db8::5", t0, 7000, 8000, 9000)
	v6.Knock.Touches[1].Kind = correlate.TouchREJ
	any := changeItem("WIN-LAB01", 4444, t0, 7)
	any.Change.Ports = correlate.AnyPort
	any.Change.HostIPs = nil
	// A Firewall record replacing the Security 4946 of its rule change,
	// delivered by a named forwarder.
	replacing := changeItem("WIN-LAB01", 4444, t0, 8)
	replacing.Change.Origin = "token:wec01@192.0.2.10"
	replacing.Change.Replaces = &correlate.ChangeRef{Channel: "Security", EventID: 4946, RecordID: 90210}
	for _, it := range []Item{knockItem("198.51.100.7", "10.0.0.5", t0, 7000, 8000, 9000), v6, hs,
		changeItem("WIN-LAB01.corp.example", 4444, t0, 6662), any, replacing} {
		b, err := AppendItem([]byte("prefix"), &it)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("prefix")) {
			t.Fatal("AppendItem does not append")
		}
		got, err := DecodeItem(b[len("prefix"):])
		if err != nil {
			t.Fatalf("%s: %v", it.Kind(), err)
		}
		normalize(&it)
		if !reflect.DeepEqual(got, it) {
			t.Errorf("%s round trip:\n got %+v\nwant %+v", it.Kind(), show(got), show(it))
		}
		if !got.Time().Equal(it.Time()) || got.Time().IsZero() {
			t.Errorf("%s: event time %v, want %v", it.Kind(), got.Time(), it.Time())
		}
	}
	if hs2, _ := DecodeItem(mustAppend(t, hs)); !hs2.Handshake.PortLastOpen.IsZero() {
		t.Errorf("zero time decoded as %v", hs2.Handshake.PortLastOpen)
	}
}

func mustAppend(t *testing.T, it Item) []byte {
	t.Helper()
	b, err := AppendItem(nil, &it)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// normalize puts times in UTC (the decoder's) so DeepEqual compares values.
func normalize(it *Item) {
	it.Arrival = it.Arrival.UTC()
	if k := it.Knock; k != nil {
		for i := range k.Touches {
			k.Touches[i].Time = k.Touches[i].Time.UTC()
		}
	}
	if h := it.Handshake; h != nil {
		for _, p := range []*time.Time{&h.SYN, &h.SYNACK, &h.ACK, &h.PortLastClosed, &h.PortFirstOpen, &h.PortLastOpen, &h.PortOtherDone} {
			if !p.IsZero() {
				*p = p.UTC()
			}
		}
	}
	if c := it.Change; c != nil {
		c.Time = c.Time.UTC()
	}
}

func show(it Item) any {
	switch {
	case it.Knock != nil:
		return *it.Knock
	case it.Handshake != nil:
		return *it.Handshake
	case it.Change != nil:
		return *it.Change
	}
	return it
}

// An item with nothing in it, or with two pieces of evidence, is refused.
func TestItemKind(t *testing.T) {
	k := knockItem("198.51.100.7", "10.0.0.5", t0, 1, 2, 3)
	two := k
	two.Handshake = handshakeItem("198.51.100.7", "10.0.0.5", 4444, t0).Handshake
	for _, it := range []Item{{}, two} {
		if _, err := AppendItem(nil, &it); err == nil || it.Kind() != 0 {
			t.Errorf("%+v encoded", it)
		}
	}
}

// Every truncation and every single-byte change of a valid encoding either
// decodes or fails with an error: never a panic, never a huge allocation.
func TestDecodeDamage(t *testing.T) {
	replacing := changeItem("WIN-LAB01", 4444, t0, 2)
	replacing.Change.Origin = "cert:CN=wec01"
	replacing.Change.Replaces = &correlate.ChangeRef{Channel: "Security", EventID: 4946, RecordID: 1}
	for _, it := range []Item{knockItem("198.51.100.7", "10.0.0.5", t0, 1, 2, 3), handshakeItem("198.51.100.7", "10.0.0.5", 4444, t0),
		changeItem("WIN-LAB01", 4444, t0, 1), replacing} {
		b := mustAppend(t, it)
		for n := 0; n < len(b); n++ {
			if _, err := DecodeItem(b[:n]); err == nil {
				t.Errorf("%s truncated to %d bytes decoded", it.Kind(), n)
			}
		}
		for i := range b {
			for _, v := range []byte{0, 0xff, b[i] ^ 1} {
				d := bytes.Clone(b)
				d[i] = v
				_, _ = DecodeItem(d)
			}
		}
	}
	// A newer format version is refused.
	b := mustAppend(t, knockItem("198.51.100.7", "10.0.0.5", t0, 1, 2, 3))
	b[0] = 3
	if _, err := DecodeItem(b); err == nil {
		t.Error("version 3 decoded")
	}
}

// Version 1 payloads (logs written before the sensor's records carried
// Attempted, Epoch, PortFirstOpen and PortOtherDone) still decode, with
// those fields unknown (zero); version 2 keeps them.
func TestItemVersion1(t *testing.T) {
	for _, it := range []Item{knockItem("198.51.100.7", "10.0.0.5", t0, 1, 2, 3), handshakeItem("198.51.100.7", "10.0.0.5", 4444, t0),
		changeItem("WIN-LAB01", 4444, t0, 1)} {
		b, err := appendItemVersion(nil, &it, itemVersionV1)
		if err != nil {
			t.Fatal(err)
		}
		if b[0] != 1 {
			t.Fatalf("version byte %d", b[0])
		}
		if !logFormat.Plausible(b[:2], len(b)) {
			t.Errorf("%s: a version 1 frame is not plausible to the log", it.Kind())
		}
		got, err := DecodeItem(b)
		if err != nil {
			t.Fatalf("%s: %v", it.Kind(), err)
		}
		want := it
		normalize(&want)
		switch {
		case want.Knock != nil:
			k := *want.Knock
			k.Attempted, k.Epoch = 0, 0
			want.Knock = &k
		case want.Handshake != nil:
			h := *want.Handshake
			h.PortFirstOpen, h.PortOtherDone, h.Attempted, h.Epoch = time.Time{}, time.Time{}, 0, 0
			want.Handshake = &h
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s v1:\n got %+v\nwant %+v", it.Kind(), show(got), show(want))
		}
	}
	// The version 2 fields survive.
	h, err := DecodeItem(mustAppend(t, handshakeItem("198.51.100.7", "10.0.0.5", 4444, t0)))
	if err != nil || h.Handshake.PortOtherDone.IsZero() || h.Handshake.Epoch != 2 || h.Handshake.Attempted != 5 {
		t.Errorf("version 2 handshake lost fields: %+v %v", h.Handshake, err)
	}
}

func FuzzDecodeItem(f *testing.F) {
	for _, it := range []Item{knockItem("198.51.100.7", "10.0.0.5", t0, 1, 2, 3), handshakeItem("2001:db8::1", "2001:db8::5", 4444, t0),
		changeItem("WIN-LAB01", 4444, t0, 1)} {
		b, _ := AppendItem(nil, &it)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		it, err := DecodeItem(b)
		if err != nil {
			return
		}
		// What decodes encodes back to a payload that decodes the same.
		again, err := AppendItem(nil, &it)
		if err != nil {
			t.Fatalf("decoded item does not encode: %v", err)
		}
		it2, err := DecodeItem(again)
		if err != nil || !reflect.DeepEqual(it, it2) {
			t.Fatalf("re-encoding changed the item: %v", err)
		}
	})
}
