//go:build linux

package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/knockwatch/knockwatch/internal/netns"
)

// knockDaemon is Debian's knockd on the host: the backdoor's side of the
// knock. It sniffs the host's interface (before the firewall, so it sees
// dropped SYNs too) and, on the right sequence, runs a command that opens
// the port in the host's firewall and tells the lab who knocked.
type knockDaemon struct {
	cmd     *exec.Cmd
	logs    *tail
	opened  string // file the command writes the knocker's address to
	command string
	exited  chan struct{}
}

func lookKnockd() (string, error) {
	p, err := exec.LookPath("knockd")
	if err != nil {
		return "", fmt.Errorf("find knockd: %w (apt-get install knockd, or use --knockd off)", err)
	}
	return p, nil
}

// startKnockd writes a knockd configuration for the lab's sequence to dir
// and starts knockd on the host's interface; it returns once knockd
// listens.
func startKnockd(ctx context.Context, host *netns.Namespace, dir string, c Config) (*knockDaemon, error) {
	bin, err := lookKnockd()
	if err != nil {
		return nil, err
	}
	d := &knockDaemon{logs: newTail(100), opened: filepath.Join(dir, "knockd-opened"), exited: make(chan struct{})}
	d.command = fmt.Sprintf("echo %%IP%% > %s", d.opened)
	if c.Scenario == ScenarioS0 {
		nft, err := exec.LookPath("nft")
		if err != nil {
			return nil, fmt.Errorf("find nft: %w", err)
		}
		d.command = fmt.Sprintf("%s add element inet %s allowed { %d } && %s", nft, nftTable, c.OpenPort, d.command)
	}
	conf := fmt.Sprintf(`# knockwatch lab: the host's port-knocking backdoor
[options]
	LogFile = %s

[knockwatch-lab]
	sequence    = %s
	seq_timeout = 15
	tcpflags    = syn
	command     = %s
`, filepath.Join(dir, "knockd.log"), portList(c.KnockPorts), d.command)
	confPath := filepath.Join(dir, "knockd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("write knockd config: %w", err)
	}
	args := []string{"-c", confPath, "-i", netns.EndpointIface, "-v"}
	if !c.IPv6 {
		args = append(args, "-4")
	}
	d.cmd = host.Command(context.Background(), bin, args...)
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start knockd: %w", err)
	}
	d.cmd.Stderr = d.cmd.Stdout
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start knockd: %w", err)
	}
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		seen := false
		for sc.Scan() {
			d.logs.add(sc.Text())
			if !seen && strings.HasPrefix(sc.Text(), "listening on") {
				seen = true
				close(listening)
			}
		}
		_ = d.cmd.Wait()
		close(d.exited)
	}()
	select {
	case <-listening:
		return d, nil
	case <-d.exited:
		err = fmt.Errorf("knockd exited at start: %s", strings.Join(d.logs.last(5), "; "))
	case <-time.After(10 * time.Second):
		err = errors.New("knockd did not start listening within 10s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	return nil, errors.Join(err, d.stop())
}

// waitOpen waits until knockd has run its command and returns the address
// it was run for.
func (d *knockDaemon) waitOpen(ctx context.Context, timeout time.Duration) (netip.Addr, error) {
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(d.opened)
		if err == nil && strings.HasSuffix(string(b), "\n") {
			a, err := netip.ParseAddr(strings.TrimSpace(string(b)))
			if err != nil {
				return netip.Addr{}, fmt.Errorf("knockd command wrote %q: %w", b, err)
			}
			return a, nil
		}
		if time.Now().After(deadline) {
			return netip.Addr{}, fmt.Errorf("knockd did not open the port within %v of the knock (knockd said: %s)",
				timeout, strings.Join(d.logs.last(6), "; "))
		}
		select {
		case <-d.exited:
			return netip.Addr{}, fmt.Errorf("knockd exited: %s", strings.Join(d.logs.last(5), "; "))
		case <-ctx.Done():
			return netip.Addr{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop ends knockd (it holds the host namespace while it runs).
func (d *knockDaemon) stop() error {
	select {
	case <-d.exited:
		return nil
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		return nil
	case <-time.After(3 * time.Second):
	}
	_ = d.cmd.Process.Kill()
	<-d.exited
	return errors.New("stop knockd: killed after SIGTERM was ignored for 3s")
}
