package stack

// The timer's per-segment cost must not grow with the number of
// connections. BenchmarkACKAmongConns measures one ACK (which restarts the
// connection's retransmission timer and tail loss probe) on one of N
// established connections, each with data in flight, for N = 1,000 and
// 100,000, and one Tick with N timers armed. Compare ns/op across N.

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

type manyConn struct {
	c      *Conn
	frame  []byte // the peer's ACK, patched in place
	peer   netip.Addr
	port   uint16
	iss    seqnum.Value
	ourISS seqnum.Value
}

// manyConns opens n passive connections from distinct 4-tuples, each with
// one 100-byte segment in flight.
func manyConns(b *testing.B, n int) (*Engine, []*manyConn) {
	e, sink := newBenchEngine(b, nil)
	l, err := e.Listen(listenAP)
	if err != nil {
		b.Fatal(err)
	}
	now := t0
	conns := make([]*manyConn, n)
	var pkt wire.Packet
	for i := range conns {
		m := &manyConn{
			peer: netip.AddrFrom4([4]byte{10, 2, byte(i >> 16), byte(i >> 8)}),
			port: uint16(10000 + i&0xff), iss: seqnum.Value(i * 7919),
		}
		e.SetNeighbor(m.peer, peerMAC)
		e.HandleFrame(now, m.build(SYN, 0, 0))
		if !sink.last(&pkt) || pkt.TCP.Flags != SYN|ACK {
			b.Fatalf("conn %d: no SYN-ACK", i)
		}
		m.ourISS = seqnum.Value(pkt.TCP.Seq)
		e.HandleFrame(now, m.build(ACK, 1, 1))
		if m.c = l.Accept(); m.c == nil {
			b.Fatalf("conn %d: handshake did not complete", i)
		}
		m.c.Write(make([]byte, 100))
		m.frame = m.build(ACK, 1, 101)
		conns[i] = m
	}
	return e, conns
}

func (m *manyConn) build(flags uint8, seq, ack uint32) []byte {
	f := wire.TCPFrame{
		EthSrc: peerMAC, EthDst: engineMAC, Src: m.peer, Dst: engineAddr,
		TCP: wire.TCPHeader{
			SrcPort: m.port, DstPort: listenAP.Port(),
			Seq: uint32(m.iss) + seq, Ack: uint32(m.ourISS) + ack, Flags: flags, Window: 65535,
		},
	}
	if flags&SYN != 0 {
		f.TCP.Options = wire.TCPOptions{MSS: 1460, HasWScale: true, WScale: 7, SACKPermitted: true}
	}
	buf := make([]byte, 128)
	return buf[:wire.EncodeTCP(buf, &f, nil, nil)]
}

func BenchmarkACKAmongConns(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			e, conns := manyConns(b, n)
			now := t0.Add(time.Millisecond)
			// Each op: the peer ACKs connection i's 100 bytes, and the
			// application writes 100 more (so the next round ACKs again).
			acked := make([]uint32, n)
			for i := range acked {
				acked[i] = 101
			}
			b.ReportAllocs()
			b.ResetTimer()
			for op := 0; op < b.N; op++ {
				i := op % n
				m := conns[i]
				m.c.Write(benchPayload[:100])
				acked[i] += 100
				patch32(m.frame, benchAckOff, uint32(m.ourISS)+acked[i]-100)
				e.HandleFrame(now, m.frame)
				if op%1024 == 0 {
					now = now.Add(time.Microsecond)
					e.Tick(now)
				}
			}
		})
	}
}

var benchPayload [1448]byte

// BenchmarkTimerRestart isolates the timer structure from the cache misses
// of touching many connection records: each op restarts the retransmission
// timer of one of a small hot set of connections (as every ACK does) and
// asks for the engine's next deadline, with N connections' timers armed in
// the same heap.
func BenchmarkTimerRestart(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			e, conns := manyConns(b, n)
			now := t0.Add(time.Millisecond)
			b.ReportAllocs()
			b.ResetTimer()
			for op := 0; op < b.N; op++ {
				c := conns[op%64].c
				c.rtoAt = now.Add(c.rto + time.Duration(op%1000))
				c.rearm()
				if e.NextDeadline() == Never {
					b.Fatal("no deadline with timers armed")
				}
			}
		})
	}
}
