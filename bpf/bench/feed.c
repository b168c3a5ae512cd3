//go:build ignore

/* feed.c — a packet source for the XDP benchmarks (loader/bench_test.go):
 * runs a flood through a target program without a syscall per packet.
 *
 * BPF_PROG_RUN with repeat runs one buffer many times and keeps what a run
 * writes into it. Each run of this program rewrites the buffer (an
 * untagged IPv4/TCP frame without options, 54 bytes, built by the test)
 * into the next packet of a random-source flood, with correct IP and TCP
 * checksums, and tail-calls the program in target[0] (knockwatch, the LRU
 * reference, or the empty program for the floor): `repeat` packets from
 * distinct sources back to back, as a NIC's NAPI batch would run them. The
 * packets are the ones the test's floodFrame builds for the same numbers,
 * so the batched and the one-call-per-packet rows see the same flood.
 *
 * Packet n of a flood:
 *   FEED_S0   the SYN of source n
 *   FEED_REJ  even n: the SYN of source n/2; odd n: the host's RST|ACK
 *             answering it (a closed port, Zeek REJ)
 *
 * feed_list does the same with any packets: run n copies frames[n] (set
 * by the test; shorter frames padded with zeros, which every parser here
 * ignores: lengths come from the IP header) into the buffer.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual MIT/GPL";

enum { FEED_S0 = 0, FEED_REJ = 1 };

struct feed_state {
	__u64 n;      /* the number of the next packet */
	__u32 mode;   /* FEED_S0 or FEED_REJ */
	__u32 victim; /* the flooded host, IPv4 in host byte order */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct feed_state);
} feed SEC(".maps");

#define FEED_FRAME 80 /* bytes of a frames entry: every benchmark frame fits */

struct feed_frame {
	__u8 b[FEED_FRAME];
};

/* frames: the packets feed_list runs, in order; max_entries is set by the
 * test. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct feed_frame);
} frames SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} target SEC(".maps");

/* feed_src: source number i's address, a bijection of i (floodFrame in
 * loader/bench_test.go computes the same). */
static __always_inline __u32 feed_src(__u32 i)
{
	__u32 x = i * 0x2c1b3c6du + 0x297a2d39u;

	x ^= x >> 15;
	x *= 0x297a2d39u;
	x ^= x >> 12;
	return x;
}

static __always_inline __u32 feed_fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return s;
}

SEC("xdp")
int feed_flood(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct tcphdr *th = (void *)(ip + 1);
	struct feed_state *st;
	__u32 zero = 0, i, src, sport, dport, seq, sum = 0;
	__u16 *w;
	__u64 n;

	if ((void *)(th + 1) > data_end)
		return XDP_ABORTED;
	st = bpf_map_lookup_elem(&feed, &zero);
	if (!st)
		return XDP_ABORTED;
	n = st->n++;
	i = st->mode == FEED_REJ ? (__u32)(n >> 1) : (__u32)n;
	src = feed_src(i);
	sport = 1024 + i % 60000;
	dport = 1 + ((i * 2654435761u) >> 16) % 65535;
	seq = i * 0x01000193u;
	if (st->mode == FEED_REJ && (n & 1)) {
		ip->saddr = bpf_htonl(st->victim);
		ip->daddr = bpf_htonl(src);
		th->source = bpf_htons(dport);
		th->dest = bpf_htons(sport);
		th->seq = 0;
		th->ack_seq = bpf_htonl(seq + 1);
		((__u8 *)th)[13] = 0x14; /* RST|ACK */
	} else {
		ip->saddr = bpf_htonl(src);
		ip->daddr = bpf_htonl(st->victim);
		th->source = bpf_htons(sport);
		th->dest = bpf_htons(dport);
		th->seq = bpf_htonl(seq);
		th->ack_seq = 0;
		((__u8 *)th)[13] = 0x02; /* SYN */
	}
	ip->check = 0;
	w = (__u16 *)ip;
#pragma unroll
	for (int k = 0; k < 10; k++)
		sum += w[k];
	ip->check = ~feed_fold(sum);
	/* TCP: the pseudo-header (addresses, protocol, length), then the
	 * 20-byte header. */
	th->check = 0;
	sum = (ip->saddr >> 16) + (ip->saddr & 0xffff) + (ip->daddr >> 16) + (ip->daddr & 0xffff) +
	      bpf_htons(IPPROTO_TCP) + bpf_htons(sizeof(*th));
	w = (__u16 *)th;
#pragma unroll
	for (int k = 0; k < 10; k++)
		sum += w[k];
	th->check = ~feed_fold(sum);
	bpf_tail_call(ctx, &target, 0);
	return XDP_ABORTED;
}

SEC("xdp")
int feed_list(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct feed_state *st;
	struct feed_frame *f;
	__u32 zero = 0, i;

	if (data + FEED_FRAME > data_end)
		return XDP_ABORTED;
	st = bpf_map_lookup_elem(&feed, &zero);
	if (!st)
		return XDP_ABORTED;
	i = (__u32)st->n++;
	f = bpf_map_lookup_elem(&frames, &i);
	if (!f)
		return XDP_ABORTED;
	__builtin_memcpy(data, f->b, FEED_FRAME);
	bpf_tail_call(ctx, &target, 0);
	return XDP_ABORTED;
}
