/* pairs.h — the flood tier: pair buckets, lock-free.
 *
 * A bucket is one cache line of four 16-byte entries shared by every pair
 * whose hash lands on it (maps.h, struct kw_slot). A random-source SYN
 * flood writes one entry per packet and nothing else; what it can push out
 * is only other entries of the same kind (one-port pairs), never a live
 * candidate's MARK, so a knock in progress is at risk only until its second
 * distinct port (see docs/ARCHITECTURE.md for the survival figures).
 *
 * Protocol: the tag word says who owns an entry. A writer claims an entry by
 * compare-and-swap of its tag to KW_TAG_BUSY, writes the fields, then
 * stores the final tag with its version bumped (kw_publish). A consumer
 * takes an entry by compare-and-swap of the tag it read to 0: if anyone
 * rewrote the entry since the read, the version differs and the consumer
 * loses, so the fields it read are the fields it took. Readers skip busy
 * entries.
 */
#ifndef KW_PAIRS_H
#define KW_PAIRS_H

#include "helpers.h"
#include "maps.h"

static __always_inline struct kw_bucket *kw_bucket_of(__u32 h)
{
	__u32 idx = h & CFG.pair_mask;

	return bpf_map_lookup_elem(&pairs, &idx);
}

/* kw_claim takes entry s for writing if its tag is still old. */
static __always_inline int kw_claim(struct kw_slot *s, __u32 old)
{
	return __sync_val_compare_and_swap(&s->tag, old, KW_TAG_BUSY) == old;
}

/* kw_take consumes entry s if its tag is still old (it becomes free). */
static __always_inline int kw_take(struct kw_slot *s, __u32 old)
{
	return __sync_val_compare_and_swap(&s->tag, old, 0) == old;
}

/* kw_publish ends a write started by kw_claim; the version is the old
 * tag's plus one, so a consumer that read the old entry cannot take this
 * one. */
static __always_inline void kw_publish(struct kw_slot *s, __u32 fp, __u32 kind, __u32 old)
{
	__u32 tag = KW_TAG(fp, kind, KW_TAG_VER(old) + 1);

	__sync_lock_test_and_set(&s->tag, tag);
}

/* kw_bit: 1 if x != 0, else 0, without a branch. */
static __always_inline __u32 kw_bit(__u32 x)
{
	__u64 v = x;

	kw_hide(v);
	return (__u32)((0 - v) >> 63);
}

/* Ages in the pair buckets are signed differences of 32-bit microsecond
 * (or millisecond) clocks: an entry stamped after now (captures are not
 * always in order) has a negative age. */
static __always_inline __s32 kw_age(__u32 now32, __u32 t)
{
	return (__s32)(now32 - t);
}

/* kw_le32s: 1 if a <= b (signed 32-bit), without a branch. */
static __always_inline __u32 kw_le32s(__s32 a, __s32 b)
{
	__s64 x = (__s64)b - (__s64)a;

	kw_hide(x);
	return (__u32)(((__u64)x >> 63) ^ 1);
}

/* kw_mark_flagged: the MARK's pair has a KNOCK younger than the flag TTL. */
static __always_inline __u32 kw_mark_flagged(const struct kw_slot *s, __u32 now_ms)
{
	__u32 flag_ms = ((__u32)s->sport << 16) | s->dport;

	return kw_bit(flag_ms) & kw_le32s(kw_age(now_ms, flag_ms), CFG.flag_ttl_ms);
}

/* kw_mark_live: a candidate's MARK protects it while its burst is active or
 * its flag watches handshakes. */
static __always_inline __u32 kw_mark_live(const struct kw_slot *s, __u32 now_us, __u32 now_ms)
{
	return kw_le32s(kw_age(now_us, s->t), CFG.window_us) | kw_mark_flagged(s, now_ms);
}

/* kw_stale: 1 if the entry (of kind) holds nothing anyone still needs: an
 * early answer past the skew, a touch past the window, a MARK no longer
 * live. Branch-free. */
static __always_inline __u32 kw_stale(const struct kw_slot *s, __u32 kind, __u32 now_us, __u32 now_ms)
{
	__s32 age = kw_age(now_us, s->t);
	__u32 early = kw_eq32(kind, KW_K_EARLY_RST) | kw_eq32(kind, KW_K_EARLY_SYNACK);
	__u32 touch = kw_lt(KW_K_TOUCH_REJ - 1, kind);
	__u32 mark = kw_eq32(kind, KW_K_MARK);

	return (early & (1 - kw_le32s(age, CFG.answer_skew_us))) | (touch & (1 - kw_le32s(age, CFG.window_us))) |
	       (mark & (1 - kw_mark_live(s, now_us, now_ms)));
}

/* kw_due: a pending SYN unanswered past the S0 timeout. */
static __always_inline __u32 kw_due(const struct kw_slot *s, __u32 now_us)
{
	return 1 - kw_le32s(kw_age(now_us, s->t), CFG.s0_timeout_us);
}

/* Victim ranks: lower goes first. */
enum { KW_V_FREE = 0, KW_V_STALE = 1, KW_V_OLD = 2, KW_V_MARK = 3, KW_V_NONE = 4 };

/* kw_score ranks entry s for eviction: (rank << 32) | (2^32 - 1 - age),
 * lower goes first — a free entry, then a stale one, then the oldest that
 * is not a live MARK; a new MARK (new_mark) may also take the oldest live
 * MARK. Busy entries and entries of keep_fp (when set) rank KW_V_NONE.
 * Branch-free, and a function of its own: the loop that calls it keeps few
 * values alive. */
static __noinline __u64 kw_score(const struct kw_slot *s, __u32 now_us, __u32 now_ms, __u32 new_mark, __u32 keep_fp)
{
	__u32 tg = s->tag, k = KW_TAG_KIND(tg), age = now_us - s->t;
	__u32 used = kw_bit(tg), busy = kw_bit(tg & KW_TAG_BUSY);
	__u32 kept = kw_bit(keep_fp) & used & kw_eq32(KW_TAG_FP(tg), keep_fp);
	__u32 is_mark = kw_eq32(k, KW_K_MARK), stale = kw_stale(s, k, now_us, now_ms);
	/* free 0, stale 1, not a MARK 2, a live MARK 3 (or 4 unless a MARK is
	 * being written), busy or kept 4 */
	__u32 r = used * (1 + (1 - stale) * (1 + is_mark * (1 + (1 - new_mark))));

	r = kw_sel32(busy | kept, KW_V_NONE, r);
	return ((__u64)r << 32) | (__u32)(0xffffffffu - age);
}

/* kw_victim picks the entry a new entry of kind `kind` takes (kw_score).
 * Returns the way with, through *tag and *rank, what it held; rank
 * KW_V_NONE when none may be taken. */
static __always_inline __u32 kw_victim(struct kw_bucket *b, __u32 kind, __u64 now, __u32 keep_fp, __u32 *tag,
				       __u32 *rank)
{
	__u32 best = 0, now_us = kw_us32(now), now_ms = kw_ms32(now), new_mark = kw_eq32(kind, KW_K_MARK);
	__u64 best_score = ~0ULL;

	__u32 best_tag = 0;

	for (__u32 w = 0; w < KW_WAYS; w++) {
		__u32 before = b->s[w].tag;
		__u64 score = kw_score(&b->s[w], now_us, now_ms, new_mark, keep_fp);
		__u32 changed = 1 - kw_eq32(before, b->s[w].tag);
		__u32 better;

		score = kw_sel64(changed, ~0ULL, score);
		better = kw_ltu64(score, best_score);
		best = kw_sel32(better, w, best);
		best_tag = kw_sel32(better, before, best_tag);
		best_score = kw_sel64(better, score, best_score);
	}
	*tag = best_tag;
	*rank = (__u32)(best_score >> 32);
	return best & (KW_WAYS - 1);
}

int kw_g_insert(__u32 h, __u32 fp, __u32 kind, __u64 now);

/* kw_insert writes a new entry of fp (kind, with the given fields) into the
 * bucket of hash h through kw_g_insert, which picks the victim once for
 * every caller. Returns the way, or -1 when no entry could be taken. */
static __always_inline int kw_insert(__u32 h, __u32 fp, __u32 kind, __u64 now, __u32 t, __u32 seq, __u16 sport,
				     __u16 dport, __u32 keep_fp)
{
	struct kw_scratch *s = kw_scratch();

	if (!s)
		return -1;
	s->ins.t = t;
	s->ins.seq = seq;
	s->ins.sport = sport;
	s->ins.dport = dport;
	s->ins.keep_fp = keep_fp;
	return kw_g_insert(h, fp, kind, now);
}

/* kw_insert_body claims a victim in the bucket of h for a new entry of fp
 * and fills it (scratch.ins) between claim and publish. Returns the way,
 * or -1 when no entry could be taken (counted). */
static __always_inline int kw_insert_body(__u32 h, __u32 fp, __u32 kind, __u64 now)
{
	struct kw_scratch *sc = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct kw_bucket *b = kw_bucket_of(h);
	__u32 t, seq, keep_fp;
	__u16 sport, dport;

	if (!sc || !c || !b)
		return -1;
	t = sc->ins.t;
	seq = sc->ins.seq;
	sport = sc->ins.sport;
	dport = sc->ins.dport;
	keep_fp = sc->ins.keep_fp;
	for (int try = 0; try < 2; try++) {
		__u32 old, rank, w = kw_victim(b, kind, now, keep_fp, &old, &rank);
		struct kw_slot *s;

		if (rank >= KW_V_NONE) {
			KW_INC(c, KW_C_PAIR_FULL);
			return -1;
		}
		s = &b->s[w & (KW_WAYS - 1)];
		if ((old & KW_TAG_BUSY) || !kw_claim(s, old))
			continue;
		if (old && rank >= KW_V_OLD) {
			if (KW_TAG_FP(old) != fp)
				KW_INC(c, KW_C_SLOT_TAKEOVER);
			if (KW_TAG_KIND(old) == KW_K_SYN)
				KW_INC(c, KW_C_PENDING_EVICTED);
			if (KW_TAG_KIND(old) == KW_K_MARK)
				KW_INC(c, KW_C_MARK_EVICTED);
		}
		s->t = t;
		s->seq = seq;
		s->sport = sport;
		s->dport = dport;
		kw_publish(s, fp, kind, old);
		return w & (KW_WAYS - 1);
	}
	KW_INC(c, KW_C_PAIR_FULL);
	return -1;
}

/* kw_rewrite updates entry s of fp in place (a retransmission, a touch
 * refreshed, a MARK's activity) if it still holds old. */
static __always_inline int kw_rewrite(struct kw_slot *s, __u32 old, __u32 fp, __u32 kind,
				      __u32 t, __u32 seq, __u16 sport, __u16 dport)
{
	if (!kw_claim(s, old))
		return 0;
	s->t = t;
	s->seq = seq;
	s->sport = sport;
	s->dport = dport;
	kw_publish(s, fp, kind, old);
	return 1;
}

/* kw_owner_set records the pair of a new entry for the sweep's TOUCH
 * records (CFG.report_touches only). */
static __always_inline void kw_owner_set(__u32 h, int way, const struct kw_pair *pair)
{
	__u32 idx;

	if (!CFG.report_touches || way < 0)
		return;
	idx = ((h & CFG.pair_mask) << 2) | (way & (KW_WAYS - 1));
	bpf_map_update_elem(&owners, &idx, pair, BPF_ANY);
}

#endif
