package wire

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// IP protocol numbers (IANA "Assigned Internet Protocol Numbers").
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoICMPv6 = 58
)

// IPv4HeaderLen is the length of an IPv4 header without options.
const IPv4HeaderLen = 20

const (
	ipv4FlagMF     = 0x2000 // more fragments (RFC 791 §3.1)
	ipv4FlagDF     = 0x4000 // don't fragment
	ipv4FragOffset = 0x1fff
	maxIPLen       = 0xffff // IPv4 total length, IPv6 payload length
	defaultTTL     = 64     // Linux net.ipv4.ip_default_ttl
)

// parseIPv4 checks the header at frame[off:] and returns the upper-layer
// segment, cut to the total length so that Ethernet padding is ignored.
func parseIPv4(frame []byte, off int, p *Packet) ([]byte, Drop) {
	ip := frame[off:]
	if len(ip) < IPv4HeaderLen {
		return nil, DropTruncated
	}
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if ip[0]>>4 != 4 || ihl < IPv4HeaderLen || total < ihl || total > len(ip) {
		return nil, DropBadIPv4Header
	}
	// RFC 1122 §3.2.1.2: a datagram whose header checksum fails is discarded.
	if !ipv4HeaderChecksumOK(ip[:ihl]) {
		return nil, DropIPv4Checksum
	}
	// The engine does not reassemble (neither does the XDP path in front of
	// it); with DF set on everything we send, peers following RFC 1191 do not
	// fragment towards us either.
	if binary.BigEndian.Uint16(ip[6:8])&(ipv4FlagMF|ipv4FragOffset) != 0 {
		return nil, DropIPv4Fragment
	}
	p.TTL = ip[8]
	p.Proto = ip[9]
	p.Src = netip.AddrFrom4([4]byte(ip[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(ip[16:20]))
	p.L4 = off + ihl
	if p.Proto != ProtoTCP && p.Proto != ProtoICMP {
		return nil, DropProto
	}
	if badIPv4Addrs(ip[12:16], ip[16:20], p.Proto == ProtoTCP) {
		return nil, DropBadAddress
	}
	return ip[ihl:total], DropNone
}

// ipv4HeaderChecksumOK verifies the header checksum, unrolled for the usual
// 20-byte header: this runs on every IPv4 frame, and the general loop costs
// a few ns more on so short an input.
func ipv4HeaderChecksumOK(h []byte) bool {
	if len(h) != IPv4HeaderLen {
		return Checksum(h, 0) == 0
	}
	acc, carry := bits.Add64(binary.BigEndian.Uint64(h[0:8]), binary.BigEndian.Uint64(h[8:16]), 0)
	acc, carry = bits.Add64(acc, uint64(binary.BigEndian.Uint32(h[16:20])), carry)
	return Fold(acc+carry) == 0xffff
}

// badIPv4Addrs applies RFC 1122 §3.2.1.3: a source is never multicast or
// limited broadcast. For TCP (RFC 9293 §3.9.1, "OPEN ... a connection to a
// broadcast or multicast address" is not allowed) neither end may be multicast
// or broadcast, and the source may not be in 0.0.0.0/8, which RFC 1122 allows
// only while a host learns its address.
func badIPv4Addrs(src, dst []byte, tcp bool) bool {
	if src[0] >= 224 && src[0] <= 239 || isIPv4Broadcast(src) {
		return true
	}
	if !tcp {
		return false
	}
	return src[0] == 0 || dst[0] >= 224 && dst[0] <= 239 || isIPv4Broadcast(dst) ||
		binary.BigEndian.Uint32(dst) == 0
}

func isIPv4Broadcast(a []byte) bool { return binary.BigEndian.Uint32(a) == 0xffffffff }

// putIPv4Header writes a 20-byte IPv4 header with a zero identification
// (allowed for atomic datagrams, RFC 6864 §4.1, which ours are when df is set)
// and its checksum.
func putIPv4Header(b []byte, src, dst netip.Addr, proto, ttl uint8, total int, df bool) {
	h := b[:IPv4HeaderLen]
	h[0] = 0x45
	h[1] = 0
	binary.BigEndian.PutUint16(h[2:4], uint16(total))
	binary.BigEndian.PutUint16(h[4:6], 0)
	var frag uint16
	if df {
		frag = ipv4FlagDF
	}
	binary.BigEndian.PutUint16(h[6:8], frag)
	if ttl == 0 {
		ttl = defaultTTL
	}
	h[8] = ttl
	h[9] = proto
	h[10], h[11] = 0, 0
	s, d := src.As4(), dst.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	binary.BigEndian.PutUint16(h[10:12], Checksum(h, 0))
}
