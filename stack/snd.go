package stack

import (
	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

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
	c.sndMSS = int(min(peerMSS, e.ourMSS(c.key)))
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
}

// synOptions are the options of our SYN or SYN-ACK.
func (c *Conn) synOptions(o *wire.TCPOptions) {
	e := c.e
	*o = wire.TCPOptions{MSS: e.ourMSS(c.key)}
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
	wnd := uint16(min(c.rcvBuf.Free(), 0xffff))
	c.rcvAdvEdge = c.rcvNxt.Add(seqnum.Size(wnd))
	c.e.sendSegment(c.key, c.peerMAC, c.iss, ack, flags, wnd, &o, nil, nil)
	c.sndNxt = c.iss.Add(1)
	c.armRTO()
}

// rcvWindow is the window to advertise: the free receive buffer, scaled,
// never moving the right edge left of what was already advertised
// (RFC 9293 section 3.8.6.2.2 forbids shrinking the window).
func (c *Conn) rcvWindow() uint16 {
	free := uint32(c.rcvBuf.Free())
	if adv := uint32(c.rcvAdvEdge - c.rcvNxt); c.rcvAdvEdge.GreaterThan(c.rcvNxt) && adv > free {
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

// options fills the options of a non-SYN segment.
func (c *Conn) options(o *wire.TCPOptions) *wire.TCPOptions {
	if !c.tsOK {
		return nil
	}
	*o = wire.TCPOptions{HasTimestamps: true, TSVal: c.tsNow(), TSEcr: c.tsRecent}
	return o
}

// sendACK sends a bare ACK at SND.NXT.
func (c *Conn) sendACK() {
	c.sendAt(c.sndNxt, wire.FlagACK, 0, 0)
}

// sendAt sends the segment at seq carrying n bytes of the send buffer from
// offset off, with flags (ACK is always set on a synchronized connection).
func (c *Conn) sendAt(seq seqnum.Value, flags uint8, off, n int) {
	var o wire.TCPOptions
	p1, p2 := c.sndBuf.peek(off, n)
	flags |= wire.FlagACK
	if c.e.sendSegment(c.key, c.peerMAC, seq, c.rcvNxt, flags, c.rcvWindow(), c.options(&o), p1, p2) {
		c.ackNeeded = false
	}
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
		return c.sndMSS - 12
	}
	return c.sndMSS
}

// output sends whatever the peer's window allows: new data, then our FIN once
// every byte before it is out, and finally a bare ACK if one is owed and
// nothing else carried it.
//
// Part 2 puts the congestion window, Nagle, sender silly-window avoidance
// and the persist timer here: the usable window becomes min(cwnd, SND.WND).
func (c *Conn) output() {
	switch c.state {
	case Established, CloseWait, FinWait1, Closing, LastAck:
	default:
		if c.ackNeeded && c.state.synchronized() {
			c.sendACK()
		}
		return
	}
	mss := c.effectiveMSS()
	for {
		end := c.sndBufSeq.Add(seqnum.Size(c.sndBuf.Len())) // first byte after the data
		unsent := int(c.sndNxt.Size(end))
		if c.finSent || c.sndNxt.GreaterThan(end) {
			unsent = 0
		}
		wndEnd := c.sndUna.Add(seqnum.Size(c.sndWnd))
		usable := 0
		if wndEnd.GreaterThan(c.sndNxt) {
			usable = int(c.sndNxt.Size(wndEnd))
		}
		n := min(unsent, usable, mss)
		fin := c.finQueued && !c.finSent && n == unsent && usable > n
		if n == 0 && !fin {
			break
		}
		flags := uint8(0)
		if n > 0 && n == unsent {
			flags |= wire.FlagPSH
		}
		if fin {
			flags |= wire.FlagFIN
		}
		c.sendAt(c.sndNxt, flags, int(c.sndBufSeq.Size(c.sndNxt)), n)
		c.sndNxt = c.sndNxt.Add(seqnum.Size(n))
		if fin {
			c.finSent = true
			c.sndNxt = c.sndNxt.Add(1)
		}
		if c.rtoAt == Never {
			c.armRTO()
		}
	}
	if c.ackNeeded {
		c.sendACK()
	}
}

// armRTO starts the retransmission timer with the current RTO.
func (c *Conn) armRTO() {
	c.rtoAt = c.e.now.Add(c.rto)
	c.rearm()
}

// rearm puts c in the timer heap under its earliest deadline.
func (c *Conn) rearm() {
	if c.state == Closed || c.state == TimeWait {
		// Released (releaseConn took it out of the heap): an application
		// call such as SetKeepalive must not put it back, where onTimer
		// would neither run nor re-arm it and Tick would spin.
		return
	}
	c.deadline = min(c.rtoAt, c.kaAt)
	c.e.timers.set(c)
}

// onTimer runs whichever of c's timers is due.
func (c *Conn) onTimer() {
	now := c.e.now
	if c.rtoAt <= now {
		c.rtoAt = Never
		c.onRTO()
	}
	if c.state == Closed || c.state == TimeWait {
		return
	}
	if c.kaAt <= now {
		c.kaAt = Never
		c.onKeepalive()
	}
	if c.state != Closed && c.state != TimeWait {
		c.rearm()
	}
}

// onRTO retransmits the oldest unacknowledged segment with exponential
// backoff (RFC 6298 section 5), or gives up after the configured retries.
// Part 1 resends from SND.UNA (go-back-N); part 2 adds RTT estimation, fast
// retransmit and SACK-based recovery.
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
			e.neigh.request(e, c.key.LocalAddr, c.nextHop())
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
		e.counters.inc(Retransmits)
		c.backoff()
		c.retransmitted++
		// Go back to SND.UNA and send again what the window allows.
		c.sndNxt = c.sndUna
		c.finSent = false
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
