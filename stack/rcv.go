package stack

import (
	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// input processes a segment for c, following RFC 9293 section 3.10.7
// ("SEGMENT ARRIVES") step by step, with the RFC 5961 mitigations.
func (c *Conn) input(s *segment) {
	c.lastRcvAt = c.e.now
	c.kaProbes = 0
	if c.state == SynSent {
		c.synSentInput(s)
		return
	}
	e := c.e

	// A retransmitted SYN in SYN_RCVD is answered with the SYN-ACK again
	// (Linux's tcp_check_req) rather than the bare ACK of the sequence check.
	if c.state == SynReceived && s.flags&(wire.FlagSYN|wire.FlagACK|wire.FlagRST) == wire.FlagSYN && s.seq == c.irs {
		c.sendSYN()
		return
	}

	// Simultaneous open (RFC 9293 section 3.5, figure 8): in SYN_RCVD after
	// our own SYN, the peer's SYN-ACK acknowledging it completes the
	// handshake. RFC 9293's sequence test would answer it with an ACK and
	// stay; Linux (tcp_validate_incoming, "goto pass") takes it and, since
	// 6.x, sends nothing. We match Linux.
	if c.state == SynReceived && c.listener == nil && s.seq == c.irs && s.ack == c.sndNxt && len(s.payload) == 0 &&
		s.flags&(wire.FlagSYN|wire.FlagACK|wire.FlagRST|wire.FlagFIN) == wire.FlagSYN|wire.FlagACK {
		maxWnd := c.maxSndWnd
		if c.synReceivedToEstablished(s) && c.processACK(s) {
			// The window of a SYN is never scaled (RFC 7323 section 2.2).
			c.sndWnd = uint32(s.wnd)
			c.maxSndWnd = max(maxWnd, c.sndWnd)
			c.output()
		}
		return
	}

	// First: the sequence number (section 3.10.7.4, the four-case table).
	wnd := seqnum.Size(0)
	if c.rcvAdvEdge.GreaterThan(c.rcvNxt) {
		wnd = c.rcvNxt.Size(c.rcvAdvEdge)
	}
	segLen := s.seqLen()
	if !seqnum.Overlap(s.seq, segLen, c.rcvNxt, wnd) {
		// RFC 9293: "If the RCV.WND is zero, no segments will be acceptable,
		// but special allowance should be made to accept valid ACKs, URGs,
		// and RSTs": a segment at exactly RCV.NXT goes on, its data trimmed.
		if !(wnd == 0 && s.seq == c.rcvNxt) {
			switch {
			case s.has(wire.FlagRST) && c.finRcvd && s.seq == c.rcvNxt-1:
				// Linux (tcp_reset_check) also takes an RST carrying the
				// sequence number of the peer's FIN in CLOSE_WAIT, CLOSING
				// and LAST_ACK: some stacks send one right behind their FIN.
				c.resetByPeer()
			case s.has(wire.FlagRST):
				e.counters.inc(RxRSTIgnored)
			case s.has(wire.FlagSYN) && c.state.synchronized():
				// A SYN is challenged (rate limited) whatever its sequence
				// number: RFC 5961 section 4.2, Linux's syn_challenge.
				e.counters.inc(RxSYNInWindow)
				c.challengeACK()
			default:
				e.counters.inc(RxOutOfWindow)
				c.sendACK()
			}
			return
		}
	}

	// A passive SYN_RCVD entry is Linux's request socket (tcp_check_req),
	// which any in-window RST or SYN ends: RFC 5961's exact match and
	// challenge ACK are for full connections. An in-window SYN other than
	// the retransmission handled above is answered with an RST (RFC 9293
	// just returns the entry to LISTEN).
	if c.state == SynReceived && c.listener != nil && s.flags&(wire.FlagRST|wire.FlagSYN) != 0 {
		if !s.has(wire.FlagRST) {
			e.counters.inc(RxSYNInWindow)
			if s.has(wire.FlagACK) {
				e.sendRST(c.key, s.srcMAC, s.ack, 0, false)
			} else {
				e.sendRST(c.key, s.srcMAC, 0, s.seq.Add(segLen), true)
			}
			e.releaseConn(c, Closed)
			return
		}
		c.resetByPeer()
		return
	}

	// Second: RST (RFC 5961 section 3.2). Only an exact RCV.NXT match resets;
	// anything else in the window gets a challenge ACK.
	if s.has(wire.FlagRST) {
		if s.seq != c.rcvNxt {
			c.challengeACK()
			return
		}
		c.resetByPeer()
		return
	}

	// Fourth: SYN on a synchronized connection (RFC 5961 section 4.2):
	// challenge ACK, whatever its sequence number.
	if s.has(wire.FlagSYN) {
		e.counters.inc(RxSYNInWindow)
		c.challengeACK()
		return
	}

	// RFC 7323 section 4.3: TS.Recent takes the TSval of an acceptable
	// segment that is not older and starts no later than RCV.NXT (our last
	// ACK), so that our TSecr echoes what the peer measures its RTT by.
	if c.tsOK && s.opts.HasTimestamps && s.seq.LessThanEq(c.rcvNxt) && int32(s.opts.TSVal-c.tsRecent) >= 0 {
		c.tsRecent = s.opts.TSVal
	}

	// Fifth: the ACK field.
	if !s.has(wire.FlagACK) {
		e.counters.inc(RxNoFlags)
		return
	}
	if c.state == SynReceived {
		if !(c.sndUna.LessThan(s.ack) && s.ack.LessThanEq(c.sndNxt)) {
			// <SEQ=SEG.ACK><CTL=RST>
			e.counters.inc(RxACKUnsent)
			e.sendRST(c.key, s.srcMAC, s.ack, 0, false)
			return
		}
		if !c.synReceivedToEstablished(s) {
			return
		}
	}
	if !c.processACK(s) {
		return
	}

	// Seventh: the segment text.
	c.receiveText(s)

	// Eighth: FIN.
	if s.has(wire.FlagFIN) && c.state != Closed {
		c.receiveFIN(s)
	}
	if c.state != Closed && c.state != TimeWait {
		c.output()
	}
}

// synReceivedToEstablished completes a handshake (SYN_RCVD → ESTABLISHED).
// A passive connection moves to its listener's accept queue; when that is
// full the ACK is dropped and the entry stays in SYN_RCVD (Linux's
// tcp_abort_on_overflow=0).
func (c *Conn) synReceivedToEstablished(s *segment) bool {
	e := c.e
	if l := c.listener; l != nil {
		if l.acceptQueueFull() {
			e.counters.inc(AcceptQueueOverflow)
			return false
		}
		l.synQLen--
		c.setState(Established)
		e.counters.inc(PassiveOpens)
		l.enqueue(c)
	} else {
		// Simultaneous open (section 3.5, figure 8).
		c.setState(Established)
		e.counters.inc(ActiveOpens)
		c.notify(EventConnected)
	}
	c.retries = 0
	c.rto = e.cfg.InitialRTO
	c.sndWnd = uint32(s.wnd) << c.sndWScale
	c.maxSndWnd = max(c.maxSndWnd, c.sndWnd)
	c.sndWL1, c.sndWL2 = s.seq, s.ack
	c.armKeepalive()
	if c.finQueued {
		c.setState(FinWait1)
	}
	return true
}

// processACK is step five for the synchronized states. It returns false when
// the segment is to be dropped.
func (c *Conn) processACK(s *segment) bool {
	e := c.e
	if s.ack.GreaterThan(c.sndNxt) {
		// ACK of data not yet sent. RFC 9293 says send an ACK and drop;
		// Linux drops silently in ESTABLISHED and answers with a challenge
		// ACK in the other states (tcp_ack returning ACK_UNSENT_DATA).
		e.counters.inc(RxACKUnsent)
		if c.state != Established {
			c.challengeACK()
		}
		return false
	}
	if s.ack.LessThan(c.sndUna.Sub(seqnum.Size(c.maxSndWnd))) {
		// RFC 5961 section 5.2: too old to be acceptable.
		e.counters.inc(RxACKTooOld)
		c.challengeACK()
		return false
	}
	if s.ack.GreaterThan(c.sndUna) {
		c.ackAdvance(s.ack)
	}
	// Window update (section 3.10.7.4, fifth step): only from a segment newer
	// than the one that last set it.
	if c.sndWL1.LessThan(s.seq) || (c.sndWL1 == s.seq && c.sndWL2.LessThanEq(s.ack)) {
		c.sndWnd = uint32(s.wnd) << c.sndWScale
		c.maxSndWnd = max(c.maxSndWnd, c.sndWnd)
		c.sndWL1, c.sndWL2 = s.seq, s.ack
	}
	if c.state == Closed || c.state == TimeWait {
		return false
	}
	return true
}

// ackAdvance moves SND.UNA to ack, frees acknowledged bytes and runs the
// state changes our FIN's acknowledgment causes.
func (c *Conn) ackAdvance(ack seqnum.Value) {
	e := c.e
	c.sndUna = ack
	dataEnd := c.sndBufSeq.Add(seqnum.Size(c.sndBuf.Len()))
	acked := c.sndBuf.Len()
	if ack.LessThan(dataEnd) {
		acked = int(c.sndBufSeq.Size(ack))
	}
	if acked > 0 {
		c.sndBuf.Discard(acked)
		c.sndBufSeq = c.sndBufSeq.Add(seqnum.Size(acked))
	}
	finAcked := c.finSent && ack == dataEnd.Add(1)
	c.retries = 0
	c.rto = max(e.cfg.MinRTO, min(c.rto, e.cfg.InitialRTO))
	if c.sndUna == c.sndNxt {
		c.rtoAt = Never
	} else {
		c.rtoAt = e.now.Add(c.rto)
	}
	c.rearm()
	if c.wantWritable && c.sndBuf.Free() >= c.sndBuf.max/3 && !c.finQueued {
		c.wantWritable = false
		c.notify(EventWritable)
	}
	if !finAcked {
		return
	}
	switch c.state {
	case FinWait1:
		c.setState(FinWait2)
		c.armOrphanTimer()
	case Closing:
		c.enterTimeWait()
	case LastAck:
		c.e.releaseConn(c, Closed)
	}
}

// receiveText is step seven: in-order data goes to the receive buffer.
// Part 2 adds out-of-order reassembly, delayed ACKs and SACK here.
func (c *Conn) receiveText(s *segment) {
	e := c.e
	if len(s.payload) == 0 {
		return
	}
	switch c.state {
	case Established, FinWait1, FinWait2:
	default:
		// CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT: the peer's FIN came
		// already; RFC 9293 says this "should not occur": ignore it.
		e.counters.inc(RxDataAfterFIN)
		return
	}
	if c.appClosed {
		// Linux resets an orphaned connection that still receives data
		// (tcp_rcv_state_process: "data after close").
		e.counters.inc(RxDataAfterClose)
		c.e.sendRST(c.key, c.peerMAC, c.sndNxt, 0, false)
		c.err = ErrAborted
		c.e.releaseConn(c, Closed)
		return
	}
	seq, data := s.seq, s.payload
	if seq.LessThan(c.rcvNxt) { // already have the head
		skip := int(seq.Size(c.rcvNxt))
		if skip >= len(data) {
			c.ackNeeded = true
			return
		}
		seq, data = c.rcvNxt, data[skip:]
	}
	if seq != c.rcvNxt {
		// Out of order: part 1 drops it and asks again with a duplicate ACK.
		e.counters.inc(RxOutOfOrder)
		c.ackNeeded = true
		return
	}
	n := c.rcvBuf.Write(data)
	c.rcvNxt = c.rcvNxt.Add(seqnum.Size(n))
	c.ackNeeded = true
	if n < len(data) {
		// Past the window we advertised: trimmed (section 3.10.7.4).
		e.counters.inc(RxOutOfWindow)
		if s.has(wire.FlagFIN) {
			s.flags &^= wire.FlagFIN // the FIN lies beyond what we kept
		}
	}
	if n > 0 {
		c.notify(EventReadable)
	}
}

// receiveFIN is step eight: a FIN at RCV.NXT (after the text) closes the
// peer's direction.
func (c *Conn) receiveFIN(s *segment) {
	if s.seq.Add(seqnum.Size(len(s.payload))) != c.rcvNxt || c.finRcvd {
		if c.finRcvd && s.seq.Add(seqnum.Size(len(s.payload))).Add(1) == c.rcvNxt {
			c.ackNeeded = true // a retransmitted FIN: ACK it again
		}
		return
	}
	c.finRcvd = true
	c.rcvNxt = c.rcvNxt.Add(1)
	c.ackNeeded = true
	c.notify(EventPeerClosed | EventReadable)
	switch c.state {
	case SynReceived, Established:
		c.setState(CloseWait)
	case FinWait1:
		// Our FIN not yet acknowledged (else processACK moved us to FIN_WAIT_2):
		// simultaneous close.
		c.setState(Closing)
	case FinWait2:
		c.sendACK()
		c.enterTimeWait()
	}
}

// synSentInput is RFC 9293 section 3.10.7.3 (SYN-SENT STATE).
func (c *Conn) synSentInput(s *segment) {
	e := c.e
	ackOK := false
	if s.has(wire.FlagACK) {
		// If SEG.ACK =< ISS or SEG.ACK > SND.NXT: <SEQ=SEG.ACK><CTL=RST>, unless RST.
		if s.ack.LessThanEq(c.iss) || s.ack.GreaterThan(c.sndNxt) {
			if !s.has(wire.FlagRST) {
				e.counters.inc(RxACKUnsent)
				e.sendRST(c.key, s.srcMAC, s.ack, 0, false)
			} else {
				e.counters.inc(RxRSTIgnored)
			}
			return
		}
		ackOK = true
	}
	if s.has(wire.FlagRST) {
		// RFC 5961 section 3.2: in SYN-SENT an RST is acceptable if its ACK acknowledges our SYN.
		if ackOK {
			e.counters.inc(ConnectRefused)
			c.fail(ErrRefused, EventConnectFailed)
		} else {
			e.counters.inc(RxRSTIgnored)
		}
		return
	}
	if !s.has(wire.FlagSYN) {
		e.counters.inc(RxNoFlags)
		return
	}
	c.negotiate(s)
	c.peerMAC, c.macKnown = s.srcMAC, true
	if ackOK {
		c.sndUna = s.ack
		c.sndBufSeq = c.iss.Add(1)
		c.rtoAt = Never
		c.retries = 0
		c.rto = e.cfg.InitialRTO
		// In SYN-ACK the window is not scaled either; later segments are.
		c.sndWL1, c.sndWL2 = s.seq, s.ack
		c.setState(Established)
		c.rearm()
		e.counters.inc(ActiveOpens)
		c.notify(EventConnected)
		c.armKeepalive()
		if c.finQueued {
			c.setState(FinWait1)
		}
		// The third segment: an ACK with no data, consuming no sequence
		// number — unless output has data (or our FIN) to carry it.
		c.ackNeeded = true
		c.output()
		return
	}
	// Simultaneous open: SYN without ACK → SYN_RCVD, send SYN-ACK with the same ISS.
	c.setState(SynReceived)
	c.sendSYN()
}

// resetByPeer handles an acceptable RST (section 3.10.7.4, second step).
func (c *Conn) resetByPeer() {
	e := c.e
	e.counters.inc(RxResets)
	switch c.state {
	case SynReceived:
		if c.listener != nil {
			// Passive open: the half-open entry goes away (RFC 9293: "return
			// to LISTEN"), the listener is untouched.
			e.releaseConn(c, Closed)
			return
		}
		e.counters.inc(ConnectRefused)
		c.fail(ErrRefused, EventConnectFailed)
	case Established, FinWait1, FinWait2, CloseWait:
		if c.state == Established || c.state == CloseWait {
			// As Linux's TCP_MIB_ESTABRESETS: from ESTABLISHED or CLOSE_WAIT only.
			e.counters.inc(EstablishedResets)
		}
		c.rcvBuf.reset() // RFC 9293: queued data is flushed on reset
		c.fail(ErrReset, EventReset)
	default: // CLOSING, LAST_ACK
		c.fail(ErrReset, EventReset)
	}
}
