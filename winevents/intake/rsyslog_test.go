package intake

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/knockwatch/knockwatch/winevents"
)

// decodingHandler decodes every message with a real winevents.Decoder (as
// the pipeline does) and keeps what each one yielded.
type decodingHandler struct {
	rec *recorder
	dec *winevents.Decoder

	mu      sync.Mutex
	changes []winevents.ExposureChange
	total   winevents.Result
	errs    []string
}

func newDecodingHandler() *decodingHandler {
	return &decodingHandler{rec: newRecorder(), dec: winevents.NewDecoder(winevents.Options{})}
}

func (h *decodingHandler) Handle(ctx context.Context, m Message) Result {
	changes, res := h.dec.Decode(m.Payload)
	h.mu.Lock()
	h.changes = append(h.changes, changes...)
	h.total.Read += res.Read
	h.total.Relevant += res.Relevant
	h.total.Duplicates += res.Duplicates
	h.total.Rejected += res.Rejected
	if res.Err != nil || res.Rejected > 0 {
		h.errs = append(h.errs, fmt.Sprintf("%.60q: %v %v", m.Payload, res.Err, res.Reasons))
	}
	h.mu.Unlock()
	if res.Err != nil {
		return Result{Rejected: res.Rejected, Err: res.Err}
	}
	h.rec.Handle(ctx, m)
	return Result{Accepted: res.Relevant + res.Skipped, Rejected: res.Rejected}
}

// rsyslogEvents returns the lines rsyslog is given: n single-line Firewall
// 2004 events made from the real mdecrevoisier sample (record ids 700000+i,
// port 20000+i) and the real OTRF JSON lines (NXLog-style, 15 records).
func rsyslogEvents(t *testing.T, n int) [][]byte {
	t.Helper()
	raw := string(readTestdata(t, "mdecrevoisier_2004_any_any_rule_created.xml"))
	ev := raw[strings.Index(raw, "<Event "):strings.Index(raw, "</Events>")]
	ev = regexp.MustCompile(`>\s+<`).ReplaceAllString(strings.TrimSpace(ev), "><")
	var lines [][]byte
	for i := range n {
		e := strings.Replace(ev, "<EventRecordID>6683</EventRecordID>", fmt.Sprintf("<EventRecordID>%d</EventRecordID>", 700000+i), 1)
		e = strings.Replace(e, `<Data Name="LocalPorts"></Data>`, fmt.Sprintf(`<Data Name="LocalPorts">%d</Data>`, 20000+i), 1)
		e = strings.Replace(e, `<Data Name="Protocol">256</Data>`, `<Data Name="Protocol">6</Data>`, 1)
		if e == ev || !strings.Contains(e, fmt.Sprintf("%d</Data>", 20000+i)) {
			t.Fatal("sample changed: cannot vary record id and port")
		}
		lines = append(lines, []byte(e))
	}
	return append(lines, jsonLines(t)...)
}

// rsyslogConf writes an rsyslog configuration that follows events.log with
// imfile (Tag "winevt") and forwards with omfwd's default template.
func rsyslogConf(dir, file, action string, global string) string {
	return fmt.Sprintf(`global(workDirectory=%q maxMessageSize="256k" %s)
module(load="imfile")
input(type="imfile" File=%q Tag="winevt" Facility="local0" Severity="info" freshStartTail="off")
%s
`, filepath.Join(dir, "work"), global, file, action)
}

// startRsyslog runs Debian's rsyslogd in the foreground with conf, apart
// from the host's daemon (own pid file and work directory). The returned
// stop function sends SIGTERM, waits for the exit and returns its output.
func startRsyslog(t *testing.T, bin, dir, conf string) func() string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "work"), 0o700); err != nil {
		t.Fatal(err)
	}
	cf := filepath.Join(dir, "rsyslog.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	check := exec.Command(bin, "-N1", "-f", cf)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("rsyslogd -N1 rejects the configuration: %v\n%s\n%s", err, out, conf)
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, "-n", "-f", cf, "-i", filepath.Join(dir, "rsyslogd.pid"))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() string {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		})
		return out.String()
	}
	t.Cleanup(func() { stop() })
	return stop
}

// TestSyslogWithRsyslog forwards Windows events with a real rsyslogd
// (Debian's, started here with its own configuration): imfile follows a
// file of one event per line and omfwd forwards it with its default
// template, RSYSLOG_TraditionalForwardFormat, which sends RFC 3164 with the
// tag ended by a space ("<134>Dec  5 09:50:44 vm winevt <Event ..."). Over
// UDP (omfwd's default protocol), TCP with the default framing and
// octet-counted, and TLS (gtls, client certificate from a test CA), every
// event sent must be accepted and decoded exactly once.
func TestSyslogWithRsyslog(t *testing.T) {
	bin := requireTool(t, "rsyslogd")
	lines := rsyslogEvents(t, 60)
	cases := []struct {
		name      string
		transport string
		action    string // %s: port
		tls       bool
	}{
		{"udp default", TransportSyslogUDP, `action(type="omfwd" Target="127.0.0.1" Port="%s")`, false},
		{"tcp default framing", TransportSyslogTCP, `action(type="omfwd" Target="127.0.0.1" Port="%s" Protocol="tcp")`, false},
		{"tcp octet-counted", TransportSyslogTCP, `action(type="omfwd" Target="127.0.0.1" Port="%s" Protocol="tcp" TCP_Framing="octet-counted")`, false},
		{"tls gtls octet-counted", TransportSyslogTLS, `action(type="omfwd" Target="127.0.0.1" Port="%s" Protocol="tcp" TCP_Framing="octet-counted"
  StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name" StreamDriverPermittedPeers="127.0.0.1")`, true},
		{"tls gtls default framing", TransportSyslogTLS, `action(type="omfwd" Target="127.0.0.1" Port="%s" Protocol="tcp"
  StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name" StreamDriverPermittedPeers="127.0.0.1")`, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			h := newDecodingHandler()
			cfg := SyslogConfig{Addr: "127.0.0.1:0"}
			global := ""
			if c.tls {
				pki := newTestPKI(t)
				cfg.TLS = pki.serverTLS(t, true)
				global = fmt.Sprintf(`DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile=%q DefaultNetstreamDriverCertFile=%q DefaultNetstreamDriverKeyFile=%q`,
					pki.caFile, pki.clientCert, pki.clientKey)
			}
			var (
				srv *SyslogServer
				err error
			)
			if c.transport == TransportSyslogUDP {
				srv, err = NewSyslogUDP(cfg, h, zaptest.NewLogger(t))
			} else {
				srv, err = NewSyslogTCP(cfg, h, zaptest.NewLogger(t))
			}
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			_, port, _ := net.SplitHostPort(srv.Addr().String())
			file := filepath.Join(dir, "events.log")
			if err := os.WriteFile(file, append(bytes.Join(lines, []byte("\n")), '\n'), 0o600); err != nil {
				t.Fatal(err)
			}
			stop := startRsyslog(t, bin, dir, rsyslogConf(dir, file, fmt.Sprintf(c.action, port), global))
			h.rec.wait(t, len(lines))
			// rsyslog flushes and exits: nothing may arrive twice.
			out := stop()
			time.Sleep(100 * time.Millisecond)
			msgs := h.rec.messages()
			if len(msgs) != len(lines) {
				t.Fatalf("got %d messages, want %d; rsyslogd said:\n%s", len(msgs), len(lines), out)
			}
			// Every line exactly once (rsyslog may reorder nothing here, but
			// compare as multisets so the assertion is about delivery).
			got := make([]string, len(msgs))
			for i, m := range msgs {
				got[i] = string(m.Payload)
				if m.Transport != c.transport || m.Meta[MetaAppName] != "winevt" || m.Meta[MetaSyslogFmt] != SyslogRFC3164 {
					t.Errorf("message %d: transport %s meta %v", i, m.Transport, m.Meta)
				}
			}
			want := make([]string, len(lines))
			for i, l := range lines {
				want[i] = string(l)
			}
			sort.Strings(got)
			sort.Strings(want)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("payload %d differs:\n got %.120q\nwant %.120q", i, got[i], want[i])
				}
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.errs) > 0 {
				t.Errorf("decoder refused %d messages: %v", len(h.errs), h.errs)
			}
			if h.total.Read != len(lines) || h.total.Duplicates != 0 || h.total.Rejected != 0 {
				t.Errorf("decoder totals %+v, want %d records read, no duplicate, none rejected", h.total, len(lines))
			}
			// Each 2004 decoded once, into its own port.
			seen := map[uint64]int{}
			for _, ch := range h.changes {
				if ch.Source.EventID == 2004 {
					seen[ch.Source.RecordID]++
					if want := fmt.Sprint(20000 + ch.Source.RecordID - 700000); ch.Ports.String() != want || !ch.Opens() {
						t.Errorf("record %d: ports %s opens %v, want %s", ch.Source.RecordID, ch.Ports, ch.Opens(), want)
					}
				}
			}
			for i := range 60 {
				if n := seen[uint64(700000+i)]; n != 1 {
					t.Errorf("record %d decoded %d times", 700000+i, n)
				}
			}
			// Nothing refused or lost. (rsyslogd may reset its connection
			// when it exits instead of closing it: counted as io, harmless
			// once every message is in.)
			st := srv.Stats()
			if st.Received != uint64(len(lines)) || sumDropped(st)-st.Dropped[ReasonIO] != 0 {
				t.Errorf("listener stats %+v", st)
			}
		})
	}
}

func sumDropped(s Stats) uint64 {
	var n uint64
	for _, v := range s.Dropped {
		n += v
	}
	return n
}
