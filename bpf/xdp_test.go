package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// XDP actions (linux/bpf.h).
const (
	xdpAborted  = 0
	xdpDrop     = 1
	xdpPass     = 2
	xdpRedirect = 4
)

var actionNames = map[uint32]string{
	xdpAborted: "XDP_ABORTED", xdpDrop: "XDP_DROP", xdpPass: "XDP_PASS", 3: "XDP_TX", xdpRedirect: "XDP_REDIRECT",
}

// The fixture network: documentation prefixes only (RFC 5737, RFC 3849).
var (
	listen4   = netip.MustParseAddrPort("192.0.2.10:80")
	listen6   = netip.MustParseAddrPort("[2001:db8::10]:443")
	owned4    = netip.MustParseAddr("192.0.2.20")
	owned6    = netip.MustParseAddr("2001:db8::20")
	ownedLo   = uint16(40000)
	ownedHi   = uint16(40999)
	neigh4    = netip.MustParseAddr("192.0.2.10")
	neigh6    = netip.MustParseAddr("2001:db8::10")
	client4   = netip.MustParseAddr("198.51.100.7")
	client6   = netip.MustParseAddr("2001:db8:1::7")
	otherAddr = netip.MustParseAddr("192.0.2.99")
	macServer = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	macClient = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
)

// requireRoot skips a test that needs root (loading BPF, netlink), unless
// CI=true, where such a skip would hide a broken environment.
func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const why = "needs root: loads BPF programs (CAP_BPF, CAP_NET_ADMIN) and creates network namespaces"
	if os.Getenv("CI") == "true" {
		tb.Fatal(why + " (CI=true: a skip is a failure)")
	}
	tb.Skip(why)
}

func loadForTest(tb testing.TB) *Program {
	tb.Helper()
	requireRoot(tb)
	p, err := Load()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := p.Close(); err != nil {
			tb.Error(err)
		}
	})
	return p
}

// configure installs the fixture network's listeners, ranges and neighbours.
func configure(tb testing.TB, p *Program) {
	tb.Helper()
	for _, err := range []error{
		p.AddListener(listen4),
		p.AddListener(listen6),
		p.AddOwnedRange(owned4, ownedLo, ownedHi),
		p.AddOwnedRange(owned6, ownedLo, ownedHi),
		p.AddNeighborAddr(neigh4),
		p.AddNeighborAddr(neigh6),
	} {
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// --- packet builders ---

type tag struct {
	tpid layers.EthernetType
	vid  uint16
}

// frame serializes an Ethernet frame, with VLAN tags (outermost first), in
// front of the given layers, with lengths and checksums filled in.
func frame(tb testing.TB, tags []tag, inner ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	if len(inner) == 0 {
		tb.Fatal("frame: no layers")
	}
	var typ layers.EthernetType
	switch inner[0].LayerType() {
	case layers.LayerTypeIPv4:
		typ = layers.EthernetTypeIPv4
	case layers.LayerTypeIPv6:
		typ = layers.EthernetTypeIPv6
	case layers.LayerTypeARP:
		typ = layers.EthernetTypeARP
	default:
		tb.Fatalf("frame: no EtherType for %v", inner[0].LayerType())
	}
	eth := &layers.Ethernet{SrcMAC: macClient, DstMAC: macServer, EthernetType: typ}
	all := []gopacket.SerializableLayer{eth}
	for i, tg := range tags {
		if i == 0 {
			eth.EthernetType = tg.tpid
		} else {
			all[len(all)-1].(*layers.Dot1Q).Type = tg.tpid
		}
		all = append(all, &layers.Dot1Q{VLANIdentifier: tg.vid, Type: typ})
	}
	all = append(all, inner...)
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, all...); err != nil {
		tb.Fatalf("frame: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func ipv4(proto layers.IPProtocol, dst netip.Addr) *layers.IPv4 {
	return &layers.IPv4{
		Version: 4, IHL: 5, TTL: 64, Protocol: proto,
		SrcIP: client4.AsSlice(), DstIP: dst.AsSlice(),
	}
}

func ipv6(next layers.IPProtocol, dst netip.Addr) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: client6.AsSlice(), DstIP: dst.AsSlice()}
}

func tcpSYN(ip gopacket.NetworkLayer, dport uint16) *layers.TCP {
	t := &layers.TCP{SrcPort: 33333, DstPort: layers.TCPPort(dport), Seq: 1000, SYN: true, Window: 64240}
	if err := t.SetNetworkLayerForChecksum(ip); err != nil {
		panic(err) // only for a non-IP layer, which the builders never pass
	}
	return t
}

// tcp4 is an Ethernet/IPv4/TCP SYN to dst, with tags.
func tcp4(tb testing.TB, dst netip.AddrPort, tags ...tag) []byte {
	ip := ipv4(layers.IPProtocolTCP, dst.Addr())
	return frame(tb, tags, ip, tcpSYN(ip, dst.Port()))
}

func tcp6(tb testing.TB, dst netip.AddrPort) []byte {
	ip := ipv6(layers.IPProtocolTCP, dst.Addr())
	return frame(tb, nil, ip, tcpSYN(ip, dst.Port()))
}

func arp(tb testing.TB, op uint16, target netip.Addr) []byte {
	a := &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: op,
		SourceHwAddress: macClient, SourceProtAddress: client4.AsSlice(),
		DstHwAddress: make([]byte, 6), DstProtAddress: target.AsSlice(),
	}
	return frame(tb, nil, a)
}

// ndp is a neighbour solicitation (135) or advertisement (136) for target.
func ndp(tb testing.TB, typ uint8, target netip.Addr, hopLimit uint8) []byte {
	ip := ipv6(layers.IPProtocolICMPv6, target)
	ip.HopLimit = hopLimit
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}
	if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	var body gopacket.SerializableLayer
	if typ == layers.ICMPv6TypeNeighborSolicitation {
		body = &layers.ICMPv6NeighborSolicitation{TargetAddress: target.AsSlice()}
	} else {
		body = &layers.ICMPv6NeighborAdvertisement{TargetAddress: target.AsSlice(), Flags: 0x60}
	}
	return frame(tb, nil, ip, icmp, body)
}

func udp4(tb testing.TB, dst netip.AddrPort) []byte {
	ip := ipv4(layers.IPProtocolUDP, dst.Addr())
	udp := &layers.UDP{SrcPort: 5353, DstPort: layers.UDPPort(dst.Port())}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	return frame(tb, nil, ip, udp)
}

func echo6(tb testing.TB, dst netip.Addr) []byte {
	ip := ipv6(layers.IPProtocolICMPv6, dst)
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
	if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	return frame(tb, nil, ip, icmp, gopacket.Payload(make([]byte, 20)))
}

// router is where ICMP errors come from.
var (
	router4 = netip.MustParseAddr("203.0.113.1")
	router6 = netip.MustParseAddr("2001:db8:ffff::1")
)

// quote is what an ICMP error carries of the packet that caused it: the IP
// header and the first 8 bytes of a segment sent from src (RFC 792), or all
// of it (RFC 4443), cut to n bytes when n > 0.
func quote(tb testing.TB, src netip.AddrPort, proto layers.IPProtocol, n int) []byte {
	var ip gopacket.NetworkLayer
	var ipl gopacket.SerializableLayer
	if src.Addr().Is4() {
		v4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: src.Addr().AsSlice(), DstIP: client4.AsSlice(), Flags: layers.IPv4DontFragment}
		ip, ipl = v4, v4
	} else {
		v6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src.Addr().AsSlice(), DstIP: client6.AsSlice()}
		ip, ipl = v6, v6
	}
	var l4 gopacket.SerializableLayer
	if proto == layers.IPProtocolTCP {
		tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: 33333, Seq: 7, Ack: 1001, ACK: true, Window: 512}
		tcp.SetNetworkLayerForChecksum(ip)
		l4 = tcp
	} else {
		udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: 33333}
		udp.SetNetworkLayerForChecksum(ip)
		l4 = udp
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		ipl, l4, gopacket.Payload(make([]byte, 1400))); err != nil {
		tb.Fatal(err)
	}
	b := buf.Bytes()
	if n > 0 {
		b = b[:n]
	}
	return append([]byte(nil), b...)
}

// icmp4Error is an ICMP error from a router to the quoted packet's source.
func icmp4Error(tb testing.TB, typ, code uint8, quoted []byte) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4,
		SrcIP: router4.AsSlice(), DstIP: net.IP(quoted[12:16])}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code)}
	if typ == layers.ICMPv4TypeDestinationUnreachable && code == layers.ICMPv4CodeFragmentationNeeded {
		icmp.Seq = 1400 // next-hop MTU, in the low half of the second word
	}
	return frame(tb, nil, ip, icmp, gopacket.Payload(quoted))
}

func icmp6Error(tb testing.TB, typ, code uint8, quoted []byte) []byte {
	ip := ipv6(layers.IPProtocolICMPv6, netip.AddrFrom16([16]byte(quoted[8:24])))
	ip.SrcIP = router6.AsSlice()
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)}
	if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	mtu := []byte{0, 0, 0x05, 0x00} // packet too big: MTU 1280; otherwise unused
	return frame(tb, nil, ip, icmp, gopacket.Payload(append(mtu, quoted...)))
}

func echo4(tb testing.TB, dst netip.Addr) []byte {
	return frame(tb, nil, ipv4(layers.IPProtocolICMPv4, dst),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1},
		gopacket.Payload(make([]byte, 32)))
}

// Offsets in an untagged Ethernet/IPv4 (IHL 5) frame.
const (
	offIP  = 14
	offTCP = offIP + 20
)

// mutate returns a copy of b changed by f.
func mutate(b []byte, f func(b []byte) []byte) []byte {
	return f(append([]byte(nil), b...))
}

func setDataOffset(words byte) func([]byte) []byte {
	return func(b []byte) []byte {
		b[offTCP+12] = words<<4 | b[offTCP+12]&0x0f
		return b
	}
}

// ipv4WithOption is a SYN to dst whose IPv4 header carries a 4-byte option
// (two NOPs, then an end-of-options list).
func ipv4WithOption(tb testing.TB, dst netip.AddrPort) []byte {
	ip := ipv4(layers.IPProtocolTCP, dst.Addr())
	ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
	b := frame(tb, nil, ip, tcpSYN(ip, dst.Port()))
	if b[offIP]&0x0f != 6 {
		tb.Fatalf("ipv4WithOption: IHL %d, want 6", b[offIP]&0x0f)
	}
	return b
}

// ipv6HopByHop is a SYN to dst behind a hop-by-hop options header.
func ipv6HopByHop(tb testing.TB, dst netip.AddrPort) []byte {
	ip := ipv6(layers.IPProtocolIPv6HopByHop, dst.Addr())
	seg := gopacket.NewSerializeBuffer()
	tcp := tcpSYN(ipv6(layers.IPProtocolTCP, dst.Addr()), dst.Port())
	if err := gopacket.SerializeLayers(seg, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, tcp); err != nil {
		tb.Fatal(err)
	}
	// Next header TCP, length 0 (8 bytes), PadN of 4 bytes.
	hbh := []byte{byte(layers.IPProtocolTCP), 0, 1, 4, 0, 0, 0, 0}
	return frame(tb, nil, ip, gopacket.Payload(append(hbh, seg.Bytes()...)))
}

// --- verdict fixtures ---

// reason is what a fixture expects the program to decide.
type reason int

const (
	toListener reason = iota
	toOwned
	toARP
	toNDP
	toICMP
	notOurs
	malformed
)

// expect returns the verdict and counter deltas for r when no XSK is bound:
// redirects fall back to XDP_PASS and are counted as failed as well.
func expect(r reason) (uint32, Counters) {
	c := Counters{RxPackets: 1}
	switch r {
	case notOurs:
		c.PassNotOurs = 1
		return xdpPass, c
	case malformed:
		c.DropMalformed = 1
		return xdpDrop, c
	case toListener:
		c.RedirectListener = 1
	case toOwned:
		c.RedirectOwned = 1
	case toARP:
		c.RedirectARP = 1
	case toNDP:
		c.RedirectNDP = 1
	case toICMP:
		c.RedirectICMP = 1
	}
	c.RedirectFailed = 1
	return xdpPass, c
}

type fixture struct {
	name string
	pkt  []byte
	want reason
}

func fixtures(tb testing.TB) []fixture {
	l4 := tcp4(tb, listen4)
	ap := netip.AddrPortFrom
	return []fixture{
		{"ipv4 SYN to listener", l4, toListener},
		{"ipv4 SYN to other port of listener address", tcp4(tb, ap(listen4.Addr(), 81)), notOurs},
		{"ipv4 SYN to listener port on other address", tcp4(tb, ap(otherAddr, listen4.Port())), notOurs},
		{"ipv4 with options to listener", ipv4WithOption(tb, listen4), toListener},
		{"ipv4 padded to 60 bytes to listener", append(append([]byte(nil), l4...), make([]byte, 60-len(l4))...), toListener},
		{"owned range, lowest port", tcp4(tb, ap(owned4, ownedLo)), toOwned},
		{"owned range, highest port", tcp4(tb, ap(owned4, ownedHi)), toOwned},
		{"owned address, port just below range", tcp4(tb, ap(owned4, ownedLo-1)), notOurs},
		{"owned address, port just above range", tcp4(tb, ap(owned4, ownedHi+1)), notOurs},
		{"owned range port on other address", tcp4(tb, ap(otherAddr, ownedLo)), notOurs},
		{"ipv6 owned range", tcp6(tb, ap(owned6, ownedLo+5)), toOwned},
		{"ARP request for neighbour address", arp(tb, layers.ARPRequest, neigh4), toARP},
		{"ARP reply for neighbour address", arp(tb, layers.ARPReply, neigh4), toARP},
		{"ARP request for other address", arp(tb, layers.ARPRequest, otherAddr), notOurs},
		{"ARP with op 3 (RARP) for neighbour address", mutate(arp(tb, layers.ARPRequest, neigh4), func(b []byte) []byte {
			b[offIP+7] = 3
			return b
		}), notOurs},
		{"ARP with hardware length 8", mutate(arp(tb, layers.ARPRequest, neigh4), func(b []byte) []byte {
			b[offIP+4] = 8
			return b
		}), notOurs},
		{"ARP truncated before target address", arp(tb, layers.ARPRequest, neigh4)[:offIP+26], notOurs},
		{"ipv6 SYN to listener", tcp6(tb, listen6), toListener},
		{"ipv6 SYN to other port of listener address", tcp6(tb, ap(listen6.Addr(), 80)), notOurs},
		{"ipv4 listener port on ipv6 listener address", tcp6(tb, ap(listen6.Addr(), listen4.Port())), notOurs},
		{"ipv6 hop-by-hop header before TCP (bypass)", ipv6HopByHop(tb, listen6), notOurs},
		{"802.1Q tagged SYN to listener", tcp4(tb, listen4, tag{layers.EthernetTypeDot1Q, 100}), toListener},
		{"QinQ tagged SYN to listener", tcp4(tb, listen4, tag{layers.EthernetTypeQinQ, 100}, tag{layers.EthernetTypeDot1Q, 200}), toListener},
		{"three VLAN tags", tcp4(tb, listen4, tag{layers.EthernetTypeQinQ, 1}, tag{layers.EthernetTypeDot1Q, 2}, tag{layers.EthernetTypeDot1Q, 3}), notOurs},
		{"VLAN tag truncated", tcp4(tb, listen4, tag{layers.EthernetTypeDot1Q, 100})[:16], notOurs},
		{"ipv4 header truncated", l4[:offIP+12], notOurs},
		{"ipv4 IHL 4", mutate(l4, func(b []byte) []byte {
			b[offIP] = 0x44
			return b
		}), notOurs},
		{"ipv4 version 5", mutate(l4, func(b []byte) []byte {
			b[offIP] = 0x55
			return b
		}), notOurs},
		{"TCP header cut before the ports", l4[:offTCP+2], notOurs},
		{"TCP header cut after the ports, to listener", l4[:offTCP+4], malformed},
		{"TCP header cut at 10 bytes, to listener", l4[:offTCP+10], malformed},
		{"TCP data offset 4, to listener", mutate(l4, setDataOffset(4)), malformed},
		{"TCP data offset 0, to owned range", mutate(tcp4(tb, ap(owned4, ownedLo)), setDataOffset(0)), malformed},
		{"TCP data offset past the segment, to listener", mutate(l4, setDataOffset(15)), malformed},
		{"TCP data offset 4, not ours", mutate(tcp4(tb, ap(otherAddr, 22)), setDataOffset(4)), notOurs},
		{"ipv4 total length past the frame, to listener", mutate(l4, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[offIP+2:], uint16(len(b)-offIP+1))
			return b
		}), malformed},
		{"ipv4 total length shorter than the headers, to listener", mutate(l4, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[offIP+2:], 20+19)
			return b
		}), malformed},
		{"ipv6 payload length past the frame, to listener", mutate(tcp6(tb, listen6), func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[offIP+4:], uint16(len(b)-offIP-40+1))
			return b
		}), malformed},
		{"ipv6 TCP cut at 12 bytes, to listener", tcp6(tb, listen6)[:offIP+40+12], malformed},
		{"ipv4 first fragment to listener", mutate(l4, func(b []byte) []byte {
			b[offIP+6] |= 0x20 // MF
			return b
		}), notOurs},
		{"ipv4 later fragment to listener", mutate(l4, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[offIP+6:], 185) // offset 1480
			return b
		}), notOurs},
		{"ipv4 DF set, to listener", mutate(l4, func(b []byte) []byte {
			b[offIP+6] |= 0x40 // DF is no fragment
			return b
		}), toListener},
		{"UDP to listener address and port", udp4(tb, listen4), notOurs},
		{"ICMP echo to listener address", frame(tb, nil, ipv4(layers.IPProtocolICMPv4, listen4.Addr()),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0)}), notOurs},
		{"NDP solicitation for neighbour address", ndp(tb, layers.ICMPv6TypeNeighborSolicitation, neigh6, 255), toNDP},
		{"NDP advertisement for neighbour address", ndp(tb, layers.ICMPv6TypeNeighborAdvertisement, neigh6, 255), toNDP},
		{"NDP solicitation for other address", ndp(tb, layers.ICMPv6TypeNeighborSolicitation, netip.MustParseAddr("2001:db8::99"), 255), notOurs},
		{"NDP solicitation with hop limit 64 for neighbour address", ndp(tb, layers.ICMPv6TypeNeighborSolicitation, neigh6, 64), malformed},
		{"NDP solicitation with code 1 for neighbour address", mutate(ndp(tb, layers.ICMPv6TypeNeighborSolicitation, neigh6, 255), func(b []byte) []byte {
			b[offIP+40+1] = 1
			return b
		}), malformed},
		{"NDP solicitation cut inside target", ndp(tb, layers.ICMPv6TypeNeighborSolicitation, neigh6, 255)[:offIP+40+20], notOurs},
		{"ICMPv6 echo to neighbour address", echo6(tb, neigh6), notOurs},
		{"IPX EtherType", mutate(l4, func(b []byte) []byte {
			b[12], b[13] = 0x81, 0x37
			return b
		}), notOurs},
		{"bare Ethernet header", l4[:14], notOurs},
	}
}

func run(tb testing.TB, prog *ebpf.Program, pkt []byte) uint32 {
	tb.Helper()
	ret, err := prog.Run(&ebpf.RunOptions{Data: pkt})
	if err != nil {
		tb.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return ret
}

func counters(tb testing.TB, p *Program) Counters {
	tb.Helper()
	c, err := p.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func TestVerdicts(t *testing.T) {
	p := loadForTest(t)
	configure(t, p)
	for _, fx := range fixtures(t) {
		t.Run(fx.name, func(t *testing.T) {
			wantAction, wantDelta := expect(fx.want)
			before := counters(t, p)
			got := run(t, p.objs.XdproxySteer, fx.pkt)
			delta := counters(t, p).Sub(before)
			if got != wantAction {
				t.Errorf("verdict %s, want %s", actionNames[got], actionNames[wantAction])
			}
			if delta != wantDelta {
				t.Errorf("counter deltas\n got %+v\nwant %+v", delta, wantDelta)
			}
			if t.Failed() {
				t.Logf("packet (%d bytes): %x", len(fx.pkt), fx.pkt)
			}
		})
	}
}

// icmpFixtures are steered only with SetICMPSteering(true).
func icmpFixtures(tb testing.TB) []fixture {
	ap := netip.AddrPortFrom
	fragNeeded := func(q []byte) []byte {
		return icmp4Error(tb, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded, q)
	}
	tooBig := func(q []byte) []byte { return icmp6Error(tb, layers.ICMPv6TypePacketTooBig, 0, q) }
	tcp, udp := layers.IPProtocolTCP, layers.IPProtocolUDP
	return []fixture{
		{"echo request to neighbour address", echo4(tb, neigh4), toICMP},
		{"echo request to other address", echo4(tb, otherAddr), notOurs},
		{"frag needed quoting a listener's segment", fragNeeded(quote(tb, listen4, tcp, 28)), toICMP},
		{"frag needed quoting more than 8 bytes", fragNeeded(quote(tb, listen4, tcp, 576-28)), toICMP},
		{"frag needed quoting an owned port's segment", fragNeeded(quote(tb, ap(owned4, ownedHi), tcp, 28)), toICMP},
		{"frag needed quoting a segment from another port", fragNeeded(quote(tb, ap(listen4.Addr(), 8443), tcp, 28)), notOurs},
		{"frag needed quoting a segment from another address", fragNeeded(quote(tb, ap(otherAddr, 80), tcp, 28)), notOurs},
		{"frag needed quoting UDP from the listener port", fragNeeded(quote(tb, listen4, udp, 28)), notOurs},
		{"frag needed with the quoted ports cut", fragNeeded(quote(tb, listen4, tcp, 22)), notOurs},
		{"time exceeded quoting a listener's segment", icmp4Error(tb, layers.ICMPv4TypeTimeExceeded, 0, quote(tb, listen4, tcp, 28)), toICMP},
		{"port unreachable quoting a listener's segment", icmp4Error(tb, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort, quote(tb, listen4, tcp, 28)), toICMP},
		{"redirect quoting a listener's segment", icmp4Error(tb, layers.ICMPv4TypeRedirect, 1, quote(tb, listen4, tcp, 28)), notOurs},
		{"fragmented frag needed", mutate(fragNeeded(quote(tb, listen4, tcp, 28)), func(b []byte) []byte {
			b[offIP+6] |= 0x20
			return b
		}), notOurs},
		{"ipv6 echo request to neighbour address", echo6(tb, neigh6), toICMP},
		{"ipv6 packet too big quoting a listener's segment", tooBig(quote(tb, listen6, tcp, 1232)), toICMP},
		{"ipv6 packet too big quoting an owned port's segment", tooBig(quote(tb, ap(owned6, ownedLo), tcp, 48)), toICMP},
		{"ipv6 packet too big quoting a segment from another port", tooBig(quote(tb, ap(listen6.Addr(), 80), tcp, 48)), notOurs},
		{"ipv6 packet too big with the quoted ports cut", tooBig(quote(tb, listen6, tcp, 42)), notOurs},
		{"ipv6 packet too big quoting UDP", tooBig(quote(tb, listen6, udp, 48)), notOurs},
		{"NDP still steered", ndp(tb, layers.ICMPv6TypeNeighborSolicitation, neigh6, 255), toNDP},
		{"TCP still steered", tcp4(tb, listen4), toListener},
	}
}

func TestICMPSteering(t *testing.T) {
	p := loadForTest(t)
	configure(t, p)
	fxs := icmpFixtures(t)
	for _, on := range []bool{true, false} {
		if err := p.SetICMPSteering(on); err != nil {
			t.Fatal(err)
		}
		for _, fx := range fxs {
			want := fx.want
			if !on && want == toICMP {
				want = notOurs // the kernel's, as without ICMP steering
			}
			t.Run(fmt.Sprintf("icmp=%t/%s", on, fx.name), func(t *testing.T) {
				wantAction, wantDelta := expect(want)
				before := counters(t, p)
				got := run(t, p.objs.XdproxySteer, fx.pkt)
				delta := counters(t, p).Sub(before)
				if got != wantAction || delta != wantDelta {
					t.Errorf("verdict %s, deltas %+v\nwant %s, %+v\npacket %x", actionNames[got], delta, actionNames[wantAction], wantDelta, fx.pkt)
				}
			})
		}
	}
}

// checkVerdict runs the program on pkt and checks its verdict and counters
// against want.
func checkVerdict(t *testing.T, p *Program, step string, pkt []byte, want reason) {
	t.Helper()
	wantAction, wantDelta := expect(want)
	before := counters(t, p)
	got := run(t, p.objs.XdproxySteer, pkt)
	if delta := counters(t, p).Sub(before); got != wantAction || delta != wantDelta {
		t.Errorf("%s: verdict %s, deltas %+v; want %s, %+v", step, actionNames[got], delta, actionNames[wantAction], wantDelta)
	}
}

func TestWildcardListener(t *testing.T) {
	p := loadForTest(t)
	configure(t, p)
	any4 := netip.MustParseAddrPort("0.0.0.0:8080")
	any6 := netip.MustParseAddrPort("[::]:8080")
	to4 := tcp4(t, netip.AddrPortFrom(otherAddr, 8080))
	to6 := tcp6(t, netip.MustParseAddrPort("[2001:db8::99]:8080"))

	check := func(step string, pkt []byte, want reason) {
		t.Helper()
		checkVerdict(t, p, step, pkt, want)
	}
	check("no wildcard, ipv4", to4, notOurs)
	if err := p.AddListener(any4); err != nil {
		t.Fatal(err)
	}
	check("0.0.0.0:8080, ipv4", to4, toListener)
	check("0.0.0.0:8080, ipv6 (other family)", to6, notOurs)
	check("0.0.0.0:8080, ipv4 other port", tcp4(t, netip.AddrPortFrom(otherAddr, 8081)), notOurs)
	if err := p.AddListener(any6); err != nil {
		t.Fatal(err)
	}
	check("[::]:8080, ipv6", to6, toListener)
	for _, ap := range []netip.AddrPort{any4, any6} {
		if err := p.RemoveListener(ap); err != nil {
			t.Fatal(err)
		}
	}
	if p.flags&settingWildcard != 0 {
		t.Error("wildcard setting still on with no wildcard listener")
	}
	check("wildcards removed, ipv4", to4, notOurs)
	check("wildcards removed, ipv6", to6, notOurs)
	check("exact listener still there", tcp4(t, listen4), toListener)
}

func TestRemove(t *testing.T) {
	p := loadForTest(t)
	configure(t, p)
	for _, err := range []error{
		p.RemoveListener(listen4),
		p.RemoveOwnedRange(owned4),
		p.RemoveNeighborAddr(neigh4),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, pkt := range [][]byte{tcp4(t, listen4), tcp4(t, netip.AddrPortFrom(owned4, ownedLo)), arp(t, layers.ARPRequest, neigh4)} {
		if got := run(t, p.objs.XdproxySteer, pkt); got != xdpPass {
			t.Errorf("verdict %s after removal, want XDP_PASS", actionNames[got])
		}
	}
	if c := counters(t, p); c.PassNotOurs != 3 || c.RxPackets != 3 {
		t.Errorf("counters %+v, want 3 packets passed as not ours", c)
	}
	if err := p.RemoveListener(listen4); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("second RemoveListener: %v, want ErrKeyNotExist", err)
	}
}

func TestDisabled(t *testing.T) {
	p := loadForTest(t)
	configure(t, p)
	if err := p.SetEnabled(false); err != nil {
		t.Fatal(err)
	}
	if got := run(t, p.objs.XdproxySteer, tcp4(t, listen4)); got != xdpPass {
		t.Errorf("disabled: verdict %s, want XDP_PASS", actionNames[got])
	}
	if c := counters(t, p); c != (Counters{RxPackets: 1, PassDisabled: 1}) {
		t.Errorf("disabled: counters %+v", c)
	}
	if err := p.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	if c := counters(t, p); c.RedirectListener != 0 {
		t.Fatalf("counters %+v before the enabled run", c)
	}
	run(t, p.objs.XdproxySteer, tcp4(t, listen4))
	if c := counters(t, p); c.RedirectListener != 1 {
		t.Errorf("enabled again: counters %+v, want one listener redirect", c)
	}
}

func TestArgumentErrors(t *testing.T) {
	p := loadForTest(t)
	cases := map[string]error{
		"listener port 0":       p.AddListener(netip.AddrPortFrom(listen4.Addr(), 0)),
		"listener invalid addr": p.AddListener(netip.AddrPort{}),
		"range lo > hi":         p.AddOwnedRange(owned4, 2000, 1000),
		"range lo 0":            p.AddOwnedRange(owned4, 0, 1000),
		"range unspecified":     p.AddOwnedRange(netip.IPv4Unspecified(), 1000, 2000),
		"neighbour invalid":     p.AddNeighborAddr(netip.Addr{}),
		"xsk queue 64":          p.SetXSK(MaxQueues, 3),
		"xsk queue -1":          p.SetXSK(-1, 3),
		"xsk fd -1":             p.SetXSK(0, -1),
		"attach ifindex 0":      p.Attach(0, ModeAuto),
		"attach bad mode":       p.Attach(1, Mode(7)),
	}
	for name, err := range cases {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// An IPv4-mapped IPv6 address is the IPv4 address.
	if err := p.AddListener(netip.MustParseAddrPort("[::ffff:192.0.2.10]:80")); err != nil {
		t.Fatal(err)
	}
	run(t, p.objs.XdproxySteer, tcp4(t, listen4))
	if c := counters(t, p); c.RedirectListener != 1 {
		t.Errorf("mapped listener: counters %+v", c)
	}
}

func TestCountersList(t *testing.T) {
	var c Counters
	v := reflect.ValueOf(&c).Elem()
	for i := range v.NumField() {
		v.Field(i).SetUint(uint64(i + 1))
	}
	list := c.List()
	if len(list) != v.NumField() {
		t.Fatalf("List has %d counters, Counters %d fields", len(list), v.NumField())
	}
	for i, kv := range list {
		if kv.Value != uint64(i+1) {
			t.Errorf("%s = %d, want %d (order or field mix-up)", kv.Name, kv.Value, i+1)
		}
	}
	// Every counter of the C struct, in its order, under its C name.
	gen := reflect.TypeFor[xdpSteerCounters]()
	var cNames []string
	for i := range gen.NumField() {
		if f := gen.Field(i); f.Name != "_" {
			cNames = append(cNames, f.Name)
		}
	}
	if len(cNames) != len(list) {
		t.Fatalf("C struct has %d counters, List %d", len(cNames), len(list))
	}
	for i, kv := range list {
		if camel := camelCase(kv.Name); camel != cNames[i] {
			t.Errorf("counter %d: List name %q, C field %s", i, kv.Name, cNames[i])
		}
	}
}

// camelCase turns rx_packets into RxPackets, as bpf2go names fields.
func camelCase(snake string) string {
	var b strings.Builder
	for part := range strings.SplitSeq(snake, "_") {
		if part != "" {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}

// BenchmarkXDPProgram runs the program in the kernel (BPF_PROG_TEST_RUN with
// repeat) on a SYN to a listener and on a packet that is not ours, and
// reports the kernel's time per packet (ns/pkt), next to that of a program
// that only returns XDP_PASS: the difference is the program's own cost.
func BenchmarkXDPProgram(b *testing.B) {
	p := loadForTest(b)
	configure(b, p)
	cases := []struct {
		name string
		pkt  []byte
	}{
		{"listener", tcp4(b, listen4)},
		{"not_ours", tcp4(b, netip.AddrPortFrom(otherAddr, 22))},
	}
	// The test-run loop's own cost per packet, to subtract.
	b.Run("baseline_return_pass", func(b *testing.B) {
		_, perRun, err := foreignProgram(b).Benchmark(cases[0].pkt, b.N, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(perRun.Nanoseconds()), "ns/pkt")
	})
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			_, perRun, err := p.objs.XdproxySteer.Benchmark(bc.pkt, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(perRun.Nanoseconds()), "ns/pkt")
		})
	}
}
