/* touch.h — from closed-port touches to a knock flag.
 *
 * A touch (S, D, port, kind, ts) goes through three tiers:
 *   1. the pair slot remembers the pair's first touch (no allocation);
 *   2. a second distinct port within the window creates a candidate (LRU)
 *      that keeps the last KW_MAX_TOUCHES touches;
 *   3. when the candidate holds >= CFG.min_ports distinct ports within
 *      CFG.window_ns of its newest touch, the pair is flagged once: an entry
 *      in the flagged map and a KNOCK record on the ring buffer.
 * Allowlisted sources go through tiers 1-2 but are never flagged.
 *
 * Tier 1 runs under the pair slot's lock, inside the handler that found the
 * touch; tiers 2-3 run after it is released (they call helpers).
 */
#ifndef KW_TOUCH_H
#define KW_TOUCH_H

#include "helpers.h"
#include "maps.h"

enum kw_tier { KW_TIER_DONE = 0, KW_TIER_PROMOTE = 1, KW_TIER_CANDIDATE = 2 };

/* A touch found inside a pair slot's lock, finished after it is released. */
struct kw_found {
	__u64 ts;
	__u16 port;
	__u8 kind;
	__u8 tier;
};

/* kw_tier1 records a touch of the slot's owner (hash h). Caller holds
 * slot->lock and has checked the owner. Returns what must follow after the
 * lock is released; on KW_TIER_PROMOTE *first receives the earlier touch. */
static __always_inline int kw_tier1(struct pair_slot *slot, __u32 h, __u16 port, __u8 kind,
				    __u64 ts, struct kw_touch *first)
{
	if (slot->cand_hash == h)
		return KW_TIER_CANDIDATE;
	if (slot->first_ts && slot->first_port != port &&
	    !kw_after(ts, slot->first_ts, CFG.window_ns) &&
	    !kw_after(slot->first_ts, ts, CFG.window_ns)) {
		first->ts = slot->first_ts;
		first->port = slot->first_port;
		first->kind = slot->first_kind;
		slot->cand_hash = h;
		return KW_TIER_PROMOTE;
	}
	if (!slot->first_ts || slot->first_port != port || kw_after(ts, slot->first_ts, CFG.window_ns)) {
		slot->first_ts = ts; /* the first touch, or the last one left the window */
		slot->first_port = port;
		slot->first_kind = kind;
	}
	return KW_TIER_DONE;
}

static __always_inline int kw_allowlisted(const struct kw_addr *src)
{
	struct lpm_key k = { .prefixlen = 128, .addr = *src };

	return bpf_map_lookup_elem(&allowlist, &k) != NULL;
}

/* kw_distinct counts the distinct ports among the ring's touches within
 * window_ns of newest. Caller holds the pair slot's lock. */
static __always_inline __u32 kw_distinct(struct candidate *cd, __u64 newest)
{
	__u32 inwin = 0, distinct = 0, n = cd->n;

	/* Branch-free: the verifier walks these 16 x 16 steps as straight
	 * code instead of forking on every compare. */
	for (int i = 0; i < KW_MAX_TOUCHES; i++)
		inwin |= (kw_lt(i, n) & kw_within(newest, cd->ring[i].ts, CFG.window_ns)) << i;
	for (int i = 0; i < KW_MAX_TOUCHES; i++) {
		__u32 dup = 0;
		__u16 port = cd->ring[i].port;

		for (int j = i + 1; j < KW_MAX_TOUCHES; j++)
			dup |= (inwin >> j) & kw_eq16(cd->ring[j].port, port);
		distinct += (inwin >> i) & (dup ^ 1) & 1;
	}
	return distinct;
}

/* kw_candidate_add appends a touch to the candidate and decides whether to
 * flag, under the lock of the pair's slot. On a flag decision it copies the
 * ring, oldest first, into rec (per-CPU scratch) and returns 1. */
static __always_inline int kw_candidate_add(struct pair_slot *slot, struct candidate *cd, __u16 port,
					    __u8 kind, __u64 ts, struct knock_rec *rec)
{
	__u32 seen = 0, n, h, full, d;
	int flag = 0;

	bpf_spin_lock(&slot->lock);
	n = cd->n;
	/* Seen before only if touched within the window: a port from an
	 * earlier burst counts again. */
	for (int i = 0; i < KW_MAX_TOUCHES; i++)
		seen |= kw_lt(i, n) & kw_eq16(cd->ring[i].port, port) &
			kw_within(ts, cd->ring[i].ts, CFG.window_ns);
	if (kw_after(ts, cd->last_ts, CFG.window_ns))
		cd->distinct = 1; /* a new burst */
	else if (!seen && cd->distinct < 0xffff)
		cd->distinct++;
	if ((__s64)(ts - cd->last_ts) > 0)
		cd->last_ts = ts;
	h = cd->head & (KW_MAX_TOUCHES - 1);
	cd->ring[h].ts = ts;
	cd->ring[h].port = port;
	cd->ring[h].kind = kind;
	cd->head = (h + 1) & (KW_MAX_TOUCHES - 1);
	if (n < KW_MAX_TOUCHES)
		cd->n = ++n;
	if (!cd->flag_sent && (d = kw_distinct(cd, cd->last_ts)) >= CFG.min_ports) {
		cd->flag_sent = 1;
		flag = 1;
		rec->n = n;
		/* The burst count, never less than what the window shows. */
		rec->distinct = cd->distinct > d ? cd->distinct : d;
		/* Oldest first: once the ring is full it starts at head. */
		full = kw_lt(KW_MAX_TOUCHES - 1, n);
		h = cd->head & (0 - full);
		for (int i = 0; i < KW_MAX_TOUCHES; i++)
			rec->touches[i] = cd->ring[(h + i) & (KW_MAX_TOUCHES - 1)];
	}
	bpf_spin_unlock(&slot->lock);
	return flag;
}

/* kw_flag raises the flag for pair once and sends the KNOCK record staged in
 * rec. Returns 1 when the pair is flagged after the call. */
static __always_inline int kw_flag(struct kw_counters *c, const struct kw_pair *pair,
				   struct knock_rec *rec, __u64 now)
{
	struct flagged fl = {};
	struct knock_rec *out;

	if (kw_allowlisted(&pair->src)) {
		KW_INC(c, KW_C_ALLOWLISTED);
		return 0;
	}
	fl.flag_ts = now;
	fl.distinct = rec->distinct;
	if (bpf_map_update_elem(&flagged, pair, &fl, BPF_NOEXIST))
		return 1; /* already flagged */
	any_flagged = 1;
	KW_INC(c, KW_C_FLAGS);
	out = bpf_ringbuf_reserve(&events, sizeof(*out), 0);
	if (!out) {
		KW_INC(c, KW_C_RINGBUF_FULL);
		return 1;
	}
	rec->type = KW_REC_KNOCK;
	rec->pair = *pair;
	rec->flag_ts = now;
	__builtin_memcpy(out, rec, sizeof(*out));
	bpf_ringbuf_submit(out, 0);
	return 1;
}

/* kw_tier2 is the global function defined in knockwatch.c: it continues a
 * touch that kw_tier1 did not finish (candidate, flag). */
int kw_tier2(const struct kw_pair *pair, const struct kw_tier2_args *t);

#endif
