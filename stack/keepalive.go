package stack

import "github.com/xdproxy/xdproxy/stack/wire"

// Keepalive (RFC 9293 section 3.8.4, RFC 1122 section 4.2.3.6): after Idle
// with nothing received, a probe <SEQ=SND.NXT-1><CTL=ACK> with no data, which
// the peer must answer with an ACK; Interval between unanswered probes; after
// Probes of them the connection is reset and the application told
// (EventTimedOut), as Linux's tcp_keepalive_timer does.
//
// The same timer slot serves the FIN_WAIT_2 timeout of a connection the
// application has closed (Linux's tcp_fin_timeout): it then waits at most
// TimeWait for the peer's FIN.

// armKeepalive (re)starts the idle timer. Received segments do not touch the
// heap: the timer fires at the old deadline and re-arms from lastRcvAt.
func (c *Conn) armKeepalive() {
	switch {
	case c.appClosed && c.state == FinWait2:
		return // the orphan timer owns the slot
	case !c.keepalive || !c.state.synchronized():
		c.kaAt = Never
	default:
		c.kaAt = c.lastRcvAt.Add(c.e.cfg.Keepalive.Idle)
	}
	c.rearm()
}

// armOrphanTimer bounds FIN_WAIT_2 for a connection nobody will read.
func (c *Conn) armOrphanTimer() {
	if c.appClosed && c.state == FinWait2 {
		c.kaAt = c.e.now.Add(c.e.cfg.TimeWait)
		c.rearm()
	}
}

func (c *Conn) onKeepalive() {
	e := c.e
	cfg := &e.cfg.Keepalive
	if c.appClosed && c.state == FinWait2 {
		e.counters.inc(FinWait2Timeouts)
		e.releaseConn(c, Closed)
		return
	}
	if !c.keepalive || !c.state.synchronized() {
		return
	}
	// Data in flight or queued: the retransmission timer watches the peer.
	if c.sndUna != c.sndNxt || c.sndBuf.Len() > 0 {
		c.kaProbes = 0
		c.kaAt = e.now.Add(cfg.Idle)
		return
	}
	if idle := e.now.Sub(c.lastRcvAt); c.kaProbes == 0 && idle < cfg.Idle {
		c.kaAt = c.lastRcvAt.Add(cfg.Idle)
		return
	}
	if c.kaProbes >= cfg.Probes {
		e.counters.inc(KeepaliveTimeouts)
		e.sendRST(c.key, c.peer, c.sndNxt, 0, false)
		c.fail(ErrTimeout, EventTimedOut)
		return
	}
	c.kaProbes++
	e.counters.inc(KeepaliveProbes)
	c.sendAt(c.sndNxt-1, wire.FlagACK, 0, 0)
	c.kaAt = e.now.Add(cfg.Interval)
}
