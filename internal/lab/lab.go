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
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
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

// Lab is a running lab: the topology, the sensor and the host's service.
type Lab struct {
	cfg     Config
	env     *netns.Env
	topo    *netns.Topology
	dir     string
	token   string
	pki     *labPKI
	sensor  *sensor
	knockd  *knockDaemon
	fwd     *forwarder
	started time.Time

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
	if l.topo, err = l.env.NewTopology(netns.TopologyConfig{Tap: cfg.Tap}); err != nil {
		return l, fmt.Errorf("start lab: %w", err)
	}
	t := l.topo
	mirror := "span port: both directions of the host's port to " + t.CaptureIface
	if cfg.Tap {
		mirror = "tap: the host's two directions to " + strings.Join(t.CaptureIfaces, " and ")
	}
	cfg.Logf("network: attacker %v, client %v, host %v (%s) on a switch; %s in the sensor namespace",
		l.ip(t.Attacker), l.ip(t.Client), l.ip(t.Host), cfg.HostName, mirror)
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
	)
	args = append(args, cfg.SensorArgs...)
	cfg.Logf("sensor: %s %s", filepath.Base(cfg.Binary), strings.Join(args, " "))
	if l.sensor, err = startSensor(t.Sensor, cfg.Binary, args, MetricsAddr, cfg.OnAlert, cfg.SensorLog); err != nil {
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

// mgmtLink connects the host to the sensor for event forwarding. It is not
// mirrored: the sensor's capture interface sees only the host's switch
// port.
func (l *Lab) mgmtLink() error {
	h, s := l.topo.Host.NS, l.topo.Sensor
	for _, step := range []func() error{
		func() error { return netns.Veth(h, mgmtIface, s, mgmtIface) },
		func() error { return h.AddAddr(mgmtIface, mgmtHost) },
		func() error { return s.AddAddr(mgmtIface, mgmtSensor) },
		func() error { return h.LinkUp(mgmtIface) },
		func() error { return s.LinkUp(mgmtIface) },
		func() error { return h.WaitUp(mgmtIface, netns.UpTimeout) },
		func() error { return s.WaitUp(mgmtIface, netns.UpTimeout) },
	} {
		if err := step(); err != nil {
			return fmt.Errorf("connect host to sensor: %w", err)
		}
	}
	return nil
}

// hostBaseline gives the host its state before the attack: a web service
// on ServicePort and, for S0, a firewall that drops SYNs to every other
// port without an answer.
func (l *Lab) hostBaseline(ctx context.Context) error {
	if l.cfg.Scenario == ScenarioS0 {
		script := fmt.Sprintf(`table inet %s {
	set allowed { type inet_service; elements = { %d } }
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "%s" tcp flags & (syn | ack) == syn tcp dport != @allowed drop
	}
}
`, nftTable, l.cfg.ServicePort, netns.EndpointIface)
		if err := l.topo.Host.NS.Nft(ctx, script); err != nil {
			return fmt.Errorf("set host firewall: %w", err)
		}
	}
	if err := l.serve(ctx, l.cfg.ServicePort, "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n", true); err != nil {
		return fmt.Errorf("start host service: %w", err)
	}
	return nil
}

// serve listens on the host's port and answers every connection with
// greeting, then closes it (hangup) or keeps it open until Close.
func (l *Lab) serve(ctx context.Context, port uint16, greeting string, hangup bool) error {
	// Both families: the scenario may run over IPv6.
	ln, err := l.topo.Host.NS.Listen(ctx, "tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		return fmt.Errorf("listen on host port %d: %w", port, err)
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
			_, _ = c.Write([]byte(greeting))
			if hangup {
				c.Close()
				continue
			}
			l.track(c)
		}
	}()
	return nil
}

func (l *Lab) track(c net.Conn) {
	l.mu.Lock()
	l.conns = append(l.conns, c)
	l.mu.Unlock()
}

// writeFiles writes the sensor's token, TLS certificate and inventory to
// a private temporary directory.
func (l *Lab) writeFiles() error {
	var err error
	if l.dir, err = os.MkdirTemp("", "knockwatch-lab-"); err != nil {
		return fmt.Errorf("create lab directory: %w", err)
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("generate token: %w", err)
	}
	l.token = hex.EncodeToString(b[:])
	if err := os.WriteFile(filepath.Join(l.dir, "token"), []byte(l.token+"\n"), 0o600); err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	short, _, _ := strings.Cut(l.cfg.HostName, ".")
	hosts := fmt.Sprintf("# knockwatch lab inventory: Windows host names as their events carry them\n%v %s %s\n%v %s %s\n",
		l.topo.Host.IP, l.cfg.HostName, short, l.topo.Host.IP6, l.cfg.HostName, short)
	if err := os.WriteFile(filepath.Join(l.dir, "hosts"), []byte(hosts), 0o644); err != nil {
		return fmt.Errorf("write hosts file: %w", err)
	}
	if l.pki, err = newLabPKI(l.dir, mgmtSensor.Addr()); err != nil {
		return err
	}
	return nil
}

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
		if l.dir != "" {
			if err := os.RemoveAll(l.dir); err != nil {
				errs = append(errs, fmt.Errorf("remove lab directory: %w", err))
			}
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}
