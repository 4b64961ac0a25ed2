package stack

// One engine, several interfaces: the two-armed proxy. Client legs answer
// on the interface their SYN came in by; active opens leave by the interface
// their route names, from that interface's source address, and find their
// next hop through the interface's resolver (the kernel) or our own ARP/NDP.

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/xdproxy/xdproxy/stack/wire"
)

var (
	frontMAC   = wire.MAC{0x02, 0, 0, 0, 0xf, 0x01}
	backMAC    = wire.MAC{0x02, 0, 0, 0, 0xb, 0x01}
	routerMAC  = wire.MAC{0x02, 0, 0, 0, 0xf, 0xfe}
	backendMAC = wire.MAC{0x02, 0, 0, 0, 0xb, 0x02}

	frontAddr   = netip.MustParseAddr("10.10.1.1")
	routerAddr  = netip.MustParseAddr("10.10.1.254")
	backAddr    = netip.MustParseAddr("10.10.3.1")
	backendAddr = netip.MustParseAddr("10.10.3.2")
	backAddr6   = netip.MustParseAddr("fd00:10:3::1")
	backend6    = netip.MustParseAddr("fd00:10:3::2")
	clientAddr  = netip.MustParseAddr("10.10.0.2")
)

// twoArmed is an engine with a front interface (0: clients, default route
// via the router) and a back one (1: the backends on-link).
type twoArmed struct {
	e           *Engine
	front, back *recordingSink
	asked       []netip.Addr // next hops handed to the back interface's resolver
	resolve     bool         // what that resolver answers
}

func newTwoArmed(t *testing.T) *twoArmed {
	t.Helper()
	ta := &twoArmed{front: &recordingSink{}, back: &recordingSink{}, resolve: true}
	e, err := New(Config{
		Interfaces: []Interface{
			{Name: "front", MAC: frontMAC, Sink: ta.front, Sources: []netip.Addr{frontAddr}},
			{Name: "back", MAC: backMAC, Sink: ta.back, Sources: []netip.Addr{backAddr, backAddr6},
				Resolve: func(src, nh netip.Addr) bool { ta.asked = append(ta.asked, nh); return ta.resolve }},
		},
		Addresses: []netip.Addr{frontAddr},
		Handler:   &recorder{},
		Rand:      rand.New(rand.NewPCG(3, 4)),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.SetRoutes([]Route{
		{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Gateway: routerAddr, Iface: 0},
		{Prefix: netip.MustParsePrefix("10.10.1.0/24"), Iface: 0, Src: frontAddr},
		{Prefix: netip.MustParsePrefix("10.10.3.0/24"), Iface: 1, Src: backAddr},
		{Prefix: netip.MustParsePrefix("fd00:10:3::/64"), Iface: 1},
	})
	e.SetNeighborOn(0, routerAddr, routerMAC)
	ta.e = e
	return ta
}

func popFrame(t *testing.T, s *recordingSink) *wire.Packet {
	t.Helper()
	if len(s.frames) == 0 {
		t.Fatal("no frame sent on this interface")
	}
	p := new(wire.Packet)
	if d := wire.Parse(s.frames[0], p, 0); d != wire.DropNone {
		t.Fatalf("invalid frame (%v)", d)
	}
	s.frames = s.frames[1:]
	return p
}

func synFrame(src, dst netip.AddrPort, srcMAC, dstMAC wire.MAC, flags uint8, seq, ack uint32) []byte {
	f := wire.TCPFrame{EthSrc: srcMAC, EthDst: dstMAC, Src: src.Addr(), Dst: dst.Addr(),
		TCP: wire.TCPHeader{SrcPort: src.Port(), DstPort: dst.Port(), Seq: seq, Ack: ack, Flags: flags, Window: 65535,
			Options: wire.TCPOptions{MSS: 1460}}}
	b := make([]byte, wire.TCPFrameLen(&f, 0))
	wire.EncodeTCP(b, &f, nil, nil)
	return b
}

func TestIfaceLegsLeaveByTheirRoutes(t *testing.T) {
	ta := newTwoArmed(t)
	e := ta.e
	lis := netip.AddrPortFrom(frontAddr, 80)
	if _, err := e.Listen(lis); err != nil {
		t.Fatal(err)
	}
	// A client's SYN through the router on the front: the SYN-ACK goes back
	// out of the front, to the MAC the SYN came from.
	client := netip.AddrPortFrom(clientAddr, 40000)
	e.HandleFrameOn(t0, 0, synFrame(client, lis, routerMAC, frontMAC, SYN, 100, 0))
	p := popFrame(t, ta.front)
	if p.TCP.Flags != SYN|ACK || p.EthSrc != frontMAC || p.EthDst != routerMAC || p.Dst != clientAddr {
		t.Fatalf("SYN-ACK: flags %#x %v -> %v to %v; want SYN|ACK from the front's MAC to the router", p.TCP.Flags, p.EthSrc, p.EthDst, p.Dst)
	}
	if len(ta.back.frames) != 0 {
		t.Fatal("the client leg sent on the back interface")
	}

	// The backend leg: on-link on the back, next hop unknown. The back's
	// resolver is asked; nothing is sent until the answer arrives.
	bk := netip.AddrPortFrom(backendAddr, 8080)
	c, err := e.Dial(t0, netip.Addr{}, bk)
	if err != nil {
		t.Fatal(err)
	}
	if c.Key().LocalAddr != backAddr {
		t.Fatalf("backend leg from %v, want the back interface's route source %v", c.Key().LocalAddr, backAddr)
	}
	if len(ta.asked) != 1 || ta.asked[0] != backendAddr || len(ta.back.frames)+len(ta.front.frames) != 0 {
		t.Fatalf("resolver asked %v, frames front %d back %d; want the backend asked of the resolver and nothing sent",
			ta.asked, len(ta.front.frames), len(ta.back.frames))
	}
	if got := e.Counters().Load(NeighborResolves); got != 1 {
		t.Fatalf("neighbor_resolves %d, want 1", got)
	}
	// The same address on the front interface is another neighbour.
	e.SetNeighborOn(0, backendAddr, wire.MAC{9, 9, 9, 9, 9, 9})
	if len(ta.back.frames)+len(ta.front.frames) != 0 {
		t.Fatal("a neighbour on the front released the back leg's SYN")
	}
	e.SetNeighborOn(1, backendAddr, backendMAC)
	p = popFrame(t, ta.back)
	if p.TCP.Flags != SYN || p.EthSrc != backMAC || p.EthDst != backendMAC || p.Src != backAddr || p.Dst != backendAddr {
		t.Fatalf("backend SYN: flags %#x %v -> %v, %v -> %v", p.TCP.Flags, p.EthSrc, p.EthDst, p.Src, p.Dst)
	}
	// Its SYN-ACK arrives on the back; the ACK leaves by the back.
	iss := p.TCP.Seq
	e.HandleFrameOn(t0, 1, synFrame(bk, netip.AddrPortFrom(backAddr, c.Key().LocalPort), backendMAC, backMAC, SYN|ACK, 500, iss+1))
	p = popFrame(t, ta.back)
	if p.TCP.Flags != ACK || c.State() != Established {
		t.Fatalf("after SYN-ACK: sent flags %#x, state %v", p.TCP.Flags, c.State())
	}

	// Anything else goes by the default route: the front, via the router
	// (whose MAC is known), from the front's address.
	c2, err := e.Dial(t0, netip.Addr{}, netip.MustParseAddrPort("192.0.2.9:443"))
	if err != nil {
		t.Fatal(err)
	}
	p = popFrame(t, ta.front)
	if c2.Key().LocalAddr != frontAddr || p.EthDst != routerMAC || p.Dst != netip.MustParseAddr("192.0.2.9") {
		t.Fatalf("default-route SYN from %v to MAC %v", c2.Key().LocalAddr, p.EthDst)
	}
	if ifx, nh, src, ok := e.RouteTo(netip.MustParseAddr("192.0.2.9")); !ok || ifx != 0 || nh != routerAddr || src != frontAddr {
		t.Fatalf("RouteTo = %d %v %v %v", ifx, nh, src, ok)
	}
}

func TestIfaceOwnNeighborRequestWhenResolverDeclines(t *testing.T) {
	ta := newTwoArmed(t)
	ta.resolve = false
	if _, err := ta.e.Dial(t0, netip.Addr{}, netip.AddrPortFrom(backend6, 8080)); err != nil {
		t.Fatal(err)
	}
	p := popFrame(t, ta.back)
	if p.Proto != wire.ProtoICMPv6 || p.ICMP.Type != wire.ICMPv6NeighborSolicit || p.ICMP.Target != backend6 ||
		p.EthSrc != backMAC || p.Src != backAddr6 {
		t.Fatalf("want a neighbour solicitation for %v from %v on the back, got proto %d type %d target %v src %v mac %v",
			backend6, backAddr6, p.Proto, p.ICMP.Type, p.ICMP.Target, p.Src, p.EthSrc)
	}
	if len(ta.front.frames) != 0 {
		t.Fatal("the solicitation went out of the front too")
	}
	// The advertisement comes back on the back interface and releases the SYN.
	adv := make([]byte, 200)
	n := wire.EncodeNeighborAdvert(adv, backendMAC, backend6, backMAC, backAddr6, backend6)
	ta.e.HandleFrameOn(t0, 1, adv[:n])
	p = popFrame(t, ta.back)
	if p.Proto != wire.ProtoTCP || p.TCP.Flags != SYN || p.EthDst != backendMAC {
		t.Fatalf("after the advertisement: proto %d flags %#x to %v", p.Proto, p.TCP.Flags, p.EthDst)
	}
}

func TestIfaceRouteChoice(t *testing.T) {
	ta := newTwoArmed(t)
	e := ta.e
	rs := e.Routes()
	rs = append(rs,
		Route{Prefix: netip.MustParsePrefix("10.10.3.0/25"), Gateway: routerAddr, Iface: 0, Metric: 100},
		Route{Prefix: netip.MustParsePrefix("10.10.3.0/25"), Iface: 1, Metric: 10},
	)
	e.SetRoutes(rs)
	// Longest prefix first (the /25 over the /24), then the lowest metric.
	if ifx, nh, _, ok := e.RouteTo(backendAddr); !ok || ifx != 1 || nh != backendAddr {
		t.Fatalf("RouteTo(%v) = %d %v %v, want the back interface on-link", backendAddr, ifx, nh, ok)
	}
	// With a table, a destination no route covers is unreachable: counted, ErrNoRoute.
	_, err := e.Dial(t0, netip.Addr{}, netip.MustParseAddrPort("[2001:db8::1]:80"))
	if !errors.Is(err, ErrNoRoute) || e.Counters().Load(ConnectNoRoute) != 1 {
		t.Fatalf("dial without a route: err %v, connect_no_route %d", err, e.Counters().Load(ConnectNoRoute))
	}
	// An interface index the engine does not have is counted, not a panic.
	e.HandleFrameOn(t0, 7, synFrame(netip.AddrPortFrom(clientAddr, 1), netip.AddrPortFrom(frontAddr, 80), routerMAC, frontMAC, SYN, 1, 0))
	if e.Counters().Load(RxBadInterface) != 1 {
		t.Fatal("rx_bad_interface not counted")
	}
}

// partialSum rewrites a TCP frame's checksum field as a CHECKSUM_PARTIAL
// sender leaves it: the folded pseudo-header sum alone (not complemented).
func partialSum(t *testing.T, frame []byte) []byte {
	t.Helper()
	p := new(wire.Packet)
	if d := wire.Parse(frame, p, 0); d != wire.DropNone {
		t.Fatalf("parse: %v", d)
	}
	tcp := frame[p.L4:]
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
	}
	src, dst := p.Src.AsSlice(), p.Dst.AsSlice()
	add(src)
	add(dst)
	sum += uint32(wire.ProtoTCP) + uint32(len(tcp))
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	out := append([]byte(nil), frame...)
	out[p.L4+16], out[p.L4+17] = byte(sum>>8), byte(sum)
	return out
}

func TestIfacePartialChecksums(t *testing.T) {
	newEngine := func(virtual bool) (*Engine, *recordingSink) {
		sink := &recordingSink{}
		e, err := New(Config{
			Interfaces: []Interface{{MAC: frontMAC, Sink: sink, Virtual: virtual}},
			Addresses:  []netip.Addr{frontAddr},
			Handler:    &recorder{},
			Rand:       rand.New(rand.NewPCG(5, 6)),
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Listen(netip.AddrPortFrom(frontAddr, 80)); err != nil {
			t.Fatal(err)
		}
		return e, sink
	}
	for _, v6 := range []bool{false, true} {
		src, dst := netip.AddrPortFrom(clientAddr, 40000), netip.AddrPortFrom(frontAddr, 80)
		if v6 {
			src, dst = netip.AddrPortFrom(backend6, 40000), netip.AddrPortFrom(backAddr6, 80)
		}
		syn := partialSum(t, synFrame(src, dst, routerMAC, frontMAC, SYN, 100, 0))

		// A physical interface: strict, the SYN is a checksum drop.
		e, sink := newEngine(false)
		e.AddAddress(dst.Addr())
		e.Listen(dst)
		e.HandleFrameOn(t0, 0, syn)
		if len(sink.frames) != 0 || e.Counters().Load(ParseDropCounter(wire.DropTCPChecksum)) != 1 || e.IfaceStats(0).ChecksumDrops.Load() != 1 {
			t.Fatalf("v6=%v physical: %d frames sent, tcp_checksum drops %d", v6, len(sink.frames), e.Counters().Load(ParseDropCounter(wire.DropTCPChecksum)))
		}

		// A virtual one: accepted (answered with a SYN-ACK), counted.
		e, sink = newEngine(true)
		e.AddAddress(dst.Addr())
		e.Listen(dst)
		e.HandleFrameOn(t0, 0, syn)
		if len(sink.frames) != 1 || e.Counters().Load(RxPartialChecksum) != 1 || e.IfaceStats(0).PartialChecksums.Load() != 1 {
			t.Fatalf("v6=%v virtual: %d frames sent, rx_partial_checksum %d", v6, len(sink.frames), e.Counters().Load(RxPartialChecksum))
		}
		// A field that is neither the checksum nor the pseudo-header sum is
		// corruption, virtual or not: dropped.
		bad := append([]byte(nil), syn...)
		p := new(wire.Packet)
		wire.Parse(syn, p, wire.ParseSkipL4Checksum)
		bad[p.L4+17] ^= 0x01
		e.HandleFrameOn(t0, 0, bad)
		if len(sink.frames) != 1 || e.Counters().Load(ParseDropCounter(wire.DropTCPChecksum)) != 1 {
			t.Fatalf("v6=%v virtual, corrupt field: %d frames sent, tcp_checksum drops %d", v6, len(sink.frames), e.Counters().Load(ParseDropCounter(wire.DropTCPChecksum)))
		}
		// A full, valid checksum is not partial.
		good := synFrame(netip.AddrPortFrom(src.Addr(), 40001), dst, routerMAC, frontMAC, SYN, 100, 0)
		e.HandleFrameOn(t0, 0, good)
		if len(sink.frames) != 2 || e.Counters().Load(RxPartialChecksum) != 1 {
			t.Fatalf("v6=%v virtual, full checksum: %d frames sent, rx_partial_checksum %d", v6, len(sink.frames), e.Counters().Load(RxPartialChecksum))
		}
	}
}
