package replay

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/knockwatch/knockwatch/gotwin"
	"github.com/knockwatch/knockwatch/loader"
	"github.com/knockwatch/knockwatch/sensor"
)

// Engine kinds.
const (
	EngineAuto = "auto"
	EngineXDP  = "xdp"
	EngineGo   = "go"
)

// DefaultHashSeed keys the engines' direct-mapped tables in replay. A live
// sensor picks a random seed so outsiders cannot aim collisions; offline, a
// fixed seed makes a re-run over the same captures give the same answer
// with either engine.
const DefaultHashSeed = 0x6b6e6f63

// Engine tracks packets: the XDP program or its Go twin.
type Engine interface {
	// Name is "xdp" or "go".
	Name() string
	// Run pushes one Ethernet frame stamped with its capture time.
	Run(frame []byte, ts time.Time) error
	// Sweep ages pending SYNs at now into S0 touches.
	Sweep(now time.Time) error
	// Drain passes every record produced so far to fn, in order.
	Drain(fn func(sensor.Record) error) error
	// Counters returns the engine's counters (sensor.CounterNames).
	Counters() (sensor.Counters, error)
	// RequestSample asks for the next handshake completed to host before
	// until (capture time): one HANDSHAKE record with Sample set, a
	// clock-calibration sample (docs/COVERAGE.md). PruneRequests drops
	// the requests expired at now.
	RequestSample(host netip.Addr, until time.Time) error
	PruneRequests(now time.Time) error
	Close() error
}

// NewEngine returns the engine of kind (auto, xdp, go) for cfg (Replay and
// AckProof are set here; a zero HashSeed becomes DefaultHashSeed) with the allowlisted
// source prefixes. For auto, note says which engine was picked and why.
func NewEngine(kind string, cfg sensor.Config, allow []netip.Prefix) (e Engine, note string, err error) {
	cfg.Replay = true
	// A capture may hold one direction only (a one-way tap, or a trace
	// cut at the sensor's side): the client's ACK then proves the answer
	// the capture lacks, as Zeek's SH does. It costs nothing offline.
	cfg.AckProof = true
	if cfg.HashSeed == 0 {
		cfg.HashSeed = DefaultHashSeed
	}
	switch kind {
	case EngineGo:
		e, err = newGoEngine(cfg, allow)
		return e, "engine: go", err
	case EngineXDP:
		e, err = newXDPEngine(cfg, allow)
		return e, "engine: xdp (the XDP program through BPF_PROG_RUN)", err
	case EngineAuto, "":
		x, xerr := newXDPEngine(cfg, allow)
		if xerr == nil {
			return x, "engine: xdp (auto: the XDP program loaded)", nil
		}
		g, err := newGoEngine(cfg, allow)
		if err != nil {
			return nil, "", err
		}
		return g, fmt.Sprintf("engine: go (auto: the XDP program did not load: %v)", firstLine(xerr)), nil
	}
	return nil, "", fmt.Errorf("select engine: %q is not auto, xdp or go", kind)
}

func firstLine(err error) string {
	s := err.Error()
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}

type goEngine struct{ t *gotwin.Twin }

func newGoEngine(cfg sensor.Config, allow []netip.Prefix) (*goEngine, error) {
	t, err := gotwin.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("start go engine: %w", err)
	}
	if err := t.SetAllowlist(allow); err != nil {
		return nil, fmt.Errorf("start go engine: %w", err)
	}
	return &goEngine{t: t}, nil
}

func (g *goEngine) Name() string { return EngineGo }
func (g *goEngine) Run(frame []byte, ts time.Time) error {
	g.t.Run(frame, ts)
	return nil
}
func (g *goEngine) Sweep(now time.Time) error { g.t.Sweep(now); return nil }
func (g *goEngine) Drain(fn func(sensor.Record) error) error {
	if g.t.Pending() == 0 {
		return nil
	}
	for _, r := range g.t.Records() {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}
func (g *goEngine) Counters() (sensor.Counters, error) { return g.t.Counters(), nil }
func (g *goEngine) Close() error                       { return nil }
func (g *goEngine) RequestSample(host netip.Addr, until time.Time) error {
	return g.t.RequestSample(host, until)
}
func (g *goEngine) PruneRequests(now time.Time) error { g.t.PruneRequests(now); return nil }

type xdpEngine struct {
	s  *loader.Sensor
	rp *loader.Replayer
}

func newXDPEngine(cfg sensor.Config, allow []netip.Prefix) (*xdpEngine, error) {
	if os.Geteuid() != 0 {
		// Loading would fail anyway; say why without trying.
		if _, err := os.Stat("/sys/fs/bpf"); err != nil {
			return nil, errors.New("start xdp engine: needs root or CAP_BPF on Linux")
		}
	}
	s, err := loader.Load(cfg, loader.Options{})
	if err != nil {
		return nil, fmt.Errorf("start xdp engine: %w", err)
	}
	if err := s.SetAllowlist(allow); err != nil {
		s.Close()
		return nil, fmt.Errorf("start xdp engine: %w", err)
	}
	rp, err := s.NewReplayer()
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("start xdp engine: %w", err)
	}
	return &xdpEngine{s: s, rp: rp}, nil
}

func (x *xdpEngine) Name() string { return EngineXDP }
func (x *xdpEngine) Run(frame []byte, ts time.Time) error {
	_, err := x.rp.Run(frame, ts)
	return err
}
func (x *xdpEngine) Sweep(now time.Time) error {
	_, err := x.rp.Sweep(now)
	return err
}
func (x *xdpEngine) Drain(fn func(sensor.Record) error) error {
	recs, err := x.rp.Records()
	for _, r := range recs {
		if err := fn(r); err != nil {
			return err
		}
	}
	return err
}
func (x *xdpEngine) Counters() (sensor.Counters, error) { return x.rp.Counters() }
func (x *xdpEngine) RequestSample(host netip.Addr, until time.Time) error {
	return x.rp.RequestSample(host, until)
}
func (x *xdpEngine) PruneRequests(now time.Time) error {
	_, _, err := x.s.PruneRequests(now)
	return err
}
func (x *xdpEngine) Close() error {
	x.rp.Close()
	return x.s.Close()
}
