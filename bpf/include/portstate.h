/* portstate.h — per (D, port) "last seen closed / last seen open".
 *
 * A direct-mapped table: a colliding (D, port) takes the slot over (counted
 * as KW_C_PORT_SLOT_TAKEOVER). Timestamps are rewritten only when older than
 * CFG.port_refresh_ns, so a busy open port costs a read, not a write, per
 * SYN-ACK. */
#ifndef KW_PORTSTATE_H
#define KW_PORTSTATE_H

#include "helpers.h"
#include "maps.h"

enum { KW_PORT_CLOSED = 0, KW_PORT_OPEN = 1 };

/* kw_port_seen records that host:port was seen closed or open at ts. When
 * prev_closed/prev_open are not NULL they receive the values from before
 * this update (0 = never seen). */
static __always_inline void kw_port_seen(struct kw_counters *c, const struct kw_addr *host,
					 __u16 port, int open, __u64 ts,
					 __u64 *prev_closed, __u64 *prev_open)
{
	__u32 idx = kw_hash_port(host, port) & CFG.port_slots_mask;
	struct port_slot *ps = bpf_map_lookup_elem(&port_slots, &idx);
	__u64 closed = 0, opened = 0, cur;

	if (!ps)
		return;
	/* Unlocked fast path: the slot is ours and fresh enough, and nobody
	 * asked for a consistent snapshot. A torn read here only sends us to
	 * the locked path. */
	if (!prev_closed && ps->port == port && kw_addr_eq(&ps->host, host)) {
		cur = open ? ps->last_open : ps->last_closed;
		if (cur && !kw_after(ts, cur, CFG.port_refresh_ns))
			return;
	}
	bpf_spin_lock(&ps->lock);
	if (ps->port != port || !kw_addr_eq(&ps->host, host)) {
		if (ps->last_closed || ps->last_open)
			KW_INC(c, KW_C_PORT_SLOT_TAKEOVER);
		ps->host = *host;
		ps->port = port;
		ps->last_closed = 0;
		ps->last_open = 0;
	}
	closed = ps->last_closed;
	opened = ps->last_open;
	if (open) {
		if (kw_after(ts, opened, CFG.port_refresh_ns) || !opened)
			ps->last_open = ts;
	} else {
		if (kw_after(ts, closed, CFG.port_refresh_ns) || !closed)
			ps->last_closed = ts;
	}
	bpf_spin_unlock(&ps->lock);
	if (prev_closed)
		*prev_closed = closed;
	if (prev_open)
		*prev_open = opened;
}

#endif
