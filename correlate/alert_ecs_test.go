package correlate

import (
	"encoding/json"
	"testing"

	"github.com/knockwatch/knockwatch/internal/ecs"
)

// TestAlertRecordsAreECS: every kind of record the engine emits — medium
// from the network, its upgrade by a host event, a port-less medium, a
// suppressed record, with one or two capture interfaces — validates
// against the ECS field reference (knockwatch.* aside).
func TestAlertRecordsAreECS(t *testing.T) {
	schema, err := ecs.Load("../testdata/ecs/ecs_flat_8.17.0.yml")
	if err != nil {
		t.Fatal(err)
	}
	closed := handshakeAt(attacker, victim, 22, ackAt)
	closed.PortLastClosed = t0.Add(-60 * sec)
	portless := sec4946(50)
	for _, tc := range []struct {
		name   string
		cfg    func(*Config)
		ifaces []string
		items  []any
	}{
		{"medium then upgraded", nil, []string{"tap0"}, []any{knock3(), closed, ruleAdded(chAt, Ports(22), 1)}},
		{"port-less medium", nil, []string{"tap0", "tap1"}, []any{knock3(), portless, handshakeAt(attacker, victim, 22, ackAt)}},
		{"suppressed", func(c *Config) {
			c.EmitSuppressed = true
			c.Suppression.AdminUsers = []string{"S-1-5-21-1-2-3-500"}
		}, nil, []any{knock3(), ruleAdded(chAt, Ports(22), 1), handshakeAt(attacker, victim, 22, ackAt)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, col := newTestEngine(t, tc.cfg, WithObserver(Observer{Hostname: "sensor01", Version: "test", Interfaces: tc.ifaces}))
			feed(t, e, tc.items...)
			if len(col.all()) == 0 {
				t.Fatal("no record")
			}
			for _, a := range col.all() {
				b, err := json.Marshal(a)
				if err != nil {
					t.Fatal(err)
				}
				for _, err := range schema.Validate(b, "knockwatch") {
					t.Errorf("%v\n  in %s", err, b)
				}
			}
		})
	}
}
