package stack

import (
	"net/netip"

	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// neighborTable maps next hops (an interface and an IP) to MACs, and
// destinations to routes. The shard loop fills both from the kernel
// (netlink, followed live); the engine adds what ARP replies and neighbour
// advertisements tell it, and asks for a next hop it does not know when an
// active open needs it.
type neighborTable struct {
	macs    map[neighKey]wire.MAC
	routes  []Route
	waiting []*Conn // active opens whose next hop is not resolved yet
}

type neighKey struct {
	addr netip.Addr
	ifx  uint8
}

var allNodes = netip.AddrFrom16([16]byte{0: 0xff, 1: 0x02, 15: 1})

// Route sends traffic for Prefix out of interface Iface, to Gateway (on-link
// when Gateway is the zero Addr), from Src when the caller names no source.
// The longest matching prefix wins, then the lowest Metric: the kernel's
// choice for the main table.
type Route struct {
	Prefix  netip.Prefix
	Gateway netip.Addr
	Iface   int
	Src     netip.Addr
	Metric  int
}

func (t *neighborTable) init() { t.macs = make(map[neighKey]wire.MAC) }

// SetNeighbor records ip's MAC address on the first interface.
func (e *Engine) SetNeighbor(ip netip.Addr, mac wire.MAC) { e.SetNeighborOn(0, ip, mac) }

// SetNeighborOn records ip's MAC address on interface ifx; active opens
// waiting for it send their SYNs.
func (e *Engine) SetNeighborOn(ifx int, ip netip.Addr, mac wire.MAC) {
	if ifx < 0 || ifx >= len(e.ifs) {
		return
	}
	e.neigh.macs[neighKey{ip.Unmap(), uint8(ifx)}] = mac
	e.resolved(uint8(ifx), ip.Unmap())
	e.flush()
}

// AddRoute sends traffic for prefix through gateway on the first interface
// (see SetRoutes). With no route at all, every destination is on-link on the
// first interface.
func (e *Engine) AddRoute(prefix netip.Prefix, gateway netip.Addr) {
	e.neigh.routes = append(e.neigh.routes, Route{Prefix: prefix.Masked(), Gateway: gateway.Unmap()})
}

// SetRoutes replaces the routing table. Connections keep the interface and
// next hop they started with; new active opens use the new table.
func (e *Engine) SetRoutes(rs []Route) {
	e.neigh.routes = e.neigh.routes[:0]
	for _, r := range rs {
		if r.Iface < 0 || r.Iface >= len(e.ifs) || !r.Prefix.IsValid() {
			continue
		}
		r.Prefix = r.Prefix.Masked()
		r.Gateway = r.Gateway.Unmap()
		r.Src = r.Src.Unmap()
		e.neigh.routes = append(e.neigh.routes, r)
	}
}

// Routes returns a copy of the routing table.
func (e *Engine) Routes() []Route { return append([]Route(nil), e.neigh.routes...) }

// lookup is the route to dst. With an empty table a destination is on-link
// on the first interface (an engine with one link and no routes, as tests
// build it); otherwise a destination no route covers is unreachable.
func (t *neighborTable) lookup(dst netip.Addr) (Route, bool) {
	best, found := Route{}, false
	for _, r := range t.routes {
		if r.Prefix.Addr().Is4() != dst.Is4() || !r.Prefix.Contains(dst) {
			continue
		}
		if !found || r.Prefix.Bits() > best.Prefix.Bits() ||
			(r.Prefix.Bits() == best.Prefix.Bits() && r.Metric < best.Metric) {
			best, found = r, true
		}
	}
	if !found && len(t.routes) == 0 {
		return Route{Prefix: netip.PrefixFrom(dst, dst.BitLen())}, true
	}
	return best, found
}

// nextHop is the address whose MAC frames to dst go to by route r.
func (r Route) nextHop(dst netip.Addr) netip.Addr {
	if r.Gateway.IsValid() && !r.Gateway.IsUnspecified() {
		return r.Gateway
	}
	return dst
}

// nextHop is where c's frames go, by its route at the time it was dialed.
func (c *Conn) nextHop() netip.Addr { return c.via }

// requestNeighbor finds the MAC of c's next hop: the interface's resolver
// (the kernel) first, else our own ARP request / neighbour solicitation.
func (c *Conn) requestNeighbor() {
	e := c.e
	if r := e.ifs[c.peer.ifx].Resolve; r != nil && r(c.key.LocalAddr, c.via) {
		e.counters.inc(NeighborResolves)
		return
	}
	e.neigh.request(e, c.peer.ifx, c.key.LocalAddr, c.via)
}

// request asks for target's MAC from src on interface ifx: ARP for IPv4, a
// neighbour solicitation for IPv6.
func (t *neighborTable) request(e *Engine, ifx uint8, src, target netip.Addr) {
	ifc := &e.ifs[ifx]
	buf := ifc.Sink.NextFrame()
	if buf == nil {
		e.counters.inc(TxNoBuffer)
		return
	}
	var n int
	if target.Is4() {
		n = wire.EncodeARP(buf, wire.ARPRequest, ifc.MAC, src, wire.MAC{}, target)
	} else {
		n = wire.EncodeNeighborSolicit(buf, ifc.MAC, src, target)
	}
	if n == 0 {
		e.counters.inc(TxNoBuffer)
		return
	}
	ifc.Sink.Commit(n)
	e.counters.inc(TxFrames)
	e.counters.inc(ARPRequestsOut)
}

// learn records what a frame on interface ifx told us of ip's MAC, and
// sends the SYNs that waited for it.
func (e *Engine) learn(ifx uint8, ip netip.Addr, mac wire.MAC) {
	k := neighKey{ip, ifx}
	old, known := e.neigh.macs[k]
	e.neigh.macs[k] = mac
	if !known || old != mac {
		e.resolved(ifx, ip)
	}
}

// resolved sends the SYNs of active opens that were waiting for ip's MAC on ifx.
func (e *Engine) resolved(ifx uint8, ip netip.Addr) {
	if len(e.neigh.waiting) == 0 {
		return
	}
	mac := e.neigh.macs[neighKey{ip, ifx}]
	kept := e.neigh.waiting[:0]
	for _, c := range e.neigh.waiting {
		switch {
		case c.state != SynSent || c.macKnown:
			// gone, or resolved by another path: drop from the list
		case c.via == ip && c.peer.ifx == ifx:
			c.peer.mac, c.macKnown = mac, true
			c.sendSYN()
		default:
			kept = append(kept, c)
		}
	}
	clear(e.neigh.waiting[len(kept):])
	e.neigh.waiting = kept
}

// handleARP answers requests for our addresses and learns from every ARP
// frame that names a sender (RFC 826's merge step).
func (e *Engine) handleARP(p *wire.Packet) {
	a := &p.ARP
	if !e.owns(a.TargetIP) {
		e.counters.inc(RxNotOurs)
		return
	}
	if a.SenderIP.IsValid() && !a.SenderIP.IsUnspecified() {
		e.learn(e.inIf, a.SenderIP, a.SenderMAC)
	}
	switch a.Op {
	case wire.ARPRequest:
		e.counters.inc(ARPRequestsIn)
		ifc := &e.ifs[e.inIf]
		buf := ifc.Sink.NextFrame()
		if buf == nil {
			e.counters.inc(TxNoBuffer)
			return
		}
		if n := wire.EncodeARP(buf, wire.ARPReply, ifc.MAC, a.TargetIP, a.SenderMAC, a.SenderIP); n > 0 {
			ifc.Sink.Commit(n)
			e.counters.inc(TxFrames)
			e.counters.inc(ARPRepliesOut)
		}
	case wire.ARPReply:
		e.counters.inc(ARPRepliesIn)
	}
}

// handleICMP answers echo requests and neighbour solicitations for our
// addresses, learns from neighbour advertisements, and applies path MTU
// messages to the connection they quote.
func (e *Engine) handleICMP(p *wire.Packet) {
	ic := &p.ICMP
	ifc := &e.ifs[e.inIf]
	owned := e.owns(p.Dst)
	switch {
	case (ic.Type == wire.ICMPv4EchoRequest && p.Proto == wire.ProtoICMP) ||
		(ic.Type == wire.ICMPv6EchoRequest && p.Proto == wire.ProtoICMPv6):
		if !owned {
			e.counters.inc(RxNotOurs)
			return
		}
		buf := ifc.Sink.NextFrame()
		if buf == nil {
			e.counters.inc(TxNoBuffer)
			return
		}
		if n := wire.EncodeEchoReply(buf, p); n > 0 {
			ifc.Sink.Commit(n)
			e.counters.inc(TxFrames)
			e.counters.inc(ICMPEchoReplies)
		}
	case p.Proto == wire.ProtoICMPv6 && ic.Type == wire.ICMPv6NeighborSolicit:
		if !e.owns(ic.Target) || p.TTL != 255 { // RFC 4861 section 7.1.1
			e.counters.inc(ICMPIgnored)
			return
		}
		e.counters.inc(NDPSolicitsIn)
		if ic.HasLinkAddr && !p.Src.IsUnspecified() {
			e.learn(e.inIf, p.Src, ic.LinkAddr)
		}
		dst, dstMAC := p.Src, p.EthSrc
		if p.Src.IsUnspecified() { // duplicate address detection: answer to all-nodes
			dst, dstMAC = allNodes, wire.MAC{0x33, 0x33, 0, 0, 0, 1}
		}
		buf := ifc.Sink.NextFrame()
		if buf == nil {
			e.counters.inc(TxNoBuffer)
			return
		}
		if n := wire.EncodeNeighborAdvert(buf, ifc.MAC, ic.Target, dstMAC, dst, ic.Target); n > 0 {
			ifc.Sink.Commit(n)
			e.counters.inc(TxFrames)
			e.counters.inc(NDPAdvertsOut)
		}
	case p.Proto == wire.ProtoICMPv6 && ic.Type == wire.ICMPv6NeighborAdvert:
		if ic.HasLinkAddr && p.TTL == 255 {
			e.learn(e.inIf, ic.Target, ic.LinkAddr)
			e.counters.inc(ARPRepliesIn)
			return
		}
		e.counters.inc(ICMPIgnored)
	case p.Proto == wire.ProtoICMP && ic.Type == wire.ICMPv4DestUnreachable && ic.Code == wire.ICMPv4CodeFragNeeded,
		p.Proto == wire.ProtoICMPv6 && ic.Type == wire.ICMPv6PacketTooBig:
		e.pathMTU(ic)
	default:
		if e.secondChanceUnreachable(p) {
			return
		}
		e.counters.inc(ICMPIgnored)
	}
}

// pathMTU lowers the MSS of the connection an ICMP "fragmentation needed" or
// "packet too big" quotes (RFC 1191, RFC 8201), after checking that the
// quoted sequence number is one we have in flight (RFC 5927 section 4.1), so
// that a blind attacker cannot shrink our segments.
func (e *Engine) pathMTU(ic *wire.ICMP) {
	in := &ic.Inner
	if !in.Valid {
		e.counters.inc(ICMPIgnored)
		return
	}
	k := FlowKey{LocalAddr: in.Src, RemoteAddr: in.Dst, LocalPort: in.SrcPort, RemotePort: in.DstPort}
	c := e.flows[k]
	if c == nil || !seqnum.Value(in.Seq).InRange(c.sndUna, c.sndNxt.Add(1)) {
		e.counters.inc(ICMPIgnored)
		return
	}
	hdr, floor := wire.IPv4HeaderLen+wire.TCPHeaderLen, 576
	if k.LocalAddr.Is6() {
		hdr, floor = wire.IPv6HeaderLen+wire.TCPHeaderLen, 1280
	}
	mss := max(int(ic.MTU), floor) - hdr
	if mss >= c.sndMSS {
		e.counters.inc(ICMPIgnored)
		return
	}
	c.sndMSS = mss
	c.cc.setMSS(c.effectiveMSS())
	e.counters.inc(ICMPPathMTU)
	// What was sent at the old size is lost: resend it at the new size
	// without a congestion response (Linux's tcp_simple_retransmit).
	if c.sndNxt != c.sndUna && c.state.synchronized() {
		c.inRecovery, c.rtoRecovery = true, true
		c.recoverySeq = c.sndNxt
		c.markAllLost()
		c.output()
	}
}
