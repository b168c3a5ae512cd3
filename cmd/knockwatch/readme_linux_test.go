//go:build linux

package main

import (
	"bufio"
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
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/netns"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
)

// readmePKI writes what the README's command names: the server's
// certificate and key and the CA that signs the forwarders' certificates;
// it returns a client certificate signed by that CA.
func readmePKI(t *testing.T, etc string) tls.Certificate {
	t.Helper()
	mk := func(cn string, isCA bool, parent *x509.Certificate, pkey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, DNSNames: []string{cn}}
		if isCA {
			tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage, tmpl.ExtKeyUsage = true, true, x509.KeyUsageCertSign, nil
			parent, pkey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, pkey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, key
	}
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(etc, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ca, caKey := mk("forwarders CA", true, nil, nil)
	srv, srvKey := mk("sensor01", false, ca, caKey)
	cli, cliKey := mk("wec01", false, ca, caKey)
	write("forwarders-ca.pem", "CERTIFICATE", ca.Raw)
	write("server.pem", "CERTIFICATE", srv.Raw)
	kb, _ := x509.MarshalECPrivateKey(srvKey)
	write("server-key.pem", "EC PRIVATE KEY", kb)
	ckb, _ := x509.MarshalECPrivateKey(cliKey)
	pair, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cli.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ckb}))
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// TestREADMECommandStarts runs the README's deployment command as written
// — only /etc/knockwatch and /var/log/knockwatch point into a temp dir — in
// a network namespace that has a tap's two ports, tap0 and tap1: it must
// become ready, serve /readyz, accept a forwarder's client certificate on
// the Beats port and refuse a client without one, and stop on SIGTERM.
func TestREADMECommandStarts(t *testing.T) {
	testenv.RequirePrivileged(t)
	dir := t.TempDir()
	etc, logs := filepath.Join(dir, "etc"), filepath.Join(dir, "log")
	for _, d := range []string{etc, logs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	client := readmePKI(t, etc)
	if err := os.WriteFile(filepath.Join(etc, "hosts"), []byte("10.0.0.5 ws01.corp.example ws01\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, a := range readmeRunCommand(t) {
		a = strings.Replace(a, "/etc/knockwatch/", etc+"/", 1)
		a = strings.Replace(a, "/var/log/knockwatch/", logs+"/", 1)
		args = append(args, a)
	}

	env, err := netns.NewEnv("kwreadme")
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	defer env.CloseOnSignal()()
	ns, err := env.Namespace("sensor")
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Veth(ns, "tap0", ns, "tap1"); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"tap0", "tap1"} {
		if err := ns.LinkUp(l); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join(append(args, "--log-format", "json"), "\x1f"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var logText strings.Builder
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			logText.WriteString(sc.Text() + "\n")
			if !once && strings.Contains(sc.Text(), `"msg":"ready`) {
				once = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-done:
		_ = cmd.Wait()
		t.Fatalf("the README command did not start:\n%s", logText.String())
	case <-ctx.Done():
		t.Fatalf("not ready in time")
	}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return ns.Dial(ctx, nil, network, addr)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: dial}}
	resp, err := hc.Get("http://127.0.0.1:9742/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz: %d", resp.StatusCode)
	}
	handshake := func(cert *tls.Certificate) error {
		raw, err := dial(ctx, "tcp", "127.0.0.1:5044")
		if err != nil {
			return err
		}
		defer raw.Close()
		cfg := &tls.Config{InsecureSkipVerify: true} // the server's name is the operator's business here
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		c := tls.Client(raw, cfg)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := c.Handshake(); err != nil {
			return err
		}
		// TLS 1.3 reports a refused client certificate on the first read;
		// an accepted forwarder just sees the server wait for its data.
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err = c.Read(make([]byte, 1))
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return nil
		}
		return err
	}
	if err := handshake(&client); err != nil {
		t.Errorf("a forwarder with a certificate from --client-ca was refused: %v", err)
	}
	if err := handshake(nil); err == nil {
		t.Error("a client without a certificate was accepted on the Beats port")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-done
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, logText.String())
	}
}
