//go:build ignore

/* lruref.c — the reference knockwatch's XDP benchmarks are measured against
 * (loader/bench_test.go, docs/benchmarks/xdp.md; issue 11): the obvious
 * design of a knock detector's kernel state, one BPF LRU hash keyed by
 * (source, host) with a SYN counter and the last port tried, sized like
 * knockwatch's pending tier (sensor.Config.PairSlots entries).
 *
 *   SYN      look the pair up; count the SYN and keep its port, or insert
 *            the pair (an LRU insert into a full map evicts)
 *   RST|ACK  look the answered pair up; count a REJ when it answers the
 *            pair's last port
 *   other    nothing after the parse
 *
 * It parses with knockwatch's own parser (bpf/include/parsing.h), so the
 * two pay the same parse, and returns the same verdict (XDP_DROP). It
 * keeps no counters, reads no clock and verifies no checksum: knockwatch
 * does all three, so every ratio against this program is conservative.
 * Test support only: nothing of it ships (the bpf2go output is a _test
 * file of package loader).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "types.h"
#include "parsing.h"

char __license[] SEC("license") = "Dual MIT/GPL";

struct lru_val {
	__u32 syns;      /* SYNs of the pair */
	__u32 rejs;      /* RSTs that answered the pair's last port */
	__u16 last_port; /* the port of the pair's latest SYN */
	__u16 _pad;
};

/* lru: (S, D) -> what the pair did. max_entries is set by the benchmark
 * (the pending tier's entries). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 20);
	__type(key, struct kw_pair);
	__type(value, struct lru_val);
} lru SEC(".maps");

SEC("xdp")
int lruref(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct kw_packet p;
	struct kw_pair key;
	struct lru_val *v;

	p.vlan = 0;
	p.ipv6 = 0;
	if (kw_parse(data, data_end, &p) != KW_OK)
		return XDP_DROP;
	if ((p.flags & (KW_TH_SYN | KW_TH_RST | KW_TH_ACK)) == KW_TH_SYN) {
		key.src = p.saddr;
		key.dst = p.daddr;
		v = bpf_map_lookup_elem(&lru, &key);
		if (v) {
			__sync_fetch_and_add(&v->syns, 1);
			v->last_port = p.dport;
		} else {
			struct lru_val nv = { .syns = 1, .last_port = p.dport };

			bpf_map_update_elem(&lru, &key, &nv, BPF_NOEXIST);
		}
	} else if ((p.flags & (KW_TH_SYN | KW_TH_RST | KW_TH_ACK)) == (KW_TH_RST | KW_TH_ACK)) {
		key.src = p.daddr;
		key.dst = p.saddr;
		v = bpf_map_lookup_elem(&lru, &key);
		if (v && v->last_port == p.sport)
			__sync_fetch_and_add(&v->rejs, 1);
	}
	return XDP_DROP;
}
