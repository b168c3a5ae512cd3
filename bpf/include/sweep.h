/* sweep.h — userspace's cheap aging of pending SYNs.
 *
 * The packet path ages a pair's pending SYNs into S0 touches when the same
 * pair sends another SYN. A source that knocks and then goes quiet would
 * leave its last touches pending; userspace runs knockwatch_sweep with
 * BPF_PROG_RUN (every second in live mode, on capture time in replay) over
 * a range of pair slots. It shares every step with the packet path.
 *
 * It also closes the watched-ACK gate (watch_until) once it has expired.
 *
 * Input: 16 bytes of XDP metadata, struct kw_sweep_args; the packet data
 * is ignored (BPF_PROG_RUN needs at least an Ethernet header's worth).
 * Returns the number of S0 touches found.
 */
#ifndef KW_SWEEP_H
#define KW_SWEEP_H

#include "helpers.h"
#include "maps.h"
#include "portstate.h"
#include "touch.h"

struct kw_sweep_args {
	__u64 now;   /* time to age against (ns, same clock as the packets) */
	__u32 start; /* first slot */
	__u32 count; /* slots to visit */
};

struct kw_sweep_ctx {
	__u64 now;
	__u32 start;
	__u32 found;
};

static long kw_sweep_slot(__u32 i, void *data)
{
	struct kw_sweep_ctx *sc = data;
	__u32 idx = (sc->start + i) & CFG.pair_slots_mask, zero = 0;
	struct pair_slot *slot = bpf_map_lookup_elem(&pair_slots, &idx);
	struct kw_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	struct kw_counters *c = bpf_map_lookup_elem(&stats, &zero);
	struct kw_touch first = {};
	__u32 h;

	if (!slot || !s || !c)
		return 1;
	/* Unlocked peek: most slots have nothing pending. */
	if (!slot->pend[0].ts && !slot->pend[1].ts && !slot->pend[2].ts && !slot->pend[3].ts)
		return 0;
	/* Touches are staged in per-CPU scratch, not on the stack: this
	 * callback, the program and kw_tier2 share 512 bytes. */
	bpf_spin_lock(&slot->lock);
	h = kw_hash_pair(&slot->owner);
	s->work.pair = slot->owner;
	for (int j = 0; j < KW_PENDING; j++) {
		struct kw_pending *e = &slot->pend[j];
		struct kw_tier2_args *t = &s->work.t[j];

		t->ts = 0;
		if (!e->ts || !kw_after(sc->now, e->ts, CFG.s0_timeout_ns))
			continue;
		t->ts = e->ts;
		t->now = sc->now;
		t->port = e->dport;
		t->kind = KW_TOUCH_S0;
		t->tier = kw_tier1(slot, h, e->dport, KW_TOUCH_S0, e->ts, &first);
		e->ts = 0;
	}
	bpf_spin_unlock(&slot->lock);
	for (int j = 0; j < KW_PENDING; j++) {
		struct kw_tier2_args *t = &s->work.t[j];

		if (!t->ts)
			continue;
		sc->found++;
		t->first = first;
		kw_port_seen(c, &s->work.pair.dst, t->port, KW_PORT_CLOSED, t->ts, NULL, NULL);
		KW_INC(c, KW_C_TOUCH_S0);
		kw_tier2(&s->work.pair, t);
	}
	return 0;
}

#endif
