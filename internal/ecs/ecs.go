// Package ecs checks JSON documents against the Elastic Common Schema's
// field reference: the flat field file of an ECS release (a subset of
// generated/ecs/ecs_flat.yml keeping every field's type, normalize,
// allowed and expected values; testdata/ecs). Tests use it to prove that
// knockwatch's alerts are valid ECS; fields under a custom namespace (such
// as knockwatch.*) are left alone.
package ecs

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Field is one field of the reference.
type Field struct {
	Type           string              `yaml:"type"`
	Normalize      []string            `yaml:"normalize"`
	AllowedValues  []string            `yaml:"allowed_values"`
	ExpectedValues []string            `yaml:"expected_values"`
	ObjectType     string              `yaml:"object_type"`
	EventTypes     map[string][]string `yaml:"expected_event_types"` // event.category only
}

// Array reports whether the field is expected to hold an array.
func (f *Field) Array() bool { return slices.Contains(f.Normalize, "array") }

// Schema is a loaded field reference.
type Schema struct {
	Fields map[string]*Field
}

// Load reads a flat field file.
func Load(path string) (*Schema, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read ecs reference: %w", err)
	}
	s := &Schema{}
	if err := yaml.Unmarshal(b, &s.Fields); err != nil {
		return nil, fmt.Errorf("parse ecs reference %s: %w", path, err)
	}
	if len(s.Fields) == 0 {
		return nil, fmt.Errorf("parse ecs reference %s: no fields", path)
	}
	return s, nil
}

// Validate checks one JSON document (one alert line) and returns every
// problem found, each naming the field. Custom namespaces (e.g.
// "knockwatch") are not checked.
func (s *Schema) Validate(doc []byte, custom ...string) []error {
	var m map[string]any
	d := json.NewDecoder(strings.NewReader(string(doc)))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return []error{fmt.Errorf("not a JSON object: %w", err)}
	}
	var errs []error
	fields := map[string]any{}
	s.flatten("", m, custom, fields, &errs)
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, err := range s.check(name, fields[name]) {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	// event.type must suit every event.category (ECS's expected_event_types).
	if cats, ok := fields["event.category"].([]any); ok {
		if types, ok := fields["event.type"].([]any); ok {
			if f := s.Fields["event.category"]; f != nil && f.EventTypes != nil {
				for _, c := range cats {
					allowed := f.EventTypes[fmt.Sprint(c)]
					for _, ty := range types {
						if !slices.Contains(allowed, fmt.Sprint(ty)) {
							errs = append(errs, fmt.Errorf("event.type: %v is not expected with event.category %v (want one of %v)", ty, c, allowed))
						}
					}
				}
			}
		}
	}
	return errs
}

// flatten collects the leaf values by dotted name. An object is walked
// into unless the reference says the name itself is an object-typed field.
func (s *Schema) flatten(prefix string, m map[string]any, custom []string, out map[string]any, errs *[]error) {
	for k, v := range m {
		name := k
		if prefix != "" {
			name = prefix + "." + k
		}
		if slices.Contains(custom, strings.SplitN(name, ".", 2)[0]) {
			continue
		}
		if sub, ok := v.(map[string]any); ok {
			if f := s.Fields[name]; f != nil && (f.Type == "object" || f.Type == "flattened" || f.Type == "nested") {
				out[name] = v
				continue
			}
			if len(sub) == 0 {
				*errs = append(*errs, fmt.Errorf("%s: empty object", name))
				continue
			}
			s.flatten(name, sub, custom, out, errs)
			continue
		}
		out[name] = v
	}
}

// check validates one leaf against its field definition.
func (s *Schema) check(name string, v any) []error {
	f := s.Fields[name]
	if f == nil {
		return []error{fmt.Errorf("not an ECS field (and not under a custom namespace)")}
	}
	if v == nil {
		return []error{fmt.Errorf("null (leave the field out instead)")}
	}
	var values []any
	if arr, ok := v.([]any); ok {
		if !f.Array() {
			return []error{fmt.Errorf("is an array; the reference does not normalize %s to an array", name)}
		}
		values = arr
	} else {
		if f.Array() {
			return []error{fmt.Errorf("is a single value; the reference expects an array")}
		}
		values = []any{v}
	}
	var errs []error
	for _, x := range values {
		if err := checkType(f.Type, x); err != nil {
			errs = append(errs, err)
			continue
		}
		str := fmt.Sprint(x)
		if len(f.AllowedValues) > 0 && !slices.Contains(f.AllowedValues, str) {
			errs = append(errs, fmt.Errorf("%q is not an allowed value (%s)", str, strings.Join(f.AllowedValues, ", ")))
		}
		if len(f.ExpectedValues) > 0 && !slices.Contains(f.ExpectedValues, str) {
			errs = append(errs, fmt.Errorf("%q is not an expected value (%s)", str, strings.Join(f.ExpectedValues, ", ")))
		}
	}
	return errs
}

func checkType(typ string, x any) error {
	switch typ {
	case "keyword", "constant_keyword", "wildcard", "match_only_text", "text":
		if _, ok := x.(string); !ok {
			return fmt.Errorf("%v is %T, want a string (%s)", x, x, typ)
		}
	case "long", "integer", "short", "byte", "unsigned_long":
		n, ok := x.(json.Number)
		if !ok {
			return fmt.Errorf("%v is %T, want a number (%s)", x, x, typ)
		}
		if _, err := n.Int64(); err != nil {
			return fmt.Errorf("%v is not an integer (%s)", x, typ)
		}
	case "float", "scaled_float", "double", "half_float":
		n, ok := x.(json.Number)
		if !ok {
			return fmt.Errorf("%v is %T, want a number (%s)", x, x, typ)
		}
		if f, err := n.Float64(); err != nil || math.IsInf(f, 0) {
			return fmt.Errorf("%v is not a number (%s)", x, typ)
		}
	case "boolean":
		if _, ok := x.(bool); !ok {
			return fmt.Errorf("%v is %T, want a boolean", x, x)
		}
	case "date":
		str, ok := x.(string)
		if !ok {
			return fmt.Errorf("%v is %T, want a date string", x, x)
		}
		if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
			return fmt.Errorf("%q is not an RFC 3339 date", str)
		}
	case "ip":
		str, ok := x.(string)
		if !ok {
			return fmt.Errorf("%v is %T, want an IP address string", x, x)
		}
		if _, err := netip.ParseAddr(str); err != nil {
			return fmt.Errorf("%q is not an IP address", str)
		}
	case "object", "flattened", "nested":
		if _, ok := x.(map[string]any); !ok {
			return fmt.Errorf("%v is %T, want an object", x, x)
		}
	default:
		return fmt.Errorf("type %s is not checked by this validator", typ)
	}
	return nil
}
