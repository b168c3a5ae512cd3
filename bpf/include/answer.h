/* answer.h — answers to SYNs: the server's RST (a REJ touch) or SYN-ACK
 * (the port is open), the client's own RST (an RSTOS0 touch: the client
 * gave up), and the client's ACK that proves a SYN-ACK the capture missed.
 *
 * An answer matches the pending SYN whose seq + 1 it acks. One seen before
 * its SYN (the two directions of a passive tap arrive on two ports, two
 * CPUs, two NAPI batches) waits in the pair bucket as an EARLY entry for
 * CFG.answer_skew_ns; the SYN that comes within that time takes it. An
 * RST that matches nothing (backscatter) is counted and otherwise only
 * waits there; it never becomes a touch by itself.
 */
#ifndef KW_ANSWER_H
#define KW_ANSWER_H

#include "helpers.h"
#include "maps.h"
#include "parsing.h"
#include "pairs.h"
#include "cands.h"
#include "touch.h"
#include "recheck.h"

/* kw_answer_body matches scratch.ans (how: enum kw_match) to the pair's
 * pending SYN, in the bucket or in the pair's candidate. On a match it
 * returns 1 with the SYN's time and seq in scratch.match_t and match_seq,
 * and the pair's flag and epoch in scratch.ans; the SYN is consumed (one
 * answer, one touch) and an RST's touch is queued. */
static __always_inline int kw_answer_body(__u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct kw_cand_bucket *cb;
	struct kw_cand *cd;
	struct kw_ans *a;
	struct kw_bucket *b;
	__u32 h, fp, tag, cidx, seq = 0, epoch, idx;
	int w, i;
	__u64 t = 0;

	if (!s || !c)
		return 0;
	a = &s->ans;
	h = kw_hash_pair(&a->pair);
	fp = kw_fp(h);
	b = kw_bucket_of(h);
	a->flagged = 0;
	a->epoch = 0;
	if (!b)
		return 0;
	kw_cur_set(s, &a->pair, h, fp, 1);
	a->found = -1;
	a->mark = -1;
	for (int w2 = 0; w2 < KW_WAYS; w2++) {
		struct kw_slot *sl = &b->s[w2];
		__u32 tg = sl->tag, k, v = a->v;

		if (!tg || (tg & KW_TAG_BUSY) || KW_TAG_FP(tg) != fp)
			continue;
		k = KW_TAG_KIND(tg);
		if (k == KW_K_MARK) {
			a->mark = w2;
			a->cidx = sl->seq;
			a->flagged |= kw_mark_flagged(sl, kw_ms32(now));
			continue;
		}
		if (k != KW_K_SYN || sl->sport != a->sport || sl->dport != a->dport)
			continue;
		if (v == sl->seq + 1 || (a->how == KW_M_ORIG_RST && v == sl->seq)) {
			a->found = w2;
			a->tag = tg;
		}
	}
	if (a->found >= 0) {
		__u32 found = a->found & (KW_WAYS - 1);
		struct kw_slot *sl = &b->s[found];

		t = kw_us_full(now, sl->t);
		seq = sl->seq;
		tag = a->tag;
		if (!kw_claim(sl, tag))
			return 0; /* another CPU took this SYN's answer */
		s->match_t = t;
		s->match_seq = seq;
		if (a->how == KW_M_RST || a->how == KW_M_ORIG_RST) {
			/* The SYN's entry (claimed, busy) becomes its touch. */
			kw_push(s, KW_W_TOUCH, a->how == KW_M_RST ? KW_TOUCH_REJ : KW_TOUCH_RSTOS0, a->dport, a->sport, t,
				found, KW_TAG_BUSY);
			kw_push(s, KW_W_EMIT, 0, 0, 0, 0, 0, 0);
		} else {
			__sync_lock_test_and_set(&sl->tag, 0);
		}
		return 1;
	}
	if (a->mark < 0)
		return 0;
	cidx = a->cidx;
	/* The pair's candidate keeps its SYNs. */
	idx = h & CFG.cand_mask;
	cb = bpf_map_lookup_elem(&cands, &idx);
	if (!cb)
		return 0;
	for (int j = 0; j < KW_CPEND + 1; j++)
		s->dues[j].kind = 0;
	bpf_spin_lock(&cb->lock);
	w = ((cidx >> 2) == idx && kw_pair_eq(&cb->c[cidx & 3].pair, &a->pair)) ? (int)(cidx & 3) :
										     kw_cand_find(cb, &a->pair);
	if (w < 0) {
		bpf_spin_unlock(&cb->lock);
		return 0;
	}
	cd = &cb->c[w & 3];
	i = kw_cand_match(cd, a->how, a->v, a->sport, a->dport, &t, &seq);
	/* The host answered this SYN: the pair's SYNs sent before it that
	 * are still unanswered will not be (kw_cand_due). The client's own
	 * RST answers nothing. */
	kw_cand_due(cd, now, (i >= 0 && a->how != KW_M_ORIG_RST) ? t : 0, s);
	epoch = cd->epoch;
	bpf_spin_unlock(&cb->lock);
	cidx = (idx << 2) | (w & 3);
	for (int j = 0; j < KW_CPEND + 1; j++) {
		struct kw_touch *d = &s->dues[j];

		if (d->kind)
			kw_push(s, KW_W_CAND_TOUCH, d->kind, d->port, d->sport, d->ts, cidx, 0);
	}
	if (i >= 0 && (a->how == KW_M_RST || a->how == KW_M_ORIG_RST))
		kw_push(s, KW_W_CAND_TOUCH, a->how == KW_M_RST ? KW_TOUCH_REJ : KW_TOUCH_RSTOS0, a->dport, a->sport, t,
			cidx, 0);
	kw_push(s, KW_W_EMIT, 0, 0, 0, 0, cidx, 0);
	if (i < 0)
		return 0;
	s->match_t = t;
	s->match_seq = seq;
	a->epoch = epoch;
	return 1;
}

/* kw_early keeps an answer that matched nothing for CFG.answer_skew_ns:
 * its SYN may still be on its way from the tap's other port. */
static __always_inline void kw_early(struct kw_counters *c, const struct kw_pair *pair, __u16 sport, __u16 dport,
				     __u32 ack, __u32 kind, __u64 now)
{
	__u32 h = kw_hash_pair(pair);
	struct kw_bucket *b = kw_bucket_of(h);

	if (!b || !CFG.answer_skew_ns)
		return;
	{
		int e = kw_insert(h, kw_fp(h), kind, now, kw_us32(now), ack, sport, dport, 0);
		struct kw_scratch *s = kw_scratch();

		if (e < 0 || !s)
			return;
		s->ans.pair = *pair;
		s->ans.sport = sport;
		s->ans.dport = dport;
		s->ans.v = ack;
		kw_g_ans_recheck(e, kind, now);
	}
}

/* kw_rst_body: an RST (scratch.pkt). From D:sport to S it answers S's SYN
 * (REJ); from S to D after S's own SYN it is S giving up (RSTOS0).
 * Otherwise it is backscatter, kept briefly in case its SYN is late. A
 * touch takes its SYN's time; the RST path reads only the coarse clock. */
static __always_inline int kw_rst_body(__u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct kw_packet *p;
	struct kw_ans *a;

	if (!s || !c)
		return 0;
	p = &s->pkt;
	a = &s->ans;
	KW_INC(c, KW_C_RST);
	if (p->flags & KW_TH_ACK) {
		a->pair.src = p->daddr;
		a->pair.dst = p->saddr;
		a->sport = p->dport;
		a->dport = p->sport;
		a->v = p->ack;
		a->how = KW_M_RST;
		if (kw_g_answer(now))
			return 0;
	}
	a->pair.src = p->saddr;
	a->pair.dst = p->daddr;
	a->sport = p->sport;
	a->dport = p->dport;
	a->v = p->seq;
	a->how = KW_M_ORIG_RST;
	if (kw_g_answer(now))
		return 0;
	KW_INC(c, KW_C_BACKSCATTER);
	if (p->flags & KW_TH_ACK) {
		struct kw_pair pair = { .src = p->daddr, .dst = p->saddr };

		kw_early(c, &pair, p->dport, p->sport, p->ack, KW_K_EARLY_RST, now);
	}
	return 0;
}

/* kw_synack_body: D:sport -> S SYN-ACK (scratch.pkt). When it answers a
 * pending SYN the port is open; a flagged pair's handshake, or a first
 * connection to a port, is watched from here. */
static __always_inline int kw_synack_body(__u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct kw_packet *p;
	struct kw_ans *a;

	if (!s || !c)
		return 0;
	p = &s->pkt;
	a = &s->ans;
	KW_INC(c, KW_C_SYNACK);
	a->pair.src = p->daddr;
	a->pair.dst = p->saddr;
	a->sport = p->dport;
	a->dport = p->sport;
	a->v = p->ack;
	a->how = KW_M_SYNACK;
	if (!kw_g_answer(now)) {
		struct kw_pair pair = { .src = p->daddr, .dst = p->saddr };

		KW_INC(c, KW_C_SYNACK_UNMATCHED);
		kw_early(c, &pair, p->dport, p->sport, p->ack, KW_K_EARLY_SYNACK, now);
		return 0;
	}
	__builtin_memset(&s->oev, 0, sizeof(s->oev));
	s->oev.conn.pair = a->pair;
	s->oev.conn.sport = p->dport;
	s->oev.conn.dport = p->sport;
	s->oev.syn_ts = s->match_t;
	s->oev.syn_seq = s->match_seq;
	s->oev.synack_ts = now;
	s->oev.synack_seq = p->seq;
	s->oev.has_synack = 1;
	s->oev.flagged = a->flagged;
	s->oev.epoch = a->epoch;
	kw_push(s, KW_W_OPENED, 0, 0, 0, 0, 0, 0);
	return 0;
}

/* kw_ack_proof_body: S -> D ACK (scratch.pkt) with the seq right after a
 * pending SYN's: the server answered (its SYN-ACK is not in the capture:
 * a one-way tap, Zeek's SH). The SYN is no S0 touch and the port is open;
 * a flagged pair's handshake is complete. */
static __always_inline int kw_ack_proof_body(__u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct kw_packet *p;
	struct kw_ans *a;

	if (!s || !c)
		return 0;
	p = &s->pkt;
	a = &s->ans;
	a->pair.src = p->saddr;
	a->pair.dst = p->daddr;
	a->sport = p->sport;
	a->dport = p->dport;
	a->v = p->seq;
	a->how = KW_M_ACK;
	if (!kw_g_answer(now))
		return 0;
	KW_INC(c, KW_C_ACK_PROOF);
	__builtin_memset(&s->oev, 0, sizeof(s->oev));
	s->oev.conn.pair = a->pair;
	s->oev.conn.sport = p->sport;
	s->oev.conn.dport = p->dport;
	s->oev.syn_ts = s->match_t;
	s->oev.syn_seq = s->match_seq;
	s->oev.flagged = a->flagged;
	s->oev.epoch = a->epoch;
	kw_push(s, KW_W_OPENED, 0, 0, 0, 0, 1, 0);
	return 0;
}

#endif
