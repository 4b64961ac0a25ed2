//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * xdproxy_steer: the XDP program that sends the packets xdproxy owns to the
 * AF_XDP socket of the queue they arrived on, and everything else to the
 * kernel. See doc.go for what "owns" means, the maps and the known limits.
 *
 * Return codes: XDP_REDIRECT (or the XDP_PASS fallback when the queue has no
 * socket) for ours, XDP_PASS for not ours, XDP_DROP for packets that would
 * be ours but are malformed, XDP_ABORTED only where a map lookup that cannot
 * fail did.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xdproxy.h"
#include "parse.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_LISTENERS);
	__type(key, struct listener_key);
	__type(value, __u32); /* unused, zero */
} listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_OWNED_RANGES);
	__type(key, struct addr16);
	__type(value, struct owned_range);
} owned_ranges SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_NEIGH_ADDRS);
	__type(key, struct addr16);
	__type(value, __u32); /* unused, zero */
} arp_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PEERS);
	__type(key, struct addr16);
	__type(value, __u32); /* unused, zero */
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct steer_settings);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct steer_counters);
} counters SEC(".maps");

/* What the classification decided; the caller counts and acts on it. */
enum steer {
	NOT_OURS = 0,
	MALFORMED,
	STEER_LISTENER,
	STEER_OWNED,
	STEER_ARP,
	STEER_NDP,
	STEER_ICMP,
	STEER_SECOND_CHANCE4, /* decapsulate, then steer the inner IPv4 packet */
	STEER_SECOND_CHANCE6, /* the same for IPv6 in IPv6 */
	ENCAP4,               /* IPv4 in IPv4: classify looks inside */
	ENCAP6,               /* IPv6 in IPv6: classify looks inside */
};

static __always_inline void addr_set_v4(struct addr16 *a, __be32 v4)
{
	a->w[0] = 0;
	a->w[1] = 0;
	a->w[2] = bpf_htonl(0x0000ffff);
	a->w[3] = v4;
}

/*
 * lookup_tcp says whether key, one of our ends of a TCP flow (the
 * destination of a segment we receive, the source of one an ICMP error
 * quotes), is a listener or lies in an owned range.
 */
static __always_inline enum steer lookup_tcp(struct listener_key *key, int v4, __u32 flags)
{
	struct owned_range *r;

	if (bpf_map_lookup_elem(&listeners, key))
		return STEER_LISTENER;

	r = bpf_map_lookup_elem(&owned_ranges, &key->addr);
	if (r) {
		__u16 port = bpf_ntohs(key->port);

		if (port >= r->lo && port <= r->hi)
			return STEER_OWNED;
	}

	if (flags & SETTING_WILDCARD) {
		struct listener_key any = { .port = key->port };

		if (v4)
			any.addr.w[2] = bpf_htonl(0x0000ffff);
		if (bpf_map_lookup_elem(&listeners, &any))
			return STEER_LISTENER;
	}
	return NOT_OURS;
}

/*
 * check_tcp validates the TCP header of a segment already found to be ours:
 * l4_len is the TCP length (header and payload) that the IP header claims,
 * and the caller has checked that the frame holds all of it.
 */
static __always_inline enum steer check_tcp(struct tcphdr *th, void *end, __u32 l4_len,
					    enum steer ours)
{
	__u32 doff;

	if ((void *)(th + 1) > end)
		return MALFORMED;
	doff = th->doff * 4;
	if (doff < sizeof(*th) || doff > l4_len)
		return MALFORMED;
	return ours;
}

/*
 * steer_quoted_peer decides for an ICMP error that quotes an IP-in-IP
 * packet to dst: ours if dst is a second chance peer (we forwarded it, and
 * the peer's host cannot take it: the engine passes the peer over).
 */
static __always_inline enum steer steer_quoted_peer(struct addr16 *dst, __u32 flags)
{
	if (!(flags & SETTING_SECOND_CHANCE) || !bpf_map_lookup_elem(&peers, dst))
		return NOT_OURS;
	return STEER_ICMP;
}

/*
 * steer_quoted4 decides for an ICMP error by the segment it quotes (RFC 792:
 * the IP header and at least 8 bytes): ours if we sent it, from a listener
 * address:port or an owned port, or forwarded it to a peer.
 */
static __always_inline enum steer steer_quoted4(struct cursor *c, __u32 flags)
{
	struct listener_key key = {};
	struct iphdr *in = cursor_pull(c, sizeof(*in));
	__be16 *ports;
	__u32 ihl;

	if (!in || in->version != 4)
		return NOT_OURS;
	if (in->protocol == IPPROTO_IPIP) {
		addr_set_v4(&key.addr, in->daddr);
		return steer_quoted_peer(&key.addr, flags);
	}
	if (in->protocol != IPPROTO_TCP)
		return NOT_OURS;
	ihl = in->ihl * 4;
	if (ihl < sizeof(*in))
		return NOT_OURS;
	ports = (void *)in + ihl;
	if ((void *)(ports + 2) > c->end)
		return NOT_OURS;
	addr_set_v4(&key.addr, in->saddr);
	key.port = ports[0];
	return lookup_tcp(&key, 1, flags) == NOT_OURS ? NOT_OURS : STEER_ICMP;
}

/* steer_icmp4: c is past the IPv4 header and its options. */
static __always_inline enum steer steer_icmp4(struct cursor *c, struct iphdr *ip, __u32 flags)
{
	struct icmp_head *h;
	struct addr16 dst;

	if (!(flags & SETTING_ICMP))
		return NOT_OURS;
	h = cursor_pull(c, sizeof(*h));
	if (!h)
		return NOT_OURS;
	switch (h->type) {
	case ICMP4_ECHO_REQUEST:
		addr_set_v4(&dst, ip->daddr);
		return bpf_map_lookup_elem(&arp_addrs, &dst) ? STEER_ICMP : NOT_OURS;
	case ICMP4_DEST_UNREACH:
	case ICMP4_TIME_EXCEEDED:
	case ICMP4_PARAMETER_PROB:
		return steer_quoted4(c, flags);
	default:
		return NOT_OURS;
	}
}

static __always_inline enum steer steer_ipv4(struct cursor *c, __u32 flags)
{
	struct listener_key key = {};
	struct iphdr *ip = cursor_pull(c, sizeof(*ip));
	struct tcphdr *th;
	enum steer ours;
	__u32 ihl, tot_len;

	if (!ip || ip->version != 4)
		return NOT_OURS;
	if (ip->protocol == IPPROTO_IPIP)
		return (flags & SETTING_SECOND_CHANCE) ? ENCAP4 : NOT_OURS;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_ICMP)
		return NOT_OURS;
	/* Fragments, the first one included, are the kernel's to reassemble. */
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return NOT_OURS;
	/* With ihl < 5 the kernel drops it as a header error; let it count it. */
	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return NOT_OURS;

	/* Options are skipped. */
	th = (void *)ip + ihl;
	if (ip->protocol == IPPROTO_ICMP) {
		c->pos = th;
		return steer_icmp4(c, ip, flags);
	}

	/* The ports decide whether the segment is ours. */
	if ((void *)th + 4 > c->end)
		return NOT_OURS;
	addr_set_v4(&key.addr, ip->daddr);
	key.port = th->dest;
	ours = lookup_tcp(&key, 1, flags);
	if (ours == NOT_OURS)
		return NOT_OURS;

	tot_len = bpf_ntohs(ip->tot_len);
	if (tot_len < ihl + sizeof(*th))
		return MALFORMED;
	if ((void *)ip + tot_len > c->end)
		return MALFORMED;
	return check_tcp(th, c->end, tot_len - ihl, ours);
}

/* steer_ndp: c is past the ICMPv6 header of an NS or NA. */
static __always_inline enum steer steer_ndp(struct cursor *c, struct ipv6hdr *ip6,
					    struct icmp_head *h)
{
	struct addr16 *target = cursor_pull(c, sizeof(*target));
	__u32 payload_len;

	if (!target || !bpf_map_lookup_elem(&arp_addrs, target))
		return NOT_OURS;

	/* RFC 4861 sections 7.1.1 and 7.1.2: the receiver must discard these. */
	if (h->code != 0 || ip6->hop_limit != 255)
		return MALFORMED;
	payload_len = bpf_ntohs(ip6->payload_len);
	if (payload_len < sizeof(*h) + sizeof(*target) ||
	    (void *)(ip6 + 1) + payload_len > c->end)
		return MALFORMED;
	return STEER_NDP;
}

/* steer_quoted6 is steer_quoted4 for ICMPv6 errors (RFC 4443 section 2.4). */
static __always_inline enum steer steer_quoted6(struct cursor *c, __u32 flags)
{
	struct listener_key key = {};
	struct ipv6hdr *in = cursor_pull(c, sizeof(*in));
	__be16 *ports;

	if (!in || in->version != 6)
		return NOT_OURS;
	if (in->nexthdr == IPPROTO_IPV6) {
		__builtin_memcpy(&key.addr, &in->daddr, sizeof(key.addr));
		return steer_quoted_peer(&key.addr, flags);
	}
	if (in->nexthdr != IPPROTO_TCP)
		return NOT_OURS;
	ports = cursor_pull(c, 4);
	if (!ports)
		return NOT_OURS;
	__builtin_memcpy(&key.addr, &in->saddr, sizeof(key.addr));
	key.port = ports[0];
	return lookup_tcp(&key, 0, flags) == NOT_OURS ? NOT_OURS : STEER_ICMP;
}

/* steer_icmp6: c is past the IPv6 header, whose next header is ICMPv6. */
static __always_inline enum steer steer_icmp6(struct cursor *c, struct ipv6hdr *ip6, __u32 flags)
{
	struct icmp_head *h = cursor_pull(c, sizeof(*h));

	if (!h)
		return NOT_OURS;
	if (h->type == NDP_NEIGHBOR_SOLICIT || h->type == NDP_NEIGHBOR_ADVERT)
		return steer_ndp(c, ip6, h);
	if (!(flags & SETTING_ICMP))
		return NOT_OURS;
	switch (h->type) {
	case ICMP6_ECHO_REQUEST:
		return bpf_map_lookup_elem(&arp_addrs, &ip6->daddr) ? STEER_ICMP : NOT_OURS;
	case ICMP6_DEST_UNREACH:
	case ICMP6_PACKET_TOO_BIG:
	case ICMP6_TIME_EXCEEDED:
	case ICMP6_PARAMETER_PROB:
		return steer_quoted6(c, flags);
	default:
		return NOT_OURS;
	}
}

static __always_inline enum steer steer_ipv6(struct cursor *c, __u32 flags)
{
	struct listener_key key = {};
	struct ipv6hdr *ip6 = cursor_pull(c, sizeof(*ip6));
	struct tcphdr *th;
	enum steer ours;
	__u32 payload_len;

	if (!ip6 || ip6->version != 6)
		return NOT_OURS;
	if (ip6->nexthdr == IPPROTO_ICMPV6)
		return steer_icmp6(c, ip6, flags);
	if (ip6->nexthdr == IPPROTO_IPV6)
		return (flags & SETTING_SECOND_CHANCE) ? ENCAP6 : NOT_OURS;
	/* Extension headers (and so fragments) are not walked: the kernel's. */
	if (ip6->nexthdr != IPPROTO_TCP)
		return NOT_OURS;

	th = c->pos;
	if ((void *)th + 4 > c->end)
		return NOT_OURS;
	__builtin_memcpy(&key.addr, &ip6->daddr, sizeof(key.addr));
	key.port = th->dest;
	ours = lookup_tcp(&key, 0, flags);
	if (ours == NOT_OURS)
		return NOT_OURS;

	payload_len = bpf_ntohs(ip6->payload_len);
	if (payload_len < sizeof(*th))
		return MALFORMED;
	if ((void *)(ip6 + 1) + payload_len > c->end)
		return MALFORMED;
	return check_tcp(th, c->end, payload_len, ours);
}

static __always_inline enum steer steer_arp(struct cursor *c)
{
	struct arp_ether_ipv4 *arp = cursor_pull(c, sizeof(*arp));
	struct addr16 target;
	__be32 tpa;

	if (!arp)
		return NOT_OURS;
	if (arp->htype != bpf_htons(ARP_HTYPE_ETHER) || arp->ptype != bpf_htons(ETH_P_IP) ||
	    arp->hlen != ETH_ALEN || arp->plen != 4)
		return NOT_OURS;
	if (arp->op != bpf_htons(ARP_OP_REQUEST) && arp->op != bpf_htons(ARP_OP_REPLY))
		return NOT_OURS;
	__builtin_memcpy(&tpa, arp->tpa, sizeof(tpa));
	addr_set_v4(&target, tpa);
	if (!bpf_map_lookup_elem(&arp_addrs, &target))
		return NOT_OURS;
	return STEER_ARP;
}

/*
 * inner_verdict: what a packet a peer forwarded becomes. Only segments to
 * a listener are forwarded (stack/secondchance.go); anything else inside a
 * tunnel from a peer is the kernel's.
 */
static __always_inline enum steer inner_verdict(enum steer inner, enum steer ours)
{
	if (inner == STEER_LISTENER)
		return ours;
	if (inner == MALFORMED)
		return MALFORMED;
	return NOT_OURS;
}

/*
 * steer_encap4: outer is an IPv4 header whose protocol is IPv4 (RFC 2003),
 * c is past its first 20 bytes. Ours only from a peer, without options or
 * fragmentation (a peer's engine sends neither), with an inner IPv4 TCP
 * segment to a listener that fills the outer packet exactly.
 */
static __always_inline enum steer steer_encap4(struct cursor *c, struct iphdr *outer, __u32 flags)
{
	struct addr16 src;
	struct iphdr *in;

	if (outer->ihl != 5 || (outer->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return NOT_OURS;
	addr_set_v4(&src, outer->saddr);
	if (!bpf_map_lookup_elem(&peers, &src))
		return NOT_OURS;
	in = c->pos;
	if ((void *)(in + 1) > c->end)
		return MALFORMED;
	if (bpf_ntohs(outer->tot_len) != sizeof(*outer) + bpf_ntohs(in->tot_len))
		return MALFORMED;
	return inner_verdict(steer_ipv4(c, flags), STEER_SECOND_CHANCE4);
}

/* steer_encap6 is steer_encap4 for IPv6 in IPv6 (RFC 2473). */
static __always_inline enum steer steer_encap6(struct cursor *c, struct ipv6hdr *outer, __u32 flags)
{
	struct ipv6hdr *in;

	if (!bpf_map_lookup_elem(&peers, &outer->saddr))
		return NOT_OURS;
	in = c->pos;
	if ((void *)(in + 1) > c->end)
		return MALFORMED;
	if (bpf_ntohs(outer->payload_len) != sizeof(*in) + bpf_ntohs(in->payload_len))
		return MALFORMED;
	return inner_verdict(steer_ipv6(c, flags), STEER_SECOND_CHANCE6);
}

/*
 * classify decides for one frame. For a packet to decapsulate it sets
 * *strip to the bytes to take off the front so that a fresh Ethernet header
 * lands right before the inner IP header.
 */
static __always_inline enum steer classify(struct xdp_md *ctx, __u32 flags, __u32 *strip)
{
	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	void *l3;
	enum steer s;

	switch (parse_ethernet(&c)) {
	case bpf_htons(ETH_P_IP):
		l3 = c.pos;
		s = steer_ipv4(&c, flags);
		if (s != ENCAP4)
			return s;
		s = steer_encap4(&c, l3, flags);
		*strip = (__u32)(l3 - (void *)(long)ctx->data) + sizeof(struct iphdr) - sizeof(struct ethhdr);
		return s;
	case bpf_htons(ETH_P_IPV6):
		l3 = c.pos;
		s = steer_ipv6(&c, flags);
		if (s != ENCAP6)
			return s;
		s = steer_encap6(&c, l3, flags);
		*strip = (__u32)(l3 - (void *)(long)ctx->data) + sizeof(struct ipv6hdr) - sizeof(struct ethhdr);
		return s;
	case bpf_htons(ETH_P_ARP):
		return steer_arp(&c);
	default:
		return NOT_OURS;
	}
}

/*
 * decapsulate takes the Ethernet header, VLAN tags and outer IP header
 * (strip bytes, less a new Ethernet header) off the front and writes an
 * Ethernet header in front of the inner packet: the old source MAC,
 * SECOND_CHANCE_MAC as destination (the engine's "forwarded already"
 * mark), EtherType proto. Tags are not kept: the engine never sends them.
 */
static __always_inline int decapsulate(struct xdp_md *ctx, __u32 strip, __be16 proto)
{
	static const __u8 mark[ETH_ALEN] = SECOND_CHANCE_MAC;
	struct ethhdr *eth = (void *)(long)ctx->data;
	__u8 src[ETH_ALEN];

	if ((void *)(eth + 1) > (void *)(long)ctx->data_end)
		return -1;
	__builtin_memcpy(src, eth->h_source, ETH_ALEN);
	if (bpf_xdp_adjust_head(ctx, (int)strip))
		return -1;
	eth = (void *)(long)ctx->data;
	if ((void *)(eth + 1) > (void *)(long)ctx->data_end)
		return -1;
	__builtin_memcpy(eth->h_dest, mark, ETH_ALEN);
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
	eth->h_proto = proto;
	return 0;
}

SEC("xdp")
int xdproxy_steer(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u32 strip = 0;
	enum steer verdict;
	struct steer_counters *cnt = bpf_map_lookup_elem(&counters, &zero);
	struct steer_settings *set = bpf_map_lookup_elem(&settings, &zero);
	long action;

	/* Index 0 of an array map always exists. */
	if (!cnt || !set)
		return XDP_ABORTED;
	cnt->rx_packets++;
	if (!(set->flags & SETTING_ENABLED)) {
		cnt->pass_disabled++;
		return XDP_PASS;
	}

	verdict = classify(ctx, set->flags, &strip);
	switch (verdict) {
	case NOT_OURS:
		cnt->pass_not_ours++;
		return XDP_PASS;
	case MALFORMED:
		cnt->drop_malformed++;
		return XDP_DROP;
	case STEER_LISTENER:
		cnt->redirect_listener++;
		break;
	case STEER_OWNED:
		cnt->redirect_owned++;
		break;
	case STEER_ARP:
		cnt->redirect_arp++;
		break;
	case STEER_NDP:
		cnt->redirect_ndp++;
		break;
	case STEER_ICMP:
		cnt->redirect_icmp++;
		break;
	case STEER_SECOND_CHANCE4:
	case STEER_SECOND_CHANCE6:
		if (decapsulate(ctx, strip, verdict == STEER_SECOND_CHANCE4 ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6))) {
			cnt->drop_malformed++;
			return XDP_DROP;
		}
		cnt->redirect_second_chance++;
		break;
	default:
		return XDP_ABORTED;
	}

	/* The flags' low bits are the action when xsks has no socket there. */
	action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	if (action != XDP_REDIRECT)
		cnt->redirect_failed++;
	return action;
}

char __license[] SEC("license") = "Dual MIT/GPL";
