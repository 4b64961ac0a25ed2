package wire

import (
	"encoding/binary"
	"net/netip"
)

// ICMP types and codes used by the engine (RFC 792, RFC 1191, RFC 4443,
// RFC 4861).
const (
	ICMPv4EchoReply       = 0
	ICMPv4DestUnreachable = 3
	ICMPv4EchoRequest     = 8
	ICMPv4CodeFragNeeded  = 4

	ICMPv6DestUnreachable = 1
	ICMPv6PacketTooBig    = 2
	ICMPv6EchoRequest     = 128
	ICMPv6EchoReply       = 129
	ICMPv6NeighborSolicit = 135
	ICMPv6NeighborAdvert  = 136
)

// Neighbor Advertisement flags, as they sit in ICMP.NAFlags (RFC 4861 §4.4).
const (
	NAFlagRouter    = 0x80
	NAFlagSolicited = 0x40
	NAFlagOverride  = 0x20
)

// ICMPHeaderLen is the length of the ICMP/ICMPv6 header that every message
// has: type, code, checksum and four type-specific bytes.
const ICMPHeaderLen = 8

const (
	ndpSourceLinkAddr = 1 // RFC 4861 §4.6.1
	ndpTargetLinkAddr = 2
	ndpMsgLen         = ICMPHeaderLen + 16 // NS and NA: header, target address
	ndpLinkAddrOptLen = 8                  // type, length (in 8-byte units), MAC

	// An ICMPv4 error quotes the IP header and at least the first 8 bytes of
	// the datagram (RFC 792); routers send as much as fits in 576 bytes
	// (RFC 1812 §4.3.2.3). An ICMPv6 error quotes as much as fits in the
	// minimum MTU (RFC 4443 §2.4(c)).
	icmpv4ErrorMinLen = ICMPHeaderLen + IPv4HeaderLen + 8
	icmpv6ErrorMinLen = ICMPHeaderLen + IPv6HeaderLen + 8
	icmpv4ErrorMaxLen = 576
	icmpv6ErrorMaxLen = 1280
)

// ICMP is the parsed ICMPv4/ICMPv6 message.
type ICMP struct {
	Type, Code  uint8
	ID, Seq     uint16     // echo request/reply
	MTU         uint32     // v4 frag-needed next-hop MTU, v6 packet-too-big MTU
	Target      netip.Addr // NDP target address (NS/NA)
	LinkAddr    MAC        // NDP source/target link-layer address option, if HasLinkAddr
	HasLinkAddr bool
	NAFlags     uint8 // NA only: NAFlagRouter|NAFlagSolicited|NAFlagOverride
	// For error messages (destination unreachable, including frag-needed,
	// and packet-too-big): the quoted packet's addresses, ports and TCP
	// sequence number, when the quote holds a TCP header's first 8 bytes.
	Inner InnerTCP
}

// InnerTCP identifies the TCP segment that an ICMP error quotes.
type InnerTCP struct {
	Valid            bool
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Seq              uint32
}

func parseICMPv4(seg []byte, p *Packet, flags ParseFlags) Drop {
	if len(seg) < ICMPHeaderLen {
		return DropTruncated
	}
	if flags&ParseSkipL4Checksum == 0 && Checksum(seg, 0) != 0 {
		return DropICMPChecksum
	}
	c := &p.ICMP
	c.Type, c.Code = seg[0], seg[1]
	p.Payload = seg[ICMPHeaderLen:]
	switch c.Type {
	case ICMPv4EchoRequest, ICMPv4EchoReply:
		c.ID = binary.BigEndian.Uint16(seg[4:6])
		c.Seq = binary.BigEndian.Uint16(seg[6:8])
	case ICMPv4DestUnreachable:
		if len(seg) < icmpv4ErrorMinLen {
			return DropBadICMP
		}
		if c.Code == ICMPv4CodeFragNeeded {
			// RFC 1191 §4: the next-hop MTU is in the low-order 16 bits.
			c.MTU = uint32(binary.BigEndian.Uint16(seg[6:8]))
		}
		parseInnerIPv4(seg[ICMPHeaderLen:], &c.Inner)
	}
	return DropNone
}

// parseInnerIPv4 decodes a quoted IPv4+TCP prefix. A quote it cannot read
// is not an error: the message stays valid, the quote is just not ours.
func parseInnerIPv4(q []byte, in *InnerTCP) {
	if len(q) < IPv4HeaderLen || q[0]>>4 != 4 || q[9] != ProtoTCP {
		return
	}
	ihl := int(q[0]&0x0f) * 4
	// Only a first fragment starts with the TCP header.
	if ihl < IPv4HeaderLen || len(q) < ihl+8 || binary.BigEndian.Uint16(q[6:8])&ipv4FragOffset != 0 {
		return
	}
	in.Src = netip.AddrFrom4([4]byte(q[12:16]))
	in.Dst = netip.AddrFrom4([4]byte(q[16:20]))
	fillInnerTCP(q[ihl:], in)
}

func parseInnerIPv6(q []byte, in *InnerTCP) {
	if len(q) < IPv6HeaderLen+8 || q[0]>>4 != 6 || q[6] != ProtoTCP {
		return
	}
	in.Src = netip.AddrFrom16([16]byte(q[8:24]))
	in.Dst = netip.AddrFrom16([16]byte(q[24:40]))
	fillInnerTCP(q[IPv6HeaderLen:], in)
}

func fillInnerTCP(t []byte, in *InnerTCP) {
	in.SrcPort = binary.BigEndian.Uint16(t[0:2])
	in.DstPort = binary.BigEndian.Uint16(t[2:4])
	in.Seq = binary.BigEndian.Uint32(t[4:8])
	in.Valid = true
}

// parseICMPv6 checks an ICMPv6 message; addrs are the IPv6 source and
// destination as they sit in the header.
func parseICMPv6(seg, addrs []byte, p *Packet, flags ParseFlags) Drop {
	if len(seg) < ICMPHeaderLen {
		return DropTruncated
	}
	// RFC 4443 §2.3: the checksum covers the pseudo-header.
	if flags&ParseSkipL4Checksum == 0 && Checksum(seg, pseudoSum(addrs, ProtoICMPv6, len(seg))) != 0 {
		return DropICMPChecksum
	}
	c := &p.ICMP
	c.Type, c.Code = seg[0], seg[1]
	p.Payload = seg[ICMPHeaderLen:]
	switch c.Type {
	case ICMPv6EchoRequest, ICMPv6EchoReply:
		c.ID = binary.BigEndian.Uint16(seg[4:6])
		c.Seq = binary.BigEndian.Uint16(seg[6:8])
	case ICMPv6DestUnreachable, ICMPv6PacketTooBig:
		if len(seg) < icmpv6ErrorMinLen {
			return DropBadICMP
		}
		if c.Type == ICMPv6PacketTooBig {
			c.MTU = binary.BigEndian.Uint32(seg[4:8])
		}
		parseInnerIPv6(seg[ICMPHeaderLen:], &c.Inner)
	case ICMPv6NeighborSolicit, ICMPv6NeighborAdvert:
		return parseNDP(seg, addrs[0:16], addrs[16:32], c)
	}
	return DropNone
}

// parseNDP applies the validity checks of RFC 4861 §7.1.1 (NS) and §7.1.2
// (NA), except the hop limit of 255, which the engine checks from p.TTL.
func parseNDP(seg, src, dst []byte, c *ICMP) Drop {
	if c.Code != 0 || len(seg) < ndpMsgLen || seg[8] == 0xff { // target multicast
		return DropBadICMP
	}
	c.Target = netip.AddrFrom16([16]byte(seg[8:24]))
	want := uint8(ndpSourceLinkAddr)
	if c.Type == ICMPv6NeighborAdvert {
		want = ndpTargetLinkAddr
		c.NAFlags = seg[4] & (NAFlagRouter | NAFlagSolicited | NAFlagOverride)
		if dst[0] == 0xff && c.NAFlags&NAFlagSolicited != 0 {
			return DropBadICMP
		}
	}
	for opts := seg[ndpMsgLen:]; len(opts) > 0; {
		if len(opts) < 2 {
			return DropBadICMP
		}
		n := int(opts[1]) * 8
		if n == 0 || n > len(opts) {
			return DropBadICMP
		}
		if opts[0] == want {
			c.LinkAddr = MAC(opts[2:8])
			c.HasLinkAddr = true
		}
		opts = opts[n:]
	}
	if c.Type == ICMPv6NeighborSolicit && isZero16(src) {
		// Duplicate address detection: no link-layer option, and sent to the
		// target's solicited-node group.
		if c.HasLinkAddr || !isSolicitedNode(dst, seg[8:24]) {
			return DropBadICMP
		}
	}
	return DropNone
}

// isSolicitedNode reports whether dst is target's solicited-node multicast
// address, ff02::1:ffXX:XXXX (RFC 4291 §2.7.1).
func isSolicitedNode(dst, target []byte) bool {
	return binary.BigEndian.Uint64(dst[0:8]) == 0xff02<<48 &&
		binary.BigEndian.Uint32(dst[8:12]) == 1 && dst[12] == 0xff &&
		dst[13] == target[13] && dst[14] == target[14] && dst[15] == target[15]
}

// EncodeEchoReply writes the echo reply to the echo request req (IPv4 ICMP or
// ICMPv6) and returns its length, or 0 if b is too small, req is not a parsed
// echo request, or req was sent to a multicast or broadcast address
// (224.0.0.0/3 for IPv4): a reply must come from a unicast source (RFC 1122
// §3.2.1.3), and the engine answers only for its own addresses. MACs and addresses are swapped, ID, sequence
// and data kept (RFC 792, RFC 4443 §4.2), VLAN tags kept so that the reply
// leaves on the VLAN the request came in on. IPv4 options are not echoed. b
// may be req.Frame itself: the reply is built in place.
func EncodeEchoReply(b []byte, req *Packet) int {
	var v4 bool
	switch {
	case req.EtherType == EtherTypeIPv4 && req.Proto == ProtoICMP && req.ICMP.Type == ICMPv4EchoRequest:
		v4 = true
		if d := req.Dst.As4(); d[0] >= 224 || !req.Src.Is4() {
			return 0
		}
	case req.EtherType == EtherTypeIPv6 && req.Proto == ProtoICMPv6 && req.ICMP.Type == ICMPv6EchoRequest:
		if req.Dst.IsMulticast() || !req.Src.Is6() {
			return 0
		}
	default:
		return 0
	}
	l3 := req.L3
	if l3 < EthernetHeaderLen || l3 > len(req.Frame) {
		return 0
	}
	ipLen := IPv6HeaderLen
	if v4 {
		ipLen = IPv4HeaderLen
	}
	l4 := l3 + ipLen
	n := l4 + ICMPHeaderLen + len(req.Payload)
	if len(b) < n {
		return 0
	}
	// Payload first: when b is req.Frame it moves towards the front (a
	// request with IPv4 options) over headers already parsed into req.
	copy(b[l4+ICMPHeaderLen:n], req.Payload)
	copy(b[12:l3], req.Frame[12:l3])
	copy(b[0:6], req.EthSrc[:])
	copy(b[6:12], req.EthDst[:])
	m := b[l4:n]
	binary.BigEndian.PutUint16(m[4:6], req.ICMP.ID)
	binary.BigEndian.PutUint16(m[6:8], req.ICMP.Seq)
	m[1], m[2], m[3] = 0, 0, 0
	if v4 {
		putIPv4Header(b[l3:], req.Dst, req.Src, ProtoICMP, defaultTTL, n-l3, false)
		m[0] = ICMPv4EchoReply
		binary.BigEndian.PutUint16(m[2:4], Checksum(m, 0))
	} else {
		putIPv6Header(b[l3:], req.Dst, req.Src, ProtoICMPv6, defaultTTL, len(m))
		m[0] = ICMPv6EchoReply
		binary.BigEndian.PutUint16(m[2:4], Checksum(m, pseudoSum(b[l3+8:l3+40], ProtoICMPv6, len(m))))
	}
	return n
}

// NeighborAdvertLen and NeighborSolicitLen are the lengths of the frames
// EncodeNeighborAdvert and EncodeNeighborSolicit write (the solicitation is 8
// bytes shorter from the unspecified address, which carries no link-layer
// option).
const (
	NeighborAdvertLen  = EthernetHeaderLen + IPv6HeaderLen + ndpMsgLen + ndpLinkAddrOptLen
	NeighborSolicitLen = NeighborAdvertLen
)

// EncodeNeighborAdvert writes an ICMPv6 Neighbor Advertisement for target
// from srcMAC/src to dstMAC/dst with the override flag and the target
// link-layer address option (srcMAC), and returns its length
// (NeighborAdvertLen), or 0 if b is too small or an address is not IPv6. The
// solicited flag is set unless dst is multicast: RFC 4861 §7.2.4 answers a
// solicitation from the unspecified address to all-nodes with S clear, and
// §7.1.2 has receivers drop a multicast NA with S set. Hop limit 255 (§7.1.2).
func EncodeNeighborAdvert(b []byte, srcMAC MAC, src netip.Addr, dstMAC MAC, dst netip.Addr, target netip.Addr) int {
	if len(b) < NeighborAdvertLen || !src.Is6() || !dst.Is6() || !target.Is6() {
		return 0
	}
	flags := uint8(NAFlagOverride)
	if !dst.IsMulticast() {
		flags |= NAFlagSolicited
	}
	putNDP(b[:NeighborAdvertLen], ICMPv6NeighborAdvert, flags, srcMAC, src, dstMAC, dst, target, ndpTargetLinkAddr)
	return NeighborAdvertLen
}

// EncodeNeighborSolicit writes an ICMPv6 Neighbor Solicitation for target to
// its solicited-node multicast address and the matching 33:33:ff:xx:xx:xx MAC
// (RFC 4861 §7.2.2), with the source link-layer address option, and returns
// its length, or 0 if b is too small or an address is not IPv6. From the
// unspecified address (duplicate address detection, RFC 4862 §5.4.2) the
// option is left out, as §7.1.1 requires.
func EncodeNeighborSolicit(b []byte, srcMAC MAC, src netip.Addr, target netip.Addr) int {
	if !src.Is6() || !target.Is6() {
		return 0
	}
	n, opt := NeighborSolicitLen, uint8(ndpSourceLinkAddr)
	if src.IsUnspecified() {
		n, opt = NeighborSolicitLen-ndpLinkAddrOptLen, 0
	}
	if len(b) < n {
		return 0
	}
	dst := SolicitedNodeAddr(target)
	putNDP(b[:n], ICMPv6NeighborSolicit, 0, srcMAC, src, IPv6MulticastMAC(dst), dst, target, opt)
	return n
}

// putNDP writes an NS or NA filling all of b; opt is the link-layer option
// type to append (carrying srcMAC), or 0 for none.
func putNDP(b []byte, typ, flags uint8, srcMAC MAC, src netip.Addr, dstMAC MAC, dst, target netip.Addr, opt uint8) {
	const l4 = EthernetHeaderLen + IPv6HeaderLen
	putEthernet(b, dstMAC, srcMAC, EtherTypeIPv6)
	putIPv6Header(b[EthernetHeaderLen:], src, dst, ProtoICMPv6, 255, len(b)-l4)
	m := b[l4:]
	m[0], m[1], m[2], m[3] = typ, 0, 0, 0
	m[4], m[5], m[6], m[7] = flags, 0, 0, 0
	t := target.As16()
	copy(m[8:24], t[:])
	if opt != 0 {
		m[24], m[25] = opt, 1
		copy(m[26:32], srcMAC[:])
	}
	binary.BigEndian.PutUint16(m[2:4], Checksum(m, pseudoSum(b[EthernetHeaderLen+8:l4], ProtoICMPv6, len(m))))
}

// EncodeICMPFragNeeded writes an ICMPv4 destination-unreachable,
// fragmentation-needed message (RFC 1191 §4) from a router at srcMAC/src to
// dstMAC, quoting the IPv4 datagram quoted (starting at its IP header) as far
// as the message fits in 576 bytes (RFC 1812 §4.3.2.3). It is addressed to
// the quoted datagram's source. It returns the frame length, or 0 if b is too
// small, src is not IPv4 or quoted does not start with an IPv4 header. It
// exists for tests of path MTU discovery.
func EncodeICMPFragNeeded(b []byte, srcMAC, dstMAC MAC, src netip.Addr, mtu uint16, quoted []byte) int {
	if !src.Is4() || len(quoted) < IPv4HeaderLen || quoted[0]>>4 != 4 {
		return 0
	}
	q := min(len(quoted), icmpv4ErrorMaxLen-IPv4HeaderLen-ICMPHeaderLen)
	const l4 = EthernetHeaderLen + IPv4HeaderLen
	n := l4 + ICMPHeaderLen + q
	if len(b) < n {
		return 0
	}
	putEthernet(b, dstMAC, srcMAC, EtherTypeIPv4)
	putIPv4Header(b[EthernetHeaderLen:], src, netip.AddrFrom4([4]byte(quoted[12:16])), ProtoICMP, defaultTTL, n-EthernetHeaderLen, false)
	m := b[l4:n]
	m[0], m[1], m[2], m[3], m[4], m[5] = ICMPv4DestUnreachable, ICMPv4CodeFragNeeded, 0, 0, 0, 0
	binary.BigEndian.PutUint16(m[6:8], mtu)
	copy(m[ICMPHeaderLen:], quoted[:q])
	binary.BigEndian.PutUint16(m[2:4], Checksum(m, 0))
	return n
}

// EncodePacketTooBig writes an ICMPv6 packet-too-big message (RFC 4443 §3.2)
// from a router at srcMAC/src to dstMAC, quoting the IPv6 packet quoted
// (starting at its IP header) as far as the message fits in 1280 bytes
// (RFC 4443 §2.4(c)). It is addressed to the quoted packet's source. It
// returns the frame length, or 0 if b is too small, src is not IPv6 or quoted
// does not start with an IPv6 header. It exists for tests of path MTU
// discovery.
func EncodePacketTooBig(b []byte, srcMAC, dstMAC MAC, src netip.Addr, mtu uint32, quoted []byte) int {
	if !src.Is6() || len(quoted) < IPv6HeaderLen || quoted[0]>>4 != 6 {
		return 0
	}
	q := min(len(quoted), icmpv6ErrorMaxLen-IPv6HeaderLen-ICMPHeaderLen)
	const l4 = EthernetHeaderLen + IPv6HeaderLen
	n := l4 + ICMPHeaderLen + q
	if len(b) < n {
		return 0
	}
	putEthernet(b, dstMAC, srcMAC, EtherTypeIPv6)
	putIPv6Header(b[EthernetHeaderLen:], src, netip.AddrFrom16([16]byte(quoted[8:24])), ProtoICMPv6, defaultTTL, n-l4)
	m := b[l4:n]
	m[0], m[1], m[2], m[3] = ICMPv6PacketTooBig, 0, 0, 0
	binary.BigEndian.PutUint32(m[4:8], mtu)
	copy(m[ICMPHeaderLen:], quoted[:q])
	binary.BigEndian.PutUint16(m[2:4], Checksum(m, pseudoSum(b[EthernetHeaderLen+8:l4], ProtoICMPv6, len(m))))
	return n
}
