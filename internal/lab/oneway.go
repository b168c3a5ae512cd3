//go:build linux

package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/knockwatch/knockwatch/internal/netns"
)

// The one-way port (Config.OneWayPort): a second server, a file server,
// whose switch port is mirrored to a second capture interface in one
// direction only, as through a tap whose other port was never attached.
// The benign client uses its shares; the sensor must report the interface
// within a minute, and hold the knocks every such client seems to make.

// OneWayWithin is how soon the sensor must report the one-way interface.
const OneWayWithin = time.Minute

// fileServerPorts are the file server's services the client uses (SMB,
// NetBIOS session, RDP): three ports, so seen one way every client looks
// like a knocker.
var fileServerPorts = []uint16{445, 139, 3389}

// OneWayResult is what the one-way phase saw.
type OneWayResult struct {
	Interface string `json:"interface"`
	Server    string `json:"server"`
	// Reported is how long after the client's first connection
	// /v1/coverage named the interface one way (0: never).
	Reported time.Duration `json:"reported_ns"`
	// Connections the client made meanwhile.
	Connections int `json:"connections"`
	// KnocksHeld is knockwatch_coverage_knocks_held_total at the end: the
	// client's seeming knocks held, not alerted.
	KnocksHeld float64 `json:"knocks_held"`
	// Coverage is `knockwatch coverage --format json` as the lab ran it in
	// the sensor's namespace; Table what it printed without --format.
	Coverage json.RawMessage `json:"coverage"`
	Table    string          `json:"table"`
}

// OneWayPorts are the file server's ports the client used on the one-way
// path (none without it).
func (r *Result) OneWayPorts() []uint16 {
	if r.OneWay == nil {
		return nil
	}
	return fileServerPorts
}

// fileServerName is the file server's name in the inventory.
const fileServerName = "WIN-FS01.corp.example"

// startFileServer serves the file server's ports (accept, answer, close).
func (l *Lab) startFileServer(ctx context.Context) error {
	for _, p := range fileServerPorts {
		ln, err := l.topo.Files.NS.Listen(ctx, "tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			return fmt.Errorf("listen on file server port %d: %w", p, err)
		}
		l.mu.Lock()
		l.listeners = append(l.listeners, ln)
		l.mu.Unlock()
		l.bg.Add(1)
		go func() {
			defer l.bg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_ = c.SetDeadline(time.Now().Add(2 * time.Second))
				buf := make([]byte, 256)
				_, _ = c.Read(buf)
				_, _ = c.Write([]byte("\x00\x00\x00\x10SMB negotiate ok"))
				c.Close()
			}
		}()
	}
	return nil
}

// coverageDoc is the part of /v1/coverage the lab reads.
type coverageDoc struct {
	Interfaces []struct {
		Name  string `json:"name"`
		State string `json:"state"`
		By    string `json:"by"`
	} `json:"interfaces"`
	Findings []struct {
		Kind      string `json:"kind"`
		Interface string `json:"interface"`
		Host      string `json:"host"`
	} `json:"findings"`
	Hosts []struct {
		Host  string   `json:"host"`
		IPs   []string `json:"ips"`
		State string   `json:"state"`
	} `json:"hosts"`
}

func (d *coverageDoc) ifaceState(name string) string {
	for _, p := range d.Interfaces {
		if p.Name == name {
			return p.State
		}
	}
	return ""
}

// playOneWay has the client use the file server until the sensor reports
// the one-way interface (at most OneWayWithin), then asks `knockwatch
// coverage` what it sees.
func (l *Lab) playOneWay(ctx context.Context, r *Result) error {
	c, t := l.cfg, l.topo
	ow := &OneWayResult{Interface: netns.OneWayCaptureIface, Server: l.ip(t.Files).String()}
	r.OneWay = ow
	c.Logf("client %v: uses the file server %v (%s) on %s; %s mirrors only what the server receives (a tap whose other port is missing)",
		l.ip(t.Client), l.ip(t.Files), fileServerName, portList(fileServerPorts), ow.Interface)
	start := time.Now()
	stop := make(chan struct{})
	done := make(chan int, 1)
	go func() {
		n := 0
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				done <- n
				return
			case <-ctx.Done():
				done <- n
				return
			case <-tick.C:
			}
			port := fileServerPorts[n%len(fileServerPorts)]
			conn, err := t.Client.NS.Dial(ctx, &net.Dialer{Timeout: 2 * time.Second}, "tcp",
				netip.AddrPortFrom(l.ip(t.Files), port).String())
			n++
			if err != nil {
				continue
			}
			_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
			_, _ = conn.Write([]byte("\x00\x00\x00\x2fSMB negotiate"))
			_, _ = io.Copy(io.Discard, io.LimitReader(conn, 256))
			conn.Close()
		}
	}()
	var err error
	for {
		var doc coverageDoc
		if doc, err = l.sensor.coverage(ctx); err == nil && doc.ifaceState(ow.Interface) == "one_way" {
			ow.Reported = time.Since(start)
			c.Logf("sensor: /v1/coverage reports %s one way after %v", ow.Interface, ow.Reported.Round(100*time.Millisecond))
			break
		}
		if time.Since(start) > OneWayWithin+10*time.Second || ctx.Err() != nil {
			if err == nil {
				err = fmt.Errorf("the sensor did not report %s one way within %v", ow.Interface, OneWayWithin)
			}
			break
		}
		if serr := sleep(ctx, time.Second); serr != nil {
			err = serr
			break
		}
	}
	close(stop)
	ow.Connections = <-done
	if err != nil {
		return err
	}
	// Once the client stops, its SYNs time out unanswered (S0: a new SYN
	// to a port kept them pending) and it seems to have knocked three
	// ports: the knock is held, not handed to the engine.
	if err := l.waitMetric(ctx, "the client's seeming knock on the one-way path held", "knockwatch_coverage_knocks_held_total", nil, 1, 35*time.Second); err != nil {
		return err
	}
	if m, merr := l.sensor.metrics(ctx); merr == nil {
		ow.KnocksHeld, _ = m.Sum("knockwatch_coverage_knocks_held_total", nil)
	}
	// What an operator runs: knockwatch coverage, in the sensor's namespace.
	addr := "--addr=" + MetricsAddr
	out, err := t.Sensor.Command(ctx, c.Binary, "coverage", addr, "--format", "json").Output()
	if err != nil {
		return fmt.Errorf("knockwatch coverage --format json: %w", err)
	}
	ow.Coverage = json.RawMessage(out)
	table, err := t.Sensor.Command(ctx, c.Binary, "coverage", addr).Output()
	if err != nil {
		return fmt.Errorf("knockwatch coverage: %w", err)
	}
	ow.Table = string(table)
	for _, line := range strings.Split(strings.TrimRight(ow.Table, "\n"), "\n") {
		c.Logf("coverage | %s", line)
	}
	return nil
}

// coverage reads the sensor's /v1/coverage.
func (s *sensor) coverage(ctx context.Context) (coverageDoc, error) {
	var d coverageDoc
	err := s.coverageInto(ctx, &d)
	return d, err
}

// coverageInto decodes the sensor's /v1/coverage into v.
func (s *sensor) coverageInto(ctx context.Context, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(s.metricsURL, "/metrics")+"/v1/coverage", nil)
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("read /v1/coverage: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("read /v1/coverage: %s", resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(v); err != nil {
		return fmt.Errorf("read /v1/coverage: %w", err)
	}
	return nil
}

// checkOneWay: the one-way interface was reported within OneWayWithin,
// nothing else was called one way, and the client's seeming knocks were
// held.
func (o *OneWayResult) check() []error {
	var errs []error
	if o.Reported <= 0 || o.Reported > OneWayWithin {
		errs = append(errs, fmt.Errorf("one-way interface %s reported after %v, want within %v", o.Interface, o.Reported, OneWayWithin))
	}
	var d coverageDoc
	if err := json.Unmarshal(o.Coverage, &d); err != nil {
		return append(errs, fmt.Errorf("knockwatch coverage --format json: %w", err))
	}
	if st := d.ifaceState(o.Interface); st != "one_way" {
		errs = append(errs, fmt.Errorf("knockwatch coverage: %s is %q, want one_way", o.Interface, st))
	}
	if st := d.ifaceState(netns.CaptureIface); st == "one_way" || st == "answers_only" {
		errs = append(errs, fmt.Errorf("knockwatch coverage: %s (both directions) is %q", netns.CaptureIface, st))
	}
	found := false
	for _, f := range d.Findings {
		found = found || (f.Kind == "one_way" && f.Interface == o.Interface)
	}
	if !found {
		errs = append(errs, fmt.Errorf("knockwatch coverage: no one_way finding for %s", o.Interface))
	}
	if !strings.Contains(o.Table, "one_way  capture interface "+o.Interface) {
		errs = append(errs, fmt.Errorf("knockwatch coverage table lacks the one_way finding for %s", o.Interface))
	}
	if o.KnocksHeld < 1 {
		errs = append(errs, fmt.Errorf("no knock held on the one-way path (the client's seeming knocks reached the engine)"))
	}
	return errs
}
