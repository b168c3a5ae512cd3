/* syn.h — a client's SYN.
 *
 * The flood path: a SYN of a pair never seen costs one pair bucket (one
 * cache line), a coarse clock read and one compare-and-swap, and nothing
 * else. A SYN of a pair with another port pending or touched within the
 * window makes it a candidate; a SYN of a candidate goes to it. The SYN
 * also takes an answer that came before it (EARLY), and ages the pair's own
 * SYNs unanswered past the S0 timeout into S0 touches. A retransmission of
 * a pending attempt (same ports) moves its deadline: an attempt is S0 only
 * once the client stopped trying for CFG.s0_timeout_ns.
 */
#ifndef KW_SYN_H
#define KW_SYN_H

#include "helpers.h"
#include "maps.h"
#include "parsing.h"
#include "pairs.h"
#include "touch.h"
#include "recheck.h"

#define KW_DST_REFRESH_NS 1000000000ULL /* syn_dsts: at most one write a second per host */
#define KW_E2BIG 7                      /* a full hash map's update error */

/* kw_note_dst records a SYN's destination in syn_dsts when it lies inside
 * dst_nets (coverage's hosts taking traffic). The destination this CPU
 * saw last within the second costs a compare (dst_seen); another known
 * one a lookup and, once a second, a store in place; an unknown one a
 * trie lookup and, inside the networks, one insert. Several CPUs may
 * insert the same host at once: the loser's EEXIST is not a full table. */
static __always_inline void kw_note_dst(struct kw_counters *c, const struct kw_addr *d, __u64 now)
{
	struct lpm_key k = { .prefixlen = 128 };
	struct kw_dst_seen *ds;
	__u32 zero = 0;
	__u64 *last, seen;
	long err;

	ds = bpf_map_lookup_elem(&dst_seen, &zero);
	if (ds && ds->valid && kw_addr_eq(&ds->d, d) && (__s64)(now - ds->last) < (__s64)KW_DST_REFRESH_NS)
		return;
	last = bpf_map_lookup_elem(&syn_dsts, d);
	if (last) {
		seen = *last;
		if ((__s64)(now - seen) >= (__s64)KW_DST_REFRESH_NS) {
			*last = now;
			seen = now;
		}
		if (ds) {
			ds->d = *d;
			ds->last = seen;
			ds->valid = 1;
		}
		return;
	}
	__builtin_memcpy(k.addr, d->b, 16);
	if (!bpf_map_lookup_elem(&dst_nets, &k))
		return;
	err = bpf_map_update_elem(&syn_dsts, d, &now, BPF_NOEXIST);
	if (!err) {
		KW_INC(c, KW_C_SYN_DST_NEW);
		if (ds) {
			ds->d = *d;
			ds->last = now;
			ds->valid = 1;
		}
	} else if (err == -KW_E2BIG) {
		KW_INC(c, KW_C_SYN_DST_FULL);
	}
}

static __always_inline int kw_syn_body(__u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct kw_syn_scan *sc;
	struct kw_packet *p;
	struct kw_bucket *b;
	struct kw_pair pair;
	__u32 h, fp;

	if (!s || !c)
		return 0;
	p = &s->pkt;
	sc = &s->scan;
	pair.src = p->saddr;
	pair.dst = p->daddr;
	h = kw_hash_pair(&pair);
	fp = kw_fp(h);
	b = kw_bucket_of(h);
	KW_INC(c, KW_C_SYN);
	if (dst_nets_n)
		kw_note_dst(c, &pair.dst, now);
	if (!b)
		return 0;
	kw_cur_set(s, &pair, h, fp, 1);
	/* What the bucket holds of this pair, kept in scratch (the verifier
	 * does not follow values through map memory, so the four entries'
	 * outcomes do not multiply its paths). */
	sc->same = -1;
	sc->early = -1;
	sc->mark = -1;
	sc->due = 0;
	sc->other = 0;
	sc->flagged = 0;
	for (int w = 0; w < KW_WAYS; w++) {
		struct kw_slot *sl = &b->s[w];
		__u32 tg = sl->tag, k;

		if (!tg || (tg & KW_TAG_BUSY) || KW_TAG_FP(tg) != fp)
			continue;
		k = KW_TAG_KIND(tg);
		if (k == KW_K_MARK) {
			sc->mark = w;
			sc->cidx = sl->seq;
			sc->flagged |= kw_mark_flagged(sl, kw_ms32(now));
		} else if (k == KW_K_SYN) {
			if (sl->sport == p->sport && sl->dport == p->dport) {
				sc->same = w;
				sc->same_tag = tg;
			} else {
				sc->other |= kw_bit(sl->dport ^ p->dport);
				sc->due |= kw_due(sl, kw_us32(now)) << w;
			}
		} else if (k == KW_K_EARLY_RST || k == KW_K_EARLY_SYNACK) {
			if (sl->sport == p->sport && sl->dport == p->dport && sl->seq == p->seq + 1 && !kw_stale(sl, k, kw_us32(now), kw_ms32(now))) {
				sc->early = w;
				sc->early_tag = tg;
			}
		} else {
			sc->other |= kw_bit(sl->dport ^ p->dport) & (1 - kw_stale(sl, k, kw_us32(now), kw_ms32(now))); /* a touch of another port */
		}
	}

	/* The answer came first: this SYN is answered already. */
	if (sc->early >= 0) {
		struct kw_slot *sl = &b->s[sc->early & (KW_WAYS - 1)];
		__u32 seq = sl->seq, at = sl->t, tag = sc->early_tag;

		if (kw_take(sl, tag)) {
			KW_INC(c, KW_C_ANSWER_EARLY);
			if (KW_TAG_KIND(tag) == KW_K_EARLY_RST) {
				kw_push(s, KW_W_TOUCH, KW_TOUCH_REJ, p->dport, p->sport, now, KW_NOWAY, 0);
				kw_push(s, KW_W_EMIT, 0, 0, 0, 0, 0, 0);
			} else {
				__builtin_memset(&s->oev, 0, sizeof(s->oev));
				s->oev.conn.pair = pair;
				s->oev.conn.sport = p->sport;
				s->oev.conn.dport = p->dport;
				s->oev.syn_ts = now;
				s->oev.syn_seq = seq - 1;
				s->oev.synack_ts = kw_us_full(now, at); /* as captured: may precede the SYN by the skew */
				s->oev.flagged = sc->flagged;
				kw_push(s, KW_W_OPENED, 0, 0, 0, 0, 0, 0);
			}
			return 0;
		}
	}

	s->ev.conn.pair = pair;
	s->ev.conn.sport = p->sport;
	s->ev.conn.dport = p->dport;
	s->ev.seq = p->seq;
	s->ev.ts = now;
	s->ev.now = now;
	s->ev.kind = 0;
	/* A candidate's SYN goes to the candidate. */
	if (sc->mark >= 0) {
		kw_push(s, KW_W_CAND_SYN, 0, p->dport, p->sport, now, sc->cidx, 0);
		return 0;
	}
	/* A second distinct port: the pair becomes a candidate, with its
	 * pending SYNs (the due ones age there) and its touch. */
	if (sc->other) {
		kw_push(s, KW_W_PROMOTE, 0, p->dport, p->sport, now, 0, 0);
		return 0;
	}
	/* One port: the pair's own earlier attempts past the timeout are S0. */
	for (int w = 0; w < KW_WAYS; w++) {
		struct kw_slot *sl = &b->s[w];
		__u32 tg = sl->tag;

		if (!(sc->due & (1u << w)) || KW_TAG_FP(tg) != fp || KW_TAG_KIND(tg) != KW_K_SYN)
			continue;
		if (!kw_claim(sl, tg))
			continue;
		kw_push(s, KW_W_TOUCH, KW_TOUCH_S0, sl->dport, sl->sport, kw_us_full(now, sl->t), w, KW_TAG_BUSY);
	}
	if (sc->same >= 0) {
		/* A retransmission: the attempt goes on, its deadline moves. */
		struct kw_slot *sl = &b->s[sc->same & (KW_WAYS - 1)];

		if (kw_rewrite(sl, sc->same_tag, fp, KW_K_SYN, kw_us32(now), p->seq, p->sport, p->dport))
			KW_INC(c, KW_C_SYN_RETRANS);
	} else {
		int w = kw_insert(h, fp, KW_K_SYN, now, kw_us32(now), p->seq, p->sport, p->dport, 0);

		kw_owner_set(h, w, &pair);
		if (w >= 0 && CFG.answer_skew_ns)
			kw_g_syn_recheck(w, now);
	}
	if (sc->due)
		kw_push(s, KW_W_EMIT, 0, 0, 0, 0, 0, 0);
	return 0;
}

#endif
