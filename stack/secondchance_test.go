package stack

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/xdproxy/xdproxy/stack/wire"
)

var (
	nodeB    = netip.MustParseAddr("10.0.0.9") // another node, on-link
	nodeC    = netip.MustParseAddr("10.0.0.10")
	nodeBMAC = wire.MAC{0x02, 0, 0, 0, 0, 0x09}
	nodeCMAC = wire.MAC{0x02, 0, 0, 0, 0, 0x0a}
)

// withSecondChance gives the harness's engine an interface with a source
// address (the outer packets leave from it) and second chance peers.
func withSecondChance(peers ...netip.Addr) harnessOpt {
	return func(c *Config) {
		c.Interfaces = []Interface{{MAC: c.MAC, Sink: c.Sink, Sources: []netip.Addr{engineAddr}}}
		c.SecondChance.Peers = peers
	}
}

func newSecondChanceHarness(t *testing.T, peers ...netip.Addr) *harness {
	h := newHarness(t, withSecondChance(peers...))
	h.e.SetNeighbor(nodeB, nodeBMAC)
	h.e.SetNeighbor(nodeC, nodeCMAC)
	h.listen()
	h.ourISS, h.knowISS = 7000, true // a connection held elsewhere: any ISN
	return h
}

// forwarded marks a frame as the XDP program leaves a decapsulated one.
func forwarded(f []byte) []byte {
	copy(f[0:6], wire.SecondChanceMAC[:])
	return f
}

// expectForwarded asserts that the engine sent frame's IP packet inside
// an IPv4-in-IPv4 packet from engineAddr to peer, by peer's MAC.
func (h *harness) expectForwarded(frame []byte, peer netip.Addr, peerMAC wire.MAC) {
	h.t.Helper()
	if len(h.sink.frames) == 0 {
		h.t.Fatalf("engine sent nothing, want the segment forwarded to %v", peer)
	}
	b := h.sink.frames[0]
	h.sink.frames = h.sink.frames[1:]
	eth := wire.EthernetHeaderLen
	switch {
	case wire.MAC(b[0:6]) != peerMAC || wire.MAC(b[6:12]) != engineMAC:
		h.t.Fatalf("forwarded frame %x -> %x, want %v -> %v", b[6:12], b[0:6], engineMAC, peerMAC)
	case binary.BigEndian.Uint16(b[12:14]) != wire.EtherTypeIPv4 || b[eth] != 0x45 || b[eth+9] != wire.ProtoIPIP:
		h.t.Fatalf("forwarded frame is not IPv4 in IPv4: %x", b[:eth+20])
	case binary.BigEndian.Uint16(b[eth+6:]) != 0x4000:
		h.t.Errorf("outer header's fragment field %#x, want DF", binary.BigEndian.Uint16(b[eth+6:]))
	case netip.AddrFrom4([4]byte(b[eth+12:eth+16])) != engineAddr || netip.AddrFrom4([4]byte(b[eth+16:eth+20])) != peer:
		h.t.Fatalf("outer %v -> %v, want %v -> %v", b[eth+12:eth+16], b[eth+16:eth+20], engineAddr, peer)
	case wire.Checksum(b[eth:eth+20], 0) != 0:
		h.t.Errorf("outer header checksum does not verify")
	case int(binary.BigEndian.Uint16(b[eth+2:])) != len(b)-eth:
		h.t.Errorf("outer total length %d, frame carries %d", binary.BigEndian.Uint16(b[eth+2:]), len(b)-eth)
	}
	if inner := b[eth+20:]; !bytes.Equal(inner, frame[eth:]) {
		h.t.Fatalf("inner packet differs from the segment received:\n got %x\nwant %x", inner, frame[eth:])
	}
}

// sendStray sends the peer's segment s and expects it forwarded to the
// given peer and nothing else.
func (h *harness) sendStray(s seg, peer netip.Addr, mac wire.MAC) {
	h.t.Helper()
	f := h.frame(s)
	h.e.HandleFrame(h.now, f)
	h.expectForwarded(f, peer, mac)
	h.expectNone()
}

// A mid-connection segment for a listener, held by no connection here, goes
// to the other node; no RST.
func TestSecondChanceForwardsStraySegment(t *testing.T) {
	h := newSecondChanceHarness(t, nodeB)
	h.sendStray(seg{flags: ACK | PSH, seq: 1, ack: 1, data: []byte("GET / HTTP/1.1\r\n")}, nodeB, nodeBMAC)
	h.expectCounter(SecondChanceForwarded, 1)
	h.expectCounter(TxResets, 0)

	// A FIN, and the client's RST, too: the owner must hear them.
	h.sendStray(seg{flags: FIN | ACK, seq: 17, ack: 1}, nodeB, nodeBMAC)
	h.sendStray(seg{flags: RST, seq: 18}, nodeB, nodeBMAC)
	h.expectCounter(SecondChanceForwarded, 3)
	h.expectCounter(RxRSTIgnored, 0)
}

// A SYN opens a connection here as always; the MSS it advertises leaves
// room for the outer header.
func TestSecondChanceSYNIsServedHere(t *testing.T) {
	h := newSecondChanceHarness(t, nodeB)
	h.knowISS = false
	h.send(seg{flags: SYN, seq: 0})
	p := h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
	if want := uint16(1500 - 20 - 20 - wire.IPv4HeaderLen); p.TCP.Options.MSS != want {
		t.Errorf("MSS %d with second chance, want %d", p.TCP.Options.MSS, want)
	}
	h.expectCounter(SecondChanceForwarded, 0)
}

// With SYN cookies on, an ACK whose cookie does not check is more likely a
// segment of a connection another node holds: forwarded, not just dropped.
func TestSecondChanceBadCookie(t *testing.T) {
	h := newHarness(t, withSecondChance(nodeB), func(c *Config) { c.SYNCookies = SYNCookiesAlways })
	h.e.SetNeighbor(nodeB, nodeBMAC)
	h.listen()
	h.ourISS, h.knowISS = 7000, true
	h.sendStray(seg{flags: ACK, seq: 1, ack: 1}, nodeB, nodeBMAC)
	h.expectCounter(SYNCookiesRejected, 0)
	// Forwarded already: dropped as before second chance.
	h.e.HandleFrame(h.now, forwarded(h.frame(seg{flags: ACK, seq: 1, ack: 1})))
	h.expectNone()
	h.expectCounter(SYNCookiesRejected, 1)
	h.expectCounter(SecondChanceNoOwner, 1)
}

// The owner serves a forwarded segment like any other.
func TestSecondChanceOwnerServesForwarded(t *testing.T) {
	h := newHarness(t, withSecondChance(nodeB))
	h.e.SetNeighbor(nodeB, nodeBMAC)
	h.established()
	h.e.HandleFrame(h.now, forwarded(h.frame(seg{flags: ACK | PSH, seq: 1, ack: 1, data: []byte("hello")})))
	h.expectEvents(EventReadable)
	h.expectCounter(SecondChanceNoOwner, 0)
	h.expectCounter(SecondChanceForwarded, 0)
}

// Forwarded once at most: a forwarded segment that matches nothing here is
// answered as by a host without the connection (one peer: RST) ...
func TestSecondChanceNeverForwardsTwice(t *testing.T) {
	h := newSecondChanceHarness(t, nodeB)
	h.e.HandleFrame(h.now, forwarded(h.frame(seg{flags: ACK, seq: 1, ack: 5})))
	h.expect(seg{flags: RST, seq: 5})
	h.expectNone()
	h.e.HandleFrame(h.now, forwarded(h.frame(seg{flags: RST, seq: 1})))
	h.expectNone()
	h.expectCounter(SecondChanceNoOwner, 2)
	h.expectCounter(SecondChanceForwarded, 0)
}

// ... and, with several peers (each got a copy; another may hold it), not
// answered at all.
func TestSecondChanceSeveralPeers(t *testing.T) {
	h := newSecondChanceHarness(t, nodeB, nodeC)
	f := h.frame(seg{flags: ACK, seq: 1, ack: 1})
	h.e.HandleFrame(h.now, f)
	h.expectForwarded(f, nodeB, nodeBMAC)
	h.expectForwarded(f, nodeC, nodeCMAC)
	h.expectNone()
	h.expectCounter(SecondChanceForwarded, 1)

	h.e.HandleFrame(h.now, forwarded(h.frame(seg{flags: ACK, seq: 1, ack: 1})))
	h.expectNone()
	h.expectCounter(SecondChanceNoOwner, 1)
	h.expectCounter(TxResets, 0)
}

// A peer whose next hop has no MAC yet: resolution is asked, the segment is
// dropped (the client retransmits), never reset.
func TestSecondChanceUnresolvedPeer(t *testing.T) {
	h := newSecondChanceHarness(t, netip.MustParseAddr("10.0.0.77"))
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	_, p, ok := h.recv()
	if !ok || p.EtherType != wire.EtherTypeARP || p.ARP.TargetIP != netip.MustParseAddr("10.0.0.77") {
		t.Fatalf("want an ARP request for the peer, got %+v", p)
	}
	h.expectNone()
	h.expectCounter(SecondChanceUnresolved, 1)
	h.expectCounter(TxResets, 0)
}

// Segments that are not a listener's (a backend leg's port) and
// connections of the other family than the peers' are answered as today.
func TestSecondChanceNotForListenersOnly(t *testing.T) {
	h := newSecondChanceHarness(t, nodeB)
	h.ourPort = 30000
	h.send(seg{flags: ACK, seq: 1, ack: 5})
	h.expect(seg{flags: RST, seq: 5})
	h.expectCounter(SecondChanceForwarded, 0)

	h = newSecondChanceHarness(t, netip.MustParseAddr("fd00::9"))
	h.send(seg{flags: ACK, seq: 1, ack: 5})
	h.expect(seg{flags: RST, seq: 5})
	h.expectCounter(SecondChanceForwarded, 0)
}

// IPv6: a stray segment goes IPv6 in IPv6 (next header 41) to the IPv6
// peer, and the MSS advertised for IPv6 leaves room for the 40-byte header.
func TestSecondChanceIPv6(t *testing.T) {
	vip := netip.MustParseAddrPort("[2001:db8::1]:443")
	self, peer, client := netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("2001:db8::20"), netip.MustParseAddr("2001:db8:1::7")
	sink := &recordingSink{}
	e, err := New(Config{
		Interfaces:   []Interface{{MAC: engineMAC, Sink: sink, Sources: []netip.Addr{self}}},
		Handler:      &recorder{},
		Rand:         rand.New(rand.NewPCG(1, 2)),
		SecondChance: SecondChance{Peers: []netip.Addr{nodeB, peer}},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.SetNeighbor(peer, nodeCMAC)
	if _, err := e.Listen(vip); err != nil {
		t.Fatal(err)
	}
	f := &wire.TCPFrame{EthSrc: peerMAC, EthDst: engineMAC, Src: client, Dst: vip.Addr(),
		TCP: wire.TCPHeader{SrcPort: 40000, DstPort: vip.Port(), Seq: 1, Ack: 1, Flags: ACK, Window: 1000}}
	in := make([]byte, wire.TCPFrameLen(f, 3))
	wire.EncodeTCP(in, f, []byte("abc"), nil)
	e.HandleFrame(t0, in)
	if len(sink.frames) != 1 {
		t.Fatalf("sent %d frames, want the segment forwarded once (to the IPv6 peer only)", len(sink.frames))
	}
	out := sink.frames[0]
	eth := wire.EthernetHeaderLen
	if wire.MAC(out[0:6]) != nodeCMAC || binary.BigEndian.Uint16(out[12:]) != wire.EtherTypeIPv6 || out[eth+6] != wire.ProtoIPv6Encap ||
		netip.AddrFrom16([16]byte(out[eth+8:eth+24])) != self || netip.AddrFrom16([16]byte(out[eth+24:eth+40])) != peer {
		t.Fatalf("forwarded frame %x", out[:eth+40])
	}
	if !bytes.Equal(out[eth+40:], in[eth:]) {
		t.Fatal("inner packet differs from the segment received")
	}
	if got := e.ourMSS(0, FlowKey{LocalAddr: vip.Addr()}); got != 1500-40-20-40 {
		t.Errorf("IPv6 MSS %d, want %d", got, 1500-40-20-40)
	}
}

// protoUnreachable is the ICMP "protocol unreachable" a host without an
// IP-in-IP handler sends back for the packet quoted (from its IP header).
func protoUnreachable(t *testing.T, from netip.Addr, fromMAC wire.MAC, quoted []byte) []byte {
	b := make([]byte, 1500)
	n := wire.EncodeICMPFragNeeded(b, fromMAC, engineMAC, from, 0, quoted)
	if n == 0 {
		t.Fatal("encode ICMP")
	}
	m := b[wire.EthernetHeaderLen+wire.IPv4HeaderLen : n]
	m[1] = 2 // protocol unreachable (RFC 792)
	m[2], m[3] = 0, 0
	binary.BigEndian.PutUint16(m[2:4], wire.Checksum(m, 0))
	return b[:n]
}

// A peer whose host answers a forwarded packet with ICMP destination
// unreachable is passed over for PeerDownFor; with no other peer, stray
// segments are reset meanwhile, as without second chance.
func TestSecondChancePeerUnreachable(t *testing.T) {
	h := newSecondChanceHarness(t, nodeB)
	h.e.HandleFrame(h.now, h.frame(seg{flags: ACK, seq: 1, ack: 1}))
	if len(h.sink.frames) != 1 {
		t.Fatalf("sent %d frames, want the segment forwarded", len(h.sink.frames))
	}
	fwd := h.sink.frames[0][wire.EthernetHeaderLen:]
	h.drain()

	// From someone else about a packet to another address: not ours to act on.
	other := append([]byte(nil), fwd...)
	copy(other[16:20], nodeC.AsSlice())
	h.e.HandleFrame(h.now, protoUnreachable(t, nodeC, nodeCMAC, other))
	h.expectCounter(SecondChancePeerUnreachable, 0)

	h.e.HandleFrame(h.now, protoUnreachable(t, nodeB, nodeBMAC, fwd))
	h.expectNone()
	h.expectCounter(SecondChancePeerUnreachable, 1)
	h.send(seg{flags: ACK, seq: 1, ack: 5})
	h.expect(seg{flags: RST, seq: 5})
	h.expectCounter(SecondChancePeersDown, 1)

	h.now = h.now.Add(PeerDownFor)
	h.sendStray(seg{flags: ACK, seq: 1, ack: 1}, nodeB, nodeBMAC)
	h.expectCounter(SecondChanceForwarded, 2)
}

// Forwarding a too-big packet would be dropped by the link: counted.
func TestSecondChanceTooBig(t *testing.T) {
	h := newSecondChanceHarness(t, nodeB)
	h.send(seg{flags: ACK, seq: 1, ack: 1, data: make([]byte, 1460)})
	h.expectNone()
	h.expectCounter(SecondChanceTooBig, 1)
	h.expectCounter(TxResets, 0)
}

func TestSecondChanceConfig(t *testing.T) {
	for _, peers := range [][]netip.Addr{
		{netip.Addr{}},
		{netip.MustParseAddr("0.0.0.0")},
		{netip.MustParseAddr("224.0.0.1")},
		{netip.MustParseAddr("127.0.0.1")},
		{nodeB, nodeB},
	} {
		cfg := Config{Sink: &recordingSink{}, Rand: rand.New(rand.NewPCG(1, 2)), SecondChance: SecondChance{Peers: peers}}
		if _, err := New(cfg); err == nil {
			t.Errorf("peers %v: accepted", peers)
		}
	}
}

// BenchmarkSecondChanceForward is the cost of one stray segment handed to
// one peer: the engine's input (parse, flow and TIME_WAIT misses, listener
// lookup) and the route lookup, encapsulation and copy; next to it, what
// the same segment cost before second chance (answered with a RST).
func BenchmarkSecondChanceForward(b *testing.B) {
	for _, bc := range []struct {
		name  string
		size  int
		peers []netip.Addr
	}{
		{"ack", 0, []netip.Addr{nodeB}},
		{"1400B", 1400, []netip.Addr{nodeB}},
		{"ack_reset_without_peers", 0, nil},
		{"1400B_reset_without_peers", 1400, nil},
	} {
		size := bc.size
		b.Run(bc.name, func(b *testing.B) {
			sink := &benchSink{}
			e, err := New(Config{
				Interfaces:   []Interface{{MAC: engineMAC, Sink: sink, Sources: []netip.Addr{engineAddr}, MTU: 1500}},
				Addresses:    []netip.Addr{engineAddr},
				Handler:      discardHandler{},
				Rand:         rand.New(rand.NewPCG(1, 2)),
				SecondChance: SecondChance{Peers: bc.peers},
			})
			if err != nil {
				b.Fatal(err)
			}
			e.SetNeighbor(nodeB, nodeBMAC)
			e.SetNeighbor(peerAddr, peerMAC)
			if _, err := e.Listen(listenAP); err != nil {
				b.Fatal(err)
			}
			h := &harness{t: &testing.T{}, peerPort: peerAP.Port(), ourPort: listenAP.Port(), peerISS: 1, ourISS: 1}
			f := h.frame(seg{flags: ACK, seq: 1, ack: 1, data: make([]byte, size)})
			b.SetBytes(int64(len(f)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				e.HandleFrame(t0, f)
			}
			b.StopTimer()
			want := uint64(b.N)
			if bc.peers == nil {
				want = 0
			}
			if got := e.Counters().Load(SecondChanceForwarded); got != want || sink.frames != b.N {
				b.Fatalf("forwarded %d, sent %d, of %d", got, sink.frames, b.N)
			}
		})
	}
}
