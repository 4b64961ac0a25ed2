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
#include "syncookie.h"

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

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, COOKIE_KEY_SLOTS);
	__type(key, __u32);
	__type(value, struct cookie_key);
} cookie_keys SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cookie_settings);
} syn_cookie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_COOKIE_FLOWS);
	__type(key, struct cookie_flow);
	__type(value, struct cookie_flow_state);
} cookie_flows SEC(".maps");

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

/* Where a segment to a listener sits in the frame, for the cookie code. */
struct tcp_at {
	__u32 l3; /* offset of the IP header */
	__u32 l4; /* offset of the TCP header */
	__u32 v4;
};

/*
 * Masks over the offsets: an IP header starts at most 14 + 4 * VLAN_MAX_DEPTH
 * bytes in, a TCP header at most 60 bytes after that.
 */
#define L3_OFF_MASK 0x1f
#define L4_OFF_MASK 0x7f

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

static __always_inline enum steer steer_ipv4(struct cursor *c, __u32 flags, struct tcp_at *at)
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
	if (!cursor_holds(c, ip, tot_len))
		return MALFORMED;
	at->l3 = (void *)ip - c->start;
	at->l4 = (void *)th - c->start;
	at->v4 = 1;
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

static __always_inline enum steer steer_ipv6(struct cursor *c, __u32 flags, struct tcp_at *at)
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
	if (!cursor_holds(c, ip6 + 1, payload_len))
		return MALFORMED;
	at->l3 = (void *)ip6 - c->start;
	at->l4 = (void *)th - c->start;
	at->v4 = 0;
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
static __always_inline enum steer steer_encap4(struct cursor *c, struct iphdr *outer, __u32 flags,
						 struct tcp_at *at)
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
	return inner_verdict(steer_ipv4(c, flags, at), STEER_SECOND_CHANCE4);
}

/* steer_encap6 is steer_encap4 for IPv6 in IPv6 (RFC 2473). */
static __always_inline enum steer steer_encap6(struct cursor *c, struct ipv6hdr *outer, __u32 flags,
						 struct tcp_at *at)
{
	struct ipv6hdr *in;

	if (!bpf_map_lookup_elem(&peers, &outer->saddr))
		return NOT_OURS;
	in = c->pos;
	if ((void *)(in + 1) > c->end)
		return MALFORMED;
	if (bpf_ntohs(outer->payload_len) != sizeof(*in) + bpf_ntohs(in->payload_len))
		return MALFORMED;
	return inner_verdict(steer_ipv6(c, flags, at), STEER_SECOND_CHANCE6);
}

/*
 * classify decides for one frame; for a TCP segment it notes where the
 * TCP header is in *at (the cookie code's). For a packet to decapsulate it sets
 * *strip to the bytes to take off the front so that a fresh Ethernet header
 * lands right before the inner IP header.
 */
static __always_inline enum steer classify(struct xdp_md *ctx, __u32 flags, struct tcp_at *at, __u32 *strip)
{
	struct cursor c = {
		.start = (void *)(long)ctx->data,
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
		.len = bpf_xdp_get_buff_len(ctx),
	};
	void *l3;
	enum steer s;

	switch (parse_ethernet(&c)) {
	case bpf_htons(ETH_P_IP):
		l3 = c.pos;
		s = steer_ipv4(&c, flags, at);
		if (s != ENCAP4)
			return s;
		s = steer_encap4(&c, l3, flags, at);
		*strip = (__u32)(l3 - (void *)(long)ctx->data) + sizeof(struct iphdr) - sizeof(struct ethhdr);
		return s;
	case bpf_htons(ETH_P_IPV6):
		l3 = c.pos;
		s = steer_ipv6(&c, flags, at);
		if (s != ENCAP6)
			return s;
		s = steer_encap6(&c, l3, flags, at);
		*strip = (__u32)(l3 - (void *)(long)ctx->data) + sizeof(struct ipv6hdr) - sizeof(struct ethhdr);
		return s;
	case bpf_htons(ETH_P_ARP):
		return steer_arp(&c);
	default:
		return NOT_OURS;
	}
}

/* What the cookie code decided for a segment to a listener. */
enum cookie_act {
	CK_STEER = 0,  /* to the engine, as any segment to a listener */
	CK_STEER_VALID, /* to the engine: an ACK whose cookie is valid */
	CK_TX,          /* answered: the frame is now our SYN-ACK */
	CK_DROP,        /* an ACK of no known flow without a valid cookie */
	CK_ABORT,       /* the frame changed under us: cannot happen */
};

/* flow_of reads the client leg's tuple of the segment at at. */
static __always_inline int flow_of(void *data, void *end, const struct tcp_at *at,
				   struct cookie_flow *f, struct tcphdr **thp)
{
	/*
	 * classify set them below 32 and 128; the masks tell the verifier so
	 * (a comparison the compiler may fold away).
	 */
	__u32 l3 = at->l3 & L3_OFF_MASK, l4 = at->l4 & L4_OFF_MASK;
	struct tcphdr *th;

	th = data + l4;
	if ((void *)(th + 1) > end)
		return 0;
	if (at->v4) {
		struct iphdr *ip = data + l3;

		if ((void *)(ip + 1) > end)
			return 0;
		addr_set_v4(&f->local, ip->daddr);
		addr_set_v4(&f->remote, ip->saddr);
	} else {
		struct ipv6hdr *ip6 = data + l3;

		if ((void *)(ip6 + 1) > end)
			return 0;
		__builtin_memcpy(&f->local, &ip6->daddr, sizeof(f->local));
		__builtin_memcpy(&f->remote, &ip6->saddr, sizeof(f->remote));
	}
	f->lport = th->dest;
	f->rport = th->source;
	*thp = th;
	return 1;
}

/*
 * synack_tcp writes the TCP header and options of the cookie SYN-ACK into
 * w (zeroed, 40 bytes) as the engine's sendCookie would, and returns its
 * length: MSS alone without timestamps; with them SACK-permitted (or two
 * NOPs) and timestamps, then window scale if the SYN offered it (the
 * layout of wire.TCPOptions.Encode).
 */
static __always_inline __u32 synack_tcp(__u32 *w, const struct cookie_settings *cs,
					const struct cookie_flow *f, const struct syn_opts *o,
					__u32 cookie, __u32 client_isn, __u32 tsval, __u16 mss)
{
	__u8 *b = (__u8 *)w;
	__u32 len = 24;

	__builtin_memcpy(b, &f->lport, 2);
	__builtin_memcpy(b + 2, &f->rport, 2);
	w[1] = bpf_htonl(cookie);
	w[2] = bpf_htonl(client_isn + 1);
	b[13] = 0x12; /* SYN|ACK */
	b[14] = cs->window >> 8;
	b[15] = cs->window & 0xff;
	b[20] = TCPOPT_MSS;
	b[21] = 4;
	b[22] = mss >> 8;
	b[23] = mss & 0xff;
	if (o->has_ts) {
		if (o->sack_ok) {
			b[24] = TCPOPT_SACK_PERM;
			b[25] = 2;
		} else {
			b[24] = TCPOPT_NOP;
			b[25] = TCPOPT_NOP;
		}
		b[26] = TCPOPT_TIMESTAMPS;
		b[27] = 10;
		w[7] = bpf_htonl(tsval);
		w[8] = o->tsval; /* TSecr: the SYN's TSval, still in network order */
		len = 36;
		if (o->has_wscale) {
			b[36] = TCPOPT_NOP;
			b[37] = TCPOPT_WSCALE;
			b[38] = 3;
			b[39] = cs->wscale;
			len = 40;
		}
	}
	b[12] = (len / 4) << 4;
	return len;
}

/*
 * answer_syn turns the SYN at at into our cookie SYN-ACK, in place, for
 * XDP_TX: MACs swapped, VLAN tags kept, IP and TCP headers rewritten, the
 * payload (if any) cut. CK_STEER leaves the SYN to the engine (IPv4
 * options, no secret for now's epoch, a frame that cannot be resized).
 */
static __always_inline enum cookie_act answer_syn(struct xdp_md *ctx, const struct tcp_at *at,
						  const struct cookie_flow *f, struct tcphdr *th)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u32 zero = 0, isn, cookie, tcp_len, ip_len, l3, tsval = 0, w[10] = {};
	struct cookie_settings *cs = bpf_map_lookup_elem(&syn_cookie, &zero);
	struct opt_walk ow = {};
	struct syn_opts *o = &ow.o;
	struct cookie_key *k;
	struct ethhdr *eth;
	__u64 now, epoch, sum;
	__u16 peer_mss, mss;
	__u32 doff;
	void *tp;
	__u8 mac[ETH_ALEN];

	if (!cs || !cs->lifetime_ns)
		return CK_STEER;
	if (at->v4 && at->l4 - at->l3 != sizeof(struct iphdr))
		return CK_STEER;
	doff = th->doff * 4; /* check_tcp: 20 <= doff <= the segment */
	ow.len = (doff - sizeof(*th)) & 0x3f;
	if (ow.len > sizeof(ow.buf))
		return CK_STEER;
	if (ow.len > 0) {
		if (bpf_xdp_load_bytes(ctx, (at->l4 & L4_OFF_MASK) + sizeof(*th), ow.buf, ow.len))
			return CK_STEER;
		bpf_loop(sizeof(ow.buf), opt_step, &ow, 0);
	}
	now = bpf_ktime_get_boot_ns();
	epoch = now / cs->lifetime_ns;
	k = cookie_key_of(&cookie_keys, epoch);
	if (!k)
		return CK_STEER;

	/* The engine's sendCookie, field by field. */
	isn = bpf_ntohl(th->seq);
	peer_mss = o->mss ? o->mss : (at->v4 ? 536 : 1220); /* defaultMSS */
	cookie = (__u32)(epoch & 0xff) << COOKIE_MAC_BITS |
		 ((cookie_mac(k, f, isn) + mss_index(cs, peer_mss)) & COOKIE_MAC_MASK);
	if (o->has_ts)
		tsval = cookie_tsval((__u32)(now / NSEC_PER_MSEC) + ts_offset(cs, f), o);
	mss = at->v4 ? cs->mss4 : cs->mss6;
	tcp_len = synack_tcp(w, cs, f, o, cookie, isn, tsval, mss);

	ip_len = at->v4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
	l3 = at->l3 & L3_OFF_MASK;
	/* The whole frame's length: a SYN's payload may reach into fragments. */
	if (bpf_xdp_adjust_tail(ctx, (int)(l3 + ip_len + tcp_len) - (int)bpf_xdp_get_buff_len(ctx)))
		return CK_STEER;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;

	eth = data;
	if ((void *)(eth + 1) > end)
		return CK_ABORT;
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);

	if (at->v4) {
		struct iphdr *ip = data + l3;
		__u32 iw[5] = {};
		struct iphdr *h = (struct iphdr *)iw;

		if ((void *)(ip + 1) > end)
			return CK_ABORT;
		h->version = 4;
		h->ihl = 5;
		h->tot_len = bpf_htons(sizeof(*h) + tcp_len);
		h->frag_off = bpf_htons(0x4000); /* DF, ID 0: as the engine sends */
		h->ttl = 64;
		h->protocol = IPPROTO_TCP;
		h->saddr = f->local.w[3];
		h->daddr = f->remote.w[3];
		h->check = csum_fold(csum_words(iw, 5));
		__builtin_memcpy(ip, iw, sizeof(iw));
		sum = (__u64)f->local.w[3] + f->remote.w[3] + bpf_htons(IPPROTO_TCP) + bpf_htons(tcp_len);
		tp = ip + 1;
	} else {
		struct ipv6hdr *ip6 = data + l3;

		if ((void *)(ip6 + 1) > end)
			return CK_ABORT;
		*(__be32 *)ip6 = bpf_htonl(6U << 28); /* traffic class and flow label 0 */
		ip6->payload_len = bpf_htons(tcp_len);
		ip6->nexthdr = IPPROTO_TCP;
		ip6->hop_limit = 64;
		__builtin_memcpy(&ip6->saddr, &f->local, sizeof(f->local));
		__builtin_memcpy(&ip6->daddr, &f->remote, sizeof(f->remote));
		sum = csum_words(f->local.w, 4) + csum_words(f->remote.w, 4) +
		      bpf_htonl(IPPROTO_TCP) + bpf_htonl(tcp_len);
		tp = ip6 + 1;
	}
	sum += csum_words(w, 10);
	((__u16 *)w)[8] = csum_fold(sum);

	switch (tcp_len) {
	case 24:
		if (tp + 24 > end)
			return CK_ABORT;
		__builtin_memcpy(tp, w, 24);
		break;
	case 36:
		if (tp + 36 > end)
			return CK_ABORT;
		__builtin_memcpy(tp, w, 36);
		break;
	default:
		if (tp + 40 > end)
			return CK_ABORT;
		__builtin_memcpy(tp, w, 40);
		break;
	}
	return CK_TX;
}

/* flow_note records f in cookie_flows as seen at now, confirmed or not. */
static __always_inline void flow_note(const struct cookie_flow *f, __u64 now, __u32 confirmed)
{
	struct cookie_flow_state st = { .seen_ns = now, .confirmed = confirmed };

	bpf_map_update_elem(&cookie_flows, f, &st, BPF_ANY);
}

/*
 * cookie_listener applies SETTING_COOKIES and SETTING_COOKIE_LEARN to a
 * segment steered to a listener. With cookies on, SYNs are answered here
 * and an ACK (no SYN, no RST) reaches the engine only if its flow is known
 * — confirmed (an ACK of it reached the engine), or a handshake the engine
 * took up less than COOKIE_PENDING_NS ago — or its cookie is valid under
 * the current or the previous secret, as the engine's cookieACK checks it.
 * Learning (cookies off) records the flow of every SYN, unconfirmed, and
 * confirms it at its first ACK: a flood's spoofed SYNs from before cookies
 * came on never get confirmed, so their ACKs do not pass for long. Every
 * other segment goes to the engine as before.
 */
static __always_inline enum cookie_act cookie_listener(struct xdp_md *ctx, __u32 flags,
						       const struct tcp_at *at)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct cookie_flow f = {};
	struct cookie_flow_state *st;
	struct cookie_settings *cs;
	struct tcphdr *th;
	__u32 zero = 0, isn, cookie;
	__u64 now, epoch;

	if (!flow_of(data, end, at, &f, &th))
		return CK_STEER;
	if (th->rst)
		return CK_STEER;
	if (th->syn) {
		if (th->ack || th->fin)
			return CK_STEER;
		if (flags & SETTING_COOKIES) {
			enum cookie_act act = answer_syn(ctx, at, &f, th);

			/*
			 * Left to the engine, which may answer from its SYN queue
			 * (no cookie): its handshake's ACK must pass.
			 */
			if (act == CK_STEER)
				flow_note(&f, bpf_ktime_get_boot_ns(), 0);
			return act;
		}
		if (flags & SETTING_COOKIE_LEARN)
			flow_note(&f, bpf_ktime_get_boot_ns(), 0);
		return CK_STEER;
	}
	if (!th->ack)
		return CK_STEER;
	st = bpf_map_lookup_elem(&cookie_flows, &f);
	if (!(flags & SETTING_COOKIES)) {
		if (st && !st->confirmed)
			st->confirmed = 1;
		return CK_STEER;
	}
	now = bpf_ktime_get_boot_ns();
	if (st) {
		if (st->confirmed)
			return CK_STEER;
		if (now - st->seen_ns < COOKIE_PENDING_NS) {
			st->confirmed = 1;
			return CK_STEER;
		}
	}

	cs = bpf_map_lookup_elem(&syn_cookie, &zero);
	if (!cs || !cs->lifetime_ns)
		return CK_STEER;
	epoch = now / cs->lifetime_ns;
	isn = bpf_ntohl(th->seq) - 1;
	cookie = bpf_ntohl(th->ack_seq) - 1;
	if (cookie_valid(&cookie_keys, epoch, &f, isn, cookie) ||
	    (epoch > 0 && cookie_valid(&cookie_keys, epoch - 1, &f, isn, cookie))) {
		flow_note(&f, now, 1);
		return CK_STEER_VALID;
	}
	return CK_DROP;
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

/*
 * xdp.frags (BPF_F_XDP_HAS_FRAGS): the program takes multi-buffer frames, so
 * it attaches to links whose MTU exceeds a page (jumbo frames, veth at 9000)
 * and redirects them whole to sockets bound with XDP_USE_SG. It reads only
 * the linear part (data..data_end): every header it parses lies there; a
 * frame whose headers do not is judged on what the linear part holds, as
 * any short frame is. bpf_xdp_load_bytes and bpf_xdp_adjust_tail work
 * across fragments.
 */
SEC("xdp.frags")
int xdproxy_steer(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u32 strip = 0;
	enum steer verdict;
	struct steer_counters *cnt = bpf_map_lookup_elem(&counters, &zero);
	struct steer_settings *set = bpf_map_lookup_elem(&settings, &zero);
	struct tcp_at at = {};
	long action;

	/* Index 0 of an array map always exists. */
	if (!cnt || !set)
		return XDP_ABORTED;
	cnt->rx_packets++;
	if (!(set->flags & SETTING_ENABLED)) {
		cnt->pass_disabled++;
		return XDP_PASS;
	}

	verdict = classify(ctx, set->flags, &at, &strip);
	switch (verdict) {
	case NOT_OURS:
		cnt->pass_not_ours++;
		return XDP_PASS;
	case MALFORMED:
		cnt->drop_malformed++;
		return XDP_DROP;
	case STEER_LISTENER:
		if (set->flags & (SETTING_COOKIES | SETTING_COOKIE_LEARN)) {
			switch (cookie_listener(ctx, set->flags, &at)) {
			case CK_TX:
				cnt->tx_syn_cookie++;
				return XDP_TX;
			case CK_DROP:
				cnt->drop_bad_cookie++;
				return XDP_DROP;
			case CK_ABORT:
				return XDP_ABORTED;
			case CK_STEER_VALID:
				cnt->cookie_ack++;
				break;
			default:
				break;
			}
		}
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
