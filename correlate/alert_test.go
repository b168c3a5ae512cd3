package correlate

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// get walks a decoded JSON object by a dotted path ("event.id"); a key
// containing dots such as "@timestamp" is matched whole first.
func get(t *testing.T, m map[string]any, path string) any {
	t.Helper()
	if v, ok := m[path]; ok {
		return v
	}
	head, rest, _ := strings.Cut(path, ".")
	v, ok := m[head]
	if !ok {
		t.Fatalf("missing %q", path)
	}
	if rest == "" {
		return v
	}
	sub, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%q is %T, not an object", head, v)
	}
	return get(t, sub, rest)
}

func TestAlertJSON(t *testing.T) {
	e, col := newTestEngine(t, nil)
	h := handshakeAt(attacker, victim, 22, ackAt)
	h.PortLastClosed = t0.Add(-time.Minute)
	c := ruleAdded(chAt, Ports(22), 4242)
	feed(t, e, knockAt(attacker, victim, t0, 1111, 2222, 1111, 3333), h, c)
	alerts := col.all()
	if len(alerts) != 2 {
		t.Fatalf("got %d records, want medium then upgraded", len(alerts))
	}
	var recs []map[string]any
	for _, a := range alerts {
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "\n") {
			t.Fatal("alert JSON spans lines")
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, m)
	}
	up := recs[1]
	ts := func(tm time.Time) string { return tm.UTC().Format(time.RFC3339Nano) }
	want := map[string]any{
		"@timestamp":                              ts(ackAt),
		"event.kind":                              "alert",
		"event.id":                                AlertID(attacker, victim, 22, ackAt),
		"event.severity":                          73.0,
		"event.action":                            "upgraded",
		"rule.id":                                 "AN0842",
		"rule.name":                               RuleName,
		"threat.framework":                        "MITRE ATT&CK",
		"threat.technique.id":                     []any{"T1205"},
		"threat.technique.subtechnique.id":        []any{"T1205.001"},
		"threat.technique.reference":              []any{TechniqueReference},
		"rule.reference":                          RuleReference,
		"ecs.version":                             ECSVersion,
		"event.module":                            "knockwatch",
		"event.type":                              []any{"info"},
		"event.outcome":                           "success",
		"network.direction":                       "ingress",
		"related.ip":                              []any{"198.51.100.7", "10.0.0.5"},
		"observer.type":                           "ids",
		"observer.vendor":                         "knockwatch",
		"observer.product":                        "knockwatch",
		"knockwatch.suppressed":                   false,
		"knockwatch.rule.knock_window":            30.0,
		"knockwatch.rule.handshake_after":         300.0,
		"source.ip":                               "198.51.100.7",
		"source.port":                             50123.0,
		"destination.ip":                          "10.0.0.5",
		"destination.port":                        22.0,
		"host.name":                               "WS01",
		"knockwatch.confidence":                   "high",
		"knockwatch.basis":                        "host_event",
		"knockwatch.knock.ports":                  []any{1111.0, 2222.0, 3333.0},
		"knockwatch.knock.last_touch":             ts(t0.Add(3 * sec)),
		"knockwatch.change.time":                  ts(chAt),
		"knockwatch.change.host":                  "WS01",
		"knockwatch.change.host_ips":              []any{"10.0.0.5"},
		"knockwatch.change.kind":                  "rule_added",
		"knockwatch.change.ports":                 "22",
		"knockwatch.change.protocol":              "tcp",
		"knockwatch.change.direction":             "inbound",
		"knockwatch.change.action":                "allow",
		"knockwatch.change.active":                true,
		"knockwatch.change.rule_id":               "{6A1C}",
		"knockwatch.change.rule_name":             "updater",
		"knockwatch.change.application":           `C:\Windows\Temp\svc.exe`,
		"knockwatch.change.service":               "",
		"knockwatch.change.modifying_user":        "S-1-5-21-1-2-3-500",
		"knockwatch.change.modifying_application": `C:\Windows\System32\netsh.exe`,
		"knockwatch.change.process_id":            0.0,
		"knockwatch.change.event_id":              2004.0,
		"knockwatch.change.channel":               "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall",
		"knockwatch.change.record_id":             4242.0,
		"knockwatch.handshake.syn":                ts(h.SYN),
		"knockwatch.handshake.syn_ack":            ts(h.SYNACK),
		"knockwatch.handshake.ack":                ts(h.ACK),
		"knockwatch.port_last_closed":             ts(h.PortLastClosed),
		"knockwatch.port_last_open":               nil,
	}
	for path, w := range want {
		if got := get(t, up, path); !reflect.DeepEqual(got, w) {
			t.Errorf("%s = %#v, want %#v", path, got, w)
		}
	}
	touches := get(t, up, "knockwatch.knock.touches").([]any)
	if len(touches) != 4 {
		t.Fatalf("touches = %v", touches)
	}
	first := touches[0].(map[string]any)
	if first["port"] != 1111.0 || first["kind"] != "REJ" || first["time"] != ts(t0) {
		t.Errorf("first touch = %v", first)
	}
	if _, ok := up["knockwatch"].(map[string]any)["suppression_reason"]; ok {
		t.Error("unsuppressed alert has a suppression reason")
	}
	// The first record: medium from the network, same id, no change.
	med := recs[0]
	if get(t, med, "event.id") != get(t, up, "event.id") || get(t, med, "event.action") != "created" ||
		get(t, med, "event.severity") != 47.0 || get(t, med, "knockwatch.confidence") != "medium" ||
		get(t, med, "knockwatch.change") != nil || get(t, med, "knockwatch.basis") != "network" {
		t.Errorf("medium record = %v", med)
	}
}

func TestSuppressedAlertJSON(t *testing.T) {
	e, col := newTestEngine(t, func(c *Config) {
		c.EmitSuppressed = true
		c.Suppression.AdminApplications = []string{`c:\windows\system32\netsh.exe`}
	})
	feed(t, e, knock3(), ruleAdded(chAt, Ports(22), 1), handshakeAt(attacker, victim, 22, ackAt))
	b, err := json.Marshal(col.all()[0])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	// event.outcome "suppressed" is not an ECS value: the outcome is the
	// handshake's, the suppression lives under knockwatch.*.
	if get(t, m, "event.outcome") != "success" || get(t, m, "event.reason") != ReasonAdminActor ||
		get(t, m, "knockwatch.suppressed") != true || get(t, m, "knockwatch.suppression_reason") != ReasonAdminActor {
		t.Fatalf("suppressed record: %s", b)
	}
}

// TestAlertObserver: the sensor identity goes into observer.*; one capture
// interface is observer.ingress.interface.name, several (a tap's two
// ports, which records do not tell apart) are listed under knockwatch.
func TestAlertObserver(t *testing.T) {
	for _, tc := range []struct {
		ifaces  []string
		ingress any
		list    any
	}{
		{[]string{"tap0"}, "tap0", nil},
		{[]string{"tap0", "tap1"}, nil, []any{"tap0", "tap1"}},
	} {
		e, col := newTestEngine(t, nil, WithObserver(Observer{Hostname: "sensor01", Version: "v1.2.3", Interfaces: tc.ifaces}))
		feed(t, e, knock3(), ruleAdded(chAt, Ports(22), 1), handshakeAt(attacker, victim, 22, ackAt))
		b, _ := json.Marshal(col.all()[0])
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		obs := m["observer"].(map[string]any)
		if obs["hostname"] != "sensor01" || obs["version"] != "v1.2.3" || obs["type"] != "ids" || obs["vendor"] != "knockwatch" {
			t.Errorf("observer %v", obs)
		}
		var ingress any
		if in, ok := obs["ingress"].(map[string]any); ok {
			ingress = in["interface"].(map[string]any)["name"]
		}
		var list any
		if o, ok := m["knockwatch"].(map[string]any)["observer"].(map[string]any); ok {
			list = o["interfaces"]
		}
		if !reflect.DeepEqual(ingress, tc.ingress) || !reflect.DeepEqual(list, tc.list) {
			t.Errorf("interfaces %v: ingress %v, list %v", tc.ifaces, ingress, list)
		}
	}
}

func TestAlertIDDeterministic(t *testing.T) {
	a := AlertID(attacker, victim, 22, ackAt)
	if a != AlertID(attacker, victim, 22, ackAt.In(time.FixedZone("x", 3600))) || len(a) != 32 {
		t.Fatalf("id %q not stable", a)
	}
	for _, b := range []string{
		AlertID(other, victim, 22, ackAt), AlertID(attacker, bystand, 22, ackAt),
		AlertID(attacker, victim, 23, ackAt), AlertID(attacker, victim, 22, ackAt.Add(1)),
	} {
		if a == b {
			t.Fatal("different evidence, same id")
		}
	}
}

func TestPortSet(t *testing.T) {
	for _, c := range []struct {
		in, out string
		has     []uint16
		hasNot  []uint16
		bad     bool
	}{
		{in: "22", out: "22", has: []uint16{22}, hasNot: []uint16{21, 23}},
		{in: " 80, 443 ,5000-5010", out: "80,443,5000-5010", has: []uint16{80, 443, 5000, 5010}, hasNot: []uint16{5011, 4999}},
		{in: "*", out: "*", has: []uint16{1, 65535}},
		{in: "Any", out: "*", has: []uint16{9}},
		{in: "", out: ""},
		{in: "RPC", bad: true},
		{in: "0", bad: true},
		{in: "70000", bad: true},
		{in: "10-5", bad: true},
		{in: "1,,2", bad: true},
	} {
		s, err := ParsePortSet(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("ParsePortSet(%q) accepted", c.in)
			}
			continue
		}
		if err != nil || s.String() != c.out {
			t.Errorf("ParsePortSet(%q) = %q, %v", c.in, s, err)
		}
		for _, p := range c.has {
			if !s.Contains(p) {
				t.Errorf("%q does not contain %d", c.in, p)
			}
		}
		for _, p := range c.hasNot {
			if s.Contains(p) {
				t.Errorf("%q contains %d", c.in, p)
			}
		}
	}
}
