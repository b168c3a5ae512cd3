package zeekconn

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/knockwatch/knockwatch/sensor"
)

// KindNone stands for "no touch" in an Exception.
const KindNone = sensor.TouchKind(0)

// zeekStates are the conn_state values Zeek logs for TCP, each with the
// touch knockwatch reports for such a connection (KindNone: none). A
// state not in the table is an error, so a new Zeek state or a typo in a
// hand-written log does not pass as "no touch".
var zeekStates = map[string]sensor.TouchKind{
	"REJ":    sensor.TouchREJ,    // SYN answered by an RST
	"S0":     sensor.TouchS0,     // SYN seen, no reply
	"RSTOS0": sensor.TouchRSTOS0, // SYN, then the originator's RST, no SYN-ACK seen
	"S1":     KindNone,           // established, not terminated
	"SF":     KindNone,           // established and terminated
	"S2":     KindNone,           // established, originator closed
	"S3":     KindNone,           // established, responder closed
	"RSTO":   KindNone,           // established, originator aborted
	"RSTR":   KindNone,           // responder sent an RST (after answering)
	"RSTRH":  KindNone,           // responder's SYN-ACK then RST, no SYN seen
	"SH":     KindNone,           // originator's SYN then FIN, no SYN-ACK
	"SHR":    KindNone,           // responder's SYN-ACK then FIN, no SYN seen
	"OTH":    KindNone,           // no SYN seen (midstream, or only a bad-checksum SYN)
}

// TouchFor is the touch knockwatch reports for a TCP connection Zeek
// logged with conn_state state; ok is false for a state Zeek does not
// define.
func TouchFor(state string) (kind sensor.TouchKind, ok bool) {
	kind, ok = zeekStates[state]
	return kind, ok
}

// KindName names a touch kind as Zeek's conn_state (none for KindNone).
func KindName(k sensor.TouchKind) string {
	switch k {
	case KindNone:
		return "none"
	case sensor.TouchREJ:
		return "REJ"
	case sensor.TouchS0:
		return "S0"
	case sensor.TouchRSTOS0:
		return "RSTOS0"
	}
	return k.String()
}

// Exception is one connection where knockwatch differs from Zeek on
// purpose. It applies to exactly one TCP connection of the trace's
// baseline with this 4-tuple and conn_state: knockwatch must then report
// Kind (KindNone: no touch) for it instead of what TouchFor says.
type Exception struct {
	Trace      string // path under testdata/zeek/traces
	Orig, Resp string // "addr:port" ("[v6]:port"), Zeek's id.orig and id.resp
	ZeekState  string
	Kind       sensor.TouchKind
	Reason     string // why knockwatch differs; docs/DETECTION.md's section says the same
}

func (e Exception) String() string {
	return fmt.Sprintf("%s %s -> %s: Zeek %s, knockwatch %s", e.Trace, e.Orig, e.Resp, e.ZeekState, KindName(e.Kind))
}

// Diff is one touch on which knockwatch and the expectation disagree.
type Diff struct {
	Orig, Resp netip.AddrPort
	Kind       sensor.TouchKind
	// Zeek lists the connections Zeek logged for the 4-tuple (state and
	// history, excepted ones marked), "none" when it logged none.
	Zeek string
}

func (d Diff) String() string {
	return fmt.Sprintf("%-6s %s -> %s  (zeek: %s)", KindName(d.Kind), d.Orig, d.Resp, d.Zeek)
}

// Result is the comparison of one trace.
type Result struct {
	Trace string
	// Connections: TCP connections in the baseline; Expected: touches
	// they call for (after exceptions), by kind name; Got: touches the
	// engine reported, by kind name.
	Connections   int
	Expected, Got map[string]int
	Agreed        int
	Excepted      int    // exceptions applied
	Missing       []Diff // expected, not reported
	Extra         []Diff // reported, not expected (wrong kind, or no such connection)
	Errors        []string
}

// OK says the engine agreed with every connection and the inputs were sound.
func (r *Result) OK() bool { return len(r.Missing) == 0 && len(r.Extra) == 0 && len(r.Errors) == 0 }

// String is a report for a failing test: the counts, then every difference.
func (r *Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d tcp connections; expected %s; got %s; agreed %d; exceptions %d\n", r.Trace, r.Connections,
		counts(r.Expected), counts(r.Got), r.Agreed, r.Excepted)
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "  error    %s\n", e)
	}
	for _, d := range r.Missing {
		fmt.Fprintf(&b, "  missing  %s\n", d)
	}
	for _, d := range r.Extra {
		fmt.Fprintf(&b, "  extra    %s\n", d)
	}
	return b.String()
}

func counts(m map[string]int) string {
	var parts []string
	for _, k := range []string{"REJ", "S0", "RSTOS0"} {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	for k, v := range m {
		if k != "REJ" && k != "S0" && k != "RSTOS0" {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
	}
	sort.Strings(parts[3:])
	return strings.Join(parts, ", ")
}

type tupleKey struct{ orig, resp netip.AddrPort }

type touchKey struct {
	t    tupleKey
	kind sensor.TouchKind
}

// Compare holds touches (what an engine reported for trace) against conns
// (the trace's conn.log): each TCP connection must yield the touch its
// conn_state calls for (TouchFor), or the one its exception says, and no
// other touch may exist. The baseline has no timestamps (btest masks
// them), so touches are matched by 4-tuple and kind, as counts: three REJ
// connections of one 4-tuple need three REJ touches of it. The exceptions
// of other traces are ignored; an exception of this trace that matches no
// connection, restates Zeek's mapping or gives no reason is an error.
func Compare(trace string, conns []Conn, touches []sensor.TouchRecord, exceptions []Exception) *Result {
	r := &Result{Trace: trace, Expected: map[string]int{}, Got: map[string]int{}}
	expected := map[touchKey]int{}
	zeek := map[tupleKey][]string{}
	var tcp []Conn
	for _, c := range conns {
		if c.Proto != "tcp" {
			continue
		}
		tcp = append(tcp, c)
	}
	r.Connections = len(tcp)
	excepted := make([]bool, len(tcp))
	override := make([]sensor.TouchKind, len(tcp))
	for _, e := range exceptions {
		if e.Trace != trace {
			continue
		}
		orig, err1 := netip.ParseAddrPort(e.Orig)
		resp, err2 := netip.ParseAddrPort(e.Resp)
		if err1 != nil || err2 != nil {
			r.Errors = append(r.Errors, fmt.Sprintf("exception %s: bad 4-tuple", e))
			continue
		}
		orig = netip.AddrPortFrom(orig.Addr().Unmap(), orig.Port())
		resp = netip.AddrPortFrom(resp.Addr().Unmap(), resp.Port())
		if def, ok := TouchFor(e.ZeekState); !ok {
			r.Errors = append(r.Errors, fmt.Sprintf("exception %s: %q is not a Zeek conn_state", e, e.ZeekState))
			continue
		} else if def == e.Kind {
			r.Errors = append(r.Errors, fmt.Sprintf("exception %s: restates what %s means; drop it", e, e.ZeekState))
			continue
		}
		if strings.TrimSpace(e.Reason) == "" {
			r.Errors = append(r.Errors, fmt.Sprintf("exception %s: no reason given", e))
			continue
		}
		found := false
		for i, c := range tcp {
			if !excepted[i] && c.Orig == orig && c.Resp == resp && c.State == e.ZeekState {
				excepted[i], override[i], found = true, e.Kind, true
				r.Excepted++
				break
			}
		}
		if !found {
			r.Errors = append(r.Errors, fmt.Sprintf("exception %s matches no connection of the baseline (stale?)", e))
		}
	}
	for i, c := range tcp {
		kind, ok := TouchFor(c.State)
		if !ok {
			r.Errors = append(r.Errors, fmt.Sprintf("connection %s: %q is not a Zeek conn_state", c, c.State))
			continue
		}
		note := c.State + " " + orDash(c.History)
		if excepted[i] {
			kind = override[i]
			note += " [exception: " + KindName(kind) + "]"
		}
		k := tupleKey{c.Orig, c.Resp}
		zeek[k] = append(zeek[k], note)
		if kind != KindNone {
			expected[touchKey{k, kind}]++
			r.Expected[KindName(kind)]++
		}
	}
	got := map[touchKey]int{}
	for _, t := range touches {
		switch t.Kind {
		case sensor.TouchREJ, sensor.TouchS0, sensor.TouchRSTOS0:
		default:
			r.Errors = append(r.Errors, fmt.Sprintf("touch %v:%d -> %v:%d has an unknown kind %d", t.Src, t.SrcPort, t.Dst, t.Port, t.Kind))
			continue
		}
		k := tupleKey{netip.AddrPortFrom(t.Src.Unmap(), t.SrcPort), netip.AddrPortFrom(t.Dst.Unmap(), t.Port)}
		got[touchKey{k, t.Kind}]++
		r.Got[KindName(t.Kind)]++
	}
	describe := func(k tupleKey) string {
		if z := zeek[k]; len(z) > 0 {
			return strings.Join(z, ", ")
		}
		return "none"
	}
	for k, n := range expected {
		g := got[k]
		r.Agreed += min(n, g)
		for ; g < n; g++ {
			r.Missing = append(r.Missing, Diff{Orig: k.t.orig, Resp: k.t.resp, Kind: k.kind, Zeek: describe(k.t)})
		}
	}
	for k, g := range got {
		for n := expected[k]; n < g; n++ {
			r.Extra = append(r.Extra, Diff{Orig: k.t.orig, Resp: k.t.resp, Kind: k.kind, Zeek: describe(k.t)})
		}
	}
	sortDiffs(r.Missing)
	sortDiffs(r.Extra)
	return r
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sortDiffs(ds []Diff) {
	sort.Slice(ds, func(i, j int) bool {
		a, b := ds[i], ds[j]
		if c := a.Orig.Compare(b.Orig); c != 0 {
			return c < 0
		}
		if c := a.Resp.Compare(b.Resp); c != 0 {
			return c < 0
		}
		return a.Kind < b.Kind
	})
}
