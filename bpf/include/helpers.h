/* helpers.h — small inline helpers: time, hashing, address comparison,
 * and the window arithmetic every handler shares. */
#ifndef KW_HELPERS_H
#define KW_HELPERS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "config.h"
#include "counters.h"
#include "types.h"

/* kw_hide stops clang from turning the arithmetic below back into compares
 * and branches: BPF has no conditional move, and a branch per loop step
 * multiplies the paths the verifier must walk. */
#define kw_hide(x) asm volatile("" : "+r"(x))

/* kw_eq16: 1 if a == b, else 0, without a branch. */
static __always_inline __u32 kw_eq16(__u16 a, __u16 b)
{
	__u32 x = (__u32)(a ^ b);

	kw_hide(x);
	return ((x - 1) >> 31) & 1;
}

/* kw_eq64: 1 if a == b, else 0, without a branch. */
static __always_inline __u32 kw_eq64(__u64 a, __u64 b)
{
	__u64 x = a ^ b;

	kw_hide(x);
	x = x | (0 - x);
	kw_hide(x);
	return (__u32)(x >> 63) ^ 1;
}

/* kw_sel32/kw_sel64: c ? a : b for c in {0, 1}, without a branch. */
static __always_inline __u32 kw_sel32(__u32 c, __u32 a, __u32 b)
{
	__u32 m = 0 - c;

	kw_hide(m);
	return b ^ ((a ^ b) & m);
}

static __always_inline __u64 kw_sel64(__u32 c, __u64 a, __u64 b)
{
	__u64 m = 0 - (__u64)c;

	kw_hide(m);
	return b ^ ((a ^ b) & m);
}

/* kw_ltu64: 1 if a < b (unsigned, full range), without a branch. */
static __always_inline __u32 kw_ltu64(__u64 a, __u64 b)
{
	__u64 d = a - b;

	kw_hide(d);
	return (__u32)(((~a & b) | ((~a | b) & d)) >> 63);
}

/* kw_eq32: 1 if a == b, else 0, without a branch. */
static __always_inline __u32 kw_eq32(__u32 a, __u32 b)
{
	__u64 x = (__u64)(a ^ b);

	kw_hide(x);
	return (__u32)((x - 1) >> 63);
}

/* kw_lt: 1 if a < b (both small non-negative), else 0, without a branch. */
static __always_inline __u32 kw_lt(__u32 a, __u32 b)
{
	__u32 x = a - b;

	kw_hide(x);
	return x >> 31;
}

/* kw_within: 1 if newest - ts <= d (ns; ts may also be later), else 0,
 * without a branch. */
static __always_inline __u32 kw_within(__u64 newest, __u64 ts, __u64 d)
{
	__s64 x = (__s64)d - (__s64)(newest - ts);

	kw_hide(x);
	return (((__u64)x) >> 63) ^ 1;
}

/* kw_meta_time returns the packet's capture time from the 8 bytes of XDP
 * metadata in front of it (replay mode: unix ns), 0 when they are missing. */
static __always_inline __u64 kw_meta_time(struct xdp_md *ctx)
{
	void *meta = (void *)(long)ctx->data_meta;
	void *data = (void *)(long)ctx->data;
	__u64 ts;

	if (meta + sizeof(ts) > data)
		return 0;
	__builtin_memcpy(&ts, meta, sizeof(ts));
	return ts;
}

/* Live clocks. Both are CLOCK_MONOTONIC, which userspace maps to UTC, so
 * their readings compare: kw_coarse (one scheduler tick, 1-4 ms; cheap) on
 * the flood path (SYNs, unmatched RSTs), kw_precise (ns) where "who
 * connected first" is decided (SYN-ACKs, watched ACKs) unless
 * CFG.coarse_clock asks for the tick everywhere. A coarse reading is never
 * later than a precise one taken after it. */
static __always_inline __u64 kw_coarse(void)
{
	return bpf_ktime_get_coarse_ns();
}

static __always_inline __u64 kw_precise(void)
{
	if (CFG.coarse_clock)
		return bpf_ktime_get_coarse_ns();
	return bpf_ktime_get_ns();
}

/* Pair entries keep microseconds (low 32 bits, wrapping every 71 min) and a
 * KNOCK's time in milliseconds (wrapping every 49 days); both are read back
 * relative to now, within half their range. */
static __always_inline __u32 kw_us32(__u64 ns)
{
	return (__u32)(ns / 1000);
}

static __always_inline __u64 kw_us_full(__u64 now, __u32 t)
{
	__u64 now_us = now / 1000;
	__s32 d = (__s32)((__u32)now_us - t);

	return (now_us - (__s64)d) * 1000;
}

static __always_inline __u32 kw_ms32(__u64 ns)
{
	return (__u32)(ns / 1000000);
}

static __always_inline __u64 kw_ms_full(__u64 now, __u32 t)
{
	__u64 now_ms = now / 1000000;
	__s32 d = (__s32)((__u32)now_ms - t);

	return (now_ms - (__s64)d) * 1000000;
}

/* kw_after reports whether a is later than b by more than d (ns), robust to
 * a < b (evidence detected out of order). */
static __always_inline int kw_after(__u64 a, __u64 b, __u64 d)
{
	return (__s64)(a - b) > (__s64)d;
}

static __always_inline __u32 kw_mix(__u32 h, __u32 v)
{
	h ^= v;
	h *= 0x9e3779b1;
	h ^= h >> 16;
	return h;
}

static __always_inline __u32 kw_hash_addr(__u32 h, const struct kw_addr *a)
{
	__u32 w[4];

	__builtin_memcpy(w, a->b, 16);
	h = kw_mix(h, w[0]);
	h = kw_mix(h, w[1]);
	h = kw_mix(h, w[2]);
	h = kw_mix(h, w[3]);
	return h;
}

/* kw_hash_pair: hash of (S, D), keyed by the per-load random seed so an
 * outsider cannot aim collisions at a known attacker's bucket. */
static __always_inline __u32 kw_hash_pair(const struct kw_pair *p)
{
	__u32 h = CFG.hash_seed;

	h = kw_hash_addr(h, &p->src);
	h = kw_hash_addr(h, &p->dst);
	h *= 0x85ebca6b;
	return h ^ (h >> 13);
}

/* kw_fp: the 24-bit fingerprint that names a pair inside its bucket (never
 * 0), taken from its hash by a second mix so that bucket-mates differ. */
static __always_inline __u32 kw_fp(__u32 h)
{
	__u32 f = (h * 0x9e3779b1) >> 8;

	return f ? f : 1;
}

static __always_inline __u32 kw_hash_conn(const struct kw_conn *c)
{
	__u32 h = kw_hash_addr(CFG.hash_seed ^ 0x27d4eb2f, &c->pair.src);

	h = kw_hash_addr(h, &c->pair.dst);
	h = kw_mix(h, ((__u32)c->sport << 16) | c->dport);
	h *= 0x85ebca6b;
	return h ^ (h >> 13);
}

static __always_inline __u32 kw_hash_port(const struct kw_addr *host, __u16 port)
{
	__u32 h = kw_hash_addr(CFG.hash_seed ^ 0x5bd1e995, host);

	h = kw_mix(h, port);
	h *= 0x85ebca6b;
	return h ^ (h >> 13);
}

static __always_inline int kw_addr_eq(const struct kw_addr *a, const struct kw_addr *b)
{
	__u64 a0, a1, b0, b1;

	__builtin_memcpy(&a0, a->b, 8);
	__builtin_memcpy(&a1, &a->b[8], 8);
	__builtin_memcpy(&b0, b->b, 8);
	__builtin_memcpy(&b1, &b->b[8], 8);
	return a0 == b0 && a1 == b1;
}

static __always_inline int kw_pair_eq(const struct kw_pair *a, const struct kw_pair *b)
{
	return kw_addr_eq(&a->src, &b->src) && kw_addr_eq(&a->dst, &b->dst);
}

#endif
