package proxy

import (
	"encoding/binary"
	"net/netip"
	"strconv"
)

// PROXY protocol headers, versions 1 and 2, as a proxy sends them to a
// backend ahead of the client's bytes (HAProxy's "The PROXY protocol",
// haproxy.org/download/1.8/doc/proxy-protocol.txt). src is the client's
// address, dst the address the client connected to (the listener).
//
// Addresses are taken without their IPv6 zone, and IPv4-mapped IPv6
// addresses as IPv4, so a client seen through a dual-stack socket is still
// reported as TCP4. When the two families differ after that (or an address
// is invalid), there is nothing consistent to report: version 1 sends
// "PROXY UNKNOWN\r\n" and version 2 the LOCAL command with family UNSPEC and
// no address block; the spec has receivers of either use the real connection
// endpoints. (HAProxy 1.8 does the same; later versions send such pairs as
// TCP6 with the IPv4 side mapped.)
//
// Both append to b and allocate nothing when b has room: ProxyV1MaxLen and
// ProxyV2MaxLen bytes are always enough.

const (
	// ProxyV1MaxLen is the longest version 1 header, per the spec.
	ProxyV1MaxLen = 107
	// ProxyV2MaxLen is the longest version 2 header written here (TCP over
	// IPv6, no TLVs).
	ProxyV2MaxLen = 16 + 36
)

// proxyV2Sig is the 12-byte version 2 signature.
var proxyV2Sig = [12]byte{0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a}

const (
	proxyV2Local = 0x20 // version 2, command LOCAL
	proxyV2Proxy = 0x21 // version 2, command PROXY
	proxyV2TCP4  = 0x11 // AF_INET, STREAM
	proxyV2TCP6  = 0x21 // AF_INET6, STREAM
)

func proxyAddrs(src, dst netip.AddrPort) (s, d netip.Addr) {
	return src.Addr().Unmap().WithZone(""), dst.Addr().Unmap().WithZone("")
}

// AppendV1 appends a PROXY protocol version 1 (text) header, e.g.
// "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n".
func AppendV1(b []byte, src, dst netip.AddrPort) []byte {
	s, d := proxyAddrs(src, dst)
	switch {
	case s.Is4() && d.Is4():
		b = append(b, "PROXY TCP4 "...)
	case s.Is6() && d.Is6():
		b = append(b, "PROXY TCP6 "...)
	default:
		return append(b, "PROXY UNKNOWN\r\n"...)
	}
	b = s.AppendTo(b)
	b = append(b, ' ')
	b = d.AppendTo(b)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(src.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(dst.Port()), 10)
	return append(b, '\r', '\n')
}

// AppendV2 appends a PROXY protocol version 2 (binary) header: signature,
// version/command 0x21 (v2, PROXY), family 0x11 (AF_INET, STREAM) or 0x21
// (AF_INET6, STREAM), the address block length (12 or 36, big endian), then
// source address, destination address, source port, destination port, all
// in network byte order. No TLVs.
func AppendV2(b []byte, src, dst netip.AddrPort) []byte {
	b = append(b, proxyV2Sig[:]...)
	s, d := proxyAddrs(src, dst)
	switch {
	case s.Is4() && d.Is4():
		b = append(b, proxyV2Proxy, proxyV2TCP4, 0, 12)
		sa, da := s.As4(), d.As4()
		b = append(b, sa[:]...)
		b = append(b, da[:]...)
	case s.Is6() && d.Is6():
		b = append(b, proxyV2Proxy, proxyV2TCP6, 0, 36)
		sa, da := s.As16(), d.As16()
		b = append(b, sa[:]...)
		b = append(b, da[:]...)
	default:
		return append(b, proxyV2Local, 0x00, 0, 0) // UNSPEC, no address block
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}
