package stack

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/xdproxy/xdproxy/stack/wire"
)

// Second chance: several nodes behind ECMP announce the same listener
// address, and a change of next hops (a node drained, added or back) makes
// the router hash some established flows to a node that holds no state for
// them. Instead of answering such a segment with RST, the node hands it
// to the other nodes (GitHub GLB's "second chance", Cloudflare Unimog's
// forwarding to the previous owner), encapsulated IP in IP to each peer's
// unicast address; the node that holds the connection takes it (its XDP
// program strips the outer header, bpf/xdp.c) and answers the client
// straight through the router (direct server return).
//
// What is forwarded: every segment to an address:port the engine listens
// on that matches no
// connection, no TIME_WAIT entry and no SYN cookie and carries no SYN —
// plain ACKs, data, FINs and RSTs of a connection held elsewhere. A SYN
// opens a connection here as usual.
//
// At most once: the XDP program marks a decapsulated frame with the
// destination MAC wire.SecondChanceMAC, and a marked segment that matches
// nothing is never forwarded again (SecondChanceNoOwner). With one peer
// (two nodes) it is answered as today: nobody holds the connection, RST.
// With several peers every one got a copy and one of them may hold it, so
// the others drop theirs silently; a connection no node holds is then not
// reset but times out at the client.
//
// A peer whose host answers a forwarded packet with ICMP destination
// unreachable (its daemon is not running: its kernel has no handler for IP
// in IP) is passed over for PeerDownFor, and while every peer of the
// family is passed over stray segments are answered as without second
// chance (RST). A peer that is silent (its machine is gone) cannot be told
// from a live one: the clients it held time out instead of being reset.
//
// Cost: nothing on a segment that matches a connection; per forwarded
// segment, per peer, one route lookup, one neighbour lookup and one copy
// of the packet into a TX frame (BenchmarkSecondChanceForward). To leave
// room for the outer header in the link MTU, the engine advertises an MSS
// smaller by the encapsulation (20 bytes for IPv4, 40 for IPv6) on every
// interface while peers are configured.

// SecondChance configures second chance forwarding (Config.SecondChance).
type SecondChance struct {
	// Peers are the other nodes' unicast addresses: a stray IPv4 segment is
	// sent (IPv4 in IPv4) to each IPv4 peer, an IPv6 one (IPv6 in IPv6) to
	// each IPv6 peer. The outer packet leaves from the engine's source
	// address for the peer's route, which is what the peers must list in
	// turn (their XDP programs decapsulate only from listed peers).
	Peers []netip.Addr
}

func (sc *SecondChance) validate() error {
	seen := map[netip.Addr]bool{}
	for i, a := range sc.Peers {
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
			return fmt.Errorf("SecondChance.Peers[%d]: %v is not a unicast address", i, a)
		}
		if seen[a.Unmap()] {
			return fmt.Errorf("SecondChance.Peers[%d]: %v listed twice", i, a)
		}
		seen[a.Unmap()] = true
	}
	return nil
}

// PeerDownFor is how long a peer that answered a forwarded packet with ICMP
// destination unreachable is passed over.
const PeerDownFor = 5 * time.Second

// secondChance is the engine's side: the peers split by family.
type secondChance struct {
	peers4, peers6 []scPeer
}

type scPeer struct {
	addr      netip.Addr
	downUntil Time // passed over before this (an ICMP unreachable came back)
}

// initSecondChance takes the configured peers and lowers the MSS that every
// interface advertises by the outer header, so that a full-sized segment a
// client sends still fits the MTU once forwarded.
func (e *Engine) initSecondChance(cfg SecondChance) {
	for _, a := range cfg.Peers {
		if a = a.Unmap(); a.Is4() {
			e.sc.peers4 = append(e.sc.peers4, scPeer{addr: a})
		} else {
			e.sc.peers6 = append(e.sc.peers6, scPeer{addr: a})
		}
	}
	if len(cfg.Peers) == 0 {
		return
	}
	for i := range e.ifs {
		e.ifs[i].mss4 -= wire.IPv4HeaderLen
		e.ifs[i].mss6 -= wire.IPv6HeaderLen
	}
}

// secondChance hands s, a segment that matched nothing, to the other nodes
// when it is one of theirs (see the top of this file), and reports whether
// it took the segment: the caller then sends nothing. It is the only
// second chance hook in the input path; segments that match a connection
// never reach it.
func (e *Engine) secondChance(s *segment) bool {
	peers := e.sc.peers4
	if !s.key.LocalAddr.Is4() {
		peers = e.sc.peers6
	}
	if len(peers) == 0 || s.flags&wire.FlagSYN != 0 {
		return false
	}
	if _, ok := e.listeners[s.key.Local()]; !ok {
		return false // not a listener's: a backend leg's port, ours alone
	}
	p := &e.pkt
	if p.EthDst == wire.SecondChanceMAC {
		// Forwarded to us already: never again. The only candidate (one
		// peer) answers as a host without the connection; one of several
		// stays silent, another may hold it.
		e.counters.inc(SecondChanceNoOwner)
		return len(peers) > 1
	}
	ip := p.IPPacket()
	live, sent := false, false
	for i := range peers {
		if e.now < peers[i].downUntil {
			continue
		}
		live = true
		if e.forwardTo(peers[i].addr, ip) {
			sent = true
		}
	}
	if !live {
		// Every peer said it cannot take them: nobody else holds it.
		e.counters.inc(SecondChancePeersDown)
		return false
	}
	if sent {
		e.counters.inc(SecondChanceForwarded)
	}
	// Not sent (no route, next hop unresolved, too big: counted): dropped,
	// not reset — the peer may hold the connection, and the client's
	// retransmission comes back here once the next hop is known.
	return true
}

// forwardTo sends ip, encapsulated, to peer by the route the kernel names
// for it. A next hop without a known MAC is resolved (the interface's
// resolver, else our own ARP/NDP) and this packet is lost.
func (e *Engine) forwardTo(peer netip.Addr, ip []byte) bool {
	r, ok := e.neigh.lookup(peer)
	if !ok {
		e.counters.inc(SecondChanceNoRoute)
		return false
	}
	src := e.sourceFor(r, peer)
	if !src.IsValid() {
		e.counters.inc(SecondChanceNoRoute)
		return false
	}
	ifx := uint8(r.Iface)
	ifc := &e.ifs[ifx]
	nh := r.nextHop(peer)
	mac, ok := e.neigh.macs[neighKey{nh, ifx}]
	if !ok {
		e.counters.inc(SecondChanceUnresolved)
		if ifc.Resolve != nil && ifc.Resolve(src, nh) {
			e.counters.inc(NeighborResolves)
		} else {
			e.neigh.request(e, ifx, src, nh)
		}
		return false
	}
	if wire.EncapOverhead(peer)+len(ip) > ifc.MTU {
		e.counters.inc(SecondChanceTooBig)
		return false
	}
	buf := ifc.Sink.NextFrame()
	if buf == nil {
		e.counters.inc(TxNoBuffer)
		return false
	}
	n := wire.EncodeIPInIP(buf, ifc.MAC, mac, src, peer, ip)
	if n == 0 {
		e.counters.inc(SecondChanceTooBig)
		return false
	}
	ifc.Sink.Commit(n)
	e.counters.inc(TxFrames)
	return true
}

// secondChanceUnreachable takes an ICMP destination unreachable that quotes
// a packet we forwarded (IP in IP from one of our addresses to a peer): the
// peer's host cannot take them, so the peer is passed over for PeerDownFor.
// It reports whether p was such a message.
func (e *Engine) secondChanceUnreachable(p *wire.Packet) bool {
	q := p.Payload // the quoted packet, from its IP header
	var src, dst netip.Addr
	peers := e.sc.peers4
	switch {
	case p.Proto == wire.ProtoICMP && p.ICMP.Type == wire.ICMPv4DestUnreachable:
		if len(q) < wire.IPv4HeaderLen || q[0]>>4 != 4 || q[9] != wire.ProtoIPIP {
			return false
		}
		src, dst = netip.AddrFrom4([4]byte(q[12:16])), netip.AddrFrom4([4]byte(q[16:20]))
	case p.Proto == wire.ProtoICMPv6 && p.ICMP.Type == wire.ICMPv6DestUnreachable:
		if len(q) < wire.IPv6HeaderLen || q[0]>>4 != 6 || q[6] != wire.ProtoIPv6Encap {
			return false
		}
		src, dst = netip.AddrFrom16([16]byte(q[8:24])), netip.AddrFrom16([16]byte(q[24:40]))
		peers = e.sc.peers6
	default:
		return false
	}
	if !e.owns(src) {
		return false
	}
	for i := range peers {
		if peers[i].addr == dst {
			peers[i].downUntil = e.now.Add(PeerDownFor)
			e.counters.inc(SecondChancePeerUnreachable)
			return true
		}
	}
	return false
}
