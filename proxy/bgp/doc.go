// Package bgp is xdproxy's BGP speaker (the bgp block of the
// configuration), on GoBGP used as a library: it opens a session to each
// configured neighbor and announces each announced listener's address as
// a host route (/32 or /128) while this node can serve that listener —
// its shards up, not draining, at least one backend eligible (healthy,
// ready, of a positive weight) — and withdraws it when the node cannot.
// Routers that receive the same prefix from several xdproxy nodes spread
// flows across them by ECMP; balance: maglev keeps the nodes' backend
// choices in agreement (proxy/balance).
//
// Shutdown is withdraw first: WithdrawAll, then bgp.withdraw_delay for
// the routers to move new flows away, then the proxy drains. A reload
// (Apply) keeps every session whose neighbor settings did not change.
//
// The speaker opens the sessions itself and does not listen on port 179:
// the routers may be configured passive. Each neighbor carries the
// address family of its own address (an IPv6 listener is announced to
// IPv6 neighbors). Communities are RFC 1997 standard communities.
//
// A neighbor's bfd block turns on GoBGP's BFD (single hop, RFC 5881) for
// it: GoBGP resets the BGP session when BFD says the neighbor is down.
// The speaker reports the BFD session in /bgp and the xdproxy_bgp_bfd_*
// metrics, applies a change of the bfd block alone without a reset of
// its own (bfdChange) and gives GoBGP a fresh BFD session whenever a BGP
// session with BFD goes down (restartBFD: otherwise GoBGP and BIRD can
// reset each other for ever).
//
// bgp.second_chance lists the other nodes behind the same routes; it is
// not the speaker's: the engines hand segments of connections they do not
// hold to those peers (stack/secondchance.go) and the XDP program takes
// what the peers forward (bpf, AddPeer), so that a change of next hops
// (a node drained or added) does not reset the sessions it moves.
package bgp
