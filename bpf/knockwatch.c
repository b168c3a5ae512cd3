//go:build ignore

/* knockwatch.c — the XDP sensor: closed-port touches, knock flags and first
 * handshakes of flagged sources, at line rate.
 *
 * This file holds every program (SEC) and every global function; the
 * handlers and their state live in headers by concern:
 *   parsing.h    the packet parser, its outcome counters, the TCP checksum
 *   pairs.h      the flood tier: lock-free pair buckets
 *   cands.h      the protected tier: candidates (two or more ports), flags
 *   touch.h      from a closed touch to the state that remembers it; the
 *                work queue that carries it there
 *   work.h       the candidate steps of the queue and its runner
 *   syn.h        a client's SYN
 *   answer.h     RST, SYN-ACK, the client's own RST, the client's ACK
 *   handshake.h  watched handshakes and the HANDSHAKE record
 *   portstate.h  per (host, port) closed / open / first completer
 *   sweep.h      userspace's aging of pending SYNs and deferred KNOCKs
 *   maps.h       every map with its key, value and size; types.h the
 *                records shared with Go; config.h the load-time CFG.
 * Plain ACK/data packets leave after the parser unless a watched handshake
 * is in flight (or CFG.ack_proof asks to look for proving ACKs).
 * docs/ARCHITECTURE.md draws the state and says what each part resists.
 *
 * gotwin/ mirrors this program branch for branch in pure Go (same hash,
 * same tables, same counters, same records). Change both in the same
 * commit: gotwin/differential_test.go (TestDifferential,
 * TestDifferentialTable, FuzzDifferential) runs both on the same packets
 * and fails on any difference.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "types.h"
#include "config.h"
#include "counters.h"
#include "maps.h"
#include "parsing.h"
#include "helpers.h"
#include "pairs.h"
#include "portstate.h"
#include "cands.h"
#include "touch.h"
#include "work.h"
#include "answer.h"
#include "handshake.h"
#include "recheck.h"
#include "syn.h"
#include "sweep.h"

char __license[] SEC("license") = "Dual MIT/GPL";

/* Keep the record types and the counter enums in BTF so bpf2go can
 * generate their Go twins and loader's drift tests can read the counters'
 * names and order from the compiled object. */
const struct handshake_rec *unused_handshake_rec __attribute__((unused));
const struct knock_rec *unused_knock_rec __attribute__((unused));
const struct touch_rec *unused_touch_rec __attribute__((unused));
const struct kw_sweep_args *unused_sweep_args __attribute__((unused));
const enum kw_counter *unused_counter __attribute__((unused));
const enum kw_if_counter *unused_if_counter __attribute__((unused));

/* ---- global functions -----------------------------------------------------
 * Each is verified once, looks up what it changes itself and takes its
 * arguments and results through the per-CPU scratch (struct kw_scratch).
 * Handlers run first and queue the steps that follow (touch.h); the entry
 * point then runs the queue, so no call chain is more than three deep. */

/* The packet handlers (the entry point copies the parsed packet to
 * scratch.pkt). */
__attribute__((noinline)) int kw_g_syn(__u64 now)
{
	return kw_syn_body(now);
}

__attribute__((noinline)) int kw_g_rst(__u64 now)
{
	return kw_rst_body(now);
}

__attribute__((noinline)) int kw_g_synack(__u64 now)
{
	return kw_synack_body(now);
}

__attribute__((noinline)) int kw_g_ack_proof(__u64 now)
{
	return kw_ack_proof_body(now);
}

__attribute__((noinline)) int kw_g_watch_ack(struct xdp_md *ctx)
{
	if (!ctx)
		return 0;
	return kw_watch_ack_body(ctx);
}

/* What the handlers share. */
__attribute__((noinline)) int kw_g_insert(__u32 h, __u32 fp, __u32 kind, __u64 now)
{
	return kw_insert_body(h, fp, kind, now);
}

__attribute__((noinline)) int kw_g_answer(__u64 now)
{
	return kw_answer_body(now);
}

__attribute__((noinline)) int kw_g_csum(struct xdp_md *ctx)
{
	struct kw_scratch *s = kw_scratch();

	if (!ctx || !s)
		return 1;
	return kw_csum_ok((void *)(long)ctx->data, (void *)(long)ctx->data_end, &s->pkt);
}

__attribute__((noinline)) int kw_g_done(__u32 flagged, __u32 src_fp, __u32 done_fp, __u32 why)
{
	return kw_done_body(flagged, src_fp, done_fp, why);
}

/* kw_g_handshake: is scratch.ev.conn the first completed handshake to its
 * port for the pair's current knock? 1 yes (scratch.epoch, distinct,
 * attempted set), 0 a repeat, -1 the candidate is gone (report it). */
__attribute__((noinline)) int kw_g_handshake(__u32 h, __u32 cidx)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct kw_cand_bucket *cb = kw_cbucket(h);
	struct kw_cand *cd;
	int w, first;

	if (!s || !c || !cb)
		return -1;
	bpf_spin_lock(&cb->lock);
	w = kw_cway(cb, h, cidx, &s->ev.conn.pair);
	if (w < 0) {
		bpf_spin_unlock(&cb->lock);
		return -1;
	}
	cd = &cb->c[w & 3];
	first = kw_cand_first_port(c, cd, s->ev.conn.dport);
	s->epoch = cd->epoch;
	s->distinct = cd->distinct;
	s->attempted = cd->attempted;
	bpf_spin_unlock(&cb->lock);
	return first;
}

/* The steps of the work queue (touch.h, work.h, handshake.h). */
__attribute__((noinline)) int kw_g_step_touch(__u32 i, __u64 now)
{
	return kw_step_touch(i, now);
}

__attribute__((noinline)) int kw_g_step_promote(__u32 i, __u64 now)
{
	return kw_step_promote(i, now);
}

__attribute__((noinline)) int kw_g_promote_cand(__u32 kind, __u64 ts, __u64 now)
{
	return kw_promote_cand_body(kind, ts, now);
}

__attribute__((noinline)) int kw_g_step_cand_syn(__u32 i, __u64 now)
{
	return kw_step_cand_syn(i, now);
}

__attribute__((noinline)) int kw_g_step_cand_touch(__u32 i, __u64 now)
{
	return kw_step_cand_touch(i, now);
}

__attribute__((noinline)) int kw_g_step_opened(__u32 i, __u64 now)
{
	struct kw_scratch *s = kw_scratch();

	if (!s || i >= KW_WORK)
		return 0;
	return kw_step_opened(now, s->work[i].a);
}

__attribute__((noinline)) int kw_g_step_emit(__u32 i, __u64 now)
{
	struct kw_scratch *s = kw_scratch();

	if (!s || i >= KW_WORK)
		return 0;
	return kw_step_emit(s->work[i].a, now);
}

__attribute__((noinline)) int kw_g_step_mark(__u32 i, __u64 now)
{
	struct kw_scratch *s = kw_scratch();

	if (!s || i >= KW_WORK)
		return 0;
	return kw_step_mark(s->work[i].a, now);
}

__attribute__((noinline)) int kw_g_step_flag(__u32 i, __u64 now)
{
	return kw_step_flag(i, now);
}

__attribute__((noinline)) int kw_g_syn_recheck(__u32 w, __u64 now)
{
	return kw_syn_recheck_body(w, now);
}

__attribute__((noinline)) int kw_g_ans_recheck(__u32 e, __u32 kind, __u64 now)
{
	return kw_ans_recheck_body(e, kind, now);
}

__attribute__((noinline)) int kw_g_recheck_one(__u32 e, __u32 cidx, __u64 now)
{
	return kw_recheck_one_body(e, cidx, now);
}

__attribute__((noinline)) int kw_g_mark_dedupe(__u32 h, __u32 fp, __u64 now)
{
	return kw_mark_dedupe_body(h, fp, now);
}

__attribute__((noinline)) int kw_g_step_recheck(__u32 i, __u64 now)
{
	return kw_step_recheck(i, now);
}

/* The sweep (sweep.h). */
__attribute__((noinline)) int kw_g_sweep_pair(__u32 idx, __u32 w, __u64 now)
{
	return kw_sweep_pair_body(idx, w, now);
}

__attribute__((noinline)) int kw_g_sweep_cand(__u32 bucket, __u32 w, __u64 now)
{
	return kw_sweep_cand_body(bucket, w, now);
}

/* ---- programs ------------------------------------------------------------ */

SEC("xdp")
int knockwatch(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int verdict = CFG.pass ? XDP_PASS : XDP_DROP;
	struct kw_if_counters *ic;
	struct kw_scratch *s;
	struct kw_counters *c;
	struct kw_packet *p;
	__u32 zero = 0, ifslot;
	__u64 now;
	int rc, v6 = 0, fl;

	c = bpf_map_lookup_elem(&stats, &zero);
	ifslot = ctx->ingress_ifindex & (KW_IF_SLOTS - 1);
	ic = bpf_map_lookup_elem(&iface_stats, &ifslot);
	if (!c || !ic)
		return verdict;
	KW_INC(c, KW_C_PACKETS);
	c->c[KW_C_BYTES] += data_end - data;
	ic->c[KW_IF_PACKETS]++;
	ic->c[KW_IF_BYTES] += data_end - data;

	/* Fast lane: a plain ACK or data segment of the usual shape leaves
	 * before the full parse (same counters, nothing stored). */
	fl = kw_peek_flags(data, data_end, &v6);
	if (fl >= 0 && !(fl & (KW_TH_SYN | KW_TH_RST)) && (!(fl & KW_TH_ACK) || (!watch_until && !CFG.ack_proof))) {
		KW_INC(c, KW_C_TCP);
		ic->c[KW_IF_TCP]++;
		KW_INC(c, v6 ? KW_C_IPV6 : KW_C_IPV4);
		return verdict;
	}
	s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return verdict;

	/* The packet is parsed straight into per-CPU scratch, where the
	 * handlers read it. */
	p = &s->pkt;
	p->vlan = 0;
	p->ipv6 = 0;
	rc = kw_parse(data, data_end, p);
	if (p->vlan)
		KW_INC(c, KW_C_VLAN);
	if (rc != KW_OK) {
		kw_count_parse(c, ic, rc);
		return verdict;
	}
	KW_INC(c, KW_C_TCP);
	ic->c[KW_IF_TCP]++;
	KW_INC(c, p->ipv6 ? KW_C_IPV6 : KW_C_IPV4);
	/* The interface's SYNs and answers (the fast lane above only takes
	 * segments without SYN and RST). SYN+RST is neither. */
	switch (p->flags & (KW_TH_SYN | KW_TH_RST)) {
	case KW_TH_SYN:
		if (p->flags & KW_TH_ACK)
			ic->c[KW_IF_SYNACK]++;
		else
			ic->c[KW_IF_SYN]++;
		break;
	case KW_TH_RST:
		ic->c[KW_IF_RST]++;
		break;
	}

	/* Fast path: a plain ACK or data segment leaves here unless a watched
	 * handshake may be in flight or ACKs are to prove unseen answers. */
	if (!(p->flags & (KW_TH_SYN | KW_TH_RST)) && (!(p->flags & KW_TH_ACK) || (!watch_until && !CFG.ack_proof)))
		return verdict;

	/* Replay mode: every packet carries its capture time. */
	now = 0;
	if (CFG.replay) {
		now = kw_meta_time(ctx);
		if (!now) {
			KW_INC(c, KW_C_NO_META);
			return verdict;
		}
	}
	s->nwork = 0;
	s->st.n = 0;
	s->st.knock = 0;
	if (!(p->flags & (KW_TH_SYN | KW_TH_RST))) {
		if (watch_until && kw_g_watch_ack(ctx))
			return verdict;
		if (!CFG.ack_proof)
			return verdict;
		if (CFG.verify_csum && !kw_g_csum(ctx)) {
			KW_INC(c, KW_C_BAD_CSUM);
			return verdict;
		}
		now = now ? now : kw_coarse();
		kw_g_ack_proof(now);
	} else if ((p->flags & KW_TH_SYN) && (p->flags & KW_TH_RST)) {
		KW_INC(c, KW_C_BAD_FLAGS);
		return verdict;
	} else if ((p->flags & KW_TH_SYN) && !(p->flags & KW_TH_ACK)) {
		/* A SYN's checksum is not checked: one with a bad checksum never
		 * reached the host, which will not answer it, and it is kept as
		 * the attempt it is either way (a knock daemon that sniffs the
		 * wire, like knockd, counts it). */
		now = now ? now : kw_coarse();
		kw_g_syn(now);
	} else {
		/* An answer with a bad checksum is not the host's: ignored. */
		if (CFG.verify_csum && !kw_g_csum(ctx)) {
			KW_INC(c, KW_C_BAD_CSUM);
			return verdict;
		}
		if (p->flags & KW_TH_SYN) {
			now = now ? now : kw_precise();
			kw_g_synack(now);
		} else {
			now = now ? now : kw_coarse();
			kw_g_rst(now);
		}
	}
	kw_run_work(s, now);
	return verdict;
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
	if (args.which) {
		if (args.count > CFG.cand_mask + 1)
			args.count = CFG.cand_mask + 1;
		bpf_loop(args.count, kw_sweep_cands, &sc, 0);
	} else {
		if (args.count > CFG.pair_mask + 1)
			args.count = CFG.pair_mask + 1;
		bpf_loop(args.count, kw_sweep_pairs, &sc, 0);
	}
	return sc.found;
}
