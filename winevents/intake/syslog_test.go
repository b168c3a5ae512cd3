package intake

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

func jsonLines(t *testing.T) [][]byte {
	t.Helper()
	return bytes.Split(bytes.TrimSpace(readTestdata(t, "otrf_cmd_netsh_fw_mod_open_ports.subset.jsonl")), []byte("\n"))
}

func run(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
}

func checkLines(t *testing.T, msgs []Message, lines [][]byte, transport string) {
	t.Helper()
	if len(msgs) != len(lines) {
		t.Fatalf("got %d messages, want %d", len(msgs), len(lines))
	}
	for i, m := range msgs {
		if !bytes.Equal(m.Payload, lines[i]) {
			t.Errorf("message %d: payload %.80q..., want %.80q...", i, m.Payload, lines[i])
		}
		if m.Transport != transport || m.Meta[MetaAppName] != "kwtest" || m.Meta[MetaHostname] == "" {
			t.Errorf("message %d: transport %s meta %v", i, m.Transport, m.Meta)
		}
	}
}

// TestSyslogWithLogger sends the sample's JSON lines with util-linux logger
// in every framing it offers.
func TestSyslogWithLogger(t *testing.T) {
	lines := jsonLines(t)
	file := writeTemp(t, "ev.jsonl", bytes.Join(lines, []byte("\n")))
	cases := []struct {
		name, transport string
		args            []string
		format          string
	}{
		{"udp rfc5424", TransportSyslogUDP, []string{"--udp", "--rfc5424"}, SyslogRFC5424},
		{"udp rfc3164", TransportSyslogUDP, []string{"--udp", "--rfc3164"}, SyslogRFC3164},
		{"tcp octet-count rfc5424", TransportSyslogTCP, []string{"--tcp", "--octet-count", "--rfc5424"}, SyslogRFC5424},
		{"tcp newline rfc5424", TransportSyslogTCP, []string{"--tcp", "--rfc5424"}, SyslogRFC5424},
		{"tcp newline rfc3164", TransportSyslogTCP, []string{"--tcp", "--rfc3164"}, SyslogRFC3164},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bin := requireTool(t, "logger")
			rec := newRecorder()
			var (
				srv *SyslogServer
				err error
			)
			if c.transport == TransportSyslogUDP {
				srv, err = NewSyslogUDP(SyslogConfig{Addr: "127.0.0.1:0"}, rec, zaptest.NewLogger(t))
			} else {
				srv, err = NewSyslogTCP(SyslogConfig{Addr: "127.0.0.1:0"}, rec, zaptest.NewLogger(t))
			}
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			_, port, _ := net.SplitHostPort(srv.Addr().String())
			args := append([]string{"--server", "127.0.0.1", "--port", port, "-t", "kwtest", "-S", "65000", "-f", file}, c.args...)
			run(t, exec.Command(bin, args...))
			msgs := rec.wait(t, len(lines))
			checkLines(t, msgs, lines, c.transport)
			if f := msgs[0].Meta[MetaSyslogFmt]; f != c.format {
				t.Errorf("format %s, want %s", f, c.format)
			}
			st := srv.Stats()
			if st.Received != uint64(len(lines)) || st.Accepted != uint64(len(lines)) {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// mixedStream is one TCP stream using every framing: an octet-counted
// multi-line XML event, a newline-framed message with CRLF, a NUL-terminated
// one, and a final frame without any terminator.
func mixedStream(t *testing.T) ([]byte, [][]byte) {
	xml := bytes.TrimSpace(readTestdata(t, "mdecrevoisier_2004_any_any_rule_created.xml"))
	xml = xml[bytes.Index(xml, []byte("<Event ")):bytes.LastIndex(xml, []byte("</Events>"))]
	xml = bytes.TrimSpace(xml)
	m1 := append([]byte("<134>1 2021-02-22T22:57:19.43548Z jump01.offsec.lan kwtest - - - \xEF\xBB\xBF"), xml...)
	m2 := []byte(`<14>Feb 22 22:57:20 jump01 kwtest[7]: {"EventID":2005}`)
	m3 := []byte(`<14>1 - jump01 kwtest - - - {"EventID":2006}`)
	m4 := []byte(`{"EventID":2007,"Hostname":"jump01"}`)
	var s bytes.Buffer
	fmt.Fprintf(&s, "%d %s", len(m1), m1)
	s.Write(m2)
	s.WriteString("\r\n")
	s.Write(m3)
	s.WriteByte(0)
	s.Write(m4)
	return s.Bytes(), [][]byte{xml, []byte(`{"EventID":2005}`), []byte(`{"EventID":2006}`), []byte(`{"EventID":2007,"Hostname":"jump01"}`)}
}

func checkPayloads(t *testing.T, msgs []Message, want [][]byte) {
	t.Helper()
	if len(msgs) != len(want) {
		t.Fatalf("got %d messages, want %d", len(msgs), len(want))
	}
	for i := range want {
		if !bytes.Equal(msgs[i].Payload, want[i]) {
			t.Errorf("message %d: %.100q, want %.100q", i, msgs[i].Payload, want[i])
		}
	}
}

func TestSyslogTCPWithSocat(t *testing.T) {
	bin := requireTool(t, "socat")
	rec := newRecorder()
	srv, err := NewSyslogTCP(SyslogConfig{Addr: "127.0.0.1:0"}, rec, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	stream, want := mixedStream(t)
	run(t, exec.Command(bin, "-u", "OPEN:"+writeTemp(t, "stream", stream)+",rdonly", "TCP:"+srv.Addr().String()))
	msgs := rec.wait(t, len(want))
	checkPayloads(t, msgs, want)
	if msgs[0].Meta[MetaHostname] != "jump01.offsec.lan" || msgs[0].Meta[MetaTimestamp] != "2021-02-22T22:57:19.43548Z" {
		t.Errorf("meta %v", msgs[0].Meta)
	}
	if msgs[3].Meta[MetaSyslogFmt] != SyslogRaw {
		t.Errorf("bare JSON frame: meta %v", msgs[3].Meta)
	}
}

func TestSyslogTLSWithOpenSSL(t *testing.T) {
	bin := requireTool(t, "openssl")
	pki := newTestPKI(t)
	rec := newRecorder()
	srv, err := NewSyslogTCP(SyslogConfig{Addr: "127.0.0.1:0", TLS: pki.serverTLS(t, true)}, rec, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	stream, want := mixedStream(t)
	sClient := func(extra ...string) *exec.Cmd {
		args := append([]string{"s_client", "-connect", srv.Addr().String(), "-CAfile", pki.caFile,
			"-verify_return_error", "-quiet", "-no_ign_eof"}, extra...)
		cmd := exec.Command(bin, args...)
		cmd.Stdin = bytes.NewReader(stream)
		return cmd
	}
	run(t, sClient("-cert", pki.clientCert, "-key", pki.clientKey))
	msgs := rec.wait(t, len(want))
	checkPayloads(t, msgs, want)
	if msgs[0].Transport != TransportSyslogTLS || !strings.Contains(msgs[0].Meta[MetaClientCert], "winlogbeat-wec01") {
		t.Errorf("transport %s meta %v", msgs[0].Transport, msgs[0].Meta)
	}
	// without a client certificate, or with one from another CA: refused
	_ = sClient().Run()
	_ = sClient("-cert", pki.otherCert, "-key", pki.otherKey).Run()
	eventually(t, "handshake failures counted", func() bool { return srv.Stats().Dropped[ReasonTLSHandshake] == 2 })
	if n := len(rec.messages()); n != len(want) {
		t.Errorf("unauthenticated clients delivered %d messages", n-len(want))
	}
}

func TestSyslogTCPLimits(t *testing.T) {
	rec := newRecorder()
	srv, err := NewSyslogTCP(SyslogConfig{Addr: "127.0.0.1:0", MaxMessageBytes: 1024, MaxConns: 2,
		IdleTimeout: 300 * time.Millisecond}, rec, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := bytes.Repeat([]byte("x"), 5000)
	msg := func(s string) string { return "<13>1 - h kwtest - - - " + s }
	var s bytes.Buffer
	fmt.Fprintf(&s, "%d %s", len(msg(string(big))), msg(string(big))) // octet-counted, too large: skipped exactly
	s.WriteString(msg(`{"n":1}`) + "\n")                              // still in sync
	s.WriteString(msg(string(big)) + "\n")                            // newline-framed, too large: skipped to the LF
	s.WriteString(msg(`{"n":2}`) + "\n")                              // in sync again
	s.WriteString("not syslog at all\n")                              // refused, counted
	s.WriteString("12abc " + msg(`{"n":3}`) + "\n")                   // digits without a count: a (bad) line
	s.WriteString(msg(`{"n":4}`) + "\n")
	if _, err := c.Write(s.Bytes()); err != nil {
		t.Fatal(err)
	}
	checkPayloads(t, rec.wait(t, 3), [][]byte{[]byte(`{"n":1}`), []byte(`{"n":2}`), []byte(`{"n":4}`)})
	st := srv.Stats()
	if st.Dropped[ReasonTooLarge] != 2 || st.Dropped[ReasonBadSyslog] != 2 {
		t.Errorf("dropped %v", st.Dropped)
	}
	// connection limit: c is one, a second fits, a third is closed at once
	c2, _ := net.Dial("tcp", srv.Addr().String())
	defer c2.Close()
	eventually(t, "2 connections", func() bool { return srv.Stats().ConnectionsOpen == 2 })
	c3, _ := net.Dial("tcp", srv.Addr().String())
	defer c3.Close()
	_ = c3.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c3.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("third connection: %v, want EOF", err)
	}
	// idle timeout closes c and c2
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("idle connection: %v, want EOF", err)
	}
	eventually(t, "read timeouts counted, connections closed", func() bool {
		st := srv.Stats()
		return st.Dropped[ReasonReadTimeout] == 2 && st.ConnectionsOpen == 0
	})
	if st := srv.Stats(); st.Dropped[ReasonTooManyConns] != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestSyslogBusy(t *testing.T) {
	rec := newRecorder()
	tcp, err := NewSyslogTCP(SyslogConfig{Addr: "127.0.0.1:0"}, rec, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	udp, err := NewSyslogUDP(SyslogConfig{Addr: "127.0.0.1:0"}, rec, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()

	rec.setBusy(3)
	c, err := net.Dial("tcp", tcp.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 3 {
		fmt.Fprintf(c, "<13>1 - h kwtest - - - {\"n\":%d}\n", i)
	}
	// TCP holds the message until the handler takes it: nothing lost, in order
	checkPayloads(t, rec.wait(t, 3), [][]byte{[]byte(`{"n":0}`), []byte(`{"n":1}`), []byte(`{"n":2}`)})
	eventually(t, "3 accepted after one stall", func() bool {
		st := tcp.Stats()
		return st.Dropped[ReasonBusy] == 1 && st.Accepted == 3
	})
	// UDP cannot push back: the datagram is dropped and counted
	rec.setBusy(1)
	u, err := net.Dial("udp", udp.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	fmt.Fprint(u, `<13>1 - h kwtest - - - {"n":"lost"}`)
	fmt.Fprint(u, `<13>1 - h kwtest - - - {"n":"kept"}`)
	msgs := rec.wait(t, 4)
	if string(msgs[3].Payload) != `{"n":"kept"}` {
		t.Errorf("udp got %q", msgs[3].Payload)
	}
	if st := udp.Stats(); st.Dropped[ReasonBusy] != 1 {
		t.Errorf("udp busy = %d", st.Dropped[ReasonBusy])
	}
	// a datagram over the limit is dropped and counted; the next one passes
	small, err := NewSyslogUDP(SyslogConfig{Addr: "127.0.0.1:0", MaxMessageBytes: 100}, rec, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	u2, err := net.Dial("udp", small.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u2.Close()
	fmt.Fprintf(u2, `<13>1 - h kwtest - - - {"pad":"%s"}`, strings.Repeat("x", 200))
	fmt.Fprint(u2, `<13>1 - h kwtest - - - {"n":"small"}`)
	if m := rec.wait(t, 5); string(m[4].Payload) != `{"n":"small"}` {
		t.Errorf("got %q", m[4].Payload)
	}
	if st := small.Stats(); st.Dropped[ReasonTooLarge] != 1 {
		t.Errorf("udp too_large = %d", st.Dropped[ReasonTooLarge])
	}
}
