//go:build linux

package reliability

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knockwatch/knockwatch/internal/netns"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
)

// Faults of the live sensor (issue 7): the real `knockwatch run` binary in
// the lab topology (network namespaces, native XDP on the span port's
// capture interface), real TCP from the attacker's namespace.

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// TestMain removes the binary knockwatchBinary built.
func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		_ = os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// knockwatchBinary builds cmd/knockwatch once per test binary.
func knockwatchBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "knockwatch-reliability-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "knockwatch")
		out, err := exec.Command("go", "build", "-o", builtBin, "../cmd/knockwatch").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// liveRun is one `knockwatch run` process in the sensor namespace.
type liveRun struct {
	t        *testing.T
	cmd      *exec.Cmd
	mu       sync.Mutex
	logs     bytes.Buffer
	httpAddr string
	metrics  string
	alerts   chan string
	logsDone chan struct{}
}

var (
	reHTTPAddr    = regexp.MustCompile(`"msg":"http intake listening".*"addr":"([0-9.:]+)"`)
	reMetricsAddr = regexp.MustCompile(`"msg":"serving /metrics.*"addr":"([0-9.:]+)"`)
)

func startRun(t *testing.T, ctx context.Context, topo *netns.Topology, hosts string, extra ...string) *liveRun {
	t.Helper()
	args := append([]string{"run", "--iface", topo.CaptureIface, "--xdp-mode", "native", "--events-http", "127.0.0.1:0",
		"--hosts", hosts, "--alerts", "-", "--metrics", "127.0.0.1:0", "--alerts-pretty", "false", "--log-format", "json",
		"--set", "sensor.pair_slots=4096", "--set", "sensor.candidates=1024", "--set", "sensor.ring_bytes=65536"}, extra...)
	if !slices.Contains(extra, "--state-dir") {
		args = append(args, "--state-dir", t.TempDir()) // never the machine's own
	}
	r := &liveRun{t: t, alerts: make(chan string, 16), logsDone: make(chan struct{})}
	r.cmd = topo.Sensor.Command(ctx, knockwatchBinary(t), args...)
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := r.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		defer close(r.logsDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		once := false
		for sc.Scan() {
			line := sc.Text()
			r.mu.Lock()
			r.logs.WriteString(line + "\n")
			if m := reHTTPAddr.FindStringSubmatch(line); m != nil {
				r.httpAddr = m[1]
			}
			if m := reMetricsAddr.FindStringSubmatch(line); m != nil {
				r.metrics = m[1]
			}
			r.mu.Unlock()
			if !once && strings.Contains(line, `"msg":"ready`) {
				once = true
				close(ready)
			}
		}
	}()
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			r.alerts <- sc.Text()
		}
		close(r.alerts)
	}()
	select {
	case <-ready:
	case <-r.logsDone:
		t.Fatalf("knockwatch run exited before ready:\n%s", r.dump())
	case <-ctx.Done():
		t.Fatalf("knockwatch run not ready:\n%s", r.dump())
	}
	return r
}

func (r *liveRun) dump() string { r.mu.Lock(); defer r.mu.Unlock(); return r.logs.String() }

// waitLog waits for a log line containing all of subs.
func (r *liveRun) waitLog(what string, subs ...string) string {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(r.dump(), "\n") {
			ok := line != ""
			for _, s := range subs {
				ok = ok && strings.Contains(line, s)
			}
			if ok {
				return line
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.t.Fatalf("no log line for %s (%q):\n%s", what, subs, r.dump())
	return ""
}

// stop sends SIGTERM and waits for a clean exit.
func (r *liveRun) stop() {
	r.t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		r.t.Fatal(err)
	}
	<-r.logsDone
	if err := r.cmd.Wait(); err != nil {
		r.t.Fatalf("exit after SIGTERM: %v\n%s", err, r.dump())
	}
}

// scrape returns the value of one metric line (exact name with labels).
func (r *liveRun) scrape(topo *netns.Topology, metric string) string {
	r.t.Helper()
	r.mu.Lock()
	addr := r.metrics
	r.mu.Unlock()
	resp, err := sensorClient(topo).Get("http://" + addr + "/metrics")
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, metric+" "); ok {
			return v
		}
	}
	return ""
}

func sensorClient(topo *netns.Topology) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return topo.Sensor.Dial(ctx, nil, network, a)
		}}}
}

// liveLab is the topology with the host's inventory and the scenario's steps.
type liveLab struct {
	t     *testing.T
	ctx   context.Context
	topo  *netns.Topology
	hosts string
}

func newLiveLab(t *testing.T, prefix string) *liveLab {
	t.Helper()
	testenv.RequirePrivileged(t)
	env, err := netns.NewEnv(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Close() })
	stop := env.CloseOnSignal()
	t.Cleanup(stop)
	topo, err := env.NewTopology(netns.TopologyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte(topo.Host.IP.String()+" win01.corp.example win01\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	t.Cleanup(cancel)
	return &liveLab{t: t, ctx: ctx, topo: topo, hosts: hosts}
}

func (l *liveLab) dial(port int) (net.Conn, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	return l.topo.Attacker.NS.Dial(l.ctx, d, "tcp", net.JoinHostPort(l.topo.Host.IP.String(), fmt.Sprint(port)))
}

// knock touches three closed ports (each answered by an RST: REJ).
func (l *liveLab) knock() {
	l.t.Helper()
	for _, p := range []int{7001, 8002, 9003} {
		if c, err := l.dial(p); err == nil {
			c.Close()
			l.t.Fatalf("port %d unexpectedly open", p)
		}
	}
}

// open listens on port in the host namespace and posts the matching
// Windows Firewall 2004 to r's HTTP listener.
func (l *liveLab) open(r *liveRun, port int) {
	l.t.Helper()
	ln, err := l.topo.Host.NS.Listen(l.ctx, "tcp", net.JoinHostPort(l.topo.Host.IP.String(), fmt.Sprint(port)))
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	r.mu.Lock()
	addr := r.httpAddr
	r.mu.Unlock()
	body := ruleAdded(nil, "WIN01.corp.example", uint64(time.Now().UnixNano()), time.Now().Add(-200*time.Millisecond), uint16(port))
	resp, err := sensorClient(l.topo).Post("http://"+addr+"/v1/events", "application/json", bytes.NewReader(body))
	if err != nil {
		l.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		l.t.Fatalf("event POST: %d", resp.StatusCode)
	}
}

func (l *liveLab) connect(port int) {
	l.t.Helper()
	c, err := l.dial(port)
	if err != nil {
		l.t.Fatalf("connect to the opened port: %v", err)
	}
	c.Close()
}

// expectAlert waits up to wait for one alert for the attacker on port and
// returns its confidence, or "" when none came.
func (l *liveLab) expectAlert(r *liveRun, port int, wait time.Duration) string {
	l.t.Helper()
	var line string
	select {
	case line = <-r.alerts:
	case <-time.After(wait):
		return ""
	}
	var a struct {
		Source      struct{ IP string }
		Destination struct {
			IP   string
			Port int
		}
		Knockwatch struct{ Confidence string }
	}
	if err := json.Unmarshal([]byte(line), &a); err != nil {
		l.t.Fatalf("alert is not JSON: %v: %s", err, line)
	}
	if a.Source.IP != l.topo.Attacker.IP.String() || a.Destination.IP != l.topo.Host.IP.String() || a.Destination.Port != port {
		l.t.Fatalf("unexpected alert: %s", line)
	}
	return a.Knockwatch.Confidence
}

// bpffsDir mounts a fresh bpffs for the test's pins, outside /sys: `ip
// netns exec` (netns.Namespace.Command) mounts the namespace's own sysfs
// over /sys, hiding /sys/fs/bpf from the sensor process.
func bpffsDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/run", "knockwatch-reliability-bpf-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		_ = os.Remove(dir)
		t.Fatalf("mount bpffs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
		_ = os.Remove(dir)
	})
	return filepath.Join(dir, "knockwatch")
}

// TestRunRestartBetweenKnockAndHandshake: the sensor is restarted (SIGTERM,
// start again with the same --pin-path and --state-dir) after the
// attacker's knock was flagged and before the port opens and the attacker
// connects; the alert must still fire from the second process, whose
// engine got the knock back from the evidence log. (kill -9 at every point
// between knock and alert: cmd/knockwatch TestLabRestartEndToEnd.)
func TestRunRestartBetweenKnockAndHandshake(t *testing.T) {
	l := newLiveLab(t, "kwrelpin")
	pin := bpffsDir(t)
	state := t.TempDir()
	first := startRun(t, l.ctx, l.topo, l.hosts, "--pin-path", pin, "--state-dir", state)
	l.knock()
	deadline := time.Now().Add(10 * time.Second)
	for first.scrape(l.topo, "knockwatch_knocks_flagged_total") != "1" {
		if time.Now().After(deadline) {
			t.Fatalf("knock not flagged before the restart:\n%s", first.dump())
		}
		time.Sleep(50 * time.Millisecond)
	}
	first.stop()
	for a := range first.alerts {
		t.Fatalf("alert before the handshake: %s", a)
	}
	second := startRun(t, l.ctx, l.topo, l.hosts, "--pin-path", pin, "--state-dir", state)
	l.open(second, 4444)
	l.connect(4444)
	// The pinned maps kept the flag: the new program reports the
	// attacker's first handshake although it never saw the knock.
	second.waitLog("the flagged source's handshake after the restart", "first handshake of a flagged source",
		l.topo.Attacker.IP.String(), `"destination.port":4444`)
	conf := l.expectAlert(second, 4444, 5*time.Second)
	hs := second.scrape(l.topo, "knockwatch_handshakes_reported_total")
	second.stop()
	if conf == "" {
		t.Fatalf("no alert after a restart between knock and handshake with --pin-path and --state-dir (handshakes reported %s): "+
			"the new engine did not get the knock back from the evidence log", hs)
	}
	t.Logf("RESULT restart with --pin-path and --state-dir between knock and handshake: alert fired after the restart (confidence %s)", conf)
}

// TestRunInterfaceRemovedAndReadded: the capture interface disappears (the
// span veth is deleted) and comes back; `run` says so, re-attaches, and the
// whole AN0842 scenario played afterwards still yields the alert.
func TestRunInterfaceRemovedAndReadded(t *testing.T) {
	l := newLiveLab(t, "kwrelifc")
	r := startRun(t, l.ctx, l.topo, l.hosts)
	r.waitLog("the unpinned restart warning", "maps not pinned", "forgotten on restart")
	if err := l.topo.Switch.Netlink().LinkDel(mustLink(t, l.topo.Switch, netns.SpanIface)); err != nil {
		t.Fatal(err)
	}
	gone := r.waitLog("the interface's disappearance", "interface disappeared", l.topo.CaptureIface)
	for _, step := range []func() error{
		func() error { return netns.Veth(l.topo.Switch, netns.SpanIface, l.topo.Sensor, netns.CaptureIface) },
		func() error { return l.topo.Switch.LinkUp(netns.SpanIface) },
		func() error { return l.topo.Sensor.LinkUp(netns.CaptureIface) },
		func() error { // the old mirror filters still point at the deleted span port
			return l.topo.Switch.Netlink().QdiscDel(&netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{
				LinkIndex: mustLink(t, l.topo.Switch, l.topo.MirrorPort).Attrs().Index,
				Handle:    netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}})
		},
		func() error { return l.topo.Switch.Mirror(l.topo.MirrorPort, netns.SpanIface, netns.Both) },
		func() error { return l.topo.Sensor.WaitUp(netns.CaptureIface, 10*time.Second) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	back := r.waitLog("the re-attach", "re-attached", l.topo.CaptureIface)
	l.knock()
	l.open(r, 4444)
	l.connect(4444)
	conf := l.expectAlert(r, 4444, 15*time.Second)
	if conf == "" {
		t.Fatalf("no alert after the re-attach:\n%s", r.dump())
	}
	r.stop()
	t.Logf("RESULT capture interface removed and re-added: logged %q then %q; alert after re-attach (confidence %s)",
		logMsg(gone), logMsg(back), conf)
}

func logMsg(line string) string {
	var m struct {
		Msg string `json:"msg"`
	}
	_ = json.Unmarshal([]byte(line), &m)
	return m.Msg
}

func mustLink(t *testing.T, ns *netns.Namespace, name string) netlink.Link {
	t.Helper()
	l, err := ns.Netlink().LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
