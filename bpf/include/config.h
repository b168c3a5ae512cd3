/* config.h — load-time configuration, set from Go through
 * CollectionSpec.Variables["CFG"] before the program is loaded. Nothing here
 * is compiled in: the defaults live in sensor.DefaultConfig. */
#ifndef KW_CONFIG_H
#define KW_CONFIG_H

#include <linux/types.h>

struct kw_config {
	__u64 window_ns;            /* W: knock window (default 30 s) */
	__u64 s0_timeout_ns;        /* a SYN unanswered this long after its last transmission is S0 (5 s) */
	__u64 handshake_timeout_ns; /* SYN to completing ACK, for watched handshakes (30 s) */
	__u64 port_refresh_ns;      /* port-state timestamps are rewritten only when older than this (1 s) */
	__u64 flag_ttl_ns;          /* a flag watches handshakes this long after its KNOCK */
	__u64 answer_skew_ns;       /* an RST or SYN-ACK may be seen this long before its SYN (5 ms) */
	__u32 window_us;            /* window_ns / 1000: the pair buckets keep microseconds */
	__u32 s0_timeout_us;        /* s0_timeout_ns / 1000 */
	__u32 answer_skew_us;       /* answer_skew_ns / 1000 */
	__u32 flag_ttl_ms;          /* flag_ttl_ns / 1000000: a MARK keeps its KNOCK in milliseconds */
	__u32 min_ports;            /* N: distinct closed ports that flag a pair (3) */
	__u32 hash_seed;            /* random per load; keys every table */
	__u32 pair_mask;            /* pairs max_entries - 1 (a power of two) */
	__u32 cand_mask;            /* cands max_entries - 1 */
	__u32 port_mask;            /* port_slots max_entries - 1 */
	__u32 watch_mask;           /* watches max_entries - 1 */
	__u8 replay;                /* 1: time comes from 8 bytes of XDP metadata (unix ns) */
	__u8 pass;                  /* 1: XDP_PASS, 0: XDP_DROP (capture ports see copies) */
	__u8 coarse_clock;          /* live mode: 1 = CLOCK_MONOTONIC_COARSE for every timestamp */
	__u8 report_touches;        /* 1: a TOUCH record per closed-port touch (replay --touches) */
	__u8 ack_proof;             /* 1: a client's ACK after its SYN proves the SYN was answered */
	__u8 verify_csum;           /* 1: TCP segments with a bad checksum are counted and ignored */
	__u8 _pad[2];
};

volatile const struct kw_config CFG;

#endif
