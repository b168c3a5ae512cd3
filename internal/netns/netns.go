//go:build linux

// Package netns builds throw-away network topologies out of Linux network
// namespaces, veth pairs, a bridge and tc mirrors, for the integration tests
// and for `knockwatch lab`.
//
// Everything lives inside named namespaces (/run/netns/NAME, visible to
// `ip netns list` and usable with `ip netns exec`); nothing is created in the
// caller's own namespace. Removing the namespaces therefore removes every
// link, address, qdisc and firewall rule with them.
//
// An Env owns the namespaces of one run. Their names are
// PREFIX-PID-RANDOM-ROLE, so two runs never collide and a run that was
// killed before it could clean up is recognised by its dead PID: NewEnv
// removes such orphans of its prefix (Sweep). Each namespace is recorded in
// its Env before it is created, so Close removes whatever exists even after
// a partial failure, and Close is safe to call more than once.
//
// Code runs inside a namespace with Namespace.Do (a locked OS thread moved
// into the namespace and moved back afterwards); external programs run with
// Namespace.Command (`ip netns exec`). Sockets keep the namespace they were
// created in, so a listener opened inside Do may be used from anywhere.
//
// Everything here needs root (CAP_SYS_ADMIN for the namespaces and mounts,
// CAP_NET_ADMIN for links and tc).
package netns

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RunDir is where named network namespaces are bind-mounted, as iproute2
// expects them.
const RunDir = "/run/netns"

var (
	prefixRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,15}$`)
	roleRE   = regexp.MustCompile(`^[a-z][a-z0-9]{0,15}$`)
)

// Env owns the namespaces of one run and removes them on Close.
type Env struct {
	prefix string
	id     string // PID-RANDOM

	mu     sync.Mutex
	nss    []*Namespace
	closed bool
	done   chan struct{} // closed when the first Close has finished
	err    error         // that Close's result
}

// NewEnv starts a run whose namespaces are named PREFIX-PID-RANDOM-ROLE.
// prefix is lowercase letters and digits, starting with a letter. NewEnv
// first removes orphaned namespaces of the same prefix (left by runs whose
// process no longer exists); failing to remove one is not an error for the
// new run.
func NewEnv(prefix string) (*Env, error) {
	if !prefixRE.MatchString(prefix) {
		return nil, fmt.Errorf("create netns env: prefix %q: want 1-16 lowercase letters or digits, starting with a letter", prefix)
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("create netns env: read random suffix: %w", err)
	}
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return nil, fmt.Errorf("create netns env: %w", err)
	}
	_, _ = Sweep(prefix)
	return &Env{prefix: prefix, id: strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:]), done: make(chan struct{})}, nil
}

// Prefix returns the prefix the Env names its namespaces with.
func (e *Env) Prefix() string { return e.prefix }

// Namespaces returns the namespaces created so far, in creation order.
func (e *Env) Namespaces() []*Namespace {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*Namespace(nil), e.nss...)
}

// Namespace creates a new named network namespace for role (lowercase
// letters and digits) with its loopback up.
func (e *Env) Namespace(role string) (*Namespace, error) {
	if !roleRE.MatchString(role) {
		return nil, fmt.Errorf("create namespace: role %q: want 1-16 lowercase letters or digits, starting with a letter", role)
	}
	n := &Namespace{Name: e.prefix + "-" + e.id + "-" + role, Role: role, handle: vnetns.None()}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, fmt.Errorf("create namespace %s: env closed", n.Name)
	}
	for _, o := range e.nss {
		if o.Role == role {
			e.mu.Unlock()
			return nil, fmt.Errorf("create namespace %s: role %q already exists", n.Name, role)
		}
	}
	// Recorded before anything exists, so Close removes a half-made one.
	e.nss = append(e.nss, n)
	e.mu.Unlock()

	if err := createNamed(n.Path()); err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", n.Name, err)
	}
	h, err := vnetns.GetFromPath(n.Path())
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", n.Name, err)
	}
	n.handle = h
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("open netlink in namespace %s: %w", n.Name, err)
	}
	n.nl = nl
	if err := n.LinkUp("lo"); err != nil {
		return nil, err
	}
	return n, nil
}

// Close removes every namespace of the Env (and so every link in them),
// including half-made ones. It is idempotent and safe to call concurrently:
// every call returns once the removal is complete, with its result.
func (e *Env) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		<-e.done
		return e.err
	}
	e.closed = true
	nss := e.nss
	e.mu.Unlock()
	var errs []error
	for i := len(nss) - 1; i >= 0; i-- {
		if err := nss[i].remove(); err != nil {
			errs = append(errs, err)
		}
	}
	e.err = errors.Join(errs...)
	close(e.done)
	return e.err
}

// Namespace is one named network namespace of an Env.
type Namespace struct {
	// Name is the namespace's name under /run/netns (for `ip netns exec`).
	Name string
	// Role is the short role the Env was asked for (attacker, host...).
	Role string

	handle vnetns.NsHandle
	nl     *netlink.Handle

	mu    sync.Mutex
	links []string // created in this namespace, deleted first on Close
}

// Path is the namespace's bind mount.
func (n *Namespace) Path() string { return filepath.Join(RunDir, n.Name) }

// Netlink returns a netlink handle bound to the namespace, for what this
// package does not wrap. Do not close it; Env.Close does.
func (n *Namespace) Netlink() *netlink.Handle { return n.nl }

// Handle returns the namespace's file descriptor handle (owned by the Env).
func (n *Namespace) Handle() vnetns.NsHandle { return n.handle }

// remove deletes the links created here, closes the handles and removes
// the bind mount. The kernel frees the namespace, and every device still
// in it, when the last reference (an open socket, a running process) goes.
func (n *Namespace) remove() error {
	var errs []error
	n.mu.Lock()
	links := n.links
	n.links = nil
	n.mu.Unlock()
	if n.nl != nil {
		for i := len(links) - 1; i >= 0; i-- {
			l, err := n.nl.LinkByName(links[i])
			if err != nil {
				continue // gone with its peer, or never made
			}
			if err := n.nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete link %s in %s: %w", links[i], n.Name, err))
			}
		}
		n.nl.Close()
		n.nl = nil
	}
	if n.handle.IsOpen() {
		n.handle.Close()
	}
	if err := removeNamed(n.Path()); err != nil {
		errs = append(errs, fmt.Errorf("remove namespace %s: %w", n.Name, err))
	}
	return errors.Join(errs...)
}

func (n *Namespace) track(link string) {
	n.mu.Lock()
	n.links = append(n.links, link)
	n.mu.Unlock()
}

// createNamed makes a new network namespace and bind-mounts it at path,
// from a locked thread that returns to its namespace afterwards.
func createNamed(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("read current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("unshare: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		merr := unix.Mount(src, path, "none", unix.MS_BIND, "")
		if merr != nil {
			merr = fmt.Errorf("bind-mount %s: %w", path, merr)
		}
		if err := vnetns.Set(orig); err != nil {
			done <- errors.Join(merr, fmt.Errorf("return to original namespace: %w", err))
			return // thread stays locked and is discarded
		}
		runtime.UnlockOSThread()
		done <- merr
	}()
	return <-done
}

// removeNamed unmounts and removes a namespace's bind mount; a missing or
// never-mounted file is fine.
func removeNamed(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Sweep removes the namespaces named PREFIX-PID-... whose PID no longer
// exists: the leftovers of runs that were killed before they could clean
// up. It returns the names it removed.
func Sweep(prefix string) ([]string, error) {
	ents, err := os.ReadDir(RunDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("sweep namespaces: %w", err)
	}
	var removed []string
	var errs []error
	for _, ent := range ents {
		pid, ok := ownerPID(prefix, ent.Name())
		if !ok || processAlive(pid) {
			continue
		}
		if err := removeNamed(filepath.Join(RunDir, ent.Name())); err != nil {
			errs = append(errs, fmt.Errorf("sweep namespace %s: %w", ent.Name(), err))
			continue
		}
		removed = append(removed, ent.Name())
	}
	return removed, errors.Join(errs...)
}

// ownerPID parses PREFIX-PID-RANDOM-ROLE.
func ownerPID(prefix, name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix+"-")
	if !ok {
		return 0, false
	}
	parts := strings.SplitN(rest, "-", 3)
	if len(parts) != 3 {
		return 0, false
	}
	pid, err := strconv.Atoi(parts[0])
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
