package timeline

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 20, 14, 30, 0, 0, time.UTC)

func sample() Alert {
	return Alert{
		ID: "0123456789abcdef0123456789abcdef", Action: "created", Confidence: "high", Basis: "host_event",
		Source: Endpoint{"198.51.100.7", 50123}, Dest: Endpoint{"10.0.0.5", 4444}, HostName: "WS01",
		Touches: []Touch{{7000, t0, "REJ"}, {8000, t0.Add(time.Second), "S0"}, {9000, t0.Add(2 * time.Second), "REJ"}},
		Change: &Change{Time: t0.Add(12 * time.Second), Host: "WS01", Kind: "rule_added", Ports: "4444", Protocol: "tcp",
			Direction: "inbound", Action: "allow", RuleName: "updater", EventID: 2004, RecordID: 7},
		SYN: t0.Add(25 * time.Second), SYNACK: t0.Add(25*time.Second + time.Millisecond), ACK: t0.Add(25*time.Second + 2*time.Millisecond),
		Windows: DefaultWindows,
	}
}

func wellFormed(t *testing.T, b []byte) string {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	var text strings.Builder
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return text.String()
		}
		if err != nil {
			t.Fatalf("not well-formed: %v", err)
		}
		if c, ok := tok.(xml.CharData); ok {
			text.Write(c)
			text.WriteByte('\n')
		}
	}
}

// TestSVGHostileText: names come from forwarded events an attacker may
// write (a rule name, a program path): markup in them stays text.
func TestSVGHostileText(t *testing.T) {
	a := sample()
	a.Change.RuleName = `</text><script>alert(1)</script> & "x" 'y'`
	a.Change.ModifyingApplication = `C:\evil<>&.exe`
	var b bytes.Buffer
	if err := SVG(&b, a); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "<script>") {
		t.Fatal("markup from the event reached the SVG")
	}
	text := wellFormed(t, b.Bytes())
	if !strings.Contains(text, `<script>alert(1)</script>`) || !strings.Contains(text, `C:\evil<>&.exe`) {
		t.Errorf("the names are not shown as text:\n%s", text)
	}
}

// TestSVGFarEvidence: a port last seen closed two days before stays on the
// picture, at its edge, with its time; the knock is not squeezed.
func TestSVGFarEvidence(t *testing.T) {
	a := sample()
	a.PortLastClosed = t0.Add(-48 * time.Hour)
	a.PortLastOpen = t0.Add(-47 * time.Hour)
	var b bytes.Buffer
	if err := SVG(&b, a); err != nil {
		t.Fatal(err)
	}
	text := wellFormed(t, b.Bytes())
	if !strings.Contains(text, "seen closed 14:30:00.000 (48 h 0 min before the handshake)") ||
		!strings.Contains(text, "last seen open before: 15:30:00.000") {
		t.Errorf("far evidence not shown:\n%s", text)
	}
	if s := timeSpan(&a); s.hi.Sub(s.lo) > time.Minute {
		t.Errorf("span %v: the far times squeezed the knock", s.hi.Sub(s.lo))
	}
}

func TestSVGRefusesIncomplete(t *testing.T) {
	a := sample()
	a.Touches = nil
	if err := SVG(io.Discard, a); err == nil {
		t.Error("alert without touches drawn")
	}
	a = sample()
	a.ACK = time.Time{}
	if err := SVG(io.Discard, a); err == nil {
		t.Error("alert without handshake drawn")
	}
}

func TestReadRecords(t *testing.T) {
	rec := `{"@timestamp":"2026-11-20T14:30:25.002Z","event":{"id":"abc","action":"created"},"rule":{"id":"AN0842"},` +
		`"source":{"ip":"198.51.100.7","port":1},"destination":{"ip":"10.0.0.5","port":4444},"host":{"name":"WS01"},` +
		`"knockwatch":{"confidence":"medium","basis":"network","knock":{"touches":[{"port":7000,"time":"2026-11-20T14:30:00Z","kind":"REJ"}]},` +
		`"change":null,"handshake":{"syn":"2026-11-20T14:30:25Z","syn_ack":"2026-11-20T14:30:25.001Z","ack":"2026-11-20T14:30:25.002Z"},` +
		`"port_last_closed":null,"port_last_open":null}}`
	in := rec + "\n\n" + `{"rule":{"id":"other"}}` + "\n" + `{"broken":` + "\n" + rec + "\n"
	as, probs, err := Read(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 2 || len(probs) != 2 || probs[0].Where != "line 3" || !errors.Is(probs[0].Err, ErrNotAlert) || probs[1].Where != "line 4" {
		t.Fatalf("alerts %d, problems %v", len(as), probs)
	}
	if a := as[0]; a.Windows != DefaultWindows || a.Change != nil || a.Confidence != "medium" || !a.PortLastClosed.IsZero() {
		t.Errorf("parsed %+v", a)
	}
}
