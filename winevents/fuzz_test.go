package winevents

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// checkDecode runs one payload through Decode and DecodeReader and checks
// the invariants every input must keep: no panic, counts that add up, the
// two readers agreeing, and changes that name a host, a time and a
// supported source event.
func checkDecode(t *testing.T, payload []byte) {
	d := NewDecoder(Options{MaxEventBytes: 64 << 10})
	changes, res := d.Decode(payload)
	if res.Read != res.Relevant+res.Skipped+res.Duplicates+res.Rejected {
		t.Fatalf("counts do not add up: %+v", res)
	}
	if res.Emitted != len(changes) {
		t.Fatalf("emitted %d, returned %d", res.Emitted, len(changes))
	}
	for _, c := range changes {
		if c.Host == "" || c.Time.IsZero() || c.Kind == "" {
			t.Fatalf("incomplete change: %+v", c)
		}
		if !relevant(classifyChannel(c.Source.Channel), c.Source.EventID) {
			t.Fatalf("change from an unsupported event: %+v", c.Source)
		}
		if _, err := json.Marshal(c); err != nil {
			t.Fatalf("marshal change: %v", err)
		}
	}
	var n int
	sres, err := NewDecoder(Options{MaxEventBytes: 64 << 10}).DecodeReader(bytes.NewReader(payload), func(ExposureChange) { n++ })
	if err == nil && res.Err == nil && (n != len(changes) || sres.Read != res.Read) {
		t.Fatalf("DecodeReader %d changes / %d read, Decode %d / %d", n, sres.Read, len(changes), res.Read)
	}
}

func addSamples(f *testing.F, ext string, perLine bool) {
	files, _ := filepath.Glob(filepath.Join(sampleDir, "*."+ext))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		if !perLine {
			// One seed per event (small seeds keep minimisation fast),
			// plus the first two events together as wevtutil prints them.
			i, first := 0, -1
			for n := 0; n < 20; n++ {
				start, end, found, _ := nextXMLEvent(b, i)
				if !found {
					break
				}
				f.Add(append([]byte(nil), b[start:end]...))
				if first < 0 {
					first = start
				} else if n == 1 {
					f.Add(append([]byte(nil), b[first:end]...))
				}
				i = end
			}
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		for i := 0; sc.Scan() && i < 40; i++ {
			f.Add(append([]byte(nil), sc.Bytes()...))
		}
	}
}

func FuzzDecodeXML(f *testing.F) {
	addSamples(f, "xml", false)
	f.Add([]byte(renderXML(fwEvent(2004, ruleData...), true)))
	f.Add([]byte(renderXML(secEvent(5447, "FilterName", "a", "FilterId", "1", "ChangeType", "%%16384", "Action", "%%16390", "LayerName", "ALE Listen v4 Layer", "Conditions", portCond), false)))
	f.Add([]byte(`<!DOCTYPE x [<!ENTITY a "b">]><Event><System><EventID>2004</EventID></System></Event>`))
	f.Add([]byte(`<Event><System><EventID>2004</EventID><Channel>Microsoft-Windows-Windows Firewall With Advanced Security/Firewall</Channel><Computer>h</Computer><TimeCreated SystemTime="2024-01-01T00:00:00Z"/></System><EventData><Data Name="LocalPorts"><![CDATA[1-2]]></Data></EventData></Event>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, b)
	})
}

func FuzzDecodeJSON(f *testing.F) {
	addSamples(f, "jsonl", true)
	f.Add([]byte(renderECS(fwEvent(2004, ruleData...), true)))
	f.Add([]byte(renderNXLog(fwEvent(2005, ruleData...), tTest.Location())))
	f.Add([]byte("[" + renderWLB6(secEvent(4946, "RuleId", "{1}", "RuleName", "x")) + "]"))
	f.Add([]byte(`{"EventID":5154,"Channel":"Security","Hostname":"h","EventTime":"2024-01-01 00:00:00","SourcePort":"\u0034\u0034"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, b)
	})
}

// FuzzJSONScanner checks the hand-written scanner against encoding/json:
// it accepts exactly the valid documents, and the strings it extracts are
// the ones encoding/json decodes.
func FuzzJSONScanner(f *testing.F) {
	for _, s := range []string{`{}`, `[1,2.5e-3,true,null]`, `{"a":"\u00e9\ud83d\ude00\n","b":[{}]}`, `"x"`, `01`, `{"a":1,}`, `{"a":"\ud800"}`, "{\"a\":\"\xff\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s := &jsonScanner{b: b}
		s.ws()
		_, err := s.skip(0)
		s.ws()
		ok := err == nil && s.i == len(b)
		if ok != json.Valid(b) && !(errorsIsDepth(err) && json.Valid(b)) {
			t.Fatalf("scanner ok=%v (%v), json.Valid=%v for %q", ok, err, json.Valid(b), b)
		}
		if !ok || len(b) == 0 || b[0] != '{' {
			return
		}
		var m map[string]any
		if json.Unmarshal(b, &m) != nil {
			return
		}
		o := &jsonObj{}
		if err := scanJSONObject(&jsonScanner{b: b}, o); err != nil {
			t.Fatalf("scanJSONObject: %v", err)
		}
		for _, sp := range o.spans {
			if sp.scope != jsTop || sp.null || sp.kesc {
				continue
			}
			want, isStr := m[string(sp.key)].(string)
			if !isStr || !utf8.Valid(sp.key) || strings.Count(string(b), `"`+string(sp.key)+`"`) != 1 {
				continue // duplicate keys: encoding/json keeps the last
			}
			if got := jsonString(sp.val, sp.vesc); got != want {
				t.Fatalf("key %q: scanner %q, encoding/json %q", sp.key, got, want)
			}
		}
	})
}

func errorsIsDepth(err error) bool { return err == errJSONDepth }

func FuzzPortSet(f *testing.F) {
	for _, s := range []string{"22", "80,443", "5000-5010", "*", "", "RPC,RPC-EPMap", "1-65535,0", "9-3", "x,,,-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, _ := ParsePortSet(s)
		for i := 1; i < len(ps.Ranges); i++ {
			if uint32(ps.Ranges[i-1].Hi)+1 >= uint32(ps.Ranges[i].Lo) {
				t.Fatalf("ranges not normalized: %v", ps.Ranges)
			}
		}
		for _, r := range ps.Ranges {
			if r.Lo > r.Hi {
				t.Fatalf("reversed range %v", r)
			}
		}
		// The text form parses back to a set with the same membership.
		txt, _ := ps.MarshalText()
		var back PortSet
		_ = back.UnmarshalText(txt)
		for _, p := range []uint16{0, 1, 22, 80, 135, 443, 5000, 49152, 65535} {
			if ps.Contains(p) != back.Contains(p) && ps.Known() {
				t.Fatalf("%q -> %q: Contains(%d) differs", s, txt, p)
			}
		}
	})
}

// FuzzXMLFastVsStd checks the fast Event XML scanner against encoding/xml:
// whatever the fast scanner accepts, encoding/xml must read the same way.
func FuzzXMLFastVsStd(f *testing.F) {
	addSamples(f, "xml", false)
	f.Add([]byte(renderXML(fwEvent(2004, withField(ruleData, "RuleName", "a&amp;b &lt;c&gt; &#x41;&#66; \r\n x")...), true)))
	f.Add([]byte("<Event><System><EventID>4946</EventID><Channel>Security</Channel><Computer>h</Computer><TimeCreated SystemTime='2024-01-01T00:00:00Z'/></System><EventData><Data Name=\"RuleName\">x<!-- c -->y</Data><Data Name='e'/></EventData></Event>"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fp, ok := fastXMLEvent(b)
		if !ok {
			return
		}
		fr, freason, ferr := fp.record()
		sr, sreason, serr := parseXMLEventStd(b)
		if (ferr == nil) != (serr == nil) || freason != sreason {
			t.Fatalf("fast: %v %v; encoding/xml: %v %v; input %q", freason, ferr, sreason, serr, b)
		}
		if ferr != nil {
			return
		}
		if fr.eventID != sr.eventID || fr.recordID != sr.recordID || fr.channel != sr.channel || fr.computer != sr.computer ||
			!fr.time.Equal(sr.time) || fr.provider != sr.provider || len(fr.data) != len(sr.data) {
			t.Fatalf("records differ:\nfast %+v\nstd  %+v\ninput %q", fr, sr, b)
		}
		for i := range fr.data {
			if fr.data[i] != sr.data[i] {
				t.Fatalf("data %d: fast %q std %q; input %q", i, fr.data[i], sr.data[i], b)
			}
		}
	})
}
