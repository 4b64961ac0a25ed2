package stack

import (
	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// minSndMSS is the smallest MSS we send with, whatever the peer asks
// (Linux's net.ipv4.tcp_min_snd_mss default).
const minSndMSS = 48

// negotiate takes the peer's SYN options (RFC 9293 section 3.7.1 MSS,
// RFC 7323 window scale and timestamps, RFC 2018 SACK-permitted). An option
// is in force only when both sides sent it; our SYN-ACK echoes only what the
// SYN offered.
func (c *Conn) negotiate(s *segment) {
	e := c.e
	c.irs = s.seq
	c.rcvNxt = s.seq.Add(1)
	c.rcvAdvEdge = c.rcvNxt // nothing advertised relative to RCV.NXT yet
	peerMSS := s.opts.MSS
	if peerMSS == 0 {
		peerMSS = defaultMSS(c.key)
	}
	// Linux's tcp_min_snd_mss: a floor under the peer's MSS, without which
	// an MSS below the 12 bytes of timestamps leaves no room for data.
	c.sndMSS = max(int(min(peerMSS, c.ourMSS())), minSndMSS)
	if s.opts.HasWScale {
		c.wsOK = true
		c.sndWScale = min(s.opts.WScale, 14) // RFC 7323 section 2.3: treat larger as 14
		c.rcvWScale = e.rcvWScale
	} else {
		c.wsOK, c.sndWScale, c.rcvWScale = false, 0, 0
	}
	c.sackOK = s.opts.SACKPermitted
	c.tsOK = s.opts.HasTimestamps
	if c.tsOK {
		c.tsRecent = s.opts.TSVal
	}
	// The window in a SYN is never scaled (RFC 7323 section 2.2).
	c.sndWnd = uint32(s.wnd)
	c.maxSndWnd = c.sndWnd
	c.sndWL1, c.sndWL2 = s.seq, s.ack
	c.cc.setMSS(c.effectiveMSS())
}

// synOptions are the options of our SYN or SYN-ACK.
func (c *Conn) synOptions(o *wire.TCPOptions) {
	e := c.e
	*o = wire.TCPOptions{MSS: c.ourMSS()}
	active := c.state == SynSent
	if active || c.wsOK {
		o.HasWScale, o.WScale = true, e.rcvWScale
	}
	o.SACKPermitted = active || c.sackOK
	if active || c.tsOK {
		o.HasTimestamps = true
		o.TSVal = c.tsNow()
		o.TSEcr = c.tsRecent
	}
}

func (c *Conn) tsNow() uint32 { return tsClock(c.e.now) + c.tsOffset }

// sendSYN sends our SYN (SYN_SENT) or SYN-ACK (SYN_RCVD) and arms the
// retransmission timer.
func (c *Conn) sendSYN() {
	var o wire.TCPOptions
	c.synOptions(&o)
	flags := uint8(wire.FlagSYN)
	ack := seqnum.Value(0)
	if c.state == SynReceived {
		flags |= wire.FlagACK
		ack = c.rcvNxt
	}
	// The window in a SYN is never scaled.
	wnd := uint16(min(c.rcvSpace(), 0xffff))
	c.rcvAdvEdge = c.rcvNxt.Add(seqnum.Size(wnd))
	c.e.sendSegment(c.key, c.peer, c.iss, ack, flags, wnd, &o, nil, nil)
	// Its RTT is measured unless it is a retransmission (Karn).
	c.synXmit = 0
	if c.retries == 0 {
		c.synXmit = c.e.now
	}
	c.lastAckSent = c.rcvNxt
	c.sndNxt = c.iss.Add(1)
	c.armRTO()
}

// rcvWindow is the window to advertise: the free receive buffer (rcvSpace:
// pressure's cap and a splice partner's room included), scaled. The
// right edge never moves left of what was already advertised (RFC 9293
// section 3.8.6.2.2 forbids shrinking the window), and — receiver silly
// window avoidance, same section — it moves right only in steps of at least
// min(buffer/2, MSS).
func (c *Conn) rcvWindow() uint16 {
	free := uint32(c.rcvSpace())
	adv := uint32(0)
	if c.rcvAdvEdge.GreaterThan(c.rcvNxt) {
		adv = uint32(c.rcvNxt.Size(c.rcvAdvEdge))
	}
	if free <= adv || free-adv < uint32(min(c.rcvBuf.max/2, int(c.ourMSS()))) {
		free = adv
	}
	w := free >> c.rcvWScale
	if w > 0xffff {
		w = 0xffff
	}
	if edge := c.rcvNxt.Add(seqnum.Size(w << c.rcvWScale)); edge.GreaterThan(c.rcvAdvEdge) {
		c.rcvAdvEdge = edge
	}
	return uint16(w)
}

// options fills the options of a non-SYN segment: timestamps (RFC 7323) and
// SACK blocks (RFC 2018), a D-SACK block first when one is owed (RFC 2883) —
// as many blocks as fit in room, the bytes of options the segment may carry
// (the peer's MSS counts options and payload together: RFC 9293 section
// 3.7.1, RFC 6691), so that no segment exceeds the path's MTU.
func (c *Conn) options(o *wire.TCPOptions, room int) *wire.TCPOptions {
	*o = wire.TCPOptions{}
	if c.tsOK {
		o.HasTimestamps, o.TSVal, o.TSEcr = true, c.tsNow(), c.tsRecent
		room -= wire.LenTimestampsOption
	}
	if c.sackOK && (c.ooo.n > 0 || c.hasDSACK) && room >= wire.SACKOptionLen(1) {
		var d *seqRange
		if c.hasDSACK {
			d = &c.dsack
		}
		c.ooo.sackBlocks(o, d)
		for o.NumSACK > 0 && wire.SACKOptionLen(int(o.NumSACK)) > room {
			o.NumSACK--
		}
	}
	if !o.HasTimestamps && o.NumSACK == 0 {
		return nil
	}
	return o
}

// sendACK sends a bare ACK at SND.NXT.
func (c *Conn) sendACK() {
	c.sendAt(c.sndNxt, wire.FlagACK, 0, 0)
}

// sendAt sends the segment at seq carrying n bytes of the send buffer from
// offset off, with flags (ACK is always set on a synchronized connection).
// Every such segment acknowledges RCV.NXT, so it also settles any ACK owed.
func (c *Conn) sendAt(seq seqnum.Value, flags uint8, off, n int) {
	var o wire.TCPOptions
	p1, p2 := c.sndBuf.peek(off, n)
	flags |= wire.FlagACK
	if c.e.sendSegment(c.key, c.peer, seq, c.rcvNxt, flags, c.rcvWindow(), c.options(&o, c.sndMSS-n), p1, p2) {
		c.ackNeeded = false
		c.hasDSACK = false
		c.unackedRcv = 0
		c.delackAt = Never
		c.lastAckSent = c.rcvNxt
	}
}

// transmit sends n bytes from seq, and our FIN after them when fin.
func (c *Conn) transmit(seq seqnum.Value, n int, fin bool) {
	if c.prrActive() {
		c.prrOut += n
		c.prrBudget = max(0, c.prrBudget-n)
	}
	flags := uint8(0)
	if fin {
		flags |= wire.FlagFIN
	}
	if n > 0 && seq.Add(seqnum.Size(n)) == c.sndBufSeq.Add(seqnum.Size(c.sndBuf.Len())) {
		flags |= wire.FlagPSH // the last of the buffered data, as Linux marks the end of a write
	}
	c.sendAt(seq, flags, int(c.sndBufSeq.Size(seq)), n)
	c.paceSent(n)
}

// challengeACK sends an RFC 5961 challenge ACK, at most ChallengeACKBurst per
// ChallengeACKWindow for this connection (section 7).
func (c *Conn) challengeACK() {
	e := c.e
	if e.now.Sub(c.challengeWindowAt) >= e.cfg.ChallengeACKWindow || c.challengeCount == 0 {
		c.challengeWindowAt, c.challengeCount = e.now, 0
	}
	if c.challengeCount >= e.cfg.ChallengeACKBurst {
		e.counters.inc(ChallengeACKsLimited)
		return
	}
	c.challengeCount++
	e.counters.inc(ChallengeACKs)
	c.sendACK()
}

// effectiveMSS is the payload of a full-sized segment: the MSS less the
// options every segment carries (RFC 9293 section 3.7.1).
func (c *Conn) effectiveMSS() int {
	if c.tsOK {
		return c.sndMSS - wire.LenTimestampsOption
	}
	return c.sndMSS
}

// newDataMSS is the payload of a full-sized segment of new data now: the
// effective MSS less the room for the SACK blocks this side owes the peer
// while it holds out-of-order data (as Linux's tcp_current_mss), so they
// ride on our data too. Retransmissions keep their size and carry what
// blocks fit beside it (sendAt).
func (c *Conn) newDataMSS() int {
	mss := c.effectiveMSS()
	if !c.sackOK || (c.ooo.n == 0 && !c.hasDSACK) {
		return mss
	}
	blocks := c.ooo.n
	if c.hasDSACK {
		blocks++
	}
	blocks = min(blocks, wire.MaxSACKBlocks(c.tsOK))
	return mss - wire.SACKOptionLen(blocks)
}

// output sends what may be sent now: in loss recovery first the lost
// segments (RFC 6675 NextSeg rule 1), then new data within
// min(cwnd - pipe, the peer's window), then our FIN once every byte before
// it is out; finally a bare ACK if one is owed and nothing else carried it.
// With nothing in flight and the window too small to send, it arms the
// persist timer.
func (c *Conn) output() {
	switch c.state {
	case Established, CloseWait, FinWait1, Closing, LastAck:
	default:
		if c.ackNeeded && c.state.synchronized() {
			c.sendACK()
		}
		return
	}
	e := c.e
	mss := c.newDataMSS()
	dataEnd := c.sndBufSeq.Add(seqnum.Size(c.sndBuf.Len()))
	blocked := false
	for {
		if c.paceBlocked() {
			break
		}
		cwnd, pipe := c.cc.cwnd(), c.pipe()
		room := mss // what a retransmission needs under cwnd
		if c.prrActive() {
			// In fast recovery PRR says how much may go: express it as
			// the room left under cwnd, of which any will do.
			cwnd, room = pipe+c.prrBudget, 1
		}
		if c.inRecovery && cwnd-pipe >= room {
			if i, ok := c.nextLost(); ok {
				c.retransmitSeg(i)
				continue
			}
		}
		unsent := 0
		if !c.finSent && c.sndNxt.LessThan(dataEnd) {
			unsent = int(c.sndNxt.Size(dataEnd))
		}
		usable := 0
		if wndEnd := c.sndUna.Add(seqnum.Size(c.sndWnd)); wndEnd.GreaterThan(c.sndNxt) {
			usable = int(c.sndNxt.Size(wndEnd))
		}
		if !c.inRecovery {
			// Limited transmit (RFC 3042): each of the first two duplicate
			// ACKs lets one new segment out, so that a small window still
			// produces the duplicate ACKs fast retransmit needs.
			cwnd += min(c.dupAcks, 2) * mss
		}
		budget := max(cwnd-pipe, 0)
		if c.prrActive() && budget > 0 {
			// PRR's budget is a count of bytes the ACKs delivered; a
			// segment goes once any is left (Linux counts it in packets).
			budget = mss
		}
		n := min(unsent, usable, mss, budget)
		fin := c.finQueued && !c.finSent && n == unsent && usable > n
		if n < mss && n < unsent {
			// Not limited by the data. Sender silly window avoidance (RFC 9293
			// section 3.8.6.2.1): a short segment only when the peer's window
			// is all it will ever offer (at least half its largest); a short
			// congestion budget waits for ACKs. (A peer whose whole window is
			// below our MSS was never sent a byte, only zero-window probes.)
			if n == 0 || n >= budget || usable < int(c.maxSndWnd/2) {
				blocked = n < budget || n == 0
				break
			}
		}
		if n > 0 && n < mss && n == unsent && !fin && e.cfg.Nagle && c.sndNxt != c.sndUna {
			break // Nagle (RFC 9293 section 3.7.4): one small segment in flight at a time
		}
		if n == 0 && !fin {
			blocked = unsent > 0 || (c.finQueued && !c.finSent)
			break
		}
		c.sendNew(n, fin)
	}
	switch {
	case blocked && c.sndNxt == c.sndUna && c.persistAt == Never:
		c.armPersist()
	case !blocked || c.sndNxt != c.sndUna:
		c.persistAt = Never
	}
	if c.ackNeeded {
		c.sendACK()
	}
}

// sendNew sends n new bytes from SND.NXT (and our FIN after them when fin),
// records the segment with its send time, and arms the RTO and the tail
// loss probe.
func (c *Conn) sendNew(n int, fin bool) {
	rec := sentSeg{start: c.sndNxt, xmit: c.e.now}
	if c.sndNxt == c.sndUna {
		c.cc.onSendIdle(c)
	}
	c.rateOnSend(&rec)
	c.transmit(c.sndNxt, n, fin)
	c.sndNxt = c.sndNxt.Add(seqnum.Size(n))
	if fin {
		c.finSent = true
		c.sndNxt = c.sndNxt.Add(1)
		rec.flags |= segFIN
	}
	rec.end = c.sndNxt
	c.sent.push(c.e, rec)
	c.persistShift = 0
	if c.rtoAt == Never {
		c.armRTO()
	}
	c.armTLP()
}

// retransmitSeg resends record i of the sent queue — in pieces of the
// current MSS when the path MTU has fallen since it went — and stamps it
// with the new send time (RFC 8985: a retransmission is judged by its own).
func (c *Conn) retransmitSeg(i int) {
	e := c.e
	s := c.sent.at(i)
	fin := s.flags&segFIN != 0
	dn := s.len()
	if fin {
		dn--
	}
	if mss := c.effectiveMSS(); dn > mss {
		c.sent.split(e, i, s.start.Add(seqnum.Size(mss)))
		s = c.sent.at(i)
		dn, fin = mss, false
	}
	c.rateOnSend(s)
	c.transmit(s.start, dn, fin)
	s.xmit = e.now
	if s.flags&segRxtOut == 0 {
		s.flags |= segRxtOut
		c.rxtOut += s.len()
	}
	s.flags |= segRetrans
	e.counters.inc(Retransmits)
	c.retransmitted++
	c.undoRetrans++
	if i == 0 || c.rtoAt == Never {
		// Resending the first unacknowledged segment restarts the timer
		// (Linux's tcp_xmit_retransmit_queue): the RTO measures from the
		// newest attempt at the head, so a recovery that takes a few
		// round trips — a lost retransmission found by RACK, resent —
		// does not end in a timeout while it is progressing.
		c.armRTO()
	}
}

// armPersist starts the persist timer (RFC 9293 section 3.8.6.1): the peer's
// window is closed, nothing is in flight to provoke an update, so we probe,
// backing off exponentially.
func (c *Conn) armPersist() {
	e := c.e
	d := c.rto << c.persistShift
	c.persistAt = e.now.Add(min(max(d, e.cfg.MinRTO), e.cfg.MaxRTO))
	c.rearm()
}

// onPersist sends a zero-window probe. Like Linux's tcp_xmit_probe_skb it
// carries no data and an old sequence number (SND.UNA-1), which the peer
// must answer with an ACK showing its current window. Probes the peer never
// answers count against MaxRetries.
func (c *Conn) onPersist() {
	e := c.e
	if c.sndNxt != c.sndUna {
		return
	}
	c.probes++
	if c.probes > e.cfg.MaxRetries {
		e.counters.inc(RetransmitTimeouts)
		c.fail(ErrTimeout, EventTimedOut)
		return
	}
	e.counters.inc(ZeroWindowProbes)
	c.sendAt(c.sndUna-1, wire.FlagACK, 0, 0)
	if c.persistShift < 16 {
		c.persistShift++
	}
	c.armPersist()
}

// armRTO starts the retransmission timer with the current RTO.
func (c *Conn) armRTO() {
	c.rtoAt = c.e.now.Add(c.rto)
	c.rearm()
}

// nextTimer is the earliest of c's timers.
func (c *Conn) nextTimer() Time {
	return min(c.rtoAt, c.kaAt, c.persistAt, c.delackAt, c.tlpAt, c.reoAt, c.paceWaitAt)
}

// rearm puts c in the timer heap under its earliest deadline. Moving a
// deadline later (the RTO restarted by every ACK) leaves the heap alone: the
// entry fires early and onTimer re-arms it, so the per-segment cost does not
// grow with the number of connections.
func (c *Conn) rearm() {
	if c.state == Closed || c.state == TimeWait {
		// Released (releaseConn took it out of the heap): an application
		// call such as SetKeepalive must not put it back, where onTimer
		// would neither run nor re-arm it and Tick would spin.
		return
	}
	d := c.nextTimer()
	if c.heapIdx >= 0 && d >= c.deadline {
		return
	}
	c.deadline = d
	c.e.timers.set(c)
}

// rearmNow sets the heap entry to the exact earliest deadline.
func (c *Conn) rearmNow() {
	if c.state == Closed || c.state == TimeWait {
		return
	}
	c.deadline = c.nextTimer()
	c.e.timers.set(c)
}

// onTimer runs whichever of c's timers are due.
func (c *Conn) onTimer() {
	e := c.e
	now := e.now
	if c.trace != nil {
		c.traceTimers(now)
	}
	released := func() bool { return c.state == Closed || c.state == TimeWait }
	if c.tlpAt <= now {
		// Before the RTO: a probe due with it goes instead (RFC 8985
		// section 7.2 caps the PTO at the RTO) and restarts it.
		c.tlpAt = Never
		c.onTLP()
	}
	if !released() && c.rtoAt <= now {
		c.rtoAt = Never
		c.onRTO()
	}
	if !released() && c.reoAt <= now {
		c.reoAt = Never
		c.onReorderTimer()
	}
	if !released() && c.persistAt <= now {
		c.persistAt = Never
		c.onPersist()
	}
	if !released() && c.delackAt <= now {
		c.delackAt = Never
		if c.ackNeeded || c.unackedRcv > 0 || c.lastAckSent != c.rcvNxt {
			e.counters.inc(DelayedACKs)
			c.sendACK()
		}
	}
	if !released() && c.kaAt <= now {
		c.kaAt = Never
		c.onKeepalive()
	}
	if !released() && c.paceWaitAt <= now {
		c.paceWaitAt = Never
		c.output()
	}
	if !released() {
		c.rearmNow()
	}
}

// onRTO retransmits the oldest unacknowledged segment with exponential
// backoff (RFC 6298 section 5.5-5.7), or gives up after the configured retries.
func (c *Conn) onRTO() {
	e := c.e
	c.retries++
	switch c.state {
	case SynSent:
		if c.retries > e.cfg.SYNRetries && !c.macKnown {
			// The next hop never answered ARP/NDP: no SYN ever left.
			e.counters.inc(ConnectNoRoute)
			c.fail(ErrNoRoute, EventConnectFailed)
			return
		}
		if c.retries > e.cfg.SYNRetries {
			e.counters.inc(ConnectTimeouts)
			c.fail(ErrTimeout, EventConnectFailed)
			return
		}
		e.counters.inc(SYNRetransmits)
		c.backoff()
		if !c.macKnown {
			c.requestNeighbor()
			c.armRTO()
			return
		}
		c.sendSYN()
	case SynReceived:
		if c.retries > e.cfg.SYNACKRetries {
			if c.listener == nil { // a simultaneous open: the application is waiting
				e.counters.inc(ConnectTimeouts)
				c.fail(ErrTimeout, EventConnectFailed)
				return
			}
			e.counters.inc(HalfOpenTimeouts)
			e.releaseConn(c, Closed)
			return
		}
		e.counters.inc(SYNRetransmits)
		c.backoff()
		c.sendSYN()
	default:
		if c.sndNxt == c.sndUna {
			return // everything was acknowledged meanwhile
		}
		if c.retries > e.cfg.MaxRetries {
			// Linux's tcp_write_timeout: give up without an RST (the peer is
			// presumably unreachable) and report the timeout.
			e.counters.inc(RetransmitTimeouts)
			c.fail(ErrTimeout, EventTimedOut)
			return
		}
		c.backoff()
		if c.retries > 1 {
			// A second timeout in a row: the peer may have reneged on what it
			// SACKed (RFC 2018 section 8), so resend everything.
			c.unSACK()
		}
		// Everything un-SACKed below SND.NXT is lost (RFC 6675 section 5.1,
		// Linux's tcp_enter_loss); cwnd drops to one segment and slow start
		// sends the holes again.
		c.enterRecovery(true)
		c.output()
		if c.rtoAt == Never {
			c.armRTO()
		}
	}
}

func (c *Conn) backoff() {
	c.rto = min(2*c.rto, c.e.cfg.MaxRTO)
}

// fail ends c with err, reporting ev (and EventClosed).
func (c *Conn) fail(err error, ev Events) {
	if c.err == nil {
		c.err = err
	}
	c.notify(ev)
	c.e.releaseConn(c, Closed)
}
