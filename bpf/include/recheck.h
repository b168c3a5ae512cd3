/* recheck.h — looking again after publishing.
 *
 * The packets of one pair run on several CPUs at once (RSS hashes ports):
 * a SYN and its answer can each scan the bucket, find nothing of the
 * other, and each publish its own entry (a pending SYN, an early answer);
 * a touch can be published while another CPU promotes the pair. So
 * whoever publishes looks again afterwards (behind a full barrier) for
 * what the other side published meanwhile. Both may look at once: taking
 * the early answer (compare-and-swap) decides who matches, so an answer
 * still becomes exactly one touch. Single-threaded these find nothing new
 * (the twin runs them anyway, branch for branch). loader's
 * TestConcurrentPair drives one pair from two CPUs to hold them to it. */
#ifndef KW_RECHECK_H
#define KW_RECHECK_H

#include "helpers.h"
#include "maps.h"
#include "pairs.h"
#include "cands.h"
#include "touch.h"

int kw_g_syn_recheck(__u32 w, __u64 now);
int kw_g_ans_recheck(__u32 e, __u32 kind, __u64 now);
int kw_g_recheck_one(__u32 e, __u32 cidx, __u64 now);

static __always_inline void kw_fence(struct kw_scratch *s)
{
	__sync_fetch_and_add(&s->fence, 1);
}

/* kw_cand_peek: a pending SYN (sport, dport) that v answers, not consumed. */
static __always_inline int kw_cand_peek(struct kw_cand *cd, __u32 v, __u16 sport, __u16 dport)
{
	int hit = 0;

	for (int i = 0; i < KW_CPEND; i++) {
		struct kw_pend *e = &cd->pend[i];

		if (e->t && e->sport == sport && e->dport == dport && v == e->seq + 1)
			hit = 1;
	}
	return hit;
}

/* The SYN just inserted at way w (scratch.pkt, scratch.cur): an answer that
 * came first and was published while this SYN looked the other way. */
static __always_inline int kw_syn_recheck_body(__u32 w, __u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct kw_bucket *b;
	struct kw_slot *sl, *el;
	struct kw_packet *p;
	__u32 fp, tg, etag = 0, ew = 0, found = 0, at = 0;

	if (!s || !c)
		return 0;
	p = &s->pkt;
	fp = s->cur.fp;
	b = kw_bucket_of(s->cur.h);
	if (!b)
		return 0;
	sl = &b->s[w & (KW_WAYS - 1)];
	tg = sl->tag;
	if (!tg || (tg & KW_TAG_BUSY) || KW_TAG_FP(tg) != fp || KW_TAG_KIND(tg) != KW_K_SYN || sl->sport != p->sport ||
	    sl->dport != p->dport || sl->seq != p->seq)
		return 0;
	for (int i = 0; i < KW_WAYS; i++) {
		struct kw_slot *x = &b->s[i];
		__u32 xt = x->tag, k;

		if (!xt || (xt & KW_TAG_BUSY) || KW_TAG_FP(xt) != fp)
			continue;
		k = KW_TAG_KIND(xt);
		if ((k == KW_K_EARLY_RST || k == KW_K_EARLY_SYNACK) && x->sport == p->sport && x->dport == p->dport &&
		    x->seq == p->seq + 1 && !kw_stale(x, k, kw_us32(now), kw_ms32(now))) {
			ew = i;
			etag = xt;
			at = x->t;
			found = 1;
		}
	}
	if (!found)
		return 0;
	if (!kw_claim(sl, tg))
		return 0;
	el = &b->s[ew & (KW_WAYS - 1)];
	if (!kw_take(el, etag)) {
		kw_publish(sl, fp, KW_K_SYN, tg);
		return 0;
	}
	KW_INC(c, KW_C_ANSWER_EARLY);
	if (KW_TAG_KIND(etag) == KW_K_EARLY_RST) {
		kw_push(s, KW_W_TOUCH, KW_TOUCH_REJ, p->dport, p->sport, now, w & (KW_WAYS - 1), KW_TAG_BUSY);
		kw_push(s, KW_W_EMIT, 0, 0, 0, 0, 0, 0);
		return 1;
	}
	__sync_lock_test_and_set(&sl->tag, 0);
	__builtin_memset(&s->oev, 0, sizeof(s->oev));
	s->oev.conn.pair = s->cur.pair;
	s->oev.conn.sport = p->sport;
	s->oev.conn.dport = p->dport;
	s->oev.syn_ts = now;
	s->oev.syn_seq = p->seq;
	s->oev.synack_ts = kw_us_full(now, at);
	kw_push(s, KW_W_OPENED, 0, 0, 0, 0, 0, 0);
	return 1;
}

/* The early answer just inserted at way e (scratch.ans: its pair as the
 * SYN's, ports, ack): a SYN published while it looked the other way, in the
 * bucket or in the pair's candidate. */
static __always_inline int kw_ans_recheck_body(__u32 e, __u32 kind, __u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct kw_cand_bucket *cb;
	struct kw_bucket *b;
	struct kw_slot *el;
	struct kw_ans *a;
	__u32 h, fp, etag, stag = 0, cidx = 0, epoch = 0, seq = 0, v;
	int found = -1, mark = -1, flagged = 0, w, i = -1, peek = 0;
	__u64 t = 0;

	if (!s || !c)
		return 0;
	a = &s->ans;
	h = kw_hash_pair(&a->pair);
	fp = kw_fp(h);
	b = kw_bucket_of(h);
	if (!b)
		return 0;
	kw_cur_set(s, &a->pair, h, fp, 1);
	v = a->v;
	el = &b->s[e & (KW_WAYS - 1)];
	etag = el->tag;
	if (!etag || (etag & KW_TAG_BUSY) || KW_TAG_FP(etag) != fp || KW_TAG_KIND(etag) != kind || el->sport != a->sport ||
	    el->dport != a->dport || el->seq != v)
		return 0;
	for (int j = 0; j < KW_WAYS; j++) {
		struct kw_slot *x = &b->s[j];
		__u32 xt = x->tag, k;

		if (!xt || (xt & KW_TAG_BUSY) || KW_TAG_FP(xt) != fp)
			continue;
		k = KW_TAG_KIND(xt);
		if (k == KW_K_MARK) {
			mark = j;
			cidx = x->seq;
			flagged |= kw_mark_flagged(x, kw_ms32(now));
		} else if (k == KW_K_SYN && x->sport == a->sport && x->dport == a->dport && x->seq + 1 == v) {
			found = j;
			stag = xt;
		}
	}
	if (found >= 0) {
		struct kw_slot *sl = &b->s[found & (KW_WAYS - 1)];

		t = kw_us_full(now, sl->t);
		seq = sl->seq;
		if (!kw_claim(sl, stag))
			return 0;
		if (!kw_take(el, etag)) {
			kw_publish(sl, fp, KW_K_SYN, stag);
			return 0;
		}
		KW_INC(c, KW_C_ANSWER_EARLY);
		if (kind == KW_K_EARLY_RST) {
			kw_push(s, KW_W_TOUCH, KW_TOUCH_REJ, a->dport, a->sport, t, found & (KW_WAYS - 1), KW_TAG_BUSY);
			kw_push(s, KW_W_EMIT, 0, 0, 0, 0, 0, 0);
			return 1;
		}
		__sync_lock_test_and_set(&sl->tag, 0);
		goto opened;
	}
	if (mark < 0)
		return 0;
	cb = kw_cbucket(h);
	if (!cb)
		return 0;
	bpf_spin_lock(&cb->lock);
	w = kw_cway(cb, h, cidx, &a->pair);
	if (w >= 0)
		peek = kw_cand_peek(&cb->c[w & 3], v, a->sport, a->dport);
	bpf_spin_unlock(&cb->lock);
	if (!peek || !kw_take(el, etag))
		return 0;
	bpf_spin_lock(&cb->lock);
	w = kw_cway(cb, h, cidx, &a->pair);
	if (w >= 0) {
		i = kw_cand_match(&cb->c[w & 3], kind == KW_K_EARLY_RST ? KW_M_RST : KW_M_SYNACK, v, a->sport, a->dport, &t,
				  &seq);
		epoch = cb->c[w & 3].epoch;
	}
	bpf_spin_unlock(&cb->lock);
	if (i < 0)
		return 0;
	KW_INC(c, KW_C_ANSWER_EARLY);
	cidx = ((h & CFG.cand_mask) << 2) | (w & 3);
	if (kind == KW_K_EARLY_RST) {
		kw_push(s, KW_W_CAND_TOUCH, KW_TOUCH_REJ, a->dport, a->sport, t, cidx, 0);
		kw_push(s, KW_W_EMIT, 0, 0, 0, 0, cidx, 0);
		return 1;
	}
opened:
	__builtin_memset(&s->oev, 0, sizeof(s->oev));
	s->oev.conn.pair = a->pair;
	s->oev.conn.sport = a->sport;
	s->oev.conn.dport = a->dport;
	s->oev.syn_ts = t;
	s->oev.syn_seq = seq;
	s->oev.synack_ts = now;
	s->oev.synack_seq = s->pkt.seq;
	s->oev.has_synack = 1;
	s->oev.flagged = flagged;
	s->oev.epoch = epoch;
	kw_push(s, KW_W_OPENED, 0, 0, 0, 0, 0, 0);
	return 1;
}

/* kw_recheck_one: the early answer at way e of the current pair's bucket
 * answers a SYN pending in its candidate cidx: take it, match it. */
static __always_inline int kw_recheck_one_body(__u32 e, __u32 cidx, __u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct kw_cand_bucket *cb;
	struct kw_bucket *b;
	struct kw_slot *el;
	__u32 h, fp, etag, k, v, epoch = 0, seq = 0, flagged = 0, at;
	__u16 sport, dport;
	int w, i = -1, peek = 0;
	__u64 t = 0;

	if (!s || !c)
		return 0;
	h = s->cur.h;
	fp = s->cur.fp;
	b = kw_bucket_of(h);
	cb = kw_cbucket(h);
	if (!b || !cb)
		return 0;
	el = &b->s[e & (KW_WAYS - 1)];
	etag = el->tag;
	k = KW_TAG_KIND(etag);
	if (!etag || (etag & KW_TAG_BUSY) || KW_TAG_FP(etag) != fp || (k != KW_K_EARLY_RST && k != KW_K_EARLY_SYNACK) ||
	    kw_stale(el, k, kw_us32(now), kw_ms32(now)))
		return 0;
	v = el->seq;
	at = el->t;
	sport = el->sport;
	dport = el->dport;
	for (int j = 0; j < KW_WAYS; j++) {
		struct kw_slot *x = &b->s[j];
		__u32 xt = x->tag;

		if (xt && !(xt & KW_TAG_BUSY) && KW_TAG_FP(xt) == fp && KW_TAG_KIND(xt) == KW_K_MARK)
			flagged |= kw_mark_flagged(x, kw_ms32(now));
	}
	bpf_spin_lock(&cb->lock);
	w = kw_cway(cb, h, cidx, &s->cur.pair);
	if (w >= 0)
		peek = kw_cand_peek(&cb->c[w & 3], v, sport, dport);
	bpf_spin_unlock(&cb->lock);
	if (!peek || !kw_take(el, etag))
		return 0;
	bpf_spin_lock(&cb->lock);
	w = kw_cway(cb, h, cidx, &s->cur.pair);
	if (w >= 0) {
		i = kw_cand_match(&cb->c[w & 3], k == KW_K_EARLY_RST ? KW_M_RST : KW_M_SYNACK, v, sport, dport, &t, &seq);
		epoch = cb->c[w & 3].epoch;
	}
	bpf_spin_unlock(&cb->lock);
	if (i < 0)
		return 0;
	KW_INC(c, KW_C_ANSWER_EARLY);
	cidx = ((h & CFG.cand_mask) << 2) | (w & 3);
	if (k == KW_K_EARLY_RST) {
		kw_push(s, KW_W_CAND_TOUCH, KW_TOUCH_REJ, dport, sport, t, cidx, 0);
		kw_push(s, KW_W_EMIT, 0, 0, 0, 0, cidx, 0);
		return 1;
	}
	__builtin_memset(&s->oev, 0, sizeof(s->oev));
	s->oev.conn.pair = s->cur.pair;
	s->oev.conn.sport = sport;
	s->oev.conn.dport = dport;
	s->oev.syn_ts = t;
	s->oev.syn_seq = seq;
	s->oev.synack_ts = kw_us_full(now, at);
	s->oev.has_synack = 0;
	s->oev.flagged = flagged;
	s->oev.epoch = epoch;
	kw_push(s, KW_W_OPENED, 0, 0, 0, 0, 0, 0);
	return 1;
}

/* kw_step_recheck: after the current pair's candidate gained SYNs, or a
 * touch of it was published in the bucket: touches left beside its MARK
 * move into the candidate, early answers of its pending SYNs are taken. */
static __always_inline int kw_step_recheck(__u32 i, __u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_bucket *b;
	__u32 fp, cidx = 0;
	int mark = -1;

	if (!s)
		return 0;
	kw_fence(s);
	fp = s->cur.fp;
	b = kw_bucket_of(s->cur.h);
	if (!b || !s->cur.has_pair)
		return 0;
	for (int j = 0; j < KW_WAYS; j++) {
		struct kw_slot *x = &b->s[j];
		__u32 xt = x->tag;

		if (xt && !(xt & KW_TAG_BUSY) && KW_TAG_FP(xt) == fp && KW_TAG_KIND(xt) == KW_K_MARK) {
			mark = j;
			cidx = x->seq;
		}
	}
	if (mark < 0)
		return 0;
	for (int j = 0; j < KW_WAYS; j++) {
		struct kw_slot *x = &b->s[j];
		__u32 xt = x->tag, k = KW_TAG_KIND(xt);

		if (!xt || (xt & KW_TAG_BUSY) || KW_TAG_FP(xt) != fp)
			continue;
		if (k >= KW_K_TOUCH_REJ && !kw_stale(x, k, kw_us32(now), kw_ms32(now))) {
			__u64 ts = kw_us_full(now, x->t);
			__u16 port = x->dport, sport = x->sport;

			if (!kw_take(x, xt))
				continue;
			kw_push(s, KW_W_CAND_TOUCH, (k - 4) | KW_RECORDED, port, sport, ts, cidx, 0);
			kw_push(s, KW_W_EMIT, 0, 0, 0, 0, cidx, 0);
		} else if (k == KW_K_EARLY_RST || k == KW_K_EARLY_SYNACK) {
			kw_g_recheck_one(j, cidx, now);
		}
	}
	return 0;
}

/* kw_mark_dedupe: two CPUs may each write a MARK for one pair (a
 * promotion settles one while another's MARK step inserts one): keep the
 * first, carry a flag over, drop the rest. */
static __always_inline int kw_mark_dedupe_body(__u32 h, __u32 fp, __u64 now)
{
	struct kw_bucket *b = kw_bucket_of(h);
	int keep = -1;
	__u32 keep_tag = 0, flag_ms = 0;

	if (!b)
		return 0;
	for (int j = 0; j < KW_WAYS; j++) {
		struct kw_slot *x = &b->s[j];
		__u32 xt = x->tag;

		if (!xt || (xt & KW_TAG_BUSY) || KW_TAG_FP(xt) != fp || KW_TAG_KIND(xt) != KW_K_MARK)
			continue;
		if (keep < 0) {
			keep = j;
			keep_tag = xt;
			continue;
		}
		if (kw_mark_flagged(x, kw_ms32(now)))
			flag_ms = ((__u32)x->sport << 16) | x->dport;
		kw_take(x, xt);
	}
	if (keep >= 0 && flag_ms) {
		struct kw_slot *k = &b->s[keep & (KW_WAYS - 1)];
		__u32 cur = ((__u32)k->sport << 16) | k->dport;

		if (!kw_mark_flagged(k, kw_ms32(now)) || (__s32)(flag_ms - cur) > 0)
			kw_rewrite(k, keep_tag, fp, KW_K_MARK, k->t, k->seq, flag_ms >> 16, flag_ms & 0xffff);
	}
	return 0;
}

#endif
