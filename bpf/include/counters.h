/* counters.h — per-CPU counters. One PERCPU_ARRAY entry holds them all, so a
 * packet pays one (inlined) lookup and then plain increments; userspace sums
 * the CPUs at scrape time. The order is the ABI: sensor/counters.go names
 * each index, in order (loader TestCounterNames reads this enum from the
 * compiled object's BTF and compares). */
#ifndef KW_COUNTERS_H
#define KW_COUNTERS_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

enum kw_counter {
	KW_C_PACKETS,          /* every packet */
	KW_C_BYTES,            /* bytes of every packet */
	KW_C_NON_IP,           /* not IPv4/IPv6 after up to two VLAN tags */
	KW_C_NON_TCP,          /* IP but not TCP */
	KW_C_TRUNCATED,        /* a header ran past the end of the packet */
	KW_C_FRAGMENT,         /* IPv4 non-first fragment or IPv6 fragment: skipped */
	KW_C_UNKNOWN_EXT,      /* IPv6 extension header we do not walk, or too many */
	KW_C_BAD_HEADER,       /* IHL < 5, doff < 5, IP version mismatch */
	KW_C_TCP,              /* TCP packets parsed */
	KW_C_SYN,              /* SYN without ACK */
	KW_C_SYNACK,           /* SYN+ACK */
	KW_C_RST,              /* RST, with or without ACK */
	KW_C_BAD_FLAGS,        /* SYN together with RST: ignored */
	KW_C_SYN_RETRANS,      /* SYN to a port already pending for the same pair */
	KW_C_TOUCH_REJ,        /* closed-port touch: SYN answered by matching RST */
	KW_C_TOUCH_S0,         /* closed-port touch: SYN unanswered past the S0 timeout */
	KW_C_BACKSCATTER,      /* RST answering no SYN we saw (or with a wrong ack) */
	KW_C_SYNACK_UNMATCHED, /* SYN-ACK answering no SYN we saw (or with a wrong ack) */
	KW_C_PORT_OPEN,        /* SYN-ACK matched to a pending SYN: port seen open */
	KW_C_PENDING_EVICTED,  /* an unanswered, not yet timed out SYN was pushed out */
	KW_C_SLOT_TAKEOVER,    /* a pair-bucket entry of another pair was evicted for a new one */
	KW_C_CANDIDATES,       /* candidates created (second distinct port of a pair) */
	KW_C_FLAGS,            /* knocks flagged (KNOCK records sent) */
	KW_C_HANDSHAKES,       /* HANDSHAKE records sent */
	KW_C_HANDSHAKE_BAD_ACK,/* watched connection's ACK did not ack the SYN-ACK */
	KW_C_HANDSHAKE_REPEAT, /* completed handshake to a port already reported for this knock */
	KW_C_WATCH_STARTED,    /* handshake watched (flagged pair, or first connections to a port) */
	KW_C_ALLOWLISTED,      /* touches by allowlisted sources (never flagged) */
	KW_C_RINGBUF_FULL,     /* ring-buffer reserve failed: record lost */
	KW_C_MAP_INSERT_FAIL,  /* state could not be recorded (no room a lower-value entry could give) */
	KW_C_PORT_SLOT_TAKEOVER, /* port-state slot changed owner */
	KW_C_NO_META,          /* replay mode packet without 8 bytes of metadata */
	KW_C_IPV4,
	KW_C_IPV6,
	KW_C_VLAN,             /* packets with at least one 802.1Q/802.1ad tag */
	KW_C_BAD_CSUM,         /* RST/SYN-ACK/deciding ACK with a wrong TCP checksum: ignored */
	KW_C_TOUCH_RSTOS0,     /* closed-port touch: SYN, then the originator's RST, no answer */
	KW_C_ANSWER_EARLY,     /* RST or SYN-ACK seen before the SYN it answers, then matched */
	KW_C_ACK_PROOF,        /* unanswered SYN proved answered by the client's ACK (SYN-ACK unseen) */
	KW_C_PAIR_FULL,        /* a pair bucket had no entry a new one could take: not recorded */
	KW_C_CAND_EVICTED,     /* a live candidate was pushed out of its bucket */
	KW_C_MARK_EVICTED,     /* a live candidate's mark was pushed out of its pair bucket */
	KW_C_KNOCK_DEFERRED,   /* a new burst within the window of the last KNOCK: sent later */
	KW_C_REPORTED_OVERFLOW,/* a knock's reported-ports list was full: its oldest was dropped */
	KW_C_WATCH_LOST,       /* a handshake watch was overwritten before its ACK */
	KW_C_ATTEMPTED,        /* distinct ports added to a pair's attempted count */
	KW_C_REMOTE_FLAG,      /* a handshake watched for a flag another sensor raised (flags_in) */
	KW_C_SAMPLES,          /* clock-calibration HANDSHAKE records sent (samples) */
	KW_C_SYN_DST_NEW,      /* SYN destinations inside dst_nets added to syn_dsts */
	KW_C_SYN_DST_FULL,     /* a SYN destination inside dst_nets found syn_dsts full: not recorded */
	KW_C__MAX,
};

struct kw_counters {
	__u64 c[KW_C__MAX];
};

/* KW_INC bumps one counter of this CPU's kw_counters (no atomics needed). */
#define KW_INC(c, idx) ((c)->c[(idx)]++)

/* Per-interface counters: packets, bytes and parse outcomes of each
 * capture interface, then its TCP SYNs, SYN-ACKs and RSTs (what coverage
 * needs to tell a tap missing one direction: SYNs almost never answered,
 * or answers with no SYNs), in a PERCPU_ARRAY slot chosen by ingress
 * ifindex (sensor.InterfaceCounterNames keeps the order; new counters are
 * appended). */
enum kw_if_counter {
	KW_IF_PACKETS,
	KW_IF_BYTES,
	KW_IF_TCP,
	KW_IF_NON_IP,
	KW_IF_NON_TCP,
	KW_IF_TRUNCATED,
	KW_IF_FRAGMENT,
	KW_IF_UNKNOWN_EXT,
	KW_IF_BAD_HEADER,
	KW_IF_SYN,    /* SYN without ACK (and without RST) */
	KW_IF_SYNACK, /* SYN with ACK (and without RST) */
	KW_IF_RST,    /* RST without SYN */
	KW_IF__MAX,
};

#define KW_IF_SLOTS 1024 /* ifindex & (KW_IF_SLOTS - 1) */

struct kw_if_counters {
	__u64 c[KW_IF__MAX];
};

#endif
