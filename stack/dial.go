package stack

import (
	"fmt"
	"net/netip"

	"github.com/xdproxy/xdproxy/stack/seqnum"
)

// Dial starts an active open from local (an address the engine owns) to
// remote: CLOSED → SYN_SENT. The source port comes from the ephemeral range,
// never one whose 4-tuple is live or in TIME_WAIT. EventConnected or
// EventConnectFailed follows. Data written before the handshake completes is
// sent right after it.
func (e *Engine) Dial(now Time, local netip.Addr, remote netip.AddrPort) (*Conn, error) {
	e.now = now
	local = local.Unmap()
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if !e.owns(local) {
		return nil, fmt.Errorf("stack: dial %v from %v: %w", remote, local, ErrNotOwned)
	}
	if local.Is4() != remote.Addr().Is4() || remote.Port() == 0 {
		return nil, fmt.Errorf("stack: dial %v from %v: address families differ or port is 0", remote, local)
	}
	k, ok := e.pickPort(local, remote)
	if !ok {
		e.counters.inc(EphemeralPortsExhausted)
		return nil, fmt.Errorf("stack: dial %v from %v: %w", remote, local, ErrNoPorts)
	}
	nh := e.neigh.nextHop(remote.Addr())
	mac, known := e.neigh.macs[nh]
	c := e.newConn(k, mac)
	c.macKnown = known
	c.iss = seqnum.Value(e.isn(k, now))
	c.sndUna, c.sndNxt = c.iss, c.iss
	c.sndBufSeq = c.iss.Add(1)
	c.setState(SynSent)
	e.flows[k] = c
	if known {
		c.sendSYN()
	} else {
		// The SYN goes out when the reply arrives (resolved); the RTO retries the request.
		e.neigh.waiting = append(e.neigh.waiting, c)
		e.neigh.request(e, local, nh)
		c.sndNxt = c.iss.Add(1)
		c.armRTO()
	}
	e.flush()
	return c, nil
}

// pickPort chooses a source port as RFC 6056 section 3.3.3 ("Simple
// Hash-Based Port Selection") does: start at an offset keyed on the
// destination, walk the range, and skip any 4-tuple that is live or in
// TIME_WAIT — so port exhaustion is counted, never hit at random.
func (e *Engine) pickPort(local netip.Addr, remote netip.AddrPort) (FlowKey, bool) {
	lo, hi := uint32(e.cfg.EphemeralPorts[0]), uint32(e.cfg.EphemeralPorts[1])
	n := hi - lo + 1
	k := FlowKey{LocalAddr: local, RemoteAddr: remote.Addr(), RemotePort: remote.Port()}
	offset := uint32(e.isnHash.sum(k, 1)) + e.portCounter
	for i := uint32(0); i < n; i++ {
		k.LocalPort = uint16(lo + (offset+i)%n)
		if _, live := e.flows[k]; live {
			continue
		}
		if _, tw := e.tw.lookup(k); tw {
			continue
		}
		if e.cfg.PortFilter != nil && !e.cfg.PortFilter(k.LocalPort) {
			continue
		}
		e.portCounter += i + 1
		return k, true
	}
	return k, false
}

// windowUpdateAfterRead sends a window update once reading has opened the
// window by at least min(buffer/2, MSS) beyond what was advertised (the
// receiver's silly window avoidance of RFC 9293 section 3.8.6.2.2).
func (c *Conn) windowUpdateAfterRead() {
	if !c.state.synchronized() || c.finRcvd || c.state == TimeWait {
		return
	}
	adv := 0
	if c.rcvAdvEdge.GreaterThan(c.rcvNxt) {
		adv = int(c.rcvNxt.Size(c.rcvAdvEdge))
	}
	if c.rcvBuf.Free()-adv >= min(c.rcvBuf.max/2, int(c.e.ourMSS(c.key))) {
		c.sendACK()
	}
}
