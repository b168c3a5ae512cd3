/* syn.h — a client's SYN: pending in its pair slot, earlier pending SYNs aged into S0
 * touches. */
#ifndef KW_SYN_H
#define KW_SYN_H

#include "helpers.h"
#include "maps.h"
#include "portstate.h"
#include "touch.h"

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

#endif
