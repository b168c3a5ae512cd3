//go:build linux

package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/knockwatch/knockwatch/internal/netns"
)

// Play runs the scenario once and returns what happened. An error means
// the scenario could not be played (a step failed); whether the sensor
// alerted as expected is for Check.
func (l *Lab) Play(ctx context.Context) (*Result, error) {
	c, t := l.cfg, l.topo
	r := &Result{
		Scenario: c.Scenario, Attacker: l.ip(t.Attacker), Client: l.ip(t.Client), Host: l.ip(t.Host), HostName: c.HostName,
		KnockPorts: c.KnockPorts, KnockClient: c.KnockClient, Knockd: l.knockd != nil, OpenPort: c.OpenPort, ScanPorts: c.ScanPorts,
		ServicePort: c.ServicePort, Namespaces: l.Namespaces(), SensorPID: l.sensor.cmd.Process.Pid, Restart: c.Restart,
	}
	err := l.play(ctx, r)
	// Whatever happened, the alerts so far and the sensor's metrics tell
	// the story.
	alerts, _, aerr := l.sensor.snapshot()
	r.Alerts = append(append([]json.RawMessage(nil), l.prevAlerts...), alerts...)
	if err == nil {
		err = aerr
	}
	if r.Clock != nil {
		for _, raw := range r.Alerts {
			if matches(raw, r.Attacker, r.Host, r.OpenPort) {
				r.Clock.Alert = alertClock(raw)
			}
		}
	}
	if r.Metrics == nil && ctx.Err() == nil {
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		m, merr := l.sensor.metrics(mctx)
		cancel()
		if merr == nil {
			r.Metrics = m
		} else if err == nil {
			err = merr
		}
	}
	r.Duration = time.Since(l.started)
	return r, err
}

func (l *Lab) play(ctx context.Context, r *Result) error {
	c, t := l.cfg, l.topo

	// 0. A host whose clock is off: the sensor measures it first.
	if c.HostClockOffset != 0 {
		if err := l.calibrate(ctx, r); err != nil {
			return err
		}
	}

	// 1. The knock, and at the same time the benign client's scan.
	how := "dropped silently by the host's firewall: S0"
	if c.Scenario == ScenarioREJ {
		how = "refused with RST by the host: REJ"
	}
	c.Logf("attacker %v: knocking %s on %v with %s (%s)", l.ip(t.Attacker), portList(c.KnockPorts), l.ip(t.Host), c.KnockClient, how)
	c.Logf("client %v: scanning %s on %v, then using the web service on %d (no host change: no alert expected)",
		l.ip(t.Client), portList(c.ScanPorts), l.ip(t.Host), c.ServicePort)
	scanErr := make(chan error, 1)
	go func() { scanErr <- l.benignScan(ctx) }()
	if err := l.knock(ctx); err != nil {
		<-scanErr
		return err
	}
	r.Knocked = time.Now()
	if err := <-scanErr; err != nil {
		return err
	}
	if c.Restart == RestartAfterKnock {
		// Both knocks flagged and in the evidence log, then the kill.
		if _, err := l.waitFlagged(ctx, 2); err != nil {
			return err
		}
		if err := l.waitMetric(ctx, "the knocks in the evidence log", metricAppended, map[string]string{"kind": "knock"}, 2, 5*time.Second); err != nil {
			return err
		}
		if err := l.restart(ctx, r, RestartAfterKnock, "after the knock (flagged and in its evidence log; the host has not opened the port)"); err != nil {
			return err
		}
	}

	// 2. The host opens the port and forwards its firewall event.
	if l.knockd != nil {
		who, err := l.knockd.waitOpen(ctx, 5*time.Second)
		if err != nil {
			return err
		}
		if who != l.ip(t.Attacker) {
			return fmt.Errorf("knockd opened the port for %v, not for the attacker %v", who, l.ip(t.Attacker))
		}
		c.Logf("host: knockd saw the sequence from %v and ran its command", who)
	}
	if err := l.open(ctx); err != nil {
		return err
	}
	r.Opened = time.Now()
	ev, err := RenderFirewall2004(RuleAdded{
		Computer: c.HostName, Port: c.OpenPort, RuleName: fmt.Sprintf("Remote Management (TCP-In %d)", c.OpenPort),
		Time: l.hostTime(r.Opened), RecordID: uint64(r.Opened.Unix() % 1000000),
	})
	if err != nil {
		return err
	}
	if c.Capture != "" {
		if err := saveEvent(c.Capture+".events.xml", ev); err != nil {
			return err
		}
	}
	res, err := l.fwd.post(ctx, ev, false)
	if err != nil {
		return fmt.Errorf("forward event without token: %w", err)
	}
	r.NoTokenStatus = res.Status
	c.Logf("host: event without the bearer token -> %d %s", res.Status, http.StatusText(res.Status))
	if res, err = l.fwd.post(ctx, ev, true); err != nil {
		return fmt.Errorf("forward event: %w", err)
	}
	r.EventStatus, r.EventsAccepted, r.EventsRejected = res.Status, res.Accepted, res.Rejected
	c.Logf("host: Windows Firewall 2004 \"rule added\" (inbound allow TCP %d, Computer %s) over HTTPS with the token -> %d %s, accepted %d, rejected %d",
		c.OpenPort, c.HostName, res.Status, http.StatusText(res.Status), res.Accepted, res.Rejected)
	if res.Status != http.StatusAccepted || res.Accepted < 1 {
		return fmt.Errorf("forward event: the sensor answered %d (accepted %d, rejected %d): %s",
			res.Status, res.Accepted, res.Rejected, res.Error)
	}
	if c.Restart == RestartAfterEvent {
		if err := l.restart(ctx, r, RestartAfterEvent, "right after it acknowledged the event (202)"); err != nil {
			return err
		}
	}

	// The sensor flags a knock once its touches are decided: at once for
	// RSTs, after the S0 timeout for unanswered SYNs; it watches the
	// handshakes of flagged sources only. A sensor killed before keeps
	// its flags in the pinned maps (its counters start again at 0).
	if want := 2 - int(l.flaggedBefore); want > 0 {
		if n, err := l.waitFlagged(ctx, want); err != nil {
			return err
		} else if n >= 0 {
			c.Logf("sensor: %d of 2 knock sequences flagged (the attacker's knock and the client's scan)", n+int(l.flaggedBefore))
		}
	}

	// 3. The attacker's first handshake to the new port.
	conn, err := t.Attacker.NS.Dial(ctx, &net.Dialer{Timeout: 3 * time.Second}, "tcp", netip.AddrPortFrom(l.ip(t.Host), c.OpenPort).String())
	if err != nil {
		return fmt.Errorf("attacker connect to %v:%d: %w", l.ip(t.Host), c.OpenPort, err)
	}
	r.Connected = time.Now()
	l.track(conn)
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	banner := make([]byte, 64)
	n, _ := conn.Read(banner)
	c.Logf("attacker %v: connected to %v:%d (%q)", l.ip(t.Attacker), l.ip(t.Host), c.OpenPort, strings.TrimSpace(string(banner[:n])))
	if c.Restart == RestartAfterHandshake {
		if err := l.waitMetric(ctx, "the handshake in the evidence log", metricAppended, map[string]string{"kind": "handshake"}, 1, 5*time.Second); err != nil {
			return err
		}
		if err := l.waitMetric(ctx, "the alert made and held in memory", metricQueued, nil, 1, 5*time.Second); err != nil {
			return err
		}
		if err := l.restart(ctx, r, RestartAfterHandshake, "after the handshake, with the alert made but not yet written"); err != nil {
			return err
		}
	}

	// The alert, then a grace period for anything unexpected.
	if err := l.waitAlert(ctx, r); err != nil {
		return err
	}
	if c.Restart == RestartAfterAlert {
		if err := l.waitMetric(ctx, "the alert in the ledger", metricLedger, nil, 1, 5*time.Second); err != nil {
			return err
		}
		if err := l.restart(ctx, r, RestartAfterAlert, "after the alert was written"); err != nil {
			return err
		}
		// The rebuild makes the same alert again; the ledger holds it back.
		if err := l.waitMetric(ctx, "the rebuilt alert recognised as sent", metricAlreadySent, nil, 1, 5*time.Second); err != nil {
			return err
		}
		c.Logf("sensor: the rebuilt engine made the same alert again; the ledger recognised it as already sent")
		if err := sleep(ctx, c.Grace); err != nil {
			return err
		}
	}
	if c.OneWayPort {
		if err := l.playOneWay(ctx, r); err != nil {
			return err
		}
	}
	m, err := l.sensor.metrics(ctx)
	r.Metrics = m
	return err
}

// knock sends the attacker's knock sequence.
func (l *Lab) knock(ctx context.Context) error {
	c, t := l.cfg, l.topo
	if c.KnockClient == "knock" {
		bin, err := lookKnock()
		if err != nil {
			return err
		}
		family := "-4"
		if c.IPv6 {
			family = "-6"
		}
		args := []string{family, "-d", "200", l.ip(t.Host).String()}
		for _, p := range c.KnockPorts {
			args = append(args, strconv.Itoa(int(p)))
		}
		if err := t.Attacker.NS.Run(ctx, bin, args...); err != nil {
			return fmt.Errorf("knock: %w", err)
		}
		return nil
	}
	for i, p := range c.KnockPorts {
		if i > 0 {
			if err := sleep(ctx, 200*time.Millisecond); err != nil {
				return err
			}
		}
		if err := l.touchClosed(ctx, t.Attacker, p); err != nil {
			return fmt.Errorf("knock: %w", err)
		}
	}
	return nil
}

// benignScan touches the client's scan ports, then uses the service.
func (l *Lab) benignScan(ctx context.Context) error {
	c, t := l.cfg, l.topo
	for _, p := range c.ScanPorts {
		if err := l.touchClosed(ctx, t.Client, p); err != nil {
			return fmt.Errorf("client scan: %w", err)
		}
	}
	conn, err := t.Client.NS.Dial(ctx, &net.Dialer{Timeout: 3 * time.Second}, "tcp", netip.AddrPortFrom(l.ip(t.Host), c.ServicePort).String())
	if err != nil {
		return fmt.Errorf("client use of the web service %v:%d: %w", l.ip(t.Host), c.ServicePort, err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, 1024))
	return nil
}

// touchClosed sends one SYN to a closed port of the host and checks that
// the host treats it as the scenario says.
func (l *Lab) touchClosed(ctx context.Context, from netns.Endpoint, port uint16) error {
	addr := netip.AddrPortFrom(l.ip(l.topo.Host), port).String()
	if l.cfg.Scenario == ScenarioREJ {
		conn, err := from.NS.Dial(ctx, &net.Dialer{Timeout: 2 * time.Second}, "tcp", addr)
		if err == nil {
			conn.Close()
			return fmt.Errorf("port %d is open on the host; the lab needs it closed", port)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("dial %s: %w (want connection refused)", addr, err)
		}
		return nil
	}
	// S0: one SYN, no retransmission; the dial gives up first.
	conn, err := from.NS.Dial(ctx, &net.Dialer{Timeout: 300 * time.Millisecond}, "tcp", addr)
	if err == nil {
		conn.Close()
		return fmt.Errorf("port %d is open on the host; the lab needs it closed", port)
	}
	var ne net.Error
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !errors.As(err, &ne) || !ne.Timeout() {
		return fmt.Errorf("dial %s: %w (want a timeout: the host drops it)", addr, err)
	}
	return nil
}

// open makes the host listen on OpenPort and, for S0, allows it in the
// host's firewall: what `netsh advfirewall firewall add rule` and a
// backdoor's listener do on Windows.
func (l *Lab) open(ctx context.Context) error {
	c := l.cfg
	if err := l.serve(ctx, c.OpenPort, "SSH-2.0-OpenSSH_for_Windows_9.5\r\n", false); err != nil {
		return fmt.Errorf("open host port: %w", err)
	}
	if c.Scenario == ScenarioS0 && l.knockd == nil {
		if err := l.topo.Host.NS.Nft(ctx, fmt.Sprintf("add element inet %s allowed { %d }\n", nftTable, c.OpenPort)); err != nil {
			return fmt.Errorf("open host port: %w", err)
		}
	}
	switch {
	case l.knockd != nil && c.Scenario == ScenarioS0:
		c.Logf("host %s: listening on %d, allowed in its firewall by knockd's command", c.HostName, c.OpenPort)
	case c.Scenario == ScenarioS0:
		c.Logf("host %s: rule added to its firewall, listening on %d", c.HostName, c.OpenPort)
	default:
		c.Logf("host %s: listening on %d", c.HostName, c.OpenPort)
	}
	return nil
}

// waitFlagged waits until the sensor's metrics show want flagged knocks
// and returns the count, or -1 when the metrics do not carry it (then it
// waits the S0 timeout and a sweep instead).
func (l *Lab) waitFlagged(ctx context.Context, want int) (int, error) {
	deadline := time.Now().Add(8 * time.Second)
	for {
		m, err := l.sensor.metrics(ctx)
		if err != nil {
			return 0, err
		}
		n, ok := flaggedKnocks(m)
		if !ok {
			return -1, sleep(ctx, 3500*time.Millisecond)
		}
		if int(n) >= want || time.Now().After(deadline) {
			return int(n), nil
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// waitAlert waits for the attacker's alert, then for the grace period.
func (l *Lab) waitAlert(ctx context.Context, r *Result) error {
	deadline := time.After(l.cfg.AlertTimeout)
	for {
		alerts, next, err := l.sensor.snapshot()
		if err != nil {
			return err
		}
		alerts = append(append([]json.RawMessage(nil), l.prevAlerts...), alerts...)
		for _, a := range alerts {
			if matches(a, r.Attacker, r.Host, r.OpenPort) {
				r.Alerted = time.Now()
				return sleep(ctx, l.cfg.Grace)
			}
		}
		select {
		case <-next:
		case <-l.sensor.exited:
			return fmt.Errorf("sensor exited while the lab waited for the alert (%v)%s", l.sensor.exitErr, l.logHint())
		case <-deadline:
			return fmt.Errorf("no alert for %v -> %v:%d within %v of the handshake%s",
				r.Attacker, r.Host, r.OpenPort, l.cfg.AlertTimeout, l.logHint())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func lookKnock() (string, error) {
	p, err := exec.LookPath("knock")
	if err != nil {
		return "", fmt.Errorf("find knock client: %w (apt-get install knockd, or use --knock-client go)", err)
	}
	return p, nil
}

func portList(ps []uint16) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
