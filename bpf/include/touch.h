/* touch.h — from a closed-port touch to the state that remembers it, and
 * the work queue that carries it there.
 *
 * A touch (S, D, port, kind, time) of a pair with one port so far is kept
 * in the pair bucket (a TOUCH entry); a touch or attempt of a second
 * distinct port within the window makes the pair a candidate (cands.h),
 * which counts its bursts and raises its flags. Everything a touch leaves
 * for the outside — the port-state update, the counters, a TOUCH record,
 * a KNOCK — is staged in per-CPU scratch and sent by the EMIT step once no
 * lock is held.
 *
 * Handlers do not call each other: each queues the steps that follow
 * (scratch.work, struct kw_work) and the entry point runs them in order
 * (knockwatch.c, kw_run_work), so the call chain — and the 512-byte stack
 * it shares — stays three deep. The step bodies here run inside global
 * functions, each verified once.
 */
#ifndef KW_TOUCH_H
#define KW_TOUCH_H

#include "helpers.h"
#include "maps.h"
#include "parsing.h"
#include "pairs.h"
#include "portstate.h"
#include "cands.h"

/* KW_NOPAIR marks a staged touch whose pair the sweep does not know. */
#define KW_NOPAIR 0x80
#define KW_NOWAY 0xffffffffu

int kw_g_answer(__u64 now);
int kw_g_done(__u32 flagged, __u32 src_fp, __u32 done_fp, __u32 why);
int kw_g_handshake(__u32 h, __u32 cidx);
int kw_g_csum(struct xdp_md *ctx);
int kw_g_mark_dedupe(__u32 h, __u32 fp, __u64 now);

/* kw_push queues a step (dropped and counted when the queue is full). */
static __always_inline void kw_push(struct kw_scratch *s, __u8 op, __u8 kind, __u16 port, __u16 sport, __u64 ts,
				    __u32 a, __u32 b)
{
	__u32 n = s->nwork;
	struct kw_work *w;

	if (n >= KW_WORK) {
		struct kw_counters *c = kw_stats();

		if (c)
			KW_INC(c, KW_C_MAP_INSERT_FAIL);
		return;
	}
	w = &s->work[n];
	w->op = op;
	w->kind = kind;
	w->port = port;
	w->sport = sport;
	w->ts = ts;
	w->a = a;
	w->b = b;
	s->nwork = n + 1;
}

/* kw_cur_set names the pair the queued steps concern. */
static __always_inline void kw_cur_set(struct kw_scratch *s, const struct kw_pair *pair, __u32 h, __u32 fp, __u8 has_pair)
{
	s->cur.pair = *pair;
	s->cur.h = h;
	s->cur.fp = fp;
	s->cur.has_pair = has_pair;
}

static __always_inline int kw_allowlisted(const struct kw_addr *src)
{
	struct lpm_key k = { .prefixlen = 128 };

	__builtin_memcpy(k.addr, src->b, 16);
	return bpf_map_lookup_elem(&allowlist, &k) != NULL;
}

/* kw_mark_set refreshes the pair's MARK (activity now; with flag, the
 * KNOCK time) or writes it anew when it was pushed out. */
static __always_inline void kw_mark_set(struct kw_counters *c, __u32 h, __u64 now, __u32 cidx, __u32 flag)
{
	struct kw_bucket *b = kw_bucket_of(h);
	__u32 fp = kw_fp(h), ms = kw_ms32(now);

	if (!b)
		return;
	if (!ms)
		ms = 1;
	for (int try = 0; try < 4; try++) {
		int busy = 0, seen = 0, done = 0;

		for (int w = 0; w < KW_WAYS; w++) {
			struct kw_slot *s = &b->s[w];
			__u32 tg = s->tag, f;

			if (tg & KW_TAG_BUSY)
				busy = 1;
			if (!tg || (tg & KW_TAG_BUSY) || KW_TAG_FP(tg) != fp || KW_TAG_KIND(tg) != KW_K_MARK || seen)
				continue;
			seen = 1;
			f = flag ? ms : ((__u32)s->sport << 16) | s->dport;
			done = kw_rewrite(s, tg, fp, KW_K_MARK, kw_us32(now), cidx, f >> 16, f & 0xffff);
		}
		if (done)
			return;
		if (!seen && !busy)
			break;
	}
	kw_insert(h, fp, KW_K_MARK, now, kw_us32(now), cidx, flag ? ms >> 16 : 0, flag ? ms & 0xffff : 0, 0);
	kw_g_mark_dedupe(h, fp, now);
}

/* kw_step_emit: send what was staged: per touch the port state, the
 * counter and (replay --touches) a TOUCH record; then the KNOCK, unless the
 * source is allowlisted. cidx names the pair's candidate for its MARK. */
static __always_inline int kw_step_emit(__u32 cidx, __u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct kw_staged *st;

	if (!s || !c)
		return 0;
	st = &s->st;
	for (int i = 0; i < KW_STAGE; i++) {
		__u8 kind;

		if (i >= st->n)
			break;
		kind = st->kind[i];
		if (kind & KW_NOPAIR) {
			/* Decided by the sweep without the pair's addresses
			 * (kept only for replay --touches): counted. */
			KW_INC(c, KW_C_TOUCH_S0);
			continue;
		}
		kw_port_closed(c, &st->conn[i].pair.dst, st->conn[i].dport, st->ts[i]);
		if (kind == KW_TOUCH_REJ)
			KW_INC(c, KW_C_TOUCH_REJ);
		else if (kind == KW_TOUCH_S0)
			KW_INC(c, KW_C_TOUCH_S0);
		else
			KW_INC(c, KW_C_TOUCH_RSTOS0);
		if (CFG.report_touches) {
			struct touch_rec *tr = bpf_ringbuf_reserve(&events, sizeof(*tr), 0);

			if (!tr) {
				KW_INC(c, KW_C_RINGBUF_FULL);
				continue;
			}
			__builtin_memset(tr, 0, sizeof(*tr));
			tr->type = KW_REC_TOUCH;
			tr->kind = kind;
			tr->conn = st->conn[i];
			tr->ts = st->ts[i];
			bpf_ringbuf_submit(tr, 0);
		}
	}
	st->n = 0;
	if (!st->knock)
		return 0;
	st->knock = 0;
	if (kw_allowlisted(&s->rec.pair.src)) {
		KW_INC(c, KW_C_ALLOWLISTED);
		return 0;
	}
	KW_INC(c, KW_C_FLAGS);
	kw_mark_set(c, kw_hash_pair(&s->rec.pair), now, cidx, 1);
	if (bpf_ringbuf_output(&events, &s->rec, sizeof(s->rec), 0))
		KW_INC(c, KW_C_RINGBUF_FULL);
	return 0;
}

/* kw_step_mark: refresh the current pair's MARK. */
static __always_inline int kw_step_mark(__u32 cidx, __u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();

	if (!s || !c)
		return 0;
	kw_mark_set(c, s->cur.h, now, cidx, 0);
	return 0;
}

/* kw_step_touch: a closed touch (queued item i) of the current pair, which
 * has no candidate: kept in the bucket, or — when the pair has a MARK, or
 * another port within the window and its addresses are known — handed to
 * its candidate or to a promotion. a is the pair's entry the touch came
 * from (a SYN claimed busy: it becomes the TOUCH entry) or KW_NOWAY. */
static __always_inline int kw_step_touch(__u32 i, __u64 now)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct kw_touch_scan *ts_;
	struct kw_bucket *b;
	struct kw_work *wk;
	__u32 fp, way, way_tag;
	__u16 port, sport;
	__u8 kind;
	__u64 ts;

	if (!s || !c || i >= KW_WORK)
		return 0;
	ts_ = &s->tscan;
	wk = &s->work[i];
	fp = s->cur.fp;
	b = kw_bucket_of(s->cur.h);
	if (!b)
		return 0;
	port = wk->port;
	sport = wk->sport;
	kind = wk->kind;
	ts = wk->ts;
	way = wk->a;
	way_tag = wk->b;
	/* The scan's results live in scratch: the verifier does not follow
	 * them, so the entries' outcomes do not multiply its paths. */
	ts_->mark = -1;
	ts_->touch = -1;
	ts_->other = -1;
	ts_->same = 0;
	for (int w = 0; w < KW_WAYS; w++) {
		struct kw_slot *sl = &b->s[w];
		__u32 tg = sl->tag, k;

		if (!tg || (tg & KW_TAG_BUSY) || KW_TAG_FP(tg) != fp)
			continue;
		k = KW_TAG_KIND(tg);
		if (k == KW_K_MARK) {
			ts_->mark = w;
			ts_->cidx = sl->seq;
		} else if (k >= KW_K_TOUCH_REJ && !kw_stale(sl, k, kw_us32(now), kw_ms32(now))) {
			if (sl->dport == port) {
				ts_->touch = w;
				ts_->same = kw_eq32(kind, KW_TOUCH_S0) & kw_eq32(sl->sport, sport);
			} else {
				ts_->other = w;
			}
		} else if (k == KW_K_SYN && sl->dport != port) {
			ts_->other = w;
		}
	}
	if (s->cur.has_pair && (ts_->mark >= 0 || ts_->other >= 0)) {
		/* The candidate (or the promotion) takes the touch; the SYN it
		 * came from is done. */
		if (way != KW_NOWAY)
			kw_take(&b->s[way & (KW_WAYS - 1)], way_tag);
		if (ts_->mark >= 0) {
			/* The candidate stages the touch (and maybe a KNOCK) after
			 * any EMIT already queued: emit again after it. */
			kw_push(s, KW_W_CAND_TOUCH, kind, port, sport, ts, ts_->cidx, 0);
			kw_push(s, KW_W_EMIT, 0, 0, 0, 0, ts_->cidx, 0);
		} else {
			kw_push(s, KW_W_PROMOTE, kind, port, sport, ts, 0, 0); /* it emits */
		}
		return 0;
	}
	/* The pair's (first) touch of this port: stage it and keep it in the
	 * bucket. An S0 decided again for an attempt already counted (a SYN
	 * retransmitted after its S0) is the same connection: not staged. */
	if (!ts_->same && s->st.n < KW_STAGE) {
		__u32 n = s->st.n;
		__u8 k = kind;

		if (n < KW_STAGE) {
			s->st.conn[n].pair = s->cur.pair;
			if (!s->cur.has_pair)
				k |= KW_NOPAIR;
			s->st.conn[n].sport = sport;
			s->st.conn[n].dport = port;
			s->st.ts[n] = ts;
			s->st.kind[n] = k;
			s->st.n = n + 1;
		}
	}
	if (ts_->touch >= 0) {
		struct kw_slot *sl = &b->s[ts_->touch & (KW_WAYS - 1)];
		__u32 tg = sl->tag;

		if (KW_TAG_FP(tg) == fp && KW_TAG_KIND(tg) >= KW_K_TOUCH_REJ &&
		    kw_rewrite(sl, tg, fp, 4 + kind, kw_us32(ts), 0, sport, port)) {
			if (way != KW_NOWAY)
				kw_take(&b->s[way & (KW_WAYS - 1)], way_tag);
			if (s->cur.has_pair)
				kw_push(s, KW_W_RECHECK, 0, 0, 0, 0, 0, 0);
			return 0;
		}
	}
	if (way != KW_NOWAY && kw_rewrite(&b->s[way & (KW_WAYS - 1)], way_tag, fp, 4 + kind, kw_us32(ts), 0, sport, port)) {
		if (s->cur.has_pair)
			kw_push(s, KW_W_RECHECK, 0, 0, 0, 0, 0, 0);
		return 0;
	}
	kw_owner_set(s->cur.h, kw_insert(s->cur.h, fp, 4 + kind, now, kw_us32(ts), 0, sport, port, 0), &s->cur.pair);
	if (s->cur.has_pair)
		kw_push(s, KW_W_RECHECK, 0, 0, 0, 0, 0, 0);
	return 0;
}

/* kw_stage_moves copies the pair's SYN and TOUCH entries into scratch for
 * a promotion and leaves them claimed (busy); returns a bitmask of the ways
 * it holds. */
static __always_inline __u32 kw_stage_moves(struct kw_bucket *b, __u32 fp, __u64 now, struct kw_scratch *s)
{
	__u32 held = 0;

	s->nmoved = 0;
	s->nfirsts = 0;
	for (int w = 0; w < KW_WAYS; w++) {
		struct kw_slot *sl = &b->s[w];
		__u32 tg = sl->tag, k;

		s->tags[w] = 0;
		if (!tg || (tg & KW_TAG_BUSY) || KW_TAG_FP(tg) != fp)
			continue;
		k = KW_TAG_KIND(tg);
		if (k != KW_K_SYN && k < KW_K_TOUCH_REJ)
			continue;
		if (k >= KW_K_TOUCH_REJ && kw_stale(sl, k, kw_us32(now), kw_ms32(now)))
			continue;
		if (!kw_claim(sl, tg))
			continue;
		s->tags[w] = tg;
		held |= 1u << w;
		if (k == KW_K_SYN) {
			__u32 i = s->nmoved & (KW_WAYS - 1);

			s->moved[i].t = kw_us_full(now, sl->t);
			s->moved[i].seq = sl->seq;
			s->moved[i].sport = sl->sport;
			s->moved[i].dport = sl->dport;
			s->nmoved++;
		} else {
			__u32 i = s->nfirsts & (KW_WAYS - 1);

			s->firsts[i].ts = kw_us_full(now, sl->t);
			s->firsts[i].port = sl->dport;
			s->firsts[i].sport = sl->sport;
			s->firsts[i].kind = k - 4;
			s->nfirsts++;
		}
	}
	return held;
}

/* kw_settle ends a promotion in the pair bucket: the first held entry
 * becomes the MARK (or, when the promotion failed, every held entry goes
 * back as it was), the others are freed. Returns whether a MARK was
 * written. */
static __always_inline int kw_settle(struct kw_bucket *b, __u32 fp, __u32 held, int ok, __u32 cidx, __u64 now,
				     struct kw_scratch *s)
{
	int marked = 0;

	for (int w = 0; w < KW_WAYS; w++) {
		struct kw_slot *sl = &b->s[w];
		__u32 tg = s->tags[w];

		if (!(held & (1u << w)))
			continue;
		if (!ok) {
			kw_publish(sl, fp, KW_TAG_KIND(tg), tg);
		} else if (!marked) {
			sl->t = kw_us32(now);
			sl->seq = cidx;
			sl->sport = 0;
			sl->dport = 0;
			kw_publish(sl, fp, KW_K_MARK, tg);
			marked = 1;
		} else {
			__sync_lock_test_and_set(&sl->tag, 0);
		}
	}
	return marked;
}

#endif
