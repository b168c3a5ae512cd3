package intake

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
)

// recorder is a Handler that keeps every message; busy makes it refuse the
// next n offers with ErrBusy; unreadable marks payloads it cannot read.
type recorder struct {
	mu         sync.Mutex
	msgs       []Message
	busy       int
	busyOffers int
	unreadable func([]byte) bool
	ch         chan struct{}
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 1<<16)} }

func (r *recorder) Handle(_ context.Context, m Message) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.busy > 0 {
		r.busy--
		r.busyOffers++
		return Result{Err: ErrBusy}
	}
	if r.unreadable != nil && r.unreadable(m.Payload) {
		return Result{Err: os.ErrInvalid}
	}
	r.msgs = append(r.msgs, m)
	r.ch <- struct{}{}
	return Result{Accepted: 1}
}

// setBusy makes the next n offers fail with ErrBusy.
func (r *recorder) setBusy(n int) {
	r.mu.Lock()
	r.busy = n
	r.mu.Unlock()
}

func (r *recorder) messages() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.msgs...)
}

// wait blocks until n messages arrived in total or fails after 10 s.
func (r *recorder) wait(t *testing.T, n int) []Message {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if m := r.messages(); len(m) >= n {
			return m
		}
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("waited for %d messages, got %d", n, len(r.messages()))
		}
	}
}

// eventually polls cond until it holds or fails after 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// requireTool returns the path of a real client program. A missing tool
// skips the test locally and fails it in CI (KNOCKWATCH_REQUIRE_PRIVILEGED).
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv(testenv.RequirePrivilegedEnv) != "" {
		t.Fatalf("%s is required (install it) and %s is set", name, testenv.RequirePrivilegedEnv)
	}
	t.Skipf("%s not installed", name)
	return ""
}

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, generated at run time and written to a temp dir.
type testPKI struct {
	dir                   string
	caFile                string
	serverCert, serverKey string
	clientCert, clientKey string
	otherCert, otherKey   string // a client certificate from another CA
	caPool                *x509.CertPool
	clientPair, otherPair tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	p := &testPKI{dir: dir}
	ca, caKey := mkCert(t, "knockwatch test CA", nil, nil, true)
	other, otherKey := mkCert(t, "some other CA", nil, nil, true)
	p.caFile = writePEM(t, dir, "ca.pem", "CERTIFICATE", ca.Raw)
	srv, srvKey := mkCert(t, "127.0.0.1", ca, caKey, false)
	cli, cliKey := mkCert(t, "winlogbeat-wec01", ca, caKey, false)
	oth, othKey := mkCert(t, "intruder", other, otherKey, false)
	p.serverCert, p.serverKey = writePair(t, dir, "server", srv, srvKey)
	p.clientCert, p.clientKey = writePair(t, dir, "client", cli, cliKey)
	p.otherCert, p.otherKey = writePair(t, dir, "other", oth, othKey)
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(ca)
	var err error
	if p.clientPair, err = tls.LoadX509KeyPair(p.clientCert, p.clientKey); err != nil {
		t.Fatal(err)
	}
	if p.otherPair, err = tls.LoadX509KeyPair(p.otherCert, p.otherKey); err != nil {
		t.Fatal(err)
	}
	return p
}

// serverTLS returns the server config, with mTLS when mutual.
func (p *testPKI) serverTLS(t *testing.T, mutual bool) *tls.Config {
	t.Helper()
	ca := ""
	if mutual {
		ca = p.caFile
	}
	cfg, err := ServerTLSConfig(p.serverCert, p.serverKey, ca)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (p *testPKI) clientTLS(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: p.caPool, ServerName: "127.0.0.1"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

func mkCert(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"knockwatch tests"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.ExtKeyUsage = nil
		parent, parentKey = tmpl, key
	} else {
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func writePair(t *testing.T, dir, name string, c *x509.Certificate, k *ecdsa.PrivateKey) (string, string) {
	t.Helper()
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, dir, name+".pem", "CERTIFICATE", c.Raw), writePEM(t, dir, name+"-key.pem", "EC PRIVATE KEY", kb)
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
