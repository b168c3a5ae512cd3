//go:build linux

// Package clusterlab is issue 14's case 1 on one machine: two taps, a fake
// Kafka cluster, and knockwatch in roles. The knock crosses tap A, the
// connection tap B (the route between the attacker and the host moves, as
// ECMP or a failover moves it), the host's Windows Firewall event comes
// through a forwarder's raw topic (produced with kcat, librdkafka, as
// Winlogbeat's output.kafka would), and the alert is read from the alert
// topic with kcat. `make demo-cluster` runs it (cmd/demo-cluster); the
// cluster tests of cmd/knockwatch hold it to one high alert.
//
// The fake Kafka cluster (internal/kafkatest: franz-go's kfake, three
// brokers over TCP) is a development tool, not a broker's performance.
package clusterlab

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/knockwatch/knockwatch/internal/kafkatest"
	"github.com/knockwatch/knockwatch/internal/netns"
)

// Scenario constants.
const (
	// RawTopic is the forwarders' topic (Winlogbeat output.kafka's
	// default topic name), bound to the forwarder identity RawIdentity.
	RawTopic    = "winlogbeat"
	RawIdentity = "wec01"
	// AlertTopic is where the correlators write.
	AlertTopic = "knockwatch.alerts"
	// Computer is the Windows host's name in its events.
	Computer = "WIN01.corp.example"
	// OpenedPort is the port the host opens after the knock.
	OpenedPort = 4444
)

// KnockPorts are the closed ports the attacker knocks.
var KnockPorts = []int{7000, 8000, 9000}

// Config configures a Lab.
type Config struct {
	// Command returns `knockwatch run ARGS...` to run inside ns (not
	// started): bin/knockwatch for the demo, the test binary in its
	// helper mode for the tests.
	Command func(ctx context.Context, ns *netns.Namespace, args []string) *exec.Cmd
	// Kcat is the kcat binary (default: kcat on PATH).
	Kcat string
	// Dir holds the inventory and the fake cluster's data.
	Dir string
	// Correlators is how many correlators join the group (default 1).
	Correlators int
	// Out receives a line per step (nil: none).
	Out io.Writer
	// Prefix names the namespaces (default "kwcluster").
	Prefix string
	// Brokers, when set, is a real Kafka cluster to use instead of the
	// fake one: the SOC side is then this process's namespace, and the
	// topics and groups get Suffix so that a shared cluster's are left
	// alone.
	Brokers []string
	Suffix  string
}

// Lab is a running two-tap cluster.
type Lab struct {
	cfg     Config
	env     *netns.Env
	topo    *topology
	Kafka   *kafkatest.Cluster // nil with Config.Brokers
	brokers []string
	// Procs are the knockwatch processes by name: sensor-a, sensor-b,
	// intake, correlator-1...
	Procs map[string]*Process
}

func (l *Lab) say(format string, args ...any) {
	if l.cfg.Out != nil {
		fmt.Fprintf(l.cfg.Out, format+"\n", args...)
	}
}

// Start builds the topology, starts the fake cluster in the SOC namespace
// and the knockwatch processes, and waits until every one is ready.
func Start(ctx context.Context, cfg Config) (_ *Lab, err error) {
	if cfg.Kcat == "" {
		cfg.Kcat = "kcat"
	}
	if cfg.Correlators <= 0 {
		cfg.Correlators = 1
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "kwcluster"
	}
	if _, err := exec.LookPath(cfg.Kcat); err != nil {
		return nil, fmt.Errorf("kcat is needed (Debian: apt-get install kcat): %w", err)
	}
	env, err := netns.NewEnv(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	l := &Lab{cfg: cfg, env: env, Procs: map[string]*Process{}}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	if l.topo, err = newTopology(env, len(cfg.Brokers) > 0); err != nil {
		return nil, err
	}
	l.say("two taps: path A (pa) mirrored to %s, path B (pb) to %s; attacker %v, host %v", CaptureA, CaptureB, AttackerIP, HostIP)
	soc := l.topo.soc
	if len(cfg.Brokers) > 0 {
		l.brokers = cfg.Brokers
		l.say("Kafka at %s (topics and groups with suffix %q)", strings.Join(cfg.Brokers, ","), cfg.Suffix)
	} else {
		l.Kafka, err = kafkatest.Start(kafkatest.Config{Brokers: 3, DataDir: filepath.Join(cfg.Dir, "kafka"),
			Listen: func(network, address string) (net.Listener, error) {
				return soc.Listen(context.Background(), network, address)
			}})
		if err != nil {
			return nil, err
		}
		l.brokers = l.Kafka.Addrs()
		l.say("fake Kafka (kfake, 3 brokers over TCP, a dev tool) at %s", strings.Join(l.brokers, ","))
	}
	if err := l.createRawTopic(ctx); err != nil {
		return nil, err
	}
	hosts := filepath.Join(cfg.Dir, "hosts")
	if err := os.WriteFile(hosts, []byte(HostIP.String()+" "+strings.ToLower(Computer)+" win01\n"), 0o644); err != nil {
		return nil, err
	}
	brokers := strings.Join(l.brokers, ",")
	sfx := cfg.Suffix
	common := func(role, node string) []string {
		return []string{"--role", role, "--kafka-brokers", brokers, "--metrics", "127.0.0.1:0", "--log-format", "json",
			"--set", "kafka.node=" + node, "--set", "kafka.session_timeout=3s", "--set", "kafka.transaction_timeout=5s",
			"--set", "kafka.topics.partitions=6", "--set", "kafka.busy_after=1s", "--set", "kafka.sync_timeout=3s",
			"--set", "kafka.insecure=true", "--set", "kafka.topics.evidence=knockwatch.evidence" + sfx,
			"--set", "kafka.topics.flags=knockwatch.flags" + sfx, "--set", "kafka.topics.alerts=" + AlertTopic + sfx,
			"--set", "kafka.group=knockwatch-correlators" + sfx, "--set", "kafka.intake_group=knockwatch-intake" + sfx}
	}
	sensorArgs := func(iface string) []string {
		return []string{"--iface", iface, "--xdp-mode", "native", "--set", "sensor.pair_slots=4096", "--set", "sensor.candidates=1024",
			"--set", "sensor.ring_bytes=65536", "--set", "sensor.remote_flags=1024"}
	}
	type spec struct {
		name string
		args []string
	}
	// The correlators first: the first one creates the topics.
	var specs []spec
	for i := 1; i <= cfg.Correlators; i++ {
		n := "correlator-" + strconv.Itoa(i)
		specs = append(specs, spec{n, append(common("correlator", n), "--hosts", hosts, "--alerts", "-", "--alerts-pretty", "false",
			"--set", "kafka.transactional_id=knockwatch-"+n)})
	}
	specs = append(specs,
		spec{"intake", append(common("intake", "intake"), "--hosts", hosts,
			"--set", "kafka.topics.raw=[{topic: "+RawTopic+sfx+", identity: "+RawIdentity+"}]")},
		spec{"sensor-a", append(common("sensor", "sensor-a"), sensorArgs(CaptureA)...)},
		spec{"sensor-b", append(common("sensor", "sensor-b"), sensorArgs(CaptureB)...)},
	)
	for i, s := range specs {
		p, err := StartProcess(s.name, cfg.Command(ctx, soc, s.args), l.dial)
		if err != nil {
			return nil, err
		}
		l.Procs[s.name] = p
		if i == 0 || i == len(specs)-1 {
			if err := p.WaitReady(ctx); err != nil {
				return nil, err
			}
		}
	}
	for _, s := range specs {
		if err := l.Procs[s.name].WaitReady(ctx); err != nil {
			return nil, err
		}
	}
	l.say("ready: %d correlator(s), intake (raw topic %s), sensor-a on %s, sensor-b on %s", cfg.Correlators, RawTopic, CaptureA, CaptureB)
	return l, nil
}

// dial reaches the SOC namespace's loopback (the fake brokers).
func (l *Lab) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if l.topo.soc == nil {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	return l.topo.soc.Dial(ctx, nil, network, addr)
}

// Client returns a Kafka client on the fake cluster (from outside the
// SOC namespace).
func (l *Lab) Client(opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(l.brokers...), kgo.Dialer(l.dial)}, opts...)...)
}

func (l *Lab) createRawTopic(ctx context.Context) error {
	cl, err := l.Client()
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	r, err := kadm.NewClient(cl).CreateTopic(ctx, 3, -1, nil, RawTopic+l.cfg.Suffix)
	if err == nil {
		err = r.Err
	}
	if err != nil {
		return fmt.Errorf("create raw topic %s: %w", RawTopic, err)
	}
	return nil
}

// Kcat runs kcat with args in the SOC namespace (brokers given) with stdin
// and returns its standard output.
func (l *Lab) Kcat(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	args = append([]string{"-b", strings.Join(l.brokers, ",")}, args...)
	var cmd *exec.Cmd
	if l.topo.soc != nil {
		cmd = l.topo.soc.Command(ctx, l.cfg.Kcat, args...)
	} else {
		cmd = exec.CommandContext(ctx, l.cfg.Kcat, args...)
	}
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("kcat %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

//go:embed winlogbeat_2004.json.tmpl
var winlogbeat2004 string

// winlogbeatTmpl is a real Winlogbeat 6.7 record of a Firewall 2004 as
// Winlogbeat's output.kafka wrote it (OTRF Security-Datasets
// empire_enable_rdp, testdata/winevents/SOURCES.md) with the time, record
// number, computer and port of the scenario, and the rule active.
var winlogbeatTmpl = template.Must(template.New("2004").Parse(winlogbeat2004))

// WinlogbeatRuleAdded renders the lab host's Firewall 2004 (rule added,
// inbound TCP port, allow, active) as Winlogbeat JSON.
func WinlogbeatRuleAdded(at time.Time, record, port int) ([]byte, error) {
	return WinlogbeatRuleAddedOn(Computer, at, record, port)
}

// WinlogbeatRuleAddedOn is WinlogbeatRuleAdded for another computer.
func WinlogbeatRuleAddedOn(computer string, at time.Time, record, port int) ([]byte, error) {
	var b bytes.Buffer
	err := winlogbeatTmpl.Execute(&b, map[string]any{"Time": at.UTC().Format("2006-01-02T15:04:05.000Z"),
		"Record": record, "Computer": computer, "Port": port})
	return bytes.TrimSpace(b.Bytes()), err
}

// ProduceEvent produces one forwarded event to the raw topic with kcat,
// keyed as Winlogbeat keys nothing (no key).
func (l *Lab) ProduceEvent(ctx context.Context, event []byte) error {
	_, err := l.Kcat(ctx, append(event, '\n'), "-P", "-t", RawTopic+l.cfg.Suffix)
	return err
}

// Alert is what the lab reads of an alert record.
type Alert struct {
	ID, Action, Confidence string
	Source, Destination    netip.Addr
	Port                   int
	JSON                   string
}

// ReadAlerts reads the alert topic from the beginning with kcat
// (read_committed: what committed transactions hold).
func (l *Lab) ReadAlerts(ctx context.Context) ([]Alert, error) {
	out, err := l.Kcat(ctx, nil, "-C", "-t", AlertTopic+l.cfg.Suffix, "-o", "beginning", "-e", "-q", "-X", "isolation.level=read_committed", "-f", "%s\n")
	if err != nil {
		return nil, err
	}
	return ParseAlerts(out)
}

// ParseAlerts parses alert records, one JSON object per line.
func ParseAlerts(b []byte) ([]Alert, error) {
	var out []Alert
	for _, line := range bytes.Split(b, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var a struct {
			Event       struct{ ID, Action string }
			Source      struct{ IP string }
			Destination struct {
				IP   string
				Port int
			}
			Knockwatch struct{ Confidence string }
		}
		if err := json.Unmarshal(line, &a); err != nil {
			return out, fmt.Errorf("alert record %q: %w", line, err)
		}
		src, _ := netip.ParseAddr(a.Source.IP)
		dst, _ := netip.ParseAddr(a.Destination.IP)
		out = append(out, Alert{ID: a.Event.ID, Action: a.Event.Action, Confidence: a.Knockwatch.Confidence,
			Source: src, Destination: dst, Port: a.Destination.Port, JSON: string(line)})
	}
	return out, nil
}

// Result is what case 1 showed.
type Result struct {
	Alerts []Alert
	// What each tap's program reported: the knock on A only, the
	// handshake on B only, B's from a flag that travelled.
	KnocksA, HandshakesA, KnocksB, HandshakesB float64
	RemoteFlagsB                               float64
}

// Attack plays case 1: the knock over path A (tap A), the host's rule
// through the raw topic, the connection over path B (tap B). It returns
// the alert topic's records once one arrived (and a moment more, to show
// there is no second one).
func (l *Lab) Attack(ctx context.Context) (Result, error) {
	var r Result
	a, b := l.Procs["sensor-a"], l.Procs["sensor-b"]
	for _, port := range KnockPorts {
		c, err := l.topo.attacker.Dial(ctx, &net.Dialer{Timeout: 2 * time.Second}, "tcp", netip.AddrPortFrom(HostIP, uint16(port)).String())
		if err == nil {
			c.Close()
			return r, fmt.Errorf("knock port %d is open on the host", port)
		}
	}
	l.say("attacker knocked %v on %v over path A (each refused: RST)", KnockPorts, HostIP)
	if _, err := a.WaitMetric(ctx, 1, "knockwatch_knocks_flagged_total"); err != nil {
		return r, fmt.Errorf("tap A did not flag the knock: %w", err)
	}
	fctx, fcancel := context.WithTimeout(ctx, 20*time.Second)
	defer fcancel()
	if _, err := b.WaitMetric(fctx, 1, "knockwatch_remote_flags_total", `outcome="set"`); err != nil {
		return r, fmt.Errorf("the flag did not travel to tap B: %w", err)
	}
	l.say("sensor-a flagged the knock; its flag travelled: sensor-b's program now watches the pair")
	ev, err := WinlogbeatRuleAdded(time.Now(), 900001, OpenedPort)
	if err != nil {
		return r, err
	}
	if err := l.ProduceEvent(ctx, ev); err != nil {
		return r, err
	}
	l.say("the host's Firewall 2004 (rule opening TCP %d on %s) went to raw topic %s with kcat", OpenedPort, Computer, RawTopic)
	ln, err := l.topo.host.Listen(ctx, "tcp", netip.AddrPortFrom(HostIP, OpenedPort).String())
	if err != nil {
		return r, err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("welcome\n"))
			_ = c.Close()
		}
	}()
	if err := l.topo.use(ctx, pathB); err != nil {
		return r, err
	}
	c, err := l.topo.attacker.Dial(ctx, &net.Dialer{Timeout: 5 * time.Second}, "tcp", netip.AddrPortFrom(HostIP, OpenedPort).String())
	if err != nil {
		return r, fmt.Errorf("connect to the opened port over path B: %w", err)
	}
	_, _ = io.ReadAll(io.LimitReader(c, 64))
	c.Close()
	l.say("the route moved to path B; the attacker connected to %v:%d", HostIP, OpenedPort)
	hctx, hcancel := context.WithTimeout(ctx, 20*time.Second)
	defer hcancel()
	if _, err := b.WaitMetric(hctx, 1, "knockwatch_handshakes_reported_total"); err != nil {
		return r, fmt.Errorf("tap B did not report the handshake: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if r.Alerts, err = l.ReadAlerts(ctx); err != nil {
			return r, err
		}
		if len(r.Alerts) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if len(r.Alerts) > 0 {
		time.Sleep(2 * time.Second) // a duplicate would show now
		if r.Alerts, err = l.ReadAlerts(ctx); err != nil {
			return r, err
		}
	}
	for _, m := range []struct {
		p   *Process
		dst *float64
		n   string
		lbl []string
	}{{a, &r.KnocksA, "knockwatch_knocks_flagged_total", nil}, {a, &r.HandshakesA, "knockwatch_handshakes_reported_total", nil},
		{b, &r.KnocksB, "knockwatch_knocks_flagged_total", nil}, {b, &r.HandshakesB, "knockwatch_handshakes_reported_total", nil},
		{b, &r.RemoteFlagsB, "knockwatch_remote_flags_total", []string{`outcome="set"`}}} {
		v, err := m.p.Metric(ctx, m.n, m.lbl...)
		if err != nil {
			return r, err
		}
		*m.dst = v
	}
	return r, nil
}

// Close stops the processes, the fake cluster and the namespaces.
func (l *Lab) Close() error {
	if l == nil {
		return nil
	}
	var errs []error
	for _, p := range l.Procs {
		if err := p.Stop(15 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if l.Kafka != nil {
		l.Kafka.Close()
	}
	if l.env != nil {
		if err := l.env.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
