package wire

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

var (
	macA = MAC{0x02, 0x00, 0x00, 0x00, 0x00, 0x0a}
	macB = MAC{0x02, 0x00, 0x00, 0x00, 0x00, 0x0b}
	ip4A = netip.MustParseAddr("192.0.2.1")
	ip4B = netip.MustParseAddr("198.51.100.2")
	ip6A = netip.MustParseAddr("2001:db8::1")
	ip6B = netip.MustParseAddr("2001:db8::2:3:4")
)

// refChecksum is RFC 1071 done the slow, obvious way: 16-bit words into a
// 32-bit accumulator, then folded.
func refChecksum(b []byte, initial uint32) uint16 {
	s := initial
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
		s = s&0xffff + s>>16
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// refPseudo is the pseudo-header sum the slow way, from header bytes.
func refPseudo(addrs []byte, proto uint8, length int) uint32 {
	var s uint32
	for i := 0; i < len(addrs); i += 2 {
		s += uint32(binary.BigEndian.Uint16(addrs[i:]))
	}
	return s + uint32(proto) + uint32(length>>16) + uint32(length&0xffff)
}

// l3Offset finds the IP header after any VLAN tags.
func l3Offset(frame []byte) int {
	off := 12
	for {
		et := binary.BigEndian.Uint16(frame[off:])
		if et != EtherTypeVLAN && et != EtherTypeQinQ {
			return off + 2
		}
		off += 4
	}
}

// l4Of returns the IP payload of frame cut to the IP length, the addresses
// as they sit in the IP header and the protocol, trusting the length fields;
// proto is 0 when frame is not IP or its lengths do not add up.
func l4Of(frame []byte) (seg, addrs []byte, proto uint8) {
	ip := frame[l3Offset(frame):]
	switch ip[0] >> 4 {
	case 4:
		ihl := min(int(ip[0]&0xf)*4, len(ip))
		total := int(binary.BigEndian.Uint16(ip[2:]))
		if total < ihl {
			return nil, nil, 0
		}
		return ip[ihl:min(total, len(ip))], ip[12:20], ip[9]
	case 6:
		plen := int(binary.BigEndian.Uint16(ip[4:]))
		return ip[40:min(40+plen, len(ip))], ip[8:40], ip[6]
	}
	return nil, nil, 0
}

// fixChecksums recomputes the IPv4 header checksum and the TCP/ICMP/ICMPv6
// checksum of frame, trusting its length fields, so that a test can break
// exactly one thing in a frame.
func fixChecksums(frame []byte) []byte {
	ip := frame[l3Offset(frame):]
	if ip[0]>>4 == 4 {
		ihl := min(int(ip[0]&0xf)*4, len(ip))
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], refChecksum(ip[:ihl], 0))
	}
	seg, addrs, proto := l4Of(frame)
	switch proto {
	case ProtoTCP:
		if len(seg) >= 18 {
			seg[16], seg[17] = 0, 0
			binary.BigEndian.PutUint16(seg[16:], refChecksum(seg, refPseudo(addrs, proto, len(seg))))
		}
	case ProtoICMP:
		if len(seg) >= 4 {
			seg[2], seg[3] = 0, 0
			binary.BigEndian.PutUint16(seg[2:], refChecksum(seg, 0))
		}
	case ProtoICMPv6:
		if len(seg) >= 4 {
			seg[2], seg[3] = 0, 0
			binary.BigEndian.PutUint16(seg[2:], refChecksum(seg, refPseudo(addrs, proto, len(seg))))
		}
	}
	return frame
}

// pseudoField is what a CHECKSUM_PARTIAL sender leaves in the checksum
// field (Linux: th->check = ~tcp_v4_check(len, saddr, daddr, 0)): the
// pseudo-header sum folded and not complemented, the slow way.
func pseudoField(addrs []byte, proto uint8, length int) uint16 {
	return ^refChecksum(nil, refPseudo(addrs, proto, length))
}

// asPartial returns a copy of a TCP or ICMPv6 frame with the checksum field
// as a CHECKSUM_PARTIAL sender leaves it, trusting the length fields.
func asPartial(frame []byte) []byte {
	f := append([]byte(nil), frame...)
	seg, addrs, proto := l4Of(f)
	switch proto {
	case ProtoTCP:
		binary.BigEndian.PutUint16(seg[16:], pseudoField(addrs, proto, len(seg)))
	case ProtoICMPv6:
		binary.BigEndian.PutUint16(seg[2:], pseudoField(addrs, proto, len(seg)))
	}
	return f
}

// withL4Field returns a copy of a TCP frame with v in its checksum field.
func withL4Field(frame []byte, v uint16) []byte {
	f := append([]byte(nil), frame...)
	seg, _, _ := l4Of(f)
	binary.BigEndian.PutUint16(seg[16:], v)
	return f
}

// tcpField reads a TCP frame's checksum field.
func tcpField(frame []byte) uint16 {
	seg, _, _ := l4Of(frame)
	return binary.BigEndian.Uint16(seg[16:])
}

// checksumsOK verifies frame's IP and L4 checksums with the reference code.
func checksumsOK(t testing.TB, frame []byte) {
	t.Helper()
	fixed := fixChecksums(append([]byte(nil), frame...))
	if string(fixed) != string(frame) {
		t.Errorf("checksums differ from reference:\n got % x\nwant % x", frame, fixed)
	}
}

func encodeTCP(t testing.TB, f TCPFrame, payload []byte) []byte {
	t.Helper()
	b := make([]byte, TCPFrameLen(&f, len(payload)))
	n := EncodeTCP(b, &f, payload, nil)
	if n != len(b) {
		t.Fatalf("EncodeTCP = %d, want %d", n, len(b))
	}
	return b
}

func tcp4(t testing.TB, h TCPHeader, payload []byte) []byte {
	return encodeTCP(t, TCPFrame{EthSrc: macA, EthDst: macB, Src: ip4A, Dst: ip4B, TCP: h}, payload)
}

func tcp6(t testing.TB, h TCPHeader, payload []byte) []byte {
	return encodeTCP(t, TCPFrame{EthSrc: macA, EthDst: macB, Src: ip6A, Dst: ip6B, TCP: h}, payload)
}

// withRawTCPOptions rebuilds a TCP frame with opts as its option bytes
// (whatever they are) in place of the encoded ones.
func withRawTCPOptions(t testing.TB, v6 bool, h TCPHeader, opts, payload []byte) []byte {
	h.Options = TCPOptions{}
	var f []byte
	if v6 {
		f = tcp6(t, h, append(append([]byte(nil), opts...), payload...))
	} else {
		f = tcp4(t, h, append(append([]byte(nil), opts...), payload...))
	}
	l4 := EthernetHeaderLen + IPv4HeaderLen
	if v6 {
		l4 = EthernetHeaderLen + IPv6HeaderLen
	}
	f[l4+12] = byte((TCPHeaderLen+len(opts))/4) << 4
	return fixChecksums(f)
}

// withVLANTags inserts 802.1Q/802.1ad tags (TPID, VID pairs, outermost
// first) after the MAC addresses.
func withVLANTags(frame []byte, tags ...uint16) []byte {
	out := append([]byte(nil), frame[:12]...)
	for i := 0; i+1 < len(tags); i += 2 {
		out = binary.BigEndian.AppendUint16(out, tags[i])
		out = binary.BigEndian.AppendUint16(out, tags[i+1])
	}
	return append(out, frame[12:]...)
}

// withIPv4Options inserts opts (a multiple of 4 bytes) after the IPv4 header
// and fixes IHL, total length and the header checksum.
func withIPv4Options(frame, opts []byte) []byte {
	l3 := l3Offset(frame)
	out := append([]byte(nil), frame[:l3+IPv4HeaderLen]...)
	out = append(out, opts...)
	out = append(out, frame[l3+IPv4HeaderLen:]...)
	ip := out[l3:]
	ip[0] = 0x40 | byte((IPv4HeaderLen+len(opts))/4)
	binary.BigEndian.PutUint16(ip[2:], binary.BigEndian.Uint16(ip[2:])+uint16(len(opts)))
	return fixChecksums(out)
}

func mustParse(t testing.TB, frame []byte) *Packet {
	t.Helper()
	var p Packet
	if d := Parse(frame, &p, 0); d != DropNone {
		t.Fatalf("Parse = %v, want none", d)
	}
	return &p
}

// echoRequest builds an echo request from A to B carrying data.
func echoRequest(v6 bool, id, seq uint16, data []byte) []byte {
	src, dst := ip4A, ip4B
	et, proto, typ := uint16(EtherTypeIPv4), uint8(ProtoICMP), uint8(ICMPv4EchoRequest)
	ipLen := IPv4HeaderLen
	if v6 {
		src, dst = ip6A, ip6B
		et, proto, typ, ipLen = EtherTypeIPv6, ProtoICMPv6, ICMPv6EchoRequest, IPv6HeaderLen
	}
	b := make([]byte, EthernetHeaderLen+ipLen+ICMPHeaderLen+len(data))
	putEthernet(b, macB, macA, et)
	if v6 {
		putIPv6Header(b[EthernetHeaderLen:], src, dst, proto, 64, ICMPHeaderLen+len(data))
	} else {
		putIPv4Header(b[EthernetHeaderLen:], src, dst, proto, 64, len(b)-EthernetHeaderLen, false)
	}
	m := b[EthernetHeaderLen+ipLen:]
	m[0] = typ
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], data)
	return fixChecksums(b)
}
