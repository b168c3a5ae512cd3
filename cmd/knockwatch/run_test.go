//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/knockwatch/knockwatch/internal/config"
	"github.com/knockwatch/knockwatch/internal/netns"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
)

const winSamples = "../../testdata/winevents"

// TestRunConfigErrors: bad configurations stop `run` before it touches the
// kernel, with one clear message each.
func TestRunConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("rule:\n  skew: 5s\nlisteners:\n  http:\n    adr: 127.0.0.1:80\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		args  []string
		want  string
		usage bool
	}{
		{"unknown key", []string{"--iface", "eth0", "--config", bad}, bad + ":5: listeners.http.adr: unknown key", false},
		{"no iface", []string{"--events-http", "127.0.0.1:0"}, "no capture interface", true},
		{"unknown flag", []string{"--iface", "eth0", "--bogus"}, "flag provided but not defined: -bogus", true},
		{"xdp mode", []string{"--iface", "eth0", "--xdp-mode", "fast"}, `xdp_mode: "fast" is not auto, native or generic`, false},
		{"unauthenticated listener", []string{"--iface", "eth0", "--events-beats", "0.0.0.0:5044"}, "--tls-cert/--tls-key/--client-ca", false},
		{"bad set", []string{"--iface", "eth0", "--set", "sensor.window=soon"}, `sensor.window: invalid duration "soon"`, false},
		{"bad allow-source", []string{"--iface", "eth0", "--allow-source", "10.0.0.0/33"}, "allowed_sources[0]", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			err := run(context.Background(), append([]string{"run"}, tc.args...), io.Discard, &stderr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want %q", err, tc.want)
			}
			if errors.Is(err, errUsage) != tc.usage {
				t.Fatalf("usage error = %v, want %v", !tc.usage, tc.usage)
			}
		})
	}
}

// TestRunHelp documents every flag with its default.
func TestRunHelp(t *testing.T) {
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"run", "--help"}, io.Discard, &stderr)
	if err == nil || !errors.Is(err, flagErrHelp()) {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"usage: knockwatch run --iface IFACE", "-insecure-listeners", `-alerts PATH`, `(default "-")`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, stderr.String())
		}
	}
}

// helperEnv makes the test binary act as `knockwatch run` (see
// TestMain).
const helperEnv = "KNOCKWATCH_RUN_HELPER_ARGS"

// forceEnv makes the helper process test the second-signal exit.
const forceEnv = "KNOCKWATCH_RUN_HELPER_FORCE"

// TestRunSecondSignalForces: while the shutdown runs, another SIGTERM ends
// the process at once with status 1.
func TestRunSecondSignalForces(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), forceEnv+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	var out strings.Builder
	for sc.Scan() && !strings.Contains(sc.Text(), "armed") {
		out.WriteString(sc.Text() + "\n")
	}
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want status 1\n%s", err, out.String())
	}
	if time.Since(start) > 10*time.Second || !strings.Contains(out.String(), "second signal") {
		t.Fatalf("not forced at once (%v):\n%s", time.Since(start), out.String())
	}
}

// TestMain turns the test binary into a helper process when
// TestRunSIGTERMDetaches (or the second-signal test) starts it with its
// variable set: it then runs `knockwatch run` inside a network namespace
// under the same signal handling as main, and never runs the tests.
func TestMain(m *testing.M) {
	if os.Getenv(sandboxEnv) != "" {
		enterSandboxAndExec() // execs this binary again as the helper, confined
	}
	if os.Getenv(forceEnv) != "" || os.Getenv(helperEnv) != "" {
		runHelperProcess()
	}
	os.Exit(m.Run())
}

func runHelperProcess() {
	if os.Getenv(forceEnv) != "" {
		// Stand-in for a shutdown that hangs: arm the second-signal exit
		// and wait.
		cfg := config.Default()
		cfg.LogFormat = "json"
		log, err := newRunLogger(cfg, os.Stderr)
		if err != nil {
			os.Stderr.WriteString("knockwatch: " + err.Error() + "\n")
			os.Exit(1)
		}
		defer runForceOnSecondSignal(log)()
		os.Stderr.WriteString("armed\n")
		time.Sleep(20 * time.Second)
		os.Exit(0)
	}
	args := os.Getenv(helperEnv)
	ctx, stop := signalContext()
	defer stop()
	if err := run(ctx, append([]string{"run"}, strings.Split(args, "\x1f")...), os.Stdout, os.Stderr); err != nil {
		os.Stderr.WriteString("knockwatch: " + err.Error() + "\n")
		os.Exit(1)
	}
	os.Exit(0)
}

// helperRun starts `knockwatch run` with args as a helper process inside
// ns and returns it once it logged ready, with a function returning the
// logs so far and a channel closed when stderr ends.
func helperRun(t *testing.T, ctx context.Context, ns *netns.Namespace, args []string) (*execCmd, func() string, <-chan struct{}) {
	t.Helper()
	if !slices.Contains(args, "--state-dir") {
		args = append(args, "--state-dir", t.TempDir()) // never the machine's own
	}
	cmd := ns.Command(ctx, os.Args[0], "-test.v=false")
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join(args, "\x1f"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logs bytes.Buffer
	dump := func() string { mu.Lock(); defer mu.Unlock(); return logs.String() }
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			mu.Lock()
			logs.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if !once && strings.Contains(sc.Text(), `"msg":"ready`) {
				once = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-done:
		_ = cmd.Wait()
		t.Fatalf("knockwatch run exited before it was ready:\n%s", dump())
	case <-ctx.Done():
		t.Fatalf("knockwatch run not ready in time:\n%s", dump())
	}
	return cmd, dump, done
}

type execCmd = exec.Cmd

// vethNS makes a fresh namespace with an up veth pair kw0/kw1.
func vethNS(t *testing.T, prefix string) *netns.Namespace {
	t.Helper()
	env, err := netns.NewEnv(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	t.Cleanup(env.CloseOnSignal())
	ns, err := env.Namespace("sensor")
	if err != nil {
		t.Fatal(err)
	}
	addVeth(t, ns)
	return ns
}

func addVeth(t *testing.T, ns *netns.Namespace) {
	t.Helper()
	if err := netns.Veth(ns, "kw0", ns, "kw1"); err != nil {
		t.Fatal(err)
	}
	for _, ifn := range []string{"kw0", "kw1"} {
		if err := ns.LinkUp(ifn); err != nil {
			t.Fatal(err)
		}
	}
}

var smallSensor = []string{"--set", "sensor.pair_slots=4096", "--set", "sensor.candidates=1024", "--set", "sensor.ring_bytes=65536"}

// TestRunReattach: the capture interface removed and re-added gets the
// program again, and the log says so.
func TestRunReattach(t *testing.T) {
	testenv.RequirePrivileged(t)
	ns := vethNS(t, "kwreat")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd, dump, done := helperRun(t, ctx, ns, append([]string{"--iface", "kw0", "--log-format", "json"}, smallSensor...))
	defer func() { _ = cmd.Process.Kill(); <-done; _ = cmd.Wait() }()
	if err := ns.Do(func() error {
		l, err := netlink.LinkByName("kw0")
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	}); err != nil {
		t.Fatal(err)
	}
	waitLog(t, ctx, dump, `"msg":"interface disappeared`)
	addVeth(t, ns)
	waitLog(t, ctx, dump, `"msg":"interface returned: re-attached"`)
	if !xdpAttached(t, ns, "kw0") {
		t.Fatalf("kw0 is back but has no XDP program:\n%s", dump())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-done
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, dump())
	}
	if xdpAttached(t, ns, "kw0") {
		t.Fatal("XDP program left attached")
	}
}

func waitLog(t *testing.T, ctx context.Context, dump func() string, want string) {
	t.Helper()
	for !strings.Contains(dump(), want) {
		select {
		case <-ctx.Done():
			t.Fatalf("no %s in the log:\n%s", want, dump())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestRunSIGTERMDetaches runs `knockwatch run` on a veth in a fresh network
// namespace and checks that after SIGTERM it exits 0 and no XDP program is
// left on the interface.
func TestRunSIGTERMDetaches(t *testing.T) {
	testenv.RequirePrivileged(t)
	ns := vethNS(t, "kwrun")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"--iface", "kw0", "--xdp-mode", "native", "--events-http", "127.0.0.1:0",
		"--metrics", "127.0.0.1:0", "--log-format", "json"}, smallSensor...)
	cmd, dump, done := helperRun(t, ctx, ns, args)
	if !xdpAttached(t, ns, "kw0") {
		t.Fatalf("ready, but no XDP program on kw0")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-done
	if err := cmd.Wait(); err != nil {
		t.Fatalf("knockwatch run after SIGTERM: %v\n%s", err, dump())
	}
	if xdpAttached(t, ns, "kw0") {
		t.Fatalf("an XDP program is still attached to kw0 after SIGTERM:\n%s", dump())
	}
	if !strings.Contains(dump(), `"msg":"detached"`) {
		t.Fatalf("no detach logged:\n%s", dump())
	}
}

func xdpAttached(t *testing.T, ns *netns.Namespace, ifn string) bool {
	t.Helper()
	var attached bool
	if err := ns.Do(func() error {
		l, err := netlink.LinkByName(ifn)
		if err != nil {
			return err
		}
		x := l.Attrs().Xdp
		attached = x != nil && (x.Attached || x.ProgId != 0)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return attached
}

// signalContext is main's signal handling, for the helper process.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func flagErrHelp() error { return flag.ErrHelp }
