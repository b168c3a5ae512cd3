/* config.h — load-time configuration, set from Go through
 * CollectionSpec.Variables["CFG"] before the program is loaded. Nothing here
 * is compiled in: the defaults live in sensor.DefaultConfig. */
#ifndef KW_CONFIG_H
#define KW_CONFIG_H

#include <linux/types.h>

struct kw_config {
	__u64 window_ns;            /* W: knock window (default 30 s) */
	__u64 s0_timeout_ns;        /* a SYN unanswered this long is an S0 touch (2 s) */
	__u64 handshake_timeout_ns; /* SYN to completing ACK, for watched handshakes (30 s) */
	__u64 port_refresh_ns;      /* port-state timestamps are rewritten only when older than this (1 s) */
	__u32 min_ports;            /* N: distinct closed ports that flag a pair (3) */
	__u32 hash_seed;            /* random per load; keys the direct-mapped tables */
	__u32 pair_slots_mask;      /* pair_slots max_entries - 1 (a power of two) */
	__u32 port_slots_mask;      /* port_slots max_entries - 1 (a power of two) */
	__u8 replay;                /* 1: time comes from 8 bytes of XDP metadata (unix ns) */
	__u8 pass;                  /* 1: XDP_PASS, 0: XDP_DROP (capture ports see copies) */
	__u8 coarse_clock;          /* live mode: 0 CLOCK_TAI (ns), 1 CLOCK_MONOTONIC_COARSE (one tick) */
	__u8 _pad[5];
};

volatile const struct kw_config CFG;

#endif
