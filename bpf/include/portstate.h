/* portstate.h — per (D, port): last seen closed, first and last seen open,
 * and who first completed a handshake since it was last closed.
 *
 * Direct-mapped: a colliding (D, port) takes the slot over (counted as
 * KW_C_PORT_SLOT_TAKEOVER). Writers hold the slot's lock, so a takeover
 * (which clears the slot) never mixes one port's times into another's,
 * and a snapshot is whole. Timestamps only move forward and are rewritten
 * only when older than CFG.port_refresh_ns: a busy closed port costs a
 * read and no lock.
 *
 * What an attacker reads here: "open all along" and "someone else connected
 * first" decide that a handshake cannot alert. A SYN-ACK to a spoofed
 * source cannot complete a handshake, so only a completed handshake by
 * another source (done_ts with another done_fp) counts as someone else
 * first; the knocker's own probes (half-open scans, retries) never do.
 */
#ifndef KW_PORTSTATE_H
#define KW_PORTSTATE_H

#include "helpers.h"
#include "maps.h"

/* Port state as a handshake record carries it (the values before this
 * connection was answered). */
struct kw_port_snap {
	__u64 last_closed;
	__u64 first_open;
	__u64 last_open;
	__u64 done;
	__u32 done_fp;
	__u32 _pad;
};

static __always_inline struct port_slot *kw_port_slot(const struct kw_addr *host, __u16 port, __u32 *key)
{
	__u32 h = kw_hash_port(host, port), idx = h & CFG.port_mask;

	*key = (kw_fp(h) << 2) | 2; /* never 0 (free) nor KW_PORT_BUSY */
	return bpf_map_lookup_elem(&port_slots, &idx);
}

/* kw_own makes ps belong to key: returns 1 when it does (already, or after
 * a takeover that cleared it), 0 when another CPU is rewriting it. */
static __always_inline int kw_own(struct kw_counters *c, struct port_slot *ps, __u32 key)
{
	__u32 cur = ps->key;

	if (cur == key)
		return 1;
	if (cur == KW_PORT_BUSY || __sync_val_compare_and_swap(&ps->key, cur, KW_PORT_BUSY) != cur)
		return 0;
	if (cur)
		KW_INC(c, KW_C_PORT_SLOT_TAKEOVER);
	ps->last_closed = 0;
	ps->first_open = 0;
	ps->last_open = 0;
	ps->done_ts = 0;
	ps->done_fp = 0;
	__sync_lock_test_and_set(&ps->key, key);
	return 1;
}

/* kw_advance sets *v to ts if ts is later by more than refresh (or *v is 0). */
static __always_inline void kw_advance(__u64 *v, __u64 ts, __u64 refresh)
{
	for (int i = 0; i < 2; i++) {
		__u64 cur = *v;

		if (cur && !kw_after(ts, cur, refresh))
			return;
		if (__sync_val_compare_and_swap(v, cur, ts) == cur)
			return;
	}
}

/* kw_port_closed: host:port was seen closed at ts (a REJ, S0 or RSTOS0
 * touch; ts is the SYN's time). A close after the port was seen open
 * starts its next open period afresh. */
static __always_inline void kw_port_closed(struct kw_counters *c, const struct kw_addr *host, __u16 port, __u64 ts)
{
	__u32 key;
	struct port_slot *ps = kw_port_slot(host, port, &key);
	__u64 fo, lc;

	if (!ps)
		return;
	/* A busy closed port (a flood answered by RSTs) needs no change most
	 * of the time: a read, no lock. */
	lc = ps->last_closed;
	fo = ps->first_open;
	if (ps->key == key && lc && !kw_after(ts, lc, CFG.port_refresh_ns) && !(fo && kw_after(ts, fo, 0)))
		return;
	bpf_spin_lock(&ps->lock);
	if (!kw_own(c, ps, key)) {
		bpf_spin_unlock(&ps->lock);
		return;
	}
	kw_advance(&ps->last_closed, ts, CFG.port_refresh_ns);
	fo = ps->first_open;
	if (fo && kw_after(ts, fo, 0)) {
		/* Closed again after it opened: the next opener is new. */
		__sync_val_compare_and_swap(&ps->first_open, fo, 0);
		ps->done_ts = 0;
	}
	bpf_spin_unlock(&ps->lock);
}

/* kw_port_open: host:port answered a SYN of the source with fingerprint
 * src_fp at ts (a SYN-ACK, or the client's ACK proving one). With snap,
 * the state from before this answer is copied out first. */
static __always_inline void kw_port_open(struct kw_counters *c, const struct kw_addr *host, __u16 port, __u64 ts,
					 struct kw_port_snap *snap)
{
	__u32 key;
	struct port_slot *ps = kw_port_slot(host, port, &key);
	__u64 fo, lc;

	if (!ps)
		return;
	bpf_spin_lock(&ps->lock);
	if (!kw_own(c, ps, key)) {
		bpf_spin_unlock(&ps->lock);
		return;
	}
	lc = ps->last_closed;
	fo = ps->first_open;
	if (snap) {
		snap->last_closed = lc;
		snap->first_open = fo;
		snap->last_open = ps->last_open;
		snap->done = ps->done_ts;
		snap->done_fp = ps->done_fp;
	}
	kw_advance(&ps->last_open, ts, CFG.port_refresh_ns);
	if (!fo || (lc && kw_after(lc, fo, 0)))
		__sync_val_compare_and_swap(&ps->first_open, fo, ts);
	bpf_spin_unlock(&ps->lock);
}

/* kw_port_wants_first: no completed handshake is known since the port was
 * last seen closed, so the next one is worth watching. */
static __always_inline int kw_port_wants_first(const struct kw_port_snap *snap)
{
	return !snap->done || (snap->last_closed && kw_after(snap->last_closed, snap->done, 0));
}

/* kw_port_done: the source with fingerprint src_fp completed a handshake
 * with host:port at ts; the first since the port was last closed is kept. */
static __always_inline void kw_port_done(struct kw_counters *c, const struct kw_addr *host, __u16 port, __u64 ts,
					 __u32 src_fp)
{
	__u32 key;
	struct port_slot *ps = kw_port_slot(host, port, &key);
	__u64 d;

	if (!ps)
		return;
	bpf_spin_lock(&ps->lock);
	if (!kw_own(c, ps, key)) {
		bpf_spin_unlock(&ps->lock);
		return;
	}
	d = ps->done_ts;
	if (!d || (ps->last_closed && kw_after(ps->last_closed, d, 0))) {
		ps->done_ts = ts;
		ps->done_fp = src_fp;
	}
	bpf_spin_unlock(&ps->lock);
}

#endif
