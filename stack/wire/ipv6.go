package wire

import (
	"encoding/binary"
	"net/netip"
)

// IPv6HeaderLen is the length of the fixed IPv6 header.
const IPv6HeaderLen = 40

// parseIPv6 checks the fixed header at frame[off:] and returns the
// upper-layer segment, cut to the payload length.
func parseIPv6(frame []byte, off int, p *Packet) ([]byte, Drop) {
	ip := frame[off:]
	if len(ip) < IPv6HeaderLen {
		return nil, DropTruncated
	}
	plen := int(binary.BigEndian.Uint16(ip[4:6]))
	if ip[0]>>4 != 6 || IPv6HeaderLen+plen > len(ip) {
		return nil, DropBadIPv6Header
	}
	p.Proto = ip[6]
	p.TTL = ip[7]
	p.Src = netip.AddrFrom16([16]byte(ip[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(ip[24:40]))
	p.L4 = off + IPv6HeaderLen
	switch p.Proto {
	case ProtoTCP, ProtoICMPv6:
	default:
		if isIPv6ExtHeader(p.Proto) {
			return nil, DropIPv6ExtHeader
		}
		return nil, DropProto
	}
	if badIPv6Addrs(ip[8:24], ip[24:40], p.Proto == ProtoTCP) {
		return nil, DropBadAddress
	}
	return ip[IPv6HeaderLen : IPv6HeaderLen+plen], DropNone
}

// isIPv6ExtHeader reports whether nh is one of the extension headers of the
// IANA "IPv6 Extension Header Types" registry (RFC 7045 §2). We do not walk
// them: fragments would need reassembly and the rest carry nothing the engine
// acts on, so such packets are dropped.
func isIPv6ExtHeader(nh uint8) bool {
	switch nh {
	case 0, // hop-by-hop options
		43,       // routing
		44,       // fragment
		50,       // ESP
		51,       // AH
		60,       // destination options
		135,      // mobility
		139,      // HIP
		140,      // shim6
		253, 254: // experimental (RFC 3692)
		return true
	}
	return false
}

// badIPv6Addrs applies RFC 4291 §2.7: a multicast address is never a source.
// For TCP neither end may be multicast and the source may not be unspecified
// (RFC 4291 §2.5.2); the unspecified source stays legal for ICMPv6 because
// duplicate address detection uses it (RFC 4862 §5.4.2).
func badIPv6Addrs(src, dst []byte, tcp bool) bool {
	if src[0] == 0xff {
		return true
	}
	if !tcp {
		return false
	}
	return dst[0] == 0xff || isZero16(src) || isZero16(dst)
}

func isZero16(a []byte) bool {
	return binary.BigEndian.Uint64(a[0:8])|binary.BigEndian.Uint64(a[8:16]) == 0
}

// putIPv6Header writes the fixed header with traffic class and flow label 0.
func putIPv6Header(b []byte, src, dst netip.Addr, nextHeader, hopLimit uint8, payloadLen int) {
	h := b[:IPv6HeaderLen]
	binary.BigEndian.PutUint32(h[0:4], 6<<28)
	binary.BigEndian.PutUint16(h[4:6], uint16(payloadLen))
	h[6] = nextHeader
	if hopLimit == 0 {
		hopLimit = defaultTTL
	}
	h[7] = hopLimit
	s, d := src.As16(), dst.As16()
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
}

// SolicitedNodeAddr returns the solicited-node multicast address of a,
// ff02::1:ffXX:XXXX with the low 24 bits of a (RFC 4291 §2.7.1).
func SolicitedNodeAddr(a netip.Addr) netip.Addr {
	t := a.As16()
	return netip.AddrFrom16([16]byte{0xff, 0x02, 10: 0, 11: 0x01, 12: 0xff, 13: t[13], 14: t[14], 15: t[15]})
}

// IPv6MulticastMAC returns the Ethernet address an IPv6 multicast address
// maps to: 33:33 followed by its low 32 bits (RFC 2464 §7).
func IPv6MulticastMAC(a netip.Addr) MAC {
	t := a.As16()
	return MAC{0x33, 0x33, t[12], t[13], t[14], t[15]}
}
