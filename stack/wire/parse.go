package wire

import "net/netip"

// Drop is why Parse refused a frame. DropNone means the packet is valid.
type Drop uint8

// Drop reasons. Parse reports the first check that fails, outer headers
// first.
const (
	DropNone          Drop = iota
	DropTruncated          // shorter than its headers claim / than the minimum
	DropEtherType          // not IPv4, IPv6 or ARP (after VLAN tags)
	DropBadIPv4Header      // version != 4, IHL < 5, total length < IHL*4 or > frame
	DropIPv4Checksum       // header checksum wrong
	DropIPv4Fragment       // MF set or fragment offset != 0
	DropBadIPv6Header      // version != 6, payload length > frame
	DropIPv6ExtHeader      // next header is an extension header (hop-by-hop, routing, fragment, dest opts, AH, ESP...)
	DropProto              // IP protocol other than TCP / ICMP / ICMPv6
	DropBadAddress         // source multicast/broadcast; for TCP also source in 0.0.0.0/8 or ::, destination multicast/broadcast/unspecified
	DropBadTCPHeader       // data offset < 5 or beyond the IP payload
	DropTCPChecksum        // checksum over pseudo-header and segment wrong (and, under ParseAllowPartialL4Checksum, not the pseudo-header sum alone)
	DropBadARP             // not Ethernet/IPv4 ARP, wrong lengths, not a request or reply
	DropBadICMP            // too short for its type; NS/NA failing RFC 4861 §7.1 checks
	DropICMPChecksum       // ICMP checksum (ICMPv6: with pseudo-header) wrong
	NumDrops               // count of reasons, for counter arrays
)

var dropNames = [NumDrops]string{
	DropNone:          "none",
	DropTruncated:     "truncated",
	DropEtherType:     "ethertype",
	DropBadIPv4Header: "bad_ipv4_header",
	DropIPv4Checksum:  "ipv4_checksum",
	DropIPv4Fragment:  "ipv4_fragment",
	DropBadIPv6Header: "bad_ipv6_header",
	DropIPv6ExtHeader: "ipv6_ext_header",
	DropProto:         "proto",
	DropBadAddress:    "bad_address",
	DropBadTCPHeader:  "bad_tcp_header",
	DropTCPChecksum:   "tcp_checksum",
	DropBadARP:        "bad_arp",
	DropBadICMP:       "bad_icmp",
	DropICMPChecksum:  "icmp_checksum",
}

// String returns the reason in snake_case, usable as a metric label.
func (d Drop) String() string {
	if d < NumDrops {
		return dropNames[d]
	}
	return "unknown"
}

// Packet is the checked view of one received frame. All slices alias the frame.
type Packet struct {
	Frame          []byte
	EthDst, EthSrc MAC
	VLAN           uint16     // outermost 802.1Q/802.1ad VLAN ID, 0 if untagged
	EtherType      uint16     // after VLAN tags
	L3             int        // offset of the IP/ARP header
	Proto          uint8      // IP protocol
	Src, Dst       netip.Addr // IP addresses (4-byte form for IPv4: netip.AddrFrom4)
	TTL            uint8      // TTL / hop limit
	// PartialChecksum reports a TCP segment accepted under
	// ParseAllowPartialL4Checksum whose checksum field held only the
	// pseudo-header sum (a CHECKSUM_PARTIAL sender's): its header and
	// payload were not verified. False for a segment whose checksum
	// verified. (It sits here, in padding, to keep Packet at 392 bytes.)
	PartialChecksum bool
	// IgnoredTCPOptions reports a TCP segment with a malformed option that
	// the parse skipped or stopped at (ParseTCPOptions): the segment is
	// taken with the options before it, as Linux takes it.
	IgnoredTCPOptions bool
	L4                int       // offset of the TCP/ICMP header
	TCP               TCPHeader // valid when Proto == ProtoTCP
	Payload           []byte    // TCP payload, or ICMP body after the 8-byte ICMP header
	ARP               ARP       // valid when EtherType == EtherTypeARP
	ICMP              ICMP      // valid when Proto is ICMP/ICMPv6
}

// ParseFlags change what Parse checks.
type ParseFlags uint8

// ParseSkipL4Checksum trusts the TCP/ICMP checksum (the device verified it).
// The IPv4 header checksum is always checked: it is cheap, and devices that
// report L4 checksum state do not always cover it.
const ParseSkipL4Checksum ParseFlags = 1

// ParseAllowPartialL4Checksum accepts a TCP segment whose checksum does not
// verify if its checksum field holds exactly the folded, uncomplemented
// pseudo-header sum (source, destination, protocol, TCP length; RFC 8200
// §8.1 form for IPv6), and sets Packet.PartialChecksum. That is what a Linux
// sender leaves in the field when the device offloads the TCP checksum
// (CHECKSUM_PARTIAL; __tcp_v4_send_check, __tcp_v6_send_check) and the
// device is virtual, so nothing ever completes it: a veth whose peer has TX
// checksum offload on, the default (every container's interface).
//
// What it trusts: the addresses and the length are still tied to the field,
// but the TCP header and payload are not summed at all. That is safe only
// where the frame never crossed a wire: on a veth the bytes move from the
// sending kernel's memory to ours without a link that could corrupt them,
// and the kernel on the receiving end of a veth trusts such a frame in the
// same way (it does not even look at the field). On a physical NIC a frame
// carrying this value is a corrupted one, or a sender whose offload did not
// happen, and must be dropped: set the flag only for virtual interfaces.
// The checksum is no authentication either way; this changes what
// corruption is caught, not who can inject.
//
// A segment whose field is neither its checksum nor the pseudo-header sum
// is still DropTCPChecksum. The rule is tried only after the checksum
// failed, so a valid segment costs the same with or without the flag.
// ICMP and ICMPv6 stay strict: Linux computes their checksums in software
// (icmp_push_reply, icmpv6_push_pending_frames, ndisc), so they arrive whole
// on a veth too. ParseSkipL4Checksum, when also set, wins (no check, no
// mark).
const ParseAllowPartialL4Checksum ParseFlags = 2

// Parse checks frame once and fills p (overwriting every field). It returns
// DropNone for a valid packet; otherwise p holds whatever was decoded before
// the check that failed and must not be used. Trailing bytes beyond the IP
// total length (Ethernet padding) are ignored. Never panics, never allocates.
func Parse(frame []byte, p *Packet, flags ParseFlags) Drop {
	*p = Packet{Frame: frame}
	off, d := parseEthernet(frame, p)
	if d != DropNone {
		return d
	}
	p.L3 = off
	switch p.EtherType {
	case EtherTypeIPv4:
		seg, d := parseIPv4(frame, off, p)
		if d != DropNone {
			return d
		}
		addrs := frame[off+12 : off+20]
		if p.Proto == ProtoTCP {
			return parseTCP(seg, addrs, p, flags)
		}
		return parseICMPv4(seg, p, flags)
	case EtherTypeIPv6:
		seg, d := parseIPv6(frame, off, p)
		if d != DropNone {
			return d
		}
		addrs := frame[off+8 : off+40]
		if p.Proto == ProtoTCP {
			return parseTCP(seg, addrs, p, flags)
		}
		return parseICMPv6(seg, addrs, p, flags)
	case EtherTypeARP:
		return parseARP(frame[off:], &p.ARP)
	}
	return DropEtherType
}
