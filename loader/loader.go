// Package loader loads knockwatch's XDP program (bpf/) with its load-time
// configuration, attaches it to capture interfaces, and reads what it
// reports: KNOCK and HANDSHAKE records from the ring buffer and the per-CPU
// counters.
//
// One Sensor is one loaded program with one set of maps; it may be attached
// to any number of interfaces (a span port, or the two ports of a passive
// tap), all sharing that state.
package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/knockwatch/knockwatch/sensor"
)

// Options are the parts of loading that are not the program's configuration.
type Options struct {
	// PinPath, when set, pins the state maps under this bpffs directory so
	// a restarted sensor keeps its candidates, flags and port state. The
	// directory is created if missing.
	PinPath string
}

// Sensor is a loaded XDP program and its maps. Its methods are safe for
// concurrent use: attaching, detaching, reading counters and map fill
// levels may happen from several goroutines (a metrics scrape, the netlink
// watcher, a reload) and after Close they fail with ErrSensorClosed.
type Sensor struct {
	cfg  sensor.Config
	objs knockwatchObjects

	mu     sync.RWMutex // guards links and closed
	links  map[string]link.Link
	closed bool

	reqMu             sync.Mutex // guards flags_in and samples and their gates
	flagsIn, samplesN uint32     // entries userspace put (the gates' values)
}

// ErrSensorClosed is returned by a Sensor's methods after Close.
var ErrSensorClosed = errors.New("sensor closed")

// pinnedMaps are the maps whose content is worth keeping across a restart.
var pinnedMaps = []string{"pairs", "cands", "watches", "port_slots", "allowlist", "owners"}

// Load checks cfg, loads the program into the kernel and returns it
// unattached. It raises RLIMIT_MEMLOCK where the kernel still charges BPF
// memory to it, and explains plainly what is missing when it cannot load.
func Load(cfg sensor.Config, opts Options) (*Sensor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("check config: %w", err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise RLIMIT_MEMLOCK: %w", explainPerm(err))
	}
	spec, err := loadKnockwatch()
	if err != nil {
		return nil, fmt.Errorf("parse embedded BPF object: %w", err)
	}
	var seedMap *ebpf.Map
	if opts.PinPath != "" {
		if err := os.MkdirAll(opts.PinPath, 0o700); err != nil {
			return nil, fmt.Errorf("create pin directory %s: %w (is bpffs mounted? mount -t bpf bpf /sys/fs/bpf)", opts.PinPath, err)
		}
		// Pinned direct-mapped tables are only meaningful with the hash
		// seed that filled them: keep it beside them.
		if seedMap, err = pinnedSeed(opts.PinPath, &cfg); err != nil {
			return nil, err
		}
		defer seedMap.Close()
	}
	kcfg, err := bpfConfig(cfg)
	if err != nil {
		return nil, err
	}
	if seedMap != nil {
		if err := seedMap.Update(uint32(0), kcfg.HashSeed, ebpf.UpdateAny); err != nil {
			return nil, fmt.Errorf("save hash seed: %w", err)
		}
	}
	if err := spec.Variables["CFG"].Set(kcfg); err != nil {
		return nil, fmt.Errorf("set CFG: %w", err)
	}
	sizes := map[string]uint32{
		"pairs":      kcfg.PairMask + 1,
		"cands":      kcfg.CandMask + 1,
		"port_slots": kcfg.PortMask + 1,
		"watches":    kcfg.WatchMask + 1,
		"allowlist":  cfg.Allowlist,
		"events":     cfg.RingBytes,
		"owners":     1,
		"flags_in":   cfg.RemoteFlags,
		"samples":    cfg.Samples,
		"syn_dsts":   cfg.SYNDestinations,
	}
	if cfg.ReportTouches {
		sizes["owners"] = (kcfg.PairMask + 1) * sensor.PairWays
	}
	for name, n := range sizes {
		spec.Maps[name].MaxEntries = n
	}
	var copts ebpf.CollectionOptions
	if opts.PinPath != "" {
		copts.Maps.PinPath = opts.PinPath
		for _, name := range pinnedMaps {
			spec.Maps[name].Pinning = ebpf.PinByName
		}
	}
	s := &Sensor{cfg: cfg, links: map[string]link.Link{}}
	if err := spec.LoadAndAssign(&s.objs, &copts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load XDP program: verifier rejected it:\n%+v", ve)
		}
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("load XDP program: pinned maps in %s were made with other sizes; remove them (rm %s) or restore the old sizes: %w",
				opts.PinPath, filepath.Join(opts.PinPath, "*"), err)
		}
		return nil, fmt.Errorf("load XDP program: %w", explainPerm(err))
	}
	return s, nil
}

// pinnedSeed opens (or creates) the pinned one-entry map that remembers
// the hash seed of the pinned tables, and puts a stored seed into cfg.
func pinnedSeed(dir string, cfg *sensor.Config) (*ebpf.Map, error) {
	m, err := ebpf.NewMapWithOptions(&ebpf.MapSpec{
		Name: "kw_seed", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Pinning: ebpf.PinByName,
	}, ebpf.MapOptions{PinPath: dir})
	if err != nil {
		return nil, fmt.Errorf("open pinned hash seed in %s: %w", dir, explainPerm(err))
	}
	var seed uint32
	if err := m.Lookup(uint32(0), &seed); err != nil {
		m.Close()
		return nil, fmt.Errorf("read pinned hash seed: %w", err)
	}
	if seed != 0 {
		cfg.HashSeed = seed
	}
	return m, nil
}

func explainPerm(err error) error {
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w (knockwatch needs root or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)", err)
	}
	return err
}

// Config returns the configuration the program was loaded with.
func (s *Sensor) Config() sensor.Config { return s.cfg }

// Program returns the XDP program, for BPF_PROG_RUN in tests and replay.
func (s *Sensor) Program() *ebpf.Program { return s.objs.Knockwatch }

// Close detaches from every interface and releases the program and maps
// (pinned maps stay pinned).
func (s *Sensor) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	for name, l := range s.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach from %s: %w", name, err))
		}
		delete(s.links, name)
	}
	if err := s.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close BPF objects: %w", err))
	}
	return errors.Join(errs...)
}
