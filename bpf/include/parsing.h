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

struct kw_packet {
	struct kw_addr saddr;
	struct kw_addr daddr;
	__u16 sport; /* host byte order */
	__u16 dport;
	__u32 seq;   /* host byte order */
	__u32 ack;
	__u8 flags;  /* KW_TH_* */
	__u8 vlan;   /* number of VLAN tags seen */
	__u8 ipv6;
};

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

static __always_inline int kw_parse_tcp(void *l4, void *data_end, struct kw_packet *p)
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
	return KW_OK;
}

static __always_inline int kw_parse_ipv4(void *l3, void *data_end, struct kw_packet *p)
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
	kw_map_v4(&p->saddr, iph->saddr);
	kw_map_v4(&p->daddr, iph->daddr);
	return kw_parse_tcp((void *)iph + iph->ihl * 4, data_end, p);
}

static __always_inline int kw_parse_ipv6(void *l3, void *data_end, struct kw_packet *p)
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
	__builtin_memcpy(&p->saddr, &ip6->saddr, 16);
	__builtin_memcpy(&p->daddr, &ip6->daddr, 16);
	p->ipv6 = 1;
	return kw_parse_tcp(cur, data_end, p);
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
		return kw_parse_ipv4(cur, data_end, p);
	if (proto == bpf_htons(ETH_P_IPV6))
		return kw_parse_ipv6(cur, data_end, p);
	return KW_NON_IP;
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
