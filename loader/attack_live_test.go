package loader

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/netns"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
	"github.com/knockwatch/knockwatch/sensor"
)

// TestLiveAttacks runs the evasions of issue 11 that real tools can play
// against the live program (native XDP on the lab's span port): a knock
// used again (class 1), a spoofed SYN flood during a knock (class 3) and
// the knocker's own half-open probe of the new port (class 4), with
// Debian's knock client, nmap -sS and hping3 --rand-source. Each subtest
// builds its own topology, removed in t.Cleanup.
//
// What the attacker tries, and what each subtest shows fails for them:
//   - reuse: knock once (or a throw-away knock long before), so that the
//     real use later is not reported. Every use sends a KNOCK with a new
//     epoch and its own first HANDSHAKE to the same, still open, port.
//   - flood: fill the pair tables with random-source SYNs while knocking,
//     so the knock's unanswered SYNs are pushed out before they age into
//     S0 touches. The knock is promoted out of the flood's reach at its
//     second port, so the KNOCK and HANDSHAKE come through while the flood
//     visibly takes over every pair bucket.
//   - probe: SYN-scan the new port before connecting, so the port is
//     "already open" and "someone else was first". The probe's SYN-ACK is
//     what the port state knows as first open, and a probe that never
//     completes is nobody's first handshake; a real other client is.
func TestLiveAttacks(t *testing.T) {
	testenv.RequirePrivileged(t)

	// Class 1. The knock is used, the port opens, the knocker connects;
	// then it knocks the same ports again and connects to the same port,
	// still open. FlagTTL keeps its default (the rule's change and
	// handshake windows), so the second use finds the flag still up. The
	// second use comes past the window of the first, or within it (sent
	// once the window has passed: at most one KNOCK per pair per window),
	// or after the flag lapsed and the sweep freed the candidate, as a use
	// an hour later does.
	for _, tc := range []struct {
		name    string
		s0      bool // the host's firewall drops the knocks (S0) instead of RSTs (REJ)
		soon    bool // the second use right after the first connection
		flagTTL time.Duration
	}{
		{name: "reuse/REJ"},
		{name: "reuse/S0", s0: true},
		{name: "reuse/REJ/within-window", soon: true},
		{name: "reuse/REJ/flag-expired", flagTTL: 1500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			knock := lookTool(t, "knock", "knockd")
			const window = 2 * time.Second
			l := newLive(t, false, func(c *sensor.Config) {
				c.Window = window
				if tc.flagTTL > 0 {
					c.FlagTTL = tc.flagTTL
				}
			})
			att, host := l.topo.Attacker.IP, l.topo.Host.IP
			kind := sensor.TouchREJ
			if tc.s0 {
				kind = sensor.TouchS0
				if err := l.topo.Host.NS.Nft(l.ctx, hostFirewall); err != nil {
					t.Fatal(err)
				}
			}
			l.startSweep(t)

			start := time.Now()
			l.knockClient(t, knock, host, knockPorts)
			recs := l.records(t, 1)
			k1 := oneKnock(t, recs)
			checkUse(t, k1, wantUse{src: att, dst: host, ports: knockPorts, ordered: true, kind: kind, epoch: 1, touches: 3, since: start})
			_, port := l.open(t, host)
			if tc.s0 {
				l.allow(t, port)
			}
			c1 := l.connect(t, l.topo.Attacker, host, port)
			recs = l.records(t, 1)
			h1 := oneHandshake(t, recs)
			checkHandshake(t, recs, wantHandshake{src: att, dst: host, conn: c1, port: port, knockFlagAt: k1.FlagTime}, start)
			if h1.Epoch != 1 || h1.Attempted != len(knockPorts) {
				t.Errorf("first HANDSHAKE epoch %d, attempted %d; want 1 and %d", h1.Epoch, h1.Attempted, len(knockPorts))
			}
			if t.Failed() {
				return
			}

			lastTouch := k1.Touches[len(k1.Touches)-1].Time
			epoch, touches := uint32(2), 6
			switch {
			case tc.flagTTL > 0:
				// The flag lapses; the candidate is free once a window has
				// passed since the pair's last SYN (the connection's).
				time.Sleep(time.Until(h1.SYN.Add(window + 200*time.Millisecond)))
				if time.Since(k1.FlagTime) <= tc.flagTTL {
					t.Fatalf("flag of %v still up at the second use (TTL %v)", k1.FlagTime, tc.flagTTL)
				}
				// The pair starts afresh, and so does its count of uses.
				epoch, touches = 1, 3
			case !tc.soon:
				// Past the window of the first use's last touch: a new burst.
				time.Sleep(time.Until(lastTouch.Add(window + 200*time.Millisecond)))
			}
			again := time.Now()
			l.knockClient(t, knock, host, knockPorts)
			recs = l.records(t, 1)
			k2 := oneKnock(t, recs)
			checkUse(t, k2, wantUse{src: att, dst: host, ports: knockPorts, ordered: true, kind: kind, epoch: epoch, touches: touches, since: again})
			if tc.soon {
				// Held back until the window of the first KNOCK's touches
				// passed, then sent by the sweep.
				if k2.FlagTime.Before(lastTouch.Add(window)) {
					t.Errorf("second KNOCK at %v: within the window (%v) of the first use's last touch at %v", k2.FlagTime, window, lastTouch)
				}
			} else if !k2.FlagTime.After(k1.FlagTime.Add(window)) {
				t.Errorf("second KNOCK at %v: not a window (%v) after the first at %v", k2.FlagTime, window, k1.FlagTime)
			}
			c2 := l.connect(t, l.topo.Attacker, host, port)
			recs = l.records(t, 1)
			h2 := oneHandshake(t, recs)
			sport := uint16(c2.LocalAddr().(*net.TCPAddr).Port)
			if h2.Src != att || h2.Dst != host || h2.Port != port || h2.SrcPort != sport {
				t.Errorf("second HANDSHAKE %v:%d -> %v:%d, want %v:%d -> %v:%d", h2.Src, h2.SrcPort, h2.Dst, h2.Port, att, sport, host, port)
			}
			if h2.Epoch != epoch || h2.Distinct != len(knockPorts) || h2.Attempted != len(knockPorts) {
				t.Errorf("second HANDSHAKE epoch %d, distinct %d, attempted %d; want %d, %d, %d",
					h2.Epoch, h2.Distinct, h2.Attempted, epoch, len(knockPorts), len(knockPorts))
			}
			if h2.SYN.Before(k2.FlagTime) {
				t.Errorf("second handshake SYN at %v before the second KNOCK at %v", h2.SYN, k2.FlagTime)
			}
			// The port was open since the first connection, whose SYN-ACK
			// is the only answer before this one; the knocker itself
			// completed that handshake, so nobody else was first.
			if !sameTime(h2.PortFirstOpen, h1.SYNACK) || !sameTime(h2.PortLastOpen, h1.SYNACK) {
				t.Errorf("port first/last seen open at %v/%v, want both at the first connection's SYN-ACK %v",
					h2.PortFirstOpen, h2.PortLastOpen, h1.SYNACK)
			}
			if !h2.PortOtherDone.IsZero() || !h2.PortLastClosed.IsZero() {
				t.Errorf("port first completed by another at %v, last closed at %v: want never (only the knocker connected)",
					h2.PortOtherDone, h2.PortLastClosed)
			}
			touch := "touch_rej"
			if tc.s0 {
				touch = "touch_s0"
			}
			want := map[string]uint64{
				"syn": 8, "synack": 2, touch: 6, "port_open": 2, "candidates": 1, "flags": 2, "attempted": 6,
				"watch_started": 2, "handshakes": 2, "handshake_repeat": 0, "knock_deferred": 0,
				"cand_evicted": 0, "mark_evicted": 0, "reported_overflow": 0, "watch_lost": 0, "pair_full": 0,
				"tcp": 8 + 2 + 2, // SYNs, SYN-ACKs, completing ACKs
			}
			if !tc.s0 {
				want["rst"] = 6
				want["tcp"] += 6
			}
			if tc.soon {
				want["knock_deferred"] = 1
				// The second burst's ports were tried in the first's window.
				want["attempted"] = 3
			}
			if tc.flagTTL > 0 {
				want["candidates"] = 2
			}
			l.checkCounters(t, want)
		})
	}

	// Class 3. A bounded random-source SYN flood (hping3, spoofed sources,
	// one SYN each, never answered: the host's firewall drops it) runs
	// while nmap -sS sends a three-port knock the same firewall drops (S0).
	// The pair tier is tiny (256 buckets of 4) so the flood turns all of it
	// over, again and again, while the knock's SYNs wait the S0 timeout: a
	// design that kept them where single-SYN pairs can push them out would
	// lose the knock here. nmap sends its three SYNs back to back, so the
	// second promotes the pair (candidate tier, a MARK in the pair bucket
	// that a one-SYN pair cannot take) before the flood reaches the first;
	// a knock spaced out in time relies on the tier's size instead (the
	// statistical flood test holds that figure).
	t.Run("flood/S0", func(t *testing.T) {
		hping := lookTool(t, "hping3", "hping3")
		nmap := lookTool(t, "nmap", "nmap")
		const pairSlots = 1 << 10
		l := newLive(t, false, func(c *sensor.Config) { c.PairSlots = pairSlots })
		att, host := l.topo.Attacker.IP, l.topo.Host.IP
		if err := l.topo.Host.NS.Nft(l.ctx, hostFirewall); err != nil {
			t.Fatal(err)
		}
		l.startSweep(t)

		// 4 processes of at most ~4,000 SYNs/s each (200 µs apart, plus
		// the timer's slack): the flood lasts at least 3.75 s, the knock
		// comes in its first second.
		const floodN, floodProcs = 60_000, 4
		flood := l.flood(t, hping, host, 80, floodN, floodProcs, 200*time.Microsecond)
		// Knock once the flood has turned the pair tier over a few times.
		l.waitCounter(t, "slot_takeover", 4*pairSlots)
		before := l.counter(t, "slot_takeover")
		start := time.Now()
		const sport = 40000
		l.synScan(t, nmap, l.topo.Attacker, host, sport, knockPorts...)
		recs := l.records(t, 1)
		if flood.done() {
			t.Errorf("the flood ended before the KNOCK came: the knock was not flooded (raise the flood's count)")
		}
		// From the knock's first SYN to its KNOCK the flood took over more
		// entries than the whole pair tier has.
		if d := l.counter(t, "slot_takeover") - before; d < pairSlots {
			t.Errorf("%d pair entries taken over while the knock waited, want at least the whole tier (%d)", d, pairSlots)
		}
		k := oneKnock(t, recs)
		checkUse(t, k, wantUse{src: att, dst: host, ports: knockPorts, kind: sensor.TouchS0, sport: sport, epoch: 1, touches: 3, since: start})
		_, port := l.open(t, host)
		l.allow(t, port)
		c := l.connect(t, l.topo.Attacker, host, port)
		during := !flood.done()
		recs = l.records(t, 1)
		checkHandshake(t, recs, wantHandshake{src: att, dst: host, conn: c, port: port, knockFlagAt: k.FlagTime}, start)
		if hs := handshakes(recs); len(hs) == 1 && (hs[0].Epoch != 1 || hs[0].Attempted != len(knockPorts)) {
			t.Errorf("HANDSHAKE epoch %d, attempted %d; want 1 and %d", hs[0].Epoch, hs[0].Attempted, len(knockPorts))
		}
		sent := flood.wait(t)
		t.Logf("flood: %d SYNs sent; still running when the knocker connected: %v", sent, during)
		if sent != floodN {
			t.Errorf("hping3 sent %d SYNs, want %d", sent, floodN)
		}

		cs, err := l.s.Counters()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("counters: %v", cs)
		knockSYNs := uint64(len(knockPorts) + 1) // and the connection's
		// Each flood SYN is a new pair (one SYN per source). Nothing frees
		// a pair entry within the test (no answers; touches age after the
		// 30 s window), so once the tier is full every new pair takes an
		// entry over: all but the first tier's worth are takeovers (or,
		// raced on two CPUs, a full bucket), give or take a few sources
		// whose fingerprint matches an entry of their bucket.
		flooded := cs["syn"] - knockSYNs
		if flooded < floodN*9/10 || cs["syn"] > floodN+knockSYNs {
			t.Errorf("syn %d: want the %d SYNs of the flood and %d of the knocker, give or take a veth's drops", cs["syn"], floodN, knockSYNs)
		}
		if got := cs["slot_takeover"] + cs["pair_full"]; got+pairSlots+16 < flooded {
			t.Errorf("slot_takeover %d + pair_full %d: want about every flood SYN after the first %d (%d)",
				cs["slot_takeover"], cs["pair_full"], pairSlots, flooded)
		}
		// The flood never reached the protected tier: one candidate (the
		// knocker), nothing evicted from it, one flag, one handshake.
		for name, want := range map[string]uint64{
			"candidates": 1, "flags": 1, "handshakes": 1, "handshake_repeat": 0, "cand_evicted": 0, "mark_evicted": 0,
			"rst": 0, "synack": 1, "port_open": 1, "ringbuf_full": 0, "map_insert_fail": 0, "knock_deferred": 0,
			"backscatter": 0, "synack_unmatched": 0, "touch_rstos0": 0, "touch_rej": 0,
		} {
			if cs[name] != want {
				t.Errorf("counter %s = %d, want %d", name, cs[name], want)
			}
		}
		if cs["touch_s0"] < uint64(len(knockPorts)) {
			t.Errorf("touch_s0 %d: fewer than the knock's %d", cs["touch_s0"], len(knockPorts))
		}
	})

	// The knocker who does not wait: knock (S0: the host's firewall drops
	// the knocks, as Windows does by default), the port opens at once, and
	// the knocker connects before the S0 timeout has decided its knocks,
	// as `knock host p1 p2 p3 && ssh -p P host` does. The KNOCK is sent
	// when the knocks age; the handshake, which came first, must still be
	// reported for that knock.
	t.Run("connect-before-S0-decided", func(t *testing.T) {
		knock := lookTool(t, "knock", "knockd")
		const s0 = time.Second
		l := newLive(t, false, func(c *sensor.Config) { c.S0Timeout = s0 })
		att, host := l.topo.Attacker.IP, l.topo.Host.IP
		if err := l.topo.Host.NS.Nft(l.ctx, hostFirewall); err != nil {
			t.Fatal(err)
		}
		l.startSweep(t)
		start := time.Now()
		l.knockClient(t, knock, host, knockPorts)
		_, port := l.open(t, host)
		l.allow(t, port)
		c := l.connect(t, l.topo.Attacker, host, port)
		if d := time.Since(start); d > s0 {
			t.Fatalf("connected %v after the knock began: not before the S0 timeout (%v)", d, s0)
		}
		time.Sleep(time.Until(start.Add(s0 + 300*time.Millisecond)))
		recs := l.records(t, 2)
		k := knocks(recs)
		if len(k) != 1 {
			t.Fatalf("%d KNOCK records, want 1: %s", len(k), dump(recs))
		}
		checkUse(t, k[0], wantUse{src: att, dst: host, ports: knockPorts, ordered: true, kind: sensor.TouchS0, epoch: 1, touches: 3, since: start})
		hs := handshakes(recs)
		if len(hs) != 1 {
			cs, _ := l.s.Counters()
			t.Fatalf("%d HANDSHAKE records, want 1 (the knocker's connection %v, made before its knocks were decided S0): %s\ncounters %v",
				len(hs), c.LocalAddr(), dump(recs), cs)
		}
	})

	// Class 4. After the knock and the port opening, the knocker SYN-scans
	// the new port (SYN, SYN-ACK, its kernel's RST) and then connects: its
	// own probe is what the port state saw open first, and nobody else
	// completed a handshake. The control: a client probes the port
	// half-open too and then completes a handshake before the knocker
	// does, which the HANDSHAKE must show as someone else first (the
	// half-open probe still counts for nothing).
	for _, other := range []bool{false, true} {
		name := "probe/own"
		if other {
			name = "probe/other-first"
		}
		t.Run(name, func(t *testing.T) {
			knock := lookTool(t, "knock", "knockd")
			nmap := lookTool(t, "nmap", "nmap")
			l := newLive(t, false)
			att, host := l.topo.Attacker.IP, l.topo.Host.IP
			l.startSweep(t)

			start := time.Now()
			l.knockClient(t, knock, host, knockPorts)
			recs := l.records(t, 1)
			k := oneKnock(t, recs)
			checkUse(t, k, wantUse{src: att, dst: host, ports: knockPorts, ordered: true, kind: sensor.TouchREJ, epoch: 1, touches: 3, since: start})
			_, port := l.open(t, host)

			prober := l.topo.Attacker
			if other {
				prober = l.topo.Client
			}
			probeFrom := time.Now()
			l.synScan(t, nmap, prober, host, 40001, port)
			probeTo := time.Now()
			var otherFrom, otherTo time.Time
			if other {
				otherFrom = time.Now()
				l.connect(t, l.topo.Client, host, port)
				otherTo = time.Now()
			}
			c := l.connect(t, l.topo.Attacker, host, port)
			recs = l.records(t, 1)
			h := oneHandshake(t, recs)
			sport := uint16(c.LocalAddr().(*net.TCPAddr).Port)
			if h.Src != att || h.Dst != host || h.Port != port || h.SrcPort != sport {
				t.Errorf("HANDSHAKE %v:%d -> %v:%d, want %v:%d -> %v:%d", h.Src, h.SrcPort, h.Dst, h.Port, att, sport, host, port)
			}
			if h.Epoch != 1 || h.Distinct != len(knockPorts) || h.Attempted != len(knockPorts) {
				t.Errorf("HANDSHAKE epoch %d, distinct %d, attempted %d; want 1, %d, %d", h.Epoch, h.Distinct, h.Attempted,
					len(knockPorts), len(knockPorts))
			}
			if h.SYN.Before(k.FlagTime) || h.SYNACK.Before(h.SYN) || h.ACK.Before(h.SYNACK) {
				t.Errorf("handshake SYN %v, SYN-ACK %v, ACK %v: want in order, after the KNOCK at %v", h.SYN, h.SYNACK, h.ACK, k.FlagTime)
			}
			if !h.PortLastClosed.IsZero() {
				t.Errorf("port last seen closed at %v, want never", h.PortLastClosed)
			}
			// The probe's SYN-ACK opened the port's record (both times
			// from the precise clock; the other client's SYN-ACK came
			// within PortRefresh, which does not move the last time).
			within(t, "port first seen open (the probe's SYN-ACK)", h.PortFirstOpen, probeFrom, probeTo)
			within(t, "port last seen open (the probe's SYN-ACK)", h.PortLastOpen, probeFrom, probeTo)
			if other {
				within(t, "port first completed by another (the client's ACK)", h.PortOtherDone, otherFrom, otherTo)
				if !h.PortOtherDone.Before(h.SYNACK) {
					t.Errorf("port first completed by another at %v, not before this handshake's SYN-ACK %v", h.PortOtherDone, h.SYNACK)
				}
			} else if !h.PortOtherDone.IsZero() {
				t.Errorf("port first completed by another at %v: the knocker's own half-open probe made it someone else first", h.PortOtherDone)
			}
			want := map[string]uint64{
				"syn": 5, "synack": 2, "touch_rej": 3, "touch_s0": 0, "port_open": 2, "candidates": 1, "flags": 1,
				"watch_started": 2, "handshakes": 1, "handshake_repeat": 0, "knock_deferred": 0, "handshake_bad_ack": 0,
				// The knock's three RSTs and the prober's kernel's RST to
				// the probe's SYN-ACK: that one answers nothing pending
				// (backscatter) and is no RSTOS0 touch, so the port is
				// never seen closed.
				"rst": 4, "backscatter": 1, "touch_rstos0": 0, "synack_unmatched": 0,
			}
			if other {
				// The client's connection too, watched as the port's
				// first completed handshake since it was seen closed.
				want["syn"], want["synack"], want["port_open"], want["watch_started"] = 6, 3, 3, 3
			}
			cs, err := l.s.Counters()
			if err != nil {
				t.Fatal(err)
			}
			for name, v := range want {
				if cs[name] != v {
					t.Errorf("counter %s = %d, want %d", name, cs[name], v)
				}
			}
			if t.Failed() {
				t.Logf("counters: %v", cs)
			}
		})
	}
}

// startSweep runs the sweep as `knockwatch run` does (here every 50 ms,
// against the 200 ms S0 timeout) until the test ends: S0 touches of a
// knocker gone quiet are aged, deferred KNOCKs sent, spent candidates freed.
func (l *live) startSweep(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(l.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.s.SweepEvery(ctx, 50*time.Millisecond, func(err error) { t.Errorf("sweep: %v", err) })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// knockClient runs Debian's knock client from the attacker: a
// non-blocking connect to each port, 100 ms apart, closed at once (one SYN
// each, never retransmitted).
func (l *live) knockClient(t *testing.T, knock string, host netip.Addr, ports []uint16) {
	t.Helper()
	args := []string{"-4", "-d", "100", host.String()}
	for _, p := range ports {
		args = append(args, strconv.Itoa(int(p)))
	}
	if err := l.topo.Attacker.NS.Run(l.ctx, knock, args...); err != nil {
		t.Fatal(err)
	}
}

// synScan runs nmap -sS from ep against host's ports, from source port
// sport, one probe each (no retries), the ports in the order given.
func (l *live) synScan(t *testing.T, nmap string, ep netns.Endpoint, host netip.Addr, sport uint16, ports ...uint16) {
	t.Helper()
	ps := make([]string, len(ports))
	for i, p := range ports {
		ps[i] = strconv.Itoa(int(p))
	}
	if err := ep.NS.Run(l.ctx, nmap, "-sS", "-Pn", "-n", "-r", "--max-retries", "0", "--initial-rtt-timeout", "100ms",
		"--max-rtt-timeout", "200ms", "-g", strconv.Itoa(int(sport)), "-p", strings.Join(ps, ","), host.String()); err != nil {
		t.Fatal(err)
	}
}

// floodRun is a bounded hping3 flood in progress.
type floodRun struct {
	wg   sync.WaitGroup
	mu   sync.Mutex
	outs []*bytes.Buffer
	errs []error
	n    int
}

var hpingSent = regexp.MustCompile(`(\d+) packets transmitted`)

// flood sends n SYNs from random spoofed sources to host:port, from the
// attacker's namespace, split over procs hping3 processes that each wait
// gap between packets (plus the timer's slack). The count bounds it.
func (l *live) flood(t *testing.T, hping string, host netip.Addr, port uint16, n, procs int, gap time.Duration) *floodRun {
	t.Helper()
	f := &floodRun{n: procs}
	for i := range procs {
		count := n / procs
		if i == 0 {
			count += n % procs
		}
		var out bytes.Buffer
		cmd := l.topo.Attacker.NS.Command(l.ctx, hping, "-q", "-S", "--rand-source", "-i", fmt.Sprintf("u%d", gap.Microseconds()),
			"-p", strconv.Itoa(int(port)), "-c", strconv.Itoa(count), host.String())
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatalf("start hping3: %v", err)
		}
		f.outs = append(f.outs, &out)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			err := cmd.Wait()
			f.mu.Lock()
			f.errs = append(f.errs, err)
			f.mu.Unlock()
		}()
	}
	// A failing test must not leave the flood running.
	t.Cleanup(func() { f.wg.Wait() })
	return f
}

// done reports whether every process of the flood has ended.
func (f *floodRun) done() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.errs) == f.n
}

// wait waits for the flood to end and returns the SYNs hping3 reports sent.
func (f *floodRun) wait(t *testing.T) int {
	t.Helper()
	f.wg.Wait()
	sent := 0
	for i, out := range f.outs {
		m := hpingSent.FindSubmatch(out.Bytes())
		if m == nil {
			t.Errorf("hping3 %d: no count of packets sent (%v): %s", i, f.errs, out.String())
			continue
		}
		v, _ := strconv.Atoi(string(m[1]))
		sent += v
	}
	for _, err := range f.errs {
		// hping3 exits 1 when nothing answered, which is the point.
		if err != nil && !strings.Contains(err.Error(), "exit status 1") {
			t.Errorf("hping3: %v", err)
		}
	}
	return sent
}

// counter reads one counter.
func (l *live) counter(t *testing.T, name string) uint64 {
	t.Helper()
	c, err := l.s.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c[name]
}

// waitCounter waits until counter name reaches at least min.
func (l *live) waitCounter(t *testing.T, name string, min uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := l.s.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if c[name] >= min {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter %s = %d after 10 s, want at least %d; counters %v", name, c[name], min, c)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func oneKnock(t *testing.T, recs []sensor.Record) *sensor.Knock {
	t.Helper()
	ks := knocks(recs)
	if len(ks) != 1 || len(recs) != 1 {
		t.Fatalf("%d records, %d of them KNOCK; want exactly one KNOCK: %s", len(recs), len(ks), dump(recs))
	}
	return ks[0]
}

func oneHandshake(t *testing.T, recs []sensor.Record) *sensor.Handshake {
	t.Helper()
	hs := handshakes(recs)
	if len(hs) != 1 || len(recs) != 1 {
		t.Fatalf("%d records, %d of them HANDSHAKE; want exactly one HANDSHAKE: %s", len(recs), len(hs), dump(recs))
	}
	return hs[0]
}

// wantUse is what the KNOCK of one use of a knock must say.
type wantUse struct {
	src, dst netip.Addr
	ports    []uint16 // the ports of this use
	ordered  bool     // sent in this order, far enough apart to tell
	kind     sensor.TouchKind
	sport    uint16 // the SYNs' source port; 0: unknown (any but 0)
	epoch    uint32
	touches  int       // in the record: this use's and earlier ones'
	since    time.Time // the use began (test clock)
}

// clockSlack covers a coarse-clock stamp (one tick, up to 4 ms, early)
// and the conversion of program time to UTC (see sameTime).
const clockSlack = 10 * time.Millisecond

// checkUse checks a KNOCK against one use: the touches since the use
// began are exactly its ports, of its kind; earlier touches in the record
// (the pair's earlier uses) all came before it.
func checkUse(t *testing.T, k *sensor.Knock, w wantUse) {
	t.Helper()
	if k.Src != w.src || k.Dst != w.dst {
		t.Errorf("KNOCK %v -> %v, want %v -> %v", k.Src, k.Dst, w.src, w.dst)
	}
	if k.Epoch != w.epoch {
		t.Errorf("KNOCK epoch %d, want %d", k.Epoch, w.epoch)
	}
	if k.Distinct != len(w.ports) || k.Attempted != len(w.ports) {
		t.Errorf("KNOCK distinct %d, attempted %d; want %d and %d (this use only)", k.Distinct, k.Attempted, len(w.ports), len(w.ports))
	}
	var now []sensor.Touch
	for _, tc := range k.Touches {
		if tc.Time.Before(w.since.Add(-clockSlack)) {
			if len(now) > 0 {
				t.Errorf("touch %+v from before the use after one of it", tc)
			}
			continue
		}
		now = append(now, tc)
	}
	got := make([]uint16, len(now))
	for i, tc := range now {
		got[i] = tc.Port
		if tc.Kind != w.kind {
			t.Errorf("touch of port %d: %v, want %v", tc.Port, tc.Kind, w.kind)
		}
		if (w.sport != 0 && tc.SrcPort != w.sport) || tc.SrcPort == 0 {
			t.Errorf("touch of port %d from source port %d, want %d (0: any but 0)", tc.Port, tc.SrcPort, w.sport)
		}
		nearNow(t, fmt.Sprintf("touch of port %d", tc.Port), tc.Time, w.since)
	}
	want := slices.Clone(w.ports)
	if !w.ordered {
		slices.Sort(got)
		slices.Sort(want)
	}
	if !slices.Equal(got, want) {
		t.Errorf("KNOCK touches of this use: ports %v, want %v: %+v", got, want, k.Touches)
	}
	if len(k.Touches) != w.touches {
		t.Errorf("KNOCK has %d touches, want %d: %+v", len(k.Touches), w.touches, k.Touches)
	}
	nearNow(t, "KNOCK flag time", k.FlagTime, w.since)
	if len(now) > 0 && k.FlagTime.Before(now[len(now)-1].Time) {
		t.Errorf("flagged at %v, before the last touch at %v", k.FlagTime, now[len(now)-1].Time)
	}
}

// sameTime compares two conversions of one program timestamp: the loader
// measures the monotonic-to-UTC offset again every 10 s, and any step of
// the wall clock in between (seen here: tens of µs on a VM) moves every
// later conversion. A millisecond still tells one SYN-ACK from another.
func sameTime(a, b time.Time) bool {
	d := a.Sub(b)
	return !a.IsZero() && !b.IsZero() && d >= -time.Millisecond && d <= time.Millisecond
}

// within checks that a precise-clock record time lies in the wall-clock
// interval [from, to] the test measured around the packet.
func within(t *testing.T, what string, ts, from, to time.Time) {
	t.Helper()
	if ts.Before(from.Add(-clockSlack)) || ts.After(to.Add(clockSlack)) {
		t.Errorf("%s = %v, want within [%v, %v] (±%v)", what, ts, from.UTC(), to.UTC(), clockSlack)
	}
}
