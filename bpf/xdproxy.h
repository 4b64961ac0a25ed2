/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Map layouts and constants shared by the XDP program (xdp.c) and the Go
 * loader (loader.go). bpf2go generates the Go mirrors of the structs named
 * with -type in gen.go; keep every layout free of implicit padding so that
 * the two sides cannot disagree.
 */
#ifndef XDPROXY_H
#define XDPROXY_H

#include <linux/types.h>

/* Sizes of the hash maps; the loader reports a full map as an error. */
#define MAX_LISTENERS    1024
#define MAX_OWNED_RANGES 256
#define MAX_NEIGH_ADDRS  256
#define MAX_PEERS        64
/* XSKMAP slots: one per NIC queue, indexed by rx_queue_index. */
#define MAX_QUEUES       64
/* cookie_flows: client legs known to the engine while SYN cookies are on (LRU). */
#define MAX_COOKIE_FLOWS 262144
/* cookie_keys: the secret of epoch e lives in slot e % COOKIE_KEY_SLOTS. */
#define COOKIE_KEY_SLOTS 4

/*
 * Addresses are 16 bytes in network order. IPv4 is written as the
 * IPv4-mapped IPv6 address ::ffff:a.b.c.d (RFC 4291 section 2.5.5.2), so one
 * key layout serves both families and an IPv4 key can never equal an IPv6
 * one that a packet could carry.
 */
struct addr16 {
	union {
		__u8 b[16];
		__be32 w[4]; /* 4-byte aligned stores on the BPF stack */
	};
};

/*
 * listeners: TCP to addr:port is a client leg. The port is in network byte
 * order, exactly as it sits in the TCP header. The wildcard addresses
 * ::ffff:0.0.0.0 (IPv4) and :: (IPv6) match any destination address of
 * their family; they are looked up only while SETTING_WILDCARD is set.
 */
struct listener_key {
	struct addr16 addr;
	__be16 port;
	__u16 pad; /* must be zero */
};

/*
 * owned_ranges: key is the address (struct addr16); TCP to that address
 * with a destination port in [lo, hi] is return traffic of a backend leg.
 * lo and hi are in host byte order, inclusive.
 */
struct owned_range {
	__u16 lo;
	__u16 hi;
};

/* settings: one entry (index 0). */
struct steer_settings {
	__u32 flags;
};

/* Steer nothing while clear: every packet passes to the kernel. */
#define SETTING_ENABLED  (1U << 0)
/* At least one wildcard listener exists: look it up after an exact miss. */
#define SETTING_WILDCARD (1U << 1)
/*
 * Steer ICMP too: echo requests to a neighbour address, and ICMP errors
 * (destination unreachable, packet too big, time exceeded, parameter
 * problem) that quote a TCP segment sent from a listener address:port or
 * an owned range, i.e. by the engine (path MTU discovery).
 */
#define SETTING_ICMP     (1U << 2)
/*
 * Answer SYNs to listeners with SYN cookies (XDP_TX) and let through only
 * the ACKs of flows in cookie_flows or carrying a valid cookie (syncookie.h).
 */
#define SETTING_COOKIES  (1U << 3)
/*
 * While SETTING_COOKIES is clear: record the flow of every SYN steered to a
 * listener in cookie_flows, so that turning cookies on (tcp.syn_cookies:
 * auto) does not cut the handshakes and connections that the engine made.
 */
#define SETTING_COOKIE_LEARN (1U << 4)

/* cookie_keys: the SipHash-2-4 key of one epoch's cookie secret. */
struct cookie_key {
	__u64 epoch;
	__u64 k0;
	__u64 k1;
	__u32 valid; /* 0: no secret in this slot */
	__u32 pad;
};

/*
 * syn_cookie (map): one entry (index 0); what the engine would put in its
 * cookie SYN-ACK (stack.CookieResponder) and how it times and keys it.
 */
struct cookie_settings {
	__u64 lifetime_ns;  /* the cookie secret's lifetime: epoch = CLOCK_BOOTTIME / this */
	__u64 ts_k0;        /* the key of the timestamp offsets (stack.Keys.Timestamp) */
	__u64 ts_k1;
	__u16 mss_table[8]; /* stack.CookieMSS */
	__u16 mss4;         /* our MSS option to an IPv4 client */
	__u16 mss6;         /* and to an IPv6 one */
	__u16 window;       /* the SYN-ACK's window field */
	__u8 wscale;        /* our window scale */
	__u8 pad;
};

/* cookie_flows key: a client leg, our end first; ports in network order. */
struct cookie_flow {
	struct addr16 local;
	struct addr16 remote;
	__be16 lport;
	__be16 rport;
};

/* cookie_flows value. */
struct cookie_flow_state {
	__u64 seen_ns;   /* CLOCK_BOOTTIME when its SYN (or valid cookie) was seen */
	__u32 confirmed; /* an ACK of it reached the engine */
	__u32 pad;
};

/*
 * With cookies on, the ACK of an unconfirmed flow passes for this long after
 * its SYN: the handshakes the engine had taken up when cookies came on.
 */
#define COOKIE_PENDING_NS (5ULL * 1000 * 1000 * 1000)
/*
 * Second chance: at least one peer node is listed in peers. Then an
 * IPv4-in-IPv4 (protocol 4) or IPv6-in-IPv6 (next header 41) packet from a
 * peer whose inner packet is TCP to a listener is decapsulated and steered
 * (redirect_second_chance): another node forwarded a segment of a
 * connection it does not hold (stack/secondchance.go).
 */
#define SETTING_SECOND_CHANCE (1U << 5)

/*
 * peers: key is a peer node's address (struct addr16), the outer source
 * of the packets it forwards; value unused, zero.
 *
 * A decapsulated frame carries SECOND_CHANCE_MAC as its Ethernet
 * destination (and the outer frame's source MAC, no VLAN tag): the mark by
 * which the engine knows a segment was forwarded already and must not be
 * forwarded again. Keep it equal to stack/wire.SecondChanceMAC.
 */
#define SECOND_CHANCE_MAC { 0x0e, 'x', 'd', 's', 'c', 0x00 }

/*
 * counters: one per-CPU entry (index 0). Every packet increments rx_packets
 * and exactly one of the others, except redirect_failed, which counts the
 * redirects (already counted by reason) whose queue had no socket, and
 * cookie_ack, which counts the listener redirects that a cookie let through.
 */
struct steer_counters {
	__u64 rx_packets;
	__u64 redirect_listener; /* TCP to a listener addr:port */
	__u64 redirect_owned;    /* TCP to an owned port range */
	__u64 redirect_arp;      /* ARP request/reply for a neighbour address */
	__u64 redirect_ndp;      /* NDP NS/NA for a neighbour address */
	__u64 redirect_icmp;     /* ICMP for the engine (SETTING_ICMP only) */
	__u64 redirect_second_chance; /* decapsulated: a peer forwarded it (SETTING_SECOND_CHANCE) */
	__u64 pass_not_ours;     /* passed to the kernel */
	__u64 pass_disabled;     /* passed because SETTING_ENABLED is clear */
	__u64 drop_malformed;    /* ours by address, but malformed */
	__u64 redirect_failed;   /* no XSK in xsks[rx_queue]: fell back to XDP_PASS */
	__u64 tx_syn_cookie;     /* a SYN to a listener answered with a cookie SYN-ACK (XDP_TX) */
	__u64 drop_bad_cookie;   /* an ACK to a listener of no known flow, with no valid cookie */
	__u64 cookie_ack;        /* of redirect_listener: ACKs whose cookie was valid */
};

#endif /* XDPROXY_H */
