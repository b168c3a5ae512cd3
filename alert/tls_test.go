package alert

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
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

type testCert struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	keyPEM  []byte
}

func issue(t *testing.T, name string, parent *testCert, isCA bool, usage x509.ExtKeyUsage) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	if !isCA {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalECPrivateKey(key)
	return &testCert{cert: cert, key: key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})}
}

// The webhook verifies the receiver against the configured CA, presents a
// client certificate (mutual TLS), and sends the bearer token and the
// custom headers.
func TestWebhookTLSAndAuth(t *testing.T) {
	dir := t.TempDir()
	ca := issue(t, "test ca", nil, true, 0)
	srvCert := issue(t, "receiver", ca, false, x509.ExtKeyUsageServerAuth)
	cliCert := issue(t, "knockwatch", ca, false, x509.ExtKeyUsageClientAuth)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile := write("ca.pem", ca.certPEM)
	certFile, keyFile := write("cli.pem", cliCert.certPEM), write("cli.key", cliCert.keyPEM)

	rv := newReceiver(t)
	rv.wantAuth = "Bearer s3cret"
	var sawKey, sawClient string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawKey = r.Header.Get("X-Api-Key")
		if len(r.TLS.PeerCertificates) > 0 {
			sawClient = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		rv.ServeHTTP(w, r)
	}))
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	pair, err := tls.X509KeyPair(srvCert.certPEM, srvCert.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.StartTLS()
	defer srv.Close()

	cfg := testConfig(t, srv.URL+"/alerts", filepath.Join(dir, "spool"))
	cfg.CAFile, cfg.CertFile, cfg.KeyFile = caFile, certFile, keyFile
	cfg.BearerToken = "s3cret"
	cfg.Headers = map[string]string{"X-Api-Key": "k1"}
	cfg.Format = FormatJSONArray
	w := mustWebhook(t, cfg)
	if err := w.Write(context.Background(), recs("tls", 3)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery over mTLS", func() bool { return w.Stats().Delivered == 3 })
	w.Close()
	if sawKey != "k1" || sawClient != "knockwatch" {
		t.Fatalf("custom header %q, client cert %q", sawKey, sawClient)
	}

	// Without the CA the receiver's certificate is not trusted: retried,
	// not delivered, not dead-lettered.
	cfg.CAFile = ""
	cfg.SpoolDir = filepath.Join(dir, "spool2")
	w2 := mustWebhook(t, cfg)
	w2.Write(context.Background(), recs("untrusted", 1))
	waitFor(t, "certificate errors", func() bool { return w2.Stats().Retries >= 2 })
	if st := w2.Stats(); st.Delivered != 0 || st.DeadLettered != 0 {
		t.Fatalf("untrusted receiver: %+v", st)
	}
}

func TestWebhookConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for name, cfg := range map[string]WebhookConfig{
		"no url":        {SpoolDir: dir},
		"ftp url":       {URL: "ftp://x/", SpoolDir: dir},
		"no spool":      {URL: "http://127.0.0.1:1/"},
		"bad format":    {URL: "http://127.0.0.1:1/", SpoolDir: dir, Format: "xml"},
		"token newline": {URL: "http://127.0.0.1:1/", SpoolDir: dir, BearerToken: "a\nb"},
		"header name":   {URL: "http://127.0.0.1:1/", SpoolDir: dir, Headers: map[string]string{"X Bad": "v"}},
		"cert only":     {URL: "http://127.0.0.1:1/", SpoolDir: dir, CertFile: "c.pem"},
		"missing ca":    {URL: "https://127.0.0.1:1/", SpoolDir: dir, CAFile: filepath.Join(dir, "nope.pem")},
	} {
		if w, err := NewWebhook(cfg); err == nil {
			w.Close()
			t.Errorf("%s: accepted", name)
		}
	}
}
