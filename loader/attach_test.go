package loader

import (
	"runtime"
	"strings"
	"testing"

	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inFreshNetns runs f on a thread moved into a new network namespace, which
// is dropped afterwards with everything in it.
func inFreshNetns(t *testing.T, f func()) {
	t.Helper()
	testenv.RequirePrivileged(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		ns, err := netns.New()
		if err != nil {
			t.Errorf("new netns: %v", err)
			return
		}
		defer ns.Close()
		f()
	}()
	<-done
}

func TestAttachErrorsAndModes(t *testing.T) {
	s := loadReplay(t, nil)
	inFreshNetns(t, func() {
		if _, err := s.Attach("kw-nope0", sensor.ModeAuto); err == nil || !strings.Contains(err.Error(), "no such interface") {
			t.Errorf("missing interface: %v", err)
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "kw-cap0"}, PeerName: "kw-cap1"}
		if err := netlink.LinkAdd(veth); err != nil {
			t.Errorf("add veth: %v", err)
			return
		}
		if _, err := s.Attach("kw-cap0", sensor.ModeNative); err == nil || !strings.Contains(err.Error(), "down") {
			t.Errorf("down interface: %v", err)
		}
		for _, name := range []string{"kw-cap0", "kw-cap1"} {
			l, _ := netlink.LinkByName(name)
			if err := netlink.LinkSetUp(l); err != nil {
				t.Errorf("set %s up: %v", name, err)
				return
			}
		}
		for _, m := range []sensor.Mode{sensor.ModeNative, sensor.ModeGeneric, sensor.ModeAuto} {
			got, err := s.Attach("kw-cap0", m)
			if err != nil {
				t.Errorf("attach %s: %v", m, err)
				continue
			}
			if want := map[sensor.Mode]sensor.Mode{sensor.ModeAuto: sensor.ModeNative}[m]; want != "" && got != want {
				t.Errorf("auto took %s, want %s on veth", got, want)
			}
			l, _ := netlink.LinkByName("kw-cap0")
			if l.Attrs().Xdp == nil || !l.Attrs().Xdp.Attached {
				t.Errorf("%s: no XDP program on the link after attach", m)
			}
			if _, err := s.Attach("kw-cap0", m); err == nil {
				t.Errorf("second attach to the same interface succeeded")
			}
			if err := s.Detach("kw-cap0"); err != nil {
				t.Errorf("detach: %v", err)
			}
			l, _ = netlink.LinkByName("kw-cap0")
			if l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached {
				t.Errorf("%s: XDP program still attached after detach", m)
			}
		}
	})
}
