//go:build linux

package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"strings"

	vnetns "github.com/vishvananda/netns"
)

// Do runs fn on an OS thread moved into the namespace and returns its
// error. Sockets fn creates belong to the namespace; goroutines fn starts
// do not run in it. fn runs on another goroutine, so it must not call
// t.Fatal; a panic in fn is re-raised in the caller. If the thread cannot
// be moved back, it is left locked and Go discards it when fn's goroutine
// ends, so no other code ever runs in the wrong namespace.
func (n *Namespace) Do(fn func() error) error {
	type result struct {
		err   error
		panic any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("enter namespace %s: read current namespace: %w", n.Name, err)}
			return
		}
		defer orig.Close()
		if err := vnetns.Set(n.handle); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("enter namespace %s: %w", n.Name, err)}
			return
		}
		var r result
		func() {
			defer func() {
				if p := recover(); p != nil {
					r.panic = p
				}
			}()
			r.err = fn()
		}()
		if err := vnetns.Set(orig); err != nil {
			// Keep the thread locked: it dies with this goroutine.
			r.err = errors.Join(r.err, fmt.Errorf("leave namespace %s: %w", n.Name, err))
			done <- r
			return
		}
		runtime.UnlockOSThread()
		done <- r
	}()
	r := <-done
	if r.panic != nil {
		panic(r.panic)
	}
	return r.err
}

// Command returns a command that runs name with args inside the namespace
// (`ip netns exec NAME ...`). The caller must wait for it: a process still
// running keeps the namespace alive after Close (without its name).
func (n *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside the namespace and returns an error that
// carries its combined output when it fails.
func (n *Namespace) Run(ctx context.Context, name string, args ...string) error {
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("run %s in %s: %w: %s", strings.Join(append([]string{name}, args...), " "), n.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Nft loads an nftables script (`nft -f -`) inside the namespace.
func (n *Namespace) Nft(ctx context.Context, script string) error {
	cmd := n.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("load nftables script in %s: %w: %s", n.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Listen opens a listener inside the namespace (see net.ListenConfig).
func (n *Namespace) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = (&net.ListenConfig{}).Listen(ctx, network, address)
		return err
	})
	return l, err
}

// Dial connects from inside the namespace with d (nil: a zero Dialer).
// Use an IP literal: resolving a name may run on threads outside the
// namespace.
func (n *Namespace) Dial(ctx context.Context, d *net.Dialer, network, address string) (net.Conn, error) {
	if d == nil {
		d = &net.Dialer{}
	}
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}
