package stack

import (
	"time"

	"github.com/xdproxy/xdproxy/stack/seqnum"
)

// RACK (RFC 8985 section 6): loss detection by time. Every segment carries
// the time it was last sent (sentq.go). RACK remembers the most recently
// sent segment known delivered (RACK.xmit_ts, RACK.end_seq) and the RTT it
// took; a segment sent before it and still neither SACKed nor acknowledged
// is lost once it has been out for that RTT plus a reordering window —
// whether it was sent once or retransmitted, so a lost retransmission is
// found like any other loss, without waiting for the RTO. What is not yet
// old enough arms the reordering timer. The reordering window is a quarter
// of the minimum RTT, multiplied by the rounds in which D-SACKs showed a
// retransmission spurious (section 6.2 step 4), at most SRTT; it is zero
// until reordering has been seen, once in recovery or DupThresh segments
// are SACKed, as Linux's tcp_rack_reo_wnd makes it.

// rackState is RACK's per-connection state (RFC 8985 section 5.2 names).
type rackState struct {
	xmit   Time          // RACK.xmit_ts; 0: nothing delivered yet
	endSeq seqnum.Value  // RACK.end_seq
	rtt    time.Duration // RACK.rtt
	fack   seqnum.Value  // RACK.fack: the highest end_seq delivered
	fackOK bool          // fack is set

	reordSeen     bool         // RACK.reordering_seen
	dsackRound    seqnum.Value // RACK.dsack_round (valid when inDSACKRound)
	inDSACKRound  bool
	reoWndMult    int // RACK.reo_wnd_mult
	reoWndPersist int // RACK.reo_wnd_persist

	minRTT minRTTFilter // RACK.min_RTT

	// What the ACK being processed delivered (reset per ACK).
	ackNewest    Time          // the latest transmit time among segments it delivered and RACK takes
	ackNewestRTT time.Duration // that segment's RTT
	ackClean     Time          // the earliest transmit time among never-retransmitted segments it delivered
	ackCleanLast Time          // the latest of those
	ackDSACK     bool          // it carried a D-SACK
	ackDSACKEnd  seqnum.Value  // the D-SACK block's end
}

// reoWndRounds is RACK.reo_wnd_persist's start: the reordering window
// stays widened for 16 loss recoveries after the last D-SACK round.
const reoWndRounds = 16

// sentAfter is RFC 8985's RACK_sent_after: t1 later than t2, or at the
// same time and further in sequence space.
func sentAfter(t1 Time, seq1 seqnum.Value, t2 Time, seq2 seqnum.Value) bool {
	return t1 > t2 || (t1 == t2 && seq1.GreaterThan(seq2))
}

// rackDelivered is RFC 8985 section 6.2 steps 1 and 3 for one segment
// newly delivered (cumulatively or selectively acknowledged), taken in
// ascending sequence order.
func (c *Conn) rackDelivered(s *sentSeg) {
	r := &c.rack
	now := c.e.now
	rtt := now.Sub(s.xmit)
	retrans := s.flags&segRetrans != 0
	// Step 3: a never-retransmitted segment delivered below the highest
	// delivered one arrived out of order.
	if !r.fackOK || s.end.GreaterThan(r.fack) {
		r.fack, r.fackOK = s.end, true
	} else if s.end.LessThan(r.fack) && !retrans {
		r.reordSeen = true
	}
	if !retrans {
		if r.ackClean == 0 || s.xmit < r.ackClean {
			r.ackClean = s.xmit
		}
		r.ackCleanLast = max(r.ackCleanLast, s.xmit)
	} else {
		// Step 1: a retransmitted segment's ACK may be for the original.
		// It is taken only when the ACK echoes a timestamp no older than
		// the retransmission, or came later than the retransmission's
		// send time plus the minimum RTT (faster than that is impossible).
		if c.tsOK && c.ackTSecr != 0 && int32(c.ackTSecr-(tsClock(s.xmit)+c.tsOffset)) < 0 {
			return
		}
		if rtt < r.minRTT.get() {
			return
		}
	}
	if s.xmit >= r.ackNewest {
		r.ackNewest, r.ackNewestRTT = s.xmit, rtt
	}
	if sentAfter(s.xmit, s.end, r.xmit, r.endSeq) {
		r.xmit, r.endSeq = s.xmit, s.end
	}
}

// rackNewACK resets the per-ACK accumulators.
func (c *Conn) rackNewACK() {
	r := &c.rack
	r.ackNewest, r.ackNewestRTT, r.ackClean, r.ackCleanLast, r.ackDSACK = 0, 0, 0, 0, false
}

// rackTakeSamples ends step 1 for the ACK: RACK.rtt from the most recently
// sent segment it delivered; the minimum RTT from never-retransmitted
// data. It returns the RTT sample for SRTT (RFC 6298) and whether there is
// one: from the oldest never-retransmitted segment delivered (Karn's
// algorithm, as Linux's seq_rtt), else from a retransmission step 1 took.
func (c *Conn) rackTakeSamples() (time.Duration, bool) {
	r := &c.rack
	now := c.e.now
	if r.ackCleanLast != 0 {
		r.minRTT.update(now, now.Sub(r.ackCleanLast))
	}
	if r.ackNewest != 0 {
		r.rtt = r.ackNewestRTT
	}
	switch {
	case r.ackClean != 0:
		return now.Sub(r.ackClean), true
	case r.ackNewest != 0:
		return r.ackNewestRTT, true
	}
	return 0, false
}

// rackUpdateReoWnd is step 4's D-SACK adaptation, run on every ACK.
func (c *Conn) rackUpdateReoWnd() {
	r := &c.rack
	if r.inDSACKRound && !c.sndUna.LessThan(r.dsackRound) {
		r.inDSACKRound = false
	}
	if !r.inDSACKRound && r.ackDSACK {
		r.inDSACKRound, r.dsackRound = true, c.sndNxt
		if r.reoWndMult < 255 {
			r.reoWndMult++
			c.e.counters.inc(RACKReoWndIncreases)
		}
		r.reoWndPersist = reoWndRounds
	}
}

// rackRecoveryEnded is the rest of step 4: after 16 recoveries without a
// D-SACK round the window returns to its base.
func (c *Conn) rackRecoveryEnded() {
	r := &c.rack
	if r.reoWndPersist > 0 {
		r.reoWndPersist--
	}
	if r.reoWndPersist == 0 {
		r.reoWndMult = 1
	}
}

// reoWnd is RACK.reo_wnd (step 4).
func (c *Conn) reoWnd() time.Duration {
	r := &c.rack
	if !r.reordSeen && (c.inRecovery || c.sackedSegs >= c.reordering) {
		return 0
	}
	w := time.Duration(r.reoWndMult) * r.minRTT.get() / 4
	if c.rtt.valid {
		w = min(w, c.rtt.srtt)
	}
	return w
}

// rackDetectLoss is step 5: it marks lost every segment sent before
// RACK's and out for longer than RACK.rtt + reo_wnd, and returns how long
// until the last of the others would be (0: none waits).
func (c *Conn) rackDetectLoss() time.Duration {
	r := &c.rack
	if r.xmit == 0 || !c.sackOK {
		return 0
	}
	now := c.e.now
	reo := c.reoWnd()
	var wait time.Duration
	for i := 0; i < c.sent.n; i++ {
		s := c.sent.at(i)
		if s.flags&segSACKed != 0 || s.flags&(segLost|segRxtOut) == segLost {
			continue // delivered, or waiting for its retransmission
		}
		if !sentAfter(r.xmit, r.endSeq, s.xmit, s.end) || s.xmit == r.xmit && s.flags&segRetrans != 0 {
			// (A retransmission sent in the same instant as RACK's
			// segment went after it, whatever their sequence order.)
			if s.flags&segRetrans == 0 {
				// Sent once, after RACK's segment: so was everything
				// above it, retransmissions included.
				break
			}
			continue
		}
		if left := s.xmit.Add(r.rtt + reo).Sub(now); left > 0 {
			wait = max(wait, left)
			continue
		}
		c.markLost(s)
		c.e.counters.inc(RACKLosses)
	}
	return wait
}

// rackArmTimer sets the reordering timer (section 6.3) to wait, or disarms it.
func (c *Conn) rackArmTimer(wait time.Duration) {
	if wait <= 0 {
		c.reoAt = Never
		return
	}
	c.reoAt = c.e.now.Add(wait)
	c.rearm()
}

// onReorderTimer: the reordering window of a segment sent before RACK's
// passed with no ACK: judge again (RFC 8985 section 6.3,
// RACK_detect_loss_and_arm_timer) and start recovery for what is lost.
func (c *Conn) onReorderTimer() {
	if c.sndUna == c.sndNxt {
		return
	}
	lost := c.lostOut
	c.rackArmTimer(c.rackDetectLoss())
	if c.lostOut == lost {
		return
	}
	c.e.counters.inc(ReorderTimeouts)
	if !c.inRecovery {
		c.enterRecovery(false)
	}
	c.output()
}
