package correlate

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// HostClock is a host's measured clock: how far its clock (the time its
// Windows events carry) is ahead of the sensor's, from connections both
// saw (docs/COVERAGE.md). The engine corrects the times of the host's
// exposure changes by it (SetHostClock); a host without one keeps
// Config.Skew as its only tolerance.
type HostClock struct {
	// Host is the computer the measurement belongs to (the name its
	// connection events carry): it applies to that host's changes only.
	Host string
	// Offset is host time minus sensor time (negative: the host is behind).
	Offset time.Duration
	// Samples are the matched connections the estimate rests on, Sources
	// the distinct peers among them (each peer is one vote), Spread the
	// largest distance between two agreeing samples.
	Samples, Sources int
	Spread           time.Duration
	// Measured is the sensor time of the newest sample.
	Measured time.Time
	// Evidence are a few of the matched connections (newest first).
	Evidence []ClockSample
}

// ClockSample is one connection seen by the sensor and logged by the host.
type ClockSample struct {
	Src           netip.Addr
	SrcPort, Port uint16
	HostTime      time.Time // the host's event time
	SensorTime    time.Time // the sensor's time of the same moment
	EventID       uint32    // 5156 or 3 (Sysmon)
	Channel       string
	RecordID      uint64
}

// ErrClockBound refuses an offset beyond Config.MaxClockOffset.
var ErrClockBound = errors.New("clock offset beyond rule.max_clock_offset")

// maxClocks bounds the hosts with a clock (one per address).
const maxClocks = 1 << 16

// maxClockEvidence bounds the samples an alert carries.
const maxClockEvidence = 4

// SetHostClock sets (c non-nil) or clears (nil) the measured clock of the
// host at address ip. The host's stored changes are re-timed and its
// pending handshakes evaluated again, so a change stamped by a clock 90 s
// behind now meets its knock. An offset beyond Config.MaxClockOffset is
// refused (ErrClockBound, counted): a measurement can shift a change by at
// most that much. A change is evaluated at its own (host) time as well as
// at the corrected one, so a wrong measurement can add a match, never take
// one away.
func (e *Engine) SetHostClock(ip netip.Addr, c *HostClock) error {
	ip = plain(ip)
	if !ip.IsValid() {
		return fmt.Errorf("set host clock: %w", ErrInvalidAddr)
	}
	if c != nil {
		if abs(c.Offset) > e.cfg.MaxClockOffset {
			e.mu.Lock()
			e.c.clockRefused++
			e.mu.Unlock()
			return fmt.Errorf("set host clock of %s: %w: %v > %v", ip, ErrClockBound, c.Offset, e.cfg.MaxClockOffset)
		}
		cc := *c
		cc.Host = clampField(cc.Host, maxKeptBytes)
		if len(cc.Evidence) > maxClockEvidence {
			cc.Evidence = cc.Evidence[:maxClockEvidence]
		}
		cc.Evidence = append([]ClockSample(nil), cc.Evidence...)
		c = &cc
	}
	e.mu.Lock()
	k := ip.As16()
	switch {
	case c == nil:
		delete(e.st.clocks, k)
	case e.st.clocks[k] == nil && len(e.st.clocks) >= maxClocks:
		e.c.clockRefused++
		e.mu.Unlock()
		return fmt.Errorf("set host clock of %s: %d hosts have a clock already", ip, maxClocks)
	default:
		e.st.clocks[k] = c
	}
	e.c.clockUpdates++
	h := e.st.host(ip, false)
	if h == nil {
		e.unlockAndEmit()
		return nil
	}
	for _, ch := range h.changes {
		e.retime(ch)
	}
	cutoff := e.cutoff()
	for _, p := range h.hsPairs {
		if p.last < cutoff {
			continue
		}
		if p.knocked && !p.changed && e.fitsAny(p, h.changes) {
			p.changed = true
			e.st.touch(p)
		}
		for _, r := range p.hs {
			e.evalHS(ip, h, p.src, p, r)
		}
	}
	e.unlockAndEmit()
	return nil
}

// HostClockOf returns the clock set for ip, or nil.
func (e *Engine) HostClockOf(ip netip.Addr) *HostClock {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.st.clocks[plain(ip).As16()]; c != nil {
		cc := *c
		return &cc
	}
	return nil
}

// retime sets ch's corrected time from the clock of the first of its
// addresses that has one for its host.
func (e *Engine) retime(ch *chg) {
	ch.t, ch.clock = ch.raw, nil
	for _, ip := range ch.ips {
		c := e.st.clocks[ip.As16()]
		if c == nil || (ch.c.Host != "" && !sameHost(c.Host, ch.c.Host)) {
			continue
		}
		ch.t = ch.raw - int64(c.Offset)
		ch.clock = c
		return
	}
}

// times returns the change's corrected time and, when a clock moved it,
// its own (host) time: the rule accepts either.
func (c *chg) times() []int64 {
	if c.t == c.raw {
		return []int64{c.t}
	}
	return []int64{c.t, c.raw}
}

// latest is the later of the change's two times (expiry waits for it).
func (c *chg) latest() int64 { return max(c.t, c.raw) }

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
