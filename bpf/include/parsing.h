/* parsing.h — packet parser.
 *
 * Contract: kw_parse() reads the packet between data and data_end and either
 * fills *p with the TCP fields the state machine needs and returns KW_OK, or
 * returns the outcome that explains why it stopped (the caller counts it).
 * Every read is preceded by a bounds check against data_end; loops are
 * bounded (two VLAN tags, KW_MAX_EXT IPv6 extension headers). The parser
 * never writes to the packet.
 *
 * Accepted: Ethernet II; up to two 802.1Q / 802.1ad tags; IPv4 with any IHL
 * (first fragments are parsed, non-first fragments are KW_FRAGMENT); IPv6
 * with hop-by-hop, routing and destination-options headers (a fragment
 * header is KW_FRAGMENT, any other extension KW_UNKNOWN_EXT); TCP with any
 * data offset >= 5 (options are not read, only their length is checked).
 *
 * kw_csum_ok checks a parsed segment's TCP checksum (pseudo-header
 * included); the entry point calls it only for segments that change state
 * (SYN, SYN-ACK, RST, and ACKs a handshake watch or an unanswered SYN waits
 * for), as Zeek ignores segments with a bad checksum unless run with -C.
 */
#ifndef KW_PARSING_H
#define KW_PARSING_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "counters.h"

#define KW_MAX_VLAN 2
#define KW_MAX_EXT 4

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

enum kw_parse_outcome {
	KW_OK = 0,
	KW_NON_IP,
	KW_NON_TCP,
	KW_TRUNCATED,
	KW_FRAGMENT,
	KW_UNKNOWN_EXT,
	KW_BAD_HEADER,
};

/* TCP flag bits as in byte 13 of the TCP header. */
#define KW_TH_FIN 0x01
#define KW_TH_SYN 0x02
#define KW_TH_RST 0x04
#define KW_TH_ACK 0x10


struct vlan_hdr_kw {
	__be16 tci;
	__be16 proto;
};

static __always_inline void kw_map_v4(struct kw_addr *a, __be32 v4)
{
	__builtin_memset(a->b, 0, 10);
	a->b[10] = 0xff;
	a->b[11] = 0xff;
	__builtin_memcpy(&a->b[12], &v4, 4);
}

static __always_inline int kw_parse_tcp(void *data, void *l4, void *data_end, struct kw_packet *p)
{
	struct tcphdr *th = l4;

	if ((void *)(th + 1) > data_end)
		return KW_TRUNCATED;
	if (th->doff < 5)
		return KW_BAD_HEADER;
	if ((void *)th + th->doff * 4 > data_end)
		return KW_TRUNCATED;
	p->sport = bpf_ntohs(th->source);
	p->dport = bpf_ntohs(th->dest);
	p->seq = bpf_ntohl(th->seq);
	p->ack = bpf_ntohl(th->ack_seq);
	p->flags = ((__u8 *)th)[13];
	p->l4off = (__u16)(l4 - data);
	return KW_OK;
}

static __always_inline int kw_parse_ipv4(void *data, void *l3, void *data_end, struct kw_packet *p)
{
	struct iphdr *iph = l3;

	if ((void *)(iph + 1) > data_end)
		return KW_TRUNCATED;
	if (iph->version != 4 || iph->ihl < 5)
		return KW_BAD_HEADER;
	if ((void *)iph + iph->ihl * 4 > data_end)
		return KW_TRUNCATED;
	/* Non-first fragments carry no TCP header. */
	if (iph->frag_off & bpf_htons(0x1fff))
		return KW_FRAGMENT;
	if (iph->protocol != IPPROTO_TCP)
		return KW_NON_TCP;
	p->seglen = bpf_ntohs(iph->tot_len) - iph->ihl * 4;
	kw_map_v4(&p->saddr, iph->saddr);
	kw_map_v4(&p->daddr, iph->daddr);
	return kw_parse_tcp(data, (void *)iph + iph->ihl * 4, data_end, p);
}

static __always_inline int kw_parse_ipv6(void *data, void *l3, void *data_end, struct kw_packet *p)
{
	struct ipv6hdr *ip6 = l3;
	void *cur = ip6 + 1;
	__u8 next;

	if ((void *)(ip6 + 1) > data_end)
		return KW_TRUNCATED;
	if (ip6->version != 6)
		return KW_BAD_HEADER;
	next = ip6->nexthdr;
#pragma unroll
	for (int i = 0; i < KW_MAX_EXT; i++) {
		struct { __u8 next; __u8 len; } *ext = cur;

		switch (next) {
		case IPPROTO_TCP:
			goto tcp;
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
			if ((void *)(ext + 1) > data_end)
				return KW_TRUNCATED;
			next = ext->next;
			cur += (ext->len + 1) * 8;
			break;
		case IPPROTO_FRAGMENT:
			return KW_FRAGMENT;
		case IPPROTO_NONE:
		case IPPROTO_UDP:
		case IPPROTO_ICMPV6:
			return KW_NON_TCP;
		default:
			return KW_UNKNOWN_EXT;
		}
	}
	if (next != IPPROTO_TCP)
		return KW_UNKNOWN_EXT; /* more extension headers than we walk */
tcp:
	p->seglen = bpf_ntohs(ip6->payload_len) - (__u16)(cur - (void *)(ip6 + 1));
	__builtin_memcpy(&p->saddr, &ip6->saddr, 16);
	__builtin_memcpy(&p->daddr, &ip6->daddr, 16);
	p->ipv6 = 1;
	return kw_parse_tcp(data, cur, data_end, p);
}

static __always_inline int kw_parse(void *data, void *data_end, struct kw_packet *p)
{
	struct ethhdr *eth = data;
	void *cur = eth + 1;
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return KW_TRUNCATED;
	proto = eth->h_proto;
#pragma unroll
	for (int i = 0; i < KW_MAX_VLAN; i++) {
		struct vlan_hdr_kw *vh = cur;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end)
			return KW_TRUNCATED;
		proto = vh->proto;
		cur = vh + 1;
		p->vlan++;
	}
	if (proto == bpf_htons(ETH_P_IP))
		return kw_parse_ipv4(data, cur, data_end, p);
	if (proto == bpf_htons(ETH_P_IPV6))
		return kw_parse_ipv6(data, cur, data_end, p);
	return KW_NON_IP;
}

/* kw_peek_flags is the fast lane of the parser: for the shapes most
 * traffic has — untagged Ethernet, IPv4 without options (not a fragment)
 * or IPv6 with TCP as the next header, a TCP header that fits — it returns
 * the TCP flags byte (and sets *v6) without storing anything, so a plain
 * ACK or data segment can leave at once. Any other packet returns -1 and
 * goes through kw_parse, which decides and counts it; for the shapes
 * accepted here both reach the same outcome (KW_OK), so the counters are
 * the same either way. */
static __always_inline int kw_peek_flags(void *data, void *data_end, int *v6)
{
	struct ethhdr *eth = data;
	struct tcphdr *th;

	if ((void *)(eth + 1) > data_end)
		return -1;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = (void *)(eth + 1);

		if ((void *)(iph + 1) > data_end)
			return -1;
		if (*(__u8 *)iph != 0x45 || (iph->frag_off & bpf_htons(0x1fff)) || iph->protocol != IPPROTO_TCP)
			return -1;
		th = (void *)(iph + 1);
		*v6 = 0;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		if (ip6->version != 6 || ip6->nexthdr != IPPROTO_TCP)
			return -1;
		th = (void *)(ip6 + 1);
		*v6 = 1;
	} else {
		return -1;
	}
	if ((void *)(th + 1) > data_end || th->doff < 5 || (void *)th + th->doff * 4 > data_end)
		return -1;
	return ((__u8 *)th)[13];
}

#define KW_CSUM_MAX 1500 /* longer segments are not checked (counted as good) */

/* kw_csum_ok reports whether the TCP checksum of the segment kw_parse found
 * is right: the one's complement sum of the pseudo-header and the segment,
 * read as native 16-bit words (the sum is the same in either byte order),
 * folds to 0xffff. A segment that runs past the captured bytes or is longer
 * than KW_CSUM_MAX cannot be checked and passes. */
static __always_inline int kw_csum_ok(void *data, void *data_end, const struct kw_packet *p)
{
	__u32 len = p->seglen, off = 0, l4off = p->l4off & 0x1ff;
	__u64 sum = 0;
	void *l4;

	if (len < 20 || len > KW_CSUM_MAX || l4off != p->l4off)
		return 1;
	asm volatile("" : "+r"(l4off)); /* keep the mask: the verifier bounds the pointer by it */
	l4off &= 0x1ff;
	l4 = data + l4off;
	if (l4 + len > data_end)
		return 1;
	if (p->ipv6) {
		const __u32 *s = (const __u32 *)p->saddr.b, *d = (const __u32 *)p->daddr.b;

		sum += (__u64)s[0] + s[1] + s[2] + s[3] + d[0] + d[1] + d[2] + d[3];
		sum += bpf_htonl(len) + bpf_htonl(IPPROTO_TCP);
	} else {
		__u32 s4, d4;

		__builtin_memcpy(&s4, &p->saddr.b[12], 4);
		__builtin_memcpy(&d4, &p->daddr.b[12], 4);
		sum += (__u64)s4 + d4 + bpf_htons(IPPROTO_TCP) + bpf_htons((__u16)len);
	}
	for (int i = 0; i < KW_CSUM_MAX / 4; i++) {
		__u32 *w;

		if (off + 4 > len)
			break;
		w = l4 + (off & 0x7ff);
		if ((void *)(w + 1) > data_end)
			return 1;
		sum += *w;
		off += 4;
	}
	if (off + 2 <= len) {
		__u16 *w = l4 + (off & 0x7ff);

		if ((void *)(w + 1) > data_end)
			return 1;
		sum += *w;
		off += 2;
	}
	if (off < len) {
		__u8 *b = l4 + (off & 0x7ff);

		if ((void *)(b + 1) > data_end)
			return 1;
		sum += *b; /* the last byte pads a word with zero: its low byte in native order */
	}
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (sum & 0xffff) == 0xffff;
}

/* kw_count_parse counts why kw_parse stopped, globally and per interface. */
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

#endif
