package wire

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// FuzzParse: Parse never panics on any input, and what it accepts
// survives the trip back through the encoders. The bits of mode: 1 passes
// ParseSkipL4Checksum; 2 repairs the checksums first so that the fuzzer
// gets past them into the headers and options; 4 passes
// ParseAllowPartialL4Checksum; 8 then leaves a TCP checksum field as a
// CHECKSUM_PARTIAL sender does (the pseudo-header sum alone).
func FuzzParse(f *testing.F) {
	for _, c := range parseCases(f) {
		m := fuzzMode(c.flags)
		f.Add(c.frame, m)
		f.Add(c.frame, m|2)
		f.Add(c.frame, m|2|4|8)
	}
	f.Fuzz(func(t *testing.T, frame []byte, mode uint8) {
		if mode&2 != 0 {
			frame = repairChecksums(frame)
		}
		if mode&8 != 0 {
			frame = repairPartial(frame)
		}
		flags := ParseFlags(mode) & ParseSkipL4Checksum
		if mode&4 != 0 {
			flags |= ParseAllowPartialL4Checksum
		}
		var p Packet
		d := Parse(frame, &p, flags)
		if d >= NumDrops {
			t.Fatalf("Parse = %d", d)
		}
		if d != DropNone {
			return
		}
		if p.L3 < EthernetHeaderLen || p.L3 > len(frame) || (p.EtherType != EtherTypeARP && (p.L4 < p.L3 || p.L4 > len(frame))) {
			t.Fatalf("offsets L3 %d L4 %d in a %d-byte frame", p.L3, p.L4, len(frame))
		}
		checkPartialMark(t, &p, flags)
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

// fuzzMode is the FuzzParse mode that passes flags.
func fuzzMode(flags ParseFlags) uint8 {
	m := uint8(flags & ParseSkipL4Checksum)
	if flags&ParseAllowPartialL4Checksum != 0 {
		m |= 4
	}
	return m
}

// checkPartialMark: an accepted TCP segment checked under flags either
// verifies (reference code) or, only with ParseAllowPartialL4Checksum, is
// marked partial and carries exactly the pseudo-header sum.
func checkPartialMark(t *testing.T, p *Packet, flags ParseFlags) {
	if p.Proto != ProtoTCP || flags&ParseSkipL4Checksum != 0 {
		if p.PartialChecksum {
			t.Fatalf("PartialChecksum set (proto %d, flags %d)", p.Proto, flags)
		}
		return
	}
	seg := p.Frame[p.L4 : p.L4+int(p.Frame[p.L4+12]>>4)*4+len(p.Payload)]
	addrs := p.Frame[p.L3+12 : p.L3+20]
	if p.EtherType == EtherTypeIPv6 {
		addrs = p.Frame[p.L3+8 : p.L3+40]
	}
	ps := refPseudo(addrs, ProtoTCP, len(seg))
	valid := refChecksum(seg, ps) == 0
	field := binary.BigEndian.Uint16(seg[16:])
	switch {
	case !p.PartialChecksum && !valid:
		t.Fatalf("accepted unmarked with a bad checksum %#04x", field)
	case p.PartialChecksum && (valid || flags&ParseAllowPartialL4Checksum == 0 || field != pseudoField(addrs, ProtoTCP, len(seg))):
		t.Fatalf("marked partial: valid %v, flags %d, field %#04x", valid, flags, field)
	}
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

// repairPartial is asPartial for arbitrary bytes: a frame it cannot handle
// is returned unchanged.
func repairPartial(frame []byte) (out []byte) {
	out = append([]byte(nil), frame...)
	defer func() {
		if recover() != nil {
			out = frame
		}
	}()
	if seg, addrs, proto := l4Of(out); proto == ProtoTCP && len(seg) >= 18 {
		binary.BigEndian.PutUint16(seg[16:], pseudoField(addrs, proto, len(seg)))
	}
	return out
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
