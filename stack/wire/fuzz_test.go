package wire

import (
	"bytes"
	"net/netip"
	"testing"
)

// FuzzParse: Parse never panics on any input, and what it accepts
// survives the trip back through the encoders. Bit 1 of mode passes
// ParseSkipL4Checksum; bit 2 repairs the checksums first so that the fuzzer
// gets past them into the headers and options.
func FuzzParse(f *testing.F) {
	for _, c := range parseCases(f) {
		f.Add(c.frame, uint8(c.flags))
		f.Add(c.frame, uint8(c.flags)|2)
	}
	f.Fuzz(func(t *testing.T, frame []byte, mode uint8) {
		if mode&2 != 0 {
			frame = repairChecksums(frame)
		}
		var p Packet
		d := Parse(frame, &p, ParseFlags(mode)&ParseSkipL4Checksum)
		if d >= NumDrops {
			t.Fatalf("Parse = %d", d)
		}
		if d != DropNone {
			return
		}
		if p.L3 < EthernetHeaderLen || p.L3 > len(frame) || (p.EtherType != EtherTypeARP && (p.L4 < p.L3 || p.L4 > len(frame))) {
			t.Fatalf("offsets L3 %d L4 %d in a %d-byte frame", p.L3, p.L4, len(frame))
		}
		switch {
		case p.Proto == ProtoTCP:
			checkTCPReencode(t, &p)
		case p.Proto == ProtoICMP && p.ICMP.Type == ICMPv4EchoRequest,
			p.Proto == ProtoICMPv6 && p.ICMP.Type == ICMPv6EchoRequest:
			checkEchoReply(t, &p)
		case p.Proto == ProtoICMPv6 && p.ICMP.Type == ICMPv6NeighborSolicit:
			checkNeighborAdvert(t, &p)
		}
	})
}

func checkTCPReencode(t *testing.T, p *Packet) {
	f := TCPFrame{EthSrc: p.EthSrc, EthDst: p.EthDst, Src: p.Src, Dst: p.Dst, TTL: p.TTL, TCP: p.TCP}
	b := make([]byte, TCPFrameLen(&f, len(p.Payload)))
	half := len(p.Payload) / 2
	if n := EncodeTCP(b, &f, p.Payload[:half], p.Payload[half:]); n != len(b) {
		t.Fatalf("EncodeTCP = %d, want %d", n, len(b))
	}
	var q Packet
	if d := Parse(b, &q, 0); d != DropNone {
		t.Fatalf("re-encoded frame: %v\n% x", d, b)
	}
	want := p.TCP
	want.Options = trimSACK(want.Options)
	if q.TCP != want || !bytes.Equal(q.Payload, p.Payload) || q.Src != p.Src || q.Dst != p.Dst {
		t.Fatalf("re-encoded\n got %+v\nwant %+v", q.TCP, want)
	}
}

func checkEchoReply(t *testing.T, p *Packet) {
	b := make([]byte, len(p.Frame)+IPv6HeaderLen)
	n := EncodeEchoReply(b, p)
	if n == 0 {
		return // to a multicast or broadcast address
	}
	var q Packet
	if d := Parse(b[:n], &q, 0); d != DropNone {
		t.Fatalf("echo reply: %v\n% x", d, b[:n])
	}
	if q.ICMP.ID != p.ICMP.ID || q.ICMP.Seq != p.ICMP.Seq || !bytes.Equal(q.Payload, p.Payload) || q.Src != p.Dst || q.Dst != p.Src {
		t.Fatalf("echo reply %+v to %+v", q.ICMP, p.ICMP)
	}
}

// checkNeighborAdvert answers a solicitation the way the engine will and
// checks the answer is acceptable to a receiver (RFC 4861 §7.1.2).
func checkNeighborAdvert(t *testing.T, p *Packet) {
	dst, dstMAC := p.Src, p.ICMP.LinkAddr
	if dst.IsUnspecified() {
		dst = netip.MustParseAddr("ff02::1")
		dstMAC = IPv6MulticastMAC(dst)
	}
	b := make([]byte, NeighborAdvertLen)
	if EncodeNeighborAdvert(b, macA, p.ICMP.Target, dstMAC, dst, p.ICMP.Target) != NeighborAdvertLen {
		t.Fatal("EncodeNeighborAdvert failed")
	}
	var q Packet
	if d := Parse(b, &q, 0); d != DropNone {
		t.Fatalf("advert: %v\n% x", d, b)
	}
	if q.ICMP.Target != p.ICMP.Target || q.ICMP.LinkAddr != macA || q.TTL != 255 {
		t.Fatalf("advert %+v", q.ICMP)
	}
}

// repairChecksums is fixChecksums for arbitrary bytes: the helper trusts
// length fields, so a frame it cannot handle is returned unchanged.
func repairChecksums(frame []byte) (out []byte) {
	out = append([]byte(nil), frame...)
	defer func() {
		if recover() != nil {
			out = frame
		}
	}()
	return fixChecksums(out)
}
