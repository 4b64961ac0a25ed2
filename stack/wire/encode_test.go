package wire

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

func TestEncodeTCPSplitPayload(t *testing.T) {
	data := make([]byte, 301)
	for i := range data {
		data[i] = byte(i*31 + 7)
	}
	for _, v6 := range []bool{false, true} {
		f := TCPFrame{EthSrc: macA, EthDst: macB, Src: ip4A, Dst: ip4B, TTL: 33, TCP: sackHdr}
		if v6 {
			f.Src, f.Dst = ip6A, ip6B
		}
		whole := encodeTCP(t, f, data)
		checksumsOK(t, whole)
		// Any split, odd ones included, gives the same bytes.
		for cut := 0; cut <= len(data); cut++ {
			b := make([]byte, len(whole))
			if n := EncodeTCP(b, &f, data[:cut], data[cut:]); n != len(whole) || !bytes.Equal(b, whole) {
				t.Fatalf("v6=%v cut %d: frame differs", v6, cut)
			}
		}
		p := mustParse(t, whole)
		if p.TCP != sackHdr || !bytes.Equal(p.Payload, data) || p.TTL != 33 {
			t.Errorf("v6=%v: parsed %+v ttl %d", v6, p.TCP, p.TTL)
		}
	}
}

func TestEncodeTCPHeaderFields(t *testing.T) {
	f := TCPFrame{EthSrc: macA, EthDst: macB, Src: ip4A, Dst: ip4B, TCP: synHdr}
	b := encodeTCP(t, f, nil)
	ip := b[l3:]
	if ip[0] != 0x45 || binary.BigEndian.Uint16(ip[6:]) != 0x4000 || ip[8] != 64 || ip[9] != ProtoTCP ||
		binary.BigEndian.Uint16(ip[2:]) != uint16(len(b)-l3) {
		t.Errorf("IPv4 header % x", ip[:20])
	}
	if b[l4v4+12] != byte((20+synOpts.Len())/4)<<4 {
		t.Errorf("data offset byte %#x", b[l4v4+12])
	}
	f.Src, f.Dst = ip6A, ip6B
	b = encodeTCP(t, f, []byte{1, 2, 3})
	ip = b[l3:]
	if binary.BigEndian.Uint32(ip) != 6<<28 || int(binary.BigEndian.Uint16(ip[4:])) != len(b)-l4v6 ||
		ip[6] != ProtoTCP || ip[7] != 64 {
		t.Errorf("IPv6 header % x", ip[:8])
	}
}

func TestEncodeTCPRefuses(t *testing.T) {
	f := TCPFrame{Src: ip4A, Dst: ip6B, TCP: ackHdr}
	b := make([]byte, 2000)
	if EncodeTCP(b, &f, nil, nil) != 0 {
		t.Error("mixed families encoded")
	}
	f.Src, f.Dst = netip.Addr{}, netip.Addr{}
	if EncodeTCP(b, &f, nil, nil) != 0 {
		t.Error("invalid addresses encoded")
	}
	f.Src, f.Dst = ip4A, ip4B
	n := TCPFrameLen(&f, 10)
	for short := range n {
		if EncodeTCP(b[:short], &f, make([]byte, 4), make([]byte, 6)) != 0 {
			t.Fatalf("encoded into %d bytes, need %d", short, n)
		}
	}
	if got := EncodeTCP(b[:n], &f, make([]byte, 4), make([]byte, 6)); got != n {
		t.Errorf("EncodeTCP = %d, TCPFrameLen = %d", got, n)
	}
	big := make([]byte, 70000)
	if EncodeTCP(big, &f, big[:65535-40], nil) != 0 {
		t.Error("IPv4 total length overflow encoded")
	}
	f.TCP.Options = TCPOptions{}
	if n := EncodeTCP(big, &f, big[:65535-40], nil); n != EthernetHeaderLen+65535 {
		t.Errorf("largest IPv4 datagram: %d", n)
	}
	f.Src, f.Dst = ip6A, ip6B
	if n := EncodeTCP(big, &f, big[:65535-20], nil); n != EthernetHeaderLen+IPv6HeaderLen+65535 {
		t.Errorf("largest IPv6 packet: %d", n)
	}
	if EncodeTCP(big, &f, big[:65535-20], big[:1]) != 0 {
		t.Error("IPv6 payload length overflow encoded")
	}
}

func TestEncodeTCPDoesNotAllocate(t *testing.T) {
	f := TCPFrame{EthSrc: macA, EthDst: macB, Src: ip6A, Dst: ip6B, TCP: sackHdr}
	b, p := make([]byte, 2000), make([]byte, 1448)
	if n := testing.AllocsPerRun(100, func() { EncodeTCP(b, &f, p[:1000], p[1000:]) }); n != 0 {
		t.Errorf("%v allocs", n)
	}
}

func TestEncodeEchoReply(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		req := echoRequest(v6, 0xbeef, 42, payload)
		for _, variant := range []string{"plain", "vlan", "ip options", "in place"} {
			frame := append([]byte(nil), req...)
			switch variant {
			case "vlan":
				frame = withVLANTags(frame, EtherTypeVLAN, 12)
			case "ip options":
				if v6 {
					continue
				}
				frame = withIPv4Options(frame, []byte{1, 1, 1, 1, 1, 1, 1, 0})
			case "in place":
				// With IPv4 options the payload moves towards the front.
				if !v6 {
					frame = withIPv4Options(frame, []byte{1, 1, 1, 0})
				}
			}
			p := mustParse(t, frame)
			out := make([]byte, 2000)
			if variant == "in place" {
				out = frame
			}
			n := EncodeEchoReply(out, p)
			if n == 0 {
				t.Fatalf("v6=%v %s: EncodeEchoReply = 0", v6, variant)
			}
			checksumsOK(t, out[:n])
			var r Packet
			if d := Parse(out[:n], &r, 0); d != DropNone {
				t.Fatalf("v6=%v %s: reply does not parse: %v", v6, variant, d)
			}
			wantType := uint8(ICMPv4EchoReply)
			if v6 {
				wantType = ICMPv6EchoReply
			}
			if r.ICMP.Type != wantType || r.ICMP.ID != 0xbeef || r.ICMP.Seq != 42 || !bytes.Equal(r.Payload, payload) ||
				r.Src != p.Dst || r.Dst != p.Src || r.EthSrc != macB || r.EthDst != macA || r.VLAN != p.VLAN {
				t.Errorf("v6=%v %s: reply %+v from %v to %v vlan %d", v6, variant, r.ICMP, r.Src, r.Dst, r.VLAN)
			}
		}
	}
}

func TestEncodeEchoReplyRefuses(t *testing.T) {
	b := make([]byte, 2000)
	if EncodeEchoReply(b, &Packet{}) != 0 {
		t.Error("zero packet answered")
	}
	mc := fixChecksums(set(echoRequest(false, 1, 1, nil), l3+16, 224, 0, 0, 1))
	bc := fixChecksums(set(echoRequest(false, 1, 1, nil), l3+16, 255, 255, 255, 255))
	mc6 := fixChecksums(set(echoRequest(true, 1, 1, nil), l3+24, 0xff, 0x02))
	reply := echoRequest(false, 1, 1, nil)
	reply[l4v4] = ICMPv4EchoReply
	fixChecksums(reply)
	for name, f := range map[string][]byte{"multicast": mc, "broadcast": bc, "multicast6": mc6, "reply": reply} {
		if EncodeEchoReply(b, mustParse(t, f)) != 0 {
			t.Errorf("%s answered", name)
		}
	}
	p := mustParse(t, echoRequest(true, 1, 1, payload))
	if EncodeEchoReply(b[:len(p.Frame)-1], p) != 0 {
		t.Error("encoded into a short buffer")
	}
	if n := EncodeEchoReply(b[:len(p.Frame)], p); n != len(p.Frame) {
		t.Errorf("EncodeEchoReply = %d, want %d", n, len(p.Frame))
	}
}

func TestEncodeARP(t *testing.T) {
	b := make([]byte, ARPFrameLen)
	if EncodeARP(b[:ARPFrameLen-1], ARPRequest, macA, ip4A, MAC{}, ip4B) != 0 {
		t.Error("encoded into a short buffer")
	}
	if EncodeARP(b, ARPRequest, macA, ip6A, MAC{}, ip4B) != 0 {
		t.Error("IPv6 sender encoded")
	}
	// A unicast request (RFC 1122 §2.3.2.1 revalidation) keeps its destination.
	if EncodeARP(b, ARPRequest, macA, ip4A, macB, ip4B) != ARPFrameLen {
		t.Fatal("EncodeARP failed")
	}
	p := mustParse(t, b)
	if p.EthDst != macB || p.ARP.TargetMAC != macB || p.ARP.Op != ARPRequest {
		t.Errorf("got %+v to %v", p.ARP, p.EthDst)
	}
}

func TestEncodeNeighborRefuses(t *testing.T) {
	b := make([]byte, 200)
	if EncodeNeighborAdvert(b[:NeighborAdvertLen-1], macA, ip6A, macB, ip6B, ip6A) != 0 ||
		EncodeNeighborSolicit(b[:NeighborSolicitLen-1], macA, ip6A, ip6B) != 0 {
		t.Error("encoded into a short buffer")
	}
	if EncodeNeighborAdvert(b, macA, ip4A, macB, ip6B, ip6A) != 0 || EncodeNeighborSolicit(b, macA, ip6A, ip4B) != 0 {
		t.Error("IPv4 address accepted")
	}
	if n := EncodeNeighborSolicit(b[:NeighborSolicitLen-8], macA, netip.IPv6Unspecified(), ip6B); n != NeighborSolicitLen-8 {
		t.Errorf("DAD solicit = %d", n)
	}
}

func TestEncodeICMPErrors(t *testing.T) {
	big4 := tcp4(t, ackHdr, make([]byte, 1400))
	big6 := tcp6(t, ackHdr, make([]byte, 1400))
	b := make([]byte, 2000)
	n := EncodeICMPFragNeeded(b, macB, macA, ip4B, 1300, big4[l3:])
	if n != EthernetHeaderLen+576 {
		t.Errorf("frag needed is %d bytes, want the 576-byte cap", n-EthernetHeaderLen)
	}
	checksumsOK(t, b[:n])
	n = EncodePacketTooBig(b, macB, macA, ip6B, 1280, big6[l3:])
	if n != EthernetHeaderLen+1280 {
		t.Errorf("packet too big is %d bytes, want the 1280-byte cap", n-EthernetHeaderLen)
	}
	checksumsOK(t, b[:n])
	if EncodeICMPFragNeeded(b, macB, macA, ip4B, 1300, big6[l3:]) != 0 ||
		EncodePacketTooBig(b, macB, macA, ip6B, 1300, big4[l3:]) != 0 ||
		EncodeICMPFragNeeded(b, macB, macA, ip6B, 1300, big4[l3:]) != 0 ||
		EncodeICMPFragNeeded(b, macB, macA, ip4B, 1300, big4[l3:l3+19]) != 0 {
		t.Error("mismatched family accepted")
	}
	if EncodeICMPFragNeeded(b[:100], macB, macA, ip4B, 1300, big4[l3:]) != 0 ||
		EncodePacketTooBig(b[:100], macB, macA, ip6B, 1300, big6[l3:]) != 0 {
		t.Error("encoded into a short buffer")
	}
}

func TestMAC(t *testing.T) {
	if s := (MAC{0x02, 0xab, 0, 0x10, 0xff, 9}).String(); s != "02:ab:00:10:ff:09" {
		t.Errorf("String = %q", s)
	}
	if !BroadcastMAC.IsMulticast() || macA.IsMulticast() || !(MAC{}).IsZero() || macA.IsZero() {
		t.Error("IsMulticast/IsZero")
	}
	if got := SolicitedNodeAddr(netip.MustParseAddr("fe80::2aa:ff:fe28:9c5a")); got != netip.MustParseAddr("ff02::1:ff28:9c5a") {
		t.Errorf("SolicitedNodeAddr = %v", got) // RFC 4291 §2.7.1 style example
	}
	if got := IPv6MulticastMAC(netip.MustParseAddr("ff02::1:ff28:9c5a")); got != (MAC{0x33, 0x33, 0xff, 0x28, 0x9c, 0x5a}) {
		t.Errorf("IPv6MulticastMAC = %v", got)
	}
}
