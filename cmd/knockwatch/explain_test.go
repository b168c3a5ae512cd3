package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"image/png"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
)

// upgradedAlerts runs the engine through a medium alert upgraded to high:
// the knock touched the port itself (closed), the knocker connected, and
// the host's rule event arrived afterwards. It returns both records.
func upgradedAlerts(t *testing.T) []byte {
	t.Helper()
	var out bytes.Buffer
	cfg := correlate.DefaultConfig()
	e, err := correlate.New(cfg, correlate.EmitterFunc(func(a correlate.Alert) {
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		out.Write(append(b, '\n'))
	}), correlate.WithObserver(correlate.Observer{Hostname: "sensor01", Version: "test", Interfaces: []string{"tap0"}}))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 20, 14, 30, 0, 0, time.UTC)
	src, dst := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("10.0.0.5")
	k := correlate.Knock{Src: src, Dst: dst}
	for i, p := range []uint16{7000, 8000, 3389} {
		kind := correlate.TouchREJ
		if i == 1 {
			kind = correlate.TouchS0
		}
		k.Touches = append(k.Touches, correlate.Touch{Port: p, Time: t0.Add(time.Duration(i) * 1500 * time.Millisecond), Kind: kind})
	}
	ack := t0.Add(41 * time.Second)
	hs := correlate.Handshake{Src: src, Dst: dst, SrcPort: 51515, Port: 3389, SYN: ack.Add(-3 * time.Millisecond),
		SYNACK: ack.Add(-2 * time.Millisecond), ACK: ack, PortLastClosed: t0.Add(3 * time.Second)}
	ch := correlate.ExposureChange{Time: t0.Add(17 * time.Second), Host: "WS01.corp.example", HostIPs: []netip.Addr{dst},
		Kind: correlate.ChangeRuleEnabled, Ports: correlate.Ports(3389), Protocol: correlate.ProtocolTCP,
		Direction: correlate.DirectionInbound, Action: correlate.ActionAllow, Active: correlate.TriTrue,
		RuleID: "RemoteDesktop-UserMode-In-TCP", RuleName: "Remote Desktop - User Mode (TCP-In)",
		Application: `C:\Windows\system32\svchost.exe`, Service: "termservice",
		ModifyingUser: "S-1-5-21-2511471446-1103646877-3980648787-1106", ModifyingApplication: `C:\Windows\System32\netsh.exe`,
		EventID: 2005, Channel: "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall", RecordID: 1649}
	for _, err := range []error{e.AddKnock(k), e.AddHandshake(hs), e.AddChange(ch)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out.Bytes()
}

// explainInputs are the three kinds of alert: a knock with its host event
// (replayed corpus), a network-only medium alert (replayed corpus), and a
// medium alert upgraded to high by a late host event (two records).
func explainInputs(t *testing.T) map[string][]byte {
	t.Helper()
	replayCase := func(name string) []byte {
		dir := filepath.Join(corpus, name)
		out, errOut, err := runReplayArgs(t, "--engine", "go", "--pcap", filepath.Join(dir, "capture.pcap"),
			"--events", filepath.Join(dir, "events.xml"), "--hosts", filepath.Join(corpus, "hosts"))
		if err != nil {
			t.Fatalf("replay %s: %v\n%s", name, err, errOut)
		}
		return []byte(out)
	}
	return map[string][]byte{
		"knock":    replayCase("pos_rej_knock"),
		"network":  replayCase("pos_network_only"),
		"upgraded": upgradedAlerts(t),
	}
}

func runExplainArgs(t *testing.T, stdin []byte, args ...string) (string, string, error) {
	t.Helper()
	in := filepath.Join(t.TempDir(), "alerts.jsonl")
	if err := os.WriteFile(in, stdin, 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	err := run(t.Context(), append(append([]string{"explain"}, args...), in), &out, &errb)
	return out.String(), errb.String(), err
}

// svgText returns the document's text content and fails on XML that is
// not well-formed.
func svgText(t *testing.T, b []byte) string {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	var text strings.Builder
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		switch v := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = v.Name.Local
			}
		case xml.CharData:
			text.Write(v)
			text.WriteByte('\n')
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
	return text.String()
}

// TestExplainDrawsEachPieceOfEvidence: for a knock alert, a network-only
// alert and an upgraded medium->high alert, the picture is well-formed SVG
// whose text shows every piece of evidence of the record: the knocked
// ports with REJ/S0, the change with its rule, user and program, the
// handshake, the port's last closed time, the windows and the verdict.
func TestExplainDrawsEachPieceOfEvidence(t *testing.T) {
	inputs := explainInputs(t)
	want := map[string][]string{
		"knock": {"HIGH", "port 7000", "port 8000", "port 9000", "REJ 14:30:00.000", "REJ 14:30:02.000",
			"firewall rule added: allow inbound 4444/tcp", `rule "Remote Support 4444"`, "by S-1-5-21-4230534742-2542757381-3142984815-500",
			`using C:\Windows\System32\netsh.exe`, "event 2004 record 90002", "first handshake from 198.51.100.7",
			"never seen open before", "knock window", "change window", "handshake window",
			"High confidence: all three parts of AN0842 hold", "WS01.corp.example (10.0.0.5) port 4444"},
		"network": {"MEDIUM", "port 4444", "REJ 14:30:02.000", "host event: none", "No host event explains the opening",
			"seen closed 14:30:02.000", "first handshake from 198.51.100.7", "Medium confidence: no host event explains it",
			"never open since", "handshake window: up to 6 min after the last touch"},
		"upgraded": {"HIGH", "Upgraded to high confidence", "S0 14:30:01.500", "REJ 14:30:03.000", "port 3389",
			"firewall rule enabled: allow inbound 3389/tcp", `rule "Remote Desktop - User Mode (TCP-In)"`,
			"for program C:\\Windows\\system32\\svchost.exe", "for service termservice", "event 2005 record 1649",
			"seen closed 14:30:03.000", "sensor sensor01"},
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			out, errOut, err := runExplainArgs(t, in, "--out", dir)
			if err != nil {
				t.Fatalf("explain: %v\n%s", err, errOut)
			}
			paths := strings.Fields(out)
			wantFiles := 1
			if name == "upgraded" {
				wantFiles = 2 // the medium record and its upgrade
			}
			if len(paths) != wantFiles {
				t.Fatalf("wrote %v, want %d pictures", paths, wantFiles)
			}
			last := paths[len(paths)-1]
			if name == "upgraded" && !strings.HasSuffix(last, ".upgraded.svg") {
				t.Errorf("upgrade record written as %s", last)
			}
			b, err := os.ReadFile(last)
			if err != nil {
				t.Fatal(err)
			}
			text := svgText(t, b)
			for _, w := range want[name] {
				if !strings.Contains(text, w) {
					t.Errorf("picture lacks %q; its text:\n%s", w, text)
				}
			}
			first := svgText(t, mustRead(t, paths[0]))
			if name == "upgraded" && (!strings.Contains(first, "MEDIUM") || strings.Contains(first, "Upgraded")) {
				t.Errorf("the first record is not the medium one:\n%s", first)
			}
		})
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestExplainRendersWithLibrsvg renders every picture with Debian's
// rsvg-convert (librsvg2-bin), so a picture a real renderer rejects fails
// the build, and checks the PNG is the picture: 1200 px wide, not blank.
// KNOCKWATCH_EXPLAIN_KEEP=DIR keeps the PNGs to look at.
func TestExplainRendersWithLibrsvg(t *testing.T) {
	testenv.RequireTool(t, "rsvg-convert", "librsvg2-bin")
	keep := os.Getenv("KNOCKWATCH_EXPLAIN_KEEP")
	for name, in := range explainInputs(t) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if keep != "" {
				dir = filepath.Join(keep, name)
			}
			out, errOut, err := runExplainArgs(t, in, "--out", dir, "--png")
			if err != nil {
				t.Fatalf("explain --png: %v\n%s", err, errOut)
			}
			n := 0
			for _, p := range strings.Fields(out) {
				if !strings.HasSuffix(p, ".png") {
					continue
				}
				n++
				img, err := png.Decode(bytes.NewReader(mustRead(t, p)))
				if err != nil {
					t.Fatalf("%s: %v", p, err)
				}
				b := img.Bounds()
				if b.Dx() != 1200 || b.Dy() < 400 {
					t.Errorf("%s: %dx%d", p, b.Dx(), b.Dy())
				}
				// Not blank: many pixels differ from the white background.
				dark := 0
				for y := b.Min.Y; y < b.Max.Y; y += 3 {
					for x := b.Min.X; x < b.Max.X; x += 3 {
						if r, g, bl, _ := img.At(x, y).RGBA(); r+g+bl < 3*0xc000 {
							dark++
						}
					}
				}
				if dark < 2000 {
					t.Errorf("%s looks blank (%d dark samples)", p, dark)
				}
			}
			if n == 0 {
				t.Fatal("no PNG written")
			}
		})
	}
}

// TestExplainInputs: stdin, pretty-printed records, a JSON array, an
// unreadable record next to a good one (skipped, said, non-zero exit),
// and --out - for one record.
func TestExplainInputs(t *testing.T) {
	in := explainInputs(t)["knock"]
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, bytes.TrimSpace(in), "", "  "); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"pretty": pretty.Bytes(),
		"array":  append(append([]byte("["), bytes.TrimSpace(in)...), ']'),
	} {
		out, errOut, err := runExplainArgs(t, data, "--out", t.TempDir())
		if err != nil || len(strings.Fields(out)) != 1 {
			t.Errorf("%s: %v %q %s", name, err, out, errOut)
		}
	}
	out, errOut, err := runExplainArgs(t, append([]byte("{\"not\":\"an alert\"}\n"), in...), "--out", t.TempDir())
	if err == nil || len(strings.Fields(out)) != 1 || !strings.Contains(errOut, "line 1: skipped") {
		t.Errorf("mixed input: err %v out %q stderr %s", err, out, errOut)
	}
	out, _, err = runExplainArgs(t, in, "--out", "-")
	if err != nil || !strings.HasPrefix(out, "<?xml") {
		t.Errorf("--out -: %v %.60q", err, out)
	}
	if _, _, err := runExplainArgs(t, nil, "--out", t.TempDir()); err == nil {
		t.Error("empty input accepted")
	}
}

// TestReplayTimeline: replay --timeline DIR writes one picture per alert
// record, the same knockwatch explain draws from the alert output.
func TestReplayTimeline(t *testing.T) {
	dir := filepath.Join(corpus, "pos_split_tap")
	pics := t.TempDir()
	out, errOut, err := runReplayArgs(t, "--engine", "go", "--pcap", filepath.Join(dir, "capture-a.pcap"),
		"--pcap", filepath.Join(dir, "capture-b.pcap"), "--events", filepath.Join(dir, "events.xml"),
		"--hosts", filepath.Join(corpus, "hosts"), "--timeline", pics)
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, errOut)
	}
	files, _ := filepath.Glob(filepath.Join(pics, "*.svg"))
	if len(files) != 1 || !strings.Contains(errOut, "timelines  1 files in") {
		t.Fatalf("timelines %v\n%s", files, errOut)
	}
	var id struct {
		Event struct{ ID string } `json:"event"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &id); err != nil {
		t.Fatal(err)
	}
	if filepath.Base(files[0]) != id.Event.ID+".svg" {
		t.Errorf("picture %s for alert %s", files[0], id.Event.ID)
	}
	text := svgText(t, mustRead(t, files[0]))
	if !strings.Contains(text, "first handshake from 198.51.100.7") {
		t.Errorf("picture text:\n%s", text)
	}
	drawn := t.TempDir()
	if _, _, err := runExplainArgs(t, []byte(out), "--out", drawn); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mustRead(t, files[0]), mustRead(t, filepath.Join(drawn, filepath.Base(files[0])))) {
		t.Error("replay --timeline and explain draw the same record differently")
	}
	if _, _, err := runReplayArgs(t, "--pcap", "x", "--timeline-png"); err == nil {
		t.Error("--timeline-png without --timeline accepted")
	}
}
