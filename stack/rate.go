package stack

import (
	"time"

	"github.com/xdproxy/xdproxy/stack/seqnum"
)

// Delivery rate estimation (draft-cheng-iccrg-delivery-rate-estimation, as
// Linux's tcp_rate.c runs it), the input of BBR (bbr.go). Every segment
// sent carries a snapshot of the connection's delivery state (how many
// bytes had been delivered, when, and when the current sending interval
// began); when the peer acknowledges or SACKs it, the snapshot of the most
// recently sent segment among those the ACK delivered gives a sample:
// the bytes delivered since that segment went, over the longer of the
// sending and the acknowledging intervals — the rate the path delivered,
// not the rate the ACKs happened to arrive at.
//
// A sample taken while the sender had nothing more to send (the
// application did not keep the pipe full) is marked application-limited:
// it says the path can do at least that much, never that it can do less.

// rateState is a connection's delivery state (Linux's tp->delivered,
// delivered_mstamp, first_tx_mstamp, app_limited).
type rateState struct {
	delivered   uint64 // bytes delivered (cumulatively acknowledged or SACKed) so far
	deliveredAt Time   // when delivered last grew
	firstSentAt Time   // send time of the most recently delivered segment: the current interval's start
	// appLimited, when not 0, is the delivered count past which samples
	// stop being application-limited (the bytes in flight when the
	// sender ran out of data).
	appLimited uint64
	lostMarked uint64 // bytes ever deemed lost (each segment once per marking)

	rs rateSample // the sample of the ACK being processed
}

// rateSample is what one ACK says about the delivery rate.
type rateSample struct {
	// From the most recently sent segment the ACK delivered.
	priorDelivered uint64 // delivered when it was sent
	priorAt        Time   // deliveredAt when it was sent
	lastXmit       Time   // its send time
	lastEnd        uint32 // its end sequence number, to order segments sent at the same time
	appLimited     bool   // it was sent application-limited
	retrans        bool   // it was a retransmission
	taken          bool   // a segment delivered by this ACK set the fields above

	// The sample (rateGen).
	delivered int           // bytes delivered over interval; < 0: no sample
	interval  time.Duration // the longer of the send and ACK intervals
	acked     int           // bytes this ACK newly delivered
	losses    int           // bytes this ACK's processing newly deemed lost
	rtt       time.Duration // the ACK's RTT sample; < 0: none
	// priorInFlight is the pipe before the ACK.
	priorInFlight int
}

// bw is the sample's delivery rate in bytes per second (0: no sample).
func (rs *rateSample) bw() float64 {
	if rs.delivered < 0 || rs.interval <= 0 {
		return 0
	}
	return float64(rs.delivered) / rs.interval.Seconds()
}

// rateOnSend stamps a segment about to be (re)sent with the delivery state
// (Linux's tcp_rate_skb_sent). With nothing in flight a new interval
// starts now: an idle period is no part of any sample.
func (c *Conn) rateOnSend(s *sentSeg) {
	r := &c.rate
	now := c.e.now
	if c.sndNxt == c.sndUna {
		r.firstSentAt, r.deliveredAt = now, now
	}
	s.txDelivered, s.txDeliveredAt, s.txFirstSent = r.delivered, r.deliveredAt, r.firstSentAt
	s.flags &^= segAppLimited | segRateTaken
	if r.appLimited != 0 {
		s.flags |= segAppLimited
	}
}

// rateDelivered takes a segment the ACK being processed delivers for the
// first time (Linux's tcp_rate_skb_delivered): the most recently sent such
// segment defines the sample. A SACKed segment is not taken again when the
// cumulative ACK passes it.
func (c *Conn) rateDelivered(s *sentSeg) {
	if s.flags&segRateTaken != 0 {
		return
	}
	s.flags |= segRateTaken
	r := &c.rate
	rs := &r.rs
	if !rs.taken || s.xmit > rs.lastXmit || (s.xmit == rs.lastXmit && int32(uint32(s.end)-rs.lastEnd) > 0) {
		rs.taken = true
		rs.priorDelivered, rs.priorAt = s.txDelivered, s.txDeliveredAt
		rs.appLimited, rs.retrans = s.flags&segAppLimited != 0, s.flags&segRetrans != 0
		rs.lastXmit, rs.lastEnd = s.xmit, uint32(s.end)
		// The interval this segment's flight was sent over: from the
		// send of the segment delivered just before it went, to its own.
		r.firstSentAt = s.xmit
		rs.interval = s.xmit.Sub(s.txFirstSent)
	}
}

// rateNewACK starts the sample of an ACK.
func (c *Conn) rateNewACK() {
	c.rate.rs = rateSample{delivered: -1, rtt: -1, priorInFlight: c.pipe()}
}

// rateGen ends the sample of an ACK that newly delivered acked bytes
// (Linux's tcp_rate_gen).
func (c *Conn) rateGen(acked int, lostBefore uint64) {
	r := &c.rate
	rs := &r.rs
	now := c.e.now
	if acked > 0 {
		r.delivered += uint64(acked)
		r.deliveredAt = now
	}
	if r.appLimited != 0 && r.delivered > r.appLimited {
		r.appLimited = 0
	}
	rs.acked = acked
	rs.losses = int(r.lostMarked - lostBefore)
	if !rs.taken {
		rs.delivered, rs.interval = -1, -1
		return
	}
	rs.delivered = int(r.delivered - rs.priorDelivered)
	// The sample spans the longer of the send and ACK intervals: a
	// compressed burst of ACKs does not inflate it, nor a burst of sends.
	if ackIv := now.Sub(rs.priorAt); ackIv > rs.interval {
		rs.interval = ackIv
	}
	if minRTT := c.rack.minRTT.get(); c.rack.minRTT.ok && rs.interval < minRTT {
		// Shorter than a round trip cannot be a delivery rate (an ACK
		// for a retransmission's original, a stretch ACK).
		rs.delivered, rs.interval = -1, -1
	}
}

// rateCheckAppLimited marks the connection application-limited when the
// application's next write finds the pipe not full and nothing waiting to
// be sent or resent (Linux's tcp_rate_check_app_limited).
func (c *Conn) rateCheckAppLimited() {
	if dataEnd := c.sndBufSeq.Add(seqnum.Size(c.sndBuf.Len())); c.sndNxt.LessThan(dataEnd) && int(c.sndNxt.Size(dataEnd)) >= c.effectiveMSS() {
		return
	}
	pipe := c.pipe()
	if pipe >= c.cc.cwnd() || c.lostOut > 0 {
		return
	}
	c.rate.appLimited = max(c.rate.delivered+uint64(pipe), 1)
}
