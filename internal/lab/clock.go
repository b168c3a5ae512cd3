//go:build linux

package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/knockwatch/knockwatch/internal/netns"
)

// The host's clock off the sensor's (Config.HostClockOffset): the host
// stamps its events with its own clock, and audits its inbound
// connections (Security 5156, as "Filtering Platform Connection" auditing
// writes them), which the sensor measures the offset from
// (docs/COVERAGE.md). The knock must still alert high, corrected.

// ClockResult is what the host-clock phase saw.
type ClockResult struct {
	// Offset is the host's clock minus the real time, as configured.
	Offset time.Duration `json:"offset_ns"`
	// Connections the client and the attacker made to the host's web
	// service before the attack, each logged by the host as a 5156.
	Connections int `json:"connections"`
	// Measured is the offset /v1/coverage reported for the host (seconds),
	// after MeasuredAfter.
	Measured      float64       `json:"measured_seconds"`
	MeasuredAfter time.Duration `json:"measured_after_ns"`
	// Alert is the attacker's alert's knockwatch.clock.
	Alert map[string]any `json:"alert_clock"`
}

// clockSampleInterval is the sample interval the lab gives the sensor, so
// that a measurement takes seconds, not minutes.
const clockSampleInterval = "500ms"

// hostTime is a real time on the host's clock.
func (l *Lab) hostTime(t time.Time) time.Time { return t.Add(l.cfg.HostClockOffset) }

// calibrate has the client and the attacker use the host's web service a
// few times before the attack, the host forwarding a 5156 for each, until
// the sensor reports the host's clock measured.
func (l *Lab) calibrate(ctx context.Context, r *Result) error {
	c, t := l.cfg, l.topo
	cr := &ClockResult{Offset: c.HostClockOffset}
	r.Clock = cr
	c.Logf("host %s: its clock is %v off; it audits inbound connections (5156); the client and the attacker use its web service on %d",
		c.HostName, c.HostClockOffset, c.ServicePort)
	start := time.Now()
	record := uint64(start.Unix()%1000000) * 100
	peers := []netns.Endpoint{t.Client, t.Attacker}
	for i := 0; time.Since(start) < 45*time.Second; i++ {
		if i > 0 && i%4 == 0 {
			if d, off, ok := l.hostClock(ctx); ok {
				cr.Measured, cr.MeasuredAfter = off, time.Since(start)
				c.Logf("sensor: /v1/coverage measures %s's clock at %+.3f s (%s) after %v, from %d connections",
					c.HostName, off, d, cr.MeasuredAfter.Round(100*time.Millisecond), cr.Connections)
				return nil
			}
		}
		from := peers[i%len(peers)]
		syn := time.Now()
		conn, err := from.NS.Dial(ctx, &net.Dialer{Timeout: 3 * time.Second}, "tcp", netip.AddrPortFrom(l.ip(t.Host), c.ServicePort).String())
		if err != nil {
			return fmt.Errorf("calibration connect to %v:%d: %w", l.ip(t.Host), c.ServicePort, err)
		}
		local := netip.MustParseAddrPort(conn.LocalAddr().String())
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _ = io.Copy(io.Discard, io.LimitReader(conn, 1024))
		conn.Close()
		cr.Connections++
		record++
		ev := render5156(c.HostName, l.hostTime(syn), record, l.ip(t.Host), c.ServicePort, local.Addr().Unmap(), local.Port())
		res, err := l.fwd.post(ctx, ev, true)
		if err != nil {
			return fmt.Errorf("forward 5156: %w", err)
		}
		if res.Status != 202 {
			return fmt.Errorf("forward 5156: the sensor answered %d: %s", res.Status, res.Error)
		}
		if err := sleep(ctx, 300*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("the sensor did not measure %s's clock within 45 s (%d connections)", c.HostName, cr.Connections)
}

// hostClock reads the lab host's measured clock from /v1/coverage.
func (l *Lab) hostClock(ctx context.Context) (state string, offset float64, ok bool) {
	var doc struct {
		Hosts []struct {
			Host  string `json:"host"`
			Clock struct {
				State  string   `json:"state"`
				Offset *float64 `json:"offset_seconds"`
			} `json:"clock"`
		} `json:"hosts"`
	}
	if err := l.sensor.coverageInto(ctx, &doc); err != nil {
		return "", 0, false
	}
	for _, h := range doc.Hosts {
		if strings.EqualFold(h.Host, l.cfg.HostName) && h.Clock.State == "measured" && h.Clock.Offset != nil {
			return "measured", *h.Clock.Offset, true
		}
	}
	return "", 0, false
}

// render5156 is the Security 5156 the host writes for an inbound TCP
// connection (Windows 10: Source is the local side for inbound).
func render5156(computer string, at time.Time, record uint64, local netip.Addr, lport uint16, remote netip.Addr, rport uint16) []byte {
	return []byte(fmt.Sprintf(`<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><Provider Name="Microsoft-Windows-Security-Auditing" Guid="{54849625-5478-4994-a5ba-3e3b0328c30d}"/><EventID>5156</EventID><Version>1</Version><Level>0</Level><Task>12810</Task><Opcode>0</Opcode><Keywords>0x8020000000000000</Keywords><TimeCreated SystemTime="%s"/><EventRecordID>%d</EventRecordID><Correlation/><Execution ProcessID="4" ThreadID="6412"/><Channel>Security</Channel><Computer>%s</Computer><Security/></System><EventData><Data Name="ProcessID">4</Data><Data Name="Application">System</Data><Data Name="Direction">%%%%14592</Data><Data Name="SourceAddress">%s</Data><Data Name="SourcePort">%d</Data><Data Name="DestAddress">%s</Data><Data Name="DestPort">%d</Data><Data Name="Protocol">6</Data><Data Name="FilterRTID">67281</Data><Data Name="LayerName">%%%%14610</Data><Data Name="LayerRTID">44</Data><Data Name="RemoteUserID">S-1-0-0</Data><Data Name="RemoteMachineID">S-1-0-0</Data></EventData></Event>`,
		at.UTC().Format("2006-01-02T15:04:05.0000000Z"), record, xmlEscape(computer), local, lport, remote, rport))
}

// check: the clock was measured within a second of the offset, and the
// attacker's alert says it was applied.
func (c *ClockResult) check() []error {
	var errs []error
	want := c.Offset.Seconds()
	if math.Abs(c.Measured-want) > 1 {
		errs = append(errs, fmt.Errorf("host clock measured %+.3f s, want %+.3f s within 1 s", c.Measured, want))
	}
	off, _ := c.Alert["offset"].(float64)
	if c.Alert == nil || c.Alert["applied"] != true || math.Abs(off-want) > 1 {
		errs = append(errs, fmt.Errorf("the attacker's alert knockwatch.clock %v: want applied with offset %+.1f s", c.Alert, want))
	}
	return errs
}

// alertClock returns knockwatch.clock of an alert.
func alertClock(raw json.RawMessage) map[string]any {
	var a struct {
		Knockwatch struct {
			Clock map[string]any `json:"clock"`
		} `json:"knockwatch"`
	}
	if json.Unmarshal(raw, &a) != nil {
		return nil
	}
	return a.Knockwatch.Clock
}
