package reliability

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	lumberclient "github.com/elastic/go-lumber/client/v2"

	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// Hostile input end to end (issue 7, "Hostile input"): each payload goes
// through the real HTTP (or Beats) listener into the decoder, pipeline and
// engine, as `knockwatch run` wires them, while good clients keep sending
// on both listeners. Each hostile input must get a clear answer and a
// counter, and no good request may fail meanwhile.
//
// Known gaps (see docs/RELIABILITY.md) are logged as "KNOWN GAP"; set
// KNOCKWATCH_STRICT=1 to turn them into failures.

const hostileToken = "hostile-test-token-0123"

type hostileEnv struct {
	t     *testing.T
	p     *pipeline.Pipeline
	http  *intake.HTTPServer
	beats *intake.BeatsServer
	url   string

	good       atomic.Uint64 // good requests/windows accepted
	goodFailed atomic.Uint64
	goodErrs   sync.Map
	stop       chan struct{}
	wg         sync.WaitGroup
	record     atomic.Uint64
}

func newHostileEnv(t *testing.T) *hostileEnv {
	log := testLogger(t)
	sink, _ := fileSink(t)
	p := newPipeline(t, sink, pipeline.Config{}, log)
	t.Cleanup(func() { _ = p.Close() })
	hs, err := intake.NewHTTPServer(intake.HTTPConfig{Addr: "127.0.0.1:0", Token: hostileToken,
		ReadHeaderTimeout: time.Second, ReadTimeout: 2 * time.Second, MaxConns: 64}, p, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hs.Close() })
	bs, err := intake.NewBeatsServer(intake.BeatsConfig{Addr: "127.0.0.1:0", Timeout: time.Second}, p, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bs.Close() })
	e := &hostileEnv{t: t, p: p, http: hs, beats: bs, url: "http://" + hs.Addr().String() + intake.EventsPath,
		stop: make(chan struct{})}
	e.record.Store(10_000_000)
	return e
}

// goodEvent is a valid, relevant event with a fresh record id.
func (e *hostileEnv) goodEvent() []byte {
	n := e.record.Add(1)
	return ruleAdded(nil, hostName(int(n%numHosts)), n, time.Now(), uint16(20000+n%1000))
}

// startGoodClients keeps one HTTP client and one Beats client sending good
// events until stopGoodClients.
func (e *hostileEnv) startGoodClients() {
	fail := func(what string, err error) {
		e.goodFailed.Add(1)
		e.goodErrs.Store(what, err)
	}
	e.wg.Add(2)
	go func() {
		defer e.wg.Done()
		client := &http.Client{Timeout: 20 * time.Second}
		for {
			select {
			case <-e.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			status, body, err := e.post(client, e.goodEvent(), nil)
			if err != nil || status != http.StatusAccepted || !strings.Contains(body, `"accepted":1`) {
				fail(fmt.Sprintf("http %d %s", status, body), err)
				continue
			}
			e.good.Add(1)
		}
	}()
	go func() {
		defer e.wg.Done()
		var cl *lumberclient.SyncClient
		defer func() {
			if cl != nil {
				_ = cl.Close()
			}
		}()
		for {
			select {
			case <-e.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if cl == nil {
				c, err := lumberclient.SyncDial(e.beats.Addr().String(), lumberclient.JSONEncoder(rawEncoder),
					lumberclient.Timeout(20*time.Second))
				if err != nil {
					fail("beats dial", err)
					continue
				}
				cl = c
			}
			if n, err := cl.Send([]any{e.goodEvent()}); err != nil || n != 1 {
				fail("beats send", err)
				_ = cl.Close()
				cl = nil
				continue
			}
			e.good.Add(1)
		}
	}()
}

func (e *hostileEnv) stopGoodClients() {
	close(e.stop)
	e.wg.Wait()
	if n := e.goodFailed.Load(); n != 0 {
		e.goodErrs.Range(func(k, v any) bool { e.t.Errorf("good client failed: %v: %v", k, v); return true })
		e.t.Fatalf("%d good requests failed while hostile input was in progress", n)
	}
}

// post sends body with the token; hdr adds headers.
func (e *hostileEnv) post(client *http.Client, body []byte, hdr map[string]string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, e.url, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+hostileToken)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// counts flattens every counter that can record a rejection.
func (e *hostileEnv) counts() map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range e.http.Stats().Dropped {
		out["http."+k] = v
	}
	for k, v := range e.beats.Stats().Dropped {
		out["beats."+k] = v
	}
	ds := e.p.Decoder().Stats()
	for k, v := range ds.Rejected {
		out["decoder."+string(k)] = v
	}
	es := e.p.Engine().Stats()
	out["engine.unresolved"] = es.ChangesUnresolved
	out["engine.late"] = es.Late["change"]
	out["engine.rejected"] = es.Rejected["change"]
	ps := e.p.Stats()
	out["pipeline.unreadable"] = ps.Unreadable
	for why, v := range ps.Rejected["change"] {
		out["pipeline.rejected."+why] = v
	}
	return out
}

func delta(before, after map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range after {
		if v != before[k] {
			out[k] = v - before[k]
		}
	}
	return out
}

func knownGap(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("KNOCKWATCH_STRICT") != "" {
		t.Errorf("KNOWN GAP: "+format, args...)
		return
	}
	t.Logf("KNOWN GAP: "+format, args...)
}

// deepJSON nests n arrays.
func deepJSON(n int) []byte {
	return []byte(strings.Repeat("[", n) + strings.Repeat("]", n))
}

// billionLaughs is the classic entity-expansion document, wrapped as an
// Event so only the DTD can stop it.
func billionLaughs() []byte {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0"?><!DOCTYPE Event [<!ENTITY lol "lol">`)
	prev := "lol"
	for i := 1; i <= 9; i++ {
		name := fmt.Sprintf("lol%d", i)
		fmt.Fprintf(&b, `<!ENTITY %s "%s">`, name, strings.Repeat("&"+prev+";", 10))
		prev = name
	}
	b.WriteString(`]><Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><EventID>2004</EventID>` +
		`<Channel>` + fwChannel + `</Channel><Computer>WS01.corp.example</Computer><EventRecordID>1</EventRecordID>` +
		`<TimeCreated SystemTime="2026-01-01T00:00:00Z"/></System><EventData><Data Name="RuleName">&lol9;</Data></EventData></Event>`)
	return []byte(b.String())
}

// xmlRule renders a Firewall 2004 as native Event XML.
func xmlRule(host, ruleName string, record uint64, at time.Time, port int) []byte {
	return fmt.Appendf(nil, `<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System>`+
		`<Provider Name="%s"/><EventID>2004</EventID><TimeCreated SystemTime="%s"/><EventRecordID>%d</EventRecordID>`+
		`<Channel>%s</Channel><Computer>%s</Computer></System><EventData><Data Name="RuleId">{x-%d}</Data>`+
		`<Data Name="RuleName">%s</Data><Data Name="Direction">1</Data><Data Name="Protocol">6</Data>`+
		`<Data Name="LocalPorts">%d</Data><Data Name="Action">3</Data><Data Name="Active">1</Data></EventData></Event>`,
		fwProvider, at.UTC().Format(time.RFC3339Nano), record, fwChannel, host, record, ruleName, port)
}

func TestHostileInputEndToEnd(t *testing.T) {
	e := newHostileEnv(t)
	e.p.Advance(time.Now()) // the sensor's clock: evidence older than retention is late
	e.startGoodClients()
	client := &http.Client{Timeout: 30 * time.Second}
	now := time.Now()
	goodLine := func() []byte { return append(e.goodEvent(), '\n') }
	deepEventData := ruleAdded(nil, "WS01.corp.example", e.record.Add(1), now, 4000)
	deepEventData = bytes.Replace(deepEventData, []byte(`"Active":"1"`),
		append(append([]byte(`"Active":"1","x":`), deepJSON(10000)...), ' '), 1)
	badUTF8 := ruleAdded(nil, "WS02.corp.example", e.record.Add(1), now, 4001)
	badUTF8 = bytes.Replace(badUTF8, []byte(`"RuleName":"reliability`), []byte("\"RuleName\":\"\xff\xfe\xc0reliability"), 1)
	cases := []struct {
		name     string
		body     []byte
		hdr      map[string]string
		status   int
		accepted string            // substring of a 202 body
		want     map[string]uint64 // counter deltas that must appear
		gap      string            // what is missing, if the behaviour is a known gap
	}{
		{name: "deeply nested JSON (100k levels)", body: deepJSON(100000), status: 400,
			want: map[string]uint64{"decoder.too_deep": 1, "http.unreadable": 1, "pipeline.unreadable": 1}},
		{name: "deeply nested JSON inside an event, next to a good one", body: append(append(goodLine(), deepEventData...), '\n'),
			status: 202, accepted: `"accepted":1,"rejected":1`, want: map[string]uint64{"decoder.too_deep": 1}},
		{name: "deeply nested XML (10k levels)", body: []byte(`<Event>` + strings.Repeat("<a>", 10000) + strings.Repeat("</a>", 10000) + `</Event>`),
			status: 400, want: map[string]uint64{"decoder.too_deep": 1, "http.unreadable": 1}},
		{name: "XML entity expansion (billion laughs)", body: billionLaughs(), status: 400,
			want: map[string]uint64{"decoder.dtd_forbidden": 1, "http.unreadable": 1}},
		{name: "XML external entity", body: []byte(`<!DOCTYPE Event [<!ENTITY x SYSTEM "file:///etc/passwd">]>` +
			string(xmlRule("WS01.corp.example", "&x;", e.record.Add(1), now, 4002))), status: 400,
			want: map[string]uint64{"decoder.dtd_forbidden": 1}},
		{name: "gzip bomb (256 MiB of zeros)", body: gzipZeros(256 << 20), hdr: map[string]string{"Content-Encoding": "gzip"},
			status: 413, want: map[string]uint64{"http.too_large": 1}},
		{name: "oversized body (11 MiB)", body: bytes.Repeat(goodLine(), (11<<20)/len(goodLine())+1), status: 413,
			want: map[string]uint64{"http.too_large": 1}},
		{name: "not UTF-8 at all", body: bytes.Repeat([]byte{0xff, 0xfe, 0x00, 0xc3}, 1000), status: 400,
			want: map[string]uint64{"decoder.unknown_format": 1, "http.unreadable": 1}},
		{name: "invalid UTF-8 inside a JSON event's strings", body: badUTF8, status: 202, accepted: `"accepted":1`,
			gap: "accepted with U+FFFD replacement (the alert stays valid UTF-8) but no counter says the input was not UTF-8"},
		{name: "invalid UTF-8 inside Event XML", body: xmlRule("WS03.corp.example", "\xff\xfebad", e.record.Add(1), now, 4003),
			status: 400, want: map[string]uint64{"decoder.malformed_xml": 1}},
		{name: "timestamp far in the past (1971)", body: ruleAdded(nil, "WS04.corp.example", e.record.Add(1),
			time.Date(1971, 1, 1, 0, 0, 0, 0, time.UTC), 4004), status: 202, accepted: `"accepted":0,"rejected":1`,
			want: map[string]uint64{"engine.rejected": 1, "pipeline.rejected.time_range": 1}},
		{name: "timestamp far in the future (2100)", body: ruleAdded(nil, "WS05.corp.example", e.record.Add(1),
			time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), 4005), status: 202, accepted: `"accepted":0,"rejected":1`,
			want: map[string]uint64{"pipeline.rejected.future_time": 1}},
		{name: "timestamp beyond int64 nanoseconds (2999)", body: ruleAdded(nil, "WS07.corp.example", e.record.Add(1),
			time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC), 4008), status: 202, accepted: `"accepted":0,"rejected":1`,
			want: map[string]uint64{"pipeline.rejected.future_time": 1}},
		{name: "timestamp 1601-01-01 (FILETIME zero)", body: ruleAdded(nil, "WS08.corp.example", e.record.Add(1),
			time.Date(1601, 1, 1, 0, 0, 0, 0, time.UTC), 4009), status: 202, accepted: `"accepted":0,"rejected":1`,
			want: map[string]uint64{"engine.rejected": 1, "pipeline.rejected.time_range": 1}},
		{name: "timestamp a year ago (late, kept as evidence of the past)", body: ruleAdded(nil, "WS09.corp.example", e.record.Add(1),
			time.Now().AddDate(-1, 0, 0), 4010), status: 202, accepted: `"accepted":1`,
			want: map[string]uint64{"engine.late": 1}},
		{name: "unparsable timestamp", body: bytes.Replace(ruleAdded(nil, "WS06.corp.example", e.record.Add(1), now, 4006),
			[]byte(`"@timestamp":"`), []byte(`"@timestamp":"yesterday`), 1), status: 202, accepted: `"accepted":0,"rejected":1`,
			want: map[string]uint64{"decoder.bad_time": 1}},
		{name: "event for an unknown host", body: ruleAdded(nil, "ROGUE-PC.evil.example", e.record.Add(1), now, 4007),
			status: 202, accepted: `"accepted":1`, want: map[string]uint64{"engine.unresolved": 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.counts()
			status, body, err := e.post(client, c.body, c.hdr)
			if err != nil {
				t.Fatalf("request failed without an answer: %v", err)
			}
			d := delta(before, e.counts())
			if status != 202 && !strings.Contains(body, `"error"`) {
				t.Errorf("refusal without an error message: %.200s", body)
			}
			if c.gap != "" && (status != c.status || !strings.Contains(body, c.accepted)) {
				// The gap was closed: the input is now refused. Refused
				// means an explicit answer and a counter.
				if (status != 400 && !strings.Contains(body, `"rejected":1`)) || len(d) == 0 {
					t.Fatalf("got %d %.200s with counters %v: want accepted (the known behaviour) or refused with a counter", status, body, d)
				}
				t.Logf("RESULT %s -> %d %s, counters %v (known gap closed: update the case)", c.name, status, body, d)
				return
			}
			if status != c.status || (c.accepted != "" && !strings.Contains(body, c.accepted)) {
				t.Fatalf("got %d %.200s, want %d %s", status, body, c.status, c.accepted)
			}
			for k, v := range c.want {
				if d[k] < v {
					t.Errorf("counter %s grew by %d, want %d (all changes: %v)", k, d[k], v, d)
				}
			}
			if c.gap != "" {
				knownGap(t, "%s: %s (counters that moved: %v)", c.name, c.gap, d)
			}
			t.Logf("RESULT %s -> %d, counters %v", c.name, status, d)
		})
	}
	e.stopGoodClients()
	t.Logf("RESULT good requests accepted meanwhile: %d, failed: 0", e.good.Load())
}

func gzipZeros(n int) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	chunk := make([]byte, 1<<20)
	for i := 0; i < n; i += len(chunk) {
		_, _ = zw.Write(chunk)
	}
	_ = zw.Close()
	return buf.Bytes()
}

// TestSlowClientsDoNotBlockOthers: slowloris connections (headers never
// finished), a body trickled byte by byte and a Beats window that never
// completes are all in progress while good clients' requests succeed; then
// each slow peer is cut at its timeout. The slow peers connect from other
// loopback addresses than the good clients: one address may hold only
// max_preauth_per_source connections that have not authenticated yet.
func TestSlowClientsDoNotBlockOthers(t *testing.T) {
	e := newHostileEnv(t)
	addr := e.http.Addr().String()
	before := e.counts()

	// 16 slowloris connections
	var slow []net.Conn
	for i := range 16 {
		c, err := dialFrom(attackerSource(i), addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + hostileToken + "\r\n")); err != nil {
			t.Fatal(err)
		}
		slow = append(slow, c)
	}
	// a body announced at 1 MiB, trickled
	trickle, err := dialFrom(attackerSource(20), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer trickle.Close()
	fmt.Fprintf(trickle, "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n{", hostileToken, 1<<20)
	stopTrickle := make(chan struct{})
	go func() {
		for {
			select {
			case <-stopTrickle:
				return
			case <-time.After(100 * time.Millisecond):
				if _, err := trickle.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	defer close(stopTrickle)
	// a Beats window announced and never sent
	beatsSlow, err := dialFrom(attackerSource(21), e.beats.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer beatsSlow.Close()
	if _, err := beatsSlow.Write(append([]byte("2W"), binary.BigEndian.AppendUint32(nil, 10)...)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "slow connections open", func() bool {
		return e.http.Stats().ConnectionsOpen >= 17 && e.beats.Stats().ConnectionsOpen >= 1
	})

	// while they hang, good clients are served on both listeners
	e.startGoodClients()
	eventually(t, "good requests on both listeners", func() bool { return e.good.Load() >= 10 })
	e.stopGoodClients()
	if open := e.http.Stats().ConnectionsOpen; open < 17 {
		t.Fatalf("the slow HTTP peers were cut (%d open) before the good clients finished: the test proved nothing", open)
	}

	// then each slow peer is cut at its timeout, with an answer where HTTP allows one
	for i, c := range slow {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("slowloris %d not cut: %v", i, err)
		}
		if len(b) > 0 && !bytes.Contains(b, []byte("408")) {
			t.Errorf("slowloris %d got %q", i, b)
		}
	}
	_ = trickle.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(trickle), nil)
	if err != nil {
		t.Fatalf("trickled body not answered: %v", err)
	}
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("trickled body: %d, want 408", resp.StatusCode)
	}
	_ = beatsSlow.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(beatsSlow); err != nil {
		t.Errorf("stalled Beats window not cut: %v", err)
	}
	eventually(t, "beats read timeout counted", func() bool { return e.beats.Stats().Dropped[intake.ReasonReadTimeout] >= 1 })
	d := delta(before, e.counts())
	if d["http.read_timeout"] < 1 {
		t.Errorf("trickled body: read_timeout not counted (%v)", d)
	}
	var httpDrops uint64
	for k, v := range d {
		if strings.HasPrefix(k, "http.") {
			httpDrops += v
		}
	}
	if httpDrops < uint64(len(slow))+1 {
		t.Errorf("slowloris: %d connections cut by ReadHeaderTimeout with 408 but not counted (http read_timeout grew by %d)",
			len(slow), d["http.read_timeout"])
	}
	t.Logf("RESULT slow clients: %d slowloris + 1 trickled body + 1 stalled Beats window held open while %d good requests succeeded; counters %v",
		len(slow), e.good.Load(), d)
}

// TestHostileInputOverBeats sends the hostile JSON events as Beats events
// (Winlogbeat's transport): each window is acknowledged (a forwarder must
// not re-send a poisoned event forever), the hostile events are counted
// and the good event in the same window goes through.
func TestHostileInputOverBeats(t *testing.T) {
	e := newHostileEnv(t)
	e.p.Advance(time.Now())
	now := time.Now()
	deep := ruleAdded(nil, "WS01.corp.example", e.record.Add(1), now, 4100)
	deep = bytes.Replace(deep, []byte(`"Active":"1"`), append(append([]byte(`"Active":"1","x":`), deepJSON(10000)...), ' '), 1)
	cases := []struct {
		name string
		ev   []byte
		want map[string]uint64
	}{
		{"deeply nested JSON (100k levels, not an object)", deepJSON(100000), map[string]uint64{"beats.unreadable": 1}},
		{"deeply nested object", []byte(strings.Repeat(`{"a":`, 100000) + "1" + strings.Repeat("}", 100000)),
			map[string]uint64{"decoder.too_deep": 1, "beats.unreadable": 1}},
		{"deep nesting inside an event", deep, map[string]uint64{"decoder.too_deep": 1}},
		{"event over MaxEventBytes (2 MiB)", []byte(`{"x":"` + strings.Repeat("a", 2<<20) + `"}`), map[string]uint64{"beats.too_large": 1}},
		{"timestamp far in the past (1971)", ruleAdded(nil, "WS04.corp.example", e.record.Add(1),
			time.Date(1971, 1, 1, 0, 0, 0, 0, time.UTC), 4101), map[string]uint64{"pipeline.rejected.time_range": 1}},
		{"unparsable timestamp", bytes.Replace(ruleAdded(nil, "WS06.corp.example", e.record.Add(1), now, 4102),
			[]byte(`"@timestamp":"`), []byte(`"@timestamp":"yesterday`), 1), map[string]uint64{"decoder.bad_time": 1}},
		{"event for an unknown host", ruleAdded(nil, "ROGUE-PC.evil.example", e.record.Add(1), now, 4103),
			map[string]uint64{"engine.unresolved": 1}},
	}
	cl, err := lumberclient.SyncDial(e.beats.Addr().String(), lumberclient.JSONEncoder(rawEncoder), lumberclient.Timeout(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.counts()
			acceptedBefore := e.beats.Stats().Accepted
			n, err := cl.Send([]any{c.ev, e.goodEvent()})
			if err != nil || n != 2 {
				t.Fatalf("window acknowledged %d of 2: %v", n, err)
			}
			d := delta(before, e.counts())
			for k, v := range c.want {
				if d[k] < v {
					t.Errorf("counter %s grew by %d, want %d (all changes: %v)", k, d[k], v, d)
				}
			}
			if got := e.beats.Stats().Accepted - acceptedBefore; got < 1 {
				t.Errorf("the good event of the window was not accepted (%d)", got)
			}
			t.Logf("RESULT beats: %s -> acknowledged, counters %v", c.name, d)
		})
	}
}
