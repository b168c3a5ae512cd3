package winevents

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPayloadShapes(t *testing.T) {
	a := renderXML(at(fwEvent(2004, ruleData...), 0, 1), false)
	b := renderXML(at(fwEvent(2004, withField(ruleData, "RuleId", "{b}")...), 1, 2), true)
	irrelevant := renderXML(at(secEvent(4624, "TargetUserName", "bob"), 2, 3), false)
	j1 := renderECS(at(fwEvent(2004, ruleData...), 0, 11), false)
	j2 := renderNXLog(at(fwEvent(2004, withField(ruleData, "RuleId", "{c}")...), 0, 12), time.UTC)
	j2 = strings.Replace(j2, `"EventTime"`, `"EventTimeX"`, 1) // no EventTime: rejected as bad_time
	cases := []struct {
		name             string
		payload          string
		read, emit, skip int
		rejected         map[Reason]int
		unreadable       bool
	}{
		{"one event", a, 1, 1, 0, nil, false},
		{"wevtutil concatenated", a + "\n" + b + irrelevant, 3, 2, 1, nil, false},
		{"wrapped in Events with prolog", `<?xml version="1.0" encoding="utf-8"?>` + "\n<Events>\n" + a + "<!-- c -->" + b + "</Events>", 2, 2, 0, nil, false},
		{"python-evtx time form", strings.Replace(a, "2024-03-10T14:05:06.0000000Z", "2024-03-10 14:05:06.000000", 1), 1, 1, 0, nil, false},
		{"truncated last event", a + b[:len(b)/2], 2, 1, 0, map[Reason]int{ReasonTruncated: 1}, false},
		{"DTD refused", `<!DOCTYPE x [<!ENTITY e "boom">]>` + strings.Replace(a, "knock", "&e;", 1), 1, 0, 0, map[Reason]int{ReasonDTD: 1}, true},
		{"undefined entity", strings.Replace(a, "knock", "&e;", 1), 1, 0, 0, map[Reason]int{ReasonMalformedXML: 1}, true},
		{"mismatched tags", strings.Replace(a, "</Computer>", "</Comp>", 1), 1, 0, 0, map[Reason]int{ReasonMalformedXML: 1}, true},
		{"no Computer", strings.Replace(a, "<Computer>WS01.corp.example</Computer>", "", 1), 1, 0, 0, map[Reason]int{ReasonMissingHost: 1}, false},
		{"xml without events", "<foo/>", 1, 0, 0, map[Reason]int{ReasonMalformedXML: 1}, true},
		{"json lines", j1 + "\n" + renderWLB6(at(fwEvent(2004, ruleData...), 0, 13)) + "\n\n", 2, 2, 0, nil, false},
		{"json array", "[" + j1 + ",\n" + renderWLB6(at(fwEvent(2004, ruleData...), 0, 13)) + "]", 2, 2, 0, nil, false},
		{"pretty-printed object", indent(j1), 1, 1, 0, nil, false},
		{"bad line then good", "{\"EventID\": 2004, oops\n" + j1 + "\n", 2, 1, 0, map[Reason]int{ReasonMalformedJSON: 1}, false},
		{"bad time", j2, 1, 0, 0, map[Reason]int{ReasonBadTime: 1}, false},
		{"unknown json", `{"hello":"world"}`, 1, 0, 0, map[Reason]int{ReasonUnknownFormat: 1}, true},
		{"no event id", `{"Hostname":"x","EventID":"abc","Channel":"Security"}`, 1, 0, 0, map[Reason]int{ReasonMissingEventID: 1}, false},
		{"deep json", strings.Repeat("[", 100) + strings.Repeat("]", 100), 1, 0, 0, map[Reason]int{ReasonTooDeep: 1}, true},
		{"not a format", "hello world", 1, 0, 0, map[Reason]int{ReasonUnknownFormat: 1}, true},
		{"empty", "  \n", 0, 0, 0, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, res := NewDecoder(Options{}).Decode([]byte(tc.payload))
			if res.Read != tc.read || len(got) != tc.emit || res.Skipped != tc.skip || (res.Err != nil) != tc.unreadable {
				t.Errorf("read %d emitted %d skipped %d err %v; want %d %d %d unreadable=%v", res.Read, len(got), res.Skipped, res.Err, tc.read, tc.emit, tc.skip, tc.unreadable)
			}
			if res.Err != nil && !errors.Is(res.Err, ErrUnreadable) {
				t.Errorf("err %v is not ErrUnreadable", res.Err)
			}
			if len(tc.rejected) != len(res.Reasons) {
				t.Errorf("reasons %v, want %v", res.Reasons, tc.rejected)
			}
			for k, v := range tc.rejected {
				if res.Reasons[k] != v {
					t.Errorf("reasons %v, want %v", res.Reasons, tc.rejected)
				}
			}
			// The streaming reader agrees with Decode.
			var n int
			sres, err := NewDecoder(Options{}).DecodeReader(strings.NewReader(tc.payload), func(ExposureChange) { n++ })
			if n != len(got) || sres.Read != res.Read || sres.Rejected != res.Rejected {
				t.Errorf("DecodeReader: %d changes, %+v (err %v); Decode: %d, %+v", n, sres, err, len(got), res)
			}
		})
	}
}

func indent(s string) string {
	var b bytes.Buffer
	if err := json.Indent(&b, []byte(s), "", "  "); err != nil {
		panic(err)
	}
	return b.String()
}

func TestLimits(t *testing.T) {
	d := NewDecoder(Options{MaxEventBytes: 4096, MaxPayloadBytes: 1 << 20})
	big := renderXML(at(fwEvent(2004, withField(ruleData, "RuleName", strings.Repeat("x", 5000))...), 0, 1), false)
	small := renderXML(at(fwEvent(2004, ruleData...), 1, 2), false)
	got, res := d.Decode([]byte(big + small))
	if len(got) != 1 || res.Reasons[ReasonTooLarge] != 1 {
		t.Errorf("too large event: %d changes, %+v", len(got), res)
	}
	// Streaming: an oversized event is skipped, the next one still read.
	var n int
	d = NewDecoder(Options{MaxEventBytes: 4096})
	res, err := d.DecodeReader(strings.NewReader(strings.Repeat(big, 30)+small), func(ExposureChange) { n++ })
	if err != nil || n != 1 || res.Reasons[ReasonTooLarge] == 0 {
		t.Errorf("stream: %d changes, %+v, %v", n, res, err)
	}
	_, res = NewDecoder(Options{MaxPayloadBytes: 100}).Decode([]byte(small))
	if res.Err == nil || res.Reasons[ReasonTooLarge] != 1 {
		t.Errorf("payload cap: %+v", res)
	}
	// JSON lines longer than the reader buffer still decode.
	long := renderWLB6(at(fwEvent(2004, withField(ruleData, "RuleName", strings.Repeat("y", 200<<10))...), 0, 3))
	n = 0
	res, err = NewDecoder(Options{}).DecodeReader(strings.NewReader(long+"\n"+long+"\n"), func(ExposureChange) { n++ })
	if err != nil || n != 1 || res.Duplicates != 1 {
		t.Errorf("long lines: %d changes, %+v, %v", n, res, err)
	}
}

func TestStreamChunkBoundaries(t *testing.T) {
	// Many events so that <Event> boundaries fall across read chunks.
	var buf bytes.Buffer
	buf.WriteString("<Events>")
	for i := 0; i < 400; i++ {
		buf.WriteString(renderXML(at(fwEvent(2004, withField(ruleData, "RuleId", strings.Repeat("r", i%37)+"x")...), i, uint64(i+1)), i%2 == 0))
	}
	buf.WriteString("</Events>")
	var n int
	res, err := NewDecoder(Options{}).DecodeReader(&oneByteChunks{r: bytes.NewReader(buf.Bytes())}, func(ExposureChange) { n++ })
	if err != nil || res.Read != 400 || n != 400 || res.Rejected != 0 {
		t.Errorf("read %d emitted %d rejected %d err %v", res.Read, n, res.Rejected, err)
	}
}

// oneByteChunks returns reads of odd sizes to exercise buffering.
type oneByteChunks struct {
	r *bytes.Reader
	i int
}

func (o *oneByteChunks) Read(p []byte) (int, error) {
	o.i++
	n := 1 + (o.i*7919)%3000
	if n > len(p) {
		n = len(p)
	}
	return o.r.Read(p[:n])
}

func TestConcurrentDecode(t *testing.T) {
	d := NewDecoder(Options{})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				e := at(fwEvent(2004, ruleData...), i, uint64(i+1))
				d.Decode([]byte(renderXML(e, false)))
				d.Decode([]byte(renderNXLog(e, time.UTC)))
				_ = d.Stats()
			}
		}(g)
	}
	wg.Wait()
	s := d.Stats()
	if got := s.ByFormat[FormatXML].Relevant + s.ByFormat[FormatNXLog].Relevant; got != 200 {
		t.Errorf("relevant = %d, want 200 (the rest duplicates)", got)
	}
}
