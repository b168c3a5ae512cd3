/* handshake.h — watched handshakes: from the answer that shows a port open
 * to the ACK that completes the connection.
 *
 * A handshake is watched when its pair is flagged (a HANDSHAKE record
 * follows, the first per port per knock) or when the port has no
 * completed handshake since it was last seen closed (the port state then
 * learns who completed one first: "someone else first" needs a completed
 * handshake, which a spoofed source cannot make). The ACK must ack the
 * SYN-ACK's seq + 1 (when the SYN-ACK was seen) and carry the SYN's
 * seq + 1, within CFG.handshake_timeout_ns of the SYN.
 */
#ifndef KW_HANDSHAKE_H
#define KW_HANDSHAKE_H

#include "helpers.h"
#include "maps.h"
#include "parsing.h"
#include "portstate.h"
#include "touch.h"

static __always_inline int kw_conn_eq(const struct kw_conn *a, const struct kw_conn *b)
{
	return a->sport == b->sport && a->dport == b->dport && kw_pair_eq(&a->pair, &b->pair);
}

static __always_inline __u32 kw_src_fp(const struct kw_addr *src)
{
	return kw_fp(kw_hash_addr(CFG.hash_seed, src));
}

/* kw_watch_start watches the handshake ev opened; snap is the port state
 * from before. A flagged pair's watch in flight is never overwritten by a
 * port's first-connection watch. */
static __always_inline void kw_watch_start(struct kw_counters *c, const struct kw_open_ev *ev,
					   const struct kw_port_snap *snap, __u64 now)
{
	__u32 idx = kw_hash_conn(&ev->conn) & CFG.watch_mask;
	struct kw_watch *w = bpf_map_lookup_elem(&watches, &idx);
	int started = 0;

	if (!w)
		return;
	bpf_spin_lock(&w->lock);
	if (w->state == 2 && !kw_after(now, w->syn_ts, CFG.handshake_timeout_ns) && !kw_conn_eq(&w->conn, &ev->conn)) {
		if (w->flagged && !ev->flagged)
			goto out; /* keep the flagged pair's watch */
		KW_INC(c, KW_C_WATCH_LOST);
	}
	w->state = 2;
	w->conn = ev->conn;
	w->syn_seq = ev->syn_seq;
	w->synack_seq = ev->synack_seq;
	w->has_synack = ev->has_synack;
	w->flagged = ev->flagged;
	w->why = ev->why;
	w->epoch = ev->epoch;
	w->syn_ts = ev->syn_ts;
	w->synack_ts = ev->synack_ts;
	w->port_last_closed = snap->last_closed;
	w->port_first_open = snap->first_open;
	w->port_last_open = snap->last_open;
	w->port_done = snap->done;
	w->port_done_fp = snap->done_fp;
	started = 1;
out:
	bpf_spin_unlock(&w->lock);
	if (!started)
		return;
	KW_INC(c, KW_C_WATCH_STARTED);
	{
		__u64 until = now + CFG.handshake_timeout_ns, cur = watch_until;

		if (kw_after(until, cur, 0))
			__sync_val_compare_and_swap(&watch_until, cur, until);
	}
}

/* kw_done_body reports a completed watched handshake (scratch.hs): the
 * port state learns its first completer, and a flagged pair's first
 * handshake to this port for its current knock becomes a HANDSHAKE record. */
static __always_inline int kw_done_body(__u32 flagged, __u32 src_fp, __u32 done_fp, __u32 why)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct handshake_rec *hs;
	struct kw_bucket *b;
	__u32 h, fp, cidx = 0;
	int first;

	if (!s || !c)
		return 0;
	hs = &s->hs;
	kw_port_done(c, &hs->conn.pair.dst, hs->conn.dport, hs->ack_ts, src_fp);
	hs->why = why | (flagged ? KW_HS_FLAGGED : 0);
	if (!flagged) {
		struct kw_addr host = hs->conn.pair.dst;

		if (!(why & KW_HS_SAMPLE))
			return 0;
		/* A clock sample: one per request. */
		bpf_map_delete_elem(&samples, &host);
		hs->type = KW_REC_HANDSHAKE;
		if (bpf_ringbuf_output(&events, hs, sizeof(*hs), 0)) {
			KW_INC(c, KW_C_RINGBUF_FULL);
			return 0;
		}
		KW_INC(c, KW_C_SAMPLES);
		return 0;
	}
	/* Only someone else's completed handshake counts. */
	if (hs->port_other_done && done_fp == src_fp)
		hs->port_other_done = 0;
	h = kw_hash_pair(&hs->conn.pair);
	fp = kw_fp(h);
	b = kw_bucket_of(h);
	if (!b)
		return 0;
	for (int w = 0; w < KW_WAYS; w++) {
		struct kw_slot *sl = &b->s[w];
		__u32 tg = sl->tag;

		if (tg && !(tg & KW_TAG_BUSY) && KW_TAG_FP(tg) == fp && KW_TAG_KIND(tg) == KW_K_MARK)
			cidx = sl->seq;
	}
	s->ev.conn = hs->conn;
	first = kw_g_handshake(h, cidx);
	if (first == 0) {
		KW_INC(c, KW_C_HANDSHAKE_REPEAT);
		return 0;
	}
	if (first > 0) {
		hs->epoch = s->epoch;
		hs->distinct = s->distinct;
		hs->attempted = s->attempted;
	}
	hs->type = KW_REC_HANDSHAKE;
	if (bpf_ringbuf_output(&events, hs, sizeof(*hs), 0)) {
		KW_INC(c, KW_C_RINGBUF_FULL);
		return 0;
	}
	KW_INC(c, KW_C_HANDSHAKES);
	return 0;
}

/* kw_pair_flagged: the pair's MARK carries a live flag. */
static __always_inline __u8 kw_pair_flagged(const struct kw_pair *pair, __u64 now)
{
	__u32 h = kw_hash_pair(pair), fp = kw_fp(h);
	struct kw_bucket *b = kw_bucket_of(h);
	__u8 flagged = 0;

	if (!b)
		return 0;
	for (int w = 0; w < KW_WAYS; w++) {
		struct kw_slot *sl = &b->s[w];
		__u32 tg = sl->tag;

		if (tg && !(tg & KW_TAG_BUSY) && KW_TAG_FP(tg) == fp && KW_TAG_KIND(tg) == KW_K_MARK)
			flagged |= kw_mark_flagged(sl, kw_ms32(now));
	}
	return flagged;
}

/* kw_step_opened: a SYN of scratch.oev.conn was answered (a SYN-ACK, or
 * the client's ACK proving one: proven). Port state, then the watch, or —
 * when the client's ACK proved it — the completion at once. */
static __always_inline int kw_step_opened(__u64 now, __u32 proven)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct kw_port_snap snap = {};
	struct kw_open_ev *ev;

	if (!s || !c)
		return 0;
	ev = &s->oev;
	KW_INC(c, KW_C_PORT_OPEN);
	/* The answer may have decided the pair's knock (kw_cand_due): its
	 * KNOCK went out in the EMIT queued before this step, and the MARK
	 * says so. */
	if (!ev->flagged)
		ev->flagged = kw_pair_flagged(&ev->conn.pair, now);
	/* A flag another sensor raised, a clock sample userspace asked for. */
	if (!ev->flagged && flags_in_n) {
		struct kw_pair pair = ev->conn.pair;
		__u64 *until = bpf_map_lookup_elem(&flags_in, &pair);

		if (until && !kw_after(now, *until, 0)) {
			ev->flagged = 1;
			ev->why |= KW_HS_REMOTE;
			KW_INC(c, KW_C_REMOTE_FLAG);
		}
	}
	if (!ev->flagged && samples_n) {
		struct kw_addr host = ev->conn.pair.dst;
		__u64 *until = bpf_map_lookup_elem(&samples, &host);

		if (until && !kw_after(now, *until, 0))
			ev->why |= KW_HS_SAMPLE;
	}
	kw_port_open(c, &ev->conn.pair.dst, ev->conn.dport, now, &snap);
	if (!ev->flagged && !(ev->why & KW_HS_SAMPLE) && !kw_port_wants_first(&snap))
		return 0;
	if (!proven) {
		kw_watch_start(c, ev, &snap, now);
		return 0;
	}
	__builtin_memset(&s->hs, 0, sizeof(s->hs));
	s->hs.conn = ev->conn;
	s->hs.syn_ts = ev->syn_ts;
	s->hs.ack_ts = now;
	s->hs.epoch = ev->epoch;
	s->hs.port_last_closed = snap.last_closed;
	s->hs.port_first_open = snap.first_open;
	s->hs.port_last_open = snap.last_open;
	s->hs.port_other_done = snap.done;
	kw_g_done(ev->flagged, kw_src_fp(&ev->conn.pair.src), snap.done_fp, ev->why);
	return 0;
}

/* kw_watch_ack_body: S -> D ACK (scratch.pkt) while a watched handshake
 * may be in flight. Returns 1 when the ACK belonged to a watched
 * connection. The clock is read only then. */
static __always_inline int kw_watch_ack_body(struct xdp_md *ctx)
{
	struct kw_scratch *s = kw_scratch();
	struct kw_counters *c = kw_stats();
	struct kw_packet *p;
	struct kw_conn conn = {};
	struct kw_watch *w;
	__u32 idx, done_fp = 0, why = 0;
	int done = 0, flagged = 0;
	__u64 now;

	if (!s || !c)
		return 0;
	p = &s->pkt;
	conn.pair.src = p->saddr;
	conn.pair.dst = p->daddr;
	conn.sport = p->sport;
	conn.dport = p->dport;
	idx = kw_hash_conn(&conn) & CFG.watch_mask;
	w = bpf_map_lookup_elem(&watches, &idx);
	if (!w || w->state != 2 || !kw_conn_eq(&w->conn, &conn))
		return 0;
	if (CFG.verify_csum && !kw_g_csum(ctx)) {
		KW_INC(c, KW_C_BAD_CSUM);
		return 1;
	}
	now = CFG.replay ? kw_meta_time(ctx) : kw_precise();
	__builtin_memset(&s->hs, 0, sizeof(s->hs));
	bpf_spin_lock(&w->lock);
	if (w->state == 2 && kw_conn_eq(&w->conn, &conn)) {
		if ((!w->has_synack || p->ack == w->synack_seq + 1) && p->seq == w->syn_seq + 1 &&
		    !kw_after(now, w->syn_ts, CFG.handshake_timeout_ns)) {
			s->hs.syn_ts = w->syn_ts;
			s->hs.synack_ts = w->synack_ts;
			s->hs.port_last_closed = w->port_last_closed;
			s->hs.port_first_open = w->port_first_open;
			s->hs.port_last_open = w->port_last_open;
			s->hs.port_other_done = w->port_done;
			s->hs.epoch = w->epoch;
			done_fp = w->port_done_fp;
			flagged = w->flagged;
			why = w->why;
			w->state = 3; /* one completion, even if the ACK is repeated */
			done = 1;
		} else {
			done = -1;
		}
	}
	bpf_spin_unlock(&w->lock);
	if (done < 0) {
		KW_INC(c, KW_C_HANDSHAKE_BAD_ACK);
		return 1;
	}
	if (!done)
		return 0;
	s->hs.conn = conn;
	s->hs.ack_ts = now;
	kw_g_done(flagged, kw_src_fp(&conn.pair.src), done_fp, why);
	return 1;
}

#endif
