package alert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// outcome classifies the result of one request.
type outcome int

const (
	delivered outcome = iota // 2xx
	retryable                // 408, 429, 5xx, 3xx, timeout, connection error
	rejected                 // any other status: dead-letter
)

// result is what one request produced.
type result struct {
	outcome    outcome
	status     int
	reply      string        // start of the response body, for logs and dead letters
	retryAfter time.Duration // from a Retry-After header, 0 if none
	err        error
}

func newHTTPClient(cfg WebhookConfig) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.ServerName}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read webhook ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("read webhook ca file %s: no PEM certificate in it", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load webhook client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	tr.TLSClientConfig = tc
	return &http.Client{
		Transport: tr,
		// A redirect of an alert POST is a configuration mistake; it is
		// reported (and retried), not followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// encodeBody returns the request body and its content type.
func encodeBody(format string, recs []Record) ([]byte, string) {
	n := 2
	for _, r := range recs {
		n += len(r.JSON) + 1
	}
	b := make([]byte, 0, n)
	if format == FormatJSONArray {
		b = append(b, '[')
		for i, r := range recs {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, r.JSON...)
		}
		return append(b, ']'), "application/json"
	}
	for _, r := range recs {
		b = append(b, r.JSON...)
		b = append(b, '\n')
	}
	return b, "application/x-ndjson"
}

// idsHeaderCost is what r adds to IDsHeader.
func idsHeaderCost(r Record) int {
	return len(url.QueryEscape(r.ID)) + len(url.QueryEscape(r.Action)) + 2
}

func idsHeader(recs []Record) string {
	var sb strings.Builder
	for i, r := range recs {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(url.QueryEscape(r.ID))
		sb.WriteByte('/')
		sb.WriteString(url.QueryEscape(r.Action))
	}
	return sb.String()
}

// post sends recs in one request and classifies the answer.
func (w *Webhook) post(ctx context.Context, recs []Record) result {
	body, ctype := encodeBody(w.cfg.Format, recs)
	ctx, cancel := context.WithTimeout(ctx, w.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return result{outcome: retryable, err: fmt.Errorf("build webhook request: %w", err)}
	}
	for k, v := range w.headers {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("User-Agent", "knockwatch-alert/1")
	req.Header.Set(IDsHeader, idsHeader(recs))
	req.Header.Set(CountHeader, strconv.Itoa(len(recs)))
	if w.cfg.BearerToken != "" {
		req.Header.Set("Authorization", "Bearer "+w.cfg.BearerToken)
	}
	w.c.requests.Add(1)
	resp, err := w.client.Do(req)
	if err != nil {
		// url.Error carries the URL; keep it redacted.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return result{outcome: retryable, err: fmt.Errorf("post alerts to %s: %w", w.url, err)}
	}
	reply := readReply(resp.Body)
	resp.Body.Close()
	res := result{status: resp.StatusCode, reply: reply}
	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		res.outcome = delivered
	case s >= 500 || w.retryOn[s]:
		res.outcome = retryable
		res.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		res.err = fmt.Errorf("post alerts to %s: status %d", w.url, s)
	case s >= 300 && s < 400:
		res.outcome = retryable
		res.err = fmt.Errorf("post alerts to %s: status %d redirects to %q; redirects are not followed, fix the url", w.url, s, resp.Header.Get("Location"))
	default:
		res.outcome = rejected
		res.err = fmt.Errorf("post alerts to %s: rejected with status %d", w.url, s)
	}
	return res
}

// readReply drains up to 64 KiB of a response body (so the connection can be
// reused) and returns its first 512 bytes.
func readReply(body io.Reader) string {
	var head [512]byte
	n, _ := io.ReadFull(body, head[:])
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	return strings.ToValidUTF8(string(head[:n]), "?")
}

func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
