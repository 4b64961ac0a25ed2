package wire

import (
	"encoding/binary"
	"net/netip"
)

// TCP header flags (RFC 9293 §3.1; ECE and CWR from RFC 3168 §23.2).
const (
	FlagFIN = 0x01
	FlagSYN = 0x02
	FlagRST = 0x04
	FlagPSH = 0x08
	FlagACK = 0x10
	FlagURG = 0x20
	FlagECE = 0x40
	FlagCWR = 0x80
)

// TCPHeaderLen is the length of a TCP header without options.
const TCPHeaderLen = 20

// TCPHeader is a TCP header; the data offset and checksum are derived.
type TCPHeader struct {
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            uint8
	Window           uint16
	Urgent           uint16
	Options          TCPOptions
}

// parseTCP checks the segment seg (cut to the IP length) and fills p.TCP and
// p.Payload. addrs are the source and destination addresses as they sit in
// the IP header, for the pseudo-header.
func parseTCP(seg, addrs []byte, p *Packet, flags ParseFlags) Drop {
	if len(seg) < TCPHeaderLen {
		return DropTruncated
	}
	hlen := int(seg[12]>>4) * 4
	if hlen < TCPHeaderLen || hlen > len(seg) {
		return DropBadTCPHeader
	}
	// RFC 9293 §3.10.7.1 (first check): a segment with a bad checksum is
	// silently discarded, before any option is believed.
	if flags&ParseSkipL4Checksum == 0 {
		ps := pseudoSum(addrs, ProtoTCP, len(seg))
		if Checksum(seg, ps) != 0 {
			// A CHECKSUM_PARTIAL sender's field: the pseudo-header sum,
			// folded, not complemented (see ParseAllowPartialL4Checksum).
			if flags&ParseAllowPartialL4Checksum == 0 || binary.BigEndian.Uint16(seg[16:18]) != Fold(ps) {
				return DropTCPChecksum
			}
			p.PartialChecksum = true
		}
	}
	h := &p.TCP
	h.SrcPort = binary.BigEndian.Uint16(seg[0:2])
	h.DstPort = binary.BigEndian.Uint16(seg[2:4])
	h.Seq = binary.BigEndian.Uint32(seg[4:8])
	h.Ack = binary.BigEndian.Uint32(seg[8:12])
	h.Flags = seg[13]
	h.Window = binary.BigEndian.Uint16(seg[14:16])
	h.Urgent = binary.BigEndian.Uint16(seg[18:20])
	if hlen > TCPHeaderLen && !ParseTCPOptions(seg[TCPHeaderLen:hlen], &h.Options) {
		p.IgnoredTCPOptions = true // a malformed option is ignored, as Linux ignores it
	}
	p.Payload = seg[hlen:]
	return DropNone
}

// TCPFrame describes an outgoing Ethernet+IPv4/IPv6+TCP frame.
type TCPFrame struct {
	EthSrc, EthDst MAC
	Src, Dst       netip.Addr // both IPv4 or both IPv6
	TTL            uint8      // 0 means 64
	TCP            TCPHeader  // data offset computed from Options.Len()
}

// TCPFrameLen is the length of the frame EncodeTCP writes for f with
// payloadLen payload bytes.
func TCPFrameLen(f *TCPFrame, payloadLen int) int {
	ipLen := IPv6HeaderLen
	if f.Src.Is4() {
		ipLen = IPv4HeaderLen
	}
	return EthernetHeaderLen + ipLen + TCPHeaderLen + f.TCP.Options.Len() + payloadLen
}

// EncodeTCP writes f's headers into b followed by p1 then p2 (the payload in
// up to two parts, as it sits in a ring buffer), fills every length and
// checksum (IPv4 header checksum; TCP checksum over the pseudo-header), and
// returns the frame length, or 0 if b is too small, the addresses are of
// mixed families or invalid, or the IP length would overflow. IPv4 datagrams
// carry DF (RFC 1191 path MTU discovery, as Linux does for TCP) and ID 0.
// Never allocates.
func EncodeTCP(b []byte, f *TCPFrame, p1, p2 []byte) int {
	v4 := f.Src.Is4()
	if !f.Src.IsValid() || v4 != f.Dst.Is4() || !f.Dst.IsValid() {
		return 0
	}
	optLen := f.TCP.Options.Len()
	segLen := TCPHeaderLen + optLen + len(p1) + len(p2)
	// The IPv4 total length counts the header, the IPv6 payload length
	// does not; both are 16 bits.
	l4, maxSeg := EthernetHeaderLen+IPv6HeaderLen, maxIPLen
	if v4 {
		l4, maxSeg = EthernetHeaderLen+IPv4HeaderLen, maxIPLen-IPv4HeaderLen
	}
	n := l4 + segLen
	if len(b) < n || segLen > maxSeg {
		return 0
	}
	var addrs []byte
	if v4 {
		putEthernet(b, f.EthDst, f.EthSrc, EtherTypeIPv4)
		putIPv4Header(b[EthernetHeaderLen:], f.Src, f.Dst, ProtoTCP, f.TTL, IPv4HeaderLen+segLen, true)
		addrs = b[EthernetHeaderLen+12 : EthernetHeaderLen+20]
	} else {
		putEthernet(b, f.EthDst, f.EthSrc, EtherTypeIPv6)
		putIPv6Header(b[EthernetHeaderLen:], f.Src, f.Dst, ProtoTCP, f.TTL, segLen)
		addrs = b[EthernetHeaderLen+8 : EthernetHeaderLen+40]
	}
	seg := b[l4:n]
	h := &f.TCP
	binary.BigEndian.PutUint16(seg[0:2], h.SrcPort)
	binary.BigEndian.PutUint16(seg[2:4], h.DstPort)
	binary.BigEndian.PutUint32(seg[4:8], h.Seq)
	binary.BigEndian.PutUint32(seg[8:12], h.Ack)
	seg[12] = byte(((TCPHeaderLen + optLen) / 4) << 4)
	seg[13] = h.Flags
	binary.BigEndian.PutUint16(seg[14:16], h.Window)
	seg[16], seg[17] = 0, 0
	binary.BigEndian.PutUint16(seg[18:20], h.Urgent)
	h.Options.Encode(seg[TCPHeaderLen:])
	payload := seg[TCPHeaderLen+optLen:]
	copy(payload[copy(payload, p1):], p2)
	binary.BigEndian.PutUint16(seg[16:18], Checksum(seg, pseudoSum(addrs, ProtoTCP, segLen)))
	return n
}
