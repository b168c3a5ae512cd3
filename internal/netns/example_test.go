//go:build linux

package netns_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/knockwatch/knockwatch/internal/netns"
)

// The lab in a few lines: build the topology, start something in the
// sensor namespace, make the attacker touch a closed port on the host, and
// tear everything down, whatever happens in between.
func ExampleEnv_NewTopology() {
	lab := func(ctx context.Context) error {
		env, err := netns.NewEnv("kwlab")
		if err != nil {
			return err
		}
		defer env.Close()           // every namespace, even after a failure below
		defer env.CloseOnSignal()() // and on Ctrl-C (a program with its own shutdown calls Close instead)
		topo, err := env.NewTopology(netns.TopologyConfig{})
		if err != nil {
			return err
		}
		// The sensor, e.g. `knockwatch run --iface cap0`, in its namespace.
		sensor := topo.Sensor.Command(ctx, "knockwatch", "run", "--iface", topo.CaptureIface)
		_ = sensor
		// The Windows host drops SYNs to closed ports, as its firewall does.
		err = topo.Host.NS.Nft(ctx, "table inet fw { chain in { type filter hook input priority 0; tcp dport 7000 drop; } }")
		if err != nil {
			return err
		}
		// A real TCP connection attempt from the attacker's namespace.
		_, err = topo.Attacker.NS.Dial(ctx, &net.Dialer{Timeout: 300 * time.Millisecond}, "tcp",
			netip.AddrPortFrom(topo.Host.IP, 7000).String())
		fmt.Println("attempt:", err)
		return nil
	}
	if err := lab(context.Background()); err != nil {
		fmt.Println(err)
	}
}
