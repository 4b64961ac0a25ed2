package bpf

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// jumbo is an Ethernet/IPv4 or IPv6/TCP segment to dst carrying payload
// bytes: at MTU 9000 a 8960-byte payload, more than the linear part of a
// multi-buffer xdp_buff holds (BPF_PROG_TEST_RUN puts at most a page, less
// head- and tailroom, in the linear part and the rest in fragments).
func jumbo(tb testing.TB, dst netip.AddrPort, payload int) []byte {
	tb.Helper()
	var ip gopacket.NetworkLayer
	if dst.Addr().Is4() {
		ip = ipv4(layers.IPProtocolTCP, dst.Addr())
	} else {
		ip = ipv6(layers.IPProtocolTCP, dst.Addr())
	}
	t := &layers.TCP{SrcPort: 33333, DstPort: layers.TCPPort(dst.Port()), Seq: 1000, ACK: true, Ack: 1, Window: 64240}
	if err := t.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	p := make(gopacket.Payload, payload)
	for i := range p {
		p[i] = byte(i)
	}
	return frame(tb, nil, ip.(gopacket.SerializableLayer), t, p)
}

// TestFragsProgram checks that the program is loaded as frags-aware
// (SEC("xdp.frags"), BPF_F_XDP_HAS_FRAGS: it attaches to links whose MTU
// exceeds a page and receives multi-buffer frames whole) and that it judges
// a multi-buffer frame by its headers in the linear part and by its whole
// length: a 9000-byte segment to a listener or an owned port is steered, one
// whose IP length claims more than the frame holds is malformed.
func TestFragsProgram(t *testing.T) {
	p := loadForTest(t)
	configure(t, p)
	spec, err := loadXdp()
	if err != nil {
		t.Fatal(err)
	}
	ps := spec.Programs["xdproxy_steer"]
	if ps.SectionName != "xdp.frags" || ps.Flags&bpfFXDPHasFrags == 0 {
		t.Fatalf("program section %q flags %#x: want xdp.frags with BPF_F_XDP_HAS_FRAGS", ps.SectionName, ps.Flags)
	}

	const mtu = 9000
	payload4 := mtu - 20 - 20
	payload6 := mtu - 40 - 20
	truncated := func(pkt []byte, v4 bool) []byte {
		b := append([]byte(nil), pkt...)
		if v4 {
			binary.BigEndian.PutUint16(b[14+2:], uint16(len(b)-14+1))
		} else {
			binary.BigEndian.PutUint16(b[14+4:], uint16(len(b)-14-40+1))
		}
		return b
	}
	l4 := jumbo(t, listen4, payload4)
	l6 := jumbo(t, listen6, payload6)
	for _, fx := range []fixture{
		{"IPv4 9000 to listener", l4, toListener},
		{"IPv6 9000 to listener", l6, toListener},
		{"IPv4 9000 to owned port", jumbo(t, netip.AddrPortFrom(owned4, ownedLo+1), payload4), toOwned},
		{"IPv6 9000 to owned port", jumbo(t, netip.AddrPortFrom(owned6, ownedHi), payload6), toOwned},
		{"IPv4 9000 not ours", jumbo(t, netip.AddrPortFrom(otherAddr, 80), payload4), notOurs},
		{"IPv4 length past the last fragment", truncated(l4, true), malformed},
		{"IPv6 length past the last fragment", truncated(l6, false), malformed},
	} {
		t.Run(fx.name, func(t *testing.T) {
			if len(fx.pkt) != mtu+14 {
				t.Fatalf("fixture is %d bytes, want %d", len(fx.pkt), mtu+14)
			}
			wantAction, wantDelta := expect(fx.want)
			before := counters(t, p)
			ret, err := p.objs.XdproxySteer.Run(&ebpf.RunOptions{Data: fx.pkt})
			if err != nil {
				t.Fatalf("BPF_PROG_TEST_RUN with a %d-byte frame (multi-buffer): %v", len(fx.pkt), err)
			}
			delta := counters(t, p).Sub(before)
			if ret != wantAction {
				t.Errorf("verdict %s, want %s", actionNames[ret], actionNames[wantAction])
			}
			if delta != wantDelta {
				t.Errorf("counter deltas\n got %+v\nwant %+v", delta, wantDelta)
			}
		})
	}
}

// bpfFXDPHasFrags is BPF_F_XDP_HAS_FRAGS (linux/bpf.h).
const bpfFXDPHasFrags = 1 << 5
