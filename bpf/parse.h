/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Header parsing for xdp.c. Every access goes through cursor_pull (or an
 * explicit comparison against the end of the packet) before it is read, so
 * the verifier sees a bounds check for each header.
 */
#ifndef XDPROXY_PARSE_H
#define XDPROXY_PARSE_H

#include <linux/types.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* At most this many 802.1Q / 802.1ad tags are skipped (QinQ). */
#define VLAN_MAX_DEPTH 2

/* IPv4 fragment field bits (the kernel's, not in the uapi headers). */
#define IP_MF     0x2000
#define IP_OFFSET 0x1fff

/* ICMPv4 types (RFC 792). */
#define ICMP4_DEST_UNREACH     3
#define ICMP4_ECHO_REQUEST     8
#define ICMP4_TIME_EXCEEDED    11
#define ICMP4_PARAMETER_PROB   12

/* ICMPv6 types (RFC 4443) and those of RFC 4861 sections 4.3 and 4.4. */
#define ICMP6_DEST_UNREACH     1
#define ICMP6_PACKET_TOO_BIG   2
#define ICMP6_TIME_EXCEEDED    3
#define ICMP6_PARAMETER_PROB   4
#define ICMP6_ECHO_REQUEST     128
#define NDP_NEIGHBOR_SOLICIT   135
#define NDP_NEIGHBOR_ADVERT    136

/* ARP over Ethernet (RFC 826). */
#define ARP_HTYPE_ETHER 1
#define ARP_OP_REQUEST  1
#define ARP_OP_REPLY    2

struct cursor {
	void *start; /* the frame's first byte */
	void *pos;
	void *end;   /* the end of the linear part: every header read lies before it */
	__u32 len;   /* the whole frame's length, fragments of a multi-buffer frame included */
};

/*
 * cursor_holds reports whether the frame, fragments included, holds len
 * bytes from p on: how a length that the IP header claims is checked (a
 * jumbo frame's payload runs past the linear part into its fragments).
 */
static __always_inline int cursor_holds(const struct cursor *c, void *p, __u32 len)
{
	return (__u64)(p - c->start) + len <= c->len;
}

/*
 * cursor_pull returns a pointer to the next len bytes and advances past
 * them, or returns NULL (leaving the cursor alone) when fewer remain.
 */
static __always_inline void *cursor_pull(struct cursor *c, __u32 len)
{
	void *p = c->pos;

	if (p + len > c->end)
		return NULL;
	c->pos = p + len;
	return p;
}

/* The uapi headers have no 802.1Q tag; the kernel's lives in linux/if_vlan.h. */
struct vlan_tag {
	__be16 tci;
	__be16 encapsulated_proto;
};

static __always_inline int is_vlan_proto(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

/*
 * parse_ethernet skips the Ethernet header and up to VLAN_MAX_DEPTH tags,
 * and returns the EtherType of what follows in network order, or 0 when the
 * frame is truncated or carries more tags than that.
 */
static __always_inline __be16 parse_ethernet(struct cursor *c)
{
	struct ethhdr *eth = cursor_pull(c, sizeof(*eth));
	__be16 proto;

	if (!eth)
		return 0;
	proto = eth->h_proto;

#pragma unroll
	for (int i = 0; i < VLAN_MAX_DEPTH; i++) {
		struct vlan_tag *tag;

		if (!is_vlan_proto(proto))
			break;
		tag = cursor_pull(c, sizeof(*tag));
		if (!tag)
			return 0;
		proto = tag->encapsulated_proto;
	}
	if (is_vlan_proto(proto))
		return 0;
	return proto;
}

/* ARP body for Ethernet hardware and IPv4 protocol addresses. */
struct arp_ether_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__u8 spa[4];
	__u8 tha[ETH_ALEN];
	__u8 tpa[4];
} __attribute__((packed));

/* The first 8 bytes of every ICMP and ICMPv6 message. */
struct icmp_head {
	__u8 type;
	__u8 code;
	__be16 checksum;
	__be32 rest;
};

#endif /* XDPROXY_PARSE_H */
