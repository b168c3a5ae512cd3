//go:build linux

package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/knockwatch/knockwatch/internal/netns"
)

// capture records what the sensor sees with tcpdump, on the switch's span
// port (the mirror's egress, before XDP on the capture interface drops the
// copies), so a lab run can become a replay corpus case recorded with real
// tools.
type capture struct {
	cmd  *exec.Cmd
	done chan error
}

// startCapture runs tcpdump on every span port of t, writing one pcap
// (span mode) or one per direction (tap mode: FILE and FILE with "-1"
// before the extension), and returns once tcpdump is listening.
func startCapture(ctx context.Context, t *netns.Topology, file string, tap bool) ([]*capture, error) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		return nil, errors.New("capture: tcpdump not found (apt-get install tcpdump)")
	}
	ifaces := []string{netns.SpanIface}
	if tap {
		ifaces = append(ifaces, netns.TapSpanIface)
	}
	var caps []*capture
	for i, ifc := range ifaces {
		out := file
		if i > 0 {
			ext := filepath.Ext(file)
			out = strings.TrimSuffix(file, ext) + fmt.Sprintf("-%d", i) + ext
		}
		abs, err := filepath.Abs(out)
		if err != nil {
			return caps, fmt.Errorf("capture: %w", err)
		}
		cmd := t.Switch.Command(ctx, "tcpdump", "-i", ifc, "-n", "-U", "-s", "256", "-w", abs, "tcp or arp")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			return caps, fmt.Errorf("capture: %w", err)
		}
		if err := cmd.Start(); err != nil {
			return caps, fmt.Errorf("capture: start tcpdump: %w", err)
		}
		c := &capture{cmd: cmd, done: make(chan error, 1)}
		caps = append(caps, c)
		ready := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				if strings.Contains(sc.Text(), "listening on") {
					close(ready)
					break
				}
			}
			for sc.Scan() {
			}
			c.done <- cmd.Wait()
		}()
		select {
		case <-ready:
		case <-time.After(10 * time.Second):
			return caps, fmt.Errorf("capture: tcpdump on %s did not start listening", ifc)
		}
	}
	return caps, nil
}

// stop ends tcpdump with SIGINT so it flushes the file.
func (c *capture) stop() error {
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-c.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil // tcpdump exits non-zero on a signal
		}
		return err
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		return errors.New("capture: tcpdump did not stop")
	}
}

// saveEvent appends the forwarded event to the capture's events file, as
// wevtutil qe /f:xml prints events (one <Event> after another).
func saveEvent(file string, ev []byte) error {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("save event: %w", err)
	}
	if _, err := f.Write(append(ev, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("save event: %w", err)
	}
	return f.Close()
}
