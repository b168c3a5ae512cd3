//go:build linux

package reliability

import (
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knockwatch/knockwatch/internal/netns"
	"github.com/knockwatch/knockwatch/internal/testsupport/pkt"
)

// TestLabFloodWithKnock is the flood soak in the lab (issue 7, "Load"): the
// real `knockwatch run` with native XDP on the span port's capture
// interface while the benign client's namespace sends a random-source SYN
// flood to closed ports of the host (raw frames, every SYN a new source in
// 100.64.0.0/10), which the host's kernel answers with RSTs. Meanwhile the
// attacker knocks, the host opens a port and reports it, and the attacker
// connects. The alert must fire; the counters must show the flood; the BPF
// maps' memory must not change (every map is preallocated at its
// configured size) and the process's resident memory must stay bounded.
//
// KNOCKWATCH_LAB_FLOOD_PACKETS sets the flood size (default 200,000;
// `make soak` 2,000,000).
func TestLabFloodWithKnock(t *testing.T) {
	l := newLiveLab(t, "kwrelfld")
	flood := min(envInt(t, "KNOCKWATCH_LAB_FLOOD_PACKETS", 200_000), 1<<22)
	// default pair-slot table: the flood's takeovers must not erase the knock
	r := startRun(t, l.ctx, l.topo, l.hosts, "--set", "sensor.pair_slots=262144", "--set", "sensor.candidates=65536")
	routeRSTsToClient(t, l.topo)
	before := r.metricsText(l.topo)

	sent := make(chan int, 1)
	floodErr := make(chan error, 1)
	var floodTook time.Duration
	go func() {
		start := time.Now()
		n, err := synFlood(l.topo, flood)
		floodTook = time.Since(start)
		sent <- n
		floodErr <- err
	}()
	// The attack happens in the middle of the flood.
	deadline := time.Now().Add(10 * time.Second)
	for metricSum(r.metricsText(l.topo), "knockwatch_xdp_packets_total") < metricSum(before, "knockwatch_xdp_packets_total")+float64(flood)/10 {
		if time.Now().After(deadline) {
			t.Fatal("flood not seen by the sensor")
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.knock()
	l.open(r, 4444)
	l.connect(4444)
	conf := l.expectAlert(r, 4444, 20*time.Second)
	n := <-sent
	if err := <-floodErr; err != nil {
		t.Fatal(err)
	}
	if conf != "high" {
		t.Fatalf("alert confidence %q during the flood, want high:\n%s", conf, r.dump())
	}
	time.Sleep(500 * time.Millisecond) // the last RSTs
	after := r.metricsText(l.topo)
	r.stop()

	rej := metricSum(after, `knockwatch_closed_port_touches_total{kind="REJ"}`) - metricSum(before, `knockwatch_closed_port_touches_total{kind="REJ"}`)
	pkts := metricSum(after, "knockwatch_xdp_packets_total") - metricSum(before, "knockwatch_xdp_packets_total")
	flagged := metricSum(after, "knockwatch_knocks_flagged_total")
	memBefore, memAfter := metricSum(before, "knockwatch_bpf_map_memlock_bytes"), metricSum(after, "knockwatch_bpf_map_memlock_bytes")
	rssBefore, rssAfter := metricSum(before, "knockwatch_process_resident_memory_bytes"), metricSum(after, "knockwatch_process_resident_memory_bytes")
	lost := metricSum(after, "knockwatch_ringbuf_lost_total")
	if pkts < float64(n) || rej < float64(n)/2 {
		t.Errorf("the counters do not show the flood: %d SYNs sent, %.0f packets seen, %.0f REJ touches", n, pkts, rej)
	}
	if flagged != 1 {
		t.Errorf("knocks flagged %.0f, want 1 (the attacker only: each flood source touches one port)", flagged)
	}
	if memBefore == 0 || memAfter != memBefore {
		t.Errorf("BPF map memory %0.f bytes before the flood, %.0f after: want the configured size, unchanged", memBefore, memAfter)
	}
	if rssAfter-rssBefore > 64<<20 {
		t.Errorf("resident memory grew by %.1f MiB during the flood", (rssAfter-rssBefore)/(1<<20))
	}
	if lost != 0 {
		t.Errorf("ring buffer lost %.0f records", lost)
	}
	t.Logf("RESULT lab flood: %d random-source SYNs in %s (%.0f/s, answered by RSTs) with the knock, event and handshake in the middle: alert %s; "+
		"sensor saw %.0f packets, %.0f REJ touches, %.0f knock(s) flagged, slot takeovers %.0f; BPF map memlock %.1f MiB before and after; "+
		"RSS %.1f -> %.1f MiB; ring buffer lost %.0f",
		n, floodTook.Round(time.Millisecond), float64(n)/floodTook.Seconds(), conf, pkts, rej, flagged, metricSum(after, `knockwatch_xdp_events_total{event="slot_takeover"}`),
		memAfter/(1<<20), rssBefore/(1<<20), rssAfter/(1<<20), lost)
}

// routeRSTsToClient gives the host a default route through a gateway whose
// MAC is the client's, so its RSTs to the flood's random sources leave on
// its link (and are mirrored) instead of failing with "no route".
func routeRSTsToClient(t *testing.T, topo *netns.Topology) {
	t.Helper()
	clientMAC, err := topo.Client.NS.HardwareAddr(netns.EndpointIface)
	if err != nil {
		t.Fatal(err)
	}
	gw := topo.Subnet4.Addr().Next().Next().Next() // .3: no endpoint uses it
	h := topo.Host.NS.Netlink()
	link, err := h.LinkByName(netns.EndpointIface)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.NeighAdd(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		IP: gw.AsSlice(), HardwareAddr: clientMAC}); err != nil {
		t.Fatalf("add gateway neighbour: %v", err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw.AsSlice(),
		Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}); err != nil {
		t.Fatalf("add default route: %v", err)
	}
}

// synFlood sends n SYNs from random sources in 100.64.0.0/10 to random
// closed ports of the host, as raw frames from the client's link.
func synFlood(topo *netns.Topology, n int) (int, error) {
	hostMAC, err := topo.Host.NS.HardwareAddr(netns.EndpointIface)
	if err != nil {
		return 0, err
	}
	clientMAC, err := topo.Client.NS.HardwareAddr(netns.EndpointIface)
	if err != nil {
		return 0, err
	}
	idx, err := topo.Client.NS.Index(netns.EndpointIface)
	if err != nil {
		return 0, err
	}
	var fd int
	if err := topo.Client.NS.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0) // send only
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: 0, Ifindex: idx})
	}); err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	sent := 0
	for i := range n {
		// every SYN a new source: i times an odd constant is a permutation
		// of the /10's 2^22 addresses
		a := 100<<24 | 64<<16 | uint32(i)*2654435761&(1<<22-1)
		src := netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
		p := pkt.TCP{Src: src, Dst: topo.Host.IP, SPort: uint16(1024 + rng.IntN(60000)), DPort: uint16(20000 + rng.IntN(20000)),
			Flags: pkt.SYN, Seq: rng.Uint32()}
		b := p.Bytes()
		copy(b[0:6], hostMAC)
		copy(b[6:12], clientMAC)
		for {
			_, err := unix.Write(fd, b)
			if err == nil {
				sent++
				break
			}
			if err == unix.ENOBUFS || err == unix.EAGAIN {
				time.Sleep(50 * time.Microsecond)
				continue
			}
			return sent, err
		}
		if i%20000 == 19999 {
			time.Sleep(time.Millisecond) // let the veth queues drain a little
		}
	}
	return sent, nil
}

// metricsText returns the whole /metrics page.
func (r *liveRun) metricsText(topo *netns.Topology) string {
	r.t.Helper()
	r.mu.Lock()
	addr := r.metrics
	r.mu.Unlock()
	resp, err := sensorClient(topo).Get("http://" + addr + "/metrics")
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricSum adds the values of the samples of a metric: name is a metric
// name (every label set counts) or a name with its labels as written.
func metricSum(text, name string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && (rest[0] != '{' || strings.HasSuffix(name, "}"))) {
			continue // another metric whose name starts with name
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}
