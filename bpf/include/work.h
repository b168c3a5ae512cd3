/* work.h — the steps of the work queue (touch.h) that concern candidates,
 * and the runner that drains the queue.
 *
 * A candidate step takes the candidate bucket's lock, changes what it must
 * (cands.h), releases it, and queues what follows: touches decided under
 * the lock (S0 of its pending SYNs, an attempt pushed out), the pair's MARK,
 * the EMIT that sends what was staged.
 */
#ifndef KW_WORK_H
#define KW_WORK_H

#include "helpers.h"
#include "maps.h"
#include "pairs.h"
#include "cands.h"
#include "touch.h"

/* The steps, as global functions (knockwatch.c). */
int kw_g_step_touch(__u32 i, __u64 now);
int kw_g_step_promote(__u32 i, __u64 now);
int kw_g_step_cand_syn(__u32 i, __u64 now);
int kw_g_step_cand_touch(__u32 i, __u64 now);
int kw_g_step_opened(__u32 i, __u64 now);
int kw_g_step_emit(__u32 i, __u64 now);
int kw_g_step_mark(__u32 i, __u64 now);
int kw_g_step_flag(__u32 i, __u64 now);
int kw_g_step_recheck(__u32 i, __u64 now);

/* kw_run_work drains the queue, first in, first out; steps may queue more. */
static __always_inline void kw_run_work(struct kw_scratch *s, __u64 now)
{
	for (__u32 i = 0; i < KW_WORK; i++) {
		if (i >= s->nwork)
			break;
		switch (s->work[i].op) {
		case KW_W_TOUCH:
			kw_g_step_touch(i, now);
			break;
		case KW_W_PROMOTE:
			kw_g_step_promote(i, now);
			break;
		case KW_W_CAND_SYN:
			kw_g_step_cand_syn(i, now);
			break;
		case KW_W_CAND_TOUCH:
			kw_g_step_cand_touch(i, now);
			break;
		case KW_W_OPENED:
			kw_g_step_opened(i, now);
			break;
		case KW_W_EMIT:
			kw_g_step_emit(i, now);
			break;
		case KW_W_MARK:
			kw_g_step_mark(i, now);
			break;
		case KW_W_FLAG:
			kw_g_step_flag(i, now);
			break;
		case KW_W_RECHECK:
			kw_g_step_recheck(i, now);
			break;
		}
	}
	s->nwork = 0;
}

static __always_inline struct kw_cand_bucket *kw_cbucket(__u32 h)
{
	__u32 idx = h & CFG.cand_mask;

	return bpf_map_lookup_elem(&cands, &idx);
}

/* kw_cway finds pair in its candidate bucket: at cidx's way when cidx
 * names this bucket, else by search. Caller holds the lock. */
static __always_inline int kw_cway(struct kw_cand_bucket *cb, __u32 h, __u32 cidx, const struct kw_pair *pair)
{
	if ((cidx >> 2) == (h & CFG.cand_mask) && kw_pair_eq(&cb->c[cidx & 3].pair, pair))
		return cidx & 3;
	return kw_cand_find(cb, pair);
}

/* kw_push_dues queues the touches a candidate step left in scratch.dues. */
static __always_inline void kw_push_dues(struct kw_scratch *s, __u32 cidx)
{
	for (int j = 0; j < KW_CPEND + 1; j++) {
		struct kw_touch *d = &s->dues[j];

		if (d->kind)
			kw_push(s, KW_W_CAND_TOUCH, d->kind, d->port, d->sport, d->ts, cidx, 0);
		d->kind = 0;
	}
}

static __always_inline void kw_clear_dues(struct kw_scratch *s)
{
	for (int j = 0; j < KW_CPEND + 1; j++)
		s->dues[j].kind = 0;
}

int kw_g_promote_cand(__u32 kind, __u64 ts, __u64 now);

/* kw_promote_cand_body is the candidate side of a promotion: under the
 * candidate bucket's lock, find or make the current pair's candidate, move
 * in the pending SYNs staged in scratch.moved, add the SYN (kind 0,
 * scratch.ev), take what aged into scratch.dues. Returns the candidate's
 * index. */
static __always_inline int kw_promote_cand_body(__u32 kind, __u64 ts, __u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct kw_cand_bucket *cb;
	struct kw_cand *cd;
	__u32 h, nmoved;
	int w;

	if (!s || !c)
		return -1;
	h = s->cur.h;
	cb = kw_cbucket(h);
	if (!cb)
		return -1;
	nmoved = s->nmoved;
	kw_clear_dues(s);
	bpf_spin_lock(&cb->lock);
	w = kw_cand_find(cb, &s->cur.pair);
	if (w < 0) {
		w = kw_cand_alloc(c, cb, now);
		cd = &cb->c[w & 3];
		__builtin_memset(cd, 0, sizeof(*cd));
		cd->pair = s->cur.pair;
		cd->last_ts = ts;
		KW_INC(c, KW_C_CANDIDATES);
	}
	cd = &cb->c[w & 3];
	for (int j = 0; j < KW_WAYS; j++) {
		__u32 m = kw_lt(j, nmoved);
		struct kw_pend *e = &cd->pend[j];

		/* Branch-free: entry j takes moved[j] when there is one. */
		e->t = kw_sel64(m, s->moved[j].t, e->t);
		e->seq = kw_sel32(m, s->moved[j].seq, e->seq);
		e->sport = kw_sel32(m, s->moved[j].sport, e->sport);
		e->dport = kw_sel32(m, s->moved[j].dport, e->dport);
		cd->last_ts = kw_sel64(m & (__u32)((cd->last_ts - s->moved[j].t) >> 63), s->moved[j].t, cd->last_ts);
	}
	if (!kind)
		kw_cand_pend(c, cd, &s->ev, s);
	kw_cand_due(cd, now, 0, s);
	bpf_spin_unlock(&cb->lock);
	return (int)(((h & CFG.cand_mask) << 2) | (w & 3));
}

/* kw_step_promote: make the current pair a candidate (or find it) with
 * what its bucket holds of it — pending SYNs and a first touch — and the
 * queued event i: a SYN (kind 0, scratch.ev) or a closed touch. */
static __always_inline int kw_step_promote(__u32 i, __u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_bucket *b;
	struct kw_work *wk;
	__u32 fp, held, nfirsts;
	int cidx;

	if (!s || i >= KW_WORK)
		return 0;
	fp = s->cur.fp;
	b = kw_bucket_of(s->cur.h);
	if (!b)
		return 0;
	wk = &s->work[i];
	held = kw_stage_moves(b, fp, now, s);
	cidx = kw_g_promote_cand(wk->kind, wk->ts, now);
	if (!kw_settle(b, fp, held, cidx >= 0, cidx, now, s) && cidx >= 0)
		kw_push(s, KW_W_MARK, 0, 0, 0, 0, cidx, 0);
	else
		kw_g_mark_dedupe(s->cur.h, fp, now);
	if (cidx < 0)
		return 0;
	/* The pair's first touches (recorded when they happened), what aged,
	 * then the touch that promoted it. */
	nfirsts = s->nfirsts;
	for (int j = 0; j < KW_WAYS; j++) {
		struct kw_touch *t = &s->firsts[j];

		if (j >= nfirsts)
			break;
		kw_push(s, KW_W_CAND_TOUCH, t->kind | KW_RECORDED, t->port, t->sport, t->ts, cidx, 0);
	}
	kw_push_dues(s, cidx);
	if (wk->kind)
		kw_push(s, KW_W_CAND_TOUCH, wk->kind, wk->port, wk->sport, wk->ts, cidx, 0);
	kw_push(s, KW_W_EMIT, 0, 0, 0, 0, cidx, 0);
	kw_push(s, KW_W_RECHECK, 0, 0, 0, 0, 0, 0);
	return 0;
}

/* kw_step_cand_syn: a SYN (scratch.ev) of the current pair's candidate a. */
static __always_inline int kw_step_cand_syn(__u32 i, __u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct kw_cand_bucket *cb;
	__u32 h, cidx;
	int w;

	if (!s || !c || i >= KW_WORK)
		return 0;
	h = s->cur.h;
	cidx = s->work[i].a;
	cb = kw_cbucket(h);
	if (!cb)
		return 0;
	kw_clear_dues(s);
	bpf_spin_lock(&cb->lock);
	w = kw_cway(cb, h, cidx, &s->cur.pair);
	if (w < 0) {
		/* The candidate was pushed out: start it again with this SYN. */
		bpf_spin_unlock(&cb->lock);
		kw_push(s, KW_W_PROMOTE, 0, s->ev.conn.dport, s->ev.conn.sport, now, 0, 0);
		return 0;
	}
	kw_cand_due(&cb->c[w & 3], now, 0, s);
	kw_cand_pend(c, &cb->c[w & 3], &s->ev, s);
	bpf_spin_unlock(&cb->lock);
	cidx = ((h & CFG.cand_mask) << 2) | (w & 3);
	kw_push_dues(s, cidx);
	kw_push(s, KW_W_MARK, 0, 0, 0, 0, cidx, 0);
	kw_push(s, KW_W_EMIT, 0, 0, 0, 0, cidx, 0);
	kw_push(s, KW_W_RECHECK, 0, 0, 0, 0, 0, 0);
	return 0;
}

/* kw_step_cand_touch: a touch (or attempt) of the current pair's candidate
 * a: the ring, the counts, maybe a KNOCK (staged). */
static __always_inline int kw_step_cand_touch(__u32 i, __u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct kw_cand_bucket *cb;
	struct kw_work *wk;
	struct kw_touch t = {};
	__u32 h;
	int w;

	if (!s || !c || i >= KW_WORK)
		return 0;
	h = s->cur.h;
	wk = &s->work[i];
	cb = kw_cbucket(h);
	if (!cb)
		return 0;
	t.ts = wk->ts;
	t.port = wk->port;
	t.sport = wk->sport;
	t.kind = wk->kind;
	s->ev.now = now;
	bpf_spin_lock(&cb->lock);
	w = kw_cway(cb, h, wk->a, &s->cur.pair);
	if (w < 0) {
		bpf_spin_unlock(&cb->lock);
		if (s->cur.has_pair && !(wk->kind & KW_RECORDED) && wk->kind != KW_TOUCH_ATTEMPT)
			kw_push(s, KW_W_PROMOTE, wk->kind, wk->port, wk->sport, wk->ts, 0, 0);
		return 0;
	}
	kw_cand_touch(c, &cb->c[w & 3], &t, s);
	bpf_spin_unlock(&cb->lock);
	return 0;
}

/* kw_step_flag: send the current pair's candidate a's deferred KNOCK when
 * its window has passed (the sweep). */
static __always_inline int kw_step_flag(__u32 i, __u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct kw_cand_bucket *cb;
	struct kw_cand *cd;
	__u32 h;
	int w;

	if (!s || !c || i >= KW_WORK)
		return 0;
	h = s->cur.h;
	cb = kw_cbucket(h);
	if (!cb)
		return 0;
	s->ev.now = now;
	bpf_spin_lock(&cb->lock);
	w = kw_cway(cb, h, s->work[i].a, &s->cur.pair);
	if (w < 0) {
		bpf_spin_unlock(&cb->lock);
		return 0;
	}
	cd = &cb->c[w & 3];
	if (cd->due && !s->st.knock && kw_after(now, cd->flag_touch_ts, CFG.window_ns))
		kw_cand_flag(c, cd, cd->touch_ts, s);
	bpf_spin_unlock(&cb->lock);
	return 0;
}

#endif
