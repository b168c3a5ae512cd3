//go:build linux

package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Veth creates a veth pair: aName in a, its peer bName in b (a and b may be
// the same namespace). Both ends are created directly in their namespaces
// and left down.
func Veth(a *Namespace, aName string, b *Namespace, bName string) error {
	a.track(aName)
	if b != a {
		b.track(bName)
	}
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: aName}, PeerName: bName}
	if b != a {
		v.PeerNamespace = netlink.NsFd(int(b.handle))
	}
	if err := a.nl.LinkAdd(v); err != nil {
		return fmt.Errorf("create veth %s/%s <-> %s/%s: %w", a.Role, aName, b.Role, bName, err)
	}
	return nil
}

// link looks an interface up by name inside the namespace.
func (n *Namespace) link(name string) (netlink.Link, error) {
	l, err := n.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find interface %s in %s: %w", name, n.Name, err)
	}
	return l, nil
}

// Index returns the interface index of name inside the namespace.
func (n *Namespace) Index(name string) (int, error) {
	l, err := n.link(name)
	if err != nil {
		return 0, err
	}
	return l.Attrs().Index, nil
}

// LinkUp sets an interface up.
func (n *Namespace) LinkUp(name string) error {
	l, err := n.link(name)
	if err != nil {
		return err
	}
	if err := n.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up in %s: %w", name, n.Name, err)
	}
	return nil
}

// WaitUp waits until the kernel reports an interface operationally up.
// Setting a link up is not enough: until the kernel's link watcher has
// seen the carrier (it batches events, up to a second apart) the link's
// queue discards every packet, which would cost a test its first SYN.
func (n *Namespace) WaitUp(name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		l, err := n.link(name)
		if err != nil {
			return err
		}
		a := l.Attrs()
		if a.OperState == netlink.OperUp || (a.OperState == netlink.OperUnknown && a.RawFlags&unix.IFF_RUNNING != 0) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s in %s: still %v after %v", name, n.Name, a.OperState, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// HardwareAddr returns an interface's MAC address.
func (n *Namespace) HardwareAddr(name string) (net.HardwareAddr, error) {
	l, err := n.link(name)
	if err != nil {
		return nil, err
	}
	return l.Attrs().HardwareAddr, nil
}

// AddAddr assigns an address with its prefix length (10.0.0.5/24) to an
// interface. IPv6 addresses skip duplicate address detection, so they are
// usable at once.
func (n *Namespace) AddAddr(name string, p netip.Prefix) error {
	l, err := n.link(name)
	if err != nil {
		return err
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := n.nl.AddrAdd(l, a); err != nil {
		return fmt.Errorf("add address %v to %s in %s: %w", p, name, n.Name, err)
	}
	return nil
}

// AddBridge creates a bridge (up, no STP, so ports forward at once).
func (n *Namespace) AddBridge(name string) error {
	n.track(name)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := n.nl.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge %s in %s: %w", name, n.Name, err)
	}
	return n.LinkUp(name)
}

// SetMaster enslaves an interface to a bridge.
func (n *Namespace) SetMaster(name, bridge string) error {
	l, err := n.link(name)
	if err != nil {
		return err
	}
	br, err := n.link(bridge)
	if err != nil {
		return err
	}
	if err := n.nl.LinkSetMasterByIndex(l, br.Attrs().Index); err != nil {
		return fmt.Errorf("add %s to bridge %s in %s: %w", name, bridge, n.Name, err)
	}
	return nil
}

// Direction selects which packets of an interface a mirror copies.
type Direction uint8

// Mirror directions: Ingress copies what the interface receives, Egress
// what it sends.
const (
	Ingress Direction = 1 << iota
	Egress
	Both = Ingress | Egress
)

// Mirror copies every packet of interface from, in the given directions,
// to interface to (both in this namespace), the way a switch's span port
// does. It adds a clsact qdisc to from and, per direction, a u32 filter
// matching everything (`u32 match u32 0 0`) with the action
// `mirred egress mirror dev TO`. u32 is used because matchall and flower
// are not built into every kernel.
func (n *Namespace) Mirror(from, to string, dir Direction) error {
	if dir&Both == 0 {
		return fmt.Errorf("mirror %s to %s: no direction", from, to)
	}
	src, err := n.link(from)
	if err != nil {
		return err
	}
	dst, err := n.link(to)
	if err != nil {
		return err
	}
	q := &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: src.Attrs().Index,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_CLSACT,
	}}
	// A second mirror of the same interface (a tap's other direction)
	// reuses the qdisc and its filters.
	if err := n.nl.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc to %s in %s: %w", from, n.Name, err)
	}
	for _, d := range []struct {
		dir    Direction
		parent uint32
		name   string
	}{{Ingress, netlink.HANDLE_MIN_INGRESS, "ingress"}, {Egress, netlink.HANDLE_MIN_EGRESS, "egress"}} {
		if dir&d.dir == 0 {
			continue
		}
		f := &netlink.U32{
			FilterAttrs: netlink.FilterAttrs{
				LinkIndex: src.Attrs().Index,
				Parent:    d.parent,
				Priority:  1,
				Protocol:  unix.ETH_P_ALL,
			},
			// One key, mask 0 value 0 at offset 0: matches every packet.
			Sel: &netlink.TcU32Sel{Flags: netlink.TC_U32_TERMINAL, Nkeys: 1, Keys: []netlink.TcU32Key{{}}},
			Actions: []netlink.Action{&netlink.MirredAction{
				ActionAttrs:  netlink.ActionAttrs{Action: netlink.TC_ACT_PIPE},
				MirredAction: netlink.TCA_EGRESS_MIRROR,
				Ifindex:      dst.Attrs().Index,
			}},
		}
		if err := n.nl.FilterAdd(f); err != nil {
			return fmt.Errorf("mirror %s %s to %s in %s: %w", from, d.name, to, n.Name, err)
		}
	}
	return nil
}

// SetTxChecksum turns transmit checksum offload of an interface on or off
// (ethtool -K name tx on|off). A veth offloads by default: the packets of
// its namespace's stack leave with only the pseudo-header folded into the
// TCP checksum, to be finished by a NIC that never comes, and a capture of
// them shows checksums no wire would carry. With it off the stack writes
// complete checksums, as a real host's packets have on a real link.
func (n *Namespace) SetTxChecksum(name string, on bool) error {
	return n.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("set tx checksum of %s in %s: open socket: %w", name, n.Name, err)
		}
		defer unix.Close(fd)
		val := struct{ cmd, data uint32 }{cmd: unix.ETHTOOL_STXCSUM}
		if on {
			val.data = 1
		}
		var ifr struct {
			name [unix.IFNAMSIZ]byte
			data uintptr
			_    [16]byte
		}
		copy(ifr.name[:], name)
		ifr.data = uintptr(unsafe.Pointer(&val))
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
			return fmt.Errorf("set tx checksum of %s in %s: %w", name, n.Name, errno)
		}
		runtime.KeepAlive(&val)
		return nil
	})
}
