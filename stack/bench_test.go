package stack

// Benchmarks of the hot paths. Steady state must not allocate: run with
//
//	go test ./stack/ -run '^$' -bench . -benchmem
//
// The peer's frames are encoded once and then patched in place (sequence and
// acknowledgment numbers, with an incremental checksum update as RFC 1624
// does it), so that ns/op measures the engine and not the test's encoder.

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// benchSink hands out one reusable frame buffer: no allocation per frame.
type benchSink struct {
	buf    [9100]byte
	n      int // length of the last committed frame
	frames int
}

func (s *benchSink) NextFrame() []byte { return s.buf[:] }
func (s *benchSink) Commit(n int)      { s.n = n; s.frames++ }

// last parses the last committed frame.
func (s *benchSink) last(p *wire.Packet) bool {
	return s.n > 0 && wire.Parse(s.buf[:s.n], p, 0) == wire.DropNone
}

// discardHandler drops every event.
type discardHandler struct{}

func (discardHandler) ConnEvent(*Conn, Events) {}
func (discardHandler) Acceptable(*Listener)    {}

// benchPeer is the remote end of one 4-tuple, building frames towards the engine.
type benchPeer struct {
	e      *Engine
	sink   *benchSink
	l      *Listener
	port   uint16
	iss    seqnum.Value // the peer's ISN
	ourISS seqnum.Value // the engine's ISN, learned from its SYN-ACK
	tsVal  uint32
}

const benchSegSize = 1448 // 1460 less 12 bytes of timestamps

func newBenchEngine(b testing.TB, mod func(*Config)) (*Engine, *benchSink) {
	b.Helper()
	sink := &benchSink{}
	cfg := Config{
		MAC:       engineMAC,
		Addresses: []netip.Addr{engineAddr},
		Sink:      sink,
		Handler:   discardHandler{},
		Rand:      rand.New(rand.NewPCG(7, 8)),
	}
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	e.SetNeighbor(peerAddr, peerMAC)
	return e, sink
}

// frame encodes a segment from the peer into buf; seq is relative to the
// peer's ISN and ack to the engine's.
func (p *benchPeer) frame(buf []byte, flags uint8, seq, ack uint32, data []byte) []byte {
	f := wire.TCPFrame{
		EthSrc: peerMAC, EthDst: engineMAC, Src: peerAddr, Dst: engineAddr,
		TCP: wire.TCPHeader{
			SrcPort: p.port, DstPort: listenAP.Port(),
			Seq: uint32(p.iss) + seq, Flags: flags, Window: 65535,
			Options: wire.TCPOptions{HasTimestamps: true, TSVal: p.tsVal},
		},
	}
	if flags&ACK != 0 {
		f.TCP.Ack = uint32(p.ourISS) + ack
	}
	if flags&SYN != 0 {
		f.TCP.Options.MSS, f.TCP.Options.HasWScale, f.TCP.Options.WScale, f.TCP.Options.SACKPermitted = 1460, true, 7, true
	}
	n := wire.EncodeTCP(buf, &f, data, nil)
	if n == 0 {
		panic("bench: encode failed")
	}
	return buf[:n]
}

// handshake runs a passive open at now and returns the accepted connection.
func (p *benchPeer) handshake(now Time, buf []byte) *Conn {
	p.e.HandleFrame(now, p.frame(buf, SYN, 0, 0, nil))
	var pkt wire.Packet
	if !p.sink.last(&pkt) || pkt.TCP.Flags != SYN|ACK {
		panic("bench: no SYN-ACK")
	}
	p.ourISS = seqnum.Value(pkt.TCP.Seq)
	p.e.HandleFrame(now, p.frame(buf, ACK, 1, 1, nil))
	c := p.l.Accept()
	if c == nil || c.State() != Established {
		panic("bench: handshake did not complete")
	}
	return c
}

// The TCP header of an IPv4 frame without IP options starts at 34.
const (
	benchTCPOff   = wire.EthernetHeaderLen + wire.IPv4HeaderLen
	benchSeqOff   = benchTCPOff + 4
	benchAckOff   = benchTCPOff + 8
	benchCsumOff  = benchTCPOff + 16
	benchTSValOff = benchTCPOff + 20 + 4 // NOP NOP kind len, then TSval
)

// patch32 overwrites the 32-bit field at off and updates the TCP checksum
// incrementally (RFC 1624 equation 3: HC' = ~(~HC + ~m + m')).
func patch32(frame []byte, off int, v uint32) {
	old := binary.BigEndian.Uint32(frame[off:])
	sum := uint32(^binary.BigEndian.Uint16(frame[benchCsumOff:]))
	sum += uint32(^uint16(old>>16)) + uint32(^uint16(old)) + v>>16 + v&0xffff
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint32(frame[off:], v)
	binary.BigEndian.PutUint16(frame[benchCsumOff:], ^uint16(sum))
}

func TestPatch32KeepsChecksumValid(t *testing.T) {
	e, _ := newBenchEngine(t, nil)
	p := &benchPeer{e: e, port: 40000, iss: 77}
	fr := p.frame(make([]byte, 2000), ACK|PSH, 1, 1, make([]byte, 100))
	for _, v := range []uint32{0, 1, 0xffff, 0x10000, 0xffffffff, 0x12345678} {
		patch32(fr, benchSeqOff, v)
		patch32(fr, benchAckOff, ^v)
		var pkt wire.Packet
		if d := wire.Parse(fr, &pkt, 0); d != wire.DropNone {
			t.Fatalf("after patching %#x: %v", v, d)
		}
		if pkt.TCP.Seq != v || pkt.TCP.Ack != ^v {
			t.Fatalf("patched seq/ack %#x/%#x, want %#x/%#x", pkt.TCP.Seq, pkt.TCP.Ack, v, ^v)
		}
	}
}

// BenchmarkEstablishedACK: one pure ACK on an established connection,
// parsed, demultiplexed and processed; it acknowledges one segment, and the
// application refills the send buffer with one more (so each op is one ACK in
// and one 1448-byte segment out, with eight segments in flight throughout).
func BenchmarkEstablishedACK(b *testing.B) {
	e, sink := newBenchEngine(b, nil)
	l, _ := e.Listen(listenAP)
	p := &benchPeer{e: e, sink: sink, l: l, port: 40000, iss: 1_000_000, tsVal: 100}
	now := t0
	buf := make([]byte, 2048)
	c := p.handshake(now, buf)
	chunk := make([]byte, benchSegSize)
	const inFlight = 8
	for range inFlight {
		if n, _ := c.Write(chunk); n != len(chunk) {
			b.Fatal("short write while priming")
		}
	}
	ackFrame := p.frame(make([]byte, 2048), ACK, 1, 1, nil)
	acked := uint32(1)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		acked += benchSegSize
		patch32(ackFrame, benchAckOff, uint32(p.ourISS)+acked)
		now += 1000
		e.HandleFrame(now, ackFrame)
		c.Write(chunk)
	}
	b.StopTimer()
	if got := c.Info().SndUna; got != uint32(p.ourISS)+acked {
		b.Fatalf("SND.UNA %d, want %d (ACKs not processed)", got-uint32(p.ourISS), acked)
	}
	if inf := c.Info(); inf.SndNxt-inf.SndUna != inFlight*benchSegSize {
		b.Fatalf("%d bytes in flight, want %d", inf.SndNxt-inf.SndUna, inFlight*benchSegSize)
	}
}

// BenchmarkEstablishedData: one in-order 1448-byte segment received (and
// ACKed), then read by the application, which empties the receive buffer.
func BenchmarkEstablishedData(b *testing.B) {
	e, sink := newBenchEngine(b, nil)
	l, _ := e.Listen(listenAP)
	p := &benchPeer{e: e, sink: sink, l: l, port: 40000, iss: 1_000_000, tsVal: 100}
	now := t0
	buf := make([]byte, 2048)
	c := p.handshake(now, buf)
	payload := make([]byte, benchSegSize)
	for i := range payload {
		payload[i] = byte(i)
	}
	dataFrame := p.frame(make([]byte, 2048), ACK|PSH, 1, 1, payload)
	seq := uint32(1)
	rd := make([]byte, 4096)
	b.ReportAllocs()
	b.SetBytes(benchSegSize)
	b.ResetTimer()
	for range b.N {
		patch32(dataFrame, benchSeqOff, uint32(p.iss)+seq)
		seq += benchSegSize
		now += 1000
		e.HandleFrame(now, dataFrame)
		if n, _ := c.Read(rd); n != benchSegSize {
			b.Fatalf("read %d bytes, want %d", n, benchSegSize)
		}
	}
	b.StopTimer()
	if got := c.Info().RcvNxt; got != uint32(p.iss)+seq {
		b.Fatalf("RCV.NXT %d, want %d", got-uint32(p.iss), seq)
	}
}

// BenchmarkBurstRequestReply: a proxy's exchange on a leg with quick-ACK
// mode off — a 64-byte request in a burst (BeginBatch..EndBatch), read,
// and a 64-byte reply written during the burst, which goes out at its end
// with the request's ACK (one segment out per op); then the peer's ACK of
// the reply, outside a burst.
func BenchmarkBurstRequestReply(b *testing.B) {
	e, sink := newBenchEngine(b, nil)
	l, _ := e.Listen(listenAP)
	p := &benchPeer{e: e, sink: sink, l: l, port: 40000, iss: 1_000_000, tsVal: 100}
	now := t0
	buf := make([]byte, 2048)
	c := p.handshake(now, buf)
	c.SetQuickACK(false)
	msg := make([]byte, 64)
	reqFrame := p.frame(make([]byte, 2048), ACK|PSH, 1, 1, msg)
	ackFrame := p.frame(make([]byte, 2048), ACK, 1, 1, nil)
	seq, acked := uint32(1), uint32(1)
	rd := make([]byte, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		patch32(reqFrame, benchSeqOff, uint32(p.iss)+seq)
		patch32(reqFrame, benchAckOff, uint32(p.ourISS)+acked)
		seq += 64
		now += 1000
		e.BeginBatch()
		e.HandleFrame(now, reqFrame)
		if n, _ := c.Read(rd); n != 64 {
			b.Fatalf("read %d bytes, want 64", n)
		}
		c.Write(msg)
		e.EndBatch(now)
		acked += 64
		patch32(ackFrame, benchSeqOff, uint32(p.iss)+seq)
		patch32(ackFrame, benchAckOff, uint32(p.ourISS)+acked)
		e.HandleFrame(now, ackFrame)
	}
	b.StopTimer()
	if in := c.Info(); in.SndUna != uint32(p.ourISS)+acked || in.RcvNxt != uint32(p.iss)+seq {
		b.Fatalf("SND.UNA %d RCV.NXT %d, want %d, %d", in.SndUna-uint32(p.ourISS), in.RcvNxt-uint32(p.iss), acked, seq)
	}
}

// BenchmarkHandshakeAndClose: a whole passive connection — SYN, SYN-ACK,
// ACK, accept; 100 bytes each way; the peer closes first, the application
// closes, the peer ACKs our FIN (so no TIME_WAIT entry accumulates). The
// frames are encoded inside the loop.
func BenchmarkHandshakeAndClose(b *testing.B) {
	e, sink := newBenchEngine(b, nil)
	l, _ := e.Listen(listenAP)
	p := &benchPeer{e: e, sink: sink, l: l, port: 40000, tsVal: 100}
	now := t0
	buf := make([]byte, 2048)
	msg := make([]byte, 100)
	rd := make([]byte, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		now += 1_000_000
		p.iss = seqnum.Value(uint32(i) * 100_000)
		c := p.handshake(now, buf)
		e.HandleFrame(now, p.frame(buf, ACK|PSH, 1, 1, msg))
		if n, _ := c.Read(rd); n != len(msg) {
			b.Fatalf("read %d", n)
		}
		c.Write(msg)
		e.HandleFrame(now, p.frame(buf, ACK|FIN, 101, 101, nil))
		if c.State() != CloseWait {
			b.Fatalf("state %v after the peer's FIN, want CLOSE_WAIT", c.State())
		}
		c.Close()
		e.HandleFrame(now, p.frame(buf, ACK, 102, 102, nil))
		if c.State() != Closed {
			b.Fatalf("state %v after the last ACK, want CLOSED", c.State())
		}
	}
	b.StopTimer()
	if n := e.Stats().Connections(Established); n != 0 {
		b.Fatalf("%d connections left established", n)
	}
}

// BenchmarkSYNCookie: a SYN answered with a cookie SYN-ACK (SYNCookiesAlways),
// a different client ISN each time.
func BenchmarkSYNCookie(b *testing.B) {
	e, sink := newBenchEngine(b, func(c *Config) { c.SYNCookies = SYNCookiesAlways })
	l, _ := e.Listen(listenAP)
	p := &benchPeer{e: e, sink: sink, l: l, port: 40000, tsVal: 100}
	synFrame := p.frame(make([]byte, 2048), SYN, 0, 0, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		patch32(synFrame, benchSeqOff, uint32(i)*7919)
		e.HandleFrame(t0, synFrame)
	}
	b.StopTimer()
	if got := e.Counters().Load(SYNCookiesSent); got != uint64(b.N) {
		b.Fatalf("%d cookies sent, want %d", got, b.N)
	}
	if l.SYNQueueLen() != 0 || len(e.flows) != 0 {
		b.Fatal("a cookie SYN kept state")
	}
}

// BenchmarkRingRefill: a send ring that empties between bursts, as a bulk
// transfer's does when its reader keeps up (64 KiB written in 1448-byte
// segments, then all acknowledged). The ring takes its storage back at the
// size it had (ring.next): no allocation and no regrowth copies per burst.
func BenchmarkRingRefill(b *testing.B) {
	r := ring{max: 4 << 20}
	seg := make([]byte, 1448)
	b.ReportAllocs()
	b.SetBytes(45 * 1448)
	for b.Loop() {
		for range 45 {
			r.Write(seg)
		}
		r.Discard(r.Len())
	}
}
