package stack

import (
	"fmt"
	"net/netip"

	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// Listener is a passive open on one address and port (RFC 9293 LISTEN) with
// two bounded queues, as Linux keeps them: the SYN queue (SYN_RCVD entries)
// and the accept queue (ESTABLISHED connections waiting for Accept).
//
// What happens at the bounds, each counted:
//   - SYN queue full: with syn_cookies auto or always the SYN is answered with
//     a cookie and no state is kept (SYNQueueOverflow, SYNCookiesSent); with
//     never it is dropped (SYNQueueOverflow).
//   - accept queue full: new SYNs are dropped, and so is a handshake's final
//     ACK, leaving the entry in SYN_RCVD for the SYN-ACK retransmission to
//     try again — Linux's tcp_abort_on_overflow=0 (AcceptQueueOverflow).
type Listener struct {
	e        *Engine
	addr     netip.AddrPort
	synQLen  int
	acceptQ  []*Conn
	acceptHd int
	closed   bool
	queued   bool

	cookieSentAt Time
	cookieSent   bool

	// User is the application's own state for this listener.
	User any
}

// Listen starts accepting connections on addr. The engine takes ownership of
// addr's IP (answering ARP/NDP for it).
func (e *Engine) Listen(addr netip.AddrPort) (*Listener, error) {
	if !addr.IsValid() || addr.Port() == 0 {
		return nil, fmt.Errorf("stack: listen on %v: need an address and a non-zero port", addr)
	}
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	if l := e.listeners[addr]; l != nil && !l.closed {
		return nil, fmt.Errorf("stack: listen on %v: %w", addr, ErrAddrInUse)
	}
	e.AddAddress(addr.Addr())
	l := &Listener{e: e, addr: addr}
	e.listeners[addr] = l
	e.stats.listeners.Add(1)
	return l, nil
}

// Addr returns the listening address.
func (l *Listener) Addr() netip.AddrPort { return l.addr }

// SYNQueueLen is the number of SYN_RCVD entries.
func (l *Listener) SYNQueueLen() int { return l.synQLen }

// AcceptQueueLen is the number of established connections waiting for Accept.
func (l *Listener) AcceptQueueLen() int { return len(l.acceptQ) - l.acceptHd }

// Accept returns the oldest established connection, or nil when none waits.
// Events that happened to it while it waited (data, FIN) are delivered next.
func (l *Listener) Accept() *Conn {
	if l.acceptHd == len(l.acceptQ) {
		return nil
	}
	c := l.acceptQ[l.acceptHd]
	l.acceptQ[l.acceptHd] = nil
	l.acceptHd++
	if l.acceptHd == len(l.acceptQ) {
		l.acceptQ, l.acceptHd = l.acceptQ[:0], 0
	}
	c.inAcceptQ = false
	c.listener = nil
	if c.pending != 0 && !c.queued {
		c.queued = true
		l.e.connEvents = append(l.e.connEvents, c)
	}
	return c
}

// Close stops listening. Connections still in the queues are reset (Linux's
// inet_csk_listen_stop); accepted ones are not affected.
func (l *Listener) Close() {
	if l.closed {
		return
	}
	l.closed = true
	e := l.e
	e.stats.listeners.Add(-1)
	for c := l.Accept(); c != nil; c = l.Accept() {
		c.abort()
	}
	for _, c := range e.flows {
		if c.listener == l {
			c.abort()
		}
	}
	if e.listeners[l.addr] == l {
		delete(e.listeners, l.addr)
	}
	e.flush()
}

// forget drops c from whichever queue holds it.
func (l *Listener) forget(c *Conn) {
	if c.inAcceptQ {
		for i := l.acceptHd; i < len(l.acceptQ); i++ {
			if l.acceptQ[i] == c {
				copy(l.acceptQ[i:], l.acceptQ[i+1:])
				l.acceptQ[len(l.acceptQ)-1] = nil
				l.acceptQ = l.acceptQ[:len(l.acceptQ)-1]
				break
			}
		}
		c.inAcceptQ = false
	} else if c.state == SynReceived {
		l.synQLen--
	}
	c.listener = nil
}

// enqueue moves an established passive connection to the accept queue.
func (l *Listener) enqueue(c *Conn) {
	c.inAcceptQ = true
	l.acceptQ = append(l.acceptQ, c)
	if !l.queued {
		l.queued = true
		l.e.lisEvents = append(l.e.lisEvents, l)
	}
}

func (l *Listener) acceptQueueFull() bool { return l.AcceptQueueLen() >= l.e.cfg.AcceptBacklog }

// input handles a segment for this listener that matched no connection
// (RFC 9293 section 3.10.7.2, LISTEN state).
func (l *Listener) input(s *segment) {
	e := l.e
	switch {
	case s.has(wire.FlagRST):
		// A client's RST for a connection another node holds goes there.
		if !e.secondChance(s) {
			e.counters.inc(RxRSTIgnored)
		}
	case s.has(wire.FlagACK) && !s.has(wire.FlagSYN):
		l.cookieACK(s)
	case s.has(wire.FlagACK):
		// SYN|ACK to a listener: <SEQ=SEG.ACK><CTL=RST>.
		e.counters.inc(RxBadSYN)
		e.sendRST(s.key, s.from, s.ack, 0, false)
	case !s.has(wire.FlagSYN):
		e.counters.inc(RxNoFlags)
	case s.has(wire.FlagFIN):
		// Linux discards SYN|FIN in LISTEN (tcp_rcv_state_process).
		e.counters.inc(RxBadSYN)
	default:
		l.handleSYN(s, 0, false)
	}
}

// handleSYN answers a SYN: a SYN_RCVD entry and SYN-ACK, or a SYN cookie.
// iss, when given, is the ISN chosen by a TIME_WAIT reopen (RFC 6191).
func (l *Listener) handleSYN(s *segment, iss seqnum.Value, haveISS bool) {
	e := l.e
	if l.acceptQueueFull() {
		e.counters.inc(AcceptQueueOverflow)
		return
	}
	mode := e.cfg.SYNCookies
	switch {
	case e.mem.full():
		e.counters.inc(SYNDropsMemory)
		return
	case e.mem.level == MemoryHigh && mode != SYNCookiesNever:
		// No state, no buffers until the handshake completes (memory.go).
		if mode != SYNCookiesAlways {
			e.counters.inc(SYNCookiesMemory)
		}
		mode = SYNCookiesAlways
	}
	if l.synQLen >= e.cfg.SYNBacklog {
		e.counters.inc(SYNQueueOverflow)
		if mode == SYNCookiesNever {
			return
		}
		mode = SYNCookiesAlways
	}
	if mode == SYNCookiesAlways {
		l.sendCookie(s)
		return
	}
	c := e.newConn(s.key, s.from)
	c.listener = l
	l.synQLen++
	if !haveISS {
		iss = seqnum.Value(e.isn(s.key, e.now))
	}
	c.negotiate(s)
	c.iss, c.sndUna, c.sndNxt = iss, iss, iss
	c.sndBufSeq = iss.Add(1)
	c.setState(SynReceived)
	if e.tr.tracer != nil {
		e.traceOpen(c, s)
	}
	e.flows[s.key] = c
	e.flowHeld(s.key)
	c.sendSYN()
}

// sendCookie answers a SYN with a SYN-ACK whose ISN is a cookie, keeping no state.
func (l *Listener) sendCookie(s *segment) {
	e := l.e
	e.cookies.rotate(e.now, e.rand)
	peerMSS := s.opts.MSS
	if peerMSS == 0 {
		peerMSS = defaultMSS(s.key)
	}
	cookie := e.cookies.make(s.key, uint32(s.seq), peerMSS)
	var o wire.TCPOptions
	o.MSS = e.ourMSS(s.from.ifx, s.key)
	if s.opts.HasTimestamps {
		// Window scale and SACK can only be recovered through the timestamp
		// echo; without timestamps the connection goes without them (Linux too).
		if s.opts.HasWScale {
			o.HasWScale, o.WScale = true, e.rcvWScale
		}
		o.SACKPermitted = s.opts.SACKPermitted
		o.HasTimestamps = true
		tsNow := tsClock(e.now) + e.tsOffset(s.key.LocalAddr, s.key.RemoteAddr)
		o.TSVal = cookieTSVal(tsNow, s.opts)
		o.TSEcr = s.opts.TSVal
	}
	wnd := uint16(min(e.cfg.RcvBuffer, 0xffff))
	if e.sendSegment(s.key, s.from, seqnum.Value(cookie), s.seq.Add(1), wire.FlagSYN|wire.FlagACK, wnd, &o, nil, nil) {
		e.counters.inc(SYNCookiesSent)
		l.cookieSentAt, l.cookieSent = e.now, true
	}
}

// cookiesOutstanding reports whether a cookie this listener sent could still be valid.
func (l *Listener) cookiesOutstanding() bool {
	e := l.e
	if e.cfg.SYNCookies == SYNCookiesAlways || e.cookies.external.Load() {
		return true
	}
	return l.cookieSent && e.now.Sub(l.cookieSentAt) < 2*e.cfg.CookieSecretLifetime
}

// cookieACK handles an ACK to a listener: the third segment of a cookie handshake, or junk.
func (l *Listener) cookieACK(s *segment) {
	e := l.e
	if !l.cookiesOutstanding() {
		// No cookie can be pending: RFC 9293 LISTEN answers any ACK with <SEQ=SEG.ACK><CTL=RST>.
		e.noSocket(s)
		return
	}
	e.cookies.rotate(e.now, e.rand)
	mss, ok := e.cookies.check(s.key, uint32(s.seq-1), uint32(s.ack-1))
	if !ok {
		// Linux answers a bad cookie with RST; we drop it, so that a flood of
		// forged ACKs during a SYN flood is not reflected. With second chance
		// it is more likely a segment of a connection another node holds.
		if !e.secondChance(s) {
			e.counters.inc(SYNCookiesRejected)
		}
		return
	}
	if l.acceptQueueFull() {
		e.counters.inc(AcceptQueueOverflow)
		return
	}
	c := e.newConn(s.key, s.from)
	c.cookieOpen = true
	c.irs, c.rcvNxt = s.seq-1, s.seq
	c.iss, c.sndUna, c.sndNxt = s.ack-1, s.ack, s.ack
	c.sndBufSeq = s.ack
	c.sndMSS = int(min(mss, e.ourMSS(s.from.ifx, s.key)))
	if s.opts.HasTimestamps {
		c.tsOK = true
		c.tsRecent = s.opts.TSVal
		ws, hasWS, sack := cookieTSOptions(s.opts.TSEcr)
		c.sackOK = sack
		if hasWS {
			c.wsOK, c.sndWScale, c.rcvWScale = true, ws, e.rcvWScale
		}
	}
	c.sndWnd = uint32(s.wnd) << c.sndWScale
	c.maxSndWnd = c.sndWnd
	c.sndWL1, c.sndWL2 = s.seq, s.ack
	c.rcvAdvEdge = c.rcvNxt.Add(seqnum.Size(min(e.cfg.RcvBuffer, 0xffff)))
	c.lastAckSent = c.rcvNxt
	c.cc.setMSS(c.effectiveMSS())
	c.setState(Established)
	if e.tr.tracer != nil {
		e.traceOpen(c, s)
	}
	e.flows[s.key] = c
	e.flowHeld(s.key)
	e.counters.inc(SYNCookiesAccepted)
	e.counters.inc(PassiveOpens)
	c.listener = l
	l.enqueue(c)
	c.armKeepalive()
	if len(s.payload) > 0 || s.has(wire.FlagFIN) {
		c.input(s)
	}
}

// cookieReopen takes an ACK to a 4-tuple in TIME_WAIT that completes a new
// handshake: one whose SYN was answered with a cookie outside the engine (the
// XDP program, SetExternalCookies), which knows nothing of TIME_WAIT. The
// engine admits it as timeWaitInput admits a SYN (RFC 6191): newer than the
// old incarnation by timestamp when both carry them, else by sequence
// number (here the ACK's seq-1, the new ISN) — and with a valid cookie.
// Linux, whose SYN reaches the TIME_WAIT socket before any cookie, does the
// same at the SYN. It reports whether the segment was taken.
func (e *Engine) cookieReopen(slot int, tw *twEntry, s *segment) bool {
	l := e.listeners[s.key.Local()]
	if l == nil || l.closed || !e.cookies.external.Load() {
		return false
	}
	newer := (s.seq - 1).GreaterThan(tw.rcvNxt)
	if tw.hasTS && s.opts.HasTimestamps {
		d := int32(s.opts.TSVal - tw.tsRecent)
		newer = d > 0 || (d == 0 && newer)
	}
	if !newer {
		return false
	}
	e.cookies.rotate(e.now, e.rand)
	if _, ok := e.cookies.check(s.key, uint32(s.seq-1), uint32(s.ack-1)); !ok {
		return false
	}
	e.tw.remove(slot)
	e.stats.states[TimeWait].Add(-1)
	e.counters.inc(TimeWaitReopened)
	l.cookieACK(s)
	return true
}

// defaultMSS is the MSS to assume when the peer sent none (RFC 9293 section 3.7.1; RFC 8200 for IPv6).
func defaultMSS(k FlowKey) uint16 {
	if k.LocalAddr.Is4() {
		return 536
	}
	return 1220
}
