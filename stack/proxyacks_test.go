package stack

import "testing"

// Ladders of the segments a proxy saves: the request's ACK riding on the
// reply with quick-ACK mode off (SetQuickACK), the third segment of an
// active open carrying data written in the same burst, and a FIN riding
// on the data written before it in the same burst.

// With quick-ACK mode off from the start, a short request is acknowledged
// by the reply (no bare ACK before it), by the delayed-ACK timer when no
// reply comes, and at once when two full-sized segments are owed; turned
// back on, a short segment is acknowledged at once again.
func TestQuickACKOff(t *testing.T) {
	h := newHarness(t)
	h.established()
	h.c.SetQuickACK(false)
	// peer: PSH|ACK(seq=1, ack=1, "GET /")           one burst
	h.e.BeginBatch()
	h.send(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("GET /")})
	h.e.EndBatch(h.now)
	// engine: nothing yet, the delayed-ACK timer armed
	h.expectNone()
	h.expectDeadline(DefaultDelayedACK)
	// The read adds no window update: the peer has used little of the
	// handshake's window, and the pending ACK will carry the larger one.
	if got := h.readAll(h.c); got != "GET /" {
		t.Fatalf("read %q", got)
	}
	h.advance(DefaultDelayedACK / 2)
	h.expectNone()
	// engine: PSH|ACK(seq=1, ack=6, "200 OK")        the reply carries the ACK
	h.writeAll(h.c, "200 OK")
	h.expect(seg{flags: PSH | ACK, seq: 1, ack: 6, data: []byte("200 OK")})
	h.expectNone()
	h.send(seg{flags: ACK, seq: 6, ack: 7})
	h.expectNone()

	// No reply: the delayed-ACK timer sends it.
	// peer: PSH|ACK(seq=6, ack=7, "more")
	h.send(seg{flags: PSH | ACK, seq: 6, ack: 7, data: []byte("more")})
	h.expectNone()
	h.advance(DefaultDelayedACK)
	// engine: ACK(seq=7, ack=10)                     [delayed ACK timer]
	h.expect(seg{flags: ACK, seq: 7, ack: 10})
	h.expectCounter(DelayedACKs, 1)

	// Two full-sized segments in a burst: ACKed at its end.
	stream := relData(0, 2*smss)
	h.e.BeginBatch()
	h.send(seg{flags: ACK, seq: 10, ack: 7, data: stream[:smss]})
	h.send(seg{flags: ACK, seq: 10 + smss, ack: 7, data: stream[smss:]})
	h.expectNone()
	h.e.EndBatch(h.now)
	h.expect(seg{flags: ACK, seq: 7, ack: 10 + 2*smss})

	// Quick-ACK mode back on: a short segment is ACKed at once.
	h.c.SetQuickACK(true)
	h.send(seg{flags: PSH | ACK, seq: 10 + 2*smss, ack: 7, data: []byte("x")})
	h.expect(seg{flags: ACK, seq: 7, ack: 11 + 2*smss})
	h.expectNone()
}

// The third segment of an active open waits for the end of the burst that
// brought the SYN-ACK: data written meanwhile (a proxy's buffered client
// request) carries it; with none, a bare ACK goes at the burst's end;
// outside a burst, and with data written before the SYN-ACK, nothing
// changes (scenario 2).
func TestThirdACKCarriesBurstData(t *testing.T) {
	t.Run("data in the same burst", func(t *testing.T) {
		h := newHarness(t)
		h.synSent()
		h.e.BeginBatch()
		// peer: SYN|ACK(seq=0, ack=1)                engine: SYN_SENT → ESTABLISHED
		h.send(seg{flags: SYN | ACK, seq: 0, ack: 1})
		h.expectNone()
		h.expectState(Established)
		h.expectEvents(EventConnected)
		h.writeAll(h.c, "GET /")
		h.expectNone()
		// engine: PSH|ACK(seq=1, ack=1, "GET /")     the third segment, with data
		h.e.EndBatch(h.now)
		h.expect(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("GET /")})
		h.expectNone()
	})
	t.Run("nothing to send", func(t *testing.T) {
		h := newHarness(t)
		h.synSent()
		h.e.BeginBatch()
		h.send(seg{flags: SYN | ACK, seq: 0, ack: 1})
		h.expectNone()
		// engine: ACK(seq=1, ack=1)                  at the burst's end
		h.e.EndBatch(h.now)
		h.expect(seg{flags: ACK, seq: 1, ack: 1})
		h.expectNone()
		h.expectState(Established)
	})
	t.Run("written before the SYN-ACK", func(t *testing.T) {
		h := newHarness(t)
		h.synSent()
		h.writeAll(h.c, "GET /")
		h.expectNone()
		h.e.BeginBatch()
		h.send(seg{flags: SYN | ACK, seq: 0, ack: 1})
		h.expect(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("GET /")})
		h.e.EndBatch(h.now)
		h.expectNone()
	})
	t.Run("our FIN queued before the SYN-ACK", func(t *testing.T) {
		h := newHarness(t)
		h.synSent()
		h.c.CloseWrite()
		h.expectNone()
		h.e.BeginBatch()
		h.send(seg{flags: SYN | ACK, seq: 0, ack: 1})
		h.expect(seg{flags: FIN | ACK, seq: 1, ack: 1})
		h.e.EndBatch(h.now)
		h.expectNone()
		h.expectState(FinWait1)
	})
}

// What the application writes during a burst goes at the burst's end in
// one pass (outputSoon): a response and the close passed on right behind it
// (the other leg's data and FIN in one burst) make one segment, data and
// FIN, and carry the ACK the burst owes; outside a burst, a write goes at
// once and the FIN after it on its own (scenario 13).
func TestBurstWriteCarriesFIN(t *testing.T) {
	h := newHarness(t)
	h.established()
	h.e.BeginBatch()
	// peer: PSH|ACK(seq=1, ack=1, "GET /")
	h.send(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("GET /")})
	h.writeAll(h.c, "200 ")
	h.writeAll(h.c, "OK")
	h.c.CloseWrite()
	h.expectNone()
	h.expectState(FinWait1)
	// engine: FIN|PSH|ACK(seq=1, ack=6, "200 OK")    one segment at the burst's end
	h.e.EndBatch(h.now)
	h.expect(seg{flags: FIN | PSH | ACK, seq: 1, ack: 6, data: []byte("200 OK")})
	h.expectNone()
	// peer: FIN|ACK(seq=6, ack=8)
	h.send(seg{flags: FIN | ACK, seq: 6, ack: 8})
	h.expect(seg{flags: ACK, seq: 8, ack: 7})
	h.expectState(TimeWait)

	// A write and the peer's RST in the same burst: nothing goes out for
	// the reset connection at the end.
	h2 := newHarness(t)
	h2.established()
	h2.e.BeginBatch()
	h2.writeAll(h2.c, "late")
	h2.send(seg{flags: RST | ACK, seq: 1, ack: 1})
	h2.e.EndBatch(h2.now)
	h2.expectNone()
	h2.expectState(Closed)
}
