package intake

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// ErrUnauthenticated is returned (wrapped) by a constructor asked to listen on
// a non-loopback address without authentication and without Insecure.
var ErrUnauthenticated = errors.New("listener on a non-loopback address needs authentication")

// ReadTokenFile reads a bearer token from path: the file's content without
// surrounding white space. An empty token is an error. The token is never
// logged by this package.
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("read token file %s: file is empty", path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("read token file %s: token contains white space", path)
	}
	return tok, nil
}

// ServerTLSConfig loads a server certificate and key and, when clientCAFile
// is not empty, requires and verifies client certificates signed by those CAs
// (mTLS).
func ServerTLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load tls key pair: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAFile != "" {
		pem, err := os.ReadFile(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("read client ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("read client ca %s: no PEM certificate found", clientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// requiresClientCert reports whether cfg enforces mTLS.
func requiresClientCert(cfg *tls.Config) bool {
	return cfg != nil && cfg.ClientAuth == tls.RequireAndVerifyClientCert && cfg.ClientCAs != nil
}

// isLoopback reports whether a bound address only accepts local peers.
func isLoopback(a net.Addr) bool {
	var ip net.IP
	switch a := a.(type) {
	case *net.TCPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	default:
		return false
	}
	return ip != nil && ip.IsLoopback()
}

// checkExposure enforces the auth rule: a listener bound to a non-loopback
// address must authenticate its peers unless insecure is set.
func checkExposure(transport string, a net.Addr, authenticated, insecure bool, how string) error {
	if authenticated || insecure || isLoopback(a) {
		return nil
	}
	return fmt.Errorf("listen %s on %s: %w (%s), or set Insecure to run without it",
		transport, a, ErrUnauthenticated, how)
}

// DefaultTokenName names the single bearer token of HTTPConfig.Token
// (listeners.token_file).
const DefaultTokenName = "default"

// tokenMatcher compares bearer tokens in constant time (over their
// SHA-256, so the length does not leak either), against every configured
// token whatever matches first.
type tokenMatcher struct {
	names []string
	sums  [][32]byte
}

func newTokenMatcher(tokens map[string]string) *tokenMatcher {
	if len(tokens) == 0 {
		return nil
	}
	t := &tokenMatcher{}
	for name, tok := range tokens {
		if tok == "" {
			continue
		}
		t.names = append(t.names, name)
		t.sums = append(t.sums, sha256.Sum256([]byte(tok)))
	}
	if len(t.names) == 0 {
		return nil
	}
	return t
}

// match returns the name of the token got is, or "" and false.
func (t *tokenMatcher) match(got string) (string, bool) {
	s := sha256.Sum256([]byte(got))
	found := -1
	for i := range t.sums {
		if subtle.ConstantTimeCompare(s[:], t.sums[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", false
	}
	return t.names[found], true
}

// peerSubject returns the verified client certificate's subject, if any.
func peerSubject(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return ""
	}
	return cs.PeerCertificates[0].Subject.String()
}
