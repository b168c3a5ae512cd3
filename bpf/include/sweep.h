/* sweep.h — userspace's cheap aging.
 *
 * The packet path ages a pair's SYNs when the same pair sends again. A
 * source that knocks and goes quiet would leave its last SYNs pending, and
 * a KNOCK deferred by the one-per-window rule would wait for a packet that
 * never comes; userspace runs knockwatch_sweep with BPF_PROG_RUN (every
 * second live, on capture time in replay) over a range of pair buckets
 * (which = 0) or candidate buckets (which = 1). It shares every step with
 * the packet path. It also closes the watched-ACK gate once it expired.
 *
 * Input: 24 bytes of XDP metadata, struct kw_sweep_args; the packet data
 * is ignored (BPF_PROG_RUN needs at least an Ethernet header's worth).
 * Returns the number of S0 touches found.
 */
#ifndef KW_SWEEP_H
#define KW_SWEEP_H

#include "helpers.h"
#include "maps.h"
#include "pairs.h"
#include "touch.h"
#include "work.h"

struct kw_sweep_args {
	__u64 now;   /* time to age against (ns, same clock as the packets) */
	__u32 start; /* first bucket */
	__u32 count; /* buckets to visit */
	__u32 which; /* 0: pair buckets, 1: candidate buckets */
	__u32 _pad;
};

struct kw_sweep_ctx {
	__u64 now;
	__u32 start;
	__u32 found;
};

int kw_g_sweep_pair(__u32 idx, __u32 w, __u64 now);
int kw_g_sweep_cand(__u32 bucket, __u32 w, __u64 now);

/* kw_sweep_pair_body ages entry w of pair bucket idx: a SYN unanswered
 * past the timeout becomes an S0 touch (of a single-port pair: a
 * candidate's SYNs live in the candidate), any other entry nobody needs
 * any more (kw_stale) is freed. Returns 1 for an S0 touch queued. */
static __always_inline int kw_sweep_pair_body(__u32 idx, __u32 w, __u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_bucket *b = bpf_map_lookup_elem(&pairs, &idx);
	struct kw_slot *sl;
	__u32 tg, k;

	if (!s || !b)
		return 0;
	sl = &b->s[w & (KW_WAYS - 1)];
	tg = sl->tag;
	k = KW_TAG_KIND(tg);
	if (!tg || (tg & KW_TAG_BUSY))
		return 0;
	if (k != KW_K_SYN) {
		/* Early answers past the skew, touches past the window, MARKs
		 * no longer live: freed. Run every second, the sweep keeps every
		 * entry younger than half the range of its 32-bit time. */
		if (kw_stale(sl, k, kw_us32(now), kw_ms32(now)))
			kw_take(sl, tg);
		return 0;
	}
	if (!kw_due(sl, kw_us32(now)))
		return 0;
	if (!kw_claim(sl, tg))
		return 0;
	/* The pair's addresses are known only with CFG.report_touches (the
	 * owners map); without them the bucket index stands for its hash and
	 * the tag gives its fingerprint: the touch is kept and counted. */
	__builtin_memset(&s->cur, 0, sizeof(s->cur));
	s->cur.h = idx;
	s->cur.fp = KW_TAG_FP(tg);
	if (CFG.report_touches) {
		__u32 oi = (idx << 2) | (w & 3);
		struct kw_pair *o = bpf_map_lookup_elem(&owners, &oi);

		if (o) {
			s->cur.pair = *o;
			s->cur.h = kw_hash_pair(o);
			s->cur.has_pair = (s->cur.h & CFG.pair_mask) == idx && kw_fp(s->cur.h) == KW_TAG_FP(tg);
			if (!s->cur.has_pair)
				s->cur.h = idx;
		}
	}
	kw_push(s, KW_W_TOUCH, KW_TOUCH_S0, sl->dport, sl->sport, kw_us_full(now, sl->t), w & 3, KW_TAG_BUSY);
	kw_push(s, KW_W_EMIT, 0, 0, 0, 0, 0, 0);
	return 1;
}

/* kw_sweep_cand_body ages candidate w of candidate bucket `bucket`:
 * pending SYNs past the S0 timeout, a deferred KNOCK whose window has
 * passed, and frees it once its burst and flag are over. Returns the S0
 * touches queued. */
static __always_inline int kw_sweep_cand_body(__u32 bucket, __u32 w, __u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_cand_bucket *cb = bpf_map_lookup_elem(&cands, &bucket);
	struct kw_cand *cd;
	__u32 cidx = (bucket << 2) | (w & 3), n;
	int due, over;

	if (!s || !cb)
		return 0;
	cd = &cb->c[w & 3];
	kw_clear_dues(s);
	bpf_spin_lock(&cb->lock);
	if (kw_cand_free(cd)) {
		bpf_spin_unlock(&cb->lock);
		return 0;
	}
	kw_cand_due(cd, now, 0, s);
	n = s->dues[0].kind | s->dues[1].kind | s->dues[2].kind | s->dues[3].kind | s->dues[4].kind | s->dues[5].kind |
	    s->dues[6].kind | s->dues[7].kind;
	due = cd->due && kw_after(now, cd->flag_touch_ts, CFG.window_ns);
	over = !n && !cd->due && !kw_cand_flagged(cd, now) && kw_after(now, cd->last_ts, CFG.window_ns) &&
	       !(cd->pend[0].t | cd->pend[1].t | cd->pend[2].t | cd->pend[3].t | cd->pend[4].t | cd->pend[5].t |
		 cd->pend[6].t | cd->pend[7].t);
	s->cur.pair = cd->pair;
	if (over)
		__builtin_memset(&cd->pair, 0, sizeof(cd->pair)); /* over: free */
	bpf_spin_unlock(&cb->lock);
	if (over || (!n && !due))
		return 0;
	s->cur.h = kw_hash_pair(&s->cur.pair);
	s->cur.fp = kw_fp(s->cur.h);
	s->cur.has_pair = 1;
	n = 0;
	for (int j = 0; j < KW_CPEND; j++)
		n += s->dues[j].kind == KW_TOUCH_S0;
	kw_push_dues(s, cidx);
	if (due)
		kw_push(s, KW_W_FLAG, 0, 0, 0, 0, cidx, 0);
	kw_push(s, KW_W_EMIT, 0, 0, 0, 0, cidx, 0);
	return n;
}

static long kw_sweep_pairs(__u32 i, void *data)
{
	struct kw_sweep_ctx *sc = data;
	__u32 idx = (sc->start + i) & CFG.pair_mask;
	struct kw_bucket *b = bpf_map_lookup_elem(&pairs, &idx);
	struct kw_scratch *s = kw_scratch();

	if (!b || !s)
		return 1;
	/* Unlocked peek: most buckets have nothing to do. */
	if (!b->s[0].tag && !b->s[1].tag && !b->s[2].tag && !b->s[3].tag)
		return 0;
	for (__u32 w = 0; w < KW_WAYS; w++) {
		s->nwork = 0;
		s->st.n = 0;
		s->st.knock = 0;
		sc->found += kw_g_sweep_pair(idx, w, sc->now);
		kw_run_work(s, sc->now);
	}
	return 0;
}

static long kw_sweep_cands(__u32 i, void *data)
{
	struct kw_sweep_ctx *sc = data;
	__u32 idx = (sc->start + i) & CFG.cand_mask;
	struct kw_scratch *s = kw_scratch();

	if (!s)
		return 1;
	for (__u32 w = 0; w < KW_CAND_WAYS; w++) {
		s->nwork = 0;
		s->st.n = 0;
		s->st.knock = 0;
		sc->found += kw_g_sweep_cand(idx, w, sc->now);
		kw_run_work(s, sc->now);
	}
	return 0;
}

#endif
