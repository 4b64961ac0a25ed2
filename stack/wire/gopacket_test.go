package wire

// Cross-checks against an independent implementation: frames gopacket
// builds must parse to the same fields, and frames we build must decode in
// gopacket to the same fields, with checksums gopacket agrees with.

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func gpSerialize(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("gopacket serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// gpDecode decodes frame with gopacket, insisting on no decode error and
// on valid checksums in every layer that has one.
func gpDecode(t *testing.T, frame []byte) gopacket.Packet {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket decode: %v\n% x", el.Error(), frame)
	}
	if nl := pkt.NetworkLayer(); nl != nil {
		for _, l := range pkt.Layers() {
			if c, ok := l.(interface {
				SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
			}); ok {
				c.SetNetworkLayerForChecksum(nl)
			}
		}
	}
	err, bad := pkt.VerifyChecksums()
	if err != nil || len(bad) != 0 {
		t.Fatalf("gopacket checksum verification: %v %+v", err, bad)
	}
	return pkt
}

// gpReserialize re-encodes gopacket's decoding of frame with gopacket's own
// lengths and checksums; it must give back frame byte for byte (gopacket
// pads Ethernet frames to 60 bytes with zeros).
func gpReserialize(t *testing.T, frame []byte) {
	t.Helper()
	pkt := gpDecode(t, frame)
	var ls []gopacket.SerializableLayer
	for _, l := range pkt.Layers() {
		sl, ok := l.(gopacket.SerializableLayer)
		if !ok {
			t.Fatalf("layer %v not serializable", l.LayerType())
		}
		ls = append(ls, sl)
	}
	again := gpSerialize(t, ls...)
	if len(again) < len(frame) || !bytes.Equal(again[:len(frame)], frame) ||
		!bytes.Equal(again[len(frame):], make([]byte, len(again)-len(frame))) {
		t.Errorf("gopacket re-serialization differs:\n ours % x\n  gp  % x", frame, again)
	}
}

func gpIP(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a
}

// randomGPOptions builds a random option list that fits in 40 bytes, and
// what Parse must make of it.
func randomGPOptions(r *rand.Rand) ([]layers.TCPOption, TCPOptions) {
	var opts []layers.TCPOption
	var want TCPOptions
	size := 0
	for range r.IntN(8) {
		var o layers.TCPOption
		var apply func()
		switch r.IntN(8) {
		case 0:
			mss := uint16(r.IntN(3)) * uint16(r.Uint32()) // sometimes 0: absent
			o = layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionData: binary.BigEndian.AppendUint16(nil, mss)}
			apply = func() { want.MSS = mss }
		case 1:
			ws := uint8(r.Uint32())
			o = layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionData: []byte{ws}}
			apply = func() { want.HasWScale, want.WScale = true, ws }
		case 2:
			o = layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted}
			apply = func() { want.SACKPermitted = true }
		case 3:
			v, e := r.Uint32(), r.Uint32()
			o = layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps,
				OptionData: binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, v), e)}
			apply = func() { want.HasTimestamps, want.TSVal, want.TSEcr = true, v, e }
		case 4:
			n := 1 + r.IntN(4)
			var blocks [4]SACKBlock
			var data []byte
			for i := range n {
				blocks[i] = SACKBlock{r.Uint32(), r.Uint32()}
				data = binary.BigEndian.AppendUint32(data, blocks[i].Start)
				data = binary.BigEndian.AppendUint32(data, blocks[i].End)
			}
			o = layers.TCPOption{OptionType: layers.TCPOptionKindSACK, OptionData: data}
			apply = func() { want.NumSACK, want.SACK = uint8(n), blocks }
		case 5, 6:
			o = layers.TCPOption{OptionType: layers.TCPOptionKindNop}
			apply = func() {}
		case 7:
			// Experimental kind (RFC 6994), any length: must be skipped.
			data := make([]byte, r.IntN(6))
			for i := range data {
				data[i] = byte(r.Uint32())
			}
			o = layers.TCPOption{OptionType: 253, OptionData: data}
			apply = func() {}
		}
		n := 1
		if o.OptionType > 1 {
			n = 2 + len(o.OptionData)
		}
		if size+n > MaxTCPOptionsLen {
			break
		}
		size += n
		opts = append(opts, o)
		apply()
	}
	return opts, want
}

// TestGopacketBuiltFramesParse: random TCP frames serialized by gopacket,
// IPv4 and IPv6, untagged, 802.1Q and QinQ.
func TestGopacketBuiltFramesParse(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	for i := range 2000 {
		v6 := i%2 == 1
		opts, wantOpts := randomGPOptions(r)
		tcp := &layers.TCP{
			SrcPort: layers.TCPPort(r.Uint32()), DstPort: layers.TCPPort(r.Uint32()),
			Seq: r.Uint32(), Ack: r.Uint32(), Window: uint16(r.Uint32()), Urgent: uint16(r.Uint32()),
			Options: opts,
		}
		flags := uint8(r.Uint32())
		tcp.FIN, tcp.SYN, tcp.RST, tcp.PSH = flags&FlagFIN != 0, flags&FlagSYN != 0, flags&FlagRST != 0, flags&FlagPSH != 0
		tcp.ACK, tcp.URG, tcp.ECE, tcp.CWR = flags&FlagACK != 0, flags&FlagURG != 0, flags&FlagECE != 0, flags&FlagCWR != 0
		data := make([]byte, r.IntN(200))
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(macA[:]), DstMAC: net.HardwareAddr(macB[:])}
		var net3 gopacket.SerializableLayer
		src, dst, ttl := ip4A, ip4B, uint8(r.Uint32())
		et := layers.EthernetTypeIPv4
		if v6 {
			src, dst, et = ip6A, ip6B, layers.EthernetTypeIPv6
			ip := &layers.IPv6{Version: 6, HopLimit: ttl, NextHeader: layers.IPProtocolTCP, SrcIP: gpIP(src), DstIP: gpIP(dst),
				TrafficClass: uint8(r.Uint32()), FlowLabel: r.Uint32() & 0xfffff}
			tcp.SetNetworkLayerForChecksum(ip)
			net3 = ip
		} else {
			ip := &layers.IPv4{Version: 4, TTL: ttl, Protocol: layers.IPProtocolTCP, SrcIP: gpIP(src), DstIP: gpIP(dst),
				Id: uint16(r.Uint32()), TOS: uint8(r.Uint32()), Flags: layers.IPv4DontFragment}
			tcp.SetNetworkLayerForChecksum(ip)
			net3 = ip
		}
		var ls []gopacket.SerializableLayer
		vlan := uint16(0)
		switch i % 3 {
		case 0:
			eth.EthernetType = et
			ls = []gopacket.SerializableLayer{eth}
		case 1:
			vlan = uint16(r.IntN(4096))
			eth.EthernetType = layers.EthernetTypeDot1Q
			ls = []gopacket.SerializableLayer{eth, &layers.Dot1Q{VLANIdentifier: vlan, Priority: 5, Type: et}}
		case 2:
			vlan = uint16(r.IntN(4096))
			eth.EthernetType = layers.EthernetTypeQinQ
			ls = []gopacket.SerializableLayer{eth,
				&layers.Dot1Q{VLANIdentifier: vlan, Type: layers.EthernetTypeDot1Q},
				&layers.Dot1Q{VLANIdentifier: 4095 - vlan, Type: et}}
		}
		frame := gpSerialize(t, append(ls, net3, tcp, gopacket.Payload(data))...)

		var p Packet
		if d := Parse(frame, &p, 0); d != DropNone {
			t.Fatalf("case %d: Parse = %v\n% x", i, d, frame)
		}
		want := TCPHeader{SrcPort: uint16(tcp.SrcPort), DstPort: uint16(tcp.DstPort), Seq: tcp.Seq, Ack: tcp.Ack,
			Flags: flags, Window: tcp.Window, Urgent: tcp.Urgent, Options: wantOpts}
		if p.TCP != want || !bytes.Equal(p.Payload, data) || p.Src != src || p.Dst != dst || p.TTL != ttl || p.VLAN != vlan {
			t.Fatalf("case %d:\n got %+v payload %d vlan %d\nwant %+v payload %d vlan %d", i, p.TCP, len(p.Payload), p.VLAN,
				want, len(data), vlan)
		}
		// The same segment as a CHECKSUM_PARTIAL sender leaves it: accepted
		// and marked with ParseAllowPartialL4Checksum, refused without it;
		// one flipped bit in that field is refused with it.
		part := append([]byte(nil), frame...)
		addrs := frame[p.L3+12 : p.L3+20]
		if v6 {
			addrs = frame[p.L3+8 : p.L3+40]
		}
		full := binary.BigEndian.Uint16(frame[p.L4+16:])
		field := pseudoField(addrs, ProtoTCP, int(frame[p.L4+12]>>4)*4+len(data))
		binary.BigEndian.PutUint16(part[p.L4+16:], field)
		var q Packet
		if d := Parse(part, &q, ParseAllowPartialL4Checksum); d != DropNone || q.PartialChecksum != (field != full) ||
			q.TCP != want || !bytes.Equal(q.Payload, data) {
			t.Fatalf("case %d: partial %#04x (checksum %#04x): Parse = %v, marked %v\n% x", i, field, full, d, q.PartialChecksum, part)
		}
		if d := Parse(part, &q, 0); field != full && d != DropTCPChecksum {
			t.Errorf("case %d: partial without the flag: Parse = %v", i, d)
		}
		flipped := field ^ 1<<r.IntN(16)
		binary.BigEndian.PutUint16(part[p.L4+16:], flipped)
		if d := Parse(part, &q, ParseAllowPartialL4Checksum); flipped != full && d != DropTCPChecksum {
			t.Errorf("case %d: partial with a flipped bit: Parse = %v", i, d)
		}
		// One flipped bit anywhere under a checksum is caught: the IPv4
		// header, the IPv6 addresses (pseudo-header), the TCP segment.
		from, end := p.L3, p.L4+int(frame[p.L4+12]>>4)*4+len(p.Payload)
		if v6 {
			from += 8
		}
		at := from + r.IntN(end-from)
		frame[at] ^= 1 << r.IntN(8)
		if d := Parse(frame, &p, 0); d == DropNone {
			t.Errorf("case %d: flipped bit in byte %d not detected", i, at)
		}
	}
}

// TestEncodeTCPDecodesInGopacket: random frames from EncodeTCP decode in
// gopacket to the same fields, with checksums it verifies, and re-encode
// identically.
func TestEncodeTCPDecodesInGopacket(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 17))
	for i := range 1000 {
		o := allOptionSets()[r.IntN(80)]
		f := TCPFrame{EthSrc: macA, EthDst: macB, Src: ip4A, Dst: ip4B, TTL: uint8(r.Uint32()),
			TCP: TCPHeader{SrcPort: uint16(r.Uint32()), DstPort: uint16(r.Uint32()), Seq: r.Uint32(), Ack: r.Uint32(),
				Flags: uint8(r.Uint32()), Window: uint16(r.Uint32()), Urgent: uint16(r.Uint32()), Options: o}}
		if i%2 == 1 {
			f.Src, f.Dst = ip6A, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)})
		}
		data := make([]byte, r.IntN(1500))
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		frame := make([]byte, TCPFrameLen(&f, len(data)))
		cut := r.IntN(len(data) + 1)
		if n := EncodeTCP(frame, &f, data[:cut], data[cut:]); n != len(frame) {
			t.Fatalf("EncodeTCP = %d, want %d", n, len(frame))
		}
		pkt := gpDecode(t, frame)
		tcp := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		var flags uint8
		for bit, set := range []bool{tcp.FIN, tcp.SYN, tcp.RST, tcp.PSH, tcp.ACK, tcp.URG, tcp.ECE, tcp.CWR} {
			if set {
				flags |= 1 << bit
			}
		}
		got := TCPHeader{SrcPort: uint16(tcp.SrcPort), DstPort: uint16(tcp.DstPort), Seq: tcp.Seq, Ack: tcp.Ack,
			Flags: flags, Window: tcp.Window, Urgent: tcp.Urgent, Options: optionsFromGopacket(t, tcp.Options)}
		want := f.TCP
		want.Options = trimSACK(o)
		if got != want || !bytes.Equal(tcp.Payload, data) {
			t.Fatalf("case %d: gopacket decoded\n%+v\nwant\n%+v", i, got, want)
		}
		var src, dst netip.Addr
		var ttl uint8
		switch ip := pkt.NetworkLayer().(type) {
		case *layers.IPv4:
			src, dst, ttl = addrOf(ip.SrcIP), addrOf(ip.DstIP), ip.TTL
			if ip.Flags != layers.IPv4DontFragment || ip.FragOffset != 0 || ip.IHL != 5 {
				t.Fatalf("case %d: IPv4 flags %v offset %d IHL %d", i, ip.Flags, ip.FragOffset, ip.IHL)
			}
		case *layers.IPv6:
			src, dst, ttl = addrOf(ip.SrcIP), addrOf(ip.DstIP), ip.HopLimit
		}
		wantTTL := f.TTL
		if wantTTL == 0 {
			wantTTL = 64
		}
		if src != f.Src || dst != f.Dst || ttl != wantTTL {
			t.Fatalf("case %d: %v > %v ttl %d", i, src, dst, ttl)
		}
		if i%50 == 0 {
			gpReserialize(t, frame)
		}
	}
}

func optionsFromGopacket(t *testing.T, opts []layers.TCPOption) TCPOptions {
	var o TCPOptions
	for _, x := range opts {
		d := x.OptionData
		switch x.OptionType {
		case layers.TCPOptionKindMSS:
			o.MSS = binary.BigEndian.Uint16(d)
		case layers.TCPOptionKindWindowScale:
			o.HasWScale, o.WScale = true, d[0]
		case layers.TCPOptionKindSACKPermitted:
			o.SACKPermitted = true
		case layers.TCPOptionKindTimestamps:
			o.HasTimestamps, o.TSVal, o.TSEcr = true, binary.BigEndian.Uint32(d), binary.BigEndian.Uint32(d[4:])
		case layers.TCPOptionKindSACK:
			o.NumSACK = uint8(len(d) / 8)
			for i := range int(o.NumSACK) {
				o.SACK[i] = SACKBlock{binary.BigEndian.Uint32(d[8*i:]), binary.BigEndian.Uint32(d[8*i+4:])}
			}
		case layers.TCPOptionKindNop, layers.TCPOptionKindEndList:
		default:
			t.Errorf("unexpected option kind %d", x.OptionType)
		}
	}
	return o
}

func TestGopacketARP(t *testing.T) {
	for _, op := range []uint16{ARPRequest, ARPReply} {
		frame := gpSerialize(t,
			&layers.Ethernet{SrcMAC: macA[:], DstMAC: BroadcastMAC[:], EthernetType: layers.EthernetTypeARP},
			&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
				Operation: op, SourceHwAddress: macA[:], SourceProtAddress: gpIP(ip4A), DstHwAddress: macB[:], DstProtAddress: gpIP(ip4B)})
		p := mustParse(t, frame)
		if want := (ARP{Op: op, SenderMAC: macA, SenderIP: ip4A, TargetMAC: macB, TargetIP: ip4B}); p.ARP != want {
			t.Errorf("op %d: got %+v", op, p.ARP)
		}

		b := make([]byte, ARPFrameLen)
		dstMAC := macB
		if op == ARPRequest {
			dstMAC = MAC{}
		}
		EncodeARP(b, op, macA, ip4A, dstMAC, ip4B)
		pkt := gpDecode(t, b)
		eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		arp := pkt.Layer(layers.LayerTypeARP).(*layers.ARP)
		wantDst := net.HardwareAddr(dstMAC[:])
		if op == ARPRequest {
			wantDst = BroadcastMAC[:]
		}
		if arp.Operation != op || !bytes.Equal(arp.SourceHwAddress, macA[:]) || addrOf(arp.SourceProtAddress) != ip4A ||
			!bytes.Equal(arp.DstHwAddress, dstMAC[:]) || addrOf(arp.DstProtAddress) != ip4B ||
			!bytes.Equal(eth.DstMAC, wantDst) || !bytes.Equal(eth.SrcMAC, macA[:]) {
			t.Errorf("op %d: gopacket decoded %+v", op, arp)
		}
		gpReserialize(t, b)
	}
}

func TestGopacketICMPv4(t *testing.T) {
	eth := &layers.Ethernet{SrcMAC: macA[:], DstMAC: macB[:], EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 9, Protocol: layers.IPProtocolICMPv4, SrcIP: gpIP(ip4A), DstIP: gpIP(ip4B)}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(ICMPv4EchoRequest, 0), Id: 0xabcd, Seq: 3}
	frame := gpSerialize(t, eth, ip, icmp, gopacket.Payload(payload))
	p := mustParse(t, frame)
	if p.ICMP.Type != ICMPv4EchoRequest || p.ICMP.ID != 0xabcd || p.ICMP.Seq != 3 || !bytes.Equal(p.Payload, payload) || p.TTL != 9 {
		t.Fatalf("got %+v", p.ICMP)
	}
	b := make([]byte, 200)
	n := EncodeEchoReply(b, p)
	pkt := gpDecode(t, b[:n])
	reply := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	rip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if reply.TypeCode != layers.CreateICMPv4TypeCode(ICMPv4EchoReply, 0) || reply.Id != 0xabcd || reply.Seq != 3 ||
		!bytes.Equal(reply.Payload, payload) || addrOf(rip.SrcIP) != ip4B || addrOf(rip.DstIP) != ip4A {
		t.Errorf("gopacket decoded %+v from %v", reply, rip.SrcIP)
	}
	gpReserialize(t, b[:n])

	// Frag-needed quoting a TCP segment, built by gopacket.
	seg := tcp4(t, ackHdr, payload)[l3:]
	fn := gpSerialize(t, &layers.Ethernet{SrcMAC: macB[:], DstMAC: macA[:], EthernetType: layers.EthernetTypeIPv4},
		&layers.IPv4{Version: 4, TTL: 60, Protocol: layers.IPProtocolICMPv4, SrcIP: net.IP{203, 0, 113, 1}, DstIP: gpIP(ip4A)},
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(ICMPv4DestUnreachable, ICMPv4CodeFragNeeded), Seq: 1280},
		gopacket.Payload(seg[:28]))
	p = mustParse(t, fn)
	want := InnerTCP{Valid: true, Src: ip4A, Dst: ip4B, SrcPort: ackHdr.SrcPort, DstPort: ackHdr.DstPort, Seq: ackHdr.Seq}
	if p.ICMP.MTU != 1280 || p.ICMP.Inner != want {
		t.Errorf("got %+v", p.ICMP)
	}
	n = EncodeICMPFragNeeded(b, macB, macA, netip.MustParseAddr("203.0.113.1"), 1280, seg)
	gpReserialize(t, b[:n])
}

func TestGopacketICMPv6(t *testing.T) {
	eth := &layers.Ethernet{SrcMAC: macA[:], DstMAC: macB[:], EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6, SrcIP: gpIP(ip6A), DstIP: gpIP(ip6B)}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(ICMPv6EchoRequest, 0)}
	icmp.SetNetworkLayerForChecksum(ip)
	frame := gpSerialize(t, eth, ip, icmp, &layers.ICMPv6Echo{Identifier: 77, SeqNumber: 78}, gopacket.Payload(payload))
	p := mustParse(t, frame)
	if p.ICMP.Type != ICMPv6EchoRequest || p.ICMP.ID != 77 || p.ICMP.Seq != 78 || !bytes.Equal(p.Payload, payload) {
		t.Fatalf("got %+v", p.ICMP)
	}
	b := make([]byte, 1600)
	n := EncodeEchoReply(b, p)
	pkt := gpDecode(t, b[:n])
	echo := pkt.Layer(layers.LayerTypeICMPv6Echo).(*layers.ICMPv6Echo)
	if echo.Identifier != 77 || echo.SeqNumber != 78 || !bytes.Equal(echo.Payload, payload) {
		t.Errorf("gopacket decoded %+v", echo)
	}
	gpReserialize(t, b[:n])

	// Neighbor solicitation and advertisement from gopacket.
	sn := SolicitedNodeAddr(ip6B)
	snMAC := IPv6MulticastMAC(sn)
	nsIP := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6, SrcIP: gpIP(ip6A), DstIP: gpIP(sn)}
	nsICMP := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(ICMPv6NeighborSolicit, 0)}
	nsICMP.SetNetworkLayerForChecksum(nsIP)
	frame = gpSerialize(t, &layers.Ethernet{SrcMAC: macA[:], DstMAC: snMAC[:], EthernetType: layers.EthernetTypeIPv6}, nsIP, nsICMP,
		&layers.ICMPv6NeighborSolicitation{TargetAddress: gpIP(ip6B),
			Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptSourceAddress, Data: macA[:]}}})
	p = mustParse(t, frame)
	if p.ICMP.Type != ICMPv6NeighborSolicit || p.ICMP.Target != ip6B || !p.ICMP.HasLinkAddr || p.ICMP.LinkAddr != macA {
		t.Errorf("NS: got %+v", p.ICMP)
	}
	naIP := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6, SrcIP: gpIP(ip6B), DstIP: gpIP(ip6A)}
	naICMP := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(ICMPv6NeighborAdvert, 0)}
	naICMP.SetNetworkLayerForChecksum(naIP)
	frame = gpSerialize(t, &layers.Ethernet{SrcMAC: macB[:], DstMAC: macA[:], EthernetType: layers.EthernetTypeIPv6}, naIP, naICMP,
		&layers.ICMPv6NeighborAdvertisement{Flags: 0x60, TargetAddress: gpIP(ip6B),
			Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptTargetAddress, Data: macB[:]}}})
	p = mustParse(t, frame)
	if p.ICMP.Type != ICMPv6NeighborAdvert || p.ICMP.Target != ip6B || p.ICMP.LinkAddr != macB ||
		p.ICMP.NAFlags != NAFlagSolicited|NAFlagOverride {
		t.Errorf("NA: got %+v", p.ICMP)
	}

	// Ours, decoded by gopacket.
	n = EncodeNeighborSolicit(b, macA, ip6A, ip6B)
	pkt = gpDecode(t, b[:n])
	ns := pkt.Layer(layers.LayerTypeICMPv6NeighborSolicitation).(*layers.ICMPv6NeighborSolicitation)
	if addrOf(ns.TargetAddress) != ip6B || len(ns.Options) != 1 || ns.Options[0].Type != layers.ICMPv6OptSourceAddress ||
		!bytes.Equal(ns.Options[0].Data, macA[:]) || addrOf(pkt.NetworkLayer().(*layers.IPv6).DstIP) != sn {
		t.Errorf("gopacket decoded NS %+v", ns)
	}
	gpReserialize(t, b[:n])
	n = EncodeNeighborAdvert(b, macB, ip6B, macA, ip6A, ip6B)
	pkt = gpDecode(t, b[:n])
	na := pkt.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
	if addrOf(na.TargetAddress) != ip6B || na.Flags != 0x60 || len(na.Options) != 1 ||
		na.Options[0].Type != layers.ICMPv6OptTargetAddress || !bytes.Equal(na.Options[0].Data, macB[:]) {
		t.Errorf("gopacket decoded NA %+v", na)
	}
	gpReserialize(t, b[:n])
	n = EncodePacketTooBig(b, macB, macA, netip.MustParseAddr("2001:db8:ffff::1"), 1280, tcp6(t, ackHdr, payload)[l3:])
	gpDecode(t, b[:n])
}
