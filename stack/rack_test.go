package stack

// Exact-segment ladders for RACK-TLP (RFC 8985): the cases of its section 3
// and 6 — reordering within the window, a loss found by the reordering
// timer, a lost retransmission found without an RTO, a tail loss repaired
// by the probe, a spurious retransmission undone after its D-SACK, and the
// reordering window widened by it. Time passes in these ladders: RACK
// judges by send times, and a round trip here is rackRTT.

import (
	"fmt"
	"testing"
	"time"
)

// rackRTT is the round trip of the RACK ladders.
const rackRTT = 10 * time.Millisecond

// rackFlight: an established connection whose RTT is known (the handshake
// and one segment, each answered a round trip later: SRTT, RACK.rtt and the
// minimum RTT are rackRTT), then the rest of a stream of 1+stream full
// segments written, of which the first n go at once.
func rackFlight(t *testing.T, n, stream int, opts ...func(*harness)) (*harness, []byte) {
	t.Helper()
	h := newHarness(t)
	for _, o := range opts {
		o(h)
	}
	h.synReceived()
	h.advance(rackRTT) // the handshake's RTT: SRTT starts at rackRTT
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	h.expectNone()
	h.c = h.l.Accept()
	h.takeEvents()
	m := h.c.effectiveMSS() // smss, or 1460 without timestamps
	at := func(i int) int { return i * m }
	data := relData(0, (stream+1)*m)
	h.writeAll(h.c, string(data[:m]))
	h.expect(seg{flags: PSH | ACK, seq: 1, ack: 1, data: data[:m]})
	h.advance(rackRTT)
	h.send(seg{flags: ACK, seq: 1, ack: uint32(1 + at(1))})
	h.expectNone()
	if h.c.rack.minRTT.get() != rackRTT || h.c.rack.rtt != rackRTT || h.c.rtt.srtt != rackRTT {
		t.Fatalf("min RTT %v, RACK.rtt %v, SRTT %v after the first ACK, want %v", h.c.rack.minRTT.get(), h.c.rack.rtt, h.c.rtt.srtt, rackRTT)
	}
	h.writeAll(h.c, string(data[m:]))
	for i := 1; i <= n; i++ {
		flags := uint8(ACK)
		if i == stream {
			flags |= PSH
		}
		h.expect(seg{flags: flags, seq: uint32(1 + at(i)), ack: 1, data: data[at(i):at(i+1)]})
	}
	h.expectNone()
	return h, data
}

// rackHoleAtFirst: a flight of ten, and a round trip later the SACK of
// segment 2: segment 1, sent in the same instant, is missing. Nothing is
// sent; the reordering timer waits out the window (a quarter of min_RTT).
func rackHoleAtFirst(t *testing.T) (*harness, []byte) {
	t.Helper()
	h, data := rackFlight(t, 10, 10)
	h.advance(rackRTT)
	// peer: ACK(ack=seg 1) SACK(seg 2)
	h.send(seg{flags: ACK, seq: 1, ack: seqOf(1), opts: h.peerSACK(block{seqOf(2), seqOf(3)})})
	h.expectNone()
	h.expectDeadline(rackRTT / 4)
	return h, data
}

// Reordering within the window (RFC 8985 section 3.3.2): segment 1 of a
// flight is overtaken by segment 2. The SACK of 2 shows 1 missing, but 1
// went in the same instant: RACK waits a reordering window (a quarter of
// the minimum RTT) before calling it lost. It arrives within it; nothing is
// resent, and the connection has now seen reordering.
func TestRACKReorderingWithinWindow(t *testing.T) {
	h, _ := rackHoleAtFirst(t)
	// 1 ms later segment 1 arrives: peer: ACK(ack=seg 3)
	h.advance(time.Millisecond)
	h.send(seg{flags: ACK, seq: 1, ack: seqOf(3)})
	h.expectNone()
	h.expectCounter(Retransmits, 0)
	h.expectCounter(RACKLosses, 0)
	h.expectCounter(FastRecoveries, 0)
	if h.c.reoAt != Never || !h.c.rack.reordSeen || h.c.inRecovery {
		t.Fatalf("reordering timer armed %v, reordering seen %v, in recovery %v; want false, true, false",
			h.c.reoAt != Never, h.c.rack.reordSeen, h.c.inRecovery)
	}
	// Next: the tail loss probe, 2*SRTT after the ACK.
	h.expectDeadline(2 * h.c.rtt.srtt)
}

// The reordering timer (RFC 8985 section 6.3): as above, but segment 1 was
// lost and no further ACK comes. When its reordering window has passed the
// timer finds it lost — not DupThresh duplicate ACKs, which never came, nor
// the RTO — and fast recovery resends it.
func TestRACKReorderTimer(t *testing.T) {
	h, data := rackHoleAtFirst(t)
	h.advance(rackRTT/4 - time.Nanosecond)
	h.expectNone() // not a nanosecond early
	h.advance(time.Nanosecond)
	h.expectData(data, seqOf(1), smss, 0, 1)
	h.expectNone()
	h.expectCounter(ReorderTimeouts, 1)
	h.expectCounter(RACKLosses, 1)
	h.expectCounter(FastRecoveries, 1)
	h.expectCounter(RTORecoveries, 0)
	h.expectCwnd(7, 7) // CUBIC (RFC 9438 section 4.6): 0.7 of cwnd 11, whole segments
}

// A lost retransmission (RFC 8985 section 3.3.1): segment 1 is lost, and
// so is its fast retransmission. Segments sent after the retransmission
// are SACKed a round trip later: by then the retransmission has been out
// longer than RACK.rtt (plus a reordering window of 0: in recovery, no
// reordering seen), so it is lost too and goes again — without the RTO
// that recovery by sequence numbers alone (RFC 6675) needs for it.
func TestRACKLostRetransmission(t *testing.T) {
	h, data := rackFlight(t, 11, 16)
	h.advance(rackRTT)
	// Segments 2, 3, 4, 5 are SACKed, 0.5 ms apart.
	sack := func(k int) {
		h.send(seg{flags: ACK, seq: 1, ack: seqOf(1), opts: h.peerSACK(block{seqOf(2), seqOf(2 + k)})})
	}
	sack(1)
	h.expectData(data, seqOf(12), smss, 0, 1) // limited transmit
	h.expectNone()
	h.advance(500 * time.Microsecond)
	sack(2)
	h.expectData(data, seqOf(13), smss, 0, 1) // limited transmit
	h.expectNone()
	h.advance(500 * time.Microsecond)
	sack(3) // three SACKed: RACK's window is 0, segment 1 is lost
	h.expectData(data, seqOf(1), smss, 0, 1)
	h.expectNone()
	h.expectCounter(FastRecoveries, 1)
	h.advance(500 * time.Microsecond)
	sack(4) // PRR lets a new segment out, sent after the retransmission
	h.expectData(data, seqOf(14), smss, 0, 1)
	h.expectNone()
	// A round trip after segment 14 went, everything but segment 1 is
	// SACKed: the retransmission is lost.
	h.advance(rackRTT)
	h.send(seg{flags: ACK, seq: 1, ack: seqOf(1), opts: h.peerSACK(block{seqOf(2), seqOf(15)})})
	h.expectData(data, seqOf(1), smss, 0, 1)
	h.expectData(data, seqOf(15), smss, 0, 1)
	h.expectData(data, seqOf(16), smss, PSH, 1)
	h.expectNone()
	h.expectCounter(LostRetransmits, 1)
	h.expectCounter(Retransmits, 2)
	h.expectCounter(RTORecoveries, 0)
	h.expectCounter(FastRecoveries, 1) // one recovery, one reduction
	// Its ACK ends the recovery.
	h.advance(rackRTT)
	h.send(seg{flags: ACK, seq: 1, ack: seqOf(17)})
	h.expectNone()
	if h.c.inRecovery {
		t.Fatal("still in recovery after everything was acknowledged")
	}
}

// Tail loss (RFC 8985 section 3.2 and 7): the last two segments of a
// flight are lost. No later segment is delivered for RACK to judge them
// by; the tail loss probe, 2*SRTT after the last ACK, resends the last
// segment and restarts the RTO. Its SACK shows
// segment 9, sent before it, lost: fast recovery resends it — one round
// trip after the probe, not an RTO.
func TestRACKTailLossProbe(t *testing.T) {
	h, data := rackFlight(t, 10, 10)
	h.advance(rackRTT)
	// peer: ACK(ack=seg 9): segments 9 and 10 are lost
	h.send(seg{flags: ACK, seq: 1, ack: seqOf(9)})
	h.expectNone()
	pto := 2 * h.c.rtt.srtt
	if pto != 2*rackRTT {
		t.Fatalf("PTO %v, want 2*SRTT = %v", pto, 2*rackRTT)
	}
	h.expectDeadline(pto)
	h.advance(pto - time.Nanosecond)
	h.expectNone()
	h.advance(time.Nanosecond)
	// engine: the last segment again
	h.expectData(data, seqOf(10), smss, PSH, 1)
	h.expectNone()
	h.expectCounter(TailLossProbes, 1)
	h.expectDeadline(h.c.rto) // the RTO, restarted by the probe
	// peer: ACK(ack=seg 9) SACK(seg 10) a round trip later
	h.advance(rackRTT)
	h.send(seg{flags: ACK, seq: 1, ack: seqOf(9), opts: h.peerSACK(block{seqOf(10), seqOf(11)})})
	h.expectData(data, seqOf(9), smss, 0, 1)
	h.expectNone()
	h.expectCounter(FastRecoveries, 1)
	h.expectCounter(RACKLosses, 1)
	h.expectCounter(RTORecoveries, 0)
	// Its ACK ends the recovery, and the probe's episode with it.
	h.advance(rackRTT)
	h.send(seg{flags: ACK, seq: 1, ack: seqOf(11)})
	h.expectNone()
	if h.c.inRecovery || h.c.tlpEpisode {
		t.Fatalf("in recovery %v, probe episode %v after everything was acknowledged", h.c.inRecovery, h.c.tlpEpisode)
	}
}

// The probe's episode (RFC 8985 section 7.4): a probe that resent the
// last segment either repaired a loss — the window is reduced once the ACKs
// go past it, as for any loss (Linux's tcp_process_tlp_ack) — or was not
// needed, which the peer's D-SACK of it shows: the window stands.
func TestRACKTLPEpisode(t *testing.T) {
	for _, repaired := range []bool{false, true} {
		t.Run(map[bool]string{false: "dsack", true: "repaired"}[repaired], func(t *testing.T) {
			h, data := rackFlight(t, 10, 10)
			h.advance(rackRTT)
			// peer: ACK(ack=seg 10): the last segment, 10, is missing
			h.send(seg{flags: ACK, seq: 1, ack: seqOf(10)})
			h.expectNone()
			// One segment in flight: the probe waits for a delayed ACK
			// too (2*SRTT + WCDelAckT), capped at the RTO.
			h.expectDeadline(h.c.rto)
			h.advance(h.c.rto)
			h.expectData(data, seqOf(10), smss, PSH, 1) // the probe: the last segment again
			h.expectNone()
			// peer: ACK(ack=seg 11), at the probe's end
			h.advance(rackRTT)
			h.send(seg{flags: ACK, seq: 1, ack: seqOf(11)})
			h.expectNone()
			cwnd := h.c.cc.cwnd()
			if !h.c.tlpEpisode {
				t.Fatal("the episode ended on the ACK of the probe's end, before its D-SACK could come")
			}
			if !repaired {
				// peer: ACK D-SACK(seg 10): it had the original
				h.send(seg{flags: ACK, seq: 1, ack: seqOf(11), opts: h.peerSACK(block{seqOf(10), seqOf(11)})})
				h.expectNone()
				if h.c.tlpEpisode || h.c.cc.cwnd() != cwnd {
					t.Fatalf("episode open %v, cwnd %d after the probe's D-SACK; want false, %d", h.c.tlpEpisode, h.c.cc.cwnd(), cwnd)
				}
				h.expectCounter(TLPRecoveries, 0)
				return
			}
			// No D-SACK: the probe repaired segment 10. New data and its
			// ACK past the probe end the episode with a reduction.
			more := relData(11*smss, smss)
			h.writeAll(h.c, string(more))
			h.expect(seg{flags: PSH | ACK, seq: seqOf(11), ack: 1, data: more})
			h.advance(rackRTT)
			h.send(seg{flags: ACK, seq: 1, ack: seqOf(12)})
			h.expectNone()
			h.expectCounter(TLPRecoveries, 1)
			if h.c.tlpEpisode || h.c.cc.cwnd() >= cwnd {
				t.Fatalf("episode open %v, cwnd %d (was %d) after the ACK past the probe; want false, reduced", h.c.tlpEpisode, h.c.cc.cwnd(), cwnd)
			}
		})
	}
}

// A spurious retransmission undone (RFC 8985 section 6.2 step 4, RFC 2883
// section 5, RFC 3708): segment 1 is delayed past the reordering window;
// the timer resends it and cwnd is cut. The original arrives, then the
// retransmission, which the peer reports with a D-SACK: the reduction was
// spurious and is undone, and RACK's reordering window doubles
// (reo_wnd_mult 2) — so the next reordering as deep is waited out. The
// peer sends no timestamps here: the D-SACK alone shows it.
func TestRACKSpuriousRetransmissionUndone(t *testing.T) {
	h, data := rackFlight(t, 10, 10, func(h *harness) { h.peerTS = false })
	mss := 1460 // no timestamp option
	seqAt := func(i int) uint32 { return uint32(1 + i*mss) }
	expect := func(i int, flags uint8) {
		t.Helper()
		h.expect(seg{flags: flags | ACK, seq: seqAt(i), ack: 1, data: data[seqAt(i)-1 : seqAt(i)-1+uint32(mss)]})
	}
	h.advance(rackRTT)
	h.send(seg{flags: ACK, seq: 1, ack: seqAt(1), opts: h.peerSACK(block{seqAt(2), seqAt(3)})})
	h.expectNone()
	h.advance(rackRTT / 4) // the reordering window: segment 1 deemed lost
	expect(1, 0)
	h.expectNone()
	cwnd := h.c.cc.cwnd()
	// 1 ms later the delayed original arrives: everything is acknowledged.
	h.advance(time.Millisecond)
	h.send(seg{flags: ACK, seq: 1, ack: seqAt(11)})
	h.expectNone()
	if h.c.inRecovery || h.c.cc.cwnd() != cwnd {
		t.Fatalf("in recovery %v, cwnd %d; want false, %d (the reduction stands)", h.c.inRecovery, h.c.cc.cwnd(), cwnd)
	}
	// Then the retransmission: peer: ACK(ack=11) D-SACK(seg 1).
	h.advance(rackRTT)
	h.send(seg{flags: ACK, seq: 1, ack: seqAt(11), opts: h.peerSACK(block{seqAt(1), seqAt(2)})})
	h.expectNone()
	h.expectCounter(RxDSACKs, 1)
	h.expectCounter(SpuriousRecoveries, 1)
	if got, want := h.c.cc.cwnd(), 11*mss; got != want {
		t.Fatalf("cwnd %d after the D-SACK, want %d (restored)", got, want)
	}
	if h.c.rack.reoWndMult != 2 || h.c.reoWnd() != 2*rackRTT/4 {
		t.Fatalf("reo_wnd_mult %d, reo_wnd %v after the D-SACK; want 2, %v", h.c.rack.reoWndMult, h.c.reoWnd(), 2*rackRTT/4)
	}
	h.expectCounter(RACKReoWndIncreases, 1)

	// The reordering window grown (section 6.2 step 4): ten more segments;
	// the first is overtaken again, by 4 ms — past the old window (2.5
	// ms), within the new one (5 ms). Nothing is resent.
	more := relData(11*mss, 10*mss)
	h.writeAll(h.c, string(more))
	for i := 0; i < 10; i++ {
		flags := uint8(ACK)
		if i == 9 {
			flags |= PSH
		}
		h.expect(seg{flags: flags, seq: seqAt(11 + i), ack: 1, data: more[i*mss : (i+1)*mss]})
	}
	h.expectNone()
	h.advance(rackRTT)
	h.send(seg{flags: ACK, seq: 1, ack: seqAt(11), opts: h.peerSACK(block{seqAt(12), seqAt(13)})})
	h.expectNone()
	h.expectDeadline(2 * rackRTT / 4)
	h.advance(4 * time.Millisecond)
	h.send(seg{flags: ACK, seq: 1, ack: seqAt(21)})
	h.expectNone()
	h.expectCounter(RACKLosses, 1)
	h.expectCounter(Retransmits, 1)
}

// The widened reordering window returns to its base after 16 loss
// recoveries without a D-SACK round (RFC 8985 section 6.2 step 4).
func TestUnitRACKReoWndPersist(t *testing.T) {
	h, _ := rackFlight(t, 1, 1)
	c := h.c
	c.rack.ackDSACK = true
	c.rackUpdateReoWnd()
	c.rack.ackDSACK = false
	if c.rack.reoWndMult != 2 || c.rack.reoWndPersist != reoWndRounds {
		t.Fatalf("after a D-SACK: reo_wnd_mult %d, persist %d; want 2, %d", c.rack.reoWndMult, c.rack.reoWndPersist, reoWndRounds)
	}
	// A second D-SACK in the same round (before SND.UNA passes SND.NXT of
	// the first) does not widen it again.
	c.rack.ackDSACK = true
	c.rackUpdateReoWnd()
	c.rack.ackDSACK = false
	if c.rack.reoWndMult != 2 {
		t.Fatalf("a second D-SACK in the round: reo_wnd_mult %d, want 2", c.rack.reoWndMult)
	}
	for i := 1; i <= reoWndRounds; i++ {
		c.rackRecoveryEnded()
		if want := map[bool]int{true: 1, false: 2}[i == reoWndRounds]; c.rack.reoWndMult != want {
			t.Fatalf("after %d recoveries: reo_wnd_mult %d, want %d", i, c.rack.reoWndMult, want)
		}
	}
}

// The minimum RTT filter (RACK.min_RTT): the least sample, until it is a
// window (300 s) old; then the least of the later half window takes over.
func TestUnitMinRTTFilter(t *testing.T) {
	var f minRTTFilter
	at := func(s int) Time { return t0.Add(time.Duration(s) * time.Second) }
	for _, step := range []struct {
		at   int
		rtt  time.Duration
		want time.Duration
	}{
		{0, 10 * time.Millisecond, 10 * time.Millisecond},
		{10, 12 * time.Millisecond, 10 * time.Millisecond},
		{20, 9 * time.Millisecond, 9 * time.Millisecond},
		{200, 15 * time.Millisecond, 9 * time.Millisecond},
		{250, 14 * time.Millisecond, 9 * time.Millisecond},
		{321, 16 * time.Millisecond, 14 * time.Millisecond}, // 9 ms is 301 s old
	} {
		f.update(at(step.at), step.rtt)
		if got := f.get(); got != step.want {
			t.Fatalf("at %d s after a %v sample: min %v, want %v", step.at, step.rtt, got, step.want)
		}
	}
}

// RTT samples come from the send times on the engine's clock, exact to the
// nanosecond, and only from what was sent once (Karn), or from a
// retransmission whose ACK came later than the minimum RTT after it (RFC
// 8985 section 6.2 step 1): an ACK sooner than that answers the original.
func TestRTTFromSendTimes(t *testing.T) {
	h := newHarness(t)
	h.synReceived()
	h.advance(137 * time.Microsecond)
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	h.c = h.l.Accept()
	if h.c.rtt.srtt != 137*time.Microsecond {
		t.Fatalf("SRTT %v after the handshake, want 137µs", h.c.rtt.srtt)
	}
	// A segment sent and answered 300 µs later: SRTT = 7/8*137 + 300/8.
	h.writeAll(h.c, "a")
	h.expect(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("a")})
	h.advance(300 * time.Microsecond)
	h.send(seg{flags: ACK, seq: 1, ack: 2})
	if want := 157375 * time.Nanosecond; h.c.rtt.srtt != want || h.c.rack.minRTT.get() != 300*time.Microsecond {
		t.Fatalf("SRTT %v, min RTT %v; want %v, 300µs", h.c.rtt.srtt, h.c.rack.minRTT.get(), want)
	}
	// A segment resent by the timer (the tail loss probe, due with the
	// RTO); an ACK 50 µs after the resend — less than the minimum RTT —
	// is the original's: no sample.
	h.writeAll(h.c, "b")
	h.expect(seg{flags: PSH | ACK, seq: 2, ack: 1, data: []byte("b")})
	h.advance(h.e.NextDeadline().Sub(h.now))
	h.expect(seg{flags: PSH | ACK, seq: 2, ack: 1, data: []byte("b")})
	h.advance(50 * time.Microsecond)
	h.send(seg{flags: ACK, seq: 1, ack: 3})
	if want := 157375 * time.Nanosecond; h.c.rtt.srtt != want {
		t.Fatalf("SRTT %v after the ACK of a retransmission sooner than the minimum RTT, want %v (no sample)", h.c.rtt.srtt, want)
	}
}

// sentQueueError checks the sent queue against the connection (the fuzzer
// runs it after every step): once the handshake is done its records cover
// [SND.UNA, SND.NXT) without gap or overlap, and the SACKed, lost and
// retransmitted counts are the sums of their marks.
func (c *Conn) sentQueueError() string {
	if !c.sndUna.GreaterThan(c.iss) {
		if c.sent.n != 0 {
			return fmt.Sprintf("%d records before the handshake completed", c.sent.n)
		}
		return ""
	}
	at := c.sndUna
	var sacked, segs, lost, rxt int
	for i := 0; i < c.sent.n; i++ {
		s := c.sent.at(i)
		if s.start != at || !s.start.LessThan(s.end) {
			return fmt.Sprintf("record %d is [%d, %d), expected to start at %d", i, s.start, s.end, at)
		}
		if s.flags&segSACKed != 0 {
			sacked += s.len()
			segs++
			if s.flags&(segLost|segRxtOut) != 0 {
				return fmt.Sprintf("record %d SACKed and marked %b", i, s.flags)
			}
		}
		if s.flags&segLost != 0 {
			lost += s.len()
		}
		if s.flags&segRxtOut != 0 {
			rxt += s.len()
		}
		at = s.end
	}
	switch {
	case at != c.sndNxt:
		return fmt.Sprintf("records end at %d, SND.NXT is %d", at, c.sndNxt)
	case sacked != c.sackedOut || segs != c.sackedSegs || lost != c.lostOut || rxt != c.rxtOut:
		return fmt.Sprintf("counts SACKed %d/%d lost %d retransmitted %d; the marks sum to %d/%d, %d, %d",
			c.sackedOut, c.sackedSegs, c.lostOut, c.rxtOut, sacked, segs, lost, rxt)
	}
	return ""
}
