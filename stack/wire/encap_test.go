package wire

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// EncodeIPInIP wraps a whole packet of either family in an outer header of
// the destination's family; the inner packet comes back byte for byte, and
// IPPacket leaves Ethernet padding out.
func TestEncodeIPInIP(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		f := TCPFrame{EthSrc: macA, EthDst: macB, Src: ip4A, Dst: ip4B, TCP: sackHdr}
		outerSrc, outerDst, proto, et := ip4B, ip4A, uint8(ProtoIPIP), uint16(EtherTypeIPv4)
		if v6 {
			f.Src, f.Dst = ip6A, ip6B
			outerSrc, outerDst, proto, et = ip6B, ip6A, ProtoIPv6Encap, EtherTypeIPv6
		}
		frame := append(encodeTCP(t, f, []byte("data")), 0, 0, 0, 0) // padding
		p := mustParse(t, frame)
		inner := p.IPPacket()
		if len(inner) != len(frame)-4-EthernetHeaderLen {
			t.Fatalf("v6=%v: IPPacket is %d bytes, want %d", v6, len(inner), len(frame)-4-EthernetHeaderLen)
		}
		b := make([]byte, 2048)
		n := EncodeIPInIP(b, macB, macA, outerSrc, outerDst, inner)
		over := EncapOverhead(outerDst)
		if n != EthernetHeaderLen+over+len(inner) {
			t.Fatalf("v6=%v: frame of %d bytes, want %d", v6, n, EthernetHeaderLen+over+len(inner))
		}
		b = b[:n]
		if MAC(b[0:6]) != macA || MAC(b[6:12]) != macB || binary.BigEndian.Uint16(b[12:]) != et {
			t.Errorf("v6=%v: Ethernet header %x", v6, b[:14])
		}
		o := b[EthernetHeaderLen:]
		if v6 {
			if o[0]>>4 != 6 || o[6] != proto || int(binary.BigEndian.Uint16(o[4:])) != len(inner) {
				t.Errorf("outer IPv6 header %x", o[:40])
			}
		} else if o[0] != 0x45 || o[9] != proto || int(binary.BigEndian.Uint16(o[2:])) != over+len(inner) || Checksum(o[:20], 0) != 0 {
			t.Errorf("outer IPv4 header %x", o[:20])
		}
		if !bytes.Equal(o[over:], inner) {
			t.Errorf("v6=%v: inner packet changed", v6)
		}
		if EncodeIPInIP(b[:n-1], macB, macA, outerSrc, outerDst, inner) != 0 {
			t.Errorf("v6=%v: encoded into a short buffer", v6)
		}
		if EncodeIPInIP(make([]byte, 2048), macB, macA, ip4A, ip6B, inner) != 0 {
			t.Errorf("v6=%v: encoded between families", v6)
		}
	}
}
