package stack

import (
	"time"

	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// Loss recovery is RFC 6675 ("conservative SACK-based loss recovery"), with
// RFC 6582 NewReno as its degenerate form when the peer does not do SACK.
//
// Why RFC 6675 and not RACK-TLP (RFC 8985): RACK needs a per-segment
// transmit time for every segment in flight, i.e. a per-segment record
// alongside the send ring; RFC 6675 works from the SACK scoreboard (a handful
// of ranges) and the byte ring we already keep, so it allocates nothing per
// segment and its decisions depend only on sequence numbers, which makes it
// exact to test. Its weakness — reordering beyond DupThresh looks like loss —
// costs a spurious retransmission and a window reduction, which the 10%
// reordering simulation measures.
//
// Around it, what RACK-TLP's timers give without per-segment times: how
// much is sent in fast recovery follows Proportional Rate Reduction (RFC
// 6937; prrUpdate), so every ACK in recovery lets something out; a first
// hole that SACKs have shown is resent by a reordering timer when the ACKs
// stop short of DupThresh (armReorderTimer); silence in fast recovery
// resends the first hole once before the RTO would; and the tail loss probe
// resends the last segment, which a delayed-ACK receiver answers at once.
// On a client leg with 3% loss each way (TestLossyClient) these took a
// 50 MiB download from 8-10 s (17-24 RTOs) to 2.5-3 s (3-6 RTOs).
//
// The scoreboard is the set of SACKed ranges above SND.UNA. IsLost (RFC 6675
// section 4) is monotone in the sequence number when judged by SACKed bytes
// above a point, so "lost" is everything un-SACKed below one boundary; after
// an RTO everything un-SACKed below the recovery point is lost (as Linux's
// tcp_enter_loss marks it).

const dupThresh = 3

// updateScoreboard takes the ACK's SACK blocks (RFC 2018); it reports
// whether they SACKed anything new. Blocks outside [SND.UNA, SND.NXT] and
// D-SACK blocks (RFC 2883: the first block below SND.UNA, or inside another
// block) carry no new information for the sender and are only counted.
func (c *Conn) updateScoreboard(o *wire.TCPOptions, ack seqnum.Value) bool {
	newInfo := false
	for i := 0; i < int(o.NumSACK); i++ {
		start, end := seqnum.Value(o.SACK[i].Start), seqnum.Value(o.SACK[i].End)
		if !start.LessThan(end) || end.GreaterThan(c.sndNxt) {
			continue
		}
		if i == 0 && isDSACK(o, ack) {
			c.e.counters.inc(RxDSACKs)
			c.onDSACK(start)
			continue
		}
		if end.LessThanEq(c.sndUna) {
			continue
		}
		start = seqnum.Max(start, c.sndUna)
		if c.sacked.covers(start, end) {
			continue // repeated: receivers report held ranges in every ACK
		}
		if c.sacked.add(start, end) {
			newInfo = true
			if c.inRecovery && end.GreaterThan(c.rxtMark) && c.highRxt.GreaterThan(c.sndUna) {
				// Data sent after our retransmissions arrived while a hole
				// we retransmitted is still open: that retransmission was
				// lost too. Retransmit the holes again (the check RACK makes
				// by time, made here by order: Linux's tcp_mark_lost_retrans).
				c.highRxt = c.sndUna
				c.rxtMark = c.sndNxt
				c.e.counters.inc(LostRetransmits)
			}
		}
	}
	return newInfo
}

// onDSACK learns from a D-SACK: the peer received something twice, so a
// retransmission of ours was spurious — the "loss" was reordering. Raise
// DupThresh to the reordering distance seen (Linux's tcp_check_sack_reordering,
// capped as its tcp_max_reordering is) and, once every retransmission of the
// last reduction has proved spurious, undo the reduction.
func (c *Conn) onDSACK(start seqnum.Value) {
	mss := c.effectiveMSS()
	top := c.sndUna
	if c.sacked.n > 0 {
		top = c.sacked.r[c.sacked.n-1].end
	}
	// Only a D-SACK at or above SND.UNA measures reordering (as Linux's
	// tcp_sacktag_one takes it only for data still in its queue): below, the
	// distance to the top has grown by all that was acknowledged since, and
	// one spurious retransmission under loss (a lost ACK, say) raised
	// DupThresh to a window's worth, leaving every later loss to the RTO.
	// Reordering below SND.UNA is found by detectDelayedOriginal instead.
	if top.GreaterThan(start) && !start.LessThan(c.sndUna) {
		if dist := int(start.Size(top))/mss + 1; dist > c.reordering {
			c.reordering = min(dist, maxReordering)
		}
	}
	if c.undoRetrans > 0 {
		c.undoRetrans--
		if c.undoRetrans == 0 && c.priorCwnd > 0 {
			c.cc.undo(c.priorCwnd, c.priorSsth)
			c.priorCwnd = 0
			c.e.counters.inc(SpuriousRecoveries)
		}
	}
}

// detectDelayedOriginal is Eifel detection (RFC 3522) as Linux's
// tcp_packet_delayed makes it: an ACK advancing SND.UNA during fast recovery
// whose TSecr is older than our first retransmission was sent for the
// original segment, which was delayed, not lost. Reordering is then as deep
// as the data that arrived ahead of it (SND.UNA to the highest SACKed byte,
// Linux's tcp_check_sack_reordering with prior_snd_una). Called before
// SND.UNA moves. c.rxtTSval is the TSval of the recovery's first
// retransmission.
func (c *Conn) detectDelayedOriginal(s *segment) {
	if !c.inRecovery || c.rtoRecovery || !c.tsOK || !s.opts.HasTimestamps || s.opts.TSEcr == 0 ||
		int32(s.opts.TSEcr-c.rxtTSval) >= 0 {
		return
	}
	top := s.ack
	if c.sacked.n > 0 {
		top = seqnum.Max(top, c.sacked.r[c.sacked.n-1].end)
	}
	if dist := int(c.sndUna.Size(top))/c.effectiveMSS() + 1; dist > c.reordering {
		c.reordering = min(dist, maxReordering)
	}
}

// reoWnd is RACK's reordering window (RFC 8985 section 6.2): a quarter of
// the smoothed RTT, at least 1 ms.
func (c *Conn) reoWnd() time.Duration {
	return max(c.rtt.srtt/4, time.Millisecond)
}

// maxReordering caps DupThresh (Linux's tcp_max_reordering is 300).
const maxReordering = 300

// isDSACK reports whether the first SACK block is a D-SACK (RFC 2883
// section 4): below the cumulative ACK, or inside the second block.
func isDSACK(o *wire.TCPOptions, ack seqnum.Value) bool {
	start, end := seqnum.Value(o.SACK[0].Start), seqnum.Value(o.SACK[0].End)
	if end.LessThanEq(ack) {
		return true
	}
	if o.NumSACK > 1 {
		s1, e1 := seqnum.Value(o.SACK[1].Start), seqnum.Value(o.SACK[1].End)
		return s1.LessThanEq(start) && end.LessThanEq(e1)
	}
	return false
}

// pruneScoreboard drops what SND.UNA has passed.
func (c *Conn) pruneScoreboard() {
	for c.sacked.n > 0 && c.sacked.r[0].start.LessThan(c.sndUna) {
		if c.sacked.r[0].end.LessThanEq(c.sndUna) {
			c.sacked.popFront(c.sacked.r[0].start)
			continue
		}
		// The cumulative ACK reached into a SACKed range.
		old := c.sacked.r[0].start
		c.sacked.r[0].start = c.sndUna
		for k := 0; k < c.sacked.nrec; k++ {
			if c.sacked.recent[k] == old {
				c.sacked.recent[k] = c.sndUna
			}
		}
		break
	}
}

// lostBoundary is the sequence number below which every un-SACKed byte is
// considered lost (RFC 6675 IsLost, with DupThresh SMSS of SACKed bytes above).
func (c *Conn) lostBoundary() seqnum.Value {
	if c.rtoRecovery {
		return c.recoverySeq
	}
	if !c.sackOK {
		if c.inRecovery {
			// NewReno: the first unacknowledged segment is the lost one.
			return seqnum.Min(c.sndUna.Add(seqnum.Size(c.effectiveMSS())), c.sndNxt)
		}
		return c.sndUna
	}
	// IsLost: more than (DupThresh-1)*SMSS bytes, or DupThresh discontiguous
	// ranges, SACKed above.
	threshold := (c.reordering - 1) * c.effectiveMSS()
	acc := 0
	boundary := c.sndUna
	for k := c.sacked.n - 1; k >= 0; k-- {
		acc += int(c.sacked.r[k].start.Size(c.sacked.r[k].end))
		if acc > threshold || c.sacked.n-k >= c.reordering {
			boundary = c.sacked.r[k].start
			break
		}
	}
	if c.inRecovery {
		boundary = seqnum.Max(boundary, c.lostTo)
		// Section 5 step 4.3: recovery begins by resending the first
		// segment, whatever the scoreboard says (entered on DupThresh
		// duplicate ACKs whose SACK blocks were lost, say).
		boundary = seqnum.Max(boundary, seqnum.Min(c.sndUna.Add(seqnum.Size(c.effectiveMSS())), c.sndNxt))
	}
	return boundary
}

// pipe is RFC 6675's estimate of the bytes in the network (SetPipe): every
// un-SACKed byte not deemed lost, plus every byte retransmitted below HighRxt.
// Outside recovery it is the FlightSize.
func (c *Conn) pipe() int {
	flight := int(c.sndUna.Size(c.sndNxt))
	if !c.inRecovery {
		return flight
	}
	lost := c.lostBoundary()
	p := 0
	c.eachHole(func(a, b seqnum.Value) {
		if b.GreaterThan(lost) {
			p += int(seqnum.Max(a, lost).Size(b))
		}
		if a.LessThan(c.highRxt) {
			p += int(a.Size(seqnum.Min(b, c.highRxt)))
		}
	})
	if !c.sackOK {
		// Without SACK each duplicate ACK says one segment left the network
		// (RFC 6582's window inflation, expressed as pipe deflation).
		p = max(0, p-c.dupAcks*c.effectiveMSS())
	}
	return p
}

// eachHole calls fn for every un-SACKed range [a, b) of [SND.UNA, SND.NXT).
func (c *Conn) eachHole(fn func(a, b seqnum.Value)) {
	at := c.sndUna
	for i := 0; i < c.sacked.n; i++ {
		r := c.sacked.r[i]
		if r.start.GreaterThan(at) {
			fn(at, seqnum.Min(r.start, c.sndNxt))
		}
		at = seqnum.Max(at, r.end)
	}
	if at.LessThan(c.sndNxt) {
		fn(at, c.sndNxt)
	}
}

// nextRetransmit is RFC 6675 NextSeg rule 1: the first un-SACKed, lost
// sequence range at or above HighRxt, at most max bytes long.
func (c *Conn) nextRetransmit(max int) (seqnum.Value, int, bool) {
	lost := c.lostBoundary()
	from := seqnum.Max(c.highRxt, c.sndUna)
	var seq seqnum.Value
	n := 0
	c.eachHole(func(a, b seqnum.Value) {
		if n > 0 {
			return
		}
		a = seqnum.Max(a, from)
		b = seqnum.Min(b, lost)
		if a.LessThan(b) {
			seq, n = a, min(int(a.Size(b)), max)
		}
	})
	return seq, n, n > 0
}

// Tail loss probe (RFC 8985 section 7). When the last segments of a flight
// are lost, or the window is too small for the losses to produce DupThresh
// duplicate ACKs, nothing but the RTO (min_rto, 200 ms) would notice. A
// probe after about two round trips — new data if any may go, else the last
// segment again — draws a SACK that starts fast recovery instead.

// minPTO floors the probe timeouts (the tail loss probe's and fast
// recovery's silence probe). RFC 8985 has none; Linux floors its TLP at
// 10 ms, a matter of jiffies. Our timers are finer, but RTT samples come
// from millisecond timestamps, so an SRTT below a few milliseconds is
// coarse: 4 ms keeps a jittery sub-millisecond path from probing
// spuriously while not idling a LAN connection for 10 ms per lost ACK
// (measured: 3% loss on the client leg, 50 MiB, 113 waits of 10 ms).
const minPTO = 4 * time.Millisecond

// armTLP schedules a probe while data is in flight outside recovery.
func (c *Conn) armTLP() {
	e := c.e
	if c.tlpOut || c.inRecovery || c.sndUna == c.sndNxt || !c.rtt.valid || c.tlpAt != Never {
		return
	}
	pto := 2 * c.rtt.srtt
	if int(c.sndUna.Size(c.sndNxt)) <= c.effectiveMSS() {
		// A lone segment's ACK may be delayed by the peer (RFC 8985 7.2: WCDelAckT).
		pto += 200 * time.Millisecond
	}
	pto = max(pto, minPTO)
	at := e.now.Add(pto)
	if at >= c.rtoAt {
		return
	}
	c.tlpAt = at
	c.rearm()
}

// onTLP sends the probe.
func (c *Conn) onTLP() {
	e := c.e
	if c.inRecovery || c.sndUna == c.sndNxt || c.tlpOut {
		return
	}
	c.tlpOut = true
	e.counters.inc(TailLossProbes)
	mss := c.effectiveMSS()
	// The probe resends the last segment (with our FIN if that is what it
	// was), even when new data waits — where RFC 8985 section 7.3 would
	// send the new data. A new segment alone sits in the receiver's
	// delayed-ACK timer (40 ms on Linux) when what was lost was the ACK of
	// the burst before it; a duplicate is answered at once (with a D-SACK,
	// and Linux's receiver goes to quick-ACK mode). Measured on a 3%-loss
	// client leg: fifty 40 ms stalls in one 50 MiB download.
	end := c.sndNxt
	fin := c.finSent
	if fin {
		end = end.Sub(1)
	}
	start := seqnum.Max(c.sndUna, end.Sub(seqnum.Size(mss)))
	if start.GreaterThan(end) {
		start = end
	}
	c.transmit(start, int(start.Size(end)), fin)
	e.counters.inc(Retransmits)
	c.retransmitted++
}

// enterRecovery starts loss recovery: fast retransmit after DupThresh
// duplicate ACKs or SACKed evidence (rto false), or after a retransmission
// timeout (rto true).
func (c *Conn) enterRecovery(rto bool) {
	e := c.e
	flight := int(c.sndUna.Size(c.sndNxt))
	c.priorCwnd, c.priorSsth = c.cc.cwnd(), c.cc.ssthresh()
	c.undoRetrans = 0
	if rto {
		c.priorCwnd = 0 // an RTO is not undone
		// The reordering seen before is no reason to wait for more
		// duplicate ACKs after a timeout (Linux's tcp_enter_loss resets
		// tp->reordering the same way): a DupThresh raised by reordering
		// is what turns later losses into timeouts.
		c.reordering = dupThresh
		if c.retries <= 1 {
			// A segment the timer already resent: ssthresh is held
			// constant (RFC 5681 section 3.1; Linux's tcp_enter_loss
			// reduces once per episode) and cwnd is still one segment.
			// Reducing again took CUBIC's ssthresh from 0.7 cwnd to 2 SMSS.
			c.cc.onRTO(e.now, flight)
		}
		e.counters.inc(RTORecoveries)
	} else {
		c.cc.onLoss(e.now, flight)
		e.counters.inc(FastRecoveries)
	}
	c.inRecovery, c.rtoRecovery = true, rto
	c.prrDelivered, c.prrOut, c.prrRecoverFS, c.prrBudget = 0, 0, flight, 0
	c.recoverySeq = c.sndNxt
	c.highRxt = c.sndUna
	c.rxtMark = c.sndNxt
	c.lostTo = c.sndUna
	c.rttTiming = false // Karn: no sample from anything sent before a retransmission
	// The TSval the retransmissions about to go will carry.
	c.rxtTSval = c.tsNow()
	if !rto {
		// Fast retransmit: the first segment presumed lost goes out now,
		// whatever the pipe (RFC 6675 section 5 step 4.3, RFC 5681 section
		// 3.2 step 2; Linux's PRR forces it too). Only what follows waits
		// for cwnd - pipe to open, which with cwnd cut to 0.7 or 0.5 of the
		// flight takes several more ACKs.
		if seq, n, ok := c.nextRetransmit(c.effectiveMSS()); ok {
			c.retransmit(seq, n)
		}
	}
}

// armReorderTimer runs after every ACK. Outside recovery, with a hole at
// SND.UNA that SACKs have shown, it is RACK's reordering timer (RFC 8985
// section 6.3): if no further ACK arrives, the hole is judged lost when it
// has been open for twice the reordering window — not left to the RTO because the
// ACKs that would have made DupThresh were lost or coalesced (GRO). In fast
// recovery it waits for silence: no ACK for two round trips (at least
// minPTO) means the retransmission at SND.UNA, or every ACK it caused, was
// lost, and the first hole goes again (onReorderTimer) rather than after a
// 200 ms RTO and a collapse to one segment.
func (c *Conn) armReorderTimer() {
	c.reoAt = Never
	switch {
	case !c.inRecovery && c.holeSince != 0 && c.sndUna != c.sndNxt:
		// Twice the window the ACK path judges by (holeAged): a timer
		// acts on no new evidence, so it gives reordering more room
		// (measured in the simulator: at 1x, 10% reordering fell from
		// 759 to 591 Mbit/s; at 2x it keeps 759 and 5% loss gains most).
		c.reoAt = c.holeSince.Add(2 * c.reoWnd())
	case c.prrActive() && c.rtt.valid:
		c.reoAt = c.e.now.Add(max(2*c.rtt.srtt, minPTO))
	default:
		return
	}
	if c.reoAt >= c.rtoAt {
		c.reoAt = Never
		return
	}
	c.rearm()
}

// onReorderTimer: see armReorderTimer.
func (c *Conn) onReorderTimer() {
	e := c.e
	if c.sndUna == c.sndNxt || !c.sackOK {
		return
	}
	holeEnd := c.sndNxt
	if c.sacked.n > 0 {
		holeEnd = seqnum.Min(holeEnd, c.sacked.r[0].start)
	}
	if !holeEnd.GreaterThan(c.sndUna) {
		return
	}
	if !c.inRecovery {
		if c.holeSince == 0 || c.sacked.n == 0 || e.now.Sub(c.holeSince) < 2*c.reoWnd() {
			return
		}
		e.counters.inc(ReorderTimeouts)
		c.enterRecovery(false)
		c.output()
		c.armReorderTimer()
		return
	}
	if c.rtoRecovery {
		return
	}
	dataEnd := c.sndBufSeq.Add(seqnum.Size(c.sndBuf.Len()))
	if c.finSent && holeEnd.GreaterThan(dataEnd) {
		return // the hole holds our FIN: the RTO resends it
	}
	n := min(int(c.sndUna.Size(holeEnd)), c.effectiveMSS())
	e.counters.inc(RecoveryProbes)
	e.counters.inc(Retransmits)
	c.retransmitted++
	c.undoRetrans++ // a D-SACK of it proves it spurious, as of any retransmission
	c.transmit(c.sndUna, n, false)
	// One probe per silence: the next comes only after an ACK re-arms it.
}

// prrActive: fast recovery with SACK, where Proportional Rate Reduction
// (RFC 6937) paces what is sent. (After an RTO cwnd grows by slow start
// instead; without SACK NewReno's partial ACKs drive it.)
func (c *Conn) prrActive() bool { return c.inRecovery && !c.rtoRecovery && c.sackOK }

// prrUpdate is RFC 6937 section 3's per-ACK step: delivered bytes (SND.UNA's
// advance plus the change in SACKed bytes) earn a share of ssthresh/RecoverFS
// of new transmissions while the pipe is above ssthresh, and up to one
// segment more than delivered (slow start, PRR-SSRB) once it is below. So a
// window reduction is spread over the round trip instead of stopping all
// sending until the pipe drains below cwnd, and every ACK in recovery lets
// something out — new data whose SACK reveals a lost retransmission.
func (c *Conn) prrUpdate(delivered int) {
	c.prrDelivered += delivered
	mss, pipe, ssth := c.effectiveMSS(), c.pipe(), c.cc.ssthresh()
	var sndcnt int
	if pipe > ssth {
		fs := max(c.prrRecoverFS, 1)
		sndcnt = (c.prrDelivered*ssth+fs-1)/fs - c.prrOut
	} else {
		sndcnt = min(ssth-pipe, max(c.prrDelivered-c.prrOut, delivered)+mss)
	}
	c.prrBudget = max(sndcnt, 0)
}

// exitRecovery ends recovery once the recovery point is acknowledged.
func (c *Conn) exitRecovery() {
	rto := c.rtoRecovery
	c.inRecovery, c.rtoRecovery = false, false
	c.dupAcks = 0
	if !rto {
		// cwnd = ssthresh ends a fast recovery's reduction; after a
		// timeout slow start has been growing cwnd and keeps it (Linux
		// leaves the Loss state without touching cwnd).
		c.cc.onRecoveryEnd(c.e.now)
	}
}
