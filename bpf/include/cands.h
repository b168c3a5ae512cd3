/* cands.h — the protected tier: pairs that tried two or more ports.
 *
 * A candidate keeps its pair's unanswered SYNs (pend), its last 16 touches
 * and attempts (ring), its burst counts and its flag. Every function here
 * runs under the candidate bucket's lock and only stages what must follow
 * (touches to record, a KNOCK to send) in per-CPU scratch; the global
 * functions in knockwatch.c emit them after the lock is released.
 *
 * What an attacker reads here:
 *  - Re-using a knock: a flag has an age (CFG.flag_ttl_ns) and a new burst
 *    of N distinct closed ports re-arms it with a new epoch and a new KNOCK
 *    (at most one per window; a burst inside the window of the last KNOCK
 *    is sent when the window has passed).
 *  - Flooding: one-SYN sources never get here; a crowd of candidates evicts
 *    the least recently active flagged one first (its flag stays in the
 *    pair's MARK), then the least recently active knock in progress.
 *  - Scanning: every distinct port tried without an open answer counts in
 *    `attempted`, including SYNs pushed out of pend before they were
 *    decided, so a scan of a filtered host is a scan.
 */
#ifndef KW_CANDS_H
#define KW_CANDS_H

#include "helpers.h"
#include "maps.h"

/* kw_closed_bit: 1 if kind is REJ, S0 or RSTOS0, else 0, without a branch. */
static __always_inline __u32 kw_closed_bit(__u8 kind)
{
	__u32 x = ((__u32)kind + 255) & 0xff; /* 1, 2, 3 -> 0, 1, 2; 0 -> 255 */

	return kw_lt(x, 3);
}

/* kw_later: 1 if ts is later than since (or since is 0), without a branch. */
static __always_inline __u32 kw_later(__u64 ts, __u64 since)
{
	__u64 x = since - ts;

	kw_hide(x);
	return (x >> 63) | kw_eq64(since, 0);
}

static __always_inline int kw_closed_kind(__u8 kind)
{
	return kind == KW_TOUCH_REJ || kind == KW_TOUCH_S0 || kind == KW_TOUCH_RSTOS0;
}

static __always_inline void kw_stage_touch(struct kw_staged *st, const struct kw_pair *pair, __u16 sport, __u16 port,
					   __u8 kind, __u64 ts)
{
	__u32 i = st->n;

	if (i >= KW_STAGE)
		return;
	st->conn[i].pair = *pair;
	st->conn[i].sport = sport;
	st->conn[i].dport = port;
	st->ts[i] = ts;
	st->kind[i] = kind;
	st->n = i + 1;
}

/* kw_cand_find returns the way of pair in the bucket, -1 if absent. */
static __always_inline int kw_cand_find(struct kw_cand_bucket *cb, const struct kw_pair *pair)
{
	for (int w = 0; w < KW_CAND_WAYS; w++)
		if (kw_pair_eq(&cb->c[w].pair, pair))
			return w;
	return -1;
}

static __always_inline int kw_cand_free(const struct kw_cand *cd)
{
	const __u64 *a = (const __u64 *)&cd->pair;

	return !(a[0] | a[1] | a[2] | a[3]);
}

static __always_inline int kw_cand_flagged(const struct kw_cand *cd, __u64 now)
{
	return cd->flag_ts && !kw_after(now, cd->flag_ts, CFG.flag_ttl_ns);
}

/* kw_pend_ports counts the distinct ports among the candidate's pending
 * SYNs. Branch-free. */
static __noinline __u32 kw_pend_ports(struct kw_cand *cd)
{
	__u32 live = 0, ports = 0;

	for (int i = 0; i < KW_CPEND; i++)
		live |= (1 - kw_eq64(cd->pend[i].t, 0)) << i;
	for (int i = 0; i < KW_CPEND; i++) {
		__u32 dup = 0;
		__u16 port = cd->pend[i].dport;

		for (int j = i + 1; j < KW_CPEND; j++)
			dup |= (live >> j) & kw_eq16(cd->pend[j].dport, port);
		ports += (live >> i) & (dup ^ 1) & 1;
	}
	return ports;
}

/* kw_cand_alloc picks the way a new candidate takes: free, else over
 * (burst and flag ended), else a flagged one, else a knock in progress;
 * within a rank the one with the fewest ports in play (closed in the
 * burst, or pending: at most N), then the least recently active.
 *
 * A flagged candidate goes before a knock in progress: its KNOCK was sent
 * and its flag lives on in the pair's MARK (handshakes are still
 * reported), while a knock in progress would be lost — and flagged
 * candidates are what a flood of spoofed knocks makes. Among knocks in
 * progress, pairs that play fewer than N ports (which is all a spoofed
 * pair can do without being flagged) go before a knock with all N ports
 * in play, waiting for its S0 decision or its connection. Counts the
 * eviction of a live one. */
static __always_inline int kw_cand_alloc(struct kw_counters *c, struct kw_cand_bucket *cb, __u64 now)
{
	__u32 best = 0, best_rank = 9;
	__u64 best_score = ~0ULL;
	const __u64 lim = (1ULL << 58) - 1;

	/* Branch-free: score = rank, ports in play, then least recently
	 * active first. */
	for (__u32 w = 0; w < KW_CAND_WAYS; w++) {
		struct kw_cand *cd = &cb->c[w];
		const __u64 *a = (const __u64 *)&cd->pair;
		__u32 free = kw_eq64(a[0] | a[1] | a[2] | a[3], 0);
		__u32 flagged = (1 - kw_eq64(cd->flag_ts, 0)) & kw_within(now, cd->flag_ts, CFG.flag_ttl_ns);
		__u32 over = (flagged ^ 1) & (1 - kw_within(now, cd->last_ts, CFG.window_ns));
		__u32 rank = (1 - free) * (1 + (1 - over) * (2 - flagged));
		__u32 play = cd->distinct + kw_pend_ports(cd);
		__u64 age = now - cd->last_ts, score;
		__u32 less;

		play = kw_sel32(kw_lt(play, CFG.min_ports), play, CFG.min_ports) & 15;
		age = kw_sel64(kw_bit((__u32)(age >> 58)), lim, age);
		score = ((__u64)rank << 62) | ((__u64)play << 58) | (lim - age);
		less = kw_ltu64(score, best_score) | kw_eq64(best_score, ~0ULL);
		best = kw_sel32(less, w, best);
		best_rank = kw_sel32(less, rank, best_rank);
		best_score = kw_sel64(less, score, best_score);
	}
	if (best_rank >= 2)
		KW_INC(c, KW_C_CAND_EVICTED);
	return best & (KW_CAND_WAYS - 1);
}

/* kw_distinct counts the distinct closed ports among the ring's touches
 * within window_ns of newest and later than since. */
static __noinline __u32 kw_distinct(struct kw_cand *cd, __u64 newest, __u64 since)
{
	__u32 inwin = 0, distinct = 0, n = cd->n;

	/* Branch-free: the verifier walks these 16 x 16 steps as straight
	 * code instead of forking on every compare. */
	for (int i = 0; i < KW_MAX_TOUCHES; i++)
		inwin |= (kw_lt(i, n) & kw_within(newest, cd->ring[i].ts, CFG.window_ns) & kw_closed_bit(cd->ring[i].kind) &
			  kw_later(cd->ring[i].ts, since)) << i;
	for (int i = 0; i < KW_MAX_TOUCHES; i++) {
		__u32 dup = 0;
		__u16 port = cd->ring[i].port;

		for (int j = i + 1; j < KW_MAX_TOUCHES; j++)
			dup |= (inwin >> j) & kw_eq16(cd->ring[j].port, port);
		distinct += (inwin >> i) & (dup ^ 1) & 1;
	}
	return distinct;
}

/* kw_ring_seen: port is in the ring within the window of ts (as anything
 * when any, else as a closed touch). */
static __noinline __u32 kw_ring_seen(struct kw_cand *cd, __u32 port, __u64 ts, int any)
{
	__u32 seen = 0, n = cd->n;

	for (int i = 0; i < KW_MAX_TOUCHES; i++)
		seen |= kw_lt(i, n) & kw_eq16(cd->ring[i].port, port) & kw_within(ts, cd->ring[i].ts, CFG.window_ns) &
			(kw_closed_bit(cd->ring[i].kind) | (any & 1));
	return seen;
}

/* kw_stage_knock copies the ring, oldest first, into the KNOCK record. */
static __noinline void kw_stage_knock(struct kw_cand *cd, struct knock_rec *rec, __u64 now)
{
	__u32 n = cd->n, full = kw_lt(KW_MAX_TOUCHES - 1, n), h = cd->head & (0 - full);

	rec->type = KW_REC_KNOCK;
	rec->n = n;
	rec->distinct = cd->distinct;
	rec->attempted = cd->attempted;
	rec->epoch = cd->epoch;
	rec->pair = cd->pair;
	rec->flag_ts = now;
	for (int i = 0; i < KW_MAX_TOUCHES; i++)
		rec->touches[i] = cd->ring[(h + i) & (KW_MAX_TOUCHES - 1)];
}

/* kw_cand_flag decides whether a KNOCK goes out now: a burst of N distinct
 * closed ports newer than the last KNOCK's touches, at most one per
 * window (a sooner one becomes due and the sweep sends it). */
static __always_inline void kw_cand_flag(struct kw_counters *c, struct kw_cand *cd, __u64 newest, struct kw_scratch *s)
{
	__u64 now = s->ev.now;
	__u32 d = kw_distinct(cd, newest, cd->flag_touch_ts);

	if (d < CFG.min_ports)
		return;
	if (cd->flag_touch_ts && !kw_after(now, cd->flag_touch_ts, CFG.window_ns)) {
		if (!cd->due)
			KW_INC(c, KW_C_KNOCK_DEFERRED);
		cd->due = 1;
		return;
	}
	if (cd->distinct < d)
		cd->distinct = d; /* the burst count, never less than what the window shows */
	cd->epoch++;
	cd->flag_ts = now;
	cd->flag_touch_ts = newest;
	cd->nrep = 0;
	cd->rephead = 0;
	cd->due = 0;
	kw_stage_knock(cd, &s->rec, now);
	s->st.knock = 1;
}

/* kw_ring_add appends a touch (or an attempt) and updates the burst
 * counts: a touch more than the window after the last starts a new burst. */
static __noinline void kw_ring_add(struct kw_counters *c, struct kw_cand *cd, const struct kw_touch *t)
{
	__u64 ts = t->ts;
	__u16 port = t->port;
	__u8 kind = t->kind;
	__u32 h = cd->head & (KW_MAX_TOUCHES - 1);
	__u32 seen_any = kw_ring_seen(cd, port, ts, 1), seen_closed = kw_ring_seen(cd, port, ts, 0);

	if (kw_after(ts, cd->touch_ts, CFG.window_ns)) {
		cd->distinct = 0; /* a new burst */
		cd->attempted = 0;
		seen_any = 0;
		seen_closed = 0;
	}
	if (!seen_any && cd->attempted < 0xffff) {
		cd->attempted++;
		KW_INC(c, KW_C_ATTEMPTED);
	}
	if (kw_closed_kind(kind) && !seen_closed && cd->distinct < 0xffff)
		cd->distinct++;
	if ((__s64)(ts - cd->last_ts) > 0)
		cd->last_ts = ts;
	if ((__s64)(ts - cd->touch_ts) > 0)
		cd->touch_ts = ts;
	cd->ring[h].ts = ts;
	cd->ring[h].port = port;
	cd->ring[h].sport = t->sport;
	cd->ring[h].kind = kind;
	cd->head = (h + 1) & (KW_MAX_TOUCHES - 1);
	if (cd->n < KW_MAX_TOUCHES)
		cd->n++;
}

/* kw_cand_touch records a closed touch: ring, counts, maybe a KNOCK. */
/* KW_RECORDED marks a touch already recorded (staged) when it happened: a
 * pair's first touch moving into its new candidate. */
#define KW_RECORDED 0x80

static __always_inline void kw_cand_touch(struct kw_counters *c, struct kw_cand *cd, const struct kw_touch *t,
				     struct kw_scratch *s)
{
	struct kw_touch tt = *t;
	__u8 kind = t->kind & ~KW_RECORDED;

	tt.kind = kind;
	kw_ring_add(c, cd, &tt);
	if (!kw_closed_kind(kind))
		return;
	if (!(t->kind & KW_RECORDED))
		kw_stage_touch(&s->st, &cd->pair, t->sport, t->port, kind, t->ts);
	if (!s->st.knock)
		kw_cand_flag(c, cd, cd->touch_ts, s);
}

/* Where a candidate operation leaves the touches it decided under the
 * lock, for kw_g_cand_touch to record once it is released:
 * scratch.dues[i] for pend[i] aged into S0, scratch.dues[KW_CPEND] for the
 * attempt a new SYN pushed out; kind 0 = nothing. Fixed positions keep
 * the verifier from tracking an index. */
#define KW_DUE_EVICTED KW_CPEND

/* kw_cand_due takes the candidate's SYNs unanswered past the S0 timeout
 * out of pend into s->dues (as S0 touches) — and, when the host just
 * answered a later SYN of the pair (answered: that SYN's time, else 0),
 * every SYN sent more than the answer skew before it: an answer to them
 * would have come first. A knock of dropped SYNs followed at once by a
 * connection (knock && ssh against a host that drops, as Windows does)
 * is then decided when the connection is answered, not 5 s later when
 * the handshake is long over. Branch-free. */
static __always_inline void kw_cand_due(struct kw_cand *cd, __u64 now, __u64 answered, struct kw_scratch *s)
{
	for (int i = 0; i < KW_CPEND; i++) {
		struct kw_pend *e = &cd->pend[i];
		struct kw_touch *d = &s->dues[i];
		__u64 t = e->t;
		__u32 due = (1 - kw_eq64(t, 0)) &
			    ((1 - kw_within(now, t, CFG.s0_timeout_ns)) | kw_ltu64(t + CFG.answer_skew_ns, answered));

		d->ts = t;
		d->port = e->dport;
		d->sport = e->sport;
		d->kind = KW_TOUCH_S0 & (0 - due);
		e->t = t & (0 - (__u64)(due ^ 1)); /* cleared when due */
	}
}

/* kw_cand_pend records a SYN of the candidate: a retransmission of a
 * pending attempt (same ports) refreshes it; a new attempt takes a free
 * entry or pushes out the oldest, which counts as attempted (staged in
 * s->dues[KW_DUE_EVICTED]). Branch-free over the entries: one pass finds
 * the target, a second writes it, and no index is ever computed. */
static __always_inline void kw_cand_pend(struct kw_counters *c, struct kw_cand *cd, const struct kw_tev *ev,
					 struct kw_scratch *s)
{
	__u32 found = 0, at = 0, best = 0, anyfree = 0, target, evict;
	__u64 best_t = ~0ULL;
	struct kw_touch *d = &s->dues[KW_DUE_EVICTED];

	for (__u32 i = 0; i < KW_CPEND; i++) {
		struct kw_pend *e = &cd->pend[i];
		__u64 t = e->t;
		__u32 used = 1 - kw_eq64(t, 0);
		__u32 hit = used & kw_eq16(e->sport, ev->conn.sport) & kw_eq16(e->dport, ev->conn.dport) & (found ^ 1);
		__u32 less = kw_ltu64(t, best_t); /* a free entry (0) is older than any */

		at = kw_sel32(hit, i, at);
		found |= hit;
		best = kw_sel32(less, i, best);
		best_t = kw_sel64(less, t, best_t);
		anyfree |= used ^ 1;
	}
	target = kw_sel32(found, at, best);
	evict = (found ^ 1) & (anyfree ^ 1);
	d->kind = 0;
	for (__u32 i = 0; i < KW_CPEND; i++) {
		struct kw_pend *e = &cd->pend[i];
		__u32 m = kw_eq32(i, target);

		d->ts = kw_sel64(m, e->t, d->ts);
		d->port = kw_sel32(m, e->dport, d->port);
		d->sport = kw_sel32(m, e->sport, d->sport);
		e->t = kw_sel64(m, ev->now, e->t);
		e->seq = kw_sel32(m, ev->seq, e->seq);
		e->sport = kw_sel32(m, ev->conn.sport, e->sport);
		e->dport = kw_sel32(m, ev->conn.dport, e->dport);
	}
	d->kind = KW_TOUCH_ATTEMPT & (0 - evict);
	if (found)
		KW_INC(c, KW_C_SYN_RETRANS);
	if (evict)
		KW_INC(c, KW_C_PENDING_EVICTED);
	if ((__s64)(ev->now - cd->last_ts) > 0)
		cd->last_ts = ev->now;
}

/* How an answer is matched to a candidate's pending SYN. */
enum kw_match {
	KW_M_RST = 1,      /* the server's RST acks seq + 1 */
	KW_M_SYNACK = 2,   /* the server's SYN-ACK acks seq + 1 */
	KW_M_ORIG_RST = 3, /* the client's own RST: seq or seq + 1 */
	KW_M_ACK = 4,      /* the client's ACK: seq + 1 (proves an unseen SYN-ACK) */
};

/* kw_cand_match finds and frees the pending SYN (sport, dport) that v
 * answers; returns its index or -1, with its time and seq. */
static __always_inline int kw_cand_match(struct kw_cand *cd, int how, __u32 v, __u16 sport, __u16 dport, __u64 *t,
					 __u32 *seq)
{
	for (int i = 0; i < KW_CPEND; i++) {
		struct kw_pend *e = &cd->pend[i];
		int ok;

		if (!e->t || e->sport != sport || e->dport != dport)
			continue;
		if (how == KW_M_ORIG_RST)
			ok = v == e->seq || v == e->seq + 1;
		else
			ok = v == e->seq + 1;
		if (!ok)
			continue;
		*t = e->t;
		*seq = e->seq;
		e->t = 0;
		return i;
	}
	return -1;
}

/* kw_cand_first_port marks port reported for the current knock; returns 1
 * the first time. A full list drops its oldest (counted), never the new. */
static __always_inline int kw_cand_first_port(struct kw_counters *c, struct kw_cand *cd, __u16 port)
{
	__u32 seen = 0, n = cd->nrep, h;

	for (int i = 0; i < KW_REPORTED_PORTS; i++)
		seen |= kw_lt(i, n) & kw_eq16(cd->reported[i], port);
	if (seen)
		return 0;
	h = cd->rephead & (KW_REPORTED_PORTS - 1);
	cd->reported[h] = port;
	cd->rephead = (h + 1) & (KW_REPORTED_PORTS - 1);
	if (n < KW_REPORTED_PORTS)
		cd->nrep = n + 1;
	else
		KW_INC(c, KW_C_REPORTED_OVERFLOW);
	return 1;
}

#endif
