package wire

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strconv"
	"testing"
)

var (
	synOpts = TCPOptions{MSS: 1460, SACKPermitted: true, HasTimestamps: true, TSVal: 0x01020304, HasWScale: true, WScale: 7}
	synHdr  = TCPHeader{SrcPort: 40000, DstPort: 443, Seq: 1000, Flags: FlagSYN, Window: 64240, Options: synOpts}
	ackHdr  = TCPHeader{SrcPort: 40000, DstPort: 443, Seq: 1001, Ack: 5001, Flags: FlagACK | FlagPSH, Window: 502, Urgent: 0,
		Options: TCPOptions{HasTimestamps: true, TSVal: 100, TSEcr: 200}}
	sackHdr = TCPHeader{SrcPort: 443, DstPort: 40000, Seq: 7, Ack: 9, Flags: FlagACK, Window: 1000,
		Options: TCPOptions{HasTimestamps: true, TSVal: 5, TSEcr: 6, NumSACK: 3,
			SACK: [4]SACKBlock{{100, 200}, {300, 400}, {500, 600}}}}
	sack4Hdr = TCPHeader{SrcPort: 1, DstPort: 2, Seq: 0xffffffff, Ack: 0x80000000, Flags: FlagACK | FlagECE | FlagCWR | FlagURG, Window: 0xffff, Urgent: 3,
		Options: TCPOptions{NumSACK: 4, SACK: [4]SACKBlock{{1, 2}, {3, 4}, {5, 6}, {0xfffffff0, 0x10}}}}
	payload = []byte("GET / HTTP/1.1\r\nHost: example\r\n\r\n")
)

type parseCase struct {
	name  string
	frame []byte
	flags ParseFlags
	want  Drop
	check func(t *testing.T, p *Packet)
}

// expectTCP checks the TCP view of a frame built from h and pl between A and B.
func expectTCP(src, dst netip.Addr, l3, l4 int, h TCPHeader, pl []byte) func(*testing.T, *Packet) {
	return func(t *testing.T, p *Packet) {
		t.Helper()
		if p.Proto != ProtoTCP || p.Src != src || p.Dst != dst || p.L3 != l3 || p.L4 != l4 {
			t.Errorf("proto %d %v > %v L3 %d L4 %d, want %d %v > %v L3 %d L4 %d",
				p.Proto, p.Src, p.Dst, p.L3, p.L4, ProtoTCP, src, dst, l3, l4)
		}
		if p.EthSrc != macA || p.EthDst != macB {
			t.Errorf("MACs %v > %v", p.EthSrc, p.EthDst)
		}
		if p.TCP != h {
			t.Errorf("TCP\n got %+v\nwant %+v", p.TCP, h)
		}
		if !bytes.Equal(p.Payload, pl) {
			t.Errorf("payload %q, want %q", p.Payload, pl)
		}
	}
}

func set(frame []byte, off int, v ...byte) []byte {
	f := append([]byte(nil), frame...)
	copy(f[off:], v)
	return f
}

func set16(frame []byte, off int, v uint16) []byte {
	f := append([]byte(nil), frame...)
	binary.BigEndian.PutUint16(f[off:], v)
	return f
}

const (
	l3   = EthernetHeaderLen
	l4v4 = EthernetHeaderLen + IPv4HeaderLen
	l4v6 = EthernetHeaderLen + IPv6HeaderLen
)

func parseCases(t testing.TB) []parseCase {
	v4 := func(h TCPHeader, pl []byte) []byte { return tcp4(t, h, pl) }
	v6 := func(h TCPHeader, pl []byte) []byte { return tcp6(t, h, pl) }
	opt := func(o TCPOptions) TCPHeader { h := ackHdr; h.Options = o; return h }

	var cs []parseCase
	valid := func(name string, frame []byte, check func(*testing.T, *Packet)) {
		cs = append(cs, parseCase{name: name, frame: frame, check: check})
	}
	drop := func(name string, frame []byte, want Drop) {
		cs = append(cs, parseCase{name: name, frame: frame, want: want})
	}

	// TCP, each option alone and together.
	valid("tcp4 syn all options", v4(synHdr, nil), expectTCP(ip4A, ip4B, l3, l4v4, synHdr, nil))
	valid("tcp4 ack timestamps payload", v4(ackHdr, payload), expectTCP(ip4A, ip4B, l3, l4v4, ackHdr, payload))
	valid("tcp4 ts + 3 sack", v4(sackHdr, payload), expectTCP(ip4A, ip4B, l3, l4v4, sackHdr, payload))
	valid("tcp4 4 sack all flags", v4(sack4Hdr, []byte{1}), expectTCP(ip4A, ip4B, l3, l4v4, sack4Hdr, []byte{1}))
	for _, o := range []TCPOptions{
		{MSS: 536},
		{HasWScale: true, WScale: 14},
		{SACKPermitted: true},
		{HasTimestamps: true, TSVal: 0xffffffff, TSEcr: 1},
		{NumSACK: 1, SACK: [4]SACKBlock{{10, 20}}},
		{},
	} {
		h := opt(o)
		valid("tcp4 option "+optionsName(o), v4(h, payload), expectTCP(ip4A, ip4B, l3, l4v4, h, payload))
		valid("tcp6 option "+optionsName(o), v6(h, payload), expectTCP(ip6A, ip6B, l3, l4v6, h, payload))
	}
	valid("tcp6 syn all options", v6(synHdr, nil), expectTCP(ip6A, ip6B, l3, l4v6, synHdr, nil))
	valid("tcp6 4 sack", v6(sack4Hdr, payload), expectTCP(ip6A, ip6B, l3, l4v6, sack4Hdr, payload))

	// Options laid out the way other stacks send them.
	compact := []byte{2, 4, 0x05, 0xb4, 3, 3, 7, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 0}
	wantCompact := ackHdr
	wantCompact.Options = TCPOptions{MSS: 1460, HasWScale: true, WScale: 7, SACKPermitted: true,
		HasTimestamps: true, TSVal: 0x01020304}
	valid("tcp4 compact options", withRawTCPOptions(t, false, ackHdr, compact, payload),
		expectTCP(ip4A, ip4B, l3, l4v4, wantCompact, payload))
	unknown := []byte{254, 6, 0xf9, 0x89, 9, 9, 30, 4, 0, 0, 2, 4, 0x02, 0x18, 1, 1}
	wantUnknown := ackHdr
	wantUnknown.Options = TCPOptions{MSS: 536}
	valid("tcp6 unknown options skipped", withRawTCPOptions(t, true, ackHdr, unknown, payload),
		expectTCP(ip6A, ip6B, l3, l4v6, wantUnknown, payload))
	afterEOL := []byte{2, 4, 0x02, 0x18, 0, 0xff, 0x00, 0xff}
	valid("tcp4 garbage after EOL ignored", withRawTCPOptions(t, false, ackHdr, afterEOL, nil),
		expectTCP(ip4A, ip4B, l3, l4v4, wantUnknown, nil))
	valid("tcp4 mss 0 is absent", withRawTCPOptions(t, false, ackHdr, []byte{2, 4, 0, 0}, nil),
		expectTCP(ip4A, ip4B, l3, l4v4, opt(TCPOptions{}), nil))

	// Link and IP layer variations.
	valid("tcp4 ip options skipped", withIPv4Options(v4(ackHdr, payload), []byte{0x94, 4, 0, 0, 1, 1, 1, 0}),
		expectTCP(ip4A, ip4B, l3, l4v4+8, ackHdr, payload))
	padded := append(v4(opt(TCPOptions{}), nil), 0xde, 0xad, 0xbe, 0xef, 0xde, 0xad)
	valid("tcp4 ethernet padding ignored", padded, expectTCP(ip4A, ip4B, l3, l4v4, opt(TCPOptions{}), nil))
	padded6 := append(v6(ackHdr, []byte{7}), 1, 2, 3)
	valid("tcp6 trailing bytes ignored", padded6, expectTCP(ip6A, ip6B, l3, l4v6, ackHdr, []byte{7}))
	vlan := withVLANTags(v4(ackHdr, payload), EtherTypeVLAN, 0x2064) // PCP 1, VID 100
	cs = append(cs, parseCase{name: "vlan tagged", frame: vlan, check: func(t *testing.T, p *Packet) {
		expectTCP(ip4A, ip4B, l3+4, l4v4+4, ackHdr, payload)(t, p)
		if p.VLAN != 100 || p.EtherType != EtherTypeIPv4 {
			t.Errorf("VLAN %d EtherType %#x", p.VLAN, p.EtherType)
		}
	}})
	qinq := withVLANTags(v6(ackHdr, payload), EtherTypeQinQ, 200, EtherTypeVLAN, 100)
	cs = append(cs, parseCase{name: "qinq tagged", frame: qinq, check: func(t *testing.T, p *Packet) {
		expectTCP(ip6A, ip6B, l3+8, l4v6+8, ackHdr, payload)(t, p)
		if p.VLAN != 200 || p.EtherType != EtherTypeIPv6 {
			t.Errorf("VLAN %d EtherType %#x", p.VLAN, p.EtherType)
		}
	}})
	ttl := v4(ackHdr, nil)
	cs = append(cs, parseCase{name: "ttl exposed", frame: ttl, check: func(t *testing.T, p *Packet) {
		if p.TTL != 64 {
			t.Errorf("TTL %d, want 64", p.TTL)
		}
	}})
	badSum := set(v4(ackHdr, payload), l4v4+16, 0x12, 0x34)
	cs = append(cs, parseCase{name: "skip l4 checksum", frame: badSum, flags: ParseSkipL4Checksum,
		check: expectTCP(ip4A, ip4B, l3, l4v4, ackHdr, payload)})

	// CHECKSUM_PARTIAL segments, as the kernel behind a veth with TX
	// checksum offload sends them: the field holds the pseudo-header sum.
	// A corrupted header or payload under such a field goes unnoticed by
	// design (nothing sums them); what must still be caught is a field that
	// is neither the checksum nor that exact sum.
	withFlags := func(name string, frame []byte, flags ParseFlags, want Drop, check func(*testing.T, *Packet)) {
		cs = append(cs, parseCase{name: name, frame: frame, flags: flags, want: want, check: check})
	}
	partialIs := func(want bool, check func(*testing.T, *Packet)) func(*testing.T, *Packet) {
		return func(t *testing.T, p *Packet) {
			t.Helper()
			check(t, p)
			if p.PartialChecksum != want {
				t.Errorf("PartialChecksum %v, want %v", p.PartialChecksum, want)
			}
		}
	}
	const allow = ParseAllowPartialL4Checksum
	full4, full6 := v4(ackHdr, payload), v6(ackHdr, payload)
	part4, part6 := asPartial(full4), asPartial(full6)
	withFlags("tcp4 valid, partial allowed", full4, allow, DropNone,
		partialIs(false, expectTCP(ip4A, ip4B, l3, l4v4, ackHdr, payload)))
	withFlags("tcp6 valid, partial allowed", full6, allow, DropNone,
		partialIs(false, expectTCP(ip6A, ip6B, l3, l4v6, ackHdr, payload)))
	withFlags("tcp4 partial allowed", part4, allow, DropNone,
		partialIs(true, expectTCP(ip4A, ip4B, l3, l4v4, ackHdr, payload)))
	withFlags("tcp6 partial allowed", part6, allow, DropNone,
		partialIs(true, expectTCP(ip6A, ip6B, l3, l4v6, ackHdr, payload)))
	withFlags("tcp4 syn partial allowed", asPartial(v4(synHdr, nil)), allow, DropNone,
		partialIs(true, expectTCP(ip4A, ip4B, l3, l4v4, synHdr, nil)))
	withFlags("tcp6 syn partial allowed", asPartial(v6(synHdr, nil)), allow, DropNone,
		partialIs(true, expectTCP(ip6A, ip6B, l3, l4v6, synHdr, nil)))
	withFlags("tcp4 partial behind ip options", asPartial(withIPv4Options(full4, []byte{1, 1, 1, 0})), allow, DropNone,
		partialIs(true, expectTCP(ip4A, ip4B, l3, l4v4+4, ackHdr, payload)))
	withFlags("tcp6 partial qinq", asPartial(qinq), allow, DropNone,
		partialIs(true, expectTCP(ip6A, ip6B, l3+8, l4v6+8, ackHdr, payload)))
	withFlags("tcp4 partial, skip wins", part4, allow|ParseSkipL4Checksum, DropNone,
		partialIs(false, expectTCP(ip4A, ip4B, l3, l4v4, ackHdr, payload)))
	withFlags("tcp4 partial strict", part4, 0, DropTCPChecksum, nil)
	withFlags("tcp6 partial strict", part6, 0, DropTCPChecksum, nil)
	withFlags("tcp4 partial field bit flipped", withL4Field(part4, tcpField(part4)^0x0100), allow, DropTCPChecksum, nil)
	withFlags("tcp6 partial field bit flipped", withL4Field(part6, tcpField(part6)^0x0001), allow, DropTCPChecksum, nil)
	withFlags("tcp4 full checksum payload corrupted", set(full4, len(full4)-1, full4[len(full4)-1]^0x10), allow, DropTCPChecksum, nil)
	withFlags("tcp6 full checksum header corrupted", set(full6, l4v6+4, full6[l4v6+4]^1), allow, DropTCPChecksum, nil)
	tseg4, tseg6 := full4[l4v4:], full6[l4v6:]
	addrs4, addrs6 := full4[l3+12:l3+20], full6[l3+8:l3+40]
	// The pseudo-header sum as a sender that got one input wrong would
	// leave it: the TCP header length only, the source address the frame
	// does not carry, UDP's protocol number.
	withFlags("tcp4 partial wrong length", withL4Field(full4, pseudoField(addrs4, ProtoTCP, len(tseg4)-len(payload))), allow, DropTCPChecksum, nil)
	withFlags("tcp6 partial wrong length", withL4Field(full6, pseudoField(addrs6, ProtoTCP, len(tseg6)+1)), allow, DropTCPChecksum, nil)
	otherSrc4 := append([]byte{192, 0, 2, 99}, addrs4[4:]...)
	withFlags("tcp4 partial wrong address", withL4Field(full4, pseudoField(otherSrc4, ProtoTCP, len(tseg4))), allow, DropTCPChecksum, nil)
	otherDst6 := append(append([]byte(nil), addrs6[:31]...), addrs6[31]^1)
	withFlags("tcp6 partial wrong address", withL4Field(full6, pseudoField(otherDst6, ProtoTCP, len(tseg6))), allow, DropTCPChecksum, nil)
	withFlags("tcp4 partial wrong protocol", withL4Field(full4, pseudoField(addrs4, 17, len(tseg4))), allow, DropTCPChecksum, nil)
	// ICMP is never CHECKSUM_PARTIAL from Linux, so the flag does not apply.
	withFlags("icmp6 partial not accepted", asPartial(echoRequest(true, 1, 2, payload)), allow, DropICMPChecksum, nil)

	// ARP.
	arpReq := make([]byte, ARPFrameLen)
	EncodeARP(arpReq, ARPRequest, macA, ip4A, MAC{}, ip4B)
	valid("arp request", arpReq, func(t *testing.T, p *Packet) {
		want := ARP{Op: ARPRequest, SenderMAC: macA, SenderIP: ip4A, TargetIP: ip4B}
		if p.EtherType != EtherTypeARP || p.ARP != want || p.EthDst != BroadcastMAC || p.L3 != l3 {
			t.Errorf("got %+v eth dst %v", p.ARP, p.EthDst)
		}
	})
	arpRep := make([]byte, 60) // padded to the Ethernet minimum
	EncodeARP(arpRep, ARPReply, macB, ip4B, macA, ip4A)
	valid("arp reply padded", arpRep, func(t *testing.T, p *Packet) {
		want := ARP{Op: ARPReply, SenderMAC: macB, SenderIP: ip4B, TargetMAC: macA, TargetIP: ip4A}
		if p.ARP != want || p.EthDst != macA || p.EthSrc != macB {
			t.Errorf("got %+v", p.ARP)
		}
	})
	valid("arp vlan", withVLANTags(arpReq, EtherTypeVLAN, 7), func(t *testing.T, p *Packet) {
		if p.VLAN != 7 || p.ARP.Op != ARPRequest || p.L3 != l3+4 {
			t.Errorf("VLAN %d op %d L3 %d", p.VLAN, p.ARP.Op, p.L3)
		}
	})

	// ICMP echo.
	echoCheck := func(proto, typ uint8, src, dst netip.Addr) func(*testing.T, *Packet) {
		return func(t *testing.T, p *Packet) {
			if p.Proto != proto || p.ICMP.Type != typ || p.ICMP.ID != 0x1234 || p.ICMP.Seq != 7 ||
				!bytes.Equal(p.Payload, payload) || p.Src != src || p.Dst != dst {
				t.Errorf("got %+v payload %q", p.ICMP, p.Payload)
			}
		}
	}
	valid("icmp4 echo request", echoRequest(false, 0x1234, 7, payload), echoCheck(ProtoICMP, ICMPv4EchoRequest, ip4A, ip4B))
	valid("icmp6 echo request", echoRequest(true, 0x1234, 7, payload), echoCheck(ProtoICMPv6, ICMPv6EchoRequest, ip6A, ip6B))
	odd := echoRequest(false, 1, 2, []byte{1, 2, 3})
	valid("icmp4 echo odd length", odd, nil)

	// ICMP errors quoting our TCP segments.
	router4, router6 := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8:ffff::1")
	seg4 := v4(ackHdr, payload)
	fn := make([]byte, 1600)
	fn = fn[:EncodeICMPFragNeeded(fn, macB, macA, router4, 1400, seg4[l3:])]
	valid("icmp4 frag needed quoting tcp", fn, func(t *testing.T, p *Packet) {
		c := p.ICMP
		want := InnerTCP{Valid: true, Src: ip4A, Dst: ip4B, SrcPort: ackHdr.SrcPort, DstPort: ackHdr.DstPort, Seq: ackHdr.Seq}
		if c.Type != ICMPv4DestUnreachable || c.Code != ICMPv4CodeFragNeeded || c.MTU != 1400 || c.Inner != want ||
			p.Src != router4 || p.Dst != ip4A {
			t.Errorf("got %+v from %v to %v", c, p.Src, p.Dst)
		}
	})
	shortQuote := make([]byte, 100)
	shortQuote = shortQuote[:EncodeICMPFragNeeded(shortQuote, macB, macA, router4, 1400, seg4[l3:l4v4+8])]
	valid("icmp4 frag needed minimal quote", shortQuote, func(t *testing.T, p *Packet) {
		if !p.ICMP.Inner.Valid || p.ICMP.Inner.Seq != ackHdr.Seq {
			t.Errorf("inner %+v", p.ICMP.Inner)
		}
	})
	udpQuote := set(seg4, l3+9, 17)
	fixChecksums(udpQuote)
	fnUDP := make([]byte, 1600)
	fnUDP = fnUDP[:EncodeICMPFragNeeded(fnUDP, macB, macA, router4, 1400, udpQuote[l3:])]
	valid("icmp4 frag needed quoting udp", fnUDP, func(t *testing.T, p *Packet) {
		if p.ICMP.Inner.Valid || p.ICMP.MTU != 1400 {
			t.Errorf("got %+v", p.ICMP)
		}
	})
	seg6 := v6(sackHdr, bytes.Repeat([]byte{0xaa}, 1400))
	ptb := make([]byte, 1600)
	ptb = ptb[:EncodePacketTooBig(ptb, macB, macA, router6, 1280, seg6[l3:])]
	valid("icmp6 packet too big quoting tcp", ptb, func(t *testing.T, p *Packet) {
		c := p.ICMP
		want := InnerTCP{Valid: true, Src: ip6A, Dst: ip6B, SrcPort: sackHdr.SrcPort, DstPort: sackHdr.DstPort, Seq: sackHdr.Seq}
		if c.Type != ICMPv6PacketTooBig || c.MTU != 1280 || c.Inner != want || p.Src != router6 || p.Dst != ip6A ||
			len(p.Frame) != l4v6+1280-IPv6HeaderLen {
			t.Errorf("got %+v from %v to %v, frame %d", c, p.Src, p.Dst, len(p.Frame))
		}
	})
	unreach6 := set(ptb, l4v6, ICMPv6DestUnreachable, 4)
	fixChecksums(unreach6)
	valid("icmp6 dest unreachable quoting tcp", unreach6, func(t *testing.T, p *Packet) {
		if p.ICMP.Type != ICMPv6DestUnreachable || p.ICMP.Code != 4 || p.ICMP.MTU != 0 || !p.ICMP.Inner.Valid {
			t.Errorf("got %+v", p.ICMP)
		}
	})

	// Neighbor discovery.
	ns := make([]byte, 128)
	ns = ns[:EncodeNeighborSolicit(ns, macA, ip6A, ip6B)]
	valid("icmp6 neighbor solicit", ns, func(t *testing.T, p *Packet) {
		c := p.ICMP
		if c.Type != ICMPv6NeighborSolicit || c.Target != ip6B || !c.HasLinkAddr || c.LinkAddr != macA ||
			p.TTL != 255 || p.Dst != netip.MustParseAddr("ff02::1:ff03:4") || p.EthDst != (MAC{0x33, 0x33, 0xff, 3, 0, 4}) {
			t.Errorf("got %+v ttl %d to %v %v", c, p.TTL, p.Dst, p.EthDst)
		}
	})
	dad := make([]byte, 128)
	dad = dad[:EncodeNeighborSolicit(dad, macA, netip.IPv6Unspecified(), ip6B)]
	valid("icmp6 neighbor solicit dad", dad, func(t *testing.T, p *Packet) {
		if p.ICMP.Target != ip6B || p.ICMP.HasLinkAddr || !p.Src.IsUnspecified() {
			t.Errorf("got %+v from %v", p.ICMP, p.Src)
		}
	})
	na := make([]byte, 128)
	na = na[:EncodeNeighborAdvert(na, macB, ip6B, macA, ip6A, ip6B)]
	valid("icmp6 neighbor advert", na, func(t *testing.T, p *Packet) {
		c := p.ICMP
		if c.Type != ICMPv6NeighborAdvert || c.Target != ip6B || !c.HasLinkAddr || c.LinkAddr != macB ||
			c.NAFlags != NAFlagSolicited|NAFlagOverride || p.TTL != 255 {
			t.Errorf("got %+v", c)
		}
	})
	naMulti := make([]byte, 128)
	naMulti = naMulti[:EncodeNeighborAdvert(naMulti, macB, ip6B, MAC{0x33, 0x33, 0, 0, 0, 1}, netip.MustParseAddr("ff02::1"), ip6B)]
	valid("icmp6 neighbor advert to all-nodes", naMulti, func(t *testing.T, p *Packet) {
		if p.ICMP.NAFlags != NAFlagOverride {
			t.Errorf("flags %#x", p.ICMP.NAFlags)
		}
	})
	nsExtraOpt := append(append([]byte(nil), ns...), 14, 1, 1, 2, 3, 4, 5, 6) // nonce option, skipped
	binary.BigEndian.PutUint16(nsExtraOpt[l3+4:], 40)
	valid("icmp6 neighbor solicit extra option", fixChecksums(nsExtraOpt), func(t *testing.T, p *Packet) {
		if p.ICMP.LinkAddr != macA {
			t.Errorf("got %+v", p.ICMP)
		}
	})

	// Drops, one crafted defect each.
	good4, good6 := v4(ackHdr, payload), v6(ackHdr, payload)
	drop("empty", nil, DropTruncated)
	drop("short ethernet", good4[:13], DropTruncated)
	drop("vlan tag cut", withVLANTags(good4, EtherTypeVLAN, 1)[:17], DropTruncated)
	drop("qinq tag cut", withVLANTags(good4, EtherTypeQinQ, 1, EtherTypeVLAN, 2)[:20], DropTruncated)
	drop("ipv4 header cut", good4[:l3+19], DropTruncated)
	drop("ipv6 header cut", good6[:l3+39], DropTruncated)
	drop("arp cut", arpReq[:ARPFrameLen-1], DropTruncated)
	drop("tcp header cut", fixChecksums(set16(good4[:l4v4+19], l3+2, IPv4HeaderLen+19)), DropTruncated)
	drop("icmp header cut", fixChecksums(set16(odd[:l4v4+7], l3+2, IPv4HeaderLen+7)), DropTruncated)
	drop("icmp6 header cut", fixChecksums(set16(ns[:l4v6+7], l3+4, 7)), DropTruncated)
	drop("ethertype lldp", set16(good4, 12, 0x88cc), DropEtherType)
	drop("ethertype under tag", withVLANTags(set16(good4, 12, 0x8847), EtherTypeVLAN, 1), DropEtherType)
	drop("ipv4 version 5", fixChecksums(set(good4, l3, 0x55)), DropBadIPv4Header)
	drop("ipv4 ihl 4", fixChecksums(set(good4, l3, 0x44)), DropBadIPv4Header)
	drop("ipv4 total < ihl", fixChecksums(set16(good4, l3+2, 19)), DropBadIPv4Header)
	drop("ipv4 total > frame", fixChecksums(set16(good4, l3+2, uint16(len(good4)-l3+1))), DropBadIPv4Header)
	drop("ipv4 ihl past frame", fixChecksums(set(good4[:l3+40], l3, 0x4f)), DropBadIPv4Header)
	drop("ipv4 checksum", set(good4, l3+8, 63), DropIPv4Checksum)
	drop("ipv4 more fragments", fixChecksums(set16(good4, l3+6, 0x2000)), DropIPv4Fragment)
	drop("ipv4 fragment offset", fixChecksums(set16(good4, l3+6, 0x4001)), DropIPv4Fragment)
	drop("ipv6 version 4", set(good6, l3, 0x40), DropBadIPv6Header)
	drop("ipv6 payload > frame", set16(good6, l3+4, uint16(len(good6)-l4v6+1)), DropBadIPv6Header)
	for _, nh := range []byte{0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254} {
		drop("ipv6 ext header "+strconv.Itoa(int(nh)), set(good6, l3+6, nh), DropIPv6ExtHeader)
	}
	drop("ipv4 udp", fixChecksums(set(good4, l3+9, 17)), DropProto)
	drop("ipv4 icmpv6", fixChecksums(set(good4, l3+9, ProtoICMPv6)), DropProto)
	drop("ipv6 udp", set(good6, l3+6, 17), DropProto)
	drop("ipv6 icmpv4", set(good6, l3+6, ProtoICMP), DropProto)
	drop("ipv6 no next header", set(good6, l3+6, 59), DropProto)
	drop("tcp4 to multicast", fixChecksums(set(good4, l3+16, 224, 0, 0, 1)), DropBadAddress)
	drop("tcp4 to broadcast", fixChecksums(set(good4, l3+16, 255, 255, 255, 255)), DropBadAddress)
	drop("tcp4 to 0.0.0.0", fixChecksums(set(good4, l3+16, 0, 0, 0, 0)), DropBadAddress)
	drop("tcp4 from multicast", fixChecksums(set(good4, l3+12, 239, 1, 2, 3)), DropBadAddress)
	drop("tcp4 from broadcast", fixChecksums(set(good4, l3+12, 255, 255, 255, 255)), DropBadAddress)
	drop("tcp4 from 0.0.0.0", fixChecksums(set(good4, l3+12, 0, 0, 0, 0)), DropBadAddress)
	drop("icmp4 from multicast", fixChecksums(set(odd, l3+12, 224, 0, 0, 5)), DropBadAddress)
	drop("icmp4 from broadcast", fixChecksums(set(odd, l3+12, 255, 255, 255, 255)), DropBadAddress)
	drop("tcp6 to multicast", fixChecksums(set(good6, l3+24, 0xff, 0x02)), DropBadAddress)
	drop("tcp6 from multicast", fixChecksums(set(good6, l3+8, 0xff, 0x0e)), DropBadAddress)
	drop("tcp6 from ::", fixChecksums(set(good6, l3+8, make([]byte, 16)...)), DropBadAddress)
	drop("tcp6 to ::", fixChecksums(set(good6, l3+24, make([]byte, 16)...)), DropBadAddress)
	drop("icmp6 from multicast", fixChecksums(set(ns, l3+8, 0xff, 0x02)), DropBadAddress)
	drop("tcp data offset 4", fixChecksums(set(good4, l4v4+12, 0x40)), DropBadTCPHeader)
	drop("tcp data offset past segment", fixChecksums(set(v4(opt(TCPOptions{}), nil), l4v4+12, 0x60)), DropBadTCPHeader)
	drop("tcp6 data offset 0", fixChecksums(set(good6, l4v6+12, 0x00)), DropBadTCPHeader)
	drop("tcp4 checksum", set(good4, len(good4)-1, good4[len(good4)-1]^1), DropTCPChecksum)
	drop("tcp6 checksum", set(good6, l4v6+4, good6[l4v6+4]^0x80), DropTCPChecksum)
	// A changed address with a fixed IP header checksum: only the TCP
	// pseudo-header catches it.
	spoofed := set(good4, l3+12, 192, 0, 2, 99)
	binary.BigEndian.PutUint16(spoofed[l3+10:], 0)
	binary.BigEndian.PutUint16(spoofed[l3+10:], refChecksum(spoofed[l3:l4v4], 0))
	drop("tcp4 checksum covers pseudo-header", spoofed, DropTCPChecksum)
	drop("arp htype", set16(arpReq, l3, 6), DropBadARP)
	drop("arp ptype", set16(arpReq, l3+2, EtherTypeIPv6), DropBadARP)
	drop("arp hlen", set(arpReq, l3+4, 8), DropBadARP)
	drop("arp plen", set(arpReq, l3+5, 16), DropBadARP)
	drop("arp op 3", set16(arpReq, l3+6, 3), DropBadARP)
	drop("icmp4 frag needed without quote", fixChecksums(set16(set(odd, l4v4, ICMPv4DestUnreachable, 4), l3+2, IPv4HeaderLen+8)[:l4v4+8]), DropBadICMP)
	drop("icmp4 unreachable quote too short", fixChecksums(set16(shortQuote[:len(shortQuote)-1], l3+2, uint16(len(shortQuote)-l3-1))), DropBadICMP)
	drop("icmp6 packet too big quote too short", fixChecksums(set16(ptb[:l4v6+55], l3+4, 55)), DropBadICMP)
	drop("icmp6 ns short", fixChecksums(set16(ns[:l4v6+23], l3+4, 23)), DropBadICMP)
	drop("icmp6 ns code 1", fixChecksums(set(ns, l4v6+1, 1)), DropBadICMP)
	drop("icmp6 ns multicast target", fixChecksums(set(ns, l4v6+8, 0xff, 0x02)), DropBadICMP)
	drop("icmp6 ns option length 0", fixChecksums(set(ns, l4v6+25, 0)), DropBadICMP)
	drop("icmp6 ns option past end", fixChecksums(set(ns, l4v6+25, 2)), DropBadICMP)
	nsOdd := append(append([]byte(nil), ns...), 14)
	binary.BigEndian.PutUint16(nsOdd[l3+4:], 33)
	drop("icmp6 ns option truncated", fixChecksums(nsOdd), DropBadICMP)
	drop("icmp6 dad with link address", fixChecksums(set(ns, l3+8, make([]byte, 16)...)), DropBadICMP)
	drop("icmp6 dad not to solicited-node", fixChecksums(set(dad, l3+24+13, 9)), DropBadICMP)
	drop("icmp6 na solicited to multicast", fixChecksums(set(naMulti, l4v6+4, NAFlagSolicited)), DropBadICMP)
	drop("icmp6 na code 1", fixChecksums(set(na, l4v6+1, 1)), DropBadICMP)
	drop("icmp4 checksum", set(odd, l4v4+4, 9), DropICMPChecksum)
	drop("icmp6 checksum", set(ns, l4v6+30, ns[l4v6+30]^0x5a), DropICMPChecksum)
	drop("icmp6 checksum covers pseudo-header", set(echoRequest(true, 1, 1, nil), l3+23, 9), DropICMPChecksum)
	return cs
}

func optionsName(o TCPOptions) string {
	switch {
	case o.MSS != 0:
		return "mss"
	case o.HasWScale:
		return "wscale"
	case o.SACKPermitted:
		return "sackok"
	case o.HasTimestamps:
		return "timestamps"
	case o.NumSACK != 0:
		return "sack"
	}
	return "none"
}

func TestParse(t *testing.T) {
	for _, c := range parseCases(t) {
		t.Run(c.name, func(t *testing.T) {
			// Dirty the packet first: Parse must overwrite every field.
			p := Packet{VLAN: 9, L4: 3, TTL: 1, Payload: []byte{1}}
			p.TCP.Options.NumSACK = 2
			p.ICMP.HasLinkAddr = true
			p.ARP.Op = 9
			got := Parse(c.frame, &p, c.flags)
			if got != c.want {
				t.Fatalf("Parse = %v, want %v", got, c.want)
			}
			if c.want != DropNone {
				return
			}
			if &p.Frame[0] != &c.frame[0] || len(p.Frame) != len(c.frame) {
				t.Errorf("Frame does not alias the input")
			}
			if c.check != nil {
				c.check(t, &p)
			}
		})
	}
}

// Every reason is reachable from some frame, so every counter can move.
func TestParseCoversEveryDrop(t *testing.T) {
	seen := make(map[Drop]bool)
	for _, c := range parseCases(t) {
		seen[c.want] = true
	}
	for d := range NumDrops {
		if !seen[d] {
			t.Errorf("no test case for %v", d)
		}
	}
}

func TestDropString(t *testing.T) {
	want := []string{"none", "truncated", "ethertype", "bad_ipv4_header", "ipv4_checksum", "ipv4_fragment",
		"bad_ipv6_header", "ipv6_ext_header", "proto", "bad_address", "bad_tcp_header", "tcp_checksum",
		"bad_arp", "bad_icmp", "icmp_checksum"}
	if len(want) != int(NumDrops) {
		t.Fatalf("%d names for %d reasons", len(want), NumDrops)
	}
	for i, w := range want {
		if got := Drop(i).String(); got != w {
			t.Errorf("Drop(%d) = %q, want %q", i, got, w)
		}
	}
	if NumDrops.String() != "unknown" {
		t.Errorf("NumDrops.String() = %q", NumDrops.String())
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	var p Packet
	for _, c := range parseCases(t) {
		if n := testing.AllocsPerRun(10, func() { Parse(c.frame, &p, c.flags) }); n != 0 {
			t.Errorf("%s: %v allocs", c.name, n)
		}
	}
}

// Every prefix of every test frame, cut so that nothing lies past its end,
// must be refused or parsed without a panic.
func TestParseTruncations(t *testing.T) {
	var p Packet
	for _, c := range parseCases(t) {
		for n := range len(c.frame) {
			Parse(c.frame[:n:n], &p, c.flags)
		}
	}
}

// TestParseMalformedTCPOptions: a malformed option never costs the segment
// (Linux's tcp_parse_options): the parse takes the segment, marks it and
// keeps the options it could read.
func TestParseMalformedTCPOptions(t *testing.T) {
	ackHdr := TCPHeader{SrcPort: 40000, DstPort: 80, Seq: 1000, Ack: 2000, Flags: FlagACK, Window: 1000}
	payload := []byte("payload")
	for _, c := range []struct {
		name string
		opts []byte
		want TCPOptions // what is kept
	}{
		{"mss len 3", []byte{2, 3, 5, 1}, TCPOptions{}},
		{"mss len 5", []byte{2, 5, 5, 180, 0, 0, 0, 0}, TCPOptions{}},
		{"mss len 6, then timestamps", append([]byte{2, 6, 5, 180, 0, 0, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9}, 0, 0, 0, 0), TCPOptions{HasTimestamps: true, TSVal: 7, TSEcr: 9}},
		{"wscale len 4", []byte{3, 4, 7, 0}, TCPOptions{}},
		{"sackok len 3", []byte{4, 3, 0, 1}, TCPOptions{}},
		{"timestamps len 8", []byte{8, 8, 0, 0, 0, 0, 0, 0}, TCPOptions{}},
		{"sack len 2", []byte{5, 2, 1, 1}, TCPOptions{}},
		{"sack len 9", append([]byte{5, 9}, make([]byte, 10)...), TCPOptions{}},
		{"sack len 11", append([]byte{5, 11}, make([]byte, 10)...), TCPOptions{}},
		{"unknown len 1", []byte{99, 1, 1, 1}, TCPOptions{}},
		{"unknown len 0", []byte{99, 0, 1, 1}, TCPOptions{}},
		{"mss, then a length past header", []byte{2, 4, 5, 180, 1, 1, 99, 3}, TCPOptions{MSS: 1460}},
		{"kind without length", []byte{1, 1, 1, 99}, TCPOptions{}},
		{"timestamps past header", []byte{1, 1, 8, 10, 0, 0, 0, 0}, TCPOptions{}},
	} {
		for _, v6 := range []bool{false, true} {
			var p Packet
			f := withRawTCPOptions(t, v6, ackHdr, c.opts, payload)
			if d := Parse(f, &p, 0); d != DropNone {
				t.Errorf("%s (v6 %v): dropped as %v, want taken", c.name, v6, d)
				continue
			}
			if !p.IgnoredTCPOptions || p.TCP.Options != c.want || string(p.Payload) != "payload" {
				t.Errorf("%s (v6 %v): ignored %v, options %+v, payload %q; want ignored, %+v", c.name, v6, p.IgnoredTCPOptions, p.TCP.Options, p.Payload, c.want)
			}
		}
	}
	// Well-formed options are not marked.
	var p Packet
	if d := Parse(withRawTCPOptions(t, false, ackHdr, []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}, nil), &p, 0); d != DropNone || p.IgnoredTCPOptions {
		t.Errorf("timestamps: %v, ignored %v", d, p.IgnoredTCPOptions)
	}
}
