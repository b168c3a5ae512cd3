package intake

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// curl runs the real curl and returns the HTTP status and body.
func curl(t *testing.T, args ...string) (int, string, error) {
	t.Helper()
	bin := requireTool(t, "curl")
	out := filepath.Join(t.TempDir(), "body")
	cmd := exec.Command(bin, append([]string{"-sS", "--max-time", "10", "-o", out, "-w", "%{http_code}"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	code, err := cmd.Output()
	if err != nil {
		return 0, stderr.String(), err
	}
	status, _ := strconv.Atoi(string(code))
	body, _ := os.ReadFile(out)
	return status, string(body), nil
}

func writeTemp(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestHTTPWithCurl(t *testing.T) {
	const token = "s3cr3t-t0ken-for-tests"
	rec := newRecorder()
	rec.unreadable = func(b []byte) bool { return bytes.HasPrefix(b, []byte("garbage")) }
	srv, err := NewHTTPServer(HTTPConfig{Addr: "127.0.0.1:0", Token: token, MaxBodyBytes: 64 << 10}, rec, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	url := "http://" + srv.Addr().String() + EventsPath
	auth := "Authorization: Bearer " + token
	xmlBody := readTestdata(t, "mdecrevoisier_2004_any_any_rule_created.xml")
	jsonl := readTestdata(t, "otrf_cmd_netsh_fw_mod_open_ports.subset.jsonl")
	xmlFile := writeTemp(t, "ev.xml", xmlBody)
	gzFile := writeTemp(t, "ev.jsonl.gz", gzipBytes(t, jsonl))
	bomb := writeTemp(t, "bomb.gz", gzipBytes(t, make([]byte, 10<<20)))
	big := writeTemp(t, "big.json", bytes.Repeat([]byte(`{"a":1}`+"\n"), 20000))
	garbage := writeTemp(t, "garbage", []byte("garbage, not an event"))

	cases := []struct {
		name   string
		args   []string
		status int
		want   string // substring of the response body
	}{
		{"xml", []string{"-H", auth, "-H", "Content-Type: application/xml", "--data-binary", "@" + xmlFile, url}, 202, `"accepted":1`},
		{"gzip json lines", []string{"-H", auth, "-H", "Content-Encoding: gzip", "--data-binary", "@" + gzFile, url}, 202, `"rejected":0`},
		{"no token", []string{"--data-binary", "@" + xmlFile, url}, 401, "bearer token"},
		{"wrong token", []string{"-H", "Authorization: Bearer " + token + "x", "--data-binary", "@" + xmlFile, url}, 401, "bearer token"},
		{"basic auth is not a token", []string{"-u", "user:" + token, "--data-binary", "@" + xmlFile, url}, 401, "bearer token"},
		{"over the limit", []string{"-H", auth, "--data-binary", "@" + big, url}, 413, "limit"},
		{"gzip bomb", []string{"-H", auth, "-H", "Content-Encoding: gzip", "--data-binary", "@" + bomb, url}, 413, "limit"},
		{"chunked over the limit", []string{"-H", auth, "-H", "Transfer-Encoding: chunked", "--data-binary", "@" + big, url}, 413, "limit"},
		{"bad gzip", []string{"-H", auth, "-H", "Content-Encoding: gzip", "--data-binary", "@" + xmlFile, url}, 400, "gzip"},
		{"unknown encoding", []string{"-H", auth, "-H", "Content-Encoding: br", "--data-binary", "@" + xmlFile, url}, 415, "encoding"},
		{"unreadable", []string{"-H", auth, "--data-binary", "@" + garbage, url}, 400, "unreadable"},
		{"empty", []string{"-H", auth, "-X", "POST", url}, 400, "empty"},
		{"GET", []string{"-H", auth, url}, 405, "POST"},
		{"other path", []string{"-H", auth, "--data-binary", "@" + xmlFile, "http://" + srv.Addr().String() + "/v1/other"}, 404, "not found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body, err := curl(t, c.args...)
			if err != nil {
				t.Fatalf("curl: %v: %s", err, body)
			}
			if status != c.status || !strings.Contains(body, c.want) {
				t.Fatalf("got %d %q, want %d with %q", status, body, c.status, c.want)
			}
		})
	}
	msgs := rec.messages()
	if len(msgs) != 2 {
		t.Fatalf("handler got %d messages, want 2 (only the accepted requests)", len(msgs))
	}
	if !bytes.Equal(msgs[0].Payload, xmlBody) || msgs[0].Meta[MetaContentTyp] != "application/xml" || msgs[0].Transport != TransportHTTP {
		t.Errorf("xml message = %+v", msgs[0].Meta)
	}
	if !bytes.Equal(msgs[1].Payload, jsonl) {
		t.Errorf("gzip body not decompressed to the original (%d vs %d bytes)", len(msgs[1].Payload), len(jsonl))
	}

	// backpressure: 429 with Retry-After, then accepted on retry
	rec.setBusy(1)
	status, body, err := curl(t, "-H", auth, "--data-binary", "@"+xmlFile, url)
	if err != nil || status != 429 {
		t.Fatalf("busy: got %d %q %v, want 429", status, body, err)
	}
	if status, _, _ := curl(t, "-H", auth, "--retry", "0", "--data-binary", "@"+xmlFile, url); status != 202 {
		t.Fatalf("after busy: got %d, want 202", status)
	}

	st := srv.Stats()
	want := map[string]uint64{ReasonUnauthorized: 3, ReasonTooLarge: 3, ReasonBusy: 1, ReasonUnreadable: 1, ReasonBadRequest: 5}
	for k, v := range want {
		if st.Dropped[k] != v {
			t.Errorf("Dropped[%s] = %d, want %d (%v)", k, st.Dropped[k], v, st.Dropped)
		}
	}
	if st.Accepted != 3 || st.Received != 4 {
		t.Errorf("accepted %d received %d, want 3 and 4", st.Accepted, st.Received)
	}
}

func TestHTTPMutualTLSWithCurl(t *testing.T) {
	pki := newTestPKI(t)
	rec := newRecorder()
	srv, err := NewHTTPServer(HTTPConfig{Addr: "127.0.0.1:0", TLS: pki.serverTLS(t, true)}, rec, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	url := "https://" + srv.Addr().String() + EventsPath
	xmlFile := writeTemp(t, "ev.xml", readTestdata(t, "mdecrevoisier_2004_any_any_rule_created.xml"))

	status, body, err := curl(t, "--cacert", pki.caFile, "--cert", pki.clientCert, "--key", pki.clientKey, "--data-binary", "@"+xmlFile, url)
	if err != nil || status != 202 {
		t.Fatalf("with client certificate: %d %q %v", status, body, err)
	}
	if sub := rec.wait(t, 1)[0].Meta[MetaClientCert]; !strings.Contains(sub, "winlogbeat-wec01") {
		t.Errorf("client subject = %q", sub)
	}
	if _, _, err := curl(t, "--cacert", pki.caFile, "--data-binary", "@"+xmlFile, url); err == nil {
		t.Error("request without a client certificate succeeded")
	}
	if _, _, err := curl(t, "--cacert", pki.caFile, "--cert", pki.otherCert, "--key", pki.otherKey, "--data-binary", "@"+xmlFile, url); err == nil {
		t.Error("request with a certificate from another CA succeeded")
	}
	eventually(t, "tls handshake failures counted", func() bool { return srv.Stats().Dropped[ReasonTLSHandshake] >= 2 })
	if n := len(rec.messages()); n != 1 {
		t.Errorf("handler got %d messages, want 1", n)
	}
}

func TestHTTPSlowlorisAndConnectionLimit(t *testing.T) {
	rec := newRecorder()
	srv, err := NewHTTPServer(HTTPConfig{Addr: "127.0.0.1:0", MaxConns: 2, ReadHeaderTimeout: 200 * time.Millisecond},
		rec, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// a slowloris client sends half a request and stalls: the server hangs up
	slow, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := slow.Write([]byte("POST /v1/events HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	second, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	eventually(t, "two open connections", func() bool { return srv.Stats().ConnectionsOpen == 2 })
	third, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	_ = third.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := third.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("connection over the limit: read err %v, want EOF", err)
	}
	_ = slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(slow)
	if len(b) > 0 && !bytes.Contains(b, []byte("408")) {
		t.Errorf("slowloris connection got %q", b)
	}
	if st := srv.Stats(); st.Dropped[ReasonTooManyConns] != 1 {
		t.Errorf("too_many_conns = %d, want 1", st.Dropped[ReasonTooManyConns])
	}
}

func TestListenerAuthRule(t *testing.T) {
	pki := newTestPKI(t)
	log := zaptest.NewLogger(t)
	h := newRecorder()
	type closer interface{ Close() error }
	cases := []struct {
		name string
		ok   bool
		mk   func() (closer, error)
	}{
		{"http open", false, func() (closer, error) { return NewHTTPServer(HTTPConfig{Addr: "0.0.0.0:0"}, h, log) }},
		{"https without client CA", false, func() (closer, error) {
			return NewHTTPServer(HTTPConfig{Addr: "0.0.0.0:0", TLS: pki.serverTLS(t, false)}, h, log)
		}},
		{"http token", true, func() (closer, error) { return NewHTTPServer(HTTPConfig{Addr: "0.0.0.0:0", Token: "t"}, h, log) }},
		{"http mtls", true, func() (closer, error) {
			return NewHTTPServer(HTTPConfig{Addr: "0.0.0.0:0", TLS: pki.serverTLS(t, true)}, h, log)
		}},
		{"http insecure", true, func() (closer, error) { return NewHTTPServer(HTTPConfig{Addr: "0.0.0.0:0", Insecure: true}, h, log) }},
		{"syslog udp", false, func() (closer, error) { return NewSyslogUDP(SyslogConfig{Addr: "0.0.0.0:0"}, h, log) }},
		{"syslog udp insecure", true, func() (closer, error) { return NewSyslogUDP(SyslogConfig{Addr: "0.0.0.0:0", Insecure: true}, h, log) }},
		{"syslog tcp", false, func() (closer, error) { return NewSyslogTCP(SyslogConfig{Addr: "0.0.0.0:0"}, h, log) }},
		{"syslog tls no client CA", false, func() (closer, error) {
			return NewSyslogTCP(SyslogConfig{Addr: "0.0.0.0:0", TLS: pki.serverTLS(t, false)}, h, log)
		}},
		{"syslog mtls", true, func() (closer, error) {
			return NewSyslogTCP(SyslogConfig{Addr: "0.0.0.0:0", TLS: pki.serverTLS(t, true)}, h, log)
		}},
		{"beats plain", false, func() (closer, error) { return NewBeatsServer(BeatsConfig{Addr: "0.0.0.0:0"}, h, log) }},
		{"beats mtls", true, func() (closer, error) {
			return NewBeatsServer(BeatsConfig{Addr: "0.0.0.0:0", TLS: pki.serverTLS(t, true)}, h, log)
		}},
		{"beats loopback", true, func() (closer, error) { return NewBeatsServer(BeatsConfig{Addr: "127.0.0.1:0"}, h, log) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, err := c.mk()
			if c.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				_ = l.Close()
				return
			}
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("err = %v, want ErrUnauthenticated", err)
			}
			if !strings.Contains(err.Error(), "Insecure") {
				t.Errorf("error does not say how to proceed: %v", err)
			}
		})
	}
}

func TestReadTokenFile(t *testing.T) {
	p := writeTemp(t, "tok", []byte("  abc123\n"))
	if tok, err := ReadTokenFile(p); err != nil || tok != "abc123" {
		t.Fatalf("got %q %v", tok, err)
	}
	for _, bad := range []string{"", " \n", "a b"} {
		if _, err := ReadTokenFile(writeTemp(t, "bad", []byte(bad))); err == nil {
			t.Errorf("token %q accepted", bad)
		} else if strings.Contains(err.Error(), "a b") {
			t.Errorf("error leaks the token: %v", err)
		}
	}
	if _, err := ReadTokenFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file accepted")
	}
}

// TestHTTPTokenNeverLogged logs at debug level through refused and accepted
// requests and looks for the token (and a wrong one) in every entry.
func TestHTTPTokenNeverLogged(t *testing.T) {
	const token = "tok-ABCDEF-0123456789"
	core, logs := observer.New(zapcore.DebugLevel)
	srv, err := NewHTTPServer(HTTPConfig{Addr: "127.0.0.1:0", Token: token}, newRecorder(), zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + srv.Addr().String() + EventsPath
	for _, auth := range []string{"Bearer " + token, "Bearer " + token + "-wrong", "Basic " + token, token} {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"a":1}`))
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
	}
	_ = srv.Close()
	if logs.Len() == 0 {
		t.Fatal("nothing logged: the check would prove nothing")
	}
	for _, e := range logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		if strings.Contains(line, "ABCDEF") {
			t.Errorf("token in log entry: %s", line)
		}
	}
}
