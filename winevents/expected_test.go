package winevents

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// expectRow is one hand-written row of testdata/winevents/expected.
type expectRow struct {
	line                             int
	event                            uint32
	record                           uint64 // 0: the format has none (match by time)
	host                             string
	time                             time.Time
	kind                             Kind
	ports, proto, dir, action, opens string
}

type expectCount struct {
	line  int
	event uint32
	kind  Kind
	opens string
	n     int
}

type expectation struct {
	rows   []expectRow
	counts []expectCount
	total  int
}

func readExpectation(t *testing.T, path string) expectation {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("read expectation (every sample needs one, written from its raw records): %v", err)
	}
	defer f.Close()
	var e expectation
	e.total = -1
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		bad := func(why string) { t.Fatalf("%s:%d: %s: %q", path, n, why, line) }
		num := func(s string) uint64 {
			if s == "-" {
				return 0
			}
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				bad("not a number: " + s)
			}
			return v
		}
		switch f[0] {
		case "row":
			if len(f) != 11 {
				bad("want row EVENT RECORD HOST TIME KIND PORTS PROTO DIR ACTION OPENS")
			}
			tm, err := time.Parse(time.RFC3339Nano, f[4])
			if err != nil {
				bad(err.Error())
			}
			e.rows = append(e.rows, expectRow{line: n, event: uint32(num(f[1])), record: num(f[2]), host: f[3], time: tm,
				kind: Kind(f[5]), ports: f[6], proto: f[7], dir: f[8], action: f[9], opens: f[10]})
		case "count":
			if len(f) != 5 {
				bad("want count EVENT KIND OPENS N")
			}
			e.counts = append(e.counts, expectCount{line: n, event: uint32(num(f[1])), kind: Kind(f[2]), opens: f[3], n: int(num(f[4]))})
		case "total":
			if len(f) != 2 {
				bad("want total N")
			}
			e.total = int(num(f[1]))
		default:
			bad("unknown line")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if e.total < 0 {
		t.Fatalf("%s: no total line", path)
	}
	return e
}

// consumerView applies the consumer contract to the emitted sequence: a
// change emitted again for the same record (same Source with a record id,
// or a join completed later for a record without one) replaces the earlier
// emission; a change naming another in Replaces drops it.
func consumerView(cs []ExposureChange) []ExposureChange {
	var out []ExposureChange
	for _, c := range cs {
		if r := c.Replaces; r != nil {
			out = slices.DeleteFunc(out, func(x ExposureChange) bool { return x.Source == *r })
		}
		i := slices.IndexFunc(out, func(x ExposureChange) bool {
			return x.Source == c.Source && (c.Source.RecordID != 0 || c.Joined != nil)
		})
		if i >= 0 {
			out[i] = c
			continue
		}
		out = append(out, c)
	}
	return out
}

// portsText renders a port set as the expectation files write it, from
// the decoded ranges (not from the decoder's own String).
func portsText(p PortSet) string {
	if p.Any {
		return "any"
	}
	if len(p.Ranges) == 0 {
		return "-"
	}
	var parts []string
	for _, r := range p.Ranges {
		if r.Lo == r.Hi {
			parts = append(parts, strconv.Itoa(int(r.Lo)))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", r.Lo, r.Hi))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func normPorts(s string) string {
	if s == "any" || s == "-" {
		return s
	}
	parts := strings.Split(s, ",")
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// rowOf renders a decoded change in the expectation's terms.
func rowOf(c ExposureChange) string {
	return fmt.Sprintf("%s %s %s %s %s %s %s %s", c.Host, c.Time.UTC().Format(time.RFC3339Nano), c.Kind, portsText(c.Ports),
		orDash(c.Protocol.String()), orDash(string(c.Direction)), orDash(string(c.Action)), yesNo(c.Opens()))
}

func (r expectRow) String() string {
	return fmt.Sprintf("%s %s %s %s %s %s %s %s", r.host, r.time.UTC().Format(time.RFC3339Nano), r.kind, normPorts(r.ports),
		r.proto, r.dir, r.action, r.opens)
}

// TestSamplesAgainstHandWrittenExpectations decodes every real sample and
// checks what a consumer ends up with against testdata/winevents/expected,
// written from the raw records (see its README): host, ports, protocol,
// direction, action, kind, whether the change opens, and time.
func TestSamplesAgainstHandWrittenExpectations(t *testing.T) {
	samples, err := filepath.Glob(filepath.Join(sampleDir, "*.*"))
	if err != nil {
		t.Fatal(err)
	}
	zones := map[string]map[string]*time.Location{}
	for _, gc := range goldenCases {
		zones[gc.file] = gc.zones
	}
	n := 0
	for _, path := range samples {
		name := filepath.Base(path)
		if name == "SOURCES.md" {
			continue
		}
		n++
		t.Run(name, func(t *testing.T) {
			exp := readExpectation(t, filepath.Join(sampleDir, "expected", name+".txt"))
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var emitted []ExposureChange
			d := NewDecoder(Options{Zones: zones[name]})
			if _, err := d.DecodeReader(f, func(c ExposureChange) { emitted = append(emitted, c) }); err != nil {
				t.Fatal(err)
			}
			live := consumerView(emitted)
			if len(live) != exp.total {
				t.Errorf("%d changes, want %d", len(live), exp.total)
			}
			covered := make([]bool, len(live))
			// Rows: match each to an unused change of the same record.
			for _, r := range exp.rows {
				found := false
				for i, c := range live {
					if covered[i] || c.Source.EventID != r.event {
						continue
					}
					if r.record != 0 && c.Source.RecordID != r.record {
						continue
					}
					if r.record == 0 && !c.Time.Equal(r.time) {
						continue
					}
					if got := rowOf(c); got != r.String() {
						if r.record == 0 {
							continue // another change of the same event and time may match
						}
						t.Errorf("line %d: event %d record %d\n got  %s\n want %s", r.line, r.event, r.record, got, r)
					}
					covered[i], found = true, true
					break
				}
				if !found {
					t.Errorf("line %d: no change for event %d record %d: want %s", r.line, r.event, r.record, r)
				}
			}
			// Counts: changes of an event id, kind and opens (rows included).
			for _, ct := range exp.counts {
				got := 0
				for i, c := range live {
					if c.Source.EventID == ct.event && c.Kind == ct.kind && yesNo(c.Opens()) == ct.opens {
						got++
						covered[i] = true
					}
				}
				if got != ct.n {
					t.Errorf("line %d: %d changes from %d are %s opens=%s, want %d", ct.line, got, ct.event, ct.kind, ct.opens, ct.n)
				}
			}
			for i, c := range live {
				if !covered[i] {
					t.Errorf("change not in the expectation: event %d record %d: %s", c.Source.EventID, c.Source.RecordID, rowOf(c))
				}
			}
		})
	}
	if n != len(goldenCases) {
		t.Errorf("%d samples, %d golden cases: every sample needs both", n, len(goldenCases))
	}
}
