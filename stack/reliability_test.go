package stack

// Exact-segment tests for the reliability machinery: fast retransmit and
// limited transmit, the RTO and its backoff, the persist timer, PAWS, SACK
// and D-SACK generation, delayed ACKs, congestion control around loss, and
// TCP-SCENARIOS.md scenarios 7 and 8; then unit tests of the RTT estimator,
// CUBIC and the out-of-order set. Ladders as in scenarios_test.go: the
// peer's segment, the engine's reply, seq/ack relative to the ISNs.

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// smss is the payload of a full segment with timestamps: the peer's MSS of
// 1460 less 12 bytes of options.
const smss = 1460 - 12

// relData is n bytes of a stream starting at stream offset off. The stream
// repeats only every 64 KiB, so data taken from a wrong offset (a segment
// resent from the wrong place) fails the comparison.
func relData(off, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		k := off + i
		b[i] = byte(k + k>>8)
	}
	return b
}

// block is a SACK block relative to an ISN, [start, end).
type block struct{ start, end uint32 }

// peerSACK is the peer's options on an ACK: its timestamps and SACK blocks
// over our data (relative to our ISN).
func (h *harness) peerSACK(blocks ...block) *wire.TCPOptions {
	o := &wire.TCPOptions{HasTimestamps: h.peerTS, TSVal: h.peerTSVal, TSEcr: h.lastTSEcho}
	for i, b := range blocks {
		o.SACK[i] = wire.SACKBlock{Start: uint32(h.ourISS) + b.start, End: uint32(h.ourISS) + b.end}
	}
	o.NumSACK = uint8(len(blocks))
	return o
}

// expectSACK asserts the SACK blocks of the engine's segment p, in order,
// relative to the peer's ISN.
func (h *harness) expectSACK(p *wire.Packet, want ...block) {
	h.t.Helper()
	var got []block
	for i := 0; i < int(p.TCP.Options.NumSACK); i++ {
		b := p.TCP.Options.SACK[i]
		got = append(got, block{b.Start - uint32(h.peerISS), b.End - uint32(h.peerISS)})
	}
	if fmt.Sprint(got) != fmt.Sprint(want) && !(len(got) == 0 && len(want) == 0) {
		h.t.Fatalf("SACK blocks %v, want %v", got, want)
	}
}

// expectData asserts the engine's next segment is the data at relative seq
// [seq, seq+n) of the stream written, with flags (ACK implied) and ack.
func (h *harness) expectData(stream []byte, seq uint32, n int, flags uint8, ack uint32) *wire.Packet {
	h.t.Helper()
	return h.expect(seg{flags: flags | ACK, seq: seq, ack: ack, data: stream[seq-1 : int(seq-1)+n]})
}

// expectCwnd asserts the congestion window and slow start threshold, in segments.
func (h *harness) expectCwnd(cwnd, ssthresh float64) {
	h.t.Helper()
	gc, gs := float64(h.c.cc.cwnd())/smss, float64(h.c.cc.ssthresh())/smss
	if gc != cwnd || (ssthresh >= 0 && gs != ssthresh) {
		h.t.Fatalf("cwnd %v segments, ssthresh %v segments; want %v, %v", gc, gs, cwnd, ssthresh)
	}
}

// sendFlight writes stream (whole segments) and asserts the first sent
// segments the engine sends at once, and nothing more; only the last segment
// of the stream carries PSH.
func (h *harness) sendFlight(stream []byte, sent int) {
	h.t.Helper()
	h.writeAll(h.c, string(stream))
	for i := 0; i < sent; i++ {
		seq := uint32(1 + i*smss)
		flags := uint8(0)
		if int(seq-1)+smss == len(stream) {
			flags = PSH
		}
		h.expectData(stream, seq, smss, flags, 1)
	}
	h.expectNone()
}

// seqOf is the relative sequence number of full segment i (0-based) of a stream.
func seqOf(i int) uint32 { return uint32(1 + i*smss) }

// Fast retransmit (RFC 5681 section 3.2): the third duplicate ACK — not the
// first or second — resends the first unacknowledged segment; with SACK,
// RACK comes to the same when the ACKs come back-to-back. The first two
// each let one new segment out (limited transmit, RFC 3042).
func TestFastRetransmitAfterThreeDupACKs(t *testing.T) {
	for _, sack := range []bool{false, true} {
		t.Run(fmt.Sprintf("sack=%v", sack), func(t *testing.T) {
			h := newHarness(t)
			h.peerOpts.SACKPermitted = sack
			h.established()
			// 14 segments queued; the initial window (RFC 6928) lets 10 out.
			stream := relData(0, 14*smss)
			h.sendFlight(stream, 10)
			h.expectCwnd(10, -1)
			// Segment 1 (seq 1) is lost; segments 2, 3, 4 draw duplicate ACKs.
			dup := func(k int) seg {
				s := seg{flags: ACK, seq: 1, ack: 1}
				if sack {
					s.opts = h.peerSACK(block{seqOf(1), seqOf(1 + k)})
				}
				return s
			}
			// A round trip (1 ms) later: with SACK, RACK (RFC 8985) judges
			// segment 1 — sent with those SACKed — lost once its
			// reordering window (a quarter of the minimum RTT) has passed,
			// or at once when DupThresh segments are SACKed: the third ACK
			// too.
			h.advance(time.Millisecond)
			// peer: ACK(ack=1) #1 → engine: new segment 11 (limited transmit)
			h.send(dup(1))
			h.expectData(stream, seqOf(10), smss, 0, 1)
			h.expectNone()
			// peer: ACK(ack=1) #2 → engine: new segment 12
			h.send(dup(2))
			h.expectData(stream, seqOf(11), smss, 0, 1)
			h.expectNone()
			if h.counter(Retransmits) != 0 || h.c.inRecovery {
				t.Fatal("recovery started before the third duplicate ACK")
			}
			// peer: ACK(ack=1) #3 → engine: segment 1 again
			h.send(dup(3))
			h.expectData(stream, seqOf(0), smss, 0, 1)
			h.expectNone()
			h.expectCounter(Retransmits, 1)
			h.expectCounter(FastRecoveries, 1)
			// CUBIC (the default): ssthresh = cwnd * 0.7 (RFC 9438 section 4.6), cwnd = ssthresh.
			h.expectCwnd(7, 7)
			if !h.c.inRecovery || h.c.recoverySeq != h.ourISS.Add(seqnum.Size(seqOf(12))) {
				t.Fatalf("inRecovery=%v recover=%d, want true, %d", h.c.inRecovery, h.c.recoverySeq-h.ourISS, seqOf(12))
			}
			// Duplicate ACKs 4, 5 and 6; one of them lets segment 12 out.
			// NewReno (RFC 6582): the pipe (12 sent - 3 gone - 1 lost + 1
			// resent = 9) exceeds cwnd 7 until the 6th (pipe 6). With SACK,
			// proportional rate reduction (RFC 6937): while the pipe
			// exceeds ssthresh 7 each delivered segment earns 7/12 of a new
			// one: ceil(2*7/12) - 1 resent = 1 at the 4th, nothing at the
			// 5th; at the 6th the pipe (7) is down to ssthresh, no room.
			sends := 6
			if sack {
				sends = 4
			}
			for k := 4; k <= 6; k++ {
				h.send(dup(k))
				if k == sends {
					h.expectData(stream, seqOf(12), smss, 0, 1)
				}
				h.expectNone()
			}
			// peer: ACK(ack=12 segments), the recovery point → recovery
			// ends, cwnd = ssthresh, and the last segment goes.
			h.send(seg{flags: ACK, seq: 1, ack: seqOf(12)})
			h.expectData(stream, seqOf(13), smss, PSH, 1)
			h.expectNone()
			if h.c.inRecovery {
				t.Fatal("still in recovery after the recovery point was acknowledged")
			}
			h.expectCwnd(7, 7)
			h.expectCounter(Retransmits, 1)
		})
	}
}

// The retransmission timer (RFC 6298 section 5): 200 ms after the
// handshake's RTT sample (SRTT + max(4*RTTVAR, min_rto) with a 0 ms sample),
// doubled on each expiry (5.5) up to MaxRTO, each expiry resending the
// oldest segment (5.4); after MaxRetries the connection times out without an
// RST (Linux's tcp_write_timeout).
func TestRTOBackoffAndAbort(t *testing.T) {
	h := newHarness(t, withConfig(func(c *Config) {
		c.MaxRetries = 5
		c.MaxRTO = time.Second
	}))
	// Without SACK: no tail loss probe (RFC 8985 section 7 probes
	// connections whose SACKs show what the probe finds), the RTO alone.
	h.peerOpts.SACKPermitted = false
	h.established()
	data := []byte("request that is never acknowledged")
	// engine: PSH|ACK(seq=1, ack=1, 34 bytes), RTO armed at 200 ms
	h.writeAll(h.c, string(data))
	h.expect(seg{flags: PSH | ACK, seq: 1, ack: 1, data: data})
	h.expectDeadline(200 * time.Millisecond)
	if h.c.tlpAt != Never {
		t.Fatalf("tail loss probe armed at %v", h.c.tlpAt.Sub(h.now))
	}
	for i, next := range []time.Duration{400, 800, 1000, 1000, 1000} {
		h.advance(h.e.NextDeadline().Sub(h.now) - time.Nanosecond)
		h.expectNone() // not a nanosecond early
		h.advance(time.Nanosecond)
		// engine: the same segment again, the timer doubled (capped at MaxRTO)
		h.expect(seg{flags: PSH | ACK, seq: 1, ack: 1, data: data})
		h.expectNone()
		h.expectDeadline(next * time.Millisecond)
		h.expectCounter(Retransmits, uint64(i+1))
		h.expectCounter(RTORecoveries, uint64(i+1))
		h.expectState(Established)
		// One segment (RFC 5681 section 3.1); ssthresh 0.7 of the initial 10
		// (RFC 9438 section 4.8), reduced once, held on the later timeouts.
		h.expectCwnd(1, 7)
	}
	h.expectEvents(0)
	// The sixth expiry: MaxRetries (5) retransmissions went unanswered.
	h.advance(time.Second)
	h.expectNone() // no RST: the peer is presumably gone
	h.expectState(Closed)
	h.expectEvents(EventTimedOut | EventClosed)
	if !errors.Is(h.c.Err(), ErrTimeout) {
		t.Fatalf("Err() = %v, want ErrTimeout", h.c.Err())
	}
	h.expectCounter(RetransmitTimeouts, 1)
	h.expectCounter(Retransmits, 5)
	h.expectDeadline(-1)
	if _, err := h.c.Write([]byte("x")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Write after the timeout = %v, want ErrTimeout", err)
	}
}

// An ACK of new data restarts the timer from the RTT estimate and forgets
// the backoff (RFC 6298 sections 5.3 and 5.7).
func TestRTOBackoffUndoneByACK(t *testing.T) {
	h := newHarness(t)
	h.peerOpts.SACKPermitted = false // the RTO alone, no tail loss probe
	h.established()
	h.writeAll(h.c, "ab")
	h.expect(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("ab")})
	h.advance(200 * time.Millisecond)
	h.expect(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("ab")})
	h.expectDeadline(400 * time.Millisecond)
	h.advance(400 * time.Millisecond)
	h.expect(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("ab")})
	h.expectDeadline(800 * time.Millisecond)
	h.expectCwnd(1, 7) // the second timeout held ssthresh (RFC 5681 section 3.1)
	// peer: ACK(ack=3) 10 ms later, echoing the last retransmission's
	// timestamp: a 10 ms sample folded into the handshake's 0 ms one gives
	// SRTT = 10/8 = 1.25 ms, RTTVAR = 10/4 = 2.5 ms.
	h.advance(10 * time.Millisecond)
	h.send(seg{flags: ACK, seq: 1, ack: 3})
	h.expectNone()
	h.expectDeadline(t0.Add(DefaultKeepaliveIdle).Sub(h.now)) // nothing in flight: no RTO, keepalive next
	if h.c.retries != 0 || h.c.inRecovery {
		t.Fatalf("retries %d, inRecovery %v after the ACK, want 0, false", h.c.retries, h.c.inRecovery)
	}
	h.writeAll(h.c, "c")
	h.expect(seg{flags: PSH | ACK, seq: 3, ack: 1, data: []byte("c")})
	// RTO = SRTT + max(4*RTTVAR, min_rto) = 1.25 ms + 200 ms: the backoff is gone.
	h.expectDeadline(200*time.Millisecond + 1250*time.Microsecond)
}

// The persist timer (RFC 9293 section 3.8.6.1): a zero window with nothing
// in flight is probed — <SEQ=SND.UNA-1><CTL=ACK>, no data, as Linux's
// tcp_xmit_probe_skb — first one RTO after the window closed, then with
// exponential backoff; the ACK that reopens the window lets the data go.
func TestZeroWindowProbeAndReopen(t *testing.T) {
	h := newHarness(t)
	h.established()
	// peer: ACK(seq=1, ack=1, wnd=0) — its buffer is full
	h.send(seg{flags: ACK, seq: 1, ack: 1, zeroWnd: true})
	h.expectNone()
	stream := relData(0, 3000)
	h.writeAll(h.c, string(stream))
	h.expectNone() // the window is closed: not a byte
	h.expectDeadline(200 * time.Millisecond)
	// Probes at 200 ms, then 400 and 800 ms later, each answered with the
	// window still closed.
	for i, wait := range []time.Duration{200, 400, 800} {
		h.advance(wait*time.Millisecond - time.Nanosecond)
		h.expectNone()
		h.advance(time.Nanosecond)
		// engine: ACK(seq=0, ack=1), no data
		h.expect(seg{flags: ACK, seq: 0, ack: 1})
		h.expectNone()
		h.expectCounter(ZeroWindowProbes, uint64(i+1))
		h.expectDeadline(2 * wait * time.Millisecond)
		// peer: ACK(seq=1, ack=1, wnd=0)
		h.send(seg{flags: ACK, seq: 1, ack: 1, zeroWnd: true})
		h.expectNone()
		h.expectDeadline(2 * wait * time.Millisecond) // the answer does not reset the backoff
	}
	h.expectCounter(Retransmits, 0) // a probe is not a retransmission
	// peer: ACK(seq=1, ack=1, wnd=65535) — the window reopens
	h.advance(100 * time.Millisecond)
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	h.expectData(stream, 1, smss, 0, 1)
	h.expectData(stream, 1+smss, smss, 0, 1)
	h.expectData(stream, 1+2*smss, 3000-2*smss, PSH, 1)
	h.expectNone()
	if h.c.persistAt != Never || h.c.rtoAt != h.now.Add(200*time.Millisecond) {
		t.Fatalf("persist timer %v, RTO in %v after the window opened; want off, 200ms", h.c.persistAt, h.c.rtoAt.Sub(h.now))
	}
	h.send(seg{flags: ACK, seq: 1, ack: 3001})
	h.expectNone()
	h.expectCounter(ZeroWindowProbes, 3)
	h.expectState(Established)
}

// Probes that the peer never answers count against MaxRetries, as
// retransmissions do (Linux's tcp_probe_timer).
func TestZeroWindowProbesUnanswered(t *testing.T) {
	h := newHarness(t, withConfig(func(c *Config) { c.MaxRetries = 2 }))
	h.established()
	h.send(seg{flags: ACK, seq: 1, ack: 1, zeroWnd: true})
	h.writeAll(h.c, "x")
	h.expectNone()
	h.advance(200 * time.Millisecond)
	h.expect(seg{flags: ACK, seq: 0, ack: 1})
	h.advance(400 * time.Millisecond)
	h.expect(seg{flags: ACK, seq: 0, ack: 1})
	h.expectState(Established)
	h.advance(800 * time.Millisecond)
	h.expectNone()
	h.expectState(Closed)
	h.expectEvents(EventTimedOut | EventClosed)
	h.expectCounter(ZeroWindowProbes, 2)
	h.expectCounter(RetransmitTimeouts, 1)
}

// A peer that answers every probe with its window still closed (a client
// that stopped reading) is given up after MaxRetries probes all the same:
// its answers do not reset the count (Linux's tcp_probe_timer), so a stuck
// reader cannot hold a connection and its buffers for ever.
func TestZeroWindowProbesAnsweredShut(t *testing.T) {
	h := newHarness(t, withConfig(func(c *Config) { c.MaxRetries = 2 }))
	h.established()
	h.send(seg{flags: ACK, seq: 1, ack: 1, zeroWnd: true})
	h.writeAll(h.c, "x")
	for _, wait := range []time.Duration{200, 400} {
		h.advance(wait * time.Millisecond)
		h.expect(seg{flags: ACK, seq: 0, ack: 1})
		h.send(seg{flags: ACK, seq: 1, ack: 1, zeroWnd: true}) // answered, still shut
		h.expectState(Established)
	}
	h.advance(800 * time.Millisecond)
	h.expectNone()
	h.expectState(Closed)
	h.expectEvents(EventTimedOut | EventClosed)
	h.expectCounter(ZeroWindowProbes, 2)

	// The count restarts when the window opens, however briefly.
	h2 := newHarness(t, withConfig(func(c *Config) { c.MaxRetries = 2 }))
	h2.established()
	h2.send(seg{flags: ACK, seq: 1, ack: 1, zeroWnd: true})
	h2.writeAll(h2.c, "x")
	h2.advance(200 * time.Millisecond)
	h2.expect(seg{flags: ACK, seq: 0, ack: 1})
	h2.advance(400 * time.Millisecond)
	h2.expect(seg{flags: ACK, seq: 0, ack: 1})
	h2.send(seg{flags: ACK, seq: 1, ack: 1, wnd: 1}) // one byte of room: the "x" goes
	h2.expect(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("x")})
	h2.send(seg{flags: ACK, seq: 1, ack: 2, zeroWnd: true})
	if h2.c.probes != 0 {
		t.Fatalf("probes %d after the window opened, want 0", h2.c.probes)
	}
	h2.expectState(Established)
}

// PAWS (RFC 7323 section 5): a segment whose TSval is older than TS.Recent
// is an old duplicate — dropped and answered with an ACK, with a D-SACK when
// it lies below RCV.NXT. A pure ACK is exempt (Linux's tcp_disordered_ack),
// and so is an RST.
func TestPAWSDropsOldTimestamp(t *testing.T) {
	h := newHarness(t)
	h.established()
	// peer: PSH|ACK(seq=1, "hello", TSval 5001) → engine: ACK(ack=6), TS.Recent = 5001
	h.peerTSVal = 5001
	h.send(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("hello")})
	p := h.expect(seg{flags: ACK, seq: 1, ack: 6})
	if p.TCP.Options.TSEcr != 5001 {
		t.Fatalf("TSecr %d, want 5001", p.TCP.Options.TSEcr)
	}
	// peer: PSH|ACK(seq=6, "world", TSval 5000) — new data, old timestamp
	// → dropped; engine: ACK(ack=6), no SACK (nothing below RCV.NXT)
	h.peerTSVal = 5000
	h.send(seg{flags: PSH | ACK, seq: 6, ack: 1, data: []byte("world")})
	p = h.expect(seg{flags: ACK, seq: 1, ack: 6})
	h.expectSACK(p)
	h.expectCounter(RxPAWSRejected, 1)
	if h.c.Buffered() != 5 {
		t.Fatalf("buffered %d, want 5: the PAWS-rejected data was kept", h.c.Buffered())
	}
	// peer: PSH|ACK(seq=1, "hello", TSval 4999) — an old duplicate
	// → engine: ACK(ack=6) with D-SACK [1,6)
	h.peerTSVal = 4999
	h.send(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("hello")})
	p = h.expect(seg{flags: ACK, seq: 1, ack: 6})
	h.expectSACK(p, block{1, 6})
	h.expectCounter(RxPAWSRejected, 2)
	if p.TCP.Options.TSEcr != 5001 {
		t.Fatalf("TSecr %d after PAWS drops, want TS.Recent 5001 unchanged", p.TCP.Options.TSEcr)
	}
	// A pure ACK with an old TSval is taken: it acknowledges our data.
	h.writeAll(h.c, "reply")
	h.expect(seg{flags: PSH | ACK, seq: 1, ack: 6, data: []byte("reply")})
	h.peerTSVal = 4000
	h.send(seg{flags: ACK, seq: 6, ack: 6})
	h.expectNone()
	h.expectCounter(RxPAWSRejected, 2)
	if i := h.c.Info(); i.SndUna != uint32(h.ourISS)+6 || h.c.rtoAt != Never {
		t.Fatalf("SND.UNA=%d, RTO armed %v after the old-TSval pure ACK; want 6, off",
			i.SndUna-uint32(h.ourISS), h.c.rtoAt != Never)
	}
	// An RST with an old TSval at RCV.NXT resets.
	h.peerTSVal = 1
	h.send(seg{flags: RST, seq: 6})
	h.expectNone()
	h.expectState(Closed)
	h.expectEvents(EventReadable | EventReset | EventClosed)
	h.expectCounter(RxPAWSRejected, 2)
}

// SACK generation (RFC 2018 section 4): every out-of-order segment is ACKed
// at once with SACK blocks, the block holding the most recent segment first;
// filling the holes commits the held data in one step. A duplicate is
// reported in a D-SACK block first (RFC 2883 section 4).
func TestSACKBlocksForTwoHoles(t *testing.T) {
	h := newHarness(t)
	h.established()
	stream := relData(0, 500)
	part := func(i int) seg { // the i-th (1-based) 100-byte segment
		return seg{flags: ACK, seq: uint32(1 + (i-1)*100), ack: 1, data: stream[(i-1)*100 : i*100]}
	}
	// peer: 1 → engine: ACK(ack=101)
	h.send(part(1))
	p := h.expect(seg{flags: ACK, seq: 1, ack: 101})
	h.expectSACK(p)
	// peer: 3 → engine: ACK(ack=101) SACK [201,301)
	h.send(part(3))
	p = h.expect(seg{flags: ACK, seq: 1, ack: 101})
	h.expectSACK(p, block{201, 301})
	// peer: 5 → engine: ACK(ack=101) SACK [401,501) [201,301)
	h.send(part(5))
	p = h.expect(seg{flags: ACK, seq: 1, ack: 101})
	h.expectSACK(p, block{401, 501}, block{201, 301})
	h.expectCounter(RxOutOfOrder, 2)
	// peer: 3 again → engine: D-SACK [201,301), then the held ranges, the
	// one just touched again first.
	h.send(part(3))
	p = h.expect(seg{flags: ACK, seq: 1, ack: 101})
	h.expectSACK(p, block{201, 301}, block{401, 501}, block{201, 301})
	h.expectCounter(RxDuplicate, 1)
	h.takeEvents()
	if got := h.readAll(h.c); got != string(stream[:100]) {
		t.Fatalf("read %q before the holes are filled, want segment 1 only", got)
	}
	// peer: 2 → fills hole 1, commits 2 and 3; engine: ACK(ack=301) SACK [401,501)
	h.send(part(2))
	p = h.expect(seg{flags: ACK, seq: 1, ack: 301})
	h.expectSACK(p, block{401, 501})
	h.expectEvents(EventReadable)
	// peer: 4 → everything; engine: ACK(ack=501), at once (it filled a hole)
	h.send(part(4))
	p = h.expect(seg{flags: ACK, seq: 1, ack: 501})
	h.expectSACK(p)
	h.expectNone()
	if got := h.readAll(h.c); got != string(stream[100:]) {
		t.Fatalf("read %q, want bytes 100-500 in order", got)
	}
	// peer: 3 yet again, now below RCV.NXT → engine: ACK(ack=501), D-SACK [201,301)
	h.send(part(3))
	p = h.expect(seg{flags: ACK, seq: 1, ack: 501})
	h.expectSACK(p, block{201, 301})
	h.expectCounter(RxDuplicate, 2)
	// peer: 4 and 5 overlapping RCV.NXT → D-SACK of the duplicate part only
	h.send(seg{flags: ACK, seq: 451, ack: 1, data: append(append([]byte{}, stream[450:]...), "more"...)})
	p = h.expect(seg{flags: ACK, seq: 1, ack: 505})
	h.expectSACK(p, block{451, 501})
	if got := h.readAll(h.c); got != "more" {
		t.Fatalf("read %q, want the new bytes only", got)
	}
	// The next ACK carries no D-SACK: it is reported once.
	h.send(seg{flags: ACK, seq: 505, ack: 1, data: []byte("!")})
	p = h.expect(seg{flags: ACK, seq: 1, ack: 506})
	h.expectSACK(p)
}

// Delayed ACKs (RFC 5681 section 4.2, RFC 9293 section 3.8.6.3): after the
// first 16 segments (Linux's quick-ack mode), a lone in-order segment arms
// the 40 ms timer, a second full segment is ACKed at once, out-of-order data
// at once.
func TestDelayedACKTiming(t *testing.T) {
	h := newHarness(t)
	h.established()
	stream := relData(0, 40*smss)
	full := func(i int) seg { // full segment i, 0-based
		return seg{flags: ACK, seq: seqOf(i), ack: 1, data: stream[i*smss : (i+1)*smss]}
	}
	// Quick-ack mode: 16 segments, 16 ACKs, each at once.
	for i := 0; i < 16; i++ {
		h.send(full(i))
		h.expect(seg{flags: ACK, seq: 1, ack: seqOf(i + 1)})
		h.expectNone()
	}
	h.expectDeadline(DefaultKeepaliveIdle)
	// 17th: delayed; the timer at exactly 40 ms.
	h.send(full(16))
	h.expectNone()
	h.expectDeadline(40 * time.Millisecond)
	// 18th, 10 ms later: two full segments unacknowledged → ACK at once.
	h.advance(10 * time.Millisecond)
	h.send(full(17))
	h.expect(seg{flags: ACK, seq: 1, ack: seqOf(18)})
	h.expectNone()
	if h.c.delackAt != Never {
		t.Fatalf("delayed-ACK timer still armed after the ACK went")
	}
	// 19th: delayed again, from now.
	h.advance(5 * time.Millisecond)
	h.send(full(18))
	h.expectNone()
	h.expectDeadline(40 * time.Millisecond)
	// 21st (20th missing): out of order → ACK at once, covering the 19th too.
	h.advance(20 * time.Millisecond)
	h.send(full(20))
	p := h.expect(seg{flags: ACK, seq: 1, ack: seqOf(19)})
	h.expectSACK(p, block{seqOf(20), seqOf(21)})
	h.expectNone()
	h.expectDeadline(t0.Add(DefaultKeepaliveIdle).Sub(h.now)) // nothing owed
	// 20th fills the hole → ACK at once; and the sender, just out of
	// recovery, gets quick ACKs again: the next 16 segments each at once.
	h.send(full(19))
	h.expect(seg{flags: ACK, seq: 1, ack: seqOf(21)})
	for i := 21; i < 21+maxQuickAcks; i++ {
		h.send(full(i))
		h.expect(seg{flags: ACK, seq: 1, ack: seqOf(i + 1)})
	}
	q := 21 + maxQuickAcks
	// Then delayed again; the timer fires at exactly 40 ms.
	h.advance(time.Millisecond)
	h.send(full(q))
	h.expectNone()
	h.expectDeadline(40 * time.Millisecond)
	h.advance(40*time.Millisecond - time.Nanosecond)
	h.expectNone()
	h.expectCounter(DelayedACKs, 0)
	h.advance(time.Nanosecond)
	h.expect(seg{flags: ACK, seq: 1, ack: seqOf(q + 1)})
	h.expectNone()
	h.expectCounter(DelayedACKs, 1)
	// A pending delayed ACK rides on data we send instead.
	h.send(full(q + 1))
	h.expectNone()
	h.writeAll(h.c, "response")
	h.expect(seg{flags: PSH | ACK, seq: 1, ack: seqOf(q + 2), data: []byte("response")})
	h.expectNone()
	if h.c.delackAt != Never {
		t.Fatal("delayed-ACK timer armed after data carried the ACK")
	}
	h.advance(40 * time.Millisecond)
	h.expectNone()
	h.expectCounter(DelayedACKs, 1)
	if got := h.readAll(h.c); got != string(stream[:(q+2)*smss]) {
		t.Fatalf("read %d bytes, want %d in order", len(got), (q+2)*smss)
	}
}

// Congestion control around a loss, for each algorithm: slow start doubles
// the window per round trip (RFC 5681 section 3.1, byte counting with
// L = 2*SMSS), fast recovery cuts it (NewReno: ssthresh = max(FlightSize/2,
// 2*SMSS), RFC 5681 eq. 4; CUBIC: cwnd*0.7, RFC 9438 section 4.6), recovery
// ends at ssthresh, and an RTO leaves one segment (RFC 5681 section 3.1,
// RFC 9438 section 4.8).
func TestCwndAfterLoss(t *testing.T) {
	for _, tc := range []struct {
		cc                    CongestionControl
		recoverySsth, rtoSsth float64 // segments
	}{
		// Fast recovery from cwnd 20 with 22 segments in flight; the RTO
		// with cwnd at the recovery's ssthresh, that many in flight (the
		// tail loss probe resent the last, adding none).
		{NewReno, 11, 5.5}, // 22/2; 11/2
		{CUBIC, 14, 9},     // 20*0.7; 14*0.7 = 9.8, whole segments
	} {
		t.Run(tc.cc.String(), func(t *testing.T) {
			h := newHarness(t, withConfig(func(c *Config) { c.Congestion = tc.cc }))
			h.established()
			stream := relData(0, 80*smss)
			h.sendFlight(stream, 10)
			h.expectCwnd(10, 1<<30/float64(smss))
			// Slow start: each ACK of one segment, a round trip (1 ms)
			// later, lets two out.
			h.advance(time.Millisecond)
			for i := 0; i < 10; i++ {
				h.send(seg{flags: ACK, seq: 1, ack: seqOf(i + 1)})
				h.expectData(stream, seqOf(10+2*i), smss, 0, 1)
				h.expectData(stream, seqOf(11+2*i), smss, 0, 1)
				h.expectNone()
			}
			h.expectCwnd(20, -1)
			// Segment 10 is lost; 11, 12, 13 are SACKed a round trip later.
			// Sent with 10, they show it lost once RACK's reordering window
			// (a quarter of the minimum RTT) has passed — or at once when
			// DupThresh segments are SACKed (RFC 8985 section 6.2 step 4):
			// the third SACK.
			h.advance(time.Millisecond)
			for k := 1; k <= 3; k++ {
				h.send(seg{flags: ACK, seq: 1, ack: seqOf(10), opts: h.peerSACK(block{seqOf(11), seqOf(11 + k)})})
				if k < 3 {
					h.expectData(stream, seqOf(29+k), smss, 0, 1) // limited transmit
				} else {
					h.expectData(stream, seqOf(10), smss, 0, 1) // fast retransmit
				}
				h.expectNone()
			}
			h.expectCwnd(tc.recoverySsth, tc.recoverySsth)
			// The retransmission's ACK covers the recovery point (32
			// segments): recovery ends with cwnd = ssthresh, which is
			// filled at once.
			h.send(seg{flags: ACK, seq: 1, ack: seqOf(32)})
			n := int(tc.recoverySsth)
			for i := 0; i < n; i++ {
				h.expectData(stream, seqOf(32+i), smss, 0, 1)
			}
			h.expectNone()
			h.expectCwnd(tc.recoverySsth, tc.recoverySsth)
			if h.c.inRecovery {
				t.Fatal("in recovery after the recovery point was acknowledged")
			}
			// Nothing comes back. The tail loss probe (2*SRTT, at least
			// minPTO) resends the last segment and restarts the RTO; the
			// RTO then resends the first unacknowledged segment with cwnd = 1.
			pto, rto := max(2*h.c.rtt.srtt, minPTO), h.c.rto
			h.expectDeadline(pto)
			h.advance(pto)
			h.expectData(stream, seqOf(32+n-1), smss, 0, 1)
			h.expectNone()
			h.expectCounter(TailLossProbes, 1)
			h.expectDeadline(rto)
			h.advance(rto)
			h.expectData(stream, seqOf(32), smss, 0, 1)
			h.expectNone()
			h.expectCwnd(1, tc.rtoSsth)
			h.expectDeadline(2 * rto)
			// Its ACK: slow start again, two segments (the hole at 33 first).
			h.send(seg{flags: ACK, seq: 1, ack: seqOf(33)})
			h.expectData(stream, seqOf(33), smss, 0, 1)
			h.expectData(stream, seqOf(34), smss, 0, 1)
			h.expectNone()
			h.expectCwnd(2, tc.rtoSsth)
			// The rest arrived: the ACK reaches the recovery point. Slow
			// start grew cwnd to 4 on it (byte counting caps an ACK's
			// credit at 2 SMSS); leaving a timeout's recovery keeps that
			// — it is not a reduction ending at ssthresh.
			end := 32 + n
			h.send(seg{flags: ACK, seq: 1, ack: seqOf(end)})
			for i := 0; i < 4; i++ {
				h.expectData(stream, seqOf(end+i), smss, 0, 1)
			}
			h.expectNone()
			if h.c.inRecovery {
				t.Fatal("in recovery after the timeout's recovery point was acknowledged")
			}
			h.expectCwnd(4, tc.rtoSsth)
		})
	}
}

// NewReno (no SACK) partial ACK (RFC 6582 section 3.2 step 5): an ACK that
// advances SND.UNA but not to the recovery point shows the next segment
// lost too; it is resent at once, not at the RTO.
func TestNewRenoPartialACKRetransmits(t *testing.T) {
	h := newHarness(t)
	h.peerOpts.SACKPermitted = false
	h.established()
	stream := relData(0, 14*smss)
	h.sendFlight(stream, 10)
	// Segments 0 and 4 are lost.
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	h.expectData(stream, seqOf(10), smss, 0, 1)
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	h.expectData(stream, seqOf(11), smss, 0, 1)
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	h.expectData(stream, seqOf(0), smss, 0, 1)
	h.expectNone()
	// peer: ACK(ack=segment 4) — partial → engine: segment 4 at once
	h.send(seg{flags: ACK, seq: 1, ack: seqOf(4)})
	h.expectData(stream, seqOf(4), smss, 0, 1)
	h.expectNone()
	h.expectCounter(Retransmits, 2)
	h.expectCounter(FastRecoveries, 1) // still the same recovery
	// peer: ACK(ack=12 segments) — the recovery point: recovery ends.
	h.send(seg{flags: ACK, seq: 1, ack: seqOf(12)})
	h.expectData(stream, seqOf(12), smss, 0, 1)
	h.expectData(stream, seqOf(13), smss, PSH, 1)
	h.expectNone()
	if h.c.inRecovery {
		t.Fatal("still in recovery")
	}
	h.expectCwnd(7, 7)
}

// Scenario 7: flow control. The sender never has more unacknowledged bytes
// in flight than the peer's window; a zero window is probed until it opens.
// And the other way: our window is the free space in our receive buffer.
func TestScenario07FlowControl(t *testing.T) {
	h := newHarness(t)
	h.peerOpts.HasWScale = false // windows in bytes, unscaled
	h.established()
	inFlight := func() int { i := h.c.Info(); return int(i.SndNxt - i.SndUna) }
	check := func(wnd int) {
		t.Helper()
		if f := inFlight(); f > wnd {
			t.Fatalf("%d bytes in flight, the peer's window is %d", f, wnd)
		}
	}
	// peer: ACK(seq=1, ack=1, wnd=4000)                       ESTABLISHED
	h.send(seg{flags: ACK, seq: 1, ack: 1, wnd: 4000})
	stream := relData(0, 10000)
	h.writeAll(h.c, string(stream))
	// engine: two full segments (2896 bytes); the 1104 left of the window
	// would make a small segment (sender SWS avoidance): it waits.
	h.expectData(stream, 1, smss, 0, 1)
	h.expectData(stream, 1+smss, smss, 0, 1)
	h.expectNone()
	check(4000)
	// peer: ACK(ack=1449, wnd=4000) → window to 5449: one more segment
	h.send(seg{flags: ACK, seq: 1, ack: 1449, wnd: 4000})
	h.expectData(stream, 2897, smss, 0, 1)
	h.expectNone()
	check(4000)
	// peer: ACK(ack=4345, wnd=2896) → its reader is slow: two segments
	h.send(seg{flags: ACK, seq: 1, ack: 4345, wnd: 2896})
	h.expectData(stream, 4345, smss, 0, 1)
	h.expectData(stream, 5793, smss, 0, 1)
	h.expectNone()
	check(2896)
	// peer: ACK(ack=7241, wnd=0) → closed: nothing, the persist timer
	h.send(seg{flags: ACK, seq: 1, ack: 7241, zeroWnd: true})
	h.expectNone()
	h.expectDeadline(200 * time.Millisecond)
	// engine: ACK(seq=7240, ack=1) probes at 200 ms and 400 ms after
	h.advance(200 * time.Millisecond)
	h.expect(seg{flags: ACK, seq: 7240, ack: 1})
	h.send(seg{flags: ACK, seq: 1, ack: 7241, zeroWnd: true})
	h.expectNone()
	h.expectDeadline(400 * time.Millisecond)
	h.advance(400 * time.Millisecond)
	h.expect(seg{flags: ACK, seq: 7240, ack: 1})
	h.expectNone()
	// peer: ACK(ack=7241, wnd=8000) → the rest: 1448 + 1312 (PSH)
	h.send(seg{flags: ACK, seq: 1, ack: 7241, wnd: 8000})
	h.expectData(stream, 7241, smss, 0, 1)
	h.expectData(stream, 7241+smss, 10000-7240-smss, PSH, 1)
	h.expectNone()
	check(8000)
	h.send(seg{flags: ACK, seq: 1, ack: 10001, wnd: 8000})
	h.expectNone()
	h.expectCounter(ZeroWindowProbes, 2)
	h.expectCounter(Retransmits, 0)

	// A peer whose window is never more than 1000 bytes, below our MSS:
	// the window is all it will ever offer (RFC 9293 section 3.8.6.2.1,
	// at least half its largest), so 1000-byte segments go, one window
	// at a time.
	h = newHarness(t)
	h.peerOpts.HasWScale = false
	h.listen()
	h.send(seg{flags: SYN, seq: 0, wnd: 1000})
	h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
	h.send(seg{flags: ACK, seq: 1, ack: 1, wnd: 1000})
	h.c = h.l.Accept()
	stream = relData(0, 2500)
	h.writeAll(h.c, string(stream))
	h.expectData(stream, 1, 1000, 0, 1)
	h.expectNone()
	check(1000)
	h.send(seg{flags: ACK, seq: 1, ack: 1001, wnd: 1000})
	h.expectData(stream, 1001, 1000, 0, 1)
	h.expectNone()
	check(1000)
	h.send(seg{flags: ACK, seq: 1, ack: 2001, wnd: 1000})
	h.expectData(stream, 2001, 500, PSH, 1)
	h.expectNone()
	h.send(seg{flags: ACK, seq: 1, ack: 2501, wnd: 1000})
	h.expectNone()
	h.expectCounter(ZeroWindowProbes, 0)

	// Our receive window: a 4096-byte buffer, unscaled.
	h = newHarness(t, withConfig(func(c *Config) { c.RcvBuffer = 4096 }))
	h.peerOpts.HasWScale = false
	h.listen()
	h.send(seg{flags: SYN, seq: 0})
	h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1, wnd: 4096})
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	h.c = h.l.Accept()
	in := relData(0, 4096)
	// peer: 1448 → engine: ACK(ack=1449, wnd=2648), and so on to 0
	h.send(seg{flags: ACK, seq: 1, ack: 1, data: in[:1448]})
	h.expect(seg{flags: ACK, seq: 1, ack: 1449, wnd: 2648})
	h.send(seg{flags: ACK, seq: 1449, ack: 1, data: in[1448:2896]})
	h.expect(seg{flags: ACK, seq: 1, ack: 2897, wnd: 1200})
	h.send(seg{flags: ACK, seq: 2897, ack: 1, data: in[2896:]})
	h.expect(seg{flags: ACK, seq: 1, ack: 4097, zeroWnd: true})
	// peer: a byte past the closed window → not taken; engine: ACK(wnd=0)
	h.send(seg{flags: ACK, seq: 4097, ack: 1, data: []byte("x")})
	h.expect(seg{flags: ACK, seq: 1, ack: 4097, zeroWnd: true})
	// peer: its probe <seq=RCV.NXT-1> → engine: ACK(wnd=0)
	h.send(seg{flags: ACK, seq: 4096, ack: 1})
	h.expect(seg{flags: ACK, seq: 1, ack: 4097, zeroWnd: true})
	// The application reads: the window reopens with an update.
	if got := h.readAll(h.c); got != string(in) {
		t.Fatalf("read %d bytes, want the 4096 sent", len(got))
	}
	h.expect(seg{flags: ACK, seq: 1, ack: 4097, wnd: 4096})
	h.expectNone()
}

// A burst read together (BeginBatch..EndBatch) owes one ACK per connection
// for its in-order data, sent at EndBatch — in quick-ACK mode too — as GRO
// would make it; out-of-order data is still answered at once, and an ACK
// that data of ours (written during the burst, sent at its end) carried is
// not repeated.
func TestBatchedACKs(t *testing.T) {
	h := newHarness(t)
	h.established()
	stream := relData(0, 20*smss)
	full := func(i int) seg { return seg{flags: ACK, seq: seqOf(i), ack: 1, data: stream[i*smss : (i+1)*smss]} }
	burst := func(from, to int) { // segments from..to-1 in one burst: one ACK, at its end
		t.Helper()
		h.e.BeginBatch()
		for i := from; i < to; i++ {
			h.send(full(i))
		}
		h.expectNone()
		h.e.EndBatch(h.now)
		h.expect(seg{flags: ACK, seq: 1, ack: seqOf(to)})
		h.expectNone()
	}
	burst(0, 4) // in quick-ACK mode
	h.c.quickAcks = 0
	burst(4, 9) // past it
	// A hole in the burst: the out-of-order segment is answered at once
	// (with its SACK), the in-order one before it at the end.
	h.e.BeginBatch()
	h.send(full(9))
	h.expectNone()
	h.send(full(11))
	p := h.expect(seg{flags: ACK, seq: 1, ack: seqOf(10)})
	h.expectSACK(p, block{seqOf(11), seqOf(12)})
	h.e.EndBatch(h.now)
	h.expectNone()
	// Data of ours carries the ACK: what the burst wrote goes at its end,
	// with the ACK, and nothing more.
	h.send(full(10)) // fills the hole: ACKed at once, outside a batch
	h.expect(seg{flags: ACK, seq: 1, ack: seqOf(12)})
	h.e.BeginBatch()
	h.send(full(12))
	h.send(full(13))
	h.writeAll(h.c, "reply")
	h.expectNone()
	h.e.EndBatch(h.now)
	h.expect(seg{flags: PSH | ACK, seq: 1, ack: seqOf(14), data: []byte("reply")})
	h.expectNone()
	if got := h.readAll(h.c); got != string(stream[:14*smss]) {
		t.Fatalf("read %d bytes, want %d in order", len(got), 14*smss)
	}
}

// Window updates on read follow Linux's tcp_cleanup_rbuf: an application
// that reads each segment as it arrives adds no ACKs (one per two full-sized
// segments, as without reads), while a read that reopens a window fallen to
// half the buffer or less is announced at once.
func TestWindowUpdateOnRead(t *testing.T) {
	h := newHarness(t, withConfig(func(c *Config) { c.RcvBuffer = 16 * smss }))
	h.peerOpts.HasWScale = false
	h.established()
	h.c.quickAcks = 0 // past the connection's start
	stream := relData(0, 40*smss)
	full := func(i int) seg { return seg{flags: ACK, seq: seqOf(i), ack: 1, data: stream[i*smss : (i+1)*smss]} }
	got := 0
	read := func() {
		t.Helper()
		n := len(h.readAll(h.c))
		got += n
	}
	for i := 0; i < 10; i++ {
		h.send(full(i))
		read()
		if i%2 == 1 {
			h.expect(seg{flags: ACK, seq: 1, ack: seqOf(i + 1)})
		}
		h.expectNone()
	}
	// Now unread data piles up to over half the buffer: the ACKs every two
	// segments advertise a shrinking window ...
	var wnd int
	for i := 10; i < 19; i++ {
		h.send(full(i))
		if i%2 == 1 {
			p := h.expect(seg{flags: ACK, seq: 1, ack: seqOf(i + 1)})
			wnd = int(p.TCP.Window)
		}
	}
	h.expectNone()
	if wnd > 8*smss {
		t.Fatalf("window %d with 8 of 16 segments unread, want at most %d", wnd, 8*smss)
	}
	// ... and the read that frees it all is announced at once.
	read()
	h.expect(seg{flags: ACK, seq: 1, ack: seqOf(19), wnd: 16 * smss})
	h.expectNone()
	if got != 19*smss {
		t.Fatalf("read %d bytes, want %d", got, 19*smss)
	}
}

// Scenario 8: reliability. A segment not acknowledged stays queued and is
// retransmitted on timeout; out-of-order segments are reassembled in order;
// duplicates are acknowledged and discarded.
func TestScenario08Reliability(t *testing.T) {
	h := newHarness(t)
	h.established()
	// engine: PSH|ACK(seq=1, "hello")                         lost
	h.writeAll(h.c, "hello")
	h.expect(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("hello")})
	h.expectDeadline(200 * time.Millisecond)
	h.advance(199 * time.Millisecond)
	h.expectNone()
	if q := h.c.Info().SndQueued; q != 5 {
		t.Fatalf("%d bytes queued, want the 5 unacknowledged", q)
	}
	// The timer: engine: PSH|ACK(seq=1, "hello") again — the tail loss
	// probe, due with the RTO (RFC 8985 section 7.2), which restarts it.
	h.advance(time.Millisecond)
	h.expect(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("hello")})
	h.expectDeadline(200 * time.Millisecond)
	// peer: ACK(ack=6) → dequeued, timer off
	h.send(seg{flags: ACK, seq: 1, ack: 6})
	h.expectNone()
	if q := h.c.Info().SndQueued; q != 0 || h.c.rtoAt != Never {
		t.Fatalf("%d bytes queued, RTO armed %v after the ACK; want 0, off", q, h.c.rtoAt != Never)
	}

	// The peer's "abc" "def" "ghi": "def" is lost at first.
	// peer: seq=1 "abc" → engine: ACK(ack=4)
	h.send(seg{flags: PSH | ACK, seq: 1, ack: 6, data: []byte("abc")})
	h.expect(seg{flags: ACK, seq: 6, ack: 4})
	// peer: seq=7 "ghi" → engine: ACK(ack=4) at once, SACK [7,10)
	h.send(seg{flags: PSH | ACK, seq: 7, ack: 6, data: []byte("ghi")})
	p := h.expect(seg{flags: ACK, seq: 6, ack: 4})
	h.expectSACK(p, block{7, 10})
	h.takeEvents()
	if got := h.readAll(h.c); got != "abc" {
		t.Fatalf("read %q, want only %q before the hole is filled", got, "abc")
	}
	// peer: seq=4 "def" (its retransmission) → engine: ACK(ack=10)
	h.send(seg{flags: PSH | ACK, seq: 4, ack: 6, data: []byte("def")})
	p = h.expect(seg{flags: ACK, seq: 6, ack: 10})
	h.expectSACK(p)
	h.expectEvents(EventReadable)
	if got := h.readAll(h.c); got != "defghi" {
		t.Fatalf("read %q, want %q: reassembled in order", got, "defghi")
	}
	// peer: seq=4 "def" once more (a spurious retransmission) →
	// engine: ACK(ack=10) with D-SACK [4,7); the bytes are discarded.
	h.send(seg{flags: PSH | ACK, seq: 4, ack: 6, data: []byte("def")})
	p = h.expect(seg{flags: ACK, seq: 6, ack: 10})
	h.expectSACK(p, block{4, 7})
	h.expectNone()
	h.expectEvents(0)
	if n := h.c.Buffered(); n != 0 {
		t.Fatalf("%d bytes buffered after a duplicate, want 0", n)
	}
	h.expectCounter(RxDuplicate, 1)
	h.expectState(Established)

	// Without SACK the duplicate is ACKed plainly.
	h = newHarness(t)
	h.peerOpts.SACKPermitted = false
	h.established()
	h.send(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("abc")})
	h.expect(seg{flags: ACK, seq: 1, ack: 4})
	h.send(seg{flags: PSH | ACK, seq: 7, ack: 1, data: []byte("ghi")})
	p = h.expect(seg{flags: ACK, seq: 1, ack: 4})
	h.expectSACK(p)
	h.send(seg{flags: PSH | ACK, seq: 4, ack: 1, data: []byte("def")})
	h.expect(seg{flags: ACK, seq: 1, ack: 10})
	h.send(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("abc")})
	p = h.expect(seg{flags: ACK, seq: 1, ack: 10})
	h.expectSACK(p)
	if got := h.readAll(h.c); got != "abcdefghi" {
		t.Fatalf("read %q, want %q", got, "abcdefghi")
	}
}

// The RTT estimator: RFC 6298 section 2 arithmetic (alpha 1/8, beta 1/4,
// K 4, RTTVAR updated from the old SRTT), with the RTO's variance term
// floored at min_rto as rtt.go documents (Linux's tcp_set_rto), and the
// result clamped to [min_rto, max_rto].
func TestUnitRTTEstimator(t *testing.T) {
	const ms = time.Millisecond
	minRTO, maxRTO := 200*ms, 120*time.Second
	var r rttEstimator
	steps := []struct {
		sample, srtt, rttvar, rto time.Duration
	}{
		// 2.2: SRTT = R, RTTVAR = R/2, RTO = SRTT + max(G, K*RTTVAR) → 100 + max(200, 200)
		{100 * ms, 100 * ms, 50 * ms, 300 * ms},
		// 2.3: RTTVAR = 3/4*50 + 1/4*|100-200| = 62.5; SRTT = 7/8*100 + 1/8*200 = 112.5;
		// RTO = 112.5 + 4*62.5
		{200 * ms, 112500 * time.Microsecond, 62500 * time.Microsecond, 362500 * time.Microsecond},
		// RTTVAR = 3/4*62.5 + 1/4*|112.5-112.5| = 46.875; SRTT unchanged;
		// 4*RTTVAR = 187.5 < min_rto: RTO = 112.5 + 200 (RFC 6298 would say 312.5... and
		// then clamp; the floor applies to the variance term only)
		{112500 * time.Microsecond, 112500 * time.Microsecond, 46875 * time.Microsecond, 312500 * time.Microsecond},
	}
	for i, s := range steps {
		got := r.sample(s.sample, minRTO, maxRTO)
		if r.srtt != s.srtt || r.rttvar != s.rttvar || got != s.rto || r.rto(minRTO, maxRTO) != got {
			t.Fatalf("sample %d (%v): SRTT %v RTTVAR %v RTO %v; want %v %v %v", i, s.sample, r.srtt, r.rttvar, got, s.srtt, s.rttvar, s.rto)
		}
	}
	// A short, steady RTT: RTO stays min_rto above it, not at min_rto,
	// where a delayed ACK would fire it (the reason for the Linux floor).
	r = rttEstimator{}
	for range 50 {
		r.sample(2*ms, minRTO, maxRTO)
	}
	if got := r.rto(minRTO, maxRTO); got != 202*ms {
		t.Fatalf("RTO after a steady 2 ms RTT = %v, want 202ms", got)
	}
	// A 0 ms sample (timestamps with 1 ms ticks) is a sample; negative ones count as 0.
	r = rttEstimator{}
	if got := r.sample(-5*ms, minRTO, maxRTO); got != minRTO || !r.valid || r.srtt != 0 {
		t.Fatalf("negative sample: RTO %v SRTT %v valid %v; want 200ms, 0, true", got, r.srtt, r.valid)
	}
	// Clamped at max_rto (RFC 6298 section 2.5).
	r = rttEstimator{}
	if got := r.sample(100*time.Second, minRTO, maxRTO); got != maxRTO {
		t.Fatalf("RTO after a 100 s sample = %v, want the 120 s cap", got)
	}
}

// CUBIC's window function (RFC 9438 section 4.2): after a reduction from
// W_max, cwnd follows W_cubic(t) = C*(t-K)^3 + W_max with K = cbrt((W_max -
// cwnd_epoch)/C), concave up to W_max at t = K, convex beyond.
func TestUnitCubicWindowGrowth(t *testing.T) {
	const mss = 1000
	const rtt = 100 * time.Millisecond
	c := newCubic(mss)
	c.cw, c.ssth = 100*mss, 50*mss // in congestion avoidance at 100 segments
	now := t0
	c.onAck(now, mss, rtt) // learns minRTT; starts an epoch at W_max = cwnd
	c.onLoss(now, c.cw)
	if c.cw != 70*mss || c.ssth != 70*mss || c.wMax != 100 {
		t.Fatalf("after a loss at 100 segments: cwnd %d ssthresh %d W_max %v; want 70, 70, 100 segments", c.cw/mss, c.ssth/mss, c.wMax)
	}
	c.onRecoveryEnd(now)
	wantK := math.Cbrt((100 - 70) / cubicC)
	// One round trip per step, a cwnd's worth of one-segment ACKs in each.
	for step := 1; step <= 100; step++ {
		now = now.Add(rtt)
		for range c.cw / mss {
			c.onAck(now, mss, rtt)
		}
		if step == 1 && math.Abs(c.k-wantK) > 1e-9 {
			t.Fatalf("K = %v, want cbrt(30/0.4) = %v", c.k, wantK)
		}
		// Each round trip takes cwnd to the target for one RTT ahead,
		// W_cubic(t + RTT), give or take a segment of integer rounding
		// and, where it climbs steeply, the lag of growing per ACK
		// (section 4.4: (target - cwnd)/cwnd per ACK, with cwnd rising
		// during the round trip).
		tt := now.Sub(c.epochStart).Seconds() + rtt.Seconds()
		want := cubicC*math.Pow(tt-wantK, 3) + 100
		want = math.Max(want, 70)
		if got := float64(c.cw) / mss; math.Abs(got-want) > math.Max(1.5, 0.02*want) {
			t.Fatalf("at t=%.1fs cwnd %v segments, W_cubic(t+RTT) = %.2f", now.Sub(t0).Seconds(), got, want)
		}
		if step*int(rtt) < int(wantK*float64(time.Second))-int(rtt) && c.cw > 100*mss {
			t.Fatalf("cwnd %d passed W_max before K", c.cw/mss)
		}
	}
	// The epoch began with the first ACK, 0.1 s in; 10 s on, 5.8 s past
	// K: W_cubic = 0.4*5.78^3 + 100 = 177 (convex growth).
	if c.cw < 170*mss {
		t.Fatalf("after 10 s cwnd %d segments, want about 177: not growing convexly past W_max", c.cw/mss)
	}
}

// Fast convergence (RFC 9438 section 4.7): a loss below the previous W_max
// sets W_max to cwnd*(1+beta)/2, releasing bandwidth to newer flows.
func TestUnitCubicFastConvergence(t *testing.T) {
	const mss = 1000
	c := newCubic(mss)
	c.cw = 100 * mss
	c.onLoss(t0, c.cw)
	if c.wMax != 100 || c.wLastMax != 100 {
		t.Fatalf("first loss: W_max %v W_last_max %v, want 100, 100", c.wMax, c.wLastMax)
	}
	c.cw = 80 * mss // lost again before regaining W_max
	c.onLoss(t0, c.cw)
	if math.Abs(c.wMax-68) > 1e-9 || c.wLastMax != 80 || c.ssth != 56*mss || c.cw != 56*mss {
		t.Fatalf("second loss at 80: W_max %v W_last_max %v ssthresh %d cwnd %d; want 68 (80*1.7/2), 80, 56, 56",
			c.wMax, c.wLastMax, c.ssth/mss, c.cw/mss)
	}
	c.cw = 90 * mss // a loss above W_last_max: no fast convergence
	c.onLoss(t0, c.cw)
	if c.wMax != 90 || c.wLastMax != 90 {
		t.Fatalf("loss at 90 above W_last_max 80: W_max %v W_last_max %v, want 90, 90", c.wMax, c.wLastMax)
	}
	// The floor: never below 2 segments.
	c.cw = 2 * mss
	c.onLoss(t0, c.cw)
	if c.ssth != 2*mss {
		t.Fatalf("ssthresh %d segments from cwnd 2, want 2", c.ssth/mss)
	}
}

// oooSet: ranges merge when they overlap or touch, the most recently
// changed comes first in the SACK order, and the set is bounded.
func TestUnitOOOSet(t *testing.T) {
	var s oooSet
	v := func(x uint32) seqnum.Value { return seqnum.Value(x) }
	add := func(a, b uint32) {
		t.Helper()
		if !s.add(v(a), v(b)) {
			t.Fatalf("add [%d,%d) refused", a, b)
		}
	}
	check := func(ranges, recent string) {
		t.Helper()
		var r, q []string
		for i := 0; i < s.n; i++ {
			r = append(r, fmt.Sprintf("%d-%d", s.r[i].start, s.r[i].end))
		}
		for k := 0; k < s.nrec; k++ {
			q = append(q, fmt.Sprint(uint32(s.recent[k])))
		}
		if fmt.Sprint(r) != ranges || fmt.Sprint(q) != recent {
			t.Fatalf("ranges %v recency %v, want %s %s", r, q, ranges, recent)
		}
	}
	add(100, 200)
	add(300, 400)
	add(500, 600)
	check("[100-200 300-400 500-600]", "[500 300 100]")
	add(200, 250) // touches the first: merged, and now most recent
	check("[100-250 300-400 500-600]", "[100 500 300]")
	add(350, 520) // bridges two ranges into one
	check("[100-250 300-600]", "[300 100]")
	add(50, 100) // extends a range to the left: its start changes
	check("[50-250 300-600]", "[50 300]")
	add(0, 1000) // swallows everything
	check("[0-1000]", "[0]")
	if !s.covers(v(10), v(990)) || s.covers(v(990), v(1001)) {
		t.Fatal("covers wrong")
	}
	// Sequence-space wrap: ranges across 2^32 order as sequence numbers.
	s.reset()
	add(0xffffff00, 0xffffff80)
	add(0x10, 0x20)
	add(0xffffff80, 0x10) // joins both across the wrap
	check("[4294967040-32]", "[4294967040]")

	// The bound: maxOOORanges disjoint ranges, then a new one is refused,
	// while one that merges is still taken.
	s.reset()
	for i := range maxOOORanges {
		add(uint32(1000+100*i), uint32(1050+100*i))
	}
	if s.add(v(5000), v(5050)) {
		t.Fatal("a range past the bound was taken")
	}
	add(1050, 1060) // extends the first
	if s.n != maxOOORanges || s.nrec != maxOOORanges || s.recent[0] != v(1000) {
		t.Fatalf("n %d nrec %d first recent %d after a merge at the bound", s.n, s.nrec, s.recent[0])
	}
	// popFront takes the first range once RCV.NXT reaches it.
	if _, ok := s.popFront(v(999)); ok {
		t.Fatal("popFront before RCV.NXT reached the range")
	}
	if r, ok := s.popFront(v(1000)); !ok || r != (seqRange{v(1000), v(1060)}) || s.n != maxOOORanges-1 || s.nrec != maxOOORanges-1 {
		t.Fatalf("popFront = %v, %v; n %d nrec %d", r, ok, s.n, s.nrec)
	}

	// SACK blocks: a D-SACK first, then by recency, at most four.
	s.reset()
	add(100, 200)
	add(300, 400)
	add(500, 600)
	add(700, 800)
	add(900, 950)
	var o wire.TCPOptions
	blocks := func() string {
		var got []block
		for _, b := range o.SACK[:o.NumSACK] {
			got = append(got, block{b.Start, b.End})
		}
		return fmt.Sprint(got)
	}
	s.sackBlocks(&o, &seqRange{v(10), v(20)})
	if got, want := blocks(), "[{10 20} {900 950} {700 800} {500 600}]"; got != want {
		t.Fatalf("SACK blocks %v, want %v", got, want)
	}
	s.sackBlocks(&o, nil)
	if got, want := blocks(), "[{900 950} {700 800} {500 600} {300 400}]"; got != want {
		t.Fatalf("SACK blocks %v, want %v", got, want)
	}
}

// DupThresh adapts to reordering (RFC 6675 leaves it to the implementation;
// Linux's tp->reordering): an ACK for the delayed original of a segment we
// fast-retransmitted shows, by its TSecr older than the retransmission
// (Eifel detection, RFC 3522), how deep the reordering went; the D-SACK
// that follows for the retransmission undoes the window reduction (RFC 2883
// section 5). A D-SACK of old data below SND.UNA measures nothing.
func TestReorderingDetectionAndUndo(t *testing.T) {
	h := newHarness(t)
	h.established()
	stream := relData(0, 14*smss)
	h.writeAll(h.c, string(stream))
	p := h.expectData(stream, seqOf(0), smss, 0, 1)
	origTS := p.TCP.Options.TSVal
	for i := 1; i < 10; i++ {
		h.expectData(stream, seqOf(i), smss, 0, 1)
	}
	// Segment 0 is delayed; 3 ms later (before a tail loss probe) 1, 2,
	// 3 are SACKed.
	h.advance(3 * time.Millisecond)
	for k := 1; k <= 3; k++ {
		h.send(seg{flags: ACK, seq: 1, ack: 1, opts: h.peerSACK(block{seqOf(1), seqOf(1 + k)})})
	}
	h.expectData(stream, seqOf(10), smss, 0, 1)
	h.expectData(stream, seqOf(11), smss, 0, 1)
	h.expectData(stream, seqOf(0), smss, 0, 1) // fast retransmit, spurious
	h.expectNone()
	h.expectCwnd(7, 7)
	// peer: ACK(ack=12 segments) for the original segment 0: TSecr is
	// its TSval, older than the retransmission's. 12 segments arrived
	// ahead of it: DupThresh becomes 13.
	o := h.peerSACK()
	o.TSEcr = origTS
	h.send(seg{flags: ACK, seq: 1, ack: seqOf(12), opts: o})
	h.expectData(stream, seqOf(12), smss, 0, 1)
	h.expectData(stream, seqOf(13), smss, PSH, 1)
	h.expectNone()
	if h.c.reordering != 13 {
		t.Fatalf("DupThresh %d after the delayed original was ACKed, want 13", h.c.reordering)
	}
	// peer: the retransmission arrives too: ACK with D-SACK [0,1 segment)
	// → every retransmission of the reduction was spurious: undone.
	h.send(seg{flags: ACK, seq: 1, ack: seqOf(12), opts: h.peerSACK(block{seqOf(0), seqOf(1)})})
	h.expectNone()
	h.expectCounter(RxDSACKs, 1)
	h.expectCounter(SpuriousRecoveries, 1)
	h.expectCwnd(10, 1<<30/float64(smss))
	if h.c.reordering != 13 {
		t.Fatalf("DupThresh %d after the D-SACK, want 13", h.c.reordering)
	}

	// A D-SACK far below SND.UNA (a late duplicate, or one from a lost
	// ACK's retransmission) leaves DupThresh alone: three duplicate ACKs
	// still start recovery.
	h = newHarness(t)
	h.established()
	stream = relData(0, 20*smss)
	h.sendFlight(stream, 10)
	h.send(seg{flags: ACK, seq: 1, ack: seqOf(10)})
	for i := 10; i < 20; i++ {
		flags := uint8(0)
		if i == 19 {
			flags = PSH
		}
		h.expectData(stream, seqOf(i), smss, flags, 1)
	}
	h.expectNone()
	h.send(seg{flags: ACK, seq: 1, ack: seqOf(15), opts: h.peerSACK(block{seqOf(2), seqOf(3)})})
	h.expectNone()
	h.expectCounter(RxDSACKs, 1)
	if h.c.reordering != dupThresh {
		t.Fatalf("DupThresh %d after a D-SACK below SND.UNA, want %d", h.c.reordering, dupThresh)
	}
	// (RACK's window widened for it: a D-SACK round, RFC 8985 section 6.2
	// step 4.) With no time passing in this ladder the minimum RTT, and
	// so the window, is 0: the first SACK above the hole shows it lost.
	if h.c.rack.reoWndMult != 2 {
		t.Fatalf("reo_wnd_mult %d after a D-SACK, want 2", h.c.rack.reoWndMult)
	}
	for k := 1; k <= 3; k++ {
		h.send(seg{flags: ACK, seq: 1, ack: seqOf(15), opts: h.peerSACK(block{seqOf(16), seqOf(16 + k)})})
		if k == 1 {
			h.expectData(stream, seqOf(15), smss, 0, 1)
		}
		h.expectNone()
	}
	h.expectCounter(FastRecoveries, 1)
	// A D-SACK inside a SACK block (RFC 2883 section 4.2: data above
	// SND.UNA received twice) does measure: from its start to the top.
	h.send(seg{flags: ACK, seq: 1, ack: seqOf(15), opts: h.peerSACK(block{seqOf(16), seqOf(17)}, block{seqOf(16), seqOf(19)})})
	h.expectNone()
	if h.c.reordering != 4 {
		t.Fatalf("DupThresh %d after a D-SACK 3 segments below the top, want 4", h.c.reordering)
	}
}

// Sender silly window avoidance on the congestion side: when what cwnd
// leaves is less than a segment (a short segment is in flight) the sender
// waits for an ACK rather than cut a short segment to fit (as Linux, which
// counts cwnd in packets, sends nothing with cwnd packets in flight).
func TestShortCongestionBudgetWaits(t *testing.T) {
	h := newHarness(t)
	h.established()
	first := relData(0, 9*smss+100)
	h.writeAll(h.c, string(first))
	for i := 0; i < 9; i++ {
		h.expectData(first, seqOf(i), smss, 0, 1)
	}
	h.expectData(first, seqOf(9), 100, PSH, 1)
	h.expectNone()
	// cwnd 10 segments, pipe 9 segments + 100 bytes: 1348 bytes of room.
	more := relData(9*smss+100, 5000)
	h.writeAll(h.c, string(more))
	h.expectNone()
	stream := append(first, more...)
	// peer: ACK of one segment → cwnd 11, room for 2 full segments + 1348:
	// two full segments, not a third short one.
	h.send(seg{flags: ACK, seq: 1, ack: seqOf(1)})
	h.expectData(stream, seqOf(9)+100, smss, 0, 1)
	h.expectData(stream, seqOf(10)+100, smss, 0, 1)
	h.expectNone()
	h.expectCwnd(11, -1)
}
