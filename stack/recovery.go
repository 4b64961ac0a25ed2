package stack

import (
	"time"

	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// Loss recovery is RACK-TLP (RFC 8985) over the SACK scoreboard, with
// Proportional Rate Reduction (RFC 6937) pacing what fast recovery sends,
// and NewReno (RFC 6582) when the peer does not do SACK.
//
// Every segment in flight has a record (sentq.go) with its latest send
// time on the engine's nanosecond clock. Losses are found by time (RACK,
// rack.go): a segment sent before one that was delivered, and out for
// longer than RACK's RTT plus a reordering window, is lost — the first
// transmission or a retransmission alike, so a lost retransmission is
// resent without an RTO. The reordering window adapts to D-SACKs (RFC 8985
// section 6.2), and a timer judges what was too young when the last ACK
// came. A tail loss probe (section 7) makes the receiver show what is
// missing when the last segments of a flight, or their ACKs, are lost.
//
// Around RACK, what Linux keeps too: the scoreboard (the SACKed ranges
// above SND.UNA, from which each record's SACKed mark is set), RFC 6675's
// pipe (the bytes in flight: un-SACKed, not lost, plus retransmissions in
// flight), PRR for how much goes per ACK in recovery, and the undo of a
// window reduction that D-SACKs or timestamps show was spurious (RFC 3708,
// RFC 3522). RTT samples come from the send times as well (rack.go): only
// never-retransmitted data is measured, so SRTT is exact to the
// microsecond on a LAN; the timestamp option stays for PAWS and the peer.
//
// Without SACK, recovery is NewReno: DupThresh duplicate ACKs mark the
// first unacknowledged segment lost, and so does each partial ACK.
//
// After an RTO every un-SACKed segment is lost (as Linux's tcp_enter_loss
// marks them) and slow start resends them.

// dupThresh is RFC 5681's DupThresh: NewReno's duplicate ACKs, and the
// SACKed segments past which RACK's reordering window is zero until
// reordering has been seen.
const dupThresh = 3

// updateScoreboard takes the ACK's SACK blocks (RFC 2018) and marks the
// records they newly cover; it reports whether they SACKed anything new.
// Blocks outside [SND.UNA, SND.NXT] carry nothing; a D-SACK block (RFC
// 2883: the first block below the cumulative ACK, or inside another block)
// says a retransmission was spurious (onDSACK).
func (c *Conn) updateScoreboard(o *wire.TCPOptions, ack seqnum.Value) bool {
	// RACK takes what an ACK delivers in ascending order (RFC 8985 section
	// 6.2 step 3: else a block reported before, whose ACK was lost, would
	// look like reordering), so the blocks are sorted by their start.
	var blocks [len(o.SACK)]seqRange
	nb := 0
	for i := 0; i < int(o.NumSACK); i++ {
		start, end := seqnum.Value(o.SACK[i].Start), seqnum.Value(o.SACK[i].End)
		if !start.LessThan(end) || end.GreaterThan(c.sndNxt) {
			continue
		}
		if i == 0 && isDSACK(o, ack) {
			c.e.counters.inc(RxDSACKs)
			c.rack.ackDSACK, c.rack.ackDSACKEnd = true, end
			c.onDSACK(start)
			continue
		}
		k := nb
		for ; k > 0 && start.LessThan(blocks[k-1].start); k-- {
			blocks[k] = blocks[k-1]
		}
		blocks[k] = seqRange{start, end}
		nb++
	}
	newInfo := false
	for _, b := range blocks[:nb] {
		start, end := seqnum.Max(b.start, c.sndUna), b.end
		if !start.LessThan(end) || c.sacked.covers(start, end) {
			continue // repeated: receivers report held ranges in every ACK
		}
		// The parts of the block not SACKed before: only their records change.
		var gaps [maxOOORanges + 1]seqRange
		ng, at := 0, start
		for k := 0; k < c.sacked.n && at.LessThan(end); k++ {
			r := c.sacked.r[k]
			if r.end.LessThanEq(at) {
				continue
			}
			if !r.start.LessThan(end) {
				break
			}
			if r.start.GreaterThan(at) {
				gaps[ng] = seqRange{at, r.start}
				ng++
			}
			at = seqnum.Max(at, r.end)
		}
		if at.LessThan(end) {
			gaps[ng] = seqRange{at, end}
			ng++
		}
		c.sacked.add(start, end) // a full scoreboard still marks the records
		for _, g := range gaps[:ng] {
			if c.sackRecords(g.start, g.end, start, end) {
				newInfo = true
			}
		}
	}
	return newInfo
}

// sackRecords marks SACKed the records overlapping [a, b) that the block
// [bs, be) — or the scoreboard as a whole — covers entirely, delivering
// them to RACK. It reports whether any was marked.
func (c *Conn) sackRecords(a, b, bs, be seqnum.Value) bool {
	marked := false
	for i := c.sent.find(a); i < c.sent.n; i++ {
		s := c.sent.at(i)
		if !s.start.LessThan(b) {
			break
		}
		if s.flags&segSACKed != 0 {
			continue
		}
		if !(bs.LessThanEq(s.start) && s.end.LessThanEq(be)) && !c.sacked.covers(s.start, s.end) {
			continue // partly SACKed: still missing to the receiver
		}
		n := s.len()
		c.uncount(s, n)
		s.flags = s.flags&^(segLost|segRxtOut) | segSACKed
		c.sackedOut += n
		c.sackedSegs++
		c.rateDelivered(s)
		c.rackDelivered(s)
		marked = true
	}
	return marked
}

// uncount takes n bytes of s out of the counts its marks are in.
func (c *Conn) uncount(s *sentSeg, n int) {
	if s.flags&segSACKed != 0 {
		c.sackedOut -= n
	}
	if s.flags&segLost != 0 {
		c.lostOut -= n
	}
	if s.flags&segRxtOut != 0 {
		c.rxtOut -= n
	}
}

// markLost deems s lost: it waits for a retransmission. A retransmission
// found lost leaves the retransmitted count.
func (c *Conn) markLost(s *sentSeg) {
	if c.setLost(s) {
		c.e.counters.inc(LostRetransmits)
	}
	if s.start.LessThan(c.rxtHint) {
		c.rxtHint = s.start
	}
}

// setLost marks s lost; it reports whether a retransmission of it was in flight.
func (c *Conn) setLost(s *sentSeg) bool {
	n := s.len()
	rxt := s.flags&segRxtOut != 0
	if rxt {
		s.flags &^= segRxtOut
		c.rxtOut -= n
	}
	if s.flags&segLost == 0 {
		s.flags |= segLost
		c.lostOut += n
		c.rate.lostMarked += uint64(n)
	}
	return rxt
}

// markAllLost deems every un-SACKed segment lost (after an RTO, or a
// smaller path MTU): all go again.
func (c *Conn) markAllLost() {
	for i := 0; i < c.sent.n; i++ {
		if s := c.sent.at(i); s.flags&segSACKed == 0 {
			c.setLost(s)
		}
	}
	c.rxtHint = c.sndUna
}

// ackRecords drops the records the cumulative ACK covers, delivering to
// RACK those not SACKed before; a record the ACK reaches into is trimmed.
func (c *Conn) ackRecords(ack seqnum.Value) {
	e := c.e
	for c.sent.n > 0 {
		s := c.sent.at(0)
		if !s.start.LessThan(ack) {
			return
		}
		if s.end.GreaterThan(ack) {
			c.uncount(s, int(s.start.Size(ack)))
			s.start = ack
			return
		}
		if s.flags&segSACKed != 0 {
			c.sackedSegs--
		} else {
			c.rateDelivered(s)
			c.rackDelivered(s)
		}
		c.uncount(s, s.len())
		c.sent.popFront(e)
	}
}

// onDSACK learns from a D-SACK: the peer received something twice, so a
// retransmission of ours was spurious — the "loss" was reordering. Raise
// DupThresh to the reordering distance seen (Linux's tcp_check_sack_reordering,
// capped as its tcp_max_reordering is) and, once every retransmission of the
// last reduction has proved spurious, undo the reduction.
func (c *Conn) onDSACK(start seqnum.Value) {
	mss := c.effectiveMSS()
	top := c.sndUna
	if c.sacked.n > 0 {
		top = c.sacked.r[c.sacked.n-1].end
	}
	// Only a D-SACK at or above SND.UNA measures reordering (as Linux's
	// tcp_sacktag_one takes it only for data still in its queue): below, the
	// distance to the top has grown by all that was acknowledged since.
	// Reordering below SND.UNA is found by detectDelayedOriginal instead.
	if top.GreaterThan(start) && !start.LessThan(c.sndUna) {
		c.raiseReordering(int(start.Size(top))/mss + 1)
	}
	if c.undoRetrans > 0 {
		c.undoRetrans--
		if c.undoRetrans == 0 {
			c.undoReduction()
		}
	}
}

// raiseReordering records reordering dist segments deep: RACK has seen
// reordering (its window opens), and DupThresh (NewReno's, and the SACKed
// count past which an unseen reordering is not waited for) follows it.
func (c *Conn) raiseReordering(dist int) {
	c.rack.reordSeen = true
	if dist > c.reordering {
		c.reordering = min(dist, maxReordering)
	}
}

// undoReduction restores the window from before the last reduction, which
// proved spurious (Linux's tcp_try_undo_dsack, tcp_try_undo_recovery).
func (c *Conn) undoReduction() {
	if c.priorCwnd == 0 {
		return
	}
	c.cc.undo(c.priorCwnd, c.priorSsth)
	c.priorCwnd = 0
	c.undone = true // the recovery, if still on, ends without setting cwnd to ssthresh
	c.e.counters.inc(SpuriousRecoveries)
}

// detectDelayedOriginal is Eifel detection (RFC 3522) as Linux's
// tcp_packet_delayed makes it: an ACK advancing SND.UNA during fast recovery
// whose TSecr is older than our first retransmission was sent for the
// original segment, which was delayed, not lost. Reordering is then as deep
// as the data that arrived ahead of it (SND.UNA to the highest SACKed byte,
// Linux's tcp_check_sack_reordering with prior_snd_una). When that ACK
// ends the recovery, nothing was lost at all and the reduction is undone
// (Linux's tcp_try_undo_recovery). Called before SND.UNA moves. c.rxtTSval
// is the TSval of the recovery's first retransmission.
func (c *Conn) detectDelayedOriginal(s *segment) {
	if !c.inRecovery || c.rtoRecovery || !c.tsOK || !s.opts.HasTimestamps || s.opts.TSEcr == 0 ||
		int32(s.opts.TSEcr-c.rxtTSval) >= 0 {
		return
	}
	top := s.ack
	if c.sacked.n > 0 {
		top = seqnum.Max(top, c.sacked.r[c.sacked.n-1].end)
	}
	c.raiseReordering(int(c.sndUna.Size(top))/c.effectiveMSS() + 1)
	if !s.ack.LessThan(c.recoverySeq) {
		c.undoReduction()
	}
}

// maxReordering caps DupThresh (Linux's tcp_max_reordering is 300).
const maxReordering = 300

// isDSACK reports whether the first SACK block is a D-SACK (RFC 2883
// section 4): below the cumulative ACK, or inside the second block.
func isDSACK(o *wire.TCPOptions, ack seqnum.Value) bool {
	start, end := seqnum.Value(o.SACK[0].Start), seqnum.Value(o.SACK[0].End)
	if end.LessThanEq(ack) {
		return true
	}
	if o.NumSACK > 1 {
		s1, e1 := seqnum.Value(o.SACK[1].Start), seqnum.Value(o.SACK[1].End)
		return s1.LessThanEq(start) && end.LessThanEq(e1)
	}
	return false
}

// pruneScoreboard drops what SND.UNA has passed.
func (c *Conn) pruneScoreboard() {
	for c.sacked.n > 0 && c.sacked.r[0].start.LessThan(c.sndUna) {
		if c.sacked.r[0].end.LessThanEq(c.sndUna) {
			c.sacked.popFront(c.sacked.r[0].start)
			continue
		}
		// The cumulative ACK reached into a SACKed range.
		old := c.sacked.r[0].start
		c.sacked.r[0].start = c.sndUna
		for k := 0; k < c.sacked.nrec; k++ {
			if c.sacked.recent[k] == old {
				c.sacked.recent[k] = c.sndUna
			}
		}
		break
	}
}

// pipe is RFC 6675's estimate of the bytes in the network (SetPipe), kept
// as Linux's tcp_packets_in_flight: the flight less what is SACKed and
// what is lost, plus retransmissions in flight. Outside recovery it is the
// FlightSize.
func (c *Conn) pipe() int {
	flight := int(c.sndUna.Size(c.sndNxt))
	if !c.inRecovery {
		return flight
	}
	p := flight - c.sackedOut - c.lostOut + c.rxtOut
	if !c.sackOK {
		// Without SACK each duplicate ACK says one segment left the network
		// (RFC 6582's window inflation, expressed as pipe deflation).
		p -= c.dupAcks * c.effectiveMSS()
	}
	return max(p, 0)
}

// nextLost is RFC 6675 NextSeg rule 1 with RACK's marks: the first segment
// deemed lost and not resent since, as an index into c.sent. rxtHint
// (lowered by markLost) spares the scan of what was looked at before.
func (c *Conn) nextLost() (int, bool) {
	if c.rxtHint.LessThan(c.sndUna) {
		c.rxtHint = c.sndUna
	}
	for i := c.sent.find(c.rxtHint); i < c.sent.n; i++ {
		if s := c.sent.at(i); s.flags&(segLost|segRxtOut) == segLost {
			c.rxtHint = s.start
			return i, true
		}
	}
	c.rxtHint = c.sndNxt
	return 0, false
}

// markNewRenoLost deems the first unacknowledged segment lost (RFC 6582:
// the third duplicate ACK, and each partial ACK).
func (c *Conn) markNewRenoLost() {
	if c.sent.n > 0 {
		c.markLost(c.sent.at(0))
	}
}

// Tail loss probe (RFC 8985 section 7). When the last segments of a flight
// are lost, or their ACKs, nothing but the RTO (min_rto, 200 ms) would
// notice: no later segment is delivered for RACK to judge them by. A probe
// after about two round trips — the last segment again (see onTLP) — draws
// an ACK whose SACK lets RACK find the losses, and starts fast recovery
// instead of a timeout.

// minPTO floors the probe timeouts (the tail loss probe's and fast
// recovery's silence probe). RFC 8985 has none; Linux adds two jiffies
// (TCP_TIMEOUT_MIN) to 2*SRTT. On a sub-millisecond path 2*SRTT is shorter
// than the pauses of a busy host (a receiver's softirq, a shard's sleep),
// and a probe sent into one is lost with the flight it probes, leaving the
// RTO: on the lab's 3%-loss client leg 2 ms gave 12-30 RTOs per 50 MiB,
// 4 ms 14-16.
const minPTO = 4 * time.Millisecond

// wcDelAckT is RFC 8985's WCDelAckT: the worst case delayed-ACK time a
// probe of a lone segment in flight waits for in addition.
const wcDelAckT = 200 * time.Millisecond

// armTLP (re)starts the probe timer after new data is sent and after an
// ACK of new data (section 7.2), while data is in flight outside recovery,
// with no episode open and nothing SACKed (which the reordering timer
// watches).
func (c *Conn) armTLP() {
	e := c.e
	if c.inRecovery {
		return // the timer is armRecoveryProbe's
	}
	c.tlpAt = Never
	if c.tlpEpisode || !c.sackOK || c.sndUna == c.sndNxt || c.sackedOut > 0 {
		return
	}
	pto := time.Second // RFC 8985 section 7.2, before any RTT sample
	if c.rtt.valid {
		pto = max(2*c.rtt.srtt, minPTO)
		if int(c.sndUna.Size(c.sndNxt)) <= c.effectiveMSS() {
			pto += wcDelAckT
		}
	}
	c.tlpAt = min(e.now.Add(pto), c.rtoAt)
	c.rearm()
}

// armRecoveryProbe runs after every ACK in fast recovery: when no ACK
// comes for a probe timeout, the retransmission at SND.UNA was lost, or
// every ACK it drew, and nothing sent after it will be delivered for RACK
// to find that by (the rest of the flight lost too, or nothing more sent:
// small windows). The segment at SND.UNA goes again then, instead of an
// RTO and a collapse to one segment. RFC 8985 sends no probe in recovery;
// this one is ours (measured in the simulator: 5% loss on a 0.2 ms path,
// 16 RTOs without it).
func (c *Conn) armRecoveryProbe() {
	if !c.fastRecoverySACK() || !c.rtt.valid || c.sndUna == c.sndNxt {
		return
	}
	c.tlpAt = min(c.e.now.Add(max(2*c.rtt.srtt, minPTO)), c.rtoAt)
	c.rearm()
}

// onTLP sends the probe (section 7.3) and restarts the RTO; in fast
// recovery it is armRecoveryProbe's.
func (c *Conn) onTLP() {
	e := c.e
	if c.fastRecoverySACK() && c.sent.n > 0 {
		e.counters.inc(RecoveryProbes)
		c.retransmitSeg(0)
		c.armRTO()
		return
	}
	if c.inRecovery || c.sndUna == c.sndNxt || c.tlpEpisode {
		return
	}
	c.tlpEpisode = true // before sending: a probe arms no probe
	// The probe resends the last segment, even when new data waits —
	// where RFC 8985 section 7.3 sends the new data. A new segment alone
	// sits in a Linux receiver's delayed-ACK timer (40 ms) when what was
	// lost was the ACK of the burst before it; a duplicate is answered at
	// once, with a D-SACK. Measured on a 3%-loss client leg with a Linux
	// client (TestLossyClient): 11 s for 50 MiB with new-data probes,
	// 4.7-7 s with this.
	c.retransmitSeg(c.sent.n - 1)
	c.tlpEndSeq = c.sndNxt
	e.counters.inc(TailLossProbes)
	c.armRTO()
}

// tlpProcessACK ends a probe's episode (section 7.4): an ACK at or past
// the probe's end settles it. A probe the peer D-SACKs (it had the
// original) repaired nothing; an ACK past the probe's end means the probe
// repaired a loss, which takes a congestion response (Linux's
// tcp_process_tlp_ack: a cwnd reduction).
func (c *Conn) tlpProcessACK(s *segment) {
	if !c.tlpEpisode || s.ack.LessThan(c.tlpEndSeq) {
		return
	}
	switch {
	case c.rack.ackDSACK && (c.rack.ackDSACKEnd == c.tlpEndSeq || c.finSent && c.rack.ackDSACKEnd.Add(1) == c.tlpEndSeq):
		// (A D-SACK covers data only, not a FIN the probe carried.)
	case s.ack.GreaterThan(c.tlpEndSeq):
		if !c.inRecovery {
			c.cc.onLoss(c.e.now, int(c.sndUna.Size(c.sndNxt)))
			c.cc.onRecoveryEnd(c.e.now)
			c.e.counters.inc(TLPRecoveries)
		}
	case s.ack == c.sndUna && s.opts.NumSACK == 0 && len(s.payload) == 0:
		// A pure duplicate ACK: original and probe both arrived.
	default:
		return
	}
	c.tlpEpisode = false
}

// enterRecovery starts loss recovery: fast recovery once losses are
// detected (rto false), or after a retransmission timeout (rto true).
func (c *Conn) enterRecovery(rto bool) {
	e := c.e
	flight := int(c.sndUna.Size(c.sndNxt))
	c.priorCwnd, c.priorSsth = c.cc.cwnd(), c.cc.ssthresh()
	c.undoRetrans, c.undone = 0, false
	if rto {
		c.priorCwnd = 0 // an RTO is not undone
		// The reordering seen before is no reason to wait for more
		// duplicate ACKs after a timeout (Linux's tcp_enter_loss resets
		// tp->reordering the same way).
		c.reordering = dupThresh
		if c.retries <= 1 {
			// A segment the timer already resent: ssthresh is held
			// constant (RFC 5681 section 3.1; Linux's tcp_enter_loss
			// reduces once per episode) and cwnd is still one segment.
			c.cc.onRTO(e.now, flight)
		}
		c.markAllLost()
		e.counters.inc(RTORecoveries)
	} else {
		c.cc.onLoss(e.now, flight)
		e.counters.inc(FastRecoveries)
	}
	c.inRecovery, c.rtoRecovery = true, rto
	// A probe's episode ends in the recovery it led to: the congestion
	// response is this one (as Linux's tcp_init_cwnd_reduction ends it).
	c.tlpEpisode = false
	c.prrDelivered, c.prrOut, c.prrRecoverFS, c.prrBudget = 0, 0, flight, 0
	c.recoverySeq = c.sndNxt
	// The TSval the retransmissions about to go will carry.
	c.rxtTSval = c.tsNow()
	if !rto {
		// Fast retransmit: the first segment found lost goes out now,
		// whatever the pipe (RFC 6675 section 5 step 4.3, RFC 5681 section
		// 3.2 step 2; Linux's PRR forces it too). Only what follows waits
		// for cwnd - pipe to open.
		if i, ok := c.nextLost(); ok {
			c.retransmitSeg(i)
		}
	}
}

// prrActive: fast recovery with SACK, where Proportional Rate Reduction
// (RFC 6937) paces what is sent. (After an RTO cwnd grows by slow start
// instead; without SACK NewReno's partial ACKs drive it.)
// (BBR sets its own window in recovery, as Linux skips PRR for it.)
func (c *Conn) prrActive() bool { return c.fastRecoverySACK() && c.e.cfg.Congestion != BBR }

// fastRecoverySACK: in fast recovery (not after an RTO), with SACK.
func (c *Conn) fastRecoverySACK() bool { return c.inRecovery && !c.rtoRecovery && c.sackOK }

// prrUpdate is RFC 6937 section 3's per-ACK step: delivered bytes (SND.UNA's
// advance plus the change in SACKed bytes) earn a share of ssthresh/RecoverFS
// of new transmissions while the pipe is above ssthresh, and up to one
// segment more than delivered (slow start, PRR-SSRB) once it is below. So a
// window reduction is spread over the round trip instead of stopping all
// sending until the pipe drains below cwnd, and every ACK in recovery lets
// something out — new data whose SACK reveals a lost retransmission.
func (c *Conn) prrUpdate(delivered int) {
	c.prrDelivered += delivered
	mss, pipe, ssth := c.effectiveMSS(), c.pipe(), c.cc.ssthresh()
	var sndcnt int
	if pipe > ssth {
		fs := max(c.prrRecoverFS, 1)
		sndcnt = (c.prrDelivered*ssth+fs-1)/fs - c.prrOut
	} else {
		sndcnt = min(ssth-pipe, max(c.prrDelivered-c.prrOut, delivered)+mss)
	}
	c.prrBudget = max(sndcnt, 0)
}

// exitRecovery ends recovery once the recovery point is acknowledged.
func (c *Conn) exitRecovery() {
	rto := c.rtoRecovery
	c.inRecovery, c.rtoRecovery = false, false
	c.dupAcks = 0
	c.rackRecoveryEnded()
	if !rto && !c.undone {
		// cwnd = ssthresh ends a fast recovery's reduction; after a
		// timeout slow start has been growing cwnd and keeps it (Linux
		// leaves the Loss state without touching cwnd), and an undone
		// reduction keeps the window restored (Linux's
		// tcp_end_cwnd_reduction).
		c.cc.onRecoveryEnd(c.e.now)
	}
}

// unSACK forgets what the peer SACKed, which it may renege on (RFC 2018
// section 8): after a second timeout in a row everything is resent.
func (c *Conn) unSACK() {
	c.sacked.reset()
	for i := 0; i < c.sent.n; i++ {
		if s := c.sent.at(i); s.flags&segSACKed != 0 {
			s.flags &^= segSACKed
		}
	}
	c.sackedOut, c.sackedSegs = 0, 0
}
