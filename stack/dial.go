package stack

import (
	"fmt"
	"net/netip"

	"github.com/xdproxy/xdproxy/stack/seqnum"
)

// Dial starts an active open from local (an address the engine owns) to
// remote: CLOSED → SYN_SENT. The source port comes from the ephemeral range,
// never one whose 4-tuple is live, nor one in TIME_WAIT unless
// Config.TimeWaitReuse allows taking it over. EventConnected or
// EventConnectFailed follows. Data written before the handshake completes is
// sent right after it.
func (e *Engine) Dial(now Time, local netip.Addr, remote netip.AddrPort) (*Conn, error) {
	e.now = now
	local = local.Unmap()
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if remote.Port() == 0 || !remote.Addr().IsValid() {
		return nil, fmt.Errorf("stack: dial %v: no address or port 0", remote)
	}
	r, ok := e.neigh.lookup(remote.Addr())
	if !ok {
		e.counters.inc(ConnectNoRoute)
		return nil, fmt.Errorf("stack: dial %v: %w", remote, ErrNoRoute)
	}
	if !local.IsValid() {
		local = e.sourceFor(r, remote.Addr())
		if !local.IsValid() {
			return nil, fmt.Errorf("stack: dial %v: no source address of its family on interface %d (%s): %w", remote, r.Iface, e.ifs[r.Iface].Name, ErrNotOwned)
		}
	}
	if !e.owns(local) {
		return nil, fmt.Errorf("stack: dial %v from %v: %w", remote, local, ErrNotOwned)
	}
	if local.Is4() != remote.Addr().Is4() {
		return nil, fmt.Errorf("stack: dial %v from %v: address families differ", remote, local)
	}
	k, twSlot, ok := e.pickPort(local, remote)
	if !ok {
		e.counters.inc(EphemeralPortsExhausted)
		return nil, fmt.Errorf("stack: dial %v from %v: %w", remote, local, ErrNoPorts)
	}
	nh := r.nextHop(remote.Addr())
	ifx := uint8(r.Iface)
	mac, known := e.neigh.macs[neighKey{nh, ifx}]
	c := e.newConn(k, hop{mac: mac, ifx: ifx})
	c.macKnown = known
	c.via = nh
	c.iss = seqnum.Value(e.isn(k, now))
	if twSlot >= 0 {
		// Taking over a TIME_WAIT 4-tuple: start past the old sequence
		// space, as Linux's tcp_twsk_unique does (its tw_snd_nxt + 65535 + 2).
		tw := e.tw.entry(twSlot)
		c.iss = tw.sndNxt.Add(65535 + 2)
		e.tw.remove(twSlot)
		e.stats.states[TimeWait].Add(-1)
		e.counters.inc(TimeWaitReused)
	}
	c.sndUna, c.sndNxt = c.iss, c.iss
	c.sndBufSeq = c.iss.Add(1)
	c.setState(SynSent)
	if e.tr.tracer != nil {
		e.traceOpen(c, nil)
	}
	e.flows[k] = c
	e.flowHeld(k)
	if known {
		c.sendSYN()
	} else {
		// The SYN goes out when the answer arrives (resolved); the RTO asks again.
		e.neigh.waiting = append(e.neigh.waiting, c)
		c.requestNeighbor()
		c.sndNxt = c.iss.Add(1)
		c.armRTO()
	}
	e.flush()
	return c, nil
}

// sourceFor is the address an active open to dst by route r leaves from:
// the route's preferred source when the engine owns it, else the first
// source address of dst's family of the route's interface.
func (e *Engine) sourceFor(r Route, dst netip.Addr) netip.Addr {
	if r.Src.IsValid() && r.Src.Is4() == dst.Is4() && e.owns(r.Src) {
		return r.Src
	}
	for _, a := range e.ifs[r.Iface].Sources {
		if a = a.Unmap(); a.Is4() == dst.Is4() {
			return a
		}
	}
	return netip.Addr{}
}

// RouteTo reports the interface, next hop and source address an active
// open to dst would use now (for the daemon's checks and listings).
func (e *Engine) RouteTo(dst netip.Addr) (iface int, nextHop, src netip.Addr, ok bool) {
	dst = dst.Unmap()
	r, ok := e.neigh.lookup(dst)
	if !ok {
		return 0, netip.Addr{}, netip.Addr{}, false
	}
	return r.Iface, r.nextHop(dst), e.sourceFor(r, dst), true
}

// pickPort chooses a source port as RFC 6056 section 3.3.3 ("Simple
// Hash-Based Port Selection") does: start at an offset keyed on the
// destination, walk the range, and skip any 4-tuple that is live or in
// TIME_WAIT — so port exhaustion is counted, never hit at random. A
// TIME_WAIT 4-tuple old enough to be reused (reusableTimeWait) is taken, as
// Linux's __inet_hash_connect takes one that tcp_twsk_unique allows; its
// slot comes back (else -1) for Dial to take over.
func (e *Engine) pickPort(local netip.Addr, remote netip.AddrPort) (FlowKey, int, bool) {
	lo, hi := uint32(e.cfg.EphemeralPorts[0]), uint32(e.cfg.EphemeralPorts[1])
	n := hi - lo + 1
	k := FlowKey{LocalAddr: local, RemoteAddr: remote.Addr(), RemotePort: remote.Port()}
	offset := uint32(e.isnHash.sum(k, 1)) + e.portCounter
	for i := uint32(0); i < n; i++ {
		k.LocalPort = uint16(lo + (offset+i)%n)
		// The filter first: it is a comparison, the rest are map lookups.
		if e.cfg.PortFilter != nil && !e.cfg.PortFilter(k.LocalPort) {
			continue
		}
		if _, live := e.flows[k]; live {
			continue
		}
		slot := -1
		if s, tw := e.tw.lookup(k); tw {
			if !e.reusableTimeWait(e.tw.entry(s)) {
				continue
			}
			slot = s
		}
		e.portCounter += i + 1
		return k, slot, true
	}
	return k, -1, false
}

// reusableTimeWait reports whether an active open may take over tw's
// 4-tuple: the old connection used timestamps (so the peer's PAWS tells a
// late segment of it from the new one) and the entry is at least
// Config.TimeWaitReuse old (its 2MSL last started that long ago).
func (e *Engine) reusableTimeWait(tw *twEntry) bool {
	d := e.cfg.TimeWaitReuse
	return d >= 0 && tw.hasTS && e.now >= tw.expires.Add(d-e.cfg.TimeWait)
}

// windowUpdateAfterRead sends a window update when a read freed enough of
// the buffer to matter to the sender: the window still open at the peer has
// fallen to half the buffer or less, and what we can offer now is at least
// twice it (Linux's tcp_cleanup_rbuf) and beyond the receiver's silly window
// threshold of min(buffer/2, MSS) (RFC 9293 section 3.8.6.2.2). An
// application that reads every segment as it arrives therefore adds no
// ACKs of its own: the edge moves on the ACKs data earns anyway (one per
// two full-sized segments), and a window that has nearly closed reopens at
// once.
func (c *Conn) windowUpdateAfterRead() {
	if !c.state.synchronized() || c.finRcvd || c.state == TimeWait {
		return
	}
	open := 0 // what the peer may still send, by our last advertisement
	if c.rcvAdvEdge.GreaterThan(c.rcvNxt) {
		open = int(c.rcvNxt.Size(c.rcvAdvEdge))
	}
	if c.delackAt != Never && c.lastAckSent == c.irs.Add(1) {
		// The peer knows only the handshake's window (at most 64 KiB:
		// unscaled) and has sent less than two full-sized segments of it;
		// an ACK is due by the delayed-ACK timer, or sooner on data of
		// ours, and the larger window rides on it. Otherwise a proxy's
		// first read of a short request would send a bare ACK just before
		// the reply, where Linux, whose window grows with the data it
		// receives, sends none.
		return
	}
	free := c.rcvSpace()
	if 2*open <= c.rcvBuf.max && free >= 2*open && free-open >= min(c.rcvBuf.max/2, int(c.ourMSS())) {
		c.sendACK()
	}
}
