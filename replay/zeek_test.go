package replay

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/config"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
	"github.com/knockwatch/knockwatch/internal/testsupport/zeekconn"
	"github.com/knockwatch/knockwatch/sensor"
)

// zeekDir is the Zeek corpus: traces, Zeek's conn.log baselines and the
// hand-written logs (testdata/zeek/SOURCES.md).
const zeekDir = "../testdata/zeek"

// zeekExceptions are the connections where knockwatch differs from
// Zeek's conn_state on purpose, each with its reason; docs/DETECTION.md
// ("Differences from Zeek, on purpose") explains every row. Each one
// applies to exactly one connection of its trace's log; one that matches
// none fails the test, so the table cannot outlive what it excuses.
var zeekExceptions = []zeekconn.Exception{
	// Issue 17: "a client's ACK of a SYN-ACK proves an answer". Zeek logs
	// S0 when it saw no packet of the responder, even when the
	// originator went on to acknowledge the SYN-ACK and send data
	// (history SAD): a one-sided capture, or a SYN-ACK Zeek dropped for
	// its checksum. knockwatch reports no closed-port touch for them.
	{Trace: "ssh/ssh.client-side-half-duplex.pcap", Orig: "192.168.1.79:51880", Resp: "131.159.21.1:22", ZeekState: "S0",
		Kind: zeekconn.KindNone, Reason: "the originator's ACK and data after its SYN prove the port answered (the capture holds only the client's side)"},
	{Trace: "ssh/ssh.client-side-half-duplex.pcap", Orig: "192.168.2.1:57189", Resp: "192.168.2.158:22", ZeekState: "S0",
		Kind: zeekconn.KindNone, Reason: "the originator's ACK and data after its SYN prove the port answered (the capture holds only the client's side)"},
	{Trace: "ssh/ssh.client-side-half-duplex.pcap", Orig: "192.168.2.1:56594", Resp: "192.168.2.158:22", ZeekState: "S0",
		Kind: zeekconn.KindNone, Reason: "the originator's ACK and data after its SYN prove the port answered (the capture holds only the client's side)"},
	{Trace: "ssh/ssh.client-side-half-duplex.pcap", Orig: "192.168.2.1:56875", Resp: "192.168.2.158:22", ZeekState: "S0",
		Kind: zeekconn.KindNone, Reason: "the originator's ACK and data after its SYN prove the port answered (the capture holds only the client's side)"},
	{Trace: "ssh/ssh.client-side-half-duplex.pcap", Orig: "192.168.1.32:41164", Resp: "128.2.10.238:22", ZeekState: "S0",
		Kind: zeekconn.KindNone, Reason: "the originator's ACK and data after its SYN prove the port answered (the capture holds only the client's side)"},
	{Trace: "auth_change_session_keys.pcap", Orig: "192.168.1.2:49159", Resp: "192.168.1.1:20000", ZeekState: "S0",
		Kind: zeekconn.KindNone, Reason: "the originator's ACK of the SYN-ACK and its data prove the port answered (Zeek, run without -C, dropped the SYN-ACK for its offloaded checksum)"},
	// A SYN with a bad checksum stays an attempt: knock daemons sniffing
	// with libpcap count it (knockd does).
	{Trace: "tcp/syn-bad.pcap", Orig: "141.142.228.5:59856", Resp: "192.150.187.43:80", ZeekState: "OTH",
		Kind: sensor.TouchS0, Reason: "a SYN with a wrong checksum is still a knock daemon's knock: counted, kept as an attempt, decided S0"},
	// The originator reset its own SYN; the responder's bare ACK
	// acknowledges nothing the SYN sent.
	{Trace: "tcp/syn-then-stuff-then-rst.pcap", Orig: "1.1.1.1:13131", Resp: "1.1.1.2:31313", ZeekState: "OTH",
		Kind: sensor.TouchRSTOS0, Reason: "the originator reset its SYN with no answer seen: RSTOS0, whatever it sent in between"},
}

// zeekSensorConfig is what `knockwatch replay --touches` runs with when
// given no configuration: run's defaults, touches reported.
func zeekSensorConfig(t *testing.T, c zeekconn.Case) sensor.Config {
	t.Helper()
	cfg := config.Default()
	built, err := cfg.Build()
	if err != nil {
		t.Fatal(err)
	}
	s := built.Sensor
	s.ReportTouches = true
	// Zeek ran with -C: replay --ignore-checksums.
	s.VerifyChecksums = !c.IgnoreChecksums
	return s
}

// replayTouches replays c's trace through engine kind and returns the
// touches in the order the engine reported them.
func replayTouches(t *testing.T, c zeekconn.Case, kind string) ([]sensor.TouchRecord, Summary) {
	t.Helper()
	cfg := zeekSensorConfig(t, c)
	eng, _, err := NewEngine(kind, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	var touches []sensor.TouchRecord
	sum, err := Run(context.Background(), Options{
		Captures: []string{filepath.Join(zeekDir, "traces", c.Trace)}, Engine: eng, Sink: &nopSink{},
		FinalSweep: cfg.S0Timeout + time.Second,
		OnTouch: func(r *sensor.TouchRecord) error {
			touches = append(touches, *r)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Packets == 0 {
		t.Fatalf("%s: no packets replayed", c.Trace)
	}
	// A touch lost on the way would read as a disagreement with Zeek.
	if lost := sum.Counters["ringbuf_full"] + sum.Counters["map_insert_fail"]; lost > 0 {
		t.Errorf("%s: %d records lost (ringbuf_full %d, map_insert_fail %d)", c.Trace, lost,
			sum.Counters["ringbuf_full"], sum.Counters["map_insert_fail"])
	}
	return touches, sum
}

func zeekCorpus(t *testing.T) ([]zeekconn.Case, map[string][]zeekconn.Conn) {
	t.Helper()
	cases, err := zeekconn.ReadCorpus(zeekDir)
	if err != nil {
		t.Fatal(err)
	}
	logs := map[string][]zeekconn.Conn{}
	for _, c := range cases {
		if logs[c.Trace], err = zeekconn.ReadLog(filepath.Join(zeekDir, c.Expected)); err != nil {
			t.Fatal(err)
		}
	}
	return cases, logs
}

// TestZeekConnState replays every trace of the Zeek corpus with the go
// engine and (privileged) the xdp engine, touches reported, and holds
// the touches to Zeek's conn.log connection by connection: REJ, S0 and
// RSTOS0 connections each give one touch of that kind for their 4-tuple,
// every other state none, and no touch exists that Zeek has no such
// connection for, except for zeekExceptions. The two engines must report
// identical touches, in the same order (subtest "same").
//
// One engine: go test ./replay -run 'TestZeekConnState/go' -v
// One trace:  go test ./replay -run 'TestZeekConnState/go/pop3/pop3.pcap' -v
func TestZeekConnState(t *testing.T) {
	cases, logs := zeekCorpus(t)
	byEngine := map[string]map[string][]sensor.TouchRecord{}
	for _, kind := range []string{EngineGo, EngineXDP} {
		t.Run(kind, func(t *testing.T) {
			if kind == EngineXDP {
				testenv.RequirePrivileged(t)
			}
			got := map[string][]sensor.TouchRecord{}
			byEngine[kind] = got
			var total, agreed, failed int
			for _, c := range cases {
				t.Run(c.Trace, func(t *testing.T) {
					touches, sum := replayTouches(t, c, kind)
					got[c.Trace] = touches
					r := zeekconn.Compare(c.Trace, logs[c.Trace], touches, zeekExceptions)
					total += r.Expected["REJ"] + r.Expected["S0"] + r.Expected["RSTOS0"]
					agreed += r.Agreed
					if !r.OK() {
						failed++
						flags := ""
						if c.IgnoreChecksums {
							flags = "; zeek ran with -C"
						}
						t.Errorf("%s engine disagrees with %s%s\n%scounters: touch_rej %d, touch_s0 %d, backscatter %d; touch records %d",
							kind, c.Expected, flags, r, sum.Counters["touch_rej"], sum.Counters["touch_s0"],
							sum.Counters["backscatter"], sum.TouchRecords)
					}
				})
			}
			t.Logf("%s engine: %d traces, %d disagree; %d touches called for by Zeek's logs (after exceptions), %d agreed",
				kind, len(cases), failed, total, agreed)
		})
	}
	t.Run("same", func(t *testing.T) {
		g, x := byEngine[EngineGo], byEngine[EngineXDP]
		if g == nil || x == nil {
			t.Skip("needs both engines")
		}
		for _, c := range cases {
			gt, gok := g[c.Trace]
			xt, xok := x[c.Trace]
			if !gok || !xok {
				t.Errorf("%s: not replayed by both engines", c.Trace)
				continue
			}
			if d := firstTouchDifference(gt, xt); d != "" {
				t.Errorf("%s: the engines report different touches: %s", c.Trace, d)
			}
		}
	})
}

// firstTouchDifference describes where two touch sequences first differ
// ("" when they are identical).
func firstTouchDifference(g, x []sensor.TouchRecord) string {
	for i := 0; i < len(g) && i < len(x); i++ {
		a, b := g[i], x[i]
		if a.Src != b.Src || a.Dst != b.Dst || a.SrcPort != b.SrcPort || a.Port != b.Port || a.Kind != b.Kind || !a.Time.Equal(b.Time) {
			return fmt.Sprintf("touch %d: go %s, xdp %s", i, touchString(a), touchString(b))
		}
	}
	if len(g) != len(x) {
		return fmt.Sprintf("go reported %d touches, xdp %d", len(g), len(x))
	}
	return ""
}

func touchString(t sensor.TouchRecord) string {
	return fmt.Sprintf("%s %v:%d -> %v:%d at %s", zeekconn.KindName(t.Kind), t.Src, t.SrcPort, t.Dst, t.Port,
		t.Time.UTC().Format(time.RFC3339Nano))
}

// TestZeekExceptions: every exception names a trace of the corpus (a typo
// would never be checked) and gives its reason, and docs/DETECTION.md's
// table of differences has one row per exception.
func TestZeekExceptions(t *testing.T) {
	cases, _ := zeekCorpus(t)
	known := map[string]bool{}
	for _, c := range cases {
		known[c.Trace] = true
	}
	doc, err := os.ReadFile("../docs/DETECTION.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(doc), "## Differences from Zeek, on purpose")
	section, _, _ = strings.Cut(section, "\n## ")
	var rows []string
	for _, l := range strings.Split(section, "\n") {
		if strings.HasPrefix(l, "| `") {
			rows = append(rows, l)
		}
	}
	for _, e := range zeekExceptions {
		if !known[e.Trace] {
			t.Errorf("exception %s: no such trace in %s/corpus.tsv", e, zeekDir)
		}
		if e.Reason == "" {
			t.Errorf("exception %s: no reason", e)
		}
		found := false
		for _, r := range rows {
			if strings.Contains(r, "`"+e.Trace+"`") && strings.Contains(r, e.Orig+" -> "+e.Resp) &&
				strings.Contains(r, "| "+e.ZeekState+" ") && strings.Contains(r, "| "+zeekconn.KindName(e.Kind)+" |") {
				found = true
			}
		}
		if !found {
			t.Errorf("exception %s has no row in docs/DETECTION.md's \"Differences from Zeek, on purpose\"", e)
		}
	}
	if len(rows) != len(zeekExceptions) {
		t.Errorf("docs/DETECTION.md lists %d differences, zeekExceptions %d", len(rows), len(zeekExceptions))
	}
}

// TestZeekComparisonRejects is the comparison's negative self-check with
// a real engine: whatever the go engine reports for pop3.pcap (6 REJ in
// Zeek's log) and nmap-vsn.pcap (6 REJ, 8 S0), a deliberately wrong
// expectation — every REJ made an S0 and every S0 a REJ — is rejected.
func TestZeekComparisonRejects(t *testing.T) {
	cases, logs := zeekCorpus(t)
	for _, c := range cases {
		if c.Trace != "pop3/pop3.pcap" && c.Trace != "nmap-vsn.pcap" {
			continue
		}
		touches, _ := replayTouches(t, c, EngineGo)
		wrong := append([]zeekconn.Conn(nil), logs[c.Trace]...)
		flipped := 0
		for i := range wrong {
			switch wrong[i].State {
			case "REJ":
				wrong[i].State, flipped = "S0", flipped+1
			case "S0":
				wrong[i].State, flipped = "REJ", flipped+1
			}
		}
		if flipped == 0 {
			t.Fatalf("%s: nothing to falsify", c.Trace)
		}
		if r := zeekconn.Compare(c.Trace, wrong, touches, zeekExceptions); r.OK() {
			t.Errorf("%s: a falsified expectation passed:\n%s", c.Trace, r)
		}
	}
}
