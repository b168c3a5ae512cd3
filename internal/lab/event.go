//go:build linux

package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"text/template"
	"time"

	"github.com/knockwatch/knockwatch/internal/netns"
)

// firewall2004 is a Windows Firewall "rule added" event (channel
// Microsoft-Windows-Windows Firewall With Advanced Security/Firewall, event
// 2004) as Windows Event Forwarding delivers it with ContentFormat
// RenderedText: the Event XML with its RenderingInfo. The System and
// EventData elements follow the real Windows 10 19044 event in
// testdata/winevents/psmths_2004_2071_2006_5156_examples.xml ("Open SSH
// Port 22", added with netsh), with the rule's port, name, id, host and
// time filled in.
//
//go:embed firewall_2004.xml.tmpl
var firewall2004 string

var firewall2004Tmpl = template.Must(template.New("2004").Parse(firewall2004))

// RuleAdded describes the firewall rule the lab's host adds.
type RuleAdded struct {
	Computer      string    // <Computer>: the host's name as the inventory knows it
	Port          uint16    // LocalPorts
	RuleName      string    // RuleName
	Time          time.Time // TimeCreated
	RecordID      uint64    // EventRecordID
	ModifyingUser string    // the SID of the user who ran netsh
	RuleID        string    // "{GUID}"; empty: a random one
}

// RenderFirewall2004 renders r as the Event XML of a Firewall 2004 event:
// an active inbound allow rule for TCP on r.Port.
func RenderFirewall2004(r RuleAdded) ([]byte, error) {
	if r.RuleID == "" {
		var g [16]byte
		if _, err := rand.Read(g[:]); err != nil {
			return nil, fmt.Errorf("render firewall event: %w", err)
		}
		r.RuleID = fmt.Sprintf("{%X-%X-%X-%X-%X}", g[0:4], g[4:6], g[6:8], g[8:10], g[10:])
	}
	esc := xmlEscape
	if r.ModifyingUser == "" {
		r.ModifyingUser = "S-1-5-21-3471133136-2963561160-3931775028-1001"
	}
	data := map[string]any{
		"Time":          r.Time.UTC().Format("2006-01-02T15:04:05.0000000Z"),
		"RecordID":      r.RecordID,
		"ThreadID":      19044,
		"Computer":      esc(r.Computer),
		"RuleID":        esc(r.RuleID),
		"RuleName":      esc(r.RuleName),
		"Port":          r.Port,
		"ModifyingUser": esc(r.ModifyingUser),
	}
	var b bytes.Buffer
	if err := firewall2004Tmpl.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("render firewall event: %w", err)
	}
	return b.Bytes(), nil
}

// forwarder posts Windows events to the sensor's HTTP listener from inside
// the host's namespace, over TLS, as a WEF collector's forwarder would.
type forwarder struct {
	url    string
	token  string
	client *http.Client
}

func newForwarder(from *netns.Namespace, url, token string, roots *x509.CertPool) *forwarder {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return from.Dial(ctx, &net.Dialer{Timeout: 3 * time.Second}, network, addr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: true,
	}
	return &forwarder{url: url, token: token, client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// postResult is the listener's answer.
type postResult struct {
	Status   int    `json:"-"`
	Accepted int    `json:"accepted"`
	Rejected int    `json:"rejected"`
	Error    string `json:"error"`
}

// post sends body as Event XML, with the bearer token when withToken.
func (f *forwarder) post(ctx context.Context, body []byte, withToken bool) (postResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, bytes.NewReader(body))
	if err != nil {
		return postResult{}, fmt.Errorf("post event: %w", err)
	}
	req.Header.Set("Content-Type", "application/xml; charset=utf-8")
	if withToken {
		req.Header.Set("Authorization", "Bearer "+f.token)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return postResult{}, fmt.Errorf("post event: %w", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var r postResult
	if json.Unmarshal(raw, &r) != nil {
		r = postResult{Error: strings.TrimSpace(string(raw))}
	}
	r.Status = resp.StatusCode
	return r, nil
}

func (f *forwarder) close() { f.client.CloseIdleConnections() }

// xmlEscape escapes s for XML text and attributes.
func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
