/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * SYN cookies answered in XDP. The cookie is the engine's (stack/syncookie.go,
 * after Linux):
 *
 *	cookie = epoch<<24 | (SipHash-2-4(secret[epoch], tuple, client ISN) + mssIndex) mod 2^24
 *
 * over the 44 bytes local addr16, remote addr16, local port, remote port (both
 * big-endian), client ISN as a big-endian uint64; window scale and
 * SACK-permitted ride in the low six bits of our TSval when the SYN carried
 * timestamps. The secrets of the epochs around now are put in cookie_keys by
 * the loader from the engine's own keys, and the timestamp offset key in
 * the syn_cookie map, so the engine takes the connection from the returning ACK
 * as if it had sent the SYN-ACK itself (it checks the cookie again). Fixture
 * tests (cookie_test.go) hold this code to the engine's.
 */
#ifndef XDPROXY_SYNCOOKIE_H
#define XDPROXY_SYNCOOKIE_H

#include <linux/types.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xdproxy.h"

#define COOKIE_MAC_BITS  24
#define COOKIE_MAC_MASK  ((1U << COOKIE_MAC_BITS) - 1)
#define COOKIE_TS_BITS   6
#define COOKIE_TS_MASK   ((1U << COOKIE_TS_BITS) - 1)
#define COOKIE_NO_WSCALE 0xf
#define COOKIE_SACK_BIT  (1U << 4)
#define TCP_MAX_WSCALE   14
#define NSEC_PER_MSEC    1000000ULL

/* TCP option kinds and lengths (RFC 9293, 7323, 2018). */
#define TCPOPT_EOL        0
#define TCPOPT_NOP        1
#define TCPOPT_MSS        2
#define TCPOPT_WSCALE     3
#define TCPOPT_SACK_PERM  4
#define TCPOPT_TIMESTAMPS 8

/* --- SipHash-2-4 (Aumasson and Bernstein), over 64-bit words --- */

struct siphash {
	__u64 v0, v1, v2, v3;
};

#define ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))

static __always_inline void sip_round(struct siphash *s)
{
	s->v0 += s->v1;
	s->v1 = ROTL64(s->v1, 13);
	s->v1 ^= s->v0;
	s->v0 = ROTL64(s->v0, 32);
	s->v2 += s->v3;
	s->v3 = ROTL64(s->v3, 16);
	s->v3 ^= s->v2;
	s->v0 += s->v3;
	s->v3 = ROTL64(s->v3, 21);
	s->v3 ^= s->v0;
	s->v2 += s->v1;
	s->v1 = ROTL64(s->v1, 17);
	s->v1 ^= s->v2;
	s->v2 = ROTL64(s->v2, 32);
}

static __always_inline void sip_init(struct siphash *s, __u64 k0, __u64 k1)
{
	s->v0 = k0 ^ 0x736f6d6570736575ULL;
	s->v1 = k1 ^ 0x646f72616e646f6dULL;
	s->v2 = k0 ^ 0x6c7967656e657261ULL;
	s->v3 = k1 ^ 0x7465646279746573ULL;
}

/* sip_word absorbs the next 8 message bytes, read little-endian. */
static __always_inline void sip_word(struct siphash *s, __u64 m)
{
	s->v3 ^= m;
	sip_round(s);
	sip_round(s);
	s->v0 ^= m;
}

/* sip_final absorbs the last word (tail bytes | length<<56) and finishes. */
static __always_inline __u64 sip_final(struct siphash *s, __u64 b)
{
	sip_word(s, b);
	s->v2 ^= 0xff;
	sip_round(s);
	sip_round(s);
	sip_round(s);
	sip_round(s);
	return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

/* le64 reads 8 bytes of an address as SipHash does (the BPF target is little-endian). */
static __always_inline __u64 le64(const struct addr16 *a, int half)
{
	return (__u64)a->w[2 * half] | (__u64)a->w[2 * half + 1] << 32;
}

static __always_inline void sip_addrs(struct siphash *s, const struct cookie_flow *f)
{
	sip_word(s, le64(&f->local, 0));
	sip_word(s, le64(&f->local, 1));
	sip_word(s, le64(&f->remote, 0));
	sip_word(s, le64(&f->remote, 1));
}

/* cookie_mac is the engine's flowHasher.sum(tuple, client ISN), low 32 bits. */
static __always_inline __u32 cookie_mac(const struct cookie_key *k, const struct cookie_flow *f,
					__u32 client_isn)
{
	struct siphash s;

	sip_init(&s, k->k0, k->k1);
	sip_addrs(&s, f);
	/* Bytes 32-39: the ports, then the ISN's high (zero) half. */
	sip_word(&s, (__u64)f->lport | (__u64)f->rport << 16);
	/* Bytes 40-43: the ISN, big-endian; 44 bytes in all. */
	return sip_final(&s, (__u64)bpf_htonl(client_isn) | 44ULL << 56);
}

/* ts_offset is the engine's tsOffset: flowHasher.sumAddrs(local, remote). */
static __always_inline __u32 ts_offset(const struct cookie_settings *cs, const struct cookie_flow *f)
{
	struct siphash s;

	sip_init(&s, cs->ts_k0, cs->ts_k1);
	sip_addrs(&s, f);
	return sip_final(&s, 32ULL << 56);
}

/* cookie_key_of returns the secret of epoch, or NULL when the loader put none there. */
static __always_inline struct cookie_key *cookie_key_of(void *keys, __u64 epoch)
{
	__u32 slot = epoch % COOKIE_KEY_SLOTS;
	struct cookie_key *k = bpf_map_lookup_elem(keys, &slot);

	if (!k || !k->valid || k->epoch != epoch)
		return NULL;
	return k;
}

/* cookie_valid is the engine's checkCookie for one epoch. */
static __always_inline int cookie_valid(void *keys, __u64 epoch, const struct cookie_flow *f,
					__u32 client_isn, __u32 cookie)
{
	struct cookie_key *k;

	if ((__u32)(epoch & 0xff) != cookie >> COOKIE_MAC_BITS)
		return 0;
	k = cookie_key_of(keys, epoch);
	if (!k)
		return 0;
	return ((cookie - cookie_mac(k, f, client_isn)) & COOKIE_MAC_MASK) < 8;
}

/* The options of a SYN that a cookie SYN-ACK depends on. */
struct syn_opts {
	__u32 tsval;
	__u16 mss; /* 0: none */
	__u8 wscale;
	__u8 has_wscale;
	__u8 sack_ok;
	__u8 has_ts;
};

/* The option bytes of a SYN, copied out of the frame, and the walk over them. */
struct opt_walk {
	__u8 buf[40];
	__u32 i;   /* the next option's offset */
	__u32 len; /* how many bytes of buf are options */
	struct syn_opts o;
};

/*
 * opt_step reads the option at w->i as the engine's wire.ParseTCPOptions
 * does: a known kind with another length is skipped, a length below 2 or
 * past the end stops the walk keeping what came before, EOL stops it. It
 * runs under bpf_loop, so the verifier checks it once, not once per offset.
 */
static long opt_step(__u32 n, void *arg)
{
	struct opt_walk *w = arg;
	__u32 i = w->i, size;
	__u8 kind;

	if (i >= w->len || i >= sizeof(w->buf))
		return 1;
	kind = w->buf[i];
	if (kind == TCPOPT_EOL)
		return 1;
	if (kind == TCPOPT_NOP) {
		w->i = i + 1;
		return 0;
	}
	if (i + 1 >= w->len || i + 1 >= sizeof(w->buf))
		return 1;
	size = w->buf[i + 1];
	if (size < 2 || size > w->len - i)
		return 1;
	/* size <= len - i keeps every read below within buf. */
	switch (kind) {
	case TCPOPT_MSS:
		if (size == 4 && i + 3 < sizeof(w->buf))
			w->o.mss = (__u16)w->buf[i + 2] << 8 | w->buf[i + 3];
		break;
	case TCPOPT_WSCALE:
		if (size == 3 && i + 2 < sizeof(w->buf)) {
			w->o.has_wscale = 1;
			w->o.wscale = w->buf[i + 2];
		}
		break;
	case TCPOPT_SACK_PERM:
		if (size == 2)
			w->o.sack_ok = 1;
		break;
	case TCPOPT_TIMESTAMPS:
		if (size == 10 && i + 9 < sizeof(w->buf)) {
			w->o.has_ts = 1;
			/* Kept in network order: it goes back out as TSecr. */
			w->o.tsval = (__u32)w->buf[i + 2] | (__u32)w->buf[i + 3] << 8 |
				     (__u32)w->buf[i + 4] << 16 | (__u32)w->buf[i + 5] << 24;
		}
		break;
	}
	w->i = i + size;
	return 0;
}

/* cookie_tsval is the engine's cookieTSVal: the options in the low bits, never ahead of ts_now. */
static __always_inline __u32 cookie_tsval(__u32 ts_now, const struct syn_opts *o)
{
	__u32 opts = COOKIE_NO_WSCALE, ts;

	if (o->has_wscale)
		opts = o->wscale < TCP_MAX_WSCALE ? o->wscale : TCP_MAX_WSCALE;
	if (o->sack_ok)
		opts |= COOKIE_SACK_BIT;
	ts = (ts_now & ~COOKIE_TS_MASK) | opts;
	if (ts > ts_now)
		ts -= 1U << COOKIE_TS_BITS;
	return ts;
}

/* mss_index is the largest index of the table whose MSS does not exceed mss (else 0). */
static __always_inline __u32 mss_index(const struct cookie_settings *cs, __u16 mss)
{
	__u32 idx = 0;

#pragma unroll
	for (int i = 0; i < 8; i++) {
		if (cs->mss_table[i] <= mss)
			idx = i;
	}
	return idx;
}

/* csum_fold folds a 64-bit one's complement sum of raw words into the checksum field. */
static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

static __always_inline __u64 csum_words(const __u32 *w, int n)
{
	__u64 sum = 0;

#pragma unroll
	for (int i = 0; i < n; i++)
		sum += w[i];
	return sum;
}

#endif /* XDPROXY_SYNCOOKIE_H */
