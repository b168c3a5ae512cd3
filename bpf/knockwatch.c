//go:build ignore

/* knockwatch.c — the XDP sensor: closed-port touches, knock flags and first
 * handshakes of flagged sources, at line rate.
 *
 * The entry point parses (parsing.h), classifies the TCP packet and hands it
 * to one handler. Plain ACK/data packets leave after one global load unless
 * a watched handshake is in flight. See docs/ARCHITECTURE.md for the state
 * machine and bpf/include/maps.h for every map.
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
#include "sweep.h"

char __license[] SEC("license") = "Dual MIT/GPL";

/* Keep the record types in BTF so bpf2go can generate their Go twins. */
const struct handshake_rec *unused_handshake_rec __attribute__((unused));
const struct knock_rec *unused_knock_rec __attribute__((unused));
const struct kw_sweep_args *unused_sweep_args __attribute__((unused));

/* kw_on_syn: S -> D:dport SYN. Records it as pending in the pair slot and
 * ages the pair's earlier pending SYNs into S0 touches. */
static __noinline void kw_on_syn(struct kw_counters *c, struct kw_packet *p, __u64 now, struct kw_work *work)
{
	struct kw_pair pair = { .src = p->saddr, .dst = p->daddr };
	__u32 h = kw_hash_pair(&pair);
	__u32 idx = h & CFG.pair_slots_mask;
	struct pair_slot *slot = bpf_map_lookup_elem(&pair_slots, &idx);
	struct kw_found found[KW_PENDING] = {};
	struct kw_touch first = {};
	int same = -1, oldest = 0, nfound = 0;
	__u64 oldest_ts = ~0ULL;

	KW_INC(c, KW_C_SYN);
	if (!slot)
		return;
	bpf_spin_lock(&slot->lock);
	if (!kw_pair_eq(&slot->owner, &pair)) {
		int busy = slot->first_ts != 0;

		for (int i = 0; i < KW_PENDING; i++) {
			if (slot->pend[i].ts) {
				KW_INC(c, KW_C_PENDING_EVICTED);
				busy = 1;
			}
		}
		if (busy)
			KW_INC(c, KW_C_SLOT_TAKEOVER);
		slot->owner = pair;
		slot->first_ts = 0;
		__builtin_memset(slot->pend, 0, sizeof(slot->pend));
	}
	for (int i = 0; i < KW_PENDING; i++) {
		struct kw_pending *e = &slot->pend[i];

		if (!e->ts) {
			oldest_ts = 0;
			oldest = i;
			continue;
		}
		if (kw_after(now, e->ts, CFG.s0_timeout_ns)) {
			/* Unanswered past the timeout: an S0 touch. */
			found[i].ts = e->ts;
			found[i].port = e->dport;
			found[i].kind = KW_TOUCH_S0;
			found[i].tier = kw_tier1(slot, h, e->dport, KW_TOUCH_S0, e->ts, &first);
			nfound++;
			if (e->dport == p->dport) {
				same = i; /* a new attempt at the same port */
				e->ts = now;
				e->seq = p->seq;
				e->sport = p->sport;
			} else {
				e->ts = 0;
				oldest_ts = 0;
				oldest = i;
			}
			continue;
		}
		if (e->dport == p->dport) {
			/* Retransmission (or a new attempt) within the timeout:
			 * one touch; answers must ack the latest SYN. */
			same = i;
			e->seq = p->seq;
			e->sport = p->sport;
			KW_INC(c, KW_C_SYN_RETRANS);
			continue;
		}
		if (oldest_ts && e->ts < oldest_ts) {
			oldest_ts = e->ts;
			oldest = i;
		}
	}
	if (same < 0) {
		struct kw_pending *e = &slot->pend[oldest & (KW_PENDING - 1)];

		if (e->ts)
			KW_INC(c, KW_C_PENDING_EVICTED);
		e->ts = now;
		e->seq = p->seq;
		e->sport = p->sport;
		e->dport = p->dport;
	}
	bpf_spin_unlock(&slot->lock);

	if (!nfound)
		return;
	work->pair = pair;
	for (int i = 0, n = 0; i < KW_PENDING; i++) {
		struct kw_tier2_args *t;

		if (!found[i].ts)
			continue;
		kw_port_seen(c, &pair.dst, found[i].port, KW_PORT_CLOSED, found[i].ts, NULL, NULL);
		KW_INC(c, KW_C_TOUCH_S0);
		t = &work->t[n & (KW_PENDING - 1)];
		t->first = first;
		t->now = now;
		t->ts = found[i].ts;
		t->port = found[i].port;
		t->kind = KW_TOUCH_S0;
		t->tier = found[i].tier;
		work->n = ++n;
	}
}

/* kw_answer looks for the pending SYN that a packet from D:sport to
 * S:dport answers (ack == SYN seq + 1) and frees it. Returns the SYN's time,
 * 0 when nothing matches. On a match of an RST the touch's tier-1 step runs
 * under the same lock. */
static __always_inline __u64 kw_answer(struct pair_slot *slot, __u32 h, struct kw_packet *p, int rst,
				       struct kw_found *f, struct kw_touch *first, struct kw_pair *pair)
{
	__u64 syn_ts = 0;

	bpf_spin_lock(&slot->lock);
	if (kw_pair_eq(&slot->owner, pair)) {
		for (int i = 0; i < KW_PENDING; i++) {
			struct kw_pending *e = &slot->pend[i];

			if (!e->ts || e->dport != p->sport || e->sport != p->dport ||
			    p->ack != e->seq + 1)
				continue;
			syn_ts = e->ts;
			e->ts = 0;
			break;
		}
		if (syn_ts && rst) {
			f->ts = syn_ts;
			f->port = p->sport;
			f->kind = KW_TOUCH_REJ;
			f->tier = kw_tier1(slot, h, p->sport, KW_TOUCH_REJ, syn_ts, first);
		}
	}
	bpf_spin_unlock(&slot->lock);
	return syn_ts;
}

/* kw_on_rst: D:sport -> S RST. A REJ touch when it answers a pending SYN.
 * It needs no clock: the touch, the port's "last closed" and a flag it
 * raises all take the time of the SYN it answers. */
static __noinline void kw_on_rst(struct kw_counters *c, struct kw_packet *p, struct kw_work *work)
{
	struct kw_pair pair = { .src = p->daddr, .dst = p->saddr };
	struct kw_found f = {};
	struct kw_touch first = {};

	__u32 h = kw_hash_pair(&pair);
	__u32 idx = h & CFG.pair_slots_mask;
	struct pair_slot *slot = bpf_map_lookup_elem(&pair_slots, &idx);

	KW_INC(c, KW_C_RST);
	if (!slot)
		return;
	if (!kw_answer(slot, h, p, 1, &f, &first, &pair)) {
		KW_INC(c, KW_C_BACKSCATTER);
		return;
	}
	kw_port_seen(c, &pair.dst, f.port, KW_PORT_CLOSED, f.ts, NULL, NULL);
	KW_INC(c, KW_C_TOUCH_REJ);
	if (f.tier == KW_TIER_DONE)
		return;
	work->pair = pair;
	work->t[0].first = first;
	work->t[0].ts = f.ts;
	work->t[0].now = f.ts;
	work->t[0].port = f.port;
	work->t[0].kind = KW_TOUCH_REJ;
	work->t[0].tier = f.tier;
	work->n = 1;
}

/* kw_on_synack: D:sport -> S SYN-ACK answering a pending SYN. The port is
 * open. If (S, D) is flagged, the handshake is watched from here: the
 * SYN's seq and time come from its pending entry, and the port state is
 * snapshotted before this SYN-ACK updates it. */
static __noinline void kw_on_synack(struct kw_counters *c, struct kw_packet *p, __u64 now)
{
	struct kw_pair pair = { .src = p->daddr, .dst = p->saddr };
	struct kw_found f = {};
	struct kw_touch first = {};
	__u32 h = kw_hash_pair(&pair);
	__u32 idx = h & CFG.pair_slots_mask;
	struct pair_slot *slot = bpf_map_lookup_elem(&pair_slots, &idx);
	struct watch w = {};
	__u64 syn_ts;

	KW_INC(c, KW_C_SYNACK);
	if (!slot)
		return;
	syn_ts = kw_answer(slot, h, p, 0, &f, &first, &pair);
	if (!syn_ts) {
		KW_INC(c, KW_C_SYNACK_UNMATCHED);
		return;
	}
	KW_INC(c, KW_C_PORT_OPEN);
	if (!any_flagged || !bpf_map_lookup_elem(&flagged, &pair)) {
		kw_port_seen(c, &pair.dst, p->sport, KW_PORT_OPEN, now, NULL, NULL);
		return;
	}
	kw_port_seen(c, &pair.dst, p->sport, KW_PORT_OPEN, now, &w.port_last_closed, &w.port_last_open);
	{
		struct kw_conn conn = { .pair = pair, .sport = p->dport, .dport = p->sport };

		w.syn_seq = p->ack - 1;
		w.synack_seq = p->seq;
		w.syn_ts = syn_ts;
		w.synack_ts = now;
		w.state = 2;
		if (bpf_map_update_elem(&watch, &conn, &w, BPF_ANY)) {
			KW_INC(c, KW_C_MAP_INSERT_FAIL);
			return;
		}
	}
	KW_INC(c, KW_C_WATCH_STARTED);
	if (kw_after(now + CFG.handshake_timeout_ns, watch_until, 0))
		watch_until = now + CFG.handshake_timeout_ns;
}

/* kw_first_for_port marks port as reported for the flagged pair; returns 1
 * the first time, 0 after (or when the list is full). */
static __always_inline int kw_first_for_port(struct pair_slot *slot, struct flagged *fl, __u16 port)
{
	__u32 seen = 0, n;
	int first = 0;

	bpf_spin_lock(&slot->lock);
	n = fl->nreported;
	for (int i = 0; i < KW_REPORTED_PORTS; i++)
		seen |= kw_lt(i, n) & kw_eq16(fl->reported[i], port);
	if (!seen && n < KW_REPORTED_PORTS) {
		fl->reported[n & (KW_REPORTED_PORTS - 1)] = port;
		fl->nreported = n + 1;
		first = 1;
	}
	bpf_spin_unlock(&slot->lock);
	return first;
}

/* kw_on_ack: S -> D ACK while a watched handshake is in flight. Reports the
 * first completed handshake of a flagged pair to each port. The clock is
 * read only when the ACK belongs to a watched connection. */
static __noinline void kw_on_ack(struct xdp_md *ctx, struct kw_counters *c, struct kw_packet *p)
{
	struct kw_conn conn = {
		.pair = { .src = p->saddr, .dst = p->daddr },
		.sport = p->sport,
		.dport = p->dport,
	};
	struct handshake_rec hs = {};
	struct pair_slot *slot;
	struct candidate *cd;
	struct flagged *fl;
	struct watch *w;
	int done = 0;
	__u64 now;
	__u32 idx;

	if (!(p->flags & KW_TH_ACK))
		return;
	w = bpf_map_lookup_elem(&watch, &conn);
	if (!w || w->state != 2)
		return;
	now = CFG.replay ? kw_meta_time(ctx) : kw_clock();
	idx = kw_hash_pair(&conn.pair) & CFG.pair_slots_mask;
	slot = bpf_map_lookup_elem(&pair_slots, &idx);
	if (!slot || !now)
		return;
	bpf_spin_lock(&slot->lock);
	if (w->state == 2) {
		if (p->ack == w->synack_seq + 1 && p->seq == w->syn_seq + 1 &&
		    !kw_after(now, w->syn_ts, CFG.handshake_timeout_ns)) {
			hs.syn_ts = w->syn_ts;
			hs.synack_ts = w->synack_ts;
			hs.port_last_closed = w->port_last_closed;
			hs.port_last_open = w->port_last_open;
			w->state = 3; /* one completion, even if the ACK is repeated */
			done = 1;
		} else {
			done = -1;
		}
	}
	bpf_spin_unlock(&slot->lock);
	if (done < 0) {
		KW_INC(c, KW_C_HANDSHAKE_BAD_ACK);
		return;
	}
	if (!done)
		return;
	fl = bpf_map_lookup_elem(&flagged, &conn.pair);
	if (!fl)
		return;
	if (!kw_first_for_port(slot, fl, conn.dport)) {
		KW_INC(c, KW_C_HANDSHAKE_REPEAT);
		return;
	}
	hs.type = KW_REC_HANDSHAKE;
	hs.conn = conn;
	hs.ack_ts = now;
	hs.distinct = fl->distinct;
	cd = bpf_map_lookup_elem(&candidates, &conn.pair);
	if (cd)
		hs.distinct = cd->distinct;
	if (bpf_ringbuf_output(&events, &hs, sizeof(hs), 0)) {
		KW_INC(c, KW_C_RINGBUF_FULL);
		return;
	}
	KW_INC(c, KW_C_HANDSHAKES);
}

static __always_inline void kw_count_parse(struct kw_counters *c, struct kw_if_counters *ic, int rc)
{
	switch (rc) {
	case KW_NON_IP:
		KW_INC(c, KW_C_NON_IP);
		ic->c[KW_IF_NON_IP]++;
		break;
	case KW_NON_TCP:
		KW_INC(c, KW_C_NON_TCP);
		ic->c[KW_IF_NON_TCP]++;
		break;
	case KW_TRUNCATED:
		KW_INC(c, KW_C_TRUNCATED);
		ic->c[KW_IF_TRUNCATED]++;
		break;
	case KW_FRAGMENT:
		KW_INC(c, KW_C_FRAGMENT);
		ic->c[KW_IF_FRAGMENT]++;
		break;
	case KW_UNKNOWN_EXT:
		KW_INC(c, KW_C_UNKNOWN_EXT);
		ic->c[KW_IF_UNKNOWN_EXT]++;
		break;
	default:
		KW_INC(c, KW_C_BAD_HEADER);
		ic->c[KW_IF_BAD_HEADER]++;
		break;
	}
}

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
