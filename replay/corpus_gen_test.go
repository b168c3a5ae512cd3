package replay

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/knockwatch/knockwatch/internal/testsupport/pkt"
)

// go test ./replay -run TestGenerateCorpus -update rewrites
// testdata/replay from the case definitions below.
var update = flag.Bool("update", false, "rewrite testdata/replay from the corpus definitions")

const corpusDir = "../testdata/replay"

var (
	ct0       = time.Date(2026, 11, 20, 14, 30, 0, 0, time.UTC)
	attacker  = netip.MustParseAddr("198.51.100.7")
	bystander = netip.MustParseAddr("203.0.113.9")
	ws01      = netip.MustParseAddr("10.0.0.5")
	ws02      = netip.MustParseAddr("10.0.0.6")
	attacker6 = netip.MustParseAddr("2001:db8::7")
	ws03      = netip.MustParseAddr("2001:db8:1::5")
)

const corpusHosts = `# knockwatch replay corpus inventory (address, names)
10.0.0.5 ws01.corp.example ws01
10.0.0.6 ws02.corp.example ws02
2001:db8:1::5 ws03.corp.example ws03
`

// frame is one packet of a case at an offset from ct0.
type frame struct {
	at time.Duration
	p  pkt.TCP
}

// flow builds the packets of TCP attempts from src to dst.
type flow struct {
	src, dst netip.Addr
	vlans    []uint16
	ext      []pkt.Ext
}

func (f flow) pk(sport, dport uint16, flags uint8, seq, ack uint32, server bool) pkt.TCP {
	p := pkt.TCP{Src: f.src, Dst: f.dst, SPort: sport, DPort: dport, Flags: flags, Seq: seq, Ack: ack,
		VLANs: f.vlans, Ext: f.ext, TCPOptions: 20}
	if server {
		p.Src, p.Dst, p.SPort, p.DPort = f.dst, f.src, dport, sport
		p.TCPOptions = 12
	}
	return p
}

func (f flow) sport(port uint16) uint16 { return 49152 + port%16000 }
func seqOf(port uint16) uint32          { return 0x3c000000 + uint32(port)*104729 }

// rej: SYN and its RST 300 µs later.
func (f flow) rej(at time.Duration, port uint16) []frame {
	sp := f.sport(port)
	return []frame{
		{at, f.pk(sp, port, pkt.SYN, seqOf(port), 0, false)},
		{at + 300*time.Microsecond, f.pk(sp, port, pkt.RST|pkt.ACK, 0, seqOf(port)+1, true)},
	}
}

// s0: a SYN nobody answers, retransmitted once after 1 s.
func (f flow) s0(at time.Duration, port uint16) []frame {
	sp := f.sport(port)
	syn := f.pk(sp, port, pkt.SYN, seqOf(port), 0, false)
	return []frame{{at, syn}, {at + time.Second, syn}}
}

// connect: a complete handshake, a little data and a FIN exchange.
func (f flow) connect(at time.Duration, port uint16) []frame {
	sp := f.sport(port) + 1
	s, srv := seqOf(port)+7, uint32(0x51000000)+uint32(port)
	ms := time.Millisecond
	data := f.pk(sp, port, pkt.ACK|pkt.PSH, s+1, srv+1, false)
	data.Payload = []byte("SSH-2.0-OpenSSH_9.6\r\n")
	return []frame{
		{at, f.pk(sp, port, pkt.SYN, s, 0, false)},
		{at + ms, f.pk(sp, port, pkt.SYN|pkt.ACK, srv, s+1, true)},
		{at + 2*ms, f.pk(sp, port, pkt.ACK, s+1, srv+1, false)},
		{at + 3*ms, data},
		{at + 40*ms, f.pk(sp, port, pkt.FIN|pkt.ACK, s+1+uint32(len(data.Payload)), srv+1, false)},
		{at + 41*ms, f.pk(sp, port, pkt.FIN|pkt.ACK, srv+1, s+2+uint32(len(data.Payload)), true)},
	}
}

// halfOpen: SYN, SYN-ACK, then the client resets instead of ACKing.
func (f flow) halfOpen(at time.Duration, port uint16) []frame {
	sp := f.sport(port) + 1
	s, srv := seqOf(port)+7, uint32(0x51000000)+uint32(port)
	return []frame{
		{at, f.pk(sp, port, pkt.SYN, s, 0, false)},
		{at + time.Millisecond, f.pk(sp, port, pkt.SYN|pkt.ACK, srv, s+1, true)},
		{at + 2*time.Millisecond, f.pk(sp, port, pkt.RST, s+1, 0, false)},
	}
}

func frames(parts ...[]frame) []frame {
	var out []frame
	for _, p := range parts {
		out = append(out, p...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at < out[j].at })
	return out
}

// fwEvent is one Windows Firewall rule event (2004 added, 2005 modified).
type fwEvent struct {
	id        int
	at        time.Duration // offset from ct0 on the host's clock
	host      string
	record    int
	rule      string
	port      string
	direction int // 1 inbound, 2 outbound
	action    int // 3 allow, 2 block
}

// eventXML renders ev like `wevtutil qe /f:xml` (see testdata/winevents).
func eventXML(ev fwEvent) string {
	return fmt.Sprintf(`<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><Provider Name="Microsoft-Windows-Windows Firewall With Advanced Security" Guid="{d1bc9aff-2abf-4d71-9146-ecb2a986eb85}"/><EventID>%d</EventID><Version>0</Version><Level>4</Level><Task>0</Task><Opcode>0</Opcode><Keywords>0x8000020000000000</Keywords><TimeCreated SystemTime="%s"/><EventRecordID>%d</EventRecordID><Correlation/><Execution ProcessID="2868" ThreadID="4120"/><Channel>Microsoft-Windows-Windows Firewall With Advanced Security/Firewall</Channel><Computer>%s</Computer><Security UserID="S-1-5-19"/></System><EventData><Data Name="RuleId">{%08X-1D2C-4B5A-9E10-%012X}</Data><Data Name="RuleName">%s</Data><Data Name="Origin">1</Data><Data Name="ApplicationPath"></Data><Data Name="ServiceName"></Data><Data Name="Direction">%d</Data><Data Name="Protocol">6</Data><Data Name="LocalPorts">%s</Data><Data Name="RemotePorts">*</Data><Data Name="Action">%d</Data><Data Name="Profiles">2147483647</Data><Data Name="LocalAddresses">*</Data><Data Name="RemoteAddresses">*</Data><Data Name="RemoteMachineAuthorizationList"></Data><Data Name="RemoteUserAuthorizationList"></Data><Data Name="EmbeddedContext"></Data><Data Name="Flags">1</Data><Data Name="Active">1</Data><Data Name="EdgeTraversal">0</Data><Data Name="LooseSourceMapped">0</Data><Data Name="SecurityOptions">0</Data><Data Name="ModifyingUser">S-1-5-21-4230534742-2542757381-3142984815-500</Data><Data Name="ModifyingApplication">C:\Windows\System32\netsh.exe</Data><Data Name="SchemaVersion">542</Data><Data Name="RuleStatus">65536</Data><Data Name="LocalOnlyMapped">0</Data><Data Name="ErrorCode">0</Data></EventData></Event>`,
		ev.id, ct0.Add(ev.at).Format("2006-01-02T15:04:05.0000000Z"), ev.record, ev.host,
		ev.record, ev.record, ev.rule, ev.direction, ev.port, ev.action)
}

// unrelatedXML is a record of an event ID the rule does not use (a 4624
// logon), so an events file can hold nothing relevant and still be read.
func unrelatedXML(host string, at time.Duration, record int) string {
	return fmt.Sprintf(`<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><Provider Name="Microsoft-Windows-Security-Auditing" Guid="{54849625-5478-4994-a5ba-3e3b0328c30d}"/><EventID>4624</EventID><Version>2</Version><Level>0</Level><Task>12544</Task><Opcode>0</Opcode><Keywords>0x8020000000000000</Keywords><TimeCreated SystemTime="%s"/><EventRecordID>%d</EventRecordID><Correlation/><Execution ProcessID="788" ThreadID="812"/><Channel>Security</Channel><Computer>%s</Computer><Security/></System><EventData><Data Name="LogonType">3</Data><Data Name="TargetUserName">svc-backup</Data></EventData></Event>`,
		ct0.Add(at).Format("2006-01-02T15:04:05.0000000Z"), record, host)
}

// captureFormat says how a case's capture is written, so the corpus covers
// every reader path.
type captureFormat string

const (
	fmtPcap     captureFormat = "pcap"      // Ethernet, microseconds
	fmtPcapNano captureFormat = "pcap-nano" // Ethernet, nanoseconds, big-endian
	fmtPcapGz   captureFormat = "pcap.gz"   // Ethernet, gzip
	fmtPcapng   captureFormat = "pcapng"    // Ethernet
	fmtSLL      captureFormat = "sll"       // Linux cooked v1
	fmtSLL2     captureFormat = "sll2"      // Linux cooked v2
	fmtRaw      captureFormat = "raw"       // raw IP (LINKTYPE_RAW)
	fmtSplit    captureFormat = "split"     // two pcaps, one per direction (a passive tap)
)

type corpusCase struct {
	name   string
	about  string
	format captureFormat
	frames []frame
	events []string // XML records, written concatenated (no root) unless wrapped
	wrap   bool     // write the events inside <Events>
	// jsonEvents are Winlogbeat (or NXLog) JSON records, one per line of
	// events.json.
	jsonEvents []string
	want       []wantAlert
	cov        *wantCoverage
}

// wantAlert is one expected alert (created, not suppressed).
type wantAlert struct {
	Source     string `json:"source.ip"`
	Dest       string `json:"destination.ip"`
	Port       uint16 `json:"destination.port"`
	Confidence string `json:"confidence"`
}

// expectation is a case's expected.json.
type expectation struct {
	Case   string      `json:"case"`
	About  string      `json:"about"`
	Alerts []wantAlert `json:"alerts"`
	// IgnoreChecksums replays the case as --ignore-checksums does: its
	// capture was taken on a sending host with checksum offload.
	IgnoreChecksums bool `json:"ignore_checksums,omitempty"`
	// Coverage is what `knockwatch replay --coverage` must report.
	Coverage *wantCoverage `json:"coverage,omitempty"`
}

func corpusCases() []corpusCase {
	s := time.Second
	a := flow{src: attacker, dst: ws01}
	b := flow{src: bystander, dst: ws01}
	a2 := flow{src: attacker, dst: ws02}
	a6 := flow{src: attacker6, dst: ws03, ext: []pkt.Ext{{Proto: 0, Len: 8}}}
	av := flow{src: attacker, dst: ws01, vlans: []uint16{120}}
	knock := func(f flow, at time.Duration) []frame {
		return frames(f.rej(at, 7000), f.rej(at+s, 8000), f.rej(at+2*s, 9000))
	}
	open4444 := func(at time.Duration, rec int) string {
		return eventXML(fwEvent{id: 2004, at: at, host: "WS01.corp.example", record: rec, rule: "Remote Support 4444",
			port: "4444", direction: 1, action: 3})
	}
	high := func(src, dst netip.Addr, port uint16) wantAlert {
		return wantAlert{Source: src.String(), Dest: dst.String(), Port: port, Confidence: "high"}
	}
	// Background traffic every case carries: a client of the open RDP
	// port and someone's web browsing, so nothing is decided on a clean
	// capture.
	noise := func() []frame {
		c := flow{src: netip.MustParseAddr("10.0.0.40"), dst: ws01}
		w := flow{src: ws02, dst: netip.MustParseAddr("192.0.2.80")}
		return frames(c.connect(-20*s, 3389), w.connect(-5*s, 443), w.connect(30*s, 443))
	}
	return []corpusCase{
		{name: "pos_rej_knock", format: fmtPcap,
			about:  "REJ knock on 7000, 8000, 9000; a 2004 opens 4444 inbound 10 s later; the knocker is first to connect",
			frames: frames(noise(), knock(a, 0), a.connect(25*s, 4444)),
			events: []string{unrelatedXML("WS01.corp.example", 5*s, 90001), open4444(12*s, 90002)},
			want:   []wantAlert{high(attacker, ws01, 4444)}},
		{name: "pos_s0_knock", format: fmtPcapGz,
			about:  "S0 knock (SYNs dropped by the host firewall, retransmitted once), capture gzip-compressed",
			frames: frames(noise(), a.s0(0, 7000), a.s0(3*s, 8000), a.s0(6*s, 9000), a.connect(30*s, 4444)),
			events: []string{open4444(15*s, 90003)},
			want:   []wantAlert{high(attacker, ws01, 4444)}},
		{name: "pos_ipv6", format: fmtPcapng,
			about:  "IPv6 with a hop-by-hop header, REJ knock, pcapng",
			frames: frames(noise(), knock(a6, 0), a6.connect(25*s, 4444)),
			events: []string{eventXML(fwEvent{id: 2004, at: 12 * s, host: "ws03.corp.example", record: 70001,
				rule: "Remote Support 4444", port: "4444", direction: 1, action: 3})},
			wrap: true,
			want: []wantAlert{high(attacker6, ws03, 4444)}},
		{name: "pos_vlan", format: fmtSLL2,
			about:  "802.1Q-tagged knock and connect, captured as Linux cooked v2 (tcpdump -i any)",
			frames: frames(noise(), knock(av, 0), av.connect(25*s, 4444)),
			events: []string{open4444(12*s, 90004)},
			want:   []wantAlert{high(attacker, ws01, 4444)}},
		{name: "pos_late_host_event", format: fmtSLL,
			about:  "the 2005 that enables the rule happens 50 s after the knock and is exported after unrelated later records; Linux cooked v1",
			frames: frames(noise(), knock(a, 0), a.connect(80*s, 4444)),
			events: []string{unrelatedXML("WS01.corp.example", 100*s, 91000),
				eventXML(fwEvent{id: 2005, at: 52 * s, host: "WS01", record: 90005, rule: "Remote Support 4444",
					port: "4440-4450", direction: 1, action: 3})},
			want: []wantAlert{high(attacker, ws01, 4444)}},
		{name: "pos_clock_skew", format: fmtRaw,
			about:  "the host clock runs 3 s behind: its rule event is stamped before the last touch (within the 5 s tolerance); raw IP capture",
			frames: frames(noise(), knock(a, 0), a.connect(20*s, 4444)),
			events: []string{open4444(-1*s, 90006)},
			want:   []wantAlert{high(attacker, ws01, 4444)}},
		{name: "pos_split_tap", format: fmtSplit,
			about:  "a passive tap: each direction in its own capture, merged by timestamp",
			frames: frames(noise(), knock(a, 0), a.connect(25*s, 4444)),
			events: []string{open4444(12*s, 90007)},
			want:   []wantAlert{high(attacker, ws01, 4444)}},
		{name: "pos_network_only", format: fmtPcap,
			about: "the knock's last touch is 4444 itself (REJ: closed); no host event names it (only an unrelated logon); " +
				"25 s later the knocker is first to connect to 4444: the network alone shows it opened, a medium alert",
			frames: frames(noise(), a.rej(0, 7000), a.rej(s, 8000), a.rej(2*s, 4444), a.connect(25*s, 4444)),
			events: []string{unrelatedXML("WS01.corp.example", 12*s, 90008)},
			want:   []wantAlert{{Source: attacker.String(), Dest: ws01.String(), Port: 4444, Confidence: "medium"}}},
		{name: "neg_no_change", format: fmtPcapNano,
			about:  "knock and a first connect to 4444, but no host event opened anything (only an unrelated logon)",
			frames: frames(noise(), knock(a, 0), a.connect(25*s, 4444)),
			events: []string{unrelatedXML("WS01.corp.example", 12*s, 90010)}},
		{name: "neg_change_other_host", format: fmtPcap,
			about:  "the rule is added on WS02, the knock and connect go to WS01",
			frames: frames(noise(), knock(a, 0), a.connect(25*s, 4444), a2.connect(25*s, 445)),
			events: []string{eventXML(fwEvent{id: 2004, at: 12 * s, host: "WS02.corp.example", record: 90011,
				rule: "Remote Support 4444", port: "4444", direction: 1, action: 3})}},
		{name: "neg_other_source_first", format: fmtPcap,
			about:  "after the change another client connects to 4444 before the knocker",
			frames: frames(noise(), knock(a, 0), b.connect(15*s, 4444), a.connect(25*s, 4444)),
			events: []string{open4444(12*s, 90012)}},
		{name: "neg_below_threshold", format: fmtPcap,
			about:  "two distinct closed ports (one touched twice), below the threshold of 3",
			frames: frames(noise(), a.rej(0, 7000), a.rej(s, 8000), a.rej(2*s, 8000), a.connect(25*s, 4444)),
			events: []string{open4444(12*s, 90013)}},
		{name: "neg_too_slow", format: fmtPcap,
			about:  "three closed ports over 40 s, never three within the 30 s window",
			frames: frames(noise(), a.rej(0, 7000), a.rej(20*s, 8000), a.rej(40*s, 9000), a.connect(60*s, 4444)),
			events: []string{open4444(50*s, 90014)}},
		{name: "neg_open_all_along", format: fmtPcap,
			about:  "4444 was already open (another client connected before the knock); the rule event is a re-add",
			frames: frames(noise(), b.connect(-10*s, 4444), knock(a, 0), a.connect(25*s, 4444)),
			events: []string{open4444(12*s, 90015)}},
		{name: "neg_incomplete_handshake", format: fmtPcap,
			about:  "after the knock and the change the knocker's handshake never completes (SYN, SYN-ACK, RST)",
			frames: frames(noise(), knock(a, 0), a.halfOpen(25*s, 4444)),
			events: []string{open4444(12*s, 90016)}},
		{name: "neg_block_outbound", format: fmtPcap,
			about:  "the only changes are a block rule for 4444 inbound and an allow rule for 4444 outbound",
			frames: frames(noise(), knock(a, 0), a.connect(25*s, 4444)),
			events: []string{
				eventXML(fwEvent{id: 2004, at: 11 * s, host: "WS01.corp.example", record: 90017, rule: "Block 4444",
					port: "4444", direction: 1, action: 2}),
				eventXML(fwEvent{id: 2004, at: 12 * s, host: "WS01.corp.example", record: 90018, rule: "Out 4444",
					port: "4444", direction: 2, action: 3}),
			}},
	}
}

// TestGenerateCorpus writes testdata/replay (with -update) or checks that
// the committed corpus is what the definitions generate.
func TestGenerateCorpus(t *testing.T) {
	for _, c := range append(corpusCases(), coverageCases()...) {
		files := renderCase(t, c)
		for name, data := range files {
			path := filepath.Join(corpusDir, c.name, name)
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, data, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (regenerate: go test ./replay -run TestGenerateCorpus -update)", err)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("%s differs from its definition (regenerate: go test ./replay -run TestGenerateCorpus -update)", path)
			}
		}
	}
	hosts := filepath.Join(corpusDir, "hosts")
	if *update {
		if err := os.WriteFile(hosts, []byte(corpusHosts), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// renderCase returns a case's files by name.
func renderCase(t *testing.T, c corpusCase) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	var ev strings.Builder
	if c.wrap {
		ev.WriteString("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Events>\n")
	}
	for _, e := range c.events {
		ev.WriteString(e)
		ev.WriteString("\n")
	}
	if c.wrap {
		ev.WriteString("</Events>\n")
	}
	out["events.xml"] = []byte(ev.String())
	if len(c.jsonEvents) > 0 {
		out["events.json"] = []byte(strings.Join(c.jsonEvents, "\n") + "\n")
	}
	exp := expectation{Case: c.name, About: c.about, Alerts: c.want, Coverage: c.cov}
	if exp.Alerts == nil {
		exp.Alerts = []wantAlert{}
	}
	j, err := json.MarshalIndent(exp, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	out["expected.json"] = append(j, '\n')
	switch c.format {
	case fmtSplit:
		var fwd, rev []frame
		for _, f := range c.frames {
			if f.p.Src == attacker || f.p.Src.Is6() || f.p.Src == netip.MustParseAddr("10.0.0.40") || f.p.Src == bystander || f.p.Src == ws02 {
				fwd = append(fwd, f)
			} else {
				rev = append(rev, f)
			}
		}
		out["capture-a.pcap"] = writePcap(t, fwd, 1, false, false)
		out["capture-b.pcap"] = writePcap(t, rev, 1, false, false)
	case fmtPcap:
		out["capture.pcap"] = writePcap(t, c.frames, 1, false, false)
	case fmtPcapNano:
		out["capture.pcap"] = writePcap(t, c.frames, 1, true, true)
	case fmtPcapGz:
		var b bytes.Buffer
		gz, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		gz.ModTime = time.Time{}
		gz.Write(writePcap(t, c.frames, 1, false, false))
		gz.Close()
		out["capture.pcap.gz"] = b.Bytes()
	case fmtSLL:
		out["capture.pcap"] = writePcap(t, c.frames, 113, false, false)
	case fmtSLL2:
		out["capture.pcap"] = writePcap(t, c.frames, 276, true, false)
	case fmtRaw:
		out["capture.pcap"] = writePcap(t, c.frames, 101, false, false)
	case fmtPcapng:
		var b bytes.Buffer
		w, err := pcapgo.NewNgWriterInterface(&b, pcapgo.NgInterface{Name: "tap0", LinkType: layers.LinkTypeEthernet,
			SnapLength: 262144, TimestampResolution: 9}, pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{
			Application: "knockwatch corpus generator"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range c.frames {
			d := f.p.Bytes()
			ci := gopacket.CaptureInfo{Timestamp: ct0.Add(f.at), CaptureLength: len(d), Length: len(d)}
			if err := w.WritePacket(ci, d); err != nil {
				t.Fatal(err)
			}
		}
		w.Flush()
		out["capture.pcapng"] = b.Bytes()
	default:
		t.Fatalf("unknown format %q", c.format)
	}
	return out
}

// writePcap writes a classic pcap with the given link type, converting the
// Ethernet frames for cooked and raw link types.
func writePcap(t *testing.T, fs []frame, link uint32, nanos, bigEndian bool) []byte {
	t.Helper()
	var bo binary.ByteOrder = binary.LittleEndian
	if bigEndian {
		bo = binary.BigEndian
	}
	var b bytes.Buffer
	hdr := make([]byte, 24)
	magic := uint32(0xa1b2c3d4)
	if nanos {
		magic = 0xa1b23c4d
	}
	bo.PutUint32(hdr[0:], magic)
	bo.PutUint16(hdr[4:], 2)
	bo.PutUint16(hdr[6:], 4)
	bo.PutUint32(hdr[16:], 262144)
	bo.PutUint32(hdr[20:], link)
	b.Write(hdr)
	for _, f := range fs {
		eth := f.p.Bytes()
		var d []byte
		switch link {
		case 1:
			d = eth
		case 101:
			d = eth[14+4*len(f.p.VLANs):]
		case 113: // sll: packet type, ARPHRD_ETHER, addr len, addr(8), protocol
			d = make([]byte, 16, 16+len(eth))
			binary.BigEndian.PutUint16(d[0:], 0)
			binary.BigEndian.PutUint16(d[2:], 1)
			binary.BigEndian.PutUint16(d[4:], 6)
			copy(d[6:], eth[6:12])
			copy(d[14:], eth[12:14])
			d = append(d, eth[14:]...)
		case 276: // sll2: protocol, reserved, ifindex, ARPHRD, packet type, addr len, addr(8)
			d = make([]byte, 20, 20+len(eth))
			copy(d[0:], eth[12:14])
			binary.BigEndian.PutUint32(d[4:], 3)
			binary.BigEndian.PutUint16(d[8:], 1)
			d[11] = 6
			copy(d[12:], eth[6:12])
			d = append(d, eth[14:]...)
		}
		ts := ct0.Add(f.at)
		rec := make([]byte, 16)
		bo.PutUint32(rec[0:], uint32(ts.Unix()))
		frac := uint32(ts.Nanosecond() / 1000)
		if nanos {
			frac = uint32(ts.Nanosecond())
		}
		bo.PutUint32(rec[4:], frac)
		bo.PutUint32(rec[8:], uint32(len(d)))
		bo.PutUint32(rec[12:], uint32(len(d)))
		b.Write(rec)
		b.Write(d)
	}
	return b.Bytes()
}
