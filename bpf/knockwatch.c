//go:build ignore

/* knockwatch.c — the XDP sensor: closed-port touches, knock flags and first
 * handshakes of flagged sources, at line rate.
 *
 * This file holds every program (SEC) and every global function; the
 * handlers and their state live in headers by concern:
 *   parsing.h    the packet parser and its outcome counters
 *   syn.h        a client's SYN (pending SYNs, S0 touches)
 *   answer.h     the server's RST or SYN-ACK to a pending SYN
 *   handshake.h  the ACK completing a flagged source's handshake
 *   touch.h      from touches to a knock flag (tiers 1-3)
 *   portstate.h  per (host, port) last seen closed / open
 *   sweep.h      userspace's aging of pending SYNs
 *   maps.h       every map with its key, value and size; types.h the
 *                records shared with Go; config.h the load-time CFG.
 * Plain ACK/data packets leave after one global load unless a watched
 * handshake is in flight. docs/ARCHITECTURE.md draws the state machine.
 *
 * gotwin/ mirrors this program branch for branch in pure Go (same hash,
 * same tables, same counters, same records). Change both in the same
 * commit: gotwin/differential_test.go (TestDifferential, FuzzDifferential)
 * runs both on the same packets and fails on any difference.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "types.h"
#include "config.h"
#include "counters.h"
#include "maps.h"
#include "parsing.h"
#include "helpers.h"
#include "portstate.h"
#include "touch.h"
#include "syn.h"
#include "answer.h"
#include "handshake.h"
#include "sweep.h"

char __license[] SEC("license") = "Dual MIT/GPL";

/* Keep the record types and the counter enums in BTF so bpf2go can
 * generate their Go twins and loader's drift tests can read the counters'
 * names and order from the compiled object. */
const struct handshake_rec *unused_handshake_rec __attribute__((unused));
const enum kw_counter *unused_counter __attribute__((unused));
const enum kw_if_counter *unused_if_counter __attribute__((unused));
const struct knock_rec *unused_knock_rec __attribute__((unused));
const struct kw_sweep_args *unused_sweep_args __attribute__((unused));

SEC("xdp")
int knockwatch(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int verdict = CFG.pass ? XDP_PASS : XDP_DROP;
	struct kw_packet p = {};
	struct kw_if_counters *ic;
	struct kw_scratch *work;
	struct kw_counters *c;
	__u32 zero = 0, ifslot;
	__u64 now;
	int rc;

	c = bpf_map_lookup_elem(&stats, &zero);
	ifslot = ctx->ingress_ifindex & (KW_IF_SLOTS - 1);
	ic = bpf_map_lookup_elem(&iface_stats, &ifslot);
	if (!c || !ic)
		return verdict;
	KW_INC(c, KW_C_PACKETS);
	c->c[KW_C_BYTES] += data_end - data;
	ic->c[KW_IF_PACKETS]++;
	ic->c[KW_IF_BYTES] += data_end - data;

	rc = kw_parse(data, data_end, &p);
	if (p.vlan)
		KW_INC(c, KW_C_VLAN);
	if (rc != KW_OK) {
		kw_count_parse(c, ic, rc);
		return verdict;
	}
	KW_INC(c, KW_C_TCP);
	ic->c[KW_IF_TCP]++;
	KW_INC(c, p.ipv6 ? KW_C_IPV6 : KW_C_IPV4);

	/* Replay mode: every packet carries its capture time. */
	now = 0;
	if (CFG.replay) {
		now = kw_meta_time(ctx);
		if (!now) {
			KW_INC(c, KW_C_NO_META);
			return verdict;
		}
	}

	/* Fast path: no SYN, no RST. */
	if (!(p.flags & (KW_TH_SYN | KW_TH_RST))) {
		if (watch_until)
			kw_on_ack(ctx, c, &p);
		return verdict;
	}
	if ((p.flags & KW_TH_SYN) && (p.flags & KW_TH_RST)) {
		KW_INC(c, KW_C_BAD_FLAGS);
		return verdict;
	}
	if (!(p.flags & KW_TH_RST) && !now)
		now = kw_clock();
	if ((p.flags & KW_TH_SYN) && (p.flags & KW_TH_ACK)) {
		kw_on_synack(c, &p, now);
		return verdict;
	}
	work = bpf_map_lookup_elem(&scratch, &zero);
	if (!work)
		return verdict;
	work->work.n = 0;
	if (p.flags & KW_TH_RST)
		kw_on_rst(c, &p, &work->work);
	else
		kw_on_syn(c, &p, now, &work->work);
	/* Touches found under a slot lock continue here, where the stack
	 * has room for kw_tier2's frame. */
	for (int i = 0; i < KW_PENDING; i++) {
		if (i >= work->work.n)
			break;
		kw_tier2(&work->work.pair, &work->work.t[i]);
	}
	return verdict;
}

/* kw_tier2 continues a touch that kw_tier1 did not finish: creates the
 * candidate on KW_TIER_PROMOTE, adds the touch, flags when it is time.
 *
 * It is a global (non-static, noinline) function so the verifier checks its
 * loops once, not once per path that reaches it: it looks up everything it
 * locks itself, since a global function's pointer arguments are plain
 * memory to the verifier. */
__attribute__((noinline)) int kw_tier2(const struct kw_pair *pair, const struct kw_tier2_args *t)
{
	__u32 zero = 0, idx;
	struct kw_scratch *s;
	struct kw_counters *c;
	struct pair_slot *slot;
	struct candidate *cd;

	if (!pair || !t || t->tier == KW_TIER_DONE)
		return 0;
	c = bpf_map_lookup_elem(&stats, &zero);
	s = bpf_map_lookup_elem(&scratch, &zero);
	idx = kw_hash_pair(pair) & CFG.pair_slots_mask;
	slot = bpf_map_lookup_elem(&pair_slots, &idx);
	if (!c || !s || !slot)
		return 0;
	cd = bpf_map_lookup_elem(&candidates, pair);
	if (!cd) {
		struct candidate *init = &s->init;

		/* Promotion: start from the slot's first touch. A candidate
		 * the LRU evicted starts again from this touch. */
		__builtin_memset(init, 0, sizeof(*init));
		init->last_ts = t->ts;
		if (t->tier == KW_TIER_PROMOTE) {
			init->ring[0] = t->first;
			init->n = 1;
			init->head = 1;
			init->distinct = 1;
			init->last_ts = t->first.ts;
		}
		if (bpf_map_update_elem(&candidates, pair, init, BPF_NOEXIST) == 0)
			KW_INC(c, KW_C_CANDIDATES);
		cd = bpf_map_lookup_elem(&candidates, pair);
		if (!cd) {
			KW_INC(c, KW_C_MAP_INSERT_FAIL);
			return 0;
		}
	}
	if (kw_candidate_add(slot, cd, t->port, t->kind, t->ts, &s->rec))
		return kw_flag(c, pair, &s->rec, t->now);
	return 0;
}

SEC("xdp")
int knockwatch_sweep(struct xdp_md *ctx)
{
	void *meta = (void *)(long)ctx->data_meta;
	void *data = (void *)(long)ctx->data;
	struct kw_sweep_args args;
	struct kw_sweep_ctx sc = {};

	if (meta + sizeof(args) > data)
		return 0;
	__builtin_memcpy(&args, meta, sizeof(args));
	sc.now = args.now;
	sc.start = args.start;
	/* Close the watched-ACK gate once nothing can be in flight; a
	 * concurrent re-arm wins the compare-and-swap. */
	{
		__u64 until = watch_until;

		if (until && kw_after(args.now, until, 0))
			__sync_val_compare_and_swap(&watch_until, until, 0);
	}
	if (args.count > CFG.pair_slots_mask + 1)
		args.count = CFG.pair_slots_mask + 1;
	bpf_loop(args.count, kw_sweep_slot, &sc, 0);
	return sc.found;
}
