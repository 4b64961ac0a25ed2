package wire

import (
	"testing"
)

var sinkDrop Drop

// BenchmarkParse: an ordinary ACK with timestamps, the most common segment
// on a busy connection, and a full-sized data segment; the partial cases
// are what the kernel behind a veth sends (ParseAllowPartialL4Checksum).
func BenchmarkParse(b *testing.B) {
	for _, c := range []struct {
		name  string
		frame []byte
		flags ParseFlags
	}{
		{"ack-ts-v4", tcp4(b, ackHdr, nil), 0},
		{"ack-ts-v6", tcp6(b, ackHdr, nil), 0},
		{"ack-ts-v4-skipcsum", tcp4(b, ackHdr, nil), ParseSkipL4Checksum},
		{"data1448-v4", tcp4(b, ackHdr, make([]byte, 1448)), 0},
		{"data1448-v4-skipcsum", tcp4(b, ackHdr, make([]byte, 1448)), ParseSkipL4Checksum},
		// CHECKSUM_PARTIAL allowed: a valid segment costs the same; a
		// partial one pays the failed full sum, then one compare.
		{"data1448-v4-allowpartial", tcp4(b, ackHdr, make([]byte, 1448)), ParseAllowPartialL4Checksum},
		{"data1448-v4-partial", asPartial(tcp4(b, ackHdr, make([]byte, 1448))), ParseAllowPartialL4Checksum},
		{"ack-ts-v6-partial", asPartial(tcp6(b, ackHdr, nil)), ParseAllowPartialL4Checksum},
		{"sack3-v6", tcp6(b, sackHdr, nil), 0},
		{"arp", func() []byte {
			f := make([]byte, ARPFrameLen)
			EncodeARP(f, ARPRequest, macA, ip4A, MAC{}, ip4B)
			return f
		}(), 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var p Packet
			for b.Loop() {
				sinkDrop = Parse(c.frame, &p, c.flags)
			}
			if sinkDrop != DropNone {
				b.Fatal(sinkDrop)
			}
		})
	}
}

// BenchmarkEncodeTCP: one full 1448-byte segment (MSS 1500 with
// timestamps), payload in two parts as it comes out of a ring buffer.
func BenchmarkEncodeTCP(b *testing.B) {
	data := make([]byte, 1448)
	for _, c := range []struct {
		name string
		f    TCPFrame
	}{
		{"1448-v4", TCPFrame{EthSrc: macA, EthDst: macB, Src: ip4A, Dst: ip4B, TCP: ackHdr}},
		{"1448-v6", TCPFrame{EthSrc: macA, EthDst: macB, Src: ip6A, Dst: ip6B, TCP: ackHdr}},
		{"ack-sack3-v4", TCPFrame{EthSrc: macA, EthDst: macB, Src: ip4A, Dst: ip4B, TCP: sackHdr}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			out := make([]byte, 1600)
			p1, p2 := data[:1000], data[1000:]
			if c.name == "ack-sack3-v4" {
				p1, p2 = nil, nil
			}
			for b.Loop() {
				if EncodeTCP(out, &c.f, p1, p2) == 0 {
					b.Fatal("EncodeTCP failed")
				}
			}
		})
	}
}

func BenchmarkEncodeEchoReply(b *testing.B) {
	var p Packet
	req := echoRequest(false, 1, 2, make([]byte, 56))
	if Parse(req, &p, 0) != DropNone {
		b.Fatal("bad request")
	}
	out := make([]byte, 200)
	b.ReportAllocs()
	for b.Loop() {
		EncodeEchoReply(out, &p)
	}
}
