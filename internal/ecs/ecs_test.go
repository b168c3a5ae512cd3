package ecs

import (
	"strings"
	"testing"
)

const reference = "../../testdata/ecs/ecs_flat_8.17.0.yml"

// TestValidatorCatches: each kind of mistake an alert could make is
// reported, naming the field; a valid document passes.
func TestValidatorCatches(t *testing.T) {
	s, err := Load(reference)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Fields) < 1500 {
		t.Fatalf("reference has %d fields: not the whole release", len(s.Fields))
	}
	valid := `{"@timestamp":"2026-01-02T03:04:05.5Z","ecs":{"version":"8.17.0"},"event":{"kind":"alert","category":["network","intrusion_detection"],
		"type":["info"],"outcome":"success","severity":73},"source":{"ip":"198.51.100.7","port":50123},"host":{"ip":["10.0.0.5"]},
		"network":{"direction":"ingress"},"threat":{"technique":{"id":["T1205"]}},"knockwatch":{"anything":{"goes":null}}}`
	if errs := s.Validate([]byte(valid), "knockwatch"); len(errs) != 0 {
		t.Fatalf("valid document refused: %v", errs)
	}
	for _, c := range []struct{ name, doc, field string }{
		{"outcome not allowed", `{"event":{"outcome":"suppressed"}}`, "event.outcome"},
		{"kind not allowed", `{"event":{"kind":"alarm"}}`, "event.kind"},
		{"unknown field", `{"event":{"confidence":"high"}}`, "event.confidence"},
		{"custom namespace not declared", `{"knockwatch":{"x":1}}`, "knockwatch.x"},
		{"keyword given a number", `{"rule":{"id":842}}`, "rule.id"},
		{"long given a string", `{"source":{"port":"22"}}`, "source.port"},
		{"long given a fraction", `{"source":{"port":22.5}}`, "source.port"},
		{"ip not an address", `{"source":{"ip":"attacker"}}`, "source.ip"},
		{"date not RFC 3339", `{"@timestamp":"yesterday"}`, "@timestamp"},
		{"array field as a scalar", `{"threat":{"technique":{"id":"T1205"}}}`, "threat.technique.id"},
		{"scalar field as an array", `{"event":{"kind":["alert"]}}`, "event.kind"},
		{"expected value", `{"network":{"direction":"sideways"}}`, "network.direction"},
		{"type not for category", `{"event":{"category":["intrusion_detection"],"type":["connection"]}}`, "event.type"},
		{"null", `{"host":{"name":null}}`, "host.name"},
		{"empty object", `{"observer":{}}`, "observer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			custom := []string{"knockwatch"}
			if c.name == "custom namespace not declared" {
				custom = nil
			}
			errs := s.Validate([]byte(c.doc), custom...)
			if len(errs) == 0 {
				t.Fatalf("%s accepted", c.doc)
			}
			if !strings.HasPrefix(errs[0].Error(), c.field) {
				t.Errorf("error %q does not name %s", errs[0], c.field)
			}
		})
	}
}
