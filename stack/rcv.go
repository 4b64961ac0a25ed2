package stack

import (
	"time"

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

	// PAWS (RFC 7323 section 5.3 R1): a segment whose timestamp is older
	// than TS.Recent is an old duplicate: ACK and drop. An RST is exempt (Linux).
	// Like Linux (tcp_disordered_ack) we exempt segments that carry nothing
	// but an ACK: a reordered pure ACK is harmless (the ACK and window
	// checks below judge it), and dropping it would stall the sender.
	if c.tsOK && s.opts.HasTimestamps && !s.has(wire.FlagRST) && int32(s.opts.TSVal-c.tsRecent) < 0 &&
		(len(s.payload) > 0 || s.has(wire.FlagSYN|wire.FlagFIN)) {
		e.counters.inc(RxPAWSRejected)
		if len(s.payload) > 0 && s.seq.LessThan(c.rcvNxt) {
			// An old duplicate: report it (Linux's tcp_send_dupack does), so
			// the sender learns its retransmission was spurious.
			c.setDSACK(s.seq, seqnum.Min(s.seq.Add(seqnum.Size(len(s.payload))), c.rcvNxt))
		}
		c.sendACK()
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
			case len(s.payload) > 0 && s.seq.LessThan(c.rcvNxt):
				// Data we have already: a spurious retransmission, or a
				// duplicate. ACK it with a D-SACK (RFC 2883 section 4, as
				// Linux's tcp_send_dupack does), which is how the sender
				// learns to undo its window reduction.
				e.counters.inc(RxDuplicate)
				c.setDSACK(s.seq, seqnum.Min(s.seq.Add(seqnum.Size(len(s.payload))), c.rcvNxt))
				c.sendACK()
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
				e.sendRST(c.key, s.from, s.ack, 0, false)
			} else {
				e.sendRST(c.key, s.from, 0, s.seq.Add(segLen), true)
			}
			e.releaseConn(c, Closed)
			return
		}
		c.resetByPeer()
		return
	}

	// RFC 7323 section 4.3: TS.Recent takes the TSval of an acceptable
	// segment that starts at or before the last ACK we sent (Last.ACK.sent),
	// so that our TSecr echoes what the peer measures its RTT by. Older
	// TSvals never get here (PAWS above).
	if c.tsOK && s.opts.HasTimestamps && s.seq.LessThanEq(c.lastAckSent) && int32(s.opts.TSVal-c.tsRecent) >= 0 {
		c.tsRecent = s.opts.TSVal
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

	// Fifth: the ACK field.
	if !s.has(wire.FlagACK) {
		e.counters.inc(RxNoFlags)
		return
	}
	if c.state == SynReceived {
		if !(c.sndUna.LessThan(s.ack) && s.ack.LessThanEq(c.sndNxt)) {
			// <SEQ=SEG.ACK><CTL=RST>
			e.counters.inc(RxACKUnsent)
			e.sendRST(c.key, s.from, s.ack, 0, false)
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
	if (s.has(wire.FlagFIN) || c.hasOOOFIN && c.oooFIN == c.rcvNxt) && c.state != Closed {
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
		// ACK of data not yet sent: send an ACK and drop the segment (RFC
		// 9293 section 3.10.7.4), rate-limited as a challenge ACK (RFC 5961
		// section 7), in every state — what Linux 6.18 answers too, in
		// ESTABLISHED as elsewhere (a probe sending the same segment to both).
		e.counters.inc(RxACKUnsent)
		c.challengeACK()
		return false
	}
	if s.ack.LessThan(c.sndUna.Sub(seqnum.Size(c.maxSndWnd))) {
		// RFC 5961 section 5.2: too old to be acceptable.
		e.counters.inc(RxACKTooOld)
		c.challengeACK()
		return false
	}
	// What this ACK delivers, for PRR: SND.UNA's advance and the change in
	// SACKed bytes.
	priorUna, priorSACKed := c.sndUna, c.sackedOut
	c.rackNewACK()
	c.rateNewACK()
	lostBefore := c.rate.lostMarked
	c.ackTSecr = 0
	if c.tsOK && s.opts.HasTimestamps {
		c.ackTSecr = s.opts.TSEcr
	}
	// RFC 8985 section 6.2 takes what the ACK newly delivers in sequence
	// order: the cumulatively acknowledged records, then the SACKed ones.
	if s.ack.GreaterThan(c.sndUna) {
		c.ackRecords(s.ack)
	}
	newSACK := false
	if c.sackOK && s.opts.NumSACK > 0 {
		newSACK = c.updateScoreboard(s.opts, s.ack)
	}
	rtt, sampled := c.rackTakeSamples()
	if sampled {
		c.rtt.sample(rtt, e.cfg.MinRTO, e.cfg.MaxRTO)
	}
	c.tlpProcessACK(s) // before ackAdvance arms the next probe
	switch {
	case s.ack.GreaterThan(c.sndUna):
		c.ackAdvance(s, rtt)
	case s.ack == c.sndUna && c.sndNxt != c.sndUna && len(s.payload) == 0 && !s.has(wire.FlagSYN|wire.FlagFIN) &&
		(newSACK || (!c.sackOK && uint32(s.wnd)<<c.sndWScale == c.sndWnd)):
		// A duplicate ACK: RFC 5681 section 2's definition, or with SACK
		// RFC 6675 section 2's (one that SACKs new data).
		c.dupAcks++
	}
	// Window update (section 3.10.7.4, fifth step): only from a segment newer
	// than the one that last set it.
	if c.sndWL1.LessThan(s.seq) || (c.sndWL1 == s.seq && c.sndWL2.LessThanEq(s.ack)) {
		c.sndWnd = uint32(s.wnd) << c.sndWScale
		c.maxSndWnd = max(c.maxSndWnd, c.sndWnd)
		c.sndWL1, c.sndWL2 = s.seq, s.ack
	}
	// Unanswered zero-window probes count only while the window stays shut:
	// a peer that answers every probe with a zero window is still not
	// reading, and is given up after MaxRetries probes as one that never
	// answers (Linux's tcp_probe_timer: an ACK that neither acknowledges
	// data nor opens the window leaves icsk_probes_out alone).
	if c.sndWnd > 0 || s.ack.GreaterThan(priorUna) {
		c.probes = 0
	}
	if c.state == Closed || c.state == TimeWait {
		return false
	}
	// Loss detection: RACK (RFC 8985 section 6.2) with SACK; NewReno's
	// DupThresh duplicate ACKs (RFC 5681 section 3.2, RFC 6582) without.
	if c.sackOK {
		c.rackUpdateReoWnd()
	}
	if c.sndNxt != c.sndUna {
		if c.sackOK {
			c.rackArmTimer(c.rackDetectLoss())
		} else if c.dupAcks == c.reordering && !c.inRecovery {
			c.markNewRenoLost()
		}
		if c.lostOut > 0 && !c.inRecovery {
			c.enterRecovery(false)
		}
	} else {
		c.reoAt = Never
	}
	c.armRecoveryProbe()
	delivered := int(priorUna.Size(c.sndUna)) + c.sackedOut - priorSACKed
	if c.prrActive() {
		// Every ACK in recovery, the one that started it included.
		c.prrUpdate(delivered)
	}
	c.rateGen(max(delivered, 0), lostBefore)
	if sampled {
		c.rate.rs.rtt = rtt
	}
	c.cc.onSample(c, &c.rate.rs)
	return true
}

// ackAdvance moves SND.UNA to the segment's ACK: frees acknowledged bytes,
// takes an RTT sample, feeds congestion control, restarts the
// retransmission timer and runs the state changes our FIN's acknowledgment
// causes.
func (c *Conn) ackAdvance(s *segment, rtt time.Duration) {
	e := c.e
	ack := s.ack
	c.detectDelayedOriginal(s)
	c.sndUna = ack
	dataEnd := c.sndBufSeq.Add(seqnum.Size(c.sndBuf.Len()))
	acked := c.sndBuf.Len()
	if ack.LessThan(dataEnd) {
		acked = int(c.sndBufSeq.Size(ack))
	}
	if acked > 0 {
		c.progressAt = e.now
		c.sndBuf.Discard(acked)
		c.sndBufSeq = c.sndBufSeq.Add(seqnum.Size(acked))
	}
	finAcked := c.finSent && ack == dataEnd.Add(1)
	c.pruneScoreboard()
	c.dupAcks = 0
	if c.synXmit != 0 {
		// The ACK of our SYN (a passive open's third segment): the
		// handshake's RTT, unless the SYN-ACK was resent.
		c.rtt.sample(e.now.Sub(c.synXmit), e.cfg.MinRTO, e.cfg.MaxRTO)
		c.synXmit = 0
	}

	if c.inRecovery {
		if c.rtoRecovery {
			// After a timeout cwnd is not being reduced: it grows by slow
			// start from one segment while the holes are resent (RFC 5681
			// section 3.1; Linux's Loss state, unlike Recovery, raises
			// cwnd). Held at one segment, a lost flight of N segments took
			// N round trips to resend.
			c.cc.onAck(e.now, acked, rtt)
		}
		if !ack.LessThan(c.recoverySeq) {
			c.exitRecovery()
		} else if !c.sackOK {
			// NewReno partial ACK (RFC 6582 section 3.2 step 5): the next
			// unacknowledged segment is lost too; send it at once —
			// whatever the pipe, which without SACK still counts the
			// flight above it and would hold it until the RTO.
			c.markNewRenoLost()
			if i, ok := c.nextLost(); ok {
				c.retransmitSeg(i)
			}
		}
	} else {
		// Data bytes only (RFC 3465 counts bytes of data): the SYN and FIN
		// occupy sequence space but carry nothing, and counting the passive
		// handshake's ACK of our SYN left cwnd one byte past a segment
		// boundary — a 1-byte segment after every initial window.
		c.cc.onAck(e.now, acked, rtt)
	}

	// RFC 6298 section 5.3 and 5.7: restart the timer, undo the backoff.
	c.retries = 0
	if c.rtt.valid {
		c.rto = c.rtt.rto(e.cfg.MinRTO, e.cfg.MaxRTO)
	} else {
		c.rto = e.cfg.InitialRTO
	}
	if c.sndUna == c.sndNxt {
		c.rtoAt = Never
	} else {
		c.rtoAt = e.now.Add(c.rto)
	}
	c.armTLP()
	c.rearm()
	if c.wantWritable && c.sndSpace() >= c.sndLimit()/3 && !c.finQueued {
		c.wantWritable = false
		c.notify(EventWritable)
	}
	if f := c.spliceFrom; f != nil && f.spliceTo == c && f.rcvBuf.Len() == 0 {
		// Room here is window there (Splice): with nothing waiting in f
		// for the application to move, no read will reopen it.
		f.windowUpdateAfterRead()
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

// receiveText is step seven. In-order data goes to the receive buffer and
// commits any out-of-order ranges it now reaches; out-of-order data is
// stored in place (reassembly.go) and reported with SACK; duplicates are
// discarded and reported with D-SACK. Out-of-order and duplicate data, and
// data that fills a hole, are ACKed at once (RFC 5681 section 4.2); in-order
// data by the delayed-ACK rules (scheduleACK).
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
		c.e.sendRST(c.key, c.peer, c.sndNxt, 0, false)
		c.err = ErrAborted
		c.e.releaseConn(c, Closed)
		return
	}
	c.rcvMSSSeen = max(c.rcvMSSSeen, len(s.payload))
	seq, data := s.seq, s.payload
	if seq.LessThan(c.rcvNxt) { // we have the head already
		skip := int(seq.Size(c.rcvNxt))
		if skip >= len(data) {
			e.counters.inc(RxDuplicate)
			c.setDSACK(seq, seq.Add(seqnum.Size(len(data))))
			c.ackNeeded = true
			return
		}
		c.setDSACK(seq, c.rcvNxt)
		seq, data = c.rcvNxt, data[skip:]
	}
	base := c.rcvBuf.Len()
	if seq != c.rcvNxt {
		end := seq.Add(seqnum.Size(len(data)))
		if c.ooo.covers(seq, end) {
			e.counters.inc(RxDuplicate)
			c.setDSACK(seq, end)
			c.ackNeeded = true
			return
		}
		n := c.rcvBuf.writeAt(base+int(c.rcvNxt.Size(seq)), data)
		c.ackNeeded = true
		switch {
		case n == 0:
			e.counters.inc(RxOutOfWindow)
		case !c.ooo.add(seq, seq.Add(seqnum.Size(n))):
			e.counters.inc(RxOOOOverflow)
		default:
			e.counters.inc(RxOutOfOrder)
			if s.has(wire.FlagFIN) && n == len(data) {
				c.oooFIN, c.hasOOOFIN = end, true
			}
		}
		return
	}
	n := c.rcvBuf.writeAt(base, data)
	c.rcvBuf.commit(n)
	c.rcvNxt = c.rcvNxt.Add(seqnum.Size(n))
	filled := false
	for {
		r, ok := c.ooo.popFront(c.rcvNxt)
		if !ok {
			break
		}
		filled = true
		if r.end.GreaterThan(c.rcvNxt) {
			k := c.rcvNxt.Size(r.end)
			c.rcvBuf.commit(int(k))
			c.rcvNxt = r.end
		}
	}
	if n < len(data) {
		// Past the buffer: trimmed (section 3.10.7.4).
		e.counters.inc(RxOutOfWindow)
		s.flags &^= wire.FlagFIN // the FIN lies beyond what we kept
	}
	if n > 0 || filled {
		c.notify(EventReadable)
	}
	c.unackedRcv += n
	if n > 0 {
		c.progressAt = e.now
	}
	if filled || c.ooo.n > 0 {
		c.ackNeeded = true
		if filled {
			// A hole closed: the sender has just been through loss
			// recovery (or reordering) with a reduced window. ACK every
			// segment for a while, as at connection start, so its window
			// regrows on a full ACK clock (measured in the simulator: 1%
			// loss 341 -> 516 Mbit/s, 10% reordering 476 -> 786).
			c.quickAcks = max(c.quickAcks, maxQuickAcks)
		}
	} else {
		c.scheduleACK()
	}
}

// setDSACK remembers a duplicate range for the next ACK's first SACK block.
func (c *Conn) setDSACK(start, end seqnum.Value) {
	if c.sackOK {
		c.dsack, c.hasDSACK = seqRange{start, end}, true
	}
}

// scheduleACK decides when in-order data (or a FIN) is acknowledged:
// at once in quick-ack mode, else for at least every second full-sized
// segment (RFC 5681 section 4.2, RFC 9293 section 3.8.6.3), else when the
// delayed-ACK timer fires.
func (c *Conn) scheduleACK() {
	switch {
	case c.quickAcks > 0:
		c.quickAcks--
		c.ackNow()
	case c.unackedRcv >= 2*c.rcvMSSSeen:
		c.ackNow()
	case c.delackAt == Never:
		c.delackAt = c.e.now.Add(c.e.cfg.DelayedACK)
		c.rearm()
	}
}

// ackNow owes an ACK at once — at the end of the burst when the engine is
// in one (BeginBatch).
func (c *Conn) ackNow() {
	if !c.e.batching {
		c.ackNeeded = true
		return
	}
	if !c.batchACK {
		c.batchACK = true
		c.e.batchACKs = append(c.e.batchACKs, c)
	}
}

// receiveFIN is step eight: a FIN at RCV.NXT (after the text) closes the
// peer's direction.
// A FIN that came ahead of a hole is held (as Linux's out-of-order queue
// holds it) and taken when the hole fills, so the sender need not resend it.
func (c *Conn) receiveFIN(s *segment) {
	at := s.seq.Add(seqnum.Size(len(s.payload)))
	if c.hasOOOFIN && c.oooFIN == c.rcvNxt {
		at, c.hasOOOFIN = c.rcvNxt, false
	}
	if at != c.rcvNxt || c.finRcvd {
		switch {
		case c.finRcvd && at.Add(1) == c.rcvNxt:
			c.ackNeeded = true // a retransmitted FIN: ACK it again
		case !c.finRcvd && len(s.payload) == 0 && at.GreaterThan(c.rcvNxt) && at.LessThanEq(c.rcvAdvEdge):
			c.oooFIN, c.hasOOOFIN = at, true
		}
		return
	}
	c.finRcvd = true
	c.rcvNxt = c.rcvNxt.Add(1)
	switch {
	case c.state == FinWait1 || c.state == FinWait2:
		c.ackNeeded = true
	case !c.ackNeeded && c.delackAt == Never:
		// A passive close: the ACK waits for the delayed-ACK timer even in
		// quick-ack mode (as Linux's tcp_fin enters ping-pong mode), so an
		// application that closes within it — a proxy passing the close
		// to the other leg and back — sends ACK and FIN in one segment
		// (scenario 13).
		c.delackAt = c.e.now.Add(c.e.cfg.DelayedACK)
		c.rearm()
	}
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
// maxTWCollisions bounds the immediate SYN resends of one active open
// (timeWaitCollision); past it the SYN waits for its RTO as RFC 9293 has it.
const maxTWCollisions = 3

// timeWaitCollision answers the bare ACK a SYN draws from a peer that still
// holds the 4-tuple in TIME_WAIT (its ACK of the old connection: our SYN's
// sequence number or timestamp was not newer than the old incarnation's,
// RFC 6191). The RST just sent, at the old connection's RCV.NXT, ends that
// TIME_WAIT on Linux (tcp_rfc1337 is off by default), so the SYN goes out
// again at once rather than after the 1 s SYN RTO RFC 9293 would wait: the
// collision costs one round trip. A departure from RFC 9293 section
// 3.10.7.3, which only discards the segment after the RST.
func (c *Conn) timeWaitCollision() {
	c.twCollisions++
	c.e.counters.inc(SYNTimeWaitCollisions)
	if c.macKnown {
		c.sendSYN()
	}
}

func (c *Conn) synSentInput(s *segment) {
	e := c.e
	ackOK := false
	if s.has(wire.FlagACK) {
		// If SEG.ACK =< ISS or SEG.ACK > SND.NXT: <SEQ=SEG.ACK><CTL=RST>, unless RST.
		if s.ack.LessThanEq(c.iss) || s.ack.GreaterThan(c.sndNxt) {
			if s.has(wire.FlagRST) {
				e.counters.inc(RxRSTIgnored)
				return
			}
			e.counters.inc(RxACKUnsent)
			e.sendRST(c.key, s.from, s.ack, 0, false)
			if s.flags&(wire.FlagSYN|wire.FlagFIN) == 0 && len(s.payload) == 0 && c.twCollisions < maxTWCollisions {
				c.timeWaitCollision()
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
	c.peer, c.macKnown = s.from, true
	if ackOK {
		c.sndUna = s.ack
		c.sndBufSeq = c.iss.Add(1)
		c.rtoAt = Never
		c.retries = 0
		c.rto = e.cfg.InitialRTO
		if c.synXmit != 0 {
			// The handshake's RTT (Karn: not when the SYN was resent), and
			// the RTO from it, as Linux's tcp_ack sets it on the SYN-ACK.
			c.rto = c.rtt.sample(e.now.Sub(c.synXmit), e.cfg.MinRTO, e.cfg.MaxRTO)
			c.synXmit = 0
		}
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
		// number — unless output has data (or our FIN) to carry it. With
		// nothing to send yet in a burst (BeginBatch), the bare ACK waits
		// for the burst's end, so data the application writes meanwhile —
		// a proxy's client request arriving in the same burst — carries
		// it, as Linux delays the third ACK while a write is pending
		// (tcp_rcv_synsent_state_process), here never past the burst.
		if e.batching && c.sndBuf.Len() == 0 && !c.finQueued {
			c.lastAckSent = s.seq // the SYN-ACK is not acknowledged yet
			c.ackNow()
			return
		}
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
		c.ooo.reset()
		c.fail(ErrReset, EventReset)
	default: // CLOSING, LAST_ACK
		c.fail(ErrReset, EventReset)
	}
}
