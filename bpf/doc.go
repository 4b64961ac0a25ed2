// Package bpf holds xdproxy's XDP program, which steers the packets xdproxy
// owns into the AF_XDP socket (XSK) of the queue they arrived on and passes
// everything else to the kernel, together with its maps, its loader and its
// BPF_PROG_TEST_RUN fixtures.
//
// # Files
//
//	xdp.c          the program (xdproxy_steer) and its maps
//	parse.h        header parsing: cursor, Ethernet and VLAN, ARP, ICMP layouts
//	xdproxy.h      map key/value layouts and constants shared with Go
//	syncookie.h    SYN cookies: SipHash-2-4, the engine's cookie, option walk, checksums
//	cookie.go      SetCookieResponder, SetCookieSecret, SetSYNCookies, SetCookieLearning
//	gen.go         the bpf2go line; xdp_bpfel.go and xdp_bpfel.o are generated
//	               and committed, so building needs no clang (make generate)
//	loader.go      Load, Attach/Detach, map updates, Counters
//	netlink.go     what rtnetlink says is attached; detaching netlink programs
//
// # What is steered
//
// After Ethernet and up to two VLAN tags (802.1Q or 802.1ad, any VLAN ID):
//
//   - TCP to a listener address:port (the client legs), IPv4 or IPv6.
//     A listener on 0.0.0.0 or :: matches every destination address of its
//     family (RedirectListener).
//   - TCP to an owned address with a destination port in its owned range:
//     the return traffic of the backend legs (RedirectOwned).
//   - ARP requests and replies (Ethernet/IPv4) whose target address is a
//     neighbour address (RedirectARP), and neighbour solicitations and
//     advertisements (ICMPv6 135/136) whose target is one (RedirectNDP).
//     Neighbour addresses are those the kernel does not own and the engine
//     answers for.
//   - Only with SetICMPSteering(true): ICMP/ICMPv6 echo requests to a
//     neighbour address, and ICMP errors (destination unreachable with
//     fragmentation needed among them, packet too big, time exceeded,
//     parameter problem) that quote a TCP segment sent from a listener
//     address:port or an owned port (RedirectICMP): the engine's path MTU
//     discovery and ping; and, with a second chance peer, ICMP errors that
//     quote an IP-in-IP packet to a peer (the engine passes that peer over
//     for a while). Off after Load.
//   - Second chance, once a peer is added (AddPeer): IPv4 in IPv4
//     (protocol 4, RFC 2003) or IPv6 in IPv6 (next header 41, RFC 2473)
//     from a peer node's address, without outer options or fragmentation,
//     whose inner packet is TCP to a listener and fills the outer packet
//     exactly: another node got a segment of a connection it does not hold
//     and forwarded it (stack/secondchance.go). The program strips the
//     outer Ethernet header, VLAN tags and IP header (bpf_xdp_adjust_head)
//     and writes a new Ethernet header in front of the inner packet: the
//     outer frame's source MAC, destination SECOND_CHANCE_MAC
//     (0e:78:64:73:63:00, "xdsc"; stack/wire.SecondChanceMAC), which tells
//     the engine that the segment was forwarded already and must not be
//     forwarded again (RedirectSecondChance). A tunnel from anyone else,
//     or to anything else, is the kernel's; a peer's tunnel whose lengths
//     disagree or whose inner TCP header is cut short is dropped
//     (DropMalformed). The outer header checksum is not checked (the inner
//     TCP checksum is, by the engine).
//
// Everything else is passed (XDP_PASS). A packet that is ours by address and
// port (or NDP target) but malformed is dropped (XDP_DROP, DropMalformed):
// TCP header cut short, data offset below 5 or past the segment, IP total or
// payload length past the frame or shorter than the headers, NDP with a code
// other than 0 or a hop limit other than 255 (RFC 4861 section 7.1).
// XDP_ABORTED is returned only if index 0 of an array map were missing.
//
// Redirects use bpf_redirect_map(&xsks, rx_queue_index, XDP_PASS): when the
// queue has no socket the packet goes to the kernel and RedirectFailed counts
// it (besides its reason counter).
//
// # SYN cookies
//
// With SetSYNCookies(true) the program answers SYN floods itself. A SYN to a
// listener (no ACK, RST or FIN) becomes, in place, the SYN-ACK the engine's
// sendCookie would send for it at that instant — byte for byte: the cookie
// ISN (stack/syncookie.go: epoch<<24 | SipHash-2-4 MAC of the 4-tuple and
// client ISN + MSS index, under the epoch's secret), our MSS, and with
// timestamps SACK-permitted, window scale and a TSval whose low six bits
// carry the client's window scale and SACK-permitted — and goes back out of
// the interface it came in by (XDP_TX, TxSYNCookie), MACs swapped, VLAN tags
// kept, any payload cut. The clock is CLOCK_BOOTTIME (bpf_ktime_get_boot_ns),
// which is the engines' (proxy/dataplane's now); the epoch is it divided by
// the secret lifetime, and the secrets of the epochs around now come from the
// engine's own keys (SetCookieSecret, stack.Keys.CookieSecret). An ACK (no
// SYN, no RST) to a listener then passes only if its flow is in
// cookie_flows — confirmed, or its SYN seen less than 5 s ago — or if ack-1
// is a valid cookie for seq-1 under the current or the previous epoch's
// secret (CookieACK; its flow is added, confirmed); the rest are dropped
// (DropBadCookie). The engine checks the cookie again and takes MSS,
// window scale and SACK from it as from its own (stack.Engine.SetExternalCookies
// lets it accept cookies it did not send). With SetCookieLearning(true)
// and cookies off, every SYN steered to a listener adds its flow to
// cookie_flows, unconfirmed, and its first ACK confirms it (a lookup per
// ACK to a listener), so that turning cookies on does not cut the engine's
// own handshakes and connections, while the spoofed SYNs of a flood that
// came before the switch, never acknowledged, stop vouching for their
// flows 5 s after they were seen. The SYN is left to the engine (steered as
// before, its flow learnt) when the IPv4 header has options, when no secret
// is installed for now's epoch, or when the frame cannot be resized.
//
// The cookie code walks the SYN's options with bpf_loop over a copy made
// by bpf_xdp_load_bytes (as the kernel's xdp_synproxy selftest does: an
// open-coded walk over packet pointers is more than the verifier will
// explore), so the program needs Linux 5.18 or later.
//
// XDP_TX on veth: in native mode the frame goes to the peer through
// veth_xdp_xmit, which refuses it (rx_queue_N_xdp_tx_errors in ethtool -S)
// unless the peer end has NAPI on — an XDP program attached, or GRO turned
// on (ethtool -K PEER gro on). In generic mode XDP_TX works on any veth (it
// goes through the peer's ordinary receive path). Physical NICs in native
// mode transmit on their own TX rings.
//
// # Maps
//
// Every address is 16 bytes in network byte order: IPv6 as is, IPv4 as the
// IPv4-mapped address ::ffff:a.b.c.d (so 192.0.2.1 is 00 00 00 00 00 00 00
// 00 00 00 ff ff c0 00 02 01); the loader maps IPv4-mapped netip.Addrs to
// IPv4 and drops zones.
//
//	listeners     HASH, 1024   key  {addr [16]byte; port uint16 (network order, as on the wire); pad uint16 = 0}  (20 bytes)
//	                           value uint32, unused (0)
//	owned_ranges  HASH, 256    key  addr [16]byte
//	                           value {lo, hi uint16 (host order, inclusive)}: one range per address
//	arp_addrs     HASH, 256    key  addr [16]byte
//	                           value uint32, unused (0)
//	peers         HASH, 64     key  addr [16]byte: a second chance peer (outer source)
//	                           value uint32, unused (0)
//	xsks          XSKMAP, 64   key  queue index uint32; value XSK fd (MaxQueues)
//	settings      ARRAY, 1     {flags uint32}: bit 0 steering enabled (set by Load),
//	                           bit 1 a wildcard listener exists (kept by the loader),
//	                           bit 2 ICMP steering, bit 3 SYN cookies, bit 4 cookie learning,
//	                           bit 5 a second chance peer exists (kept by the loader)
//	counters      PERCPU_ARRAY, 1   struct of uint64 counters, below
//	syn_cookie    ARRAY, 1     what the cookie SYN-ACK needs (SetCookieResponder):
//	                           lifetime (ns), timestamp key, MSS table, MSS v4/v6, window, wscale
//	cookie_keys   ARRAY, 4     {epoch, k0, k1 uint64; valid, pad uint32}: epoch e's secret in slot e % 4
//	cookie_flows  LRU_HASH, 262144   key {local, remote [16]byte; lport, rport uint16 (network order)}
//	                           value {seen_ns uint64; confirmed, pad uint32}: client legs known while cookies are on
//
// # Counters
//
// In order, with the names Counters.List gives them: rx_packets (every
// packet), redirect_listener, redirect_owned, redirect_arp, redirect_ndp,
// redirect_icmp, redirect_second_chance, pass_not_ours, pass_disabled
// (steering off), drop_malformed, redirect_failed, tx_syn_cookie,
// drop_bad_cookie and cookie_ack. Each packet is counted in rx_packets and
// in exactly one of redirect_listener ... drop_malformed, tx_syn_cookie and
// drop_bad_cookie; redirect_failed counts the redirects, already counted by
// reason, that found no socket and went to the kernel, and cookie_ack the
// listener redirects that a valid cookie let through.
//
// # Attaching
//
// Attach uses a BPF link (Linux 5.9 or later), which the kernel removes when
// the process exits, so a killed xdproxy leaves nothing behind. An xdproxy
// program found on the interface (any program whose name starts with
// "xdproxy": a link of another live Program, or one attached through netlink
// by an older version or by hand, which outlives its process) is detached
// first: programs never stack. For that short moment the interface runs no
// program and its packets go to the kernel. A program of anyone else is left
// in place and Attach fails with ErrForeignProgram. ModeAuto tries native
// (driver) mode, then generic; AttachedMode says which one took.
//
// # Known bypasses and limits
//
//   - IPv6 extension headers are not walked: TCP behind any of them
//     (hop-by-hop, routing, destination options, fragment) passes to the
//     kernel, as do ICMPv6 and NDP behind them.
//   - IPv4 fragments, the first included, pass to the kernel: the engine
//     never sees fragmented TCP. If the kernel owns the address it
//     reassembles them and, with no socket there, answers with a RST.
//   - Packets whose deciding field is cut off (IPv4 header shorter than 20
//     bytes or with IHL below 5, fewer than 4 bytes of TCP, truncated ARP or
//     NDP target) cannot be shown to be ours and pass; the kernel drops them.
//   - Three or more VLAN tags pass. The VLAN ID is not looked at: a listener
//     matches on every VLAN. NICs that strip the VLAN tag in hardware hand
//     XDP (and the XSK) untagged frames.
//   - Checksums are not verified here (the engine does), and the Ethernet
//     destination address is not checked.
//   - Queues 64 and up have no XSK slot: their packets pass to the kernel
//     (counted as redirect_failed).
//   - A socket in xsks that is bound to another interface or queue makes the
//     redirect fail after the program returned: the kernel drops the packet,
//     visible only through the xdp:xdp_redirect_err tracepoint.
//   - In generic mode the program sees GRO-merged packets; frames larger than
//     the XSK's frame size are dropped by the socket, and with BIG TCP an
//     IPv4 aggregate has total length 0 and is dropped as malformed: turn GRO
//     and LRO off on steered interfaces.
//   - Without SetICMPSteering(true), ICMP about the engine's flows (path MTU
//     included) goes to the kernel, which has no socket for them.
//   - SYN cookies on: the program knows no connection state, only
//     cookie_flows. A client leg whose flow is not there — evicted from the
//     LRU map (more than 262,144 flows touched since its last segment), or
//     opened while neither cookies nor learning were on — has its segments
//     taken for forged ACKs and dropped. A SYN is answered with a cookie even
//     when its 4-tuple is in the engine's TIME_WAIT table (the engine then
//     reopens it on the ACK if that is newer, RFC 6191, and the cookie
//     valid) or in SYN_RCVD (a SYN retransmitted across the switch: if
//     the client takes the cookie SYN-ACK, the engine's SYN_RCVD entry,
//     whose ISN differs, finds its ACK unacceptable and resets it; the
//     client's next attempt gets through). Cookie SYN-ACKs leave by
//     the interface the SYN came in by, to the MAC it came from, not by the
//     route the engine would pick. The Ethernet FCS and the SYN's checksums
//     are not verified before answering.
package bpf
