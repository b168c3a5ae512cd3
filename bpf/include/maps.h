/* maps.h — every map of the program, with its key, value, size and why.
 *
 * Sizes below are placeholders: the loader sets every max_entries from its
 * configuration before load (see sensor.Config and docs/ARCHITECTURE.md for
 * the kernel memory each takes at the defaults).
 *
 * Concurrency: a multi-queue NIC runs this program on many CPUs at once and
 * RSS spreads the packets of one (S, D) pair over them (it hashes ports).
 * Multi-field state that several packets of a pair update must change
 * together (a touch ring and its head, a pending SYN's port and sequence
 * number), which atomics cannot give, so it is guarded by a bpf_spin_lock.
 * The kernel allows spin locks only in HASH and ARRAY values, not in LRU
 * maps, so the locks are striped: the pair slot of hash(S, D) — an ARRAY
 * value — carries the lock that guards that slot AND every candidate,
 * flagged and watch entry of any pair hashing to it. All CPUs derive the
 * same slot from the same pair, so they serialize on the same lock. The
 * critical sections are a few dozen instructions with no helper calls.
 * Port slots take the same lock: a slot that changes owner must never be
 * read half old, half new.
 */
#ifndef KW_MAPS_H
#define KW_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "counters.h"

/* pair_slots: direct-mapped table, slot = hash(S, D) & CFG.pair_slots_mask.
 * Holds the first closed touch of a pair and its unanswered SYNs, so a SYN
 * flood costs one array write per packet and no allocation. A SYN of a
 * colliding pair takes the slot over (newest wins, counted): the previous
 * owner's pending SYNs and first touch are lost, its candidate (if any) is
 * not. Value: struct pair_slot. */
struct pair_slot {
	struct bpf_spin_lock lock;
	__u16 first_port;  /* first closed touch of the owner (valid if first_ts) */
	__u8 first_kind;   /* enum kw_touch_kind */
	__u8 _pad;
	__u32 cand_hash;   /* full pair hash of the last pair promoted to a candidate
			    * in this slot; survives takeovers, so a candidate is
			    * found again after a flood borrowed its slot */
	__u32 _pad2;
	__u64 first_ts;
	struct kw_pair owner;
	struct kw_pending pend[KW_PENDING];
	__u64 _pad3; /* 128 bytes: a slot spans exactly two cache lines */
} __attribute__((aligned(64)));


struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << 18);
	__type(key, __u32);
	__type(value, struct pair_slot);
} pair_slots SEC(".maps");

/* candidates: LRU hash (S, D) -> struct candidate, created at a pair's second
 * distinct closed touch. Scanners live here; a random-source flood never
 * reaches it (each flood source touches one port). */
struct candidate { /* guarded by the pair slot's lock */
	__u8 head;         /* next write position in ring */
	__u8 n;            /* valid entries in ring */
	__u16 distinct;    /* distinct ports in the current burst (saturating) */
	__u8 flag_sent;    /* 1: this candidate already decided to flag */
	__u8 _pad[3];
	__u64 last_ts;     /* latest touch; a touch > window later starts a new burst */
	struct kw_touch ring[KW_MAX_TOUCHES];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, struct kw_pair);
	__type(value, struct candidate);
} candidates SEC(".maps");

/* flagged: LRU hash (S, D) -> struct flagged, written once when a pair is
 * flagged. Kept apart from candidates so that no crowd of scanners or flood
 * sources can evict an attacker who already knocked: only other flagged
 * pairs compete for it. */
struct flagged { /* guarded by the pair slot's lock */
	__u16 nreported;                   /* valid entries in reported[] */
	__u16 distinct;                    /* distinct closed ports at flag time */
	__u64 flag_ts;
	__u16 reported[KW_REPORTED_PORTS]; /* ports whose first handshake was sent */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct kw_pair);
	__type(value, struct flagged);
} flagged SEC(".maps");

/* watch: LRU hash 4-tuple -> struct watch, a handshake of a flagged pair in
 * progress: created when a SYN of a flagged pair is answered by a SYN-ACK
 * (the SYN's seq and time come from its pending entry), completed by the ACK
 * of that SYN-ACK. Only flagged pairs reaching an open port create one. */
struct watch { /* guarded by the pair slot's lock */
	__u32 syn_seq;
	__u32 synack_seq;
	__u32 state; /* 2: SYN-ACK seen, 3: completed (left for the LRU to reclaim) */
	__u64 syn_ts;
	__u64 synack_ts;
	__u64 port_last_closed; /* port state before this connection's SYN-ACK */
	__u64 port_last_open;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct kw_conn);
	__type(value, struct watch);
} watch SEC(".maps");

/* port_slots: direct-mapped table, slot = hash(D, port) & CFG.port_slots_mask:
 * when D:port was last seen closed (RST or S0, to anyone) and open (a
 * SYN-ACK, to anyone). Refreshed only when older than CFG.port_refresh_ns. */
struct port_slot {
	struct bpf_spin_lock lock; /* owner and timestamps change together on takeover */
	__u32 _pad0;
	struct kw_addr host;
	__u16 port;
	__u16 _pad[3];
	__u64 last_closed;
	__u64 last_open;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << 16);
	__type(key, __u32);
	__type(value, struct port_slot);
} port_slots SEC(".maps");

/* allowlist: LPM trie, IPv4-mapped address prefix -> 1. Sources inside are
 * counted but never flagged. */
struct lpm_key {
	__u32 prefixlen; /* IPv4 prefixes are stored as 96 + len */
	struct kw_addr addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_key);
	__type(value, __u8);
} allowlist SEC(".maps");

/* events: ring buffer of struct knock_rec / struct handshake_rec. Records
 * are sent only on state transitions (a flag, a first handshake). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

/* stats: per-CPU counters, one entry (see counters.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kw_counters);
} stats SEC(".maps");

/* Arguments of kw_tier2, passed by pointer (a global function takes at
 * most five). */
struct kw_tier2_args {
	struct kw_touch first; /* the slot's first touch, on KW_TIER_PROMOTE */
	__u64 ts;              /* this touch */
	__u64 now;             /* detection time */
	__u16 port;
	__u8 kind;
	__u8 tier;
	__u32 _pad;
};

/* Touches a handler found under a pair slot's lock, finished by the entry
 * point after the handler returns (so the call chain's stack stays under
 * 512 bytes). */
struct kw_work {
	struct kw_pair pair;
	__u32 n;
	__u32 _pad;
	struct kw_tier2_args t[KW_PENDING];
};

/* iface_stats: per-CPU, per-interface counters, slot = ingress ifindex &
 * (KW_IF_SLOTS - 1). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KW_IF_SLOTS);
	__type(key, __u32);
	__type(value, struct kw_if_counters);
} iface_stats SEC(".maps");

/* scratch: per-CPU staging too large for the 512-byte stack: a KNOCK record
 * copied out of a candidate under its lock, a new candidate's initial
 * value, and the touches a handler leaves to the entry point. */
struct kw_scratch {
	struct knock_rec rec;
	struct candidate init;
	struct kw_work work;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kw_scratch);
} scratch SEC(".maps");

/* gates: single globals that let the hot path skip work.
 *  any_flagged: set when a pair is flagged; SYN-ACKs look up flagged only
 *               then.
 *  watch_until: while a watched handshake is in flight, plain ACKs look
 *               for its completing ACK; the sweep closes the gate after
 *               this time. */
__u32 any_flagged SEC(".bss");
__u64 watch_until SEC(".bss");

#endif
