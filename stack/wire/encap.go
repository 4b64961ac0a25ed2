package wire

import (
	"encoding/binary"
	"net/netip"
)

// IP-in-IP encapsulation (second chance forwarding between nodes).
const (
	// ProtoIPIP is IPv4 in IP (RFC 2003); ProtoIPv6Encap is IPv6 in IP
	// (RFC 2473): the outer header's protocol / next header.
	ProtoIPIP      = 4
	ProtoIPv6Encap = 41
)

// SecondChanceMAC is the destination MAC that the XDP program writes in
// place of the outer headers when it decapsulates a segment another node
// forwarded (bpf/xdproxy.h, SECOND_CHANCE_MAC): the engine reads it as
// "forwarded already" and never forwards such a segment again. It is a
// locally administered unicast address ("xdsc" inside), which no NIC
// filter lets in on its own.
var SecondChanceMAC = MAC{0x0e, 'x', 'd', 's', 'c', 0}

// EncapOverhead is what EncodeIPInIP adds to an inner packet whose
// outer family is that of dst: 20 bytes for IPv4, 40 for IPv6.
func EncapOverhead(dst netip.Addr) int {
	if dst.Is4() {
		return IPv4HeaderLen
	}
	return IPv6HeaderLen
}

// EncodeIPInIP writes into b an Ethernet frame from srcMAC to dstMAC that
// carries inner, a whole IP packet, inside an outer header from src to dst
// of their family (IPv4 with DF set and TTL 64, or IPv6 with hop limit 64),
// with protocol ProtoIPIP or ProtoIPv6Encap for inner's version. It returns
// the frame length, or 0 when b is too small, inner is not an IPv4 or
// IPv6 packet, the addresses are of different families, or the outer
// packet would exceed the IP length field. Never allocates.
func EncodeIPInIP(b []byte, srcMAC, dstMAC MAC, src, dst netip.Addr, inner []byte) int {
	if len(inner) == 0 || src.Is4() != dst.Is4() || !src.IsValid() {
		return 0
	}
	var proto uint8
	switch inner[0] >> 4 {
	case 4:
		proto = ProtoIPIP
	case 6:
		proto = ProtoIPv6Encap
	default:
		return 0
	}
	outer := EncapOverhead(dst)
	n := EthernetHeaderLen + outer + len(inner)
	if len(b) < n || outer+len(inner) > maxIPLen {
		return 0
	}
	if dst.Is4() {
		putEthernet(b, dstMAC, srcMAC, EtherTypeIPv4)
		putIPv4Header(b[EthernetHeaderLen:], src, dst, proto, 0, outer+len(inner), true)
	} else {
		putEthernet(b, dstMAC, srcMAC, EtherTypeIPv6)
		putIPv6Header(b[EthernetHeaderLen:], src, dst, proto, 0, len(inner))
	}
	copy(b[EthernetHeaderLen+outer:n], inner)
	return n
}

// IPPacket returns the IP packet of a frame Parse accepted (from the IP
// header to the end of the total length, without Ethernet padding).
func (p *Packet) IPPacket() []byte {
	ip := p.Frame[p.L3:]
	var n int
	switch p.EtherType {
	case EtherTypeIPv4:
		n = int(binary.BigEndian.Uint16(ip[2:4]))
	case EtherTypeIPv6:
		n = IPv6HeaderLen + int(binary.BigEndian.Uint16(ip[4:6]))
	default:
		return nil
	}
	if n > len(ip) {
		return nil
	}
	return ip[:n]
}
