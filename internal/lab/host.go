//go:build linux

package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/knockwatch/knockwatch/internal/netns"
)

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
	if l.cfg.OneWayPort {
		return l.startFileServer(ctx)
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
	sweepDirs()
	var err error
	if l.dir, err = os.MkdirTemp("", fmt.Sprintf("%s%d-", dirPrefix, os.Getpid())); err != nil {
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
	if l.cfg.OneWayPort {
		short, _, _ := strings.Cut(fileServerName, ".")
		hosts += fmt.Sprintf("%v %s %s\n%v %s %s\n", l.topo.Files.IP, fileServerName, short, l.topo.Files.IP6, fileServerName, short)
	}
	if err := os.WriteFile(filepath.Join(l.dir, "hosts"), []byte(hosts), 0o644); err != nil {
		return fmt.Errorf("write hosts file: %w", err)
	}
	if l.pki, err = newLabPKI(l.dir, mgmtSensor.Addr()); err != nil {
		return err
	}
	return nil
}

// dirPrefix names the lab's directories: knockwatch-lab-PID-RANDOM.
const dirPrefix = "knockwatch-lab-"

// sweepDirs removes the directories of labs whose process is gone (killed
// before they could clean up), as netns.NewEnv does for their namespaces.
func sweepDirs() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*-*"))
	for _, m := range matches {
		pidStr, _, ok := strings.Cut(strings.TrimPrefix(filepath.Base(m), dirPrefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // still running
		}
		_ = syscall.Unmount(filepath.Join(m, "bpf"), syscall.MNT_DETACH) // a --restart lab's pins
		_ = os.RemoveAll(m)
	}
}
