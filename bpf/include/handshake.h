/* handshake.h — the ACK that completes a watched handshake of a flagged pair, and
 * the first-handshake-per-port report. */
#ifndef KW_HANDSHAKE_H
#define KW_HANDSHAKE_H

#include "helpers.h"
#include "maps.h"

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

#endif
