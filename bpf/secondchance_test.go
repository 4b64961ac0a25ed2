package bpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket/layers"

	"github.com/xdproxy/xdproxy/stack/wire"
)

// Second chance fixtures: another node (peer4 / peer6) forwards a segment
// it holds no connection for, IP in IP, built by the engine's own encoder.
var (
	peer4     = netip.MustParseAddr("203.0.113.20")
	peer6     = netip.MustParseAddr("2001:db8:ffff::20")
	stranger4 = netip.MustParseAddr("203.0.113.66")
	self4     = netip.MustParseAddr("203.0.113.10")
	self6     = netip.MustParseAddr("2001:db8:ffff::10")
)

// encap wraps the IP packet of frame (an untagged Ethernet frame) in an
// outer header from src to the node, with VLAN tags on the outer frame.
func encap(tb testing.TB, frame []byte, src netip.Addr, tags ...tag) []byte {
	tb.Helper()
	dst := self4
	if src.Is6() {
		dst = self6
	}
	b := make([]byte, 4096)
	n := wire.EncodeIPInIP(b, wire.MAC(macClient), wire.MAC(macServer), src, dst, unpadded(frame)[offIP:])
	if n == 0 {
		tb.Fatal("encap: EncodeIPInIP failed")
	}
	b = b[:n]
	for i := len(tags) - 1; i >= 0; i-- {
		// Insert a tag after the MACs: TPID, TCI, then the EtherType that was there.
		t := make([]byte, 4)
		binary.BigEndian.PutUint16(t[0:], uint16(tags[i].tpid))
		binary.BigEndian.PutUint16(t[2:], tags[i].vid)
		b = append(b[:12:12], append(t, b[12:]...)...)
	}
	return b
}

// unpadded cuts an untagged frame to its IP length (builders pad to 60 bytes).
func unpadded(frame []byte) []byte {
	ip := frame[offIP:]
	if ip[0]>>4 == 4 {
		return frame[:offIP+int(binary.BigEndian.Uint16(ip[2:]))]
	}
	return frame[:offIP+40+int(binary.BigEndian.Uint16(ip[4:]))]
}

// decapsulated is what the program should hand the engine for frame.
func decapsulated(frame []byte) []byte {
	out := append([]byte(nil), unpadded(frame)...)
	copy(out[0:6], wire.SecondChanceMAC[:])
	copy(out[6:12], macClient)
	return out
}

func TestSecondChanceDecapsulation(t *testing.T) {
	p := loadForTest(t)
	configure(t, p)
	inner4, inner6 := tcp4(t, listen4), tcp6(t, listen6)

	// No peer yet: a tunnel is the kernel's.
	if got := run(t, p.objs.XdproxySteer, encap(t, inner4, peer4)); got != xdpPass {
		t.Fatalf("without peers: %s", actionNames[got])
	}
	if c := counters(t, p); c.PassNotOurs != 1 || c.RedirectSecondChance != 0 {
		t.Fatalf("without peers: counters %+v", c)
	}
	for _, a := range []netip.Addr{peer4, peer6, peer4} { // twice: no error
		if err := p.AddPeer(a); err != nil {
			t.Fatal(err)
		}
	}

	ap := netip.AddrPortFrom
	ipip := encap(t, inner4, peer4)
	for _, fx := range []struct {
		name string
		pkt  []byte
		want []byte // the frame steered; nil: not decapsulated
		why  reason // when want is nil
	}{
		{"ipv4 in ipv4 from a peer to a listener", ipip, decapsulated(inner4), 0},
		{"ipv6 in ipv6 from a peer to a listener", encap(t, inner6, peer6), decapsulated(inner6), 0},
		{"802.1Q tagged tunnel: the tag goes", encap(t, inner4, peer4, tag{layers.EthernetTypeDot1Q, 7}), decapsulated(inner4), 0},
		{"QinQ tagged tunnel", encap(t, inner4, peer4, tag{layers.EthernetTypeQinQ, 1}, tag{layers.EthernetTypeDot1Q, 2}), decapsulated(inner4), 0},
		{"from a node not a peer", encap(t, inner4, stranger4), nil, notOurs},
		{"to a port that is no listener", encap(t, tcp4(t, ap(listen4.Addr(), 81)), peer4), nil, notOurs},
		{"to an owned range (never forwarded)", encap(t, tcp4(t, ap(owned4, ownedLo)), peer4), nil, notOurs},
		{"tunnel in a tunnel", encap(t, ipip, peer4), nil, notOurs},
		{"outer header with options", mutate(ipip, func(b []byte) []byte {
			b[offIP] = 0x46
			return b
		}), nil, notOurs},
		{"outer fragment", mutate(ipip, func(b []byte) []byte {
			b[offIP+6] |= 0x20
			return b
		}), nil, notOurs},
		{"outer length disagrees with the inner", mutate(ipip, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[offIP+2:], binary.BigEndian.Uint16(b[offIP+2:])-1)
			return b
		}), nil, malformed},
		{"inner TCP header cut, to a listener", mutate(ipip, func(b []byte) []byte {
			b[offIP+20+20+12] = 4 << 4 // data offset 4
			return b
		}), nil, malformed},
		{"inner header truncated", ipip[:offIP+20+10], nil, malformed},
	} {
		t.Run(fx.name, func(t *testing.T) {
			before := counters(t, p)
			out := make([]byte, len(fx.pkt)+64)
			ret, err := p.objs.XdproxySteer.Run(&ebpf.RunOptions{Data: fx.pkt, DataOut: out})
			if err != nil {
				t.Fatal(err)
			}
			delta := counters(t, p).Sub(before)
			if fx.want == nil {
				wantAction, wantDelta := expect(fx.why)
				if ret != wantAction || delta != wantDelta {
					t.Errorf("%s %+v, want %s %+v", actionNames[ret], delta, actionNames[wantAction], wantDelta)
				}
				return
			}
			// No XSK bound: the redirect falls back to XDP_PASS, with the
			// packet as the engine would get it.
			if want := (Counters{RxPackets: 1, RedirectSecondChance: 1, RedirectFailed: 1}); ret != xdpPass || delta != want {
				t.Errorf("%s %+v, want XDP_PASS %+v", actionNames[ret], delta, want)
			}
			if got := out[:len(fx.want)]; !bytes.Equal(got, fx.want) {
				t.Errorf("steered frame\n got %x\nwant %x", got, fx.want)
			}
		})
	}

	// The last peer gone, tunnels are the kernel's again.
	for _, a := range []netip.Addr{peer4, peer6} {
		if err := p.RemovePeer(a); err != nil {
			t.Fatal(err)
		}
	}
	if got := run(t, p.objs.XdproxySteer, encap(t, inner6, peer6)); got != xdpPass {
		t.Fatalf("peers removed: %s", actionNames[got])
	}
	if err := p.RemovePeer(peer4); err == nil {
		t.Error("removing a peer twice: no error")
	}
	if err := p.AddPeer(netip.IPv4Unspecified()); err == nil {
		t.Error("0.0.0.0 accepted as a peer")
	}
}

// BenchmarkXDPSecondChance is the added XDP cost of second chance: the
// kernel's time for one run (BPF_PROG_TEST_RUN, repeat 1: with repeat > 1
// the kernel reruns the program on the already decapsulated buffer) on a
// segment a peer forwarded, next to a plain segment to a listener measured
// the same way. The difference is the tunnel's parse, peer lookup and
// decapsulation.
func BenchmarkXDPSecondChance(b *testing.B) {
	p := loadForTest(b)
	configure(b, p)
	if err := p.AddPeer(peer4); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		pkt  []byte
	}{
		{"listener", tcp4(b, listen4)},
		{"second_chance_ipv4", encap(b, tcp4(b, listen4), peer4)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var total int64
			for range b.N {
				_, d, err := p.objs.XdproxySteer.Benchmark(bc.pkt, 1, nil)
				if err != nil {
					b.Fatal(err)
				}
				total += d.Nanoseconds()
			}
			b.ReportMetric(float64(total)/float64(b.N), "ns/pkt")
		})
	}
}

// forwardedByUs is the IP packet of a segment this node forwarded to peer
// (outer source self), as an ICMP error quotes it.
func forwardedByUs(tb testing.TB, peer netip.Addr) []byte {
	tb.Helper()
	self, inner := self4, tcp4(tb, listen4)
	if peer.Is6() {
		self, inner = self6, tcp6(tb, listen6)
	}
	b := make([]byte, 2048)
	n := wire.EncodeIPInIP(b, wire.MAC(macServer), wire.MAC(macClient), self, peer, unpadded(inner)[offIP:])
	if n == 0 {
		tb.Fatal("EncodeIPInIP failed")
	}
	return b[offIP:n]
}

// An ICMP destination unreachable about a packet forwarded to a peer goes to
// the engine (it passes the peer over); about a tunnel to anyone else it is
// the kernel's.
func TestSecondChanceICMP(t *testing.T) {
	p := loadForTest(t)
	configure(t, p)
	if err := p.SetICMPSteering(true); err != nil {
		t.Fatal(err)
	}
	unreach4 := icmp4Error(t, 3, 2, forwardedByUs(t, peer4))
	unreach6 := icmp6Error(t, 1, 4, forwardedByUs(t, peer6))
	stranger := icmp4Error(t, 3, 2, forwardedByUs(t, stranger4))
	check := func(name string, pkt []byte, want reason) {
		t.Helper()
		checkVerdict(t, p, name, pkt, want)
	}
	check("no peers: ipv4", unreach4, notOurs)
	for _, a := range []netip.Addr{peer4, peer6} {
		if err := p.AddPeer(a); err != nil {
			t.Fatal(err)
		}
	}
	check("ipv4 tunnel to a peer", unreach4, toICMP)
	check("ipv6 tunnel to a peer", unreach6, toICMP)
	check("tunnel to another node", stranger, notOurs)
}
