//go:build linux

package netns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
)

// newEnv makes an Env whose Close is registered before anything is made.
func newEnv(t *testing.T, prefix string) *Env {
	t.Helper()
	testenv.RequirePrivileged(t)
	e, err := NewEnv(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close env: %v", err)
		}
	})
	return e
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// ipNetnsList is what `ip netns list` shows.
func ipNetnsList(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	return string(out)
}

func TestNamespaceLifecycle(t *testing.T) {
	e := newEnv(t, "kwnstest")
	a, err := e.Namespace("left")
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.Namespace("right")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a.Name, fmt.Sprintf("kwnstest-%d-", os.Getpid())) || !strings.HasSuffix(a.Name, "-left") {
		t.Errorf("name %q: want kwnstest-PID-RANDOM-left", a.Name)
	}
	if err := Veth(a, "v-left", b, "v-right"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		ns   *Namespace
		ifc  string
		addr string
	}{{a, "v-left", "192.0.2.1/24"}, {b, "v-right", "192.0.2.2/24"}, {a, "v-left", "2001:db8::1/64"}, {b, "v-right", "2001:db8::2/64"}} {
		if err := s.ns.AddAddr(s.ifc, netip.MustParsePrefix(s.addr)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.LinkUp("v-left"); err != nil {
		t.Fatal(err)
	}
	if err := b.LinkUp("v-right"); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		ns  *Namespace
		ifc string
	}{{a, "v-left"}, {b, "v-right"}, {a, "lo"}} {
		if err := w.ns.WaitUp(w.ifc, UpTimeout); err != nil {
			t.Fatal(err)
		}
	}
	list := ipNetnsList(t)
	for _, n := range []*Namespace{a, b} {
		if !strings.Contains(list, n.Name) {
			t.Errorf("ip netns list does not show %s:\n%s", n.Name, list)
		}
	}
	if err := a.Run(context.Background(), "ip", "link", "show", "v-left"); err != nil {
		t.Errorf("ip netns exec: %v", err)
	}

	// A TCP round trip across the veth, both address families.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, addr := range []string{"192.0.2.2", "[2001:db8::2]"} {
		l, err := b.Listen(ctx, "tcp", addr+":0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.Copy(c, c)
			c.Close()
		}()
		c, err := a.Dial(ctx, &net.Dialer{Timeout: 2 * time.Second}, "tcp", l.Addr().String())
		if err != nil {
			t.Fatalf("dial %v from %s: %v", l.Addr(), a.Name, err)
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("knock")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "knock" {
			t.Fatalf("echo: %q, %v", buf, err)
		}
		c.Close()
		l.Close()
	}
	// The caller's namespace has no such interface.
	if _, err := net.InterfaceByName("v-left"); err == nil {
		t.Error("v-left is visible outside its namespace")
	}

	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	for _, n := range []*Namespace{a, b} {
		if exists(n.Path()) {
			t.Errorf("%s still exists after Close", n.Path())
		}
	}
	if list := ipNetnsList(t); strings.Contains(list, e.id) {
		t.Errorf("ip netns list still shows the env's namespaces:\n%s", list)
	}
	if _, err := e.Namespace("late"); err == nil {
		t.Error("Namespace after Close: want an error")
	}
}

// TestDoRestoresThreads checks that Do moves its thread back: after many
// calls, every thread the runtime hands out is still in our namespace.
func TestDoRestoresThreads(t *testing.T) {
	e := newEnv(t, "kwnstest")
	n, err := e.Namespace("inside")
	if err != nil {
		t.Fatal(err)
	}
	orig, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	for i := 0; i < 20; i++ {
		err := n.Do(func() error {
			ifs, err := net.Interfaces()
			if err != nil {
				return err
			}
			if len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Flags&net.FlagUp == 0 {
				return fmt.Errorf("inside: interfaces %v, want only lo, up", ifs)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Do(func() error { return errors.New("boom") }); err == nil || err.Error() != "boom" {
		t.Errorf("Do error: got %v, want boom", err)
	}
	func() {
		defer func() {
			if p := recover(); p != "kaboom" {
				t.Errorf("Do panic: got %v, want kaboom", p)
			}
		}()
		n.Do(func() error { panic("kaboom") })
	}()
	errs := make(chan error, 64)
	for i := 0; i < cap(errs); i++ {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cur, err := vnetns.Get()
			if err != nil {
				errs <- err
				return
			}
			defer cur.Close()
			if !cur.Equal(orig) {
				errs <- fmt.Errorf("thread %d left in namespace %v", unix.Gettid(), cur)
				return
			}
			errs <- nil
		}()
	}
	for i := 0; i < cap(errs); i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestPartialFailureCleansUp(t *testing.T) {
	e := newEnv(t, "kwnstest")
	if _, err := e.Namespace("Bad-Role"); err == nil {
		t.Error("bad role accepted")
	}
	a, err := e.Namespace("one")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Namespace("one"); err == nil {
		t.Error("duplicate role accepted")
	}
	b, err := e.Namespace("two")
	if err != nil {
		t.Fatal(err)
	}
	if err := Veth(a, "ok0", b, "ok1"); err != nil {
		t.Fatal(err)
	}
	if err := Veth(a, "name-far-too-long-for-linux", b, "x"); err == nil {
		t.Error("veth with a 27-character name accepted")
	}
	if err := a.Mirror("ok0", "nosuch", Both); err == nil {
		t.Error("mirror to a missing interface accepted")
	}
	if err := e.Close(); err != nil {
		t.Fatalf("close after failures: %v", err)
	}
	for _, n := range []*Namespace{a, b} {
		if exists(n.Path()) {
			t.Errorf("%s left behind", n.Path())
		}
	}
}

// rootLinks lists the caller's interfaces.
func rootLinks(t *testing.T) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return strings.Join(names, ",")
}

func TestNewEnvRejectsBadPrefix(t *testing.T) {
	for _, p := range []string{"", "Kw", "kw-x", "1kw", "kw/x", "abcdefghijklmnopq"} {
		if _, err := NewEnv(p); err == nil {
			t.Errorf("prefix %q accepted", p)
		}
	}
}

// TestSweepRemovesOrphans leaves a namespace named after a dead process
// and checks that NewEnv removes it but not a live run's.
func TestSweepRemovesOrphans(t *testing.T) {
	live := newEnv(t, "kwnssweep")
	keep, err := live.Namespace("live")
	if err != nil {
		t.Fatal(err)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(RunDir, fmt.Sprintf("kwnssweep-%d-abcdef-lost", dead.Process.Pid))
	t.Cleanup(func() { removeNamed(orphan) })
	if err := createNamed(orphan); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(RunDir, fmt.Sprintf("kwnssweepx-%d-abcdef-lost", dead.Process.Pid))
	t.Cleanup(func() { removeNamed(other) })
	if err := createNamed(other); err != nil {
		t.Fatal(err)
	}
	e2, err := NewEnv("kwnssweep")
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if exists(orphan) {
		t.Errorf("orphan %s not swept", orphan)
	}
	if !exists(keep.Path()) {
		t.Errorf("live namespace %s swept", keep.Path())
	}
	if !exists(other) {
		t.Errorf("namespace of another prefix %s swept", other)
	}
}

// helperEnv names the variable that turns the test binary into a run
// that builds a topology and waits to be interrupted.
const helperEnv = "KW_NETNS_HELPER"

// TestMain turns the test binary into the helper process of
// TestInterruptedRunLeavesNothing when it starts it with helperEnv set.
func TestMain(m *testing.M) {
	if prefix := os.Getenv(helperEnv); prefix != "" {
		helperProcess(prefix)
	}
	os.Exit(m.Run())
}

// helperProcess builds a topology and waits to be interrupted.
func helperProcess(prefix string) {
	e, err := NewEnv(prefix)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	e.CloseOnSignal()
	if _, err := e.NewTopology(TopologyConfig{}); err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	for _, n := range e.Namespaces() {
		fmt.Println("ns", n.Name)
	}
	fmt.Println("ready")
	select {}
}

// TestInterruptedRunLeavesNothing interrupts a process holding a topology:
// SIGINT/SIGTERM remove it before the process dies; after SIGKILL the next
// NewEnv of the same prefix sweeps it.
func TestInterruptedRunLeavesNothing(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			prefix := "kwnsint" + strings.ToLower(strings.TrimPrefix(unix.SignalName(sig), "SIG"))
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), helperEnv+"="+prefix)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); Sweep(prefix) })
			var names []string
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				line := sc.Text()
				if name, ok := strings.CutPrefix(line, "ns "); ok {
					names = append(names, name)
				}
				if strings.HasPrefix(line, "error:") {
					t.Fatal(line)
				}
				if line == "ready" {
					break
				}
			}
			if len(names) != 5 {
				t.Fatalf("helper made %d namespaces, want 5", len(names))
			}
			go io.Copy(io.Discard, out)
			if sig != syscall.SIGKILL && signal.Ignored(sig) {
				// Inherited as ignored (a background job): the helper must
				// leave it ignored, keep running and keep its namespaces.
				if err := cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
				time.Sleep(300 * time.Millisecond)
				if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
					t.Fatalf("helper died of an ignored %v: %v", sig, err)
				}
				for _, n := range names {
					if !exists(filepath.Join(RunDir, n)) {
						t.Fatalf("ignored %v removed %s", sig, n)
					}
				}
				t.Logf("%v is ignored in this process; checked that it stays ignored", sig)
				sig = syscall.SIGTERM
				if signal.Ignored(sig) {
					sig = syscall.SIGKILL
				}
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err = cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != sig {
				t.Errorf("helper exit: %v, want killed by %v", err, sig)
			}
			if sig == syscall.SIGKILL {
				for _, n := range names {
					if !exists(filepath.Join(RunDir, n)) {
						t.Fatalf("%s vanished without a handler", n)
					}
				}
				e := newEnv(t, prefix) // sweeps the dead run's namespaces
				_ = e
			}
			list := ipNetnsList(t)
			for _, n := range names {
				if exists(filepath.Join(RunDir, n)) || strings.Contains(list, n) {
					t.Errorf("%s left behind after %v", n, sig)
				}
			}
		})
	}
}
