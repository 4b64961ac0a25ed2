package stack

// Unit tests of the engine's parts: the ring buffer, the timer heap, the
// TIME_WAIT table, keepalive, ARP/ICMP handling, Dial's wait for ARP, and
// Config.Validate.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// --- ring ---

// ringContents reads everything out of a copy's view without consuming it.
func ringContents(r *ring) []byte {
	a, b := r.peek(0, r.Len())
	return append(append([]byte(nil), a...), b...)
}

func seqBytes(from, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(from + i)
	}
	return p
}

func TestUnitRingWrapAround(t *testing.T) {
	r := ring{max: 64 << 10}
	defer r.reset()
	if n := r.Write(seqBytes(0, 3000)); n != 3000 {
		t.Fatalf("wrote %d, want 3000", n)
	}
	if len(r.buf) != minRingSize {
		t.Fatalf("storage %d bytes, want %d", len(r.buf), minRingSize)
	}
	got := make([]byte, 2000)
	if n := r.Read(got); n != 2000 || !bytes.Equal(got, seqBytes(0, 2000)) {
		t.Fatalf("read %d bytes %v..., want the first 2000", n, got[:4])
	}
	// 1000 stored from offset 2000; 2500 more run past the end and wrap.
	if n := r.Write(seqBytes(3000, 2500)); n != 2500 {
		t.Fatalf("wrote %d, want 2500", n)
	}
	if len(r.buf) != minRingSize {
		t.Fatalf("storage grew to %d although 3500 bytes fit in %d", len(r.buf), minRingSize)
	}
	a, b := r.peek(0, r.Len())
	if len(a) != minRingSize-2000 || len(b) != 3500-len(a) {
		t.Fatalf("peek split %d+%d, want %d+%d", len(a), len(b), minRingSize-2000, 3500-(minRingSize-2000))
	}
	// A range that starts past the wrap point is one slice.
	if a, b := r.peek(2500, 100); !bytes.Equal(a, seqBytes(4500, 100)) || b != nil {
		t.Fatalf("peek(2500, 100) = %d+%d bytes, want the 100 bytes from 4500 in one slice", len(a), len(b))
	}
	if got := ringContents(&r); !bytes.Equal(got, seqBytes(2000, 3500)) {
		t.Fatal("contents after wrap-around out of order")
	}
	// Growing a wrapped ring keeps the byte order.
	if n := r.Write(seqBytes(5500, 4000)); n != 4000 {
		t.Fatalf("wrote %d, want 4000", n)
	}
	if len(r.buf) != 2*minRingSize {
		t.Fatalf("storage %d after growth, want %d", len(r.buf), 2*minRingSize)
	}
	if got := ringContents(&r); !bytes.Equal(got, seqBytes(2000, 7500)) {
		t.Fatal("contents after growing a wrapped ring out of order")
	}
}

func TestUnitRingBound(t *testing.T) {
	const bound = 10000
	r := ring{max: bound}
	defer r.reset()
	if r.Free() != bound || r.Len() != 0 || r.buf != nil {
		t.Fatalf("empty ring: free %d len %d storage %d", r.Free(), r.Len(), len(r.buf))
	}
	for _, step := range []struct{ write, wantLen, wantStorage int }{
		{4096, 4096, 4096},
		{1, 4097, 8192},
		{4000, 8097, 8192},
		{5000, bound, bound}, // doubling would give 16384: capped at the bound
	} {
		before := r.Len()
		n := r.Write(seqBytes(before, step.write))
		if r.Len() != step.wantLen || n != step.wantLen-before || len(r.buf) != step.wantStorage {
			t.Fatalf("write %d: len %d (wrote %d), storage %d; want len %d, storage %d",
				step.write, r.Len(), n, len(r.buf), step.wantLen, step.wantStorage)
		}
	}
	if r.Free() != 0 || r.Write([]byte{1}) != 0 {
		t.Fatal("a full ring accepted more")
	}
	if got := ringContents(&r); !bytes.Equal(got, seqBytes(0, bound)) {
		t.Fatal("contents of the full ring out of order")
	}
}

func TestUnitRingDiscardPeekRelease(t *testing.T) {
	r := ring{max: 8192}
	r.Write(seqBytes(0, 100))
	if a, b := r.peek(10, 20); !bytes.Equal(a, seqBytes(10, 20)) || len(b) != 0 {
		t.Fatal("peek(10, 20) wrong")
	}
	if a, b := r.peek(50, 0); a != nil || b != nil {
		t.Fatal("peek of 0 bytes returned storage")
	}
	r.Discard(30)
	if r.Len() != 70 || !bytes.Equal(ringContents(&r), seqBytes(30, 70)) {
		t.Fatal("Discard(30) did not drop the head")
	}
	p := make([]byte, 100)
	if n := r.Read(p); n != 70 || !bytes.Equal(p[:n], seqBytes(30, 70)) {
		t.Fatalf("Read returned %d bytes", n)
	}
	if r.bb != nil || r.buf != nil || r.head != 0 {
		t.Fatal("an emptied ring still holds its storage")
	}
	if n := r.Read(p); n != 0 {
		t.Fatalf("Read of an empty ring returned %d", n)
	}
	r.Write(seqBytes(0, 10))
	r.Discard(10)
	if r.bb != nil || r.buf != nil {
		t.Fatal("Discard to empty kept the storage")
	}
	r.Write(seqBytes(0, 10))
	r.reset()
	if r.bb != nil || r.buf != nil || r.Len() != 0 || r.Free() != 8192 {
		t.Fatal("reset kept storage or bytes")
	}
}

// TestUnitRingModel runs random writes, reads, discards and peeks against a
// plain byte slice.
func TestUnitRingModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 20 {
		bound := 4096 + rng.IntN(40000)
		r := ring{max: bound}
		var model []byte
		next := 0
		for op := range 2000 {
			switch rng.IntN(4) {
			case 0:
				p := seqBytes(next, rng.IntN(3*minRingSize))
				n := r.Write(p)
				if want := min(len(p), bound-len(model)); n != want {
					t.Fatalf("round %d op %d: Write %d returned %d, want %d", round, op, len(p), n, want)
				}
				model = append(model, p[:n]...)
				next += n
			case 1:
				p := make([]byte, rng.IntN(3*minRingSize))
				n := r.Read(p)
				if want := min(len(p), len(model)); n != want || !bytes.Equal(p[:n], model[:n]) {
					t.Fatalf("round %d op %d: Read returned %d bytes (want %d) or wrong ones", round, op, n, want)
				}
				model = model[n:]
			case 2:
				k := rng.IntN(len(model) + 1)
				r.Discard(k)
				model = model[k:]
			case 3:
				off := rng.IntN(len(model) + 1)
				n := rng.IntN(len(model) - off + 1)
				a, b := r.peek(off, n)
				if got := append(append([]byte(nil), a...), b...); !bytes.Equal(got, model[off:off+n]) {
					t.Fatalf("round %d op %d: peek(%d, %d) wrong", round, op, off, n)
				}
			}
			if r.Len() != len(model) || r.Free() != bound-len(model) || len(r.buf) > bound {
				t.Fatalf("round %d op %d: len %d free %d storage %d, model %d bound %d",
					round, op, r.Len(), r.Free(), len(r.buf), len(model), bound)
			}
			if (r.buf == nil) != (len(model) == 0) {
				t.Fatalf("round %d op %d: storage held %v with %d bytes stored", round, op, r.buf != nil, len(model))
			}
		}
		r.reset()
	}
}

// --- timerHeap ---

func checkHeap(t *testing.T, h timerHeap) {
	t.Helper()
	for i, c := range h {
		if c.heapIdx != i {
			t.Fatalf("heap[%d].heapIdx = %d", i, c.heapIdx)
		}
		if i > 0 && h[(i-1)/2].deadline > c.deadline {
			t.Fatalf("heap order broken at %d: parent %d > child %d", i, h[(i-1)/2].deadline, c.deadline)
		}
	}
}

func TestUnitTimerHeapOrder(t *testing.T) {
	var h timerHeap
	deadlines := []Time{50, 10, 40, 10, 30, 20, 60, 5}
	conns := make([]*Conn, len(deadlines))
	for i, d := range deadlines {
		conns[i] = &Conn{heapIdx: -1, deadline: d}
		h.set(conns[i])
		checkHeap(t, h)
	}
	// Re-arm: one later, one earlier, one out (Never).
	conns[7].deadline = 45 // was the earliest
	h.set(conns[7])
	conns[6].deadline = 1 // was the latest
	h.set(conns[6])
	conns[2].deadline = Never
	h.set(conns[2])
	if conns[2].heapIdx != -1 || len(h) != 7 {
		t.Fatalf("setting Never left the connection in the heap (idx %d, len %d)", conns[2].heapIdx, len(h))
	}
	h.remove(conns[0])
	h.remove(conns[0]) // a second remove is a no-op
	checkHeap(t, h)
	var got []Time
	for c := h.peek(); c != nil; c = h.peek() {
		got = append(got, c.deadline)
		h.remove(c)
		checkHeap(t, h)
	}
	if want := []Time{1, 10, 10, 20, 30, 45}; !slices.Equal(got, want) {
		t.Fatalf("deadlines in heap order %v, want %v", got, want)
	}
}

// TestUnitTimerHeapModel checks the heap against a brute-force minimum over
// random set / re-arm / remove operations.
func TestUnitTimerHeapModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var h timerHeap
	conns := make([]*Conn, 64)
	for i := range conns {
		conns[i] = &Conn{heapIdx: -1, deadline: Never}
	}
	in := map[*Conn]bool{}
	for op := range 20000 {
		c := conns[rng.IntN(len(conns))]
		switch rng.IntN(5) {
		case 0, 1, 2:
			c.deadline = Time(rng.IntN(1000))
			h.set(c)
			in[c] = true
		case 3:
			c.deadline = Never
			h.set(c)
			delete(in, c)
		case 4:
			h.remove(c)
			c.deadline = Never
			delete(in, c)
		}
		if len(h) != len(in) {
			t.Fatalf("op %d: heap holds %d, model %d", op, len(h), len(in))
		}
		for _, c := range conns {
			if (c.heapIdx >= 0) != in[c] {
				t.Fatalf("op %d: heapIdx %d, in model %v", op, c.heapIdx, in[c])
			}
		}
		min := Never
		for c := range in {
			min = Time(minInt64(int64(min), int64(c.deadline)))
		}
		if p := h.peek(); (p == nil) != (len(in) == 0) || (p != nil && p.deadline != min) {
			t.Fatalf("op %d: peek wrong, want deadline %d", op, min)
		}
		if op%97 == 0 {
			checkHeap(t, h)
		}
	}
}

func minInt64(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}

// --- timeWaitTable ---

func twKey(i int) FlowKey {
	return FlowKey{LocalAddr: engineAddr, RemoteAddr: peerAddr, LocalPort: 80, RemotePort: uint16(1000 + i)}
}

func twLiveKeys(tw *timeWaitTable) []uint16 {
	var ports []uint16
	tw.each(func(k FlowKey, _ int) bool { ports = append(ports, k.RemotePort-1000); return true })
	return ports
}

func TestUnitTimeWaitFIFOExpiry(t *testing.T) {
	var e Engine
	e.tw.init(16)
	for i := range 3 {
		if e.tw.insert(twEntry{key: twKey(i), expires: Time(100 + 10*i), rcvNxt: seqnum.Value(i)}) {
			t.Fatal("insert into a table with room recycled an entry")
		}
	}
	if got := e.tw.nextExpiry(); got != 100 {
		t.Fatalf("next expiry %d, want 100", got)
	}
	e.tw.expire(&e, 99)
	if got := twLiveKeys(&e.tw); !slices.Equal(got, []uint16{0, 1, 2}) {
		t.Fatalf("entries %v after expire(99), want all three", got)
	}
	e.tw.expire(&e, 110)
	if got := twLiveKeys(&e.tw); !slices.Equal(got, []uint16{2}) {
		t.Fatalf("entries %v after expire(110), want [2]", got)
	}
	if _, ok := e.tw.lookup(twKey(0)); ok {
		t.Fatal("an expired entry is still found")
	}
	if slot, ok := e.tw.lookup(twKey(2)); !ok || e.tw.entry(slot).rcvNxt != 2 {
		t.Fatal("the live entry is not found, or its slot holds another")
	}
	if e.counters.Load(TimeWaitExpired) != 2 {
		t.Fatalf("time_wait_expired %d, want 2", e.counters.Load(TimeWaitExpired))
	}
	e.tw.expire(&e, 1000)
	if e.tw.nextExpiry() != Never || e.tw.live != 0 || len(e.tw.index) != 0 {
		t.Fatal("table not empty after everything expired")
	}
}

func TestUnitTimeWaitTombstones(t *testing.T) {
	var e Engine
	e.tw.init(16)
	for i := range 4 {
		e.tw.insert(twEntry{key: twKey(i), expires: Time(100 + i)})
	}
	// Remove the head and one in the middle: tombstones, skipped everywhere.
	for _, i := range []int{0, 2} {
		slot, _ := e.tw.lookup(twKey(i))
		e.tw.remove(slot)
		e.tw.remove(slot) // removing a tombstone again changes nothing
	}
	if e.tw.live != 2 || e.tw.n != 4 {
		t.Fatalf("live %d slots %d, want 2 live in 4 slots", e.tw.live, e.tw.n)
	}
	if got := twLiveKeys(&e.tw); !slices.Equal(got, []uint16{1, 3}) {
		t.Fatalf("live entries %v, want [1 3]", got)
	}
	if got := e.tw.nextExpiry(); got != 101 {
		t.Fatalf("next expiry %d, want 101 (the head tombstone skipped)", got)
	}
	e.tw.expire(&e, 102)
	if got := twLiveKeys(&e.tw); !slices.Equal(got, []uint16{3}) || e.counters.Load(TimeWaitExpired) != 1 {
		t.Fatalf("after expire(102): live %v, expired counter %d; want [3], 1", got, e.counters.Load(TimeWaitExpired))
	}
}

func TestUnitTimeWaitRecycleAtMax(t *testing.T) {
	var e Engine
	e.tw.init(3)
	for i := range 3 {
		if e.tw.insert(twEntry{key: twKey(i), expires: Time(100 + i)}) {
			t.Fatalf("insert %d recycled below the maximum", i)
		}
	}
	if !e.tw.insert(twEntry{key: twKey(3), expires: 103}) {
		t.Fatal("insert into a full table did not report recycling")
	}
	if got := twLiveKeys(&e.tw); !slices.Equal(got, []uint16{1, 2, 3}) {
		t.Fatalf("entries %v, want the oldest recycled: [1 2 3]", got)
	}
	if _, ok := e.tw.lookup(twKey(0)); ok {
		t.Fatal("the recycled entry is still found")
	}
	if len(e.tw.ring) != 3 {
		t.Fatalf("ring grew to %d slots past the maximum 3", len(e.tw.ring))
	}
}

// TestUnitTimeWaitRestart: the peer retransmits its FIN, the entry's 2MSL
// restarts and it moves behind entries that entered TIME_WAIT after it.
func TestUnitTimeWaitRestart(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.TimeWait = 60 * time.Second })
	h.timeWait() // connection A, TIME_WAIT from now
	keyA, issA := h.key(), h.ourISS
	h.advance(10 * time.Second)
	// Connection B from another port enters TIME_WAIT 10s later.
	h.peerPort, h.knowISS, h.c = 40001, false, nil
	h.timeWait()
	keyB := h.key()
	h.expectDeadline(50 * time.Second) // A expires first
	h.advance(20 * time.Second)
	// A's peer retransmits its FIN: ACKed again, A's timer restarts.
	h.peerPort, h.ourISS = keyA.RemotePort, issA
	h.send(seg{flags: FIN | ACK, seq: 1, ack: 2})
	if len(h.sink.frames) != 1 {
		t.Fatalf("%d frames in answer to the retransmitted FIN, want 1 ACK", len(h.sink.frames))
	}
	h.drain()
	h.expectCounter(TimeWaitFINReACKed, 1)
	h.expectDeadline(40 * time.Second) // now B is the oldest
	if got := h.e.tw.live; got != 2 || h.e.Stats().Connections(TimeWait) != 2 {
		t.Fatalf("%d live entries, gauge %d; want 2", got, h.e.Stats().Connections(TimeWait))
	}
	h.advance(40 * time.Second)
	if _, ok := h.e.tw.lookup(keyB); ok {
		t.Fatal("B did not expire at its time")
	}
	if _, ok := h.e.tw.lookup(keyA); !ok {
		t.Fatal("A expired at its old time although its timer restarted")
	}
	h.expectDeadline(20 * time.Second)
	h.advance(20 * time.Second)
	if _, ok := h.e.tw.lookup(keyA); ok || h.e.Stats().Connections(TimeWait) != 0 {
		t.Fatal("A did not expire 60s after the restart")
	}
}

// --- keepalive ---

func keepaliveHarness(t *testing.T) *harness {
	return newHarness(t, func(c *Config) {
		c.Keepalive = Keepalive{Idle: 10 * time.Second, Interval: 2 * time.Second, Probes: 3}
		c.InitialRTO = 30 * time.Second
		c.MinRTO = 30 * time.Second
	})
}

func TestUnitKeepaliveUnanswered(t *testing.T) {
	h := keepaliveHarness(t)
	h.established()
	h.expectDeadline(10 * time.Second)
	h.advance(10*time.Second - 1)
	h.expectNone()
	for i := range 3 {
		h.advance(time.Nanosecond)
		if i > 0 {
			h.advance(2*time.Second - time.Nanosecond)
		}
		// <SEQ=SND.NXT-1><ACK=RCV.NXT><CTL=ACK>, no data.
		h.expect(seg{flags: ACK, seq: 0, ack: 1})
		h.expectNone()
		h.expectDeadline(2 * time.Second)
		h.expectState(Established)
	}
	h.expectCounter(KeepaliveProbes, 3)
	h.advance(2 * time.Second)
	h.expect(seg{flags: RST, seq: 1})
	h.expectNone()
	h.expectEvents(EventTimedOut | EventClosed)
	if !errors.Is(h.c.Err(), ErrTimeout) {
		t.Fatalf("Err %v, want ErrTimeout", h.c.Err())
	}
	h.expectState(Closed)
	h.expectCounter(KeepaliveTimeouts, 1)
	h.expectDeadline(-1)
}

func TestUnitKeepaliveAnswered(t *testing.T) {
	h := keepaliveHarness(t)
	h.established()
	h.advance(10 * time.Second)
	h.expect(seg{flags: ACK, seq: 0, ack: 1})
	h.advance(2 * time.Second)
	h.expect(seg{flags: ACK, seq: 0, ack: 1}) // the second probe
	// The peer answers: the count resets, the idle time starts again.
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	h.expectNone()
	h.advance(2 * time.Second) // the probe timer fires, finds the connection alive
	h.expectNone()
	h.expectDeadline(8 * time.Second)
	h.advance(8 * time.Second)
	h.expect(seg{flags: ACK, seq: 0, ack: 1})
	// Three more probes are allowed before the reset: the count started over.
	for range 2 {
		h.advance(2 * time.Second)
		h.expect(seg{flags: ACK, seq: 0, ack: 1})
	}
	h.expectState(Established)
	h.advance(2 * time.Second)
	h.expect(seg{flags: RST, seq: 1})
	h.expectCounter(KeepaliveProbes, 5)
}

func TestUnitKeepaliveNotWithDataInFlight(t *testing.T) {
	h := keepaliveHarness(t)
	h.established()
	h.advance(5 * time.Second)
	if n, err := h.c.Write([]byte("hello")); n != 5 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	h.expect(seg{flags: ACK | PSH, seq: 1, ack: 1, data: []byte("hello")})
	// Unacknowledged data: the retransmission timers watch the peer, and
	// the keepalive idle time passes twice without a probe.
	for range 20 {
		h.advance(time.Second)
	}
	h.drain()
	h.expectCounter(KeepaliveProbes, 0)
	h.expectState(Established)
	// Once the data is acknowledged, idleness counts from the ACK.
	h.send(seg{flags: ACK, seq: 1, ack: 6})
	h.drain()
	h.advance(10*time.Second - time.Millisecond)
	h.expectNone()
	h.advance(time.Millisecond)
	h.expect(seg{flags: ACK, seq: 5, ack: 1})
	h.expectCounter(KeepaliveProbes, 1)
}

// --- ARP, ICMP ---

func TestUnitARPRequest(t *testing.T) {
	h := newHarness(t)
	req := make([]byte, wire.ARPFrameLen)
	wire.EncodeARP(req, wire.ARPRequest, peerMAC, peerAddr, wire.MAC{}, engineAddr)
	h.e.HandleFrame(h.now, req)
	_, p, ok := h.recv()
	if !ok || p.EtherType != wire.EtherTypeARP {
		t.Fatal("no ARP reply to a request for our address")
	}
	a := p.ARP
	if a.Op != wire.ARPReply || a.SenderIP != engineAddr || a.SenderMAC != engineMAC ||
		a.TargetIP != peerAddr || a.TargetMAC != peerMAC || p.EthDst != peerMAC || p.EthSrc != engineMAC {
		t.Fatalf("ARP reply %+v (eth %v -> %v), want %v is-at %v, to %v", a, p.EthSrc, p.EthDst, engineAddr, engineMAC, peerMAC)
	}
	h.expectNone()
	h.expectCounter(ARPRequestsIn, 1)
	h.expectCounter(ARPRepliesOut, 1)

	// For an address the engine does not own: silence.
	wire.EncodeARP(req, wire.ARPRequest, peerMAC, peerAddr, wire.MAC{}, netip.MustParseAddr("10.0.0.99"))
	h.e.HandleFrame(h.now, req)
	h.expectNone()
	h.expectCounter(ARPRequestsIn, 1)
	h.expectCounter(RxNotOurs, 1)
}

// echoRequest builds an ICMPv4 echo request frame.
func echoRequest(src, dst netip.Addr, id, seq uint16, data []byte) []byte {
	b := make([]byte, wire.EthernetHeaderLen+wire.IPv4HeaderLen+wire.ICMPHeaderLen+len(data))
	copy(b[0:6], engineMAC[:])
	copy(b[6:12], peerMAC[:])
	binary.BigEndian.PutUint16(b[12:14], wire.EtherTypeIPv4)
	ip := b[wire.EthernetHeaderLen:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(len(ip)))
	ip[8], ip[9] = 64, wire.ProtoICMP
	s, d := src.As4(), dst.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:12], wire.Checksum(ip[:wire.IPv4HeaderLen], 0))
	m := ip[wire.IPv4HeaderLen:]
	m[0] = wire.ICMPv4EchoRequest
	binary.BigEndian.PutUint16(m[4:6], id)
	binary.BigEndian.PutUint16(m[6:8], seq)
	copy(m[wire.ICMPHeaderLen:], data)
	binary.BigEndian.PutUint16(m[2:4], wire.Checksum(m, 0))
	return b
}

func TestUnitICMPEcho(t *testing.T) {
	h := newHarness(t)
	h.e.HandleFrame(h.now, echoRequest(peerAddr, engineAddr, 0x1234, 7, []byte("ping payload")))
	_, p, ok := h.recv()
	if !ok || p.Proto != wire.ProtoICMP {
		t.Fatal("no ICMP answer to an echo request")
	}
	if p.ICMP.Type != wire.ICMPv4EchoReply || p.ICMP.ID != 0x1234 || p.ICMP.Seq != 7 ||
		p.Src != engineAddr || p.Dst != peerAddr || p.EthDst != peerMAC || !bytes.Equal(p.Payload, []byte("ping payload")) {
		t.Fatalf("echo reply type %d id %#x seq %d %v -> %v payload %q", p.ICMP.Type, p.ICMP.ID, p.ICMP.Seq, p.Src, p.Dst, p.Payload)
	}
	h.expectCounter(ICMPEchoReplies, 1)
	h.e.HandleFrame(h.now, echoRequest(peerAddr, netip.MustParseAddr("10.0.0.99"), 1, 1, nil))
	h.expectNone()
	h.expectCounter(ICMPEchoReplies, 1)
}

// fragNeeded builds the ICMP "fragmentation needed" a router would send
// about the engine's TCP frame sent, with the quoted sequence number
// replaced by seq.
func fragNeeded(sent []byte, mtu uint16, seq uint32) []byte {
	quoted := append([]byte(nil), sent[wire.EthernetHeaderLen:]...)
	binary.BigEndian.PutUint32(quoted[wire.IPv4HeaderLen+4:], seq)
	b := make([]byte, 1500)
	n := wire.EncodeICMPFragNeeded(b, wire.MAC{0x02, 0, 0, 0, 0, 0xfe}, engineMAC, netip.MustParseAddr("10.0.0.254"), mtu, quoted)
	if n == 0 {
		panic("EncodeICMPFragNeeded failed")
	}
	return b[:n]
}

func TestUnitPathMTU(t *testing.T) {
	h := newHarness(t)
	// Connection B, on another port, with data in flight too.
	h.peerPort = 40001
	h.established()
	other := h.c
	other.Write(make([]byte, 2000))
	h.drain()
	// Connection A, the one the ICMP messages quote.
	h.peerPort, h.knowISS, h.c = 40000, false, nil
	h.established()
	data := seqBytes(0, 3000)
	h.c.Write(data)
	first := h.sink.frames[0]
	h.expect(seg{flags: ACK, seq: 1, ack: 1, data: data[:1448]})
	h.expect(seg{flags: ACK, seq: 1449, ack: 1, data: data[1448:2896]})
	h.expect(seg{flags: ACK | PSH, seq: 2897, ack: 1, data: data[2896:]})
	iss := uint32(h.ourISS)

	// Quoted sequence numbers outside SND.UNA..SND.NXT: ignored (RFC 5927).
	for _, seq := range []uint32{iss, iss + 3002, iss + 100000} {
		h.e.HandleFrame(h.now, fragNeeded(first, 1000, seq))
		h.expectNone()
		if h.c.Info().MSS != 1460 {
			t.Fatalf("quoted seq %d (outside the flight) lowered the MSS to %d", seq-iss, h.c.Info().MSS)
		}
	}
	h.expectCounter(ICMPPathMTU, 0)

	// The first segment in flight: the MSS drops to 1000-40 and the flight
	// is sent again at the new size (948 bytes with timestamps), each
	// segment cut to fit as Linux's tcp_fragment cuts it.
	h.e.HandleFrame(h.now, fragNeeded(first, 1000, iss+1))
	if got := h.c.Info().MSS; got != 960 {
		t.Fatalf("MSS %d after frag-needed with MTU 1000, want 960", got)
	}
	h.expect(seg{flags: ACK, seq: 1, ack: 1, data: data[:948]})
	h.expect(seg{flags: ACK, seq: 949, ack: 1, data: data[948:1448]})
	h.expect(seg{flags: ACK, seq: 1449, ack: 1, data: data[1448:2396]})
	h.expect(seg{flags: ACK, seq: 2397, ack: 1, data: data[2396:2896]})
	h.expect(seg{flags: ACK | PSH, seq: 2897, ack: 1, data: data[2896:]})
	h.expectNone()
	h.expectCounter(ICMPPathMTU, 1)
	if got := other.Info().MSS; got != 1460 {
		t.Fatalf("the other connection's MSS changed to %d", got)
	}

	// An MTU below the IPv4 minimum is taken as 576; a larger MSS is ignored.
	h.e.HandleFrame(h.now, fragNeeded(first, 1400, iss+1))
	h.expectNone()
	h.e.HandleFrame(h.now, fragNeeded(first, 100, iss+1))
	if got := h.c.Info().MSS; got != 536 {
		t.Fatalf("MSS %d after frag-needed with MTU 100, want 536", got)
	}
}

// --- Dial and ARP ---

func TestUnitDialWaitsForARP(t *testing.T) {
	h := newHarness(t)
	delete(h.e.neigh.macs, neighKey{addr: peerAddr})
	c, err := h.e.Dial(h.now, engineAddr, peerAP)
	if err != nil {
		t.Fatal(err)
	}
	h.c, h.ourPort = c, c.Key().LocalPort
	_, p, ok := h.recv()
	if !ok || p.EtherType != wire.EtherTypeARP || p.ARP.Op != wire.ARPRequest || p.ARP.TargetIP != peerAddr ||
		p.ARP.SenderIP != engineAddr || p.EthDst != wire.BroadcastMAC {
		t.Fatalf("Dial to an unresolved next hop: want a broadcast ARP request for %v, got %+v", peerAddr, p)
	}
	h.expectNone() // no SYN yet
	h.expectState(SynSent)
	h.expectDeadline(DefaultInitialRTO)
	h.advance(DefaultInitialRTO) // unanswered: asked again
	if _, p, ok := h.recv(); !ok || p.EtherType != wire.EtherTypeARP {
		t.Fatal("no second ARP request on the retransmission timer")
	}
	h.expectNone()
	h.expectCounter(ARPRequestsOut, 2)

	reply := make([]byte, wire.ARPFrameLen)
	wire.EncodeARP(reply, wire.ARPReply, peerMAC, peerAddr, engineMAC, engineAddr)
	h.e.HandleFrame(h.now, reply)
	h.expect(seg{flags: SYN, seq: 0}) // the harness checks it goes to peerMAC
	h.expectNone()
	h.send(seg{flags: SYN | ACK, seq: 0, ack: 1})
	h.expect(seg{flags: ACK, seq: 1, ack: 1})
	h.expectState(Established)
	h.expectEvents(EventConnected)
}

func TestUnitDialARPUnanswered(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.SYNRetries = 2 })
	delete(h.e.neigh.macs, neighKey{addr: peerAddr})
	c, err := h.e.Dial(h.now, engineAddr, peerAP)
	if err != nil {
		t.Fatal(err)
	}
	h.c = c
	for range 3 {
		h.advance(time.Minute)
	}
	h.expectState(Closed)
	h.expectEvents(EventConnectFailed | EventClosed)
	if !errors.Is(c.Err(), ErrNoRoute) {
		t.Fatalf("Err %v, want ErrNoRoute", c.Err())
	}
	h.expectCounter(ConnectNoRoute, 1)
	h.expectCounter(ConnectTimeouts, 0)
	for {
		_, p, ok := h.recv()
		if !ok {
			break
		}
		if p.EtherType != wire.EtherTypeARP {
			t.Fatal("a frame other than ARP was sent to an unresolved peer")
		}
	}
}

// --- Config ---

func TestUnitConfigValidate(t *testing.T) {
	valid := func() Config {
		return Config{Sink: &recordingSink{}, Rand: rand.New(rand.NewPCG(1, 2)), Addresses: []netip.Addr{engineAddr}}
	}
	if err := (&Config{Sink: &recordingSink{}, Rand: rand.New(rand.NewPCG(1, 2))}).Validate(); err != nil {
		t.Fatalf("zero config with Sink and Rand: %v", err)
	}
	for _, tc := range []struct {
		field string
		mod   func(*Config)
	}{
		{"MTU", func(c *Config) { c.MTU = 500 }},
		{"MTU", func(c *Config) { c.MTU = 9001 }},
		{"SYNBacklog", func(c *Config) { c.SYNBacklog = -1 }},
		{"AcceptBacklog", func(c *Config) { c.AcceptBacklog = -1 }},
		{"TimeWaitMax", func(c *Config) { c.TimeWaitMax = -1 }},
		{"MaxRetries", func(c *Config) { c.MaxRetries = -1 }},
		{"SYNRetries", func(c *Config) { c.SYNRetries = -1 }},
		{"SYNACKRetries", func(c *Config) { c.SYNACKRetries = -1 }},
		{"Keepalive.Probes", func(c *Config) { c.Keepalive.Probes = -1 }},
		{"Keepalive.Idle", func(c *Config) { c.Keepalive.Idle = -time.Second }},
		{"Keepalive.Interval", func(c *Config) { c.Keepalive.Interval = -time.Second }},
		{"TimeWait", func(c *Config) { c.TimeWait = -time.Second }},
		{"MinRTO", func(c *Config) { c.MinRTO = -1 }},
		{"InitialRTO", func(c *Config) { c.InitialRTO = -1 }},
		{"MaxRTO", func(c *Config) { c.MaxRTO = -1 }},
		{"ChallengeACKBurst", func(c *Config) { c.ChallengeACKBurst = -1 }},
		{"ChallengeACKWindow", func(c *Config) { c.ChallengeACKWindow = -1 }},
		{"CookieSecretLifetime", func(c *Config) { c.CookieSecretLifetime = -1 }},
		{"SYNCookies", func(c *Config) { c.SYNCookies = 7 }},
		{"RcvBuffer", func(c *Config) { c.RcvBuffer = 100 }},
		{"SndBuffer", func(c *Config) { c.SndBuffer = 100 }},
		{"RcvBuffer/SndBuffer", func(c *Config) { c.SndBuffer = 2 << 30 }},
		{"EphemeralPorts", func(c *Config) { c.EphemeralPorts = [2]uint16{5000, 4000} }},
		{"EphemeralPorts", func(c *Config) { c.EphemeralPorts = [2]uint16{0, 4000} }},
		{"Sink", func(c *Config) { c.Sink = nil }},
		{"Rand", func(c *Config) { c.Rand = nil }},
		{"Addresses[1]", func(c *Config) { c.Addresses = append(c.Addresses, netip.Addr{}) }},
		{"Addresses[1]", func(c *Config) { c.Addresses = append(c.Addresses, netip.MustParseAddr("224.0.0.1")) }},
		{"Addresses[0]", func(c *Config) { c.Addresses = []netip.Addr{netip.IPv4Unspecified()} }},
	} {
		cfg := valid()
		tc.mod(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.field+":") {
			t.Errorf("%s: Validate() = %v, want an error naming %s", tc.field, err, tc.field)
			continue
		}
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("%s: New() = %v, want the field named", tc.field, err)
		}
	}
	// Every wrong field is reported, not only the first.
	cfg := valid()
	cfg.MTU, cfg.SYNBacklog = 1, -1
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "MTU:") || !strings.Contains(err.Error(), "SYNBacklog:") {
		t.Errorf("two bad fields: %v, want both named", err)
	}
}

// --- regressions ---

// TestUnitTSRecentFollowsPeer: TS.Recent (RFC 7323 section 4.3) takes the
// TSval of each acceptable segment, so our TSecr echoes the peer's latest
// timestamp, not the one of its SYN — the peer measures its RTT from it.
func TestUnitTSRecentFollowsPeer(t *testing.T) {
	h := newHarness(t)
	h.established()
	h.peerTSVal = 6000
	h.send(seg{flags: ACK | PSH, seq: 1, ack: 1, data: []byte("abc")})
	p := h.expect(seg{flags: ACK, seq: 1, ack: 4})
	if got := p.TCP.Options.TSEcr; got != 6000 {
		t.Fatalf("TSecr %d, want the peer's latest TSval 6000", got)
	}
	// A newer TSval on a segment past RCV.NXT (out of order) is not taken:
	// TS.Recent only follows segments up to the last ACK we sent.
	h.peerTSVal = 7000
	h.send(seg{flags: ACK | PSH, seq: 10, ack: 1, data: []byte("j")})
	if p := h.expect(seg{flags: ACK, seq: 1, ack: 4}); p.TCP.Options.TSEcr != 6000 {
		t.Fatalf("TSecr %d after an out-of-order segment, want 6000", p.TCP.Options.TSEcr)
	}
}

// TestUnitSetKeepaliveAfterRelease: keepalive switched on for a connection
// the engine is done with (TIME_WAIT, CLOSED) must not put it back in the
// timer heap: its timers would fire on a released record (and, in
// TIME_WAIT, never be re-armed, so that Tick would spin).
func TestUnitSetKeepaliveAfterRelease(t *testing.T) {
	h := newHarness(t)
	h.finWait2()
	c := h.c
	h.send(seg{flags: FIN | ACK, seq: 1, ack: 2})
	h.expect(seg{flags: ACK, seq: 2, ack: 2})
	if c.state != TimeWait {
		t.Fatalf("state %v, want TIME_WAIT", c.state)
	}
	c.SetKeepalive(true)
	if c.heapIdx != -1 || len(h.e.timers) != 0 {
		t.Fatal("SetKeepalive put a TIME_WAIT connection back in the timer heap")
	}
	h.expectDeadline(DefaultTimeWait)

	h2 := newHarness(t)
	h2.established()
	h2.c.Write([]byte("x")) // the RTO is armed
	h2.send(seg{flags: RST, seq: 1})
	h2.expectState(Closed)
	h2.c.SetKeepalive(true)
	if h2.c.heapIdx != -1 || len(h2.e.timers) != 0 {
		t.Fatal("SetKeepalive put a closed connection back in the timer heap")
	}
	h2.expectDeadline(-1)
}

// TestUnitTinyPeerMSS: a peer MSS smaller than the options every segment
// carries left no room for data (the effective MSS went negative and output
// looped for ever, sending SND.NXT backwards). The MSS is clamped from below
// as Linux's tcp_min_snd_mss (48) does.
func TestUnitTinyPeerMSS(t *testing.T) {
	for _, mss := range []uint16{1, 6, 12, 47} {
		h := newHarness(t)
		h.peerOpts.MSS = mss
		h.established()
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.c.Write(seqBytes(0, 100))
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("peer MSS %d: Write did not return", mss)
		}
		if got := h.c.Info().MSS; got != 48 {
			t.Fatalf("peer MSS %d: MSS %d, want the floor 48", mss, got)
		}
		h.expect(seg{flags: ACK, seq: 1, ack: 1, data: seqBytes(0, 36)}) // 48 less 12 bytes of timestamps
		h.expect(seg{flags: ACK, seq: 37, ack: 1, data: seqBytes(36, 36)})
		h.expect(seg{flags: ACK | PSH, seq: 73, ack: 1, data: seqBytes(72, 28)})
		h.expectNone()
	}
}

// TestUnitDialTimeWaitCollision: our SYN reaches a peer that still holds
// the 4-tuple in TIME_WAIT and is not newer than the old incarnation (a
// restarted proxy, or one that replaced another on the same host): the
// peer answers with the old connection's ACK. The engine resets that
// TIME_WAIT (RST at SEG.ACK) and sends the SYN again at once — one round
// trip, not the 1 s SYN RTO — at most maxTWCollisions times per open.
//
//	engine                          peer (TIME_WAIT)
//	SYN seq=0            -->
//	                     <--        ACK seq=777 ack=X   (the old connection's)
//	RST seq=X            -->        (TIME_WAIT ends)
//	SYN seq=0            -->
//	                     <--        SYN|ACK seq=0 ack=1
//	ACK seq=1 ack=1      -->        ESTABLISHED
func TestUnitDialTimeWaitCollision(t *testing.T) {
	h := newHarness(t)
	c, err := h.e.Dial(h.now, engineAddr, peerAP)
	if err != nil {
		t.Fatal(err)
	}
	h.c, h.ourPort = c, c.Key().LocalPort
	h.expect(seg{flags: SYN, seq: 0})
	const oldAck = 0x80000000 // far outside what we sent
	h.send(seg{flags: ACK, seq: 777, ack: oldAck})
	h.expect(seg{flags: RST, seq: oldAck})
	h.expect(seg{flags: SYN, seq: 0})
	h.expectNone()
	h.expectCounter(SYNTimeWaitCollisions, 1)
	h.expectCounter(SYNRetransmits, 0)
	h.expectDeadline(DefaultInitialRTO) // the SYN's timer, not backed off
	h.expectState(SynSent)
	h.send(seg{flags: SYN | ACK, seq: 0, ack: 1})
	h.expect(seg{flags: ACK, seq: 1, ack: 1})
	h.expectState(Established)
	h.expectEvents(EventConnected)
}

// TestUnitDialTimeWaitCollisionBounded: a peer that answers every SYN with
// an unacceptable ACK gets maxTWCollisions immediate SYNs, then only RSTs;
// the SYN waits for its timer (RFC 9293).
func TestUnitDialTimeWaitCollisionBounded(t *testing.T) {
	h := newHarness(t)
	c, err := h.e.Dial(h.now, engineAddr, peerAP)
	if err != nil {
		t.Fatal(err)
	}
	h.c, h.ourPort = c, c.Key().LocalPort
	h.expect(seg{flags: SYN, seq: 0})
	for i := range maxTWCollisions + 2 {
		h.send(seg{flags: ACK, seq: 777, ack: 0x80000000})
		h.expect(seg{flags: RST, seq: 0x80000000})
		if i < maxTWCollisions {
			h.expect(seg{flags: SYN, seq: 0})
		}
		h.expectNone()
	}
	h.expectCounter(SYNTimeWaitCollisions, maxTWCollisions)
	// Data, a FIN or an RST with a bad ACK is no TIME_WAIT ACK: RST only (or nothing).
	h2 := newHarness(t)
	c2, _ := h2.e.Dial(h2.now, engineAddr, peerAP)
	h2.c, h2.ourPort = c2, c2.Key().LocalPort
	h2.expect(seg{flags: SYN, seq: 0})
	h2.send(seg{flags: ACK | FIN, seq: 777, ack: 0x80000000})
	h2.expect(seg{flags: RST, seq: 0x80000000})
	h2.send(seg{flags: ACK, seq: 777, ack: 0x80000000, data: []byte("x")})
	h2.expect(seg{flags: RST, seq: 0x80000000})
	h2.send(seg{flags: RST | ACK, seq: 777, ack: 0x80000000})
	h2.expectNone()
	h2.expectCounter(SYNTimeWaitCollisions, 0)
}

// TestUnitKeysOutliveTheEngine: two engines with the same Keys, the second
// started later on the same clock (a restarted daemon): for one 4-tuple the
// second's ISN and TSval are ahead of the first's by the time between them,
// and a SYN cookie the first sent is valid at the second.
func TestUnitKeysOutliveTheEngine(t *testing.T) {
	keys := &Keys{ISN: [2]uint64{1, 2}, Timestamp: [2]uint64{3, 4}, Cookie: [2]uint64{5, 6}}
	withKeys := func(c *Config) { c.Keys = keys; c.SYNCookies = SYNCookiesAlways }
	first := newHarness(t, withKeys)
	first.now = t0
	c1, err := first.e.Dial(first.now, engineAddr, peerAP)
	if err != nil {
		t.Fatal(err)
	}
	p1 := first.expect(seg{flags: SYN, seq: 0})

	const gap = 3 * time.Second // the restart
	// Another process: other random numbers, the same keys.
	second := newHarness(t, withKeys, func(c *Config) { c.Rand = rand.New(rand.NewPCG(9, 9)) })
	second.now = t0.Add(gap)
	second.e.portCounter = first.e.portCounter - 1 // the same source port
	c2, err := second.e.Dial(second.now, engineAddr, peerAP)
	if err != nil {
		t.Fatal(err)
	}
	if c1.Key() != c2.Key() {
		t.Fatalf("4-tuples differ: %v %v", c1.Key(), c2.Key())
	}
	p2 := second.expect(seg{flags: SYN, seq: 0})
	if d := p2.TCP.Seq - p1.TCP.Seq; d != uint32(gap/(4*time.Microsecond)) {
		t.Errorf("ISN moved by %d after %v, want %d (RFC 6528's 4 µs clock)", d, gap, gap/(4*time.Microsecond))
	}
	if d := p2.TCP.Options.TSVal - p1.TCP.Options.TSVal; d != uint32(gap/time.Millisecond) {
		t.Errorf("TSval moved by %d after %v, want %d", d, gap, gap/time.Millisecond)
	}

	// A cookie from the first engine completes the handshake at the second.
	first.listen()
	first.peerPort, first.ourPort, first.knowISS, first.c = 41000, listenAP.Port(), false, nil
	first.send(seg{flags: SYN, seq: 0})
	synack := first.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
	second.listen()
	second.peerPort, second.ourPort, second.c = 41000, listenAP.Port(), nil
	second.ourISS, second.knowISS = seqnum.Value(synack.TCP.Seq), true
	second.lastTSEcho = synack.TCP.Options.TSVal
	second.send(seg{flags: ACK, seq: 1, ack: 1})
	second.expectCounter(SYNCookiesAccepted, 1)
	second.expectState(Established)
}

// rawOptionsSYN is the peer's SYN (IPv4) with the given option bytes, as
// they are, whatever they hold: the harness's encoder writes only valid ones.
func (h *harness) rawOptionsSYN(opts []byte) []byte {
	h.t.Helper()
	f := wire.TCPFrame{EthSrc: peerMAC, EthDst: engineMAC, Src: peerAddr, Dst: engineAddr,
		TCP: wire.TCPHeader{SrcPort: h.peerPort, DstPort: h.ourPort, Seq: uint32(h.peerISS), Flags: SYN, Window: 65535}}
	for len(opts)%4 != 0 {
		opts = append(opts, 0) // EOL padding
	}
	b := make([]byte, wire.TCPFrameLen(&f, len(opts)))
	wire.EncodeTCP(b, &f, opts, nil) // the option bytes as payload, then moved into the header
	l4 := wire.EthernetHeaderLen + wire.IPv4HeaderLen
	b[l4+12] = byte((wire.TCPHeaderLen+len(opts))/4) << 4
	b[l4+16], b[l4+17] = 0, 0
	sum := wire.Checksum(b[l4:], wire.PseudoHeaderSum(peerAddr, engineAddr, wire.ProtoTCP, len(b)-l4))
	b[l4+16], b[l4+17] = byte(sum>>8), byte(sum)
	return b
}

// TestUnitSYNWithMalformedOptions: a SYN whose options Linux's parser skips
// (an MSS option of length 6) or cuts off (a last option running past the
// header) is answered, as Linux answers it, with what could be read; the
// malformed option is ignored and counted.
func TestUnitSYNWithMalformedOptions(t *testing.T) {
	for _, c := range []struct {
		name    string
		opts    []byte
		wantMSS uint16 // the MSS the engine assumes from the SYN: its own when none is readable
	}{
		{"MSS length 6", []byte{2, 6, 5, 180, 0, 0, 4, 2}, 536},
		{"window scale, then an option past the header", []byte{3, 3, 7, 1, 1, 1, 8, 10}, 536},
	} {
		h := newHarness(t)
		h.listen()
		h.e.HandleFrame(h.now, h.rawOptionsSYN(c.opts))
		p := h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
		if p.TCP.Options.MSS == 0 {
			t.Errorf("%s: SYN-ACK without our MSS", c.name)
		}
		h.expectCounter(RxIgnoredTCPOptions, 1)
		h.send(seg{flags: ACK, seq: 1, ack: 1, noTS: true})
		h.expectState(Established)
		if got := h.c.Info().MSS; got != int(c.wantMSS) {
			t.Errorf("%s: sending MSS %d, want %d (no MSS option read: RFC 9293's default)", c.name, got, c.wantMSS)
		}
	}
}

// TestSACKBlocksFitTheMTU: while the engine holds out-of-order data it owes
// the peer SACK blocks, and the peer's MSS counts options with payload. New
// data is sized so the blocks ride along within the MTU (1448 bytes of
// payload less one 12-byte block: exactly 1500 bytes of IP), a full-sized
// retransmission keeps its size and carries only what fits (its
// timestamps), and once the hole fills segments are 1448 bytes again.
func TestSACKBlocksFitTheMTU(t *testing.T) {
	h := newHarness(t)
	h.listen()
	h.established()
	check := func(what string, wantPayload, wantBlocks int) {
		t.Helper()
		got, p, ok := h.recv()
		if !ok {
			t.Fatalf("%s: engine sent nothing", what)
		}
		ipLen := len(p.IPPacket())
		if len(got.data) != wantPayload || int(p.TCP.Options.NumSACK) != wantBlocks || !p.TCP.Options.HasTimestamps {
			t.Fatalf("%s: %d bytes of payload, %d SACK blocks, timestamps %v (%d bytes of IP); want %d, %d, true",
				what, len(got.data), p.TCP.Options.NumSACK, p.TCP.Options.HasTimestamps, ipLen, wantPayload, wantBlocks)
		}
		if ipLen > DefaultMTU {
			t.Fatalf("%s: %d bytes of IP, over the %d-byte MTU", what, ipLen, DefaultMTU)
		}
	}
	write := func(n int) {
		t.Helper()
		if got, err := h.c.Write(make([]byte, n)); got != n || err != nil {
			t.Fatalf("Write(%d): %d, %v", n, got, err)
		}
	}
	write(1448)
	check("a segment before any hole", 1448, 0)

	// A hole at 1..100: the peer's bytes 101..200 are held out of order.
	h.send(seg{flags: ACK, seq: 101, ack: 1, data: make([]byte, 100)})
	check("the duplicate ACK", 0, 1)

	write(3 * 1448)
	check("first new segment while holding 101..200", 1436, 1)
	check("second", 1436, 1)
	check("third", 1436, 1)
	check("the rest", 3*12, 1)
	h.expectNone()

	// The tail loss probe resends the last segment; then the RTO resends
	// the first at its size: no room for the block.
	h.advance(h.c.rto)
	check("the tail loss probe", 3*12, 1)
	h.advance(h.c.rto)
	check("the full-sized segment's retransmission", 1448, 0)
	h.drain()

	// The hole fills; everything is acknowledged; full-sized again.
	h.send(seg{flags: ACK, seq: 1, ack: 1 + 4*1448, data: make([]byte, 100)})
	h.drain()
	write(2 * 1448)
	check("new segment after the hole filled", 1448, 0)
	check("second", 1448, 0)
}

// flowLog records what a FlowObserver hears, as "held <remote port>" and
// "released <remote port>".
type flowLog struct{ got []string }

func (f *flowLog) FlowHeld(k FlowKey) { f.got = append(f.got, fmt.Sprintf("held %d", k.RemotePort)) }
func (f *flowLog) FlowReleased(k FlowKey) {
	f.got = append(f.got, fmt.Sprintf("released %d", k.RemotePort))
}

func (f *flowLog) expect(t *testing.T, what string, want ...string) {
	t.Helper()
	if !slices.Equal(f.got, want) {
		t.Fatalf("%s: the observer heard %q, want %q", what, f.got, want)
	}
	f.got = nil
}

// TestFlowObserver: Config.Flows hears a flow held from the first record
// (SYN answered, cookie accepted, active open) until neither the record nor
// its TIME_WAIT entry is left, and a TIME_WAIT entry that a new SYN reopens
// released before the new connection is held.
func TestFlowObserver(t *testing.T) {
	p := fmt.Sprint(peerAP.Port())
	observed := func(t *testing.T, opts ...harnessOpt) (*harness, *flowLog) {
		f := new(flowLog)
		return newHarness(t, append(opts, withConfig(func(c *Config) { c.Flows = f }))...), f
	}
	t.Run("passive, reset", func(t *testing.T) {
		h, f := observed(t)
		h.synReceived()
		f.expect(t, "SYN answered", "held "+p)
		h.send(seg{flags: ACK, seq: 1, ack: 1})
		h.c = h.l.Accept()
		f.expect(t, "established")
		h.send(seg{flags: RST, seq: 1})
		f.expect(t, "reset", "released "+p)
	})
	t.Run("passive, TIME_WAIT, expiry", func(t *testing.T) {
		h, f := observed(t)
		h.timeWait()
		f.expect(t, "into TIME_WAIT", "held "+p)
		h.advance(DefaultTimeWait + time.Second)
		f.expect(t, "TIME_WAIT expired", "released "+p)
	})
	t.Run("TIME_WAIT reopened by a SYN", func(t *testing.T) {
		h, f := observed(t)
		h.timeWait()
		f.got = nil
		h.advance(time.Second)
		h.send(seg{flags: SYN, seq: 1000})
		h.expect(seg{flags: SYN | ACK, seq: 2 + 65537, ack: 1001})
		f.expect(t, "reopened", "released "+p, "held "+p)
	})
	t.Run("SYN cookie", func(t *testing.T) {
		h, f := observed(t, withCookies(SYNCookiesAlways))
		h.listen()
		h.send(seg{flags: SYN, seq: 0})
		h.expectCookieSYNACK(1)
		f.expect(t, "cookie SYN-ACK (no state)")
		h.advance(10 * time.Millisecond)
		h.send(seg{flags: ACK, seq: 1, ack: 1})
		h.expectState(Established)
		f.expect(t, "cookie accepted", "held "+p)
	})
	t.Run("active open, connection refused", func(t *testing.T) {
		h, f := observed(t)
		h.synSent()
		f.expect(t, "SYN sent", "held "+p)
		h.send(seg{flags: RST | ACK, seq: 0, ack: 1})
		f.expect(t, "refused", "released "+p)
	})
}
