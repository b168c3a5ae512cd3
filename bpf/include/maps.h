/* maps.h — every map of the program, with its key, value, size and why.
 *
 * Sizes below are placeholders: the loader sets every max_entries from its
 * configuration before load (see sensor.Config and docs/ARCHITECTURE.md for
 * the memory each takes at the defaults).
 *
 * No LRU map and no allocation on a packet path: every table is an ARRAY of
 * fixed-size sets chosen by a keyed hash, with its own eviction order. That
 * is what makes a flood cheap (one cache line per new pair) and what lets
 * the eviction order protect a knock in progress from it.
 *
 * Concurrency: a multi-queue NIC runs this program on many CPUs at once and
 * RSS spreads the packets of one (S, D) pair over them (it hashes ports), so
 * a SYN and its answer may be handled on two CPUs at the same moment.
 *  - Pair buckets (the flood path) take no lock: an entry is claimed,
 *    updated and consumed with compare-and-swap on its tag word (pairs.h).
 *    Exactly one CPU consumes a pending SYN, so an answer becomes exactly
 *    one touch.
 *  - Candidate buckets (pairs with two or more ports: knockers, scanners)
 *    carry a bpf_spin_lock guarding the whole bucket: a touch ring and its
 *    head, a flag and its epoch change together.
 *  - Port slots are updated lock-free (portstate.h).
 *  - Watches are guarded by their own slot's lock.
 *  - Counters are per-CPU.
 */
#ifndef KW_MAPS_H
#define KW_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "counters.h"

/* ---- pairs: the flood tier ------------------------------------------- */

/* One entry of a pair bucket: 16 bytes, four to a cache line. The tag says
 * whose (a 24-bit fingerprint of (S, D)) and what; the rest depends on the
 * kind:
 *   SYN     a pending SYN: t = its latest transmission, seq, sport, dport
 *   TOUCH_* a single-port pair's closed touch of dport: t = the SYN's time,
 *           sport (the SYN's source port)
 *   MARK    the pair is a candidate: seq = its candidate index, t = last
 *           activity, (sport << 16 | dport) = its last KNOCK in ms (0 none)
 *   EARLY_* an RST or SYN-ACK seen before its SYN: t = seen, seq = its ack,
 *           sport/dport oriented as the SYN's
 * Times are microseconds, low 32 bits (they are compared within minutes of
 * now; see kw_us_full). */
struct kw_slot {
	__u32 tag;   /* KW_TAG_*: fp << 8 | kind << 5 | busy << 4 | version; 0 = free */
	__u32 t;     /* µs, low 32 bits */
	__u32 seq;
	__u16 sport;
	__u16 dport;
};

enum kw_slot_kind {
	KW_K_FREE = 0,
	KW_K_SYN = 1,
	KW_K_MARK = 2,
	KW_K_EARLY_RST = 3,
	KW_K_EARLY_SYNACK = 4,
	KW_K_TOUCH_REJ = 5,   /* = 4 + KW_TOUCH_REJ */
	KW_K_TOUCH_S0 = 6,    /* = 4 + KW_TOUCH_S0 */
	KW_K_TOUCH_RSTOS0 = 7,/* = 4 + KW_TOUCH_RSTOS0 */
};

#define KW_TAG_FP(tag) ((tag) >> 8)
#define KW_TAG_KIND(tag) (((tag) >> 5) & 7)
#define KW_TAG_BUSY 0x10u
#define KW_TAG_VER(tag) ((tag) & 0xfu)
#define KW_TAG(fp, kind, ver) (((fp) << 8) | ((kind) << 5) | ((ver) & 0xfu))

/* pairs: ARRAY of buckets, bucket = hash(S, D) & CFG.pair_mask. A new pair
 * takes a free entry, else a stale one, else the oldest entry that is not a
 * live candidate's MARK: a flood of one-SYN sources only ever competes with
 * itself, and a pair is protected from the moment its second distinct port
 * turns it into a candidate (its SYNs then live in the candidate). */
struct kw_bucket {
	struct kw_slot s[KW_WAYS];
} __attribute__((aligned(64)));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << 18);
	__type(key, __u32);
	__type(value, struct kw_bucket);
} pairs SEC(".maps");

/* owners: the (S, D) of every pair entry, slot = bucket * KW_WAYS + way,
 * kept only with CFG.report_touches (one entry otherwise): the sweep, which
 * finds S0 touches by fingerprint, needs the addresses for their TOUCH
 * records. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kw_pair);
} owners SEC(".maps");

/* ---- cands: pairs with two or more ports ----------------------------- */

/* One unanswered SYN of a candidate. */
struct kw_pend {
	__u64 t;     /* latest transmission (ns); 0 = free */
	__u32 seq;
	__u16 sport;
	__u16 dport;
};

/* A candidate: a pair that tried a second distinct port within the window.
 * Knockers and scanners live here; a flood of one-SYN sources never does. */
struct kw_cand {
	struct kw_pair pair;  /* all zero = free */
	__u64 last_ts;        /* newest activity: a touch, an attempt, a SYN */
	__u64 touch_ts;       /* newest touch or attempt: a burst ends a window after it */
	__u64 flag_ts;        /* latest KNOCK (detection time), 0 = never */
	__u64 flag_touch_ts;  /* newest touch that KNOCK carried */
	__u32 epoch;          /* KNOCKs sent so far */
	__u16 distinct;       /* distinct closed ports in the current burst (saturating) */
	__u16 attempted;      /* distinct ports tried without an open answer (saturating) */
	__u8 n;               /* valid entries in ring */
	__u8 head;            /* next write position in ring */
	__u8 nrep;            /* valid entries in reported */
	__u8 rephead;         /* next write position in reported */
	__u8 due;             /* a KNOCK was deferred: the sweep sends it when allowed */
	__u8 _pad[3];
	__u16 reported[KW_REPORTED_PORTS]; /* ports whose first handshake was sent, this epoch */
	struct kw_pend pend[KW_CPEND];
	struct kw_touch ring[KW_MAX_TOUCHES];
};

/* cands: ARRAY of buckets, bucket = hash(S, D) & CFG.cand_mask. A new
 * candidate takes a free entry, else one whose burst and flag are over,
 * else the least recently active flagged one (its flag lives on in the
 * pair's MARK), else the least recently active (counted). Value: the bucket and the lock that guards it. */
struct kw_cand_bucket {
	struct bpf_spin_lock lock;
	__u32 _pad;
	struct kw_cand c[KW_CAND_WAYS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << 13);
	__type(key, __u32);
	__type(value, struct kw_cand_bucket);
} cands SEC(".maps");

/* ---- port state ------------------------------------------------------ */

/* port_slots: direct-mapped by hash(D, port) & CFG.port_mask: what the
 * sensor last saw of D:port, whoever touched it. A colliding (D, port)
 * takes the slot over (counted). Writers hold the slot's lock; a closed
 * touch that changes nothing reads it without. */
struct port_slot {
	__u32 key;       /* fingerprint of (D, port), 0 = free; KW_PORT_BUSY while rewritten */
	__u32 done_fp;   /* fingerprint of the source of done_ts */
	__u64 last_closed; /* latest closed touch (REJ, S0, RSTOS0), anyone */
	__u64 first_open;  /* first SYN-ACK (or proving ACK) since last_closed, anyone */
	__u64 last_open;   /* latest SYN-ACK, anyone */
	__u64 done_ts;     /* first completed handshake since last_closed (0: none seen) */
	struct bpf_spin_lock lock; /* guards the slot: a takeover clears it, so writers hold it */
	__u32 _pad0;
	__u64 _pad[2];
} __attribute__((aligned(64)));

#define KW_PORT_BUSY 1u

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << 16);
	__type(key, __u32);
	__type(value, struct port_slot);
} port_slots SEC(".maps");

/* ---- handshake watches ----------------------------------------------- */

/* watches: direct-mapped by hash(4-tuple) & CFG.watch_mask: a handshake in
 * flight, from its SYN-ACK to the ACK that completes it. Watched are the
 * handshakes of flagged pairs (a HANDSHAKE record follows) and the first
 * connections to a port since it was last seen closed (the port state
 * learns who completed one first). A watch of a flagged pair is never
 * overwritten by a port's first-connection watch. */
struct kw_watch {
	struct bpf_spin_lock lock;
	__u32 state;          /* 0 free, 2 SYN-ACK seen, 3 completed */
	struct kw_conn conn;
	__u32 syn_seq;
	__u32 synack_seq;     /* valid when has_synack */
	__u32 epoch;          /* the flag's knock; 0 = port watch only */
	__u8 flagged;
	__u8 has_synack;
	__u8 why;             /* enum kw_hs_why beyond the pair's own flag */
	__u8 _pad;
	__u64 syn_ts;
	__u64 synack_ts;
	__u64 port_last_closed; /* port state before this connection was answered */
	__u64 port_first_open;
	__u64 port_last_open;
	__u64 port_done;
	__u32 port_done_fp;
	__u32 _pad2;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << 12);
	__type(key, __u32);
	__type(value, struct kw_watch);
} watches SEC(".maps");

/* ---- what userspace asks for ----------------------------------------- */

/* flags_in: flags raised elsewhere — by another sensor of a scale-out
 * deployment, whose tap saw the knock (docs/SCALE-OUT.md). (S, D) -> the
 * flag's expiry in program time. Written by userspace only; read when a
 * SYN-ACK answers a pair without a live flag of its own, and only while
 * the gate flags_in_n says it holds any. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 14);
	__type(key, struct kw_pair);
	__type(value, __u64);
} flags_in SEC(".maps");

/* samples: hosts whose next completed handshake userspace wants, to
 * measure the host's clock against its own connection logs
 * (docs/COVERAGE.md). D -> until (program time). The program reports the
 * first one (a HANDSHAKE with why KW_HS_SAMPLE) and removes the entry, so
 * each request costs one record. Gated by samples_n. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 10);
	__type(key, struct kw_addr);
	__type(value, __u64);
} samples SEC(".maps");

/* ---- the rest -------------------------------------------------------- */

/* allowlist: LPM trie, IPv4-mapped address prefix -> 1. Sources inside are
 * counted but never flagged. */
struct lpm_key {
	__u32 prefixlen; /* IPv4 prefixes are stored as 96 + len */
	__u8 addr[16];   /* the address bytes right after prefixlen, as LPM keys require */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_key);
	__type(value, __u8);
} allowlist SEC(".maps");

/* dst_nets: LPM trie, IPv4-mapped address prefix -> 1: the networks whose
 * hosts coverage lists (coverage.networks). Written by userspace only. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_key);
	__type(value, __u8);
} dst_nets SEC(".maps");

/* syn_dsts: hosts inside dst_nets that SYNs went to, so coverage knows the
 * hosts taking traffic that no event, record or inventory names
 * (docs/COVERAGE.md). D -> program time of its latest SYN, refreshed in
 * place at most once per KW_DST_REFRESH_NS (no write otherwise); a
 * destination outside dst_nets costs one trie lookup and no write. A
 * full table is counted (syn_dst_full), not evicted into: userspace reads
 * it every few seconds and deletes what it read once it aged. Gated by
 * dst_nets_n. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 12);
	__type(key, struct kw_addr);
	__type(value, __u64);
} syn_dsts SEC(".maps");

/* dst_seen: per CPU, the syn_dsts entry this CPU last read or wrote (D and
 * its time as the table held it), so a flood at one host skips the hash
 * lookup. Skipping is exact: the table's time for D is never older than
 * the one kept here, so a SYN to D within KW_DST_REFRESH_NS of it would
 * leave the table as it is anyway. Zeroed whenever the table is cleared
 * (Reset, SetDestinationNets). */
struct kw_dst_seen {
	struct kw_addr d;
	__u64 last;  /* D's time in syn_dsts when this CPU saw it */
	__u64 valid; /* 0 until set */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kw_dst_seen);
} dst_seen SEC(".maps");

/* events: ring buffer of struct knock_rec / handshake_rec / touch_rec.
 * Records are sent only on state transitions (a knock, a first handshake)
 * and, with CFG.report_touches, per touch. */
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

/* iface_stats: per-CPU, per-interface counters, slot = ingress ifindex &
 * (KW_IF_SLOTS - 1). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KW_IF_SLOTS);
	__type(key, __u32);
	__type(value, struct kw_if_counters);
} iface_stats SEC(".maps");

/* A closed touch (or an unanswered attempt pushed out) handed from a
 * lock-free handler to kw_cand_touch/kw_single_touch. */
struct kw_tev {
	struct kw_conn conn; /* the SYN's 4-tuple */
	__u64 ts;            /* the SYN's time */
	__u64 now;           /* detection time */
	__u32 seq;           /* the SYN's seq (for moving pending SYNs) */
	__u8 kind;           /* enum kw_touch_kind */
	__u8 _pad[3];
};

/* Staged output of one candidate or touch operation, emitted once no lock
 * is held (touches to record, a KNOCK to send). */
#define KW_STAGE 12

struct kw_staged {
	struct kw_conn conn[KW_STAGE]; /* the SYN's 4-tuple of each touch */
	__u64 ts[KW_STAGE];
	__u8 kind[KW_STAGE];
	__u32 n;
	__u8 knock;   /* 1: rec holds a KNOCK to send */
	__u8 _pad[3];
};

/* What a SYN found of its pair in the pair bucket (syn.h). */
struct kw_syn_scan {
	__u32 h, fp;
	__s32 same;      /* way of this attempt's pending SYN, -1 */
	__s32 early;     /* way of an answer that came first, -1 */
	__s32 mark;      /* way of the pair's MARK, -1 */
	__u32 same_tag, early_tag, cidx;
	__u32 due;       /* ways of the pair's SYNs past the S0 timeout */
	__u8 other;      /* the pair has another port pending or touched */
	__u8 flagged;    /* the MARK's flag is live */
	__u8 _pad[2];
};

/* A new pair-bucket entry's fields, for kw_g_insert (pairs.h). */
struct kw_ins {
	__u32 t;
	__u32 seq;
	__u16 sport;
	__u16 dport;
	__u32 keep_fp;
};

/* A closed touch handed to kw_g_touch. */
struct kw_touch_ev {
	struct kw_pair pair;
	__u64 ts;
	__u16 port;
	__u16 sport;
	__u8 kind;
	__u8 has_pair; /* 0: the sweep, which knows only the fingerprint */
	__u8 _pad[2];
};

/* An answer looked for by kw_g_answer. */
struct kw_ans {
	struct kw_pair pair; /* oriented as the SYN */
	__u16 sport;
	__u16 dport;
	__u32 v;             /* ack (or seq) to match */
	__u32 how;           /* enum kw_match */
	__u32 epoch;         /* result */
	__u8 flagged;        /* result */
	__u8 _pad[3];
	__s32 found;         /* scan: the pending SYN's way, -1 */
	__s32 mark;          /* scan: the pair's MARK's way, -1 */
	__u32 tag, cidx;     /* scan: the SYN's tag, the MARK's candidate */
};

/* What a touch step found of its pair in the pair bucket (touch.h). */
struct kw_touch_scan {
	__s32 mark, touch, other;
	__u32 cidx;
	__u32 same; /* an S0 of the attempt the TOUCH entry already counted */
	__u32 _pad;
};

/* One step of work a handler leaves for the entry point to run after it
 * (knockwatch.c, kw_run_work): handlers never call each other deeply, so
 * the 512-byte stack holds at most the entry, one step and its helpers.
 * Every step concerns scratch.cur's pair. */
enum kw_op {
	KW_W_TOUCH = 1,     /* a closed touch of a pair without a candidate: a = way, b = way_tag */
	KW_W_PROMOTE = 2,   /* make the pair a candidate: kind 0 = with a SYN (scratch.ev), else this touch */
	KW_W_CAND_SYN = 3,  /* a SYN of the candidate a (scratch.ev) */
	KW_W_CAND_TOUCH = 4,/* a touch (or attempt) of the candidate a */
	KW_W_OPENED = 5,    /* a port answered: scratch.oev; a = proven */
	KW_W_EMIT = 6,      /* send what was staged; a = cidx */
	KW_W_MARK = 7,      /* refresh the pair's MARK: a = cidx */
	KW_W_FLAG = 8,      /* send the candidate a's deferred KNOCK if due */
	KW_W_RECHECK = 9,   /* after publishing: early answers and touches the pair's candidate missed */
};

struct kw_work {
	__u64 ts;
	__u32 a;
	__u32 b;
	__u16 port;
	__u16 sport;
	__u8 op;   /* enum kw_op */
	__u8 kind; /* a touch's kind */
	__u8 _pad[2];
};

#define KW_WORK 24

/* The pair every queued step concerns. */
struct kw_cur {
	struct kw_pair pair;
	__u32 h, fp;
	__u8 has_pair; /* 0: the sweep, which knows only the fingerprint */
	__u8 _pad[7];
};

/* scratch: per-CPU staging too large for the 512-byte stack, and the
 * arguments and results of the global functions (knockwatch.c). */
struct kw_scratch {
	struct kw_work work[KW_WORK];  /* the queue kw_run_work drains */
	__u32 nwork;
	__u32 _padw;
	struct kw_cur cur;             /* the pair of the queued work */
	struct kw_packet pkt;          /* the packet being handled */
	struct kw_touch_ev tev;        /* kw_g_touch's touch */
	struct kw_ans ans;             /* kw_g_answer's query */
	struct kw_open_ev oev;         /* kw_g_opened's event */
	struct kw_syn_scan scan;       /* a SYN's view of its bucket */
	struct kw_touch_scan tscan;    /* a touch step's view of its bucket */
	struct kw_ins ins;             /* kw_g_insert's entry */
	struct handshake_rec hs;       /* kw_g_done's handshake */
	struct knock_rec rec;          /* a KNOCK copied out of a candidate under its lock */
	struct kw_staged st;           /* what the operation leaves to emit */
	struct kw_tev ev;              /* the event a handler passes to a global function */
	struct kw_touch dues[KW_CPEND + 1]; /* touches a candidate operation decided under its lock (cands.h) */
	struct kw_pend moved[KW_WAYS]; /* pending SYNs moving into a new candidate */
	__u32 tags[KW_WAYS];           /* the tags of the entries a promotion holds */
	struct kw_touch firsts[KW_WAYS]; /* touches moving into a new candidate */
	__u32 nmoved, nfirsts;
	__u32 cidx;                    /* result: the candidate's index */
	__u32 epoch;                   /* result: the candidate's knock epoch */
	__u16 distinct, attempted;     /* result: the candidate's counts */
	__u8 flagged;                  /* result: the pair's flag is live */
	__u8 matched;                  /* result: an answer matched */
	__u8 _pad[2];
	__u64 match_t;                 /* result: the matched SYN's time */
	__u32 match_seq;               /* result: the matched SYN's seq */
	__u32 _pad2;
	struct kw_pair pair;           /* the sweep's current pair */
	__u64 fence;                   /* target of kw_fence */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kw_scratch);
} scratch SEC(".maps");

static __always_inline struct kw_scratch *kw_scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&scratch, &zero);
}

static __always_inline struct kw_counters *kw_stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&stats, &zero);
}

/* gates: single globals that let the hot path skip work.
 *  watch_until: while a watched handshake may be in flight, plain ACKs look
 *               for its completing ACK; the sweep closes the gate after
 *               this time. */
__u64 watch_until SEC(".bss");

/*  flags_in_n, samples_n: how many entries userspace keeps in flags_in and
 *               samples (0: the answer path skips the lookup). */
__u32 flags_in_n SEC(".bss");
__u32 samples_n SEC(".bss");
/*  dst_nets_n: the prefixes userspace keeps in dst_nets (0: SYNs skip
 *               syn_dsts). */
__u32 dst_nets_n SEC(".bss");

#endif
