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
 * window_ns of newest. Caller holds the candidate's lock. */
static __always_inline __u32 kw_distinct(struct candidate *cd, __u64 newest)
{
	__u32 distinct = 0;

	for (int i = 0; i < KW_MAX_TOUCHES; i++) {
		int dup = 0;

		if (i >= cd->n || kw_after(newest, cd->ring[i].ts, CFG.window_ns))
			continue;
		for (int j = i + 1; j < KW_MAX_TOUCHES; j++) {
			if (j >= cd->n || kw_after(newest, cd->ring[j].ts, CFG.window_ns))
				continue;
			if (cd->ring[j].port == cd->ring[i].port)
				dup = 1;
		}
		distinct += !dup;
	}
	return distinct;
}

/* kw_candidate_add appends a touch to the candidate and decides whether to
 * flag. On a flag decision it copies the ring, oldest first, into rec
 * (per-CPU scratch) and returns 1. */
static __always_inline int kw_candidate_add(struct candidate *cd, __u16 port, __u8 kind,
					    __u64 ts, struct knock_rec *rec)
{
	int flag = 0, seen = 0;
	__u32 h;

	bpf_spin_lock(&cd->lock);
	for (int i = 0; i < KW_MAX_TOUCHES; i++)
		if (i < cd->n && cd->ring[i].port == port)
			seen = 1;
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
	if (cd->n < KW_MAX_TOUCHES)
		cd->n++;
	if (!cd->flag_sent && kw_distinct(cd, cd->last_ts) >= CFG.min_ports) {
		cd->flag_sent = 1;
		flag = 1;
		rec->n = cd->n;
		rec->distinct = cd->distinct;
		for (int i = 0; i < KW_MAX_TOUCHES; i++) {
			__u32 from = (cd->n < KW_MAX_TOUCHES ? i : cd->head + i) & (KW_MAX_TOUCHES - 1);

			rec->touches[i] = cd->ring[from];
		}
	}
	bpf_spin_unlock(&cd->lock);
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

/* kw_tier2 continues a touch that kw_tier1 did not finish: creates the
 * candidate on KW_TIER_PROMOTE, adds the touch, flags when it is time. */
static __always_inline void kw_tier2(struct kw_counters *c, const struct kw_pair *pair, int tier,
				     const struct kw_touch *first, __u16 port, __u8 kind,
				     __u64 ts, __u64 now)
{
	__u32 zero = 0;
	struct kw_scratch *s;
	struct candidate *cd;

	if (tier == KW_TIER_DONE)
		return;
	s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return;
	cd = bpf_map_lookup_elem(&candidates, pair);
	if (!cd) {
		struct candidate *init = &s->init;

		/* Promotion: start from the slot's first touch. A candidate
		 * the LRU evicted starts again from this touch. */
		__builtin_memset(init, 0, sizeof(*init));
		init->last_ts = ts;
		if (tier == KW_TIER_PROMOTE) {
			init->ring[0] = *first;
			init->n = 1;
			init->head = 1;
			init->distinct = 1;
			init->last_ts = first->ts;
		}
		if (bpf_map_update_elem(&candidates, pair, init, BPF_NOEXIST) == 0)
			KW_INC(c, KW_C_CANDIDATES);
		cd = bpf_map_lookup_elem(&candidates, pair);
		if (!cd) {
			KW_INC(c, KW_C_MAP_INSERT_FAIL);
			return;
		}
	}
	if (kw_candidate_add(cd, port, kind, ts, &s->rec))
		kw_flag(c, pair, &s->rec, now);
}

#endif
