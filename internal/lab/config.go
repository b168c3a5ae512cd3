//go:build linux

package lab

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"
)

// Config sets up a lab. The zero value of a field means its default.
type Config struct {
	// Binary is the knockwatch executable run as the sensor (default: this
	// process's own executable).
	Binary string
	// Scenario is ScenarioS0 (default) or ScenarioREJ.
	Scenario string
	// KnockPorts are the closed ports the attacker knocks (default 7000,
	// 8000, 9000); OpenPort is the port the host then opens (default 4444).
	KnockPorts []uint16
	OpenPort   uint16
	// ScanPorts are the closed ports the benign client scans (default 21,
	// 23, 135, 445); ServicePort is the host's web service, open all along,
	// that the client then uses (default 80).
	ScanPorts   []uint16
	ServicePort uint16
	// HostName is the Windows host's name in its events and in the
	// sensor's inventory (default WIN-LAB01.corp.example).
	HostName string
	// KnockClient is "auto" (default: Debian's knock when installed, else
	// Go dials), "knock" or "go".
	KnockClient string
	// IPv6 plays the scenario over IPv6 (the host's inventory and events
	// carry both addresses either way).
	IPv6 bool
	// Tap mirrors the host's link the way a passive tap does: what the host
	// receives to cap0, what it sends to cap1; the sensor attaches to both.
	// The default is one span port carrying both directions.
	Tap bool
	// OneWayPort adds a file server whose link is mirrored to a second
	// capture interface (cap2) in one direction only; after the scenario
	// the client uses it and the sensor must report cap2 one way within a
	// minute (docs/COVERAGE.md) and hold the client's seeming knocks.
	OneWayPort bool
	// HostClockOffset sets the Windows host's clock this far off the real
	// time (negative: behind): its events carry it. The host audits its
	// inbound connections (5156); before the attack the client and the
	// attacker use its web service, and the sensor must measure the offset
	// and still alert high, corrected (docs/COVERAGE.md).
	HostClockOffset time.Duration
	// Knockd is "auto" (default: Debian's knockd on the host when
	// installed), "on" or "off". With knockd the host's port opens the way
	// a port-knocking backdoor opens it: knockd sees the sequence and runs
	// the firewall command; without it the lab opens the port itself after
	// the knock.
	Knockd string
	// AlertTimeout bounds the wait for the alert after the attacker's
	// handshake (default 10 s); Grace is how long the lab keeps listening
	// for unexpected alerts after the expected one (default 1.5 s).
	AlertTimeout time.Duration
	Grace        time.Duration
	// Logf receives progress lines (nil: none).
	Logf func(format string, args ...any)
	// OnAlert receives each alert as the sensor writes it.
	OnAlert func(json.RawMessage)
	// SensorLog, when set, receives the sensor's log lines as they come;
	// they are kept in any case and shown by Lab.SensorLog.
	SensorLog io.Writer
	// SensorArgs are extra arguments for `knockwatch run`.
	SensorArgs []string
	// Capture, when set, records the mirrored traffic with tcpdump into
	// this pcap file and appends the forwarded Windows event to
	// Capture+".events.xml": a lab run becomes a replay case.
	Capture string
	// Restart, when set (a RestartAfter* point), kills the sensor with
	// SIGKILL at that point of the scenario and starts it again with the
	// same --state-dir and --pin-path (the lab then pins the sensor's maps
	// on a bpffs of its own). The sensor must still raise exactly one
	// alert.
	Restart string
}

func (c *Config) defaults() error {
	if c.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own executable: %w", err)
		}
		c.Binary = exe
	}
	switch c.Scenario {
	case "":
		c.Scenario = ScenarioS0
	case ScenarioS0, ScenarioREJ:
	default:
		return fmt.Errorf("scenario %q: want %s or %s", c.Scenario, ScenarioS0, ScenarioREJ)
	}
	if len(c.KnockPorts) == 0 {
		c.KnockPorts = []uint16{7000, 8000, 9000}
	}
	if c.OpenPort == 0 {
		c.OpenPort = 4444
	}
	if len(c.ScanPorts) == 0 {
		c.ScanPorts = []uint16{21, 135, 445}
	}
	if c.ServicePort == 0 {
		c.ServicePort = 80
	}
	if c.HostName == "" {
		c.HostName = "WIN-LAB01.corp.example"
	}
	switch c.KnockClient {
	case "", "auto":
		c.KnockClient = "go"
		if _, err := lookKnock(); err == nil {
			c.KnockClient = "knock"
		}
	case "knock":
		if _, err := lookKnock(); err != nil {
			return err
		}
	case "go":
	default:
		return fmt.Errorf("knock client %q: want auto, knock or go", c.KnockClient)
	}
	switch c.Knockd {
	case "", "auto":
		c.Knockd = "off"
		if _, err := lookKnockd(); err == nil {
			c.Knockd = "on"
		}
	case "on":
		if _, err := lookKnockd(); err != nil {
			return err
		}
	case "off":
	default:
		return fmt.Errorf("knockd %q: want auto, on or off", c.Knockd)
	}
	if err := checkRestart(c.Restart); err != nil {
		return err
	}
	if c.AlertTimeout <= 0 {
		c.AlertTimeout = 10 * time.Second
	}
	if c.Grace <= 0 {
		c.Grace = 1500 * time.Millisecond
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	used := map[uint16]string{c.OpenPort: "open port", c.ServicePort: "service port"}
	if c.OpenPort == c.ServicePort {
		return fmt.Errorf("open port and service port are both %d", c.OpenPort)
	}
	for _, list := range []struct {
		name  string
		ports []uint16
	}{{"knock port", c.KnockPorts}, {"scan port", c.ScanPorts}} {
		for _, p := range list.ports {
			if p == 0 {
				return fmt.Errorf("%s 0 is not a port", list.name)
			}
			if other, ok := used[p]; ok {
				return fmt.Errorf("%s %d is also the %s", list.name, p, other)
			}
			used[p] = list.name
		}
	}
	return nil
}
