package sensor

// CounterNames names the per-CPU counters in the order of enum kw_counter
// (bpf/include/counters.h). The names become Prometheus label values; loader's drift test checks
// them, in order, against the enum in the compiled program's BTF.
var CounterNames = []string{
	"packets",
	"bytes",
	"non_ip",
	"non_tcp",
	"truncated",
	"fragment",
	"unknown_ext",
	"bad_header",
	"tcp",
	"syn",
	"synack",
	"rst",
	"bad_flags",
	"syn_retrans",
	"touch_rej",
	"touch_s0",
	"backscatter",
	"synack_unmatched",
	"port_open",
	"pending_evicted",
	"slot_takeover",
	"candidates",
	"flags",
	"handshakes",
	"handshake_bad_ack",
	"handshake_repeat",
	"watch_started",
	"allowlisted",
	"ringbuf_full",
	"map_insert_fail",
	"port_slot_takeover",
	"no_meta",
	"ipv4",
	"ipv6",
	"vlan",
	"bad_csum",
	"touch_rstos0",
	"answer_early",
	"ack_proof",
	"pair_full",
	"cand_evicted",
	"mark_evicted",
	"knock_deferred",
	"reported_overflow",
	"watch_lost",
	"attempted",
	"remote_flag",
	"samples",
	"syn_dst_new",
	"syn_dst_full",
}

// Counters are the program's counters summed over CPUs, by name.
type Counters map[string]uint64

// InterfaceCounterNames names the per-interface counters in the order of
// enum kw_if_counter (bpf/include/counters.h).
var InterfaceCounterNames = []string{
	"packets",
	"bytes",
	"tcp",
	"non_ip",
	"non_tcp",
	"truncated",
	"fragment",
	"unknown_ext",
	"bad_header",
	"syn",    // SYN without ACK
	"synack", // SYN with ACK
	"rst",    // RST without SYN
}

// MapFill is one BPF map's size and use, read by the loader at scrape time.
type MapFill struct {
	Name       string
	Type       string
	MaxEntries uint32
	// Entries is the number of keys for hash, LRU and LPM maps; -1 for
	// maps whose entries always exist (arrays, ring buffers).
	Entries      int64
	MemlockBytes uint64
}

// InterfaceStats is one capture interface as the sensor sees it: whether
// the program is attached (Mode), the link's own counters and the
// program's per-interface counters (InterfaceCounterNames).
type InterfaceStats struct {
	Name string
	// Mode is the attach mode that took; "" while not attached.
	Mode                          string
	Up                            bool
	RxPackets, RxBytes, RxDropped uint64
	// XDP holds the program's own per-interface counters (packets, bytes,
	// parse outcomes), nil when unknown.
	XDP Counters
}
