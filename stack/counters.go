package stack

import (
	"sync/atomic"

	"github.com/xdproxy/xdproxy/stack/wire"
)

// Counter names one of the engine's counters. Every drop the engine makes has
// one; so does every notable event.
type Counter uint16

const (
	// Frames.
	RxFrames Counter = iota
	TxFrames
	TxNoBuffer // the sink had no free frame: the outgoing frame was lost
	RxNotOurs  // valid frame for an address, protocol or port the engine does not own
	// RxPartialChecksum: TCP segments accepted on a Virtual interface whose
	// checksum field held only the pseudo-header sum (the sender's kernel
	// left it to an offload that never ran: CHECKSUM_PARTIAL over veth).
	RxPartialChecksum
	RxBadInterface // a frame handed in with an interface index the engine does not have
	// RxIgnoredTCPOptions: segments taken with a malformed TCP option
	// skipped or cut off (wire.ParseTCPOptions), as Linux takes them.
	RxIgnoredTCPOptions

	// TCP segments in and out.
	RxSegments
	TxSegments
	RxNoSocket       // segment matched no listener, connection or TIME_WAIT entry (answered by RST unless it was one)
	TxResets         // RST segments sent
	RxResets         // acceptable RSTs that reset a connection
	RxRSTIgnored     // RST out of window, or RST to no socket (never answered)
	RxOutOfWindow    // unacceptable segment sequence (answered by an ACK)
	RxACKUnsent      // ACK for data not yet sent (RFC 9293 3.10.7.4; dropped)
	RxACKTooOld      // ACK older than SND.UNA - MAX.SND.WND (RFC 5961 section 5)
	RxSYNInWindow    // SYN on a synchronized connection (RFC 5961 section 4)
	RxOutOfOrder     // in-window segment past RCV.NXT, not yet reassembled (part 2)
	RxDataAfterClose // data for a connection the application closed (answered by RST)
	RxDataAfterFIN   // data past the peer's own FIN (CLOSE_WAIT, CLOSING, LAST_ACK): ignored
	RxBadSYN         // SYN with RST/FIN, or SYN|ACK to a listener
	RxNoFlags        // segment with neither SYN, RST nor ACK on a synchronized connection
	ChallengeACKs    // RFC 5961 challenge ACKs sent
	ChallengeACKsLimited
	Retransmits         // segments sent again (timeout, loss recovery or probe)
	FastRecoveries      // loss recoveries entered on losses found by RACK (RFC 8985) or duplicate ACKs (RFC 6582)
	RTORecoveries       // retransmission timeouts with data outstanding
	RxDSACKs            // D-SACK blocks received (RFC 2883): the peer got something twice
	LostRetransmits     // retransmissions found lost (by RACK: sent before data delivered since, and out too long)
	SpuriousRecoveries  // window reductions undone: every retransmission came back D-SACKed, or timestamps showed the originals arrived
	RACKLosses          // segments RACK deemed lost (RFC 8985 section 6.2 step 5)
	RACKReoWndIncreases // D-SACK rounds that widened RACK's reordering window (section 6.2 step 4)
	RxDuplicate         // data segments entirely below RCV.NXT (answered with a D-SACK)
	RxOOOOverflow       // out-of-order segments dropped because the hole list was full
	RxPAWSRejected      // segments with a timestamp older than TS.Recent (RFC 7323 section 5)
	DelayedACKs         // ACKs sent by the delayed-ACK timer
	ZeroWindowProbes
	TailLossProbes  // RFC 8985 section 7 probes sent
	TLPRecoveries   // probes that repaired a loss (their ACK went past them): cwnd reduced (section 7.4.2)
	ReorderTimeouts // RACK's reordering timer found segments lost with no ACK after (section 6.3)
	RecoveryProbes  // fast recovery heard no ACK for a probe timeout: the segment at SND.UNA sent again
	SYNRetransmits  // SYN and SYN-ACK retransmissions
	// SYNTimeWaitCollisions: an active open's SYN drew the bare ACK of a
	// peer's TIME_WAIT for the same 4-tuple; RST sent and the SYN again at once.
	SYNTimeWaitCollisions

	// Opens and closes.
	ActiveOpens
	PassiveOpens
	EstablishedResets // established (or CLOSE_WAIT) connections ended by an RST
	ConnectRefused
	ConnectTimeouts
	RetransmitTimeouts
	HalfOpenTimeouts // SYN_RCVD entries given up after SYN-ACK retries
	FinWait2Timeouts // closed connections whose peer never sent its FIN
	EphemeralPortsExhausted
	ConnectNoRoute // no next-hop MAC known and ARP unanswered, or no route to the destination

	// Listeners.
	SYNQueueOverflow
	AcceptQueueOverflow
	SYNCookiesSent
	SYNCookiesAccepted
	SYNCookiesRejected
	SYNCookiesMemory // SYNs answered by cookie because memory was above the high mark
	SYNDropsMemory   // SYNs dropped because memory had reached the engine's share

	// Memory (memory.go).
	MemoryPressureEntered // normal to pressure (the low mark crossed)
	MemoryHighEntered     // the high mark crossed
	MemoryNormalEntered   // back under the low mark
	MemoryResets          // connections reset at the high mark, stalest first

	// TIME_WAIT.
	TimeWaitEntered
	TimeWaitExpired
	TimeWaitRecycled // oldest entry evicted because the table was full
	TimeWaitReopened // a new SYN reopened the 4-tuple (RFC 6191)
	TimeWaitReused   // an active open took over the 4-tuple (Config.TimeWaitReuse)
	TimeWaitRSTIgnored
	TimeWaitFINReACKed
	TimeWaitACKs    // other segments to a TIME_WAIT entry, answered with an ACK
	TimeWaitDupACKs // bare duplicate ACKs to a TIME_WAIT entry, dropped

	// Keepalive.
	KeepaliveProbes
	KeepaliveTimeouts

	// ARP, ICMP.
	ARPRequestsIn
	ARPRepliesOut
	ARPRequestsOut
	NeighborResolves // next hops handed to the interface's resolver (the kernel) instead of our own request
	ARPRepliesIn
	NDPSolicitsIn
	NDPAdvertsOut
	ICMPEchoReplies
	ICMPPathMTU // path MSS lowered by frag-needed / packet-too-big
	ICMPIgnored // ICMP that matched nothing we own, or was not of a kind we act on

	// Second chance (secondchance.go).
	SecondChanceForwarded  // stray segments for a listener handed to the peers (once per segment, whatever the number of peers)
	SecondChanceNoOwner    // segments a peer forwarded that match nothing here either: never forwarded again
	SecondChanceNoRoute    // copies not sent: no route (or no source address) to the peer
	SecondChanceUnresolved // copies not sent: the next hop's MAC was unknown (resolution asked)
	SecondChanceTooBig     // copies not sent: the encapsulated packet exceeds the link MTU
	// SecondChancePeerUnreachable: ICMP destination unreachable for a
	// forwarded packet; the peer is passed over for PeerDownFor.
	SecondChancePeerUnreachable
	SecondChancePeersDown // stray segments answered as without second chance: every peer passed over

	// Parse drops: one counter per wire.Drop reason, in wire's order.
	parseDropBase
	numCounters = parseDropBase + Counter(wire.NumDrops)
)

var counterNames = [numCounters]string{
	RxFrames: "rx_frames", TxFrames: "tx_frames", TxNoBuffer: "tx_no_buffer",
	RxNotOurs: "rx_not_ours", RxPartialChecksum: "rx_partial_checksum", RxBadInterface: "rx_bad_interface", RxIgnoredTCPOptions: "rx_ignored_tcp_options",
	RxSegments: "rx_segments", TxSegments: "tx_segments", RxNoSocket: "rx_no_socket",
	TxResets: "tx_resets", RxResets: "rx_resets", RxRSTIgnored: "rx_rst_ignored",
	RxOutOfWindow: "rx_out_of_window", RxACKUnsent: "rx_ack_unsent", RxACKTooOld: "rx_ack_too_old",
	RxSYNInWindow: "rx_syn_on_synchronized", RxOutOfOrder: "rx_out_of_order", RxDataAfterClose: "rx_data_after_close", RxDataAfterFIN: "rx_data_after_fin",
	RxBadSYN: "rx_bad_syn", RxNoFlags: "rx_no_flags",
	ChallengeACKs: "challenge_acks", ChallengeACKsLimited: "challenge_acks_limited",
	Retransmits: "retransmits", FastRecoveries: "fast_recoveries", RTORecoveries: "rto_recoveries",
	RxDSACKs: "rx_dsacks", LostRetransmits: "lost_retransmits", SpuriousRecoveries: "spurious_recoveries", RACKLosses: "rack_losses", RACKReoWndIncreases: "rack_reo_wnd_increases", RxDuplicate: "rx_duplicate", RxOOOOverflow: "rx_ooo_overflow", RxPAWSRejected: "rx_paws_rejected",
	DelayedACKs: "delayed_acks", ZeroWindowProbes: "zero_window_probes", TailLossProbes: "tail_loss_probes", TLPRecoveries: "tlp_recoveries", ReorderTimeouts: "reorder_timeouts", RecoveryProbes: "recovery_probes", SYNRetransmits: "syn_retransmits", SYNTimeWaitCollisions: "syn_tw_collisions",
	ActiveOpens: "active_opens", PassiveOpens: "passive_opens", EstablishedResets: "established_resets",
	ConnectRefused: "connect_refused", ConnectTimeouts: "connect_timeouts", RetransmitTimeouts: "retransmit_timeouts",
	HalfOpenTimeouts: "half_open_timeouts", FinWait2Timeouts: "fin_wait2_timeouts", EphemeralPortsExhausted: "ephemeral_ports_exhausted", ConnectNoRoute: "connect_no_route",
	SYNQueueOverflow: "syn_queue_overflow", AcceptQueueOverflow: "accept_queue_overflow",
	SYNCookiesSent: "syn_cookies_sent", SYNCookiesAccepted: "syn_cookies_accepted", SYNCookiesRejected: "syn_cookies_rejected",
	SYNCookiesMemory: "syn_cookies_memory", SYNDropsMemory: "syn_drops_memory",
	MemoryPressureEntered: "memory_pressure_entered", MemoryHighEntered: "memory_high_entered", MemoryNormalEntered: "memory_normal_entered", MemoryResets: "memory_resets",
	TimeWaitEntered: "time_wait_entered", TimeWaitExpired: "time_wait_expired", TimeWaitRecycled: "time_wait_recycled",
	TimeWaitReopened: "time_wait_reopened", TimeWaitReused: "time_wait_reused", TimeWaitRSTIgnored: "time_wait_rst_ignored", TimeWaitFINReACKed: "time_wait_fin_reacked",
	TimeWaitACKs: "time_wait_acks", TimeWaitDupACKs: "time_wait_dup_acks",
	KeepaliveProbes: "keepalive_probes", KeepaliveTimeouts: "keepalive_timeouts",
	ARPRequestsIn: "arp_requests_in", ARPRepliesOut: "arp_replies_out", ARPRequestsOut: "arp_requests_out", NeighborResolves: "neighbor_resolves", ARPRepliesIn: "arp_replies_in",
	NDPSolicitsIn: "ndp_solicits_in", NDPAdvertsOut: "ndp_adverts_out",
	ICMPEchoReplies: "icmp_echo_replies", ICMPPathMTU: "icmp_path_mtu", ICMPIgnored: "icmp_ignored",
	SecondChanceForwarded: "second_chance_forwarded", SecondChanceNoOwner: "second_chance_no_owner",
	SecondChanceNoRoute: "second_chance_no_route", SecondChanceUnresolved: "second_chance_unresolved", SecondChanceTooBig: "second_chance_too_big",
	SecondChancePeerUnreachable: "second_chance_peer_unreachable", SecondChancePeersDown: "second_chance_peers_down",
}

func init() {
	for d := wire.Drop(1); d < wire.NumDrops; d++ {
		counterNames[parseDropBase+Counter(d)] = "rx_drop_" + d.String()
	}
}

// ParseDropCounter is the counter for frames wire.Parse refused for reason d.
func ParseDropCounter(d wire.Drop) Counter { return parseDropBase + Counter(d) }

// NumCounters is the number of counters; Counter(0) .. NumCounters-1 are all valid.
const NumCounters = int(numCounters)

// Name is the counter's snake_case name, used in metrics.
func (c Counter) String() string {
	if int(c) < len(counterNames) && counterNames[c] != "" {
		return counterNames[c]
	}
	return "unused"
}

// Counters are one engine's counters. The engine's goroutine is the only
// writer; any goroutine may read them. A write is an atomic store of a value
// the writer alone computes, which costs a plain MOV on amd64 — no locked
// read-modify-write on the hot path.
type Counters struct {
	v [numCounters]atomic.Uint64
}

func (c *Counters) inc(k Counter)           { c.v[k].Store(c.v[k].Load() + 1) }
func (c *Counters) add(k Counter, n uint64) { c.v[k].Store(c.v[k].Load() + n) }

// Load returns counter k.
func (c *Counters) Load(k Counter) uint64 { return c.v[k].Load() }

// Snapshot copies every counter into dst (which must hold NumCounters) and returns it.
func (c *Counters) Snapshot(dst []uint64) []uint64 {
	dst = dst[:NumCounters]
	for i := range dst {
		dst[i] = c.v[i].Load()
	}
	return dst
}
