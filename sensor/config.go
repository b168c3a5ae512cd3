package sensor

import (
	"errors"
	"fmt"
	"math/bits"
	"time"
)

// Sizes from bpf/include/types.h (loader's drift test checks them).
const (
	// MaxTouches is KW_MAX_TOUCHES: the touches a candidate keeps and a
	// KNOCK record carries.
	MaxTouches = 16
	// PairWays is KW_WAYS: entries per pair bucket (one cache line).
	PairWays = 4
	// CandWays is KW_CAND_WAYS: candidates per candidate bucket.
	CandWays = 4
)

// maxWindow bounds every time the program keeps in 32-bit microseconds
// (they wrap after 71 minutes and are read back within half of that).
const maxWindow = 30 * time.Minute

// Config is the XDP program's load-time configuration: thresholds, windows,
// timeouts, table sizes and the verdict. Nothing of it is compiled into the
// program. The zero value is not useful; start from DefaultConfig.
type Config struct {
	// MinPorts is N: distinct closed ports on one host that flag a source.
	MinPorts int `yaml:"min_ports"`
	// Window is W: the N touches must fall within it; at most one KNOCK
	// per pair per W.
	Window time.Duration `yaml:"window"`
	// S0Timeout: a SYN unanswered this long after its last transmission
	// (retransmissions move it) is an S0 touch. Zeek's tcp_attempt_delay
	// is the same 5 s; Windows retransmits a first SYN after 3 s.
	S0Timeout time.Duration `yaml:"s0_timeout"`
	// HandshakeTimeout bounds SYN to completing ACK of a watched handshake.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// PortRefresh: port-state timestamps are rewritten only when older.
	PortRefresh time.Duration `yaml:"port_refresh"`
	// FlagTTL is how long after its KNOCK a flag watches the pair's
	// handshakes; a new burst re-arms it. Long enough for the rule's change
	// and handshake windows (knockwatch derives it from them); at most 30
	// minutes.
	FlagTTL time.Duration `yaml:"flag_ttl"`
	// AnswerSkew: an RST or SYN-ACK seen up to this long before the SYN it
	// answers still matches it (the two directions of a passive tap come on
	// two ports, two CPUs, two NAPI batches). 0 turns early answers off.
	AnswerSkew time.Duration `yaml:"answer_skew"`
	// AckProof makes a client's ACK after its SYN prove that the SYN was
	// answered when the SYN-ACK is not in the capture (a one-way tap): the
	// SYN is then no S0 touch. It costs a lookup per ACK, so it is off live
	// unless the tap is one-way; replay turns it on.
	AckProof bool `yaml:"ack_proof"`
	// VerifyChecksums counts and ignores SYN, SYN-ACK, RST and deciding ACK
	// segments whose TCP checksum is wrong (they never reached the host's
	// stack). Turn it off for captures taken on a host with checksum
	// offload (as Zeek's -C).
	VerifyChecksums bool `yaml:"verify_checksums"`

	// PairSlots sizes the flood tier: pending SYNs and first touches of
	// pairs, four to a 64-byte bucket (rounded up to a power of two).
	PairSlots uint32 `yaml:"pair_slots"`
	// PortSlots sizes the direct-mapped port-state table (power of two).
	PortSlots uint32 `yaml:"port_slots"`
	// Candidates sizes the protected tier: pairs that tried two or more
	// ports (knockers, scanners), four to a bucket (power of two).
	Candidates uint32 `yaml:"candidates"`
	// Watches sizes the direct-mapped table of handshakes in flight.
	Watches uint32 `yaml:"watches"`
	// RemoteFlags sizes the table of flags other sensors raised (a
	// scale-out deployment's flags travel between taps).
	RemoteFlags uint32 `yaml:"remote_flags"`
	// Samples sizes the table of hosts whose next completed handshake
	// userspace asked for (clock calibration).
	Samples uint32 `yaml:"samples"`
	// SYNDestinations sizes the table of hosts inside coverage's networks
	// that SYNs went to (coverage lists the hosts taking traffic that no
	// event names); a full table is counted (syn_dst_full).
	SYNDestinations uint32 `yaml:"syn_destinations"`
	// Allowlist: maximum number of allowlisted prefixes.
	Allowlist uint32 `yaml:"allowlist"`
	// RingBytes sizes the ring buffer of records (a power of two, >= page).
	RingBytes uint32 `yaml:"ring_bytes"`

	// Pass makes the verdict XDP_PASS (inline or lab use); the default is
	// XDP_DROP, since a capture port's packets are copies nobody needs.
	Pass bool `yaml:"pass"`
	// CoarseClock stamps every live timestamp with CLOCK_MONOTONIC_COARSE
	// (one scheduler tick, 1-4 ms). SYNs and RSTs always use it (the flood
	// path); SYN-ACKs and completing ACKs use the precise clock unless
	// this is set, since "who connected first" can hinge on a millisecond.
	CoarseClock bool `yaml:"coarse_clock"`
	// Replay takes each packet's time from 8 bytes of XDP metadata
	// (unix ns) instead of the clock: recorded captures drive the state
	// machine with their own timestamps.
	Replay bool `yaml:"-"`
	// HashSeed keys the tables; 0 picks a random seed at load.
	HashSeed uint32 `yaml:"-"`
	// ReportTouches makes the program send a TouchRecord for every
	// closed-port touch (replay --touches); never set live.
	ReportTouches bool `yaml:"-"`
}

// DefaultConfig is sized for a busy 10 GbE link; see docs/ARCHITECTURE.md
// for the kernel memory each table takes and the flood rates it holds.
func DefaultConfig() Config {
	return Config{
		MinPorts:         3,
		Window:           30 * time.Second,
		S0Timeout:        5 * time.Second,
		HandshakeTimeout: 30 * time.Second,
		PortRefresh:      time.Second,
		FlagTTL:          6*time.Minute + 10*time.Second,
		AnswerSkew:       5 * time.Millisecond,
		VerifyChecksums:  true,
		PairSlots:        1 << 20,
		PortSlots:        1 << 16,
		Candidates:       1 << 15,
		Watches:          4096,
		RemoteFlags:      1 << 14,
		Samples:          1024,
		SYNDestinations:  4096,
		Allowlist:        1024,
		RingBytes:        4 << 20,
	}
}

// Validate reports every setting that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.MinPorts < 2 || c.MinPorts > MaxTouches {
		errs = append(errs, fmt.Errorf("min_ports %d: must be between 2 and %d", c.MinPorts, MaxTouches))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"window", c.Window}, {"s0_timeout", c.S0Timeout}, {"handshake_timeout", c.HandshakeTimeout}, {"flag_ttl", c.FlagTTL}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s %v: must be positive", d.name, d.v))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"window", c.Window}, {"s0_timeout", c.S0Timeout}, {"handshake_timeout", c.HandshakeTimeout}, {"answer_skew", c.AnswerSkew}} {
		if d.v > maxWindow {
			errs = append(errs, fmt.Errorf("%s %v: must be at most %v (kept in 32-bit microseconds)", d.name, d.v, maxWindow))
		}
	}
	if c.FlagTTL > maxWindow {
		errs = append(errs, fmt.Errorf("flag_ttl %v: must be at most %v (the sweep must decide every entry before its 32-bit microseconds wrap)", c.FlagTTL, maxWindow))
	}
	if c.PortRefresh < 0 || c.AnswerSkew < 0 {
		errs = append(errs, fmt.Errorf("port_refresh %v, answer_skew %v: must not be negative", c.PortRefresh, c.AnswerSkew))
	}
	for _, m := range []struct {
		name string
		v    uint32
		min  uint32
	}{{"pair_slots", c.PairSlots, PairWays}, {"port_slots", c.PortSlots, 1}, {"candidates", c.Candidates, CandWays},
		{"watches", c.Watches, 1}, {"allowlist", c.Allowlist, 1}, {"remote_flags", c.RemoteFlags, 1}, {"samples", c.Samples, 1},
		{"syn_destinations", c.SYNDestinations, 1}} {
		if m.v < m.min || m.v > 1<<26 {
			errs = append(errs, fmt.Errorf("%s %d: must be between %d and %d", m.name, m.v, m.min, 1<<26))
		}
	}
	if c.RingBytes < 4096 || c.RingBytes&(c.RingBytes-1) != 0 {
		errs = append(errs, fmt.Errorf("ring_bytes %d: must be a power of two of at least 4096", c.RingBytes))
	}
	return errors.Join(errs...)
}

// Tables are the sizes the program is loaded with: every table is a power
// of two of buckets (or slots).
type Tables struct {
	PairBuckets, CandBuckets, PortSlots, Watches uint32
}

// Tables rounds the configured sizes as the loader and the Go twin do.
func (c Config) Tables() Tables {
	return Tables{
		PairBuckets: RoundPow2(max(c.PairSlots/PairWays, 1)),
		CandBuckets: RoundPow2(max(c.Candidates/CandWays, 1)),
		PortSlots:   RoundPow2(c.PortSlots),
		Watches:     RoundPow2(c.Watches),
	}
}

// RoundPow2 rounds v up to a power of two (at least 1), as the loader and
// the Go twin size the tables.
func RoundPow2(v uint32) uint32 {
	if v <= 1 {
		return 1
	}
	return 1 << bits.Len32(v-1)
}
