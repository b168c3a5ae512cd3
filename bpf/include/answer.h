/* answer.h — the server's answer to a pending SYN: an RST is a REJ touch, a
 * SYN-ACK shows the port open and starts the watch of a flagged pair's handshake. */
#ifndef KW_ANSWER_H
#define KW_ANSWER_H

#include "helpers.h"
#include "maps.h"
#include "portstate.h"
#include "touch.h"

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

#endif
