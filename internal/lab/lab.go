//go:build linux

// Package lab is `knockwatch lab`: the whole AN0842 story played with real
// TCP stacks in network namespaces against the real `knockwatch run`.
//
// Start builds the network (internal/netns: an attacker, a benign client
// and a Windows host on a switch whose host port is mirrored to the
// sensor's capture interface, plus a management link from the host to the
// sensor), writes the sensor's files (token, TLS certificate, host
// inventory) and starts `knockwatch run` inside the sensor namespace in
// native XDP mode, with an HTTPS event listener on the management link, its
// alerts on standard output and its metrics on loopback. Play then runs
// the scenario:
//
//  1. the attacker knocks three closed ports of the host (S0: the host's
//     nftables drops SYNs to closed ports silently, as Windows Firewall
//     does; REJ: the host answers them with RSTs), with Debian's `knock`
//     client when installed; meanwhile the benign client scans a few closed
//     ports and then uses the host's web service, which was open all along;
//  2. the host opens the port: Debian's knockd on the host (when installed)
//     sees the sequence before the firewall and runs the nft command that
//     allows the port, as a port-knocking backdoor does (without knockd the
//     lab adds the rule itself); the host listens on the port and forwards
//     the matching Windows Firewall 2004 "rule added" event (Event XML, as
//     WEF delivers it) over HTTPS to the sensor with its bearer token (a
//     first attempt without the token shows the listener refusing it);
//  3. once the sensor has flagged the knock (after the S0 timeout for
//     unanswered SYNs), the attacker completes a TCP handshake to the new
//     port.
//
// The sensor should raise exactly one alert: high confidence, the attacker
// to the host's new port; none for the client. Close stops the sensor with
// SIGTERM (it detaches its XDP program) and removes every namespace, and
// with them every link, address, qdisc and nftables table.
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/knockwatch/knockwatch/internal/netns"
)

// Scenarios: how the host treats SYNs to closed ports.
const (
	// ScenarioS0: dropped silently (Windows Firewall's default), the
	// knocks are S0 touches.
	ScenarioS0 = "s0"
	// ScenarioREJ: answered with RST, the knocks are REJ touches.
	ScenarioREJ = "rej"
)

// Addresses of the management link between the host and the sensor, and
// the sensor's listeners.
var (
	mgmtHost   = netip.MustParsePrefix("10.203.9.1/24")
	mgmtSensor = netip.MustParsePrefix("10.203.9.2/24")
)

const (
	mgmtIface  = "mgmt0"
	eventsPort = 5986 // WinRM over HTTPS, where WEF sources talk to their collector
	// MetricsAddr is where the sensor serves /metrics inside its
	// namespace.
	MetricsAddr = "127.0.0.1:9842"
	nftTable    = "kwlab"
)

// Lab is a running lab: the topology, the sensor and the host's service.
type Lab struct {
	cfg     Config
	env     *netns.Env
	topo    *netns.Topology
	dir     string
	token   string
	pki     *labPKI
	sensor  *sensor
	args    []string // the sensor's arguments (a restart uses them again)
	bpfDir  string   // bpffs mounted for --pin-path (with Restart)
	knockd  *knockDaemon
	fwd     *forwarder
	caps    []*capture
	started time.Time

	// prevAlerts are the alerts of sensors killed by a restart;
	// flaggedBefore the knocks they had flagged.
	prevAlerts    []json.RawMessage
	flaggedBefore float64

	mu        sync.Mutex
	listeners []net.Listener
	conns     []net.Conn
	bg        sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// Start builds the topology and starts the sensor. On error everything it
// made is removed again.
func Start(ctx context.Context, cfg Config) (l *Lab, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, fmt.Errorf("start lab: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("start lab: needs root (network namespaces, XDP, nftables): run it with sudo")
	}
	if err := checkTools(cfg); err != nil {
		return nil, fmt.Errorf("start lab: %w", err)
	}
	l = &Lab{cfg: cfg, started: time.Now()}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
			l = nil
		}
	}()
	if l.env, err = netns.NewEnv("kwlab"); err != nil {
		return l, fmt.Errorf("start lab: %w", err)
	}
	if l.topo, err = l.env.NewTopology(netns.TopologyConfig{Tap: cfg.Tap, OneWay: cfg.OneWayPort}); err != nil {
		return l, fmt.Errorf("start lab: %w", err)
	}
	t := l.topo
	mirror := "span port: both directions of the host's port to " + t.CaptureIface
	if cfg.Tap {
		mirror = "tap: the host's two directions to " + strings.Join(t.CaptureIfaces, " and ")
	}
	if cfg.OneWayPort {
		mirror += fmt.Sprintf("; file server %v: only what it receives to %s", l.ip(t.Files), netns.OneWayCaptureIface)
	}
	cfg.Logf("network: attacker %v, client %v, host %v (%s) on a switch; %s in the sensor namespace",
		l.ip(t.Attacker), l.ip(t.Client), l.ip(t.Host), cfg.HostName, mirror)
	if cfg.Capture != "" {
		l.caps, err = startCapture(ctx, t, cfg.Capture, cfg.Tap)
		if err != nil {
			return l, fmt.Errorf("start lab: %w", err)
		}
		_ = os.Remove(cfg.Capture + ".events.xml")
		cfg.Logf("capture: tcpdump on the span port -> %s (events -> %s.events.xml)", cfg.Capture, cfg.Capture)
	}
	if err = l.mgmtLink(); err != nil {
		return l, fmt.Errorf("start lab: %w", err)
	}
	if err = l.writeFiles(); err != nil {
		return l, fmt.Errorf("start lab: %w", err)
	}
	if err = l.hostBaseline(ctx); err != nil {
		return l, fmt.Errorf("start lab: %w", err)
	}
	if cfg.Knockd == "on" {
		if l.knockd, err = startKnockd(ctx, t.Host.NS, l.dir, cfg); err != nil {
			return l, fmt.Errorf("start lab: %w", err)
		}
		cfg.Logf("host: knockd listens on %s for %s; on it: %s", netns.EndpointIface, portList(cfg.KnockPorts), l.knockd.command)
	}
	eventsAddr := netip.AddrPortFrom(mgmtSensor.Addr(), eventsPort).String()
	args := []string{"run"}
	for _, ifc := range t.CaptureIfaces {
		args = append(args, "--iface", ifc)
	}
	args = append(args,
		"--xdp-mode", "native",
		"--events-http", eventsAddr,
		"--token-file", filepath.Join(l.dir, "token"),
		"--tls-cert", l.pki.certFile,
		"--tls-key", l.pki.keyFile,
		"--hosts", filepath.Join(l.dir, "hosts"),
		"--alerts", "-",
		"--metrics", MetricsAddr,
		"--log-level", "info",
		// The lab's own: never the machine's /var/lib/knockwatch.
		"--state-dir", filepath.Join(l.dir, "state"),
	)
	if cfg.Restart != "" {
		if err = l.mountPins(); err != nil {
			return l, fmt.Errorf("start lab: %w", err)
		}
		args = append(args, "--pin-path", filepath.Join(l.bpfDir, "knockwatch"))
	}
	if cfg.HostClockOffset != 0 {
		// A measurement in seconds rather than minutes.
		args = append(args, "--set", "coverage.sample_interval="+clockSampleInterval)
	}
	args = append(args, cfg.SensorArgs...)
	l.args = args
	first := args
	if cfg.Restart == RestartAfterHandshake {
		// Hold the alert in memory, where the kill after the handshake
		// loses it; the restarted sensor runs without this.
		first = append(append([]string(nil), args...), "--set", holdAlertsInMemory)
	}
	cfg.Logf("sensor: %s %s", filepath.Base(cfg.Binary), strings.Join(first, " "))
	if l.sensor, err = startSensor(t.Sensor, cfg.Binary, first, MetricsAddr, cfg.OnAlert, cfg.SensorLog); err != nil {
		return l, fmt.Errorf("start lab: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err = l.sensor.waitReady(rctx); err != nil {
		return l, fmt.Errorf("start lab: %w%s", err, l.logHint())
	}
	l.fwd = newForwarder(t.Host.NS, "https://"+eventsAddr+"/v1/events", l.token, l.pki.roots)
	cfg.Logf("sensor: ready (XDP native on %s, events https://%s/v1/events with a bearer token, metrics http://%s/metrics)",
		strings.Join(t.CaptureIfaces, " and "), eventsAddr, MetricsAddr)
	return l, nil
}

// checkTools finds the programs the lab runs, so that a missing one is one
// clear line before anything is built.
func checkTools(cfg Config) error {
	tools := []struct{ name, pkg, why string }{{"ip", "iproute2", "the sensor runs in its namespace with ip netns exec"}}
	if cfg.Scenario == ScenarioS0 {
		tools = append(tools, struct{ name, pkg, why string }{"nft", "nftables", "the S0 host drops the knocks with nftables; --rej needs none"})
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t.name); err != nil {
			return fmt.Errorf("find %s: %w (%s); apt-get install %s", t.name, err, t.why, t.pkg)
		}
	}
	return nil
}

// logHint returns the sensor's last log lines for an error message.
func (l *Lab) logHint() string {
	if l.sensor == nil {
		return ""
	}
	lines := l.sensor.logs.last(15)
	if len(lines) == 0 {
		return ""
	}
	return "\nlast sensor log lines:\n  " + strings.Join(lines, "\n  ")
}

// SensorLog returns the sensor's last n log lines.
func (l *Lab) SensorLog(n int) []string {
	if l.sensor == nil {
		return nil
	}
	return l.sensor.logs.last(n)
}

// Namespaces returns the names of the lab's namespaces.
func (l *Lab) Namespaces() []string {
	if l.env == nil {
		return nil
	}
	var out []string
	for _, n := range l.env.Namespaces() {
		out = append(out, n.Name)
	}
	return out
}

// Leftovers returns the lab's namespaces that still exist (after Close:
// none, or something went wrong).
func (l *Lab) Leftovers() []string {
	var left []string
	for _, name := range l.Namespaces() {
		if _, err := os.Stat(filepath.Join(netns.RunDir, name)); err == nil {
			left = append(left, name)
		}
	}
	return left
}

// ip returns the endpoint's address in the scenario's family.
func (l *Lab) ip(ep netns.Endpoint) netip.Addr {
	if l.cfg.IPv6 {
		return ep.IP6
	}
	return ep.IP
}

// Topology returns the lab's network.
func (l *Lab) Topology() *netns.Topology { return l.topo }

// Close stops the sensor (SIGTERM: it detaches and flushes), closes the
// host's sockets and removes the namespaces and the lab's files. It is
// safe to call more than once.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		var errs []error
		if l.fwd != nil {
			l.fwd.close()
		}
		if l.sensor != nil {
			if err := l.sensor.stop(15 * time.Second); err != nil {
				errs = append(errs, fmt.Errorf("%w%s", err, l.logHint()))
			}
		}
		if l.knockd != nil {
			if err := l.knockd.stop(); err != nil {
				errs = append(errs, err)
			}
		}
		for _, c := range l.caps {
			if err := c.stop(); err != nil {
				errs = append(errs, err)
			}
		}
		l.mu.Lock()
		for _, ln := range l.listeners {
			ln.Close()
		}
		for _, c := range l.conns {
			c.Close()
		}
		l.mu.Unlock()
		l.bg.Wait()
		if l.env != nil {
			if err := l.env.Close(); err != nil {
				errs = append(errs, fmt.Errorf("remove lab namespaces: %w", err))
			}
		}
		if err := l.unmountPins(); err != nil {
			errs = append(errs, err)
		}
		if l.dir != "" {
			if err := os.RemoveAll(l.dir); err != nil {
				errs = append(errs, fmt.Errorf("remove lab directory: %w", err))
			}
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}
