package stack

import (
	"net/netip"

	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// neighborTable maps next-hop IPs to MACs. The shard loop fills it from the
// kernel's neighbour table (netlink); the engine adds what ARP replies and
// neighbour advertisements tell it, and asks with its own ARP/NDP when an
// active open needs a next hop it does not know.
type neighborTable struct {
	macs    map[netip.Addr]wire.MAC
	routes  []route
	waiting []*Conn // active opens whose next hop is not resolved yet
}

var allNodes = netip.AddrFrom16([16]byte{0: 0xff, 1: 0x02, 15: 1})

type route struct {
	prefix  netip.Prefix
	gateway netip.Addr
}

func (t *neighborTable) init() { t.macs = make(map[netip.Addr]wire.MAC) }

// SetNeighbor records ip's MAC address.
func (e *Engine) SetNeighbor(ip netip.Addr, mac wire.MAC) {
	e.neigh.macs[ip] = mac
	e.resolved(ip)
}

// AddRoute sends traffic for prefix through gateway; destinations that match
// no route are on-link. The longest matching prefix wins.
func (e *Engine) AddRoute(prefix netip.Prefix, gateway netip.Addr) {
	e.neigh.routes = append(e.neigh.routes, route{prefix.Masked(), gateway})
}

// nextHop is the address whose MAC frames to dst go to.
func (t *neighborTable) nextHop(dst netip.Addr) netip.Addr {
	best, bits := dst, -1
	for _, r := range t.routes {
		if r.prefix.Contains(dst) && r.prefix.Bits() > bits {
			best, bits = r.gateway, r.prefix.Bits()
		}
	}
	return best
}

func (c *Conn) nextHop() netip.Addr { return c.e.neigh.nextHop(c.key.RemoteAddr) }

// request asks for target's MAC from src: ARP for IPv4, a neighbour solicitation for IPv6.
func (t *neighborTable) request(e *Engine, src, target netip.Addr) {
	buf := e.sink.NextFrame()
	if buf == nil {
		e.counters.inc(TxNoBuffer)
		return
	}
	var n int
	if target.Is4() {
		n = wire.EncodeARP(buf, wire.ARPRequest, e.cfg.MAC, src, wire.MAC{}, target)
	} else {
		n = wire.EncodeNeighborSolicit(buf, e.cfg.MAC, src, target)
	}
	if n == 0 {
		e.counters.inc(TxNoBuffer)
		return
	}
	e.sink.Commit(n)
	e.counters.inc(TxFrames)
	e.counters.inc(ARPRequestsOut)
}

// resolved sends the SYNs of active opens that were waiting for ip's MAC.
func (e *Engine) resolved(ip netip.Addr) {
	if len(e.neigh.waiting) == 0 {
		return
	}
	mac := e.neigh.macs[ip]
	kept := e.neigh.waiting[:0]
	for _, c := range e.neigh.waiting {
		switch {
		case c.state != SynSent || c.macKnown:
			// gone, or resolved by another path: drop from the list
		case c.nextHop() == ip:
			c.peerMAC, c.macKnown = mac, true
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
		_, known := e.neigh.macs[a.SenderIP]
		e.neigh.macs[a.SenderIP] = a.SenderMAC
		if !known {
			e.resolved(a.SenderIP)
		}
	}
	switch a.Op {
	case wire.ARPRequest:
		e.counters.inc(ARPRequestsIn)
		buf := e.sink.NextFrame()
		if buf == nil {
			e.counters.inc(TxNoBuffer)
			return
		}
		if n := wire.EncodeARP(buf, wire.ARPReply, e.cfg.MAC, a.TargetIP, a.SenderMAC, a.SenderIP); n > 0 {
			e.sink.Commit(n)
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
	owned := e.owns(p.Dst)
	switch {
	case (ic.Type == wire.ICMPv4EchoRequest && p.Proto == wire.ProtoICMP) ||
		(ic.Type == wire.ICMPv6EchoRequest && p.Proto == wire.ProtoICMPv6):
		if !owned {
			e.counters.inc(RxNotOurs)
			return
		}
		buf := e.sink.NextFrame()
		if buf == nil {
			e.counters.inc(TxNoBuffer)
			return
		}
		if n := wire.EncodeEchoReply(buf, p); n > 0 {
			e.sink.Commit(n)
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
			e.neigh.macs[p.Src] = ic.LinkAddr
		}
		dst, dstMAC := p.Src, p.EthSrc
		if p.Src.IsUnspecified() { // duplicate address detection: answer to all-nodes
			dst, dstMAC = allNodes, wire.MAC{0x33, 0x33, 0, 0, 0, 1}
		}
		buf := e.sink.NextFrame()
		if buf == nil {
			e.counters.inc(TxNoBuffer)
			return
		}
		if n := wire.EncodeNeighborAdvert(buf, e.cfg.MAC, ic.Target, dstMAC, dst, ic.Target); n > 0 {
			e.sink.Commit(n)
			e.counters.inc(TxFrames)
			e.counters.inc(NDPAdvertsOut)
		}
	case p.Proto == wire.ProtoICMPv6 && ic.Type == wire.ICMPv6NeighborAdvert:
		if ic.HasLinkAddr && p.TTL == 255 {
			_, known := e.neigh.macs[ic.Target]
			e.neigh.macs[ic.Target] = ic.LinkAddr
			if !known {
				e.resolved(ic.Target)
			}
			e.counters.inc(ARPRepliesIn)
			return
		}
		e.counters.inc(ICMPIgnored)
	case p.Proto == wire.ProtoICMP && ic.Type == wire.ICMPv4DestUnreachable && ic.Code == wire.ICMPv4CodeFragNeeded,
		p.Proto == wire.ProtoICMPv6 && ic.Type == wire.ICMPv6PacketTooBig:
		e.pathMTU(ic)
	default:
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
		c.recoverySeq, c.highRxt = c.sndNxt, c.sndUna
		c.output()
	}
}
