package stack

import (
	"io"
	"net/netip"
	"time"

	"github.com/xdproxy/xdproxy/stack/seqnum"
)

// Conn is one TCP connection (a TCB, RFC 9293 section 3.3.1). Its fields
// carry the RFC's names. A Conn belongs to one Engine and may only be used
// from that engine's goroutine.
type Conn struct {
	e     *Engine
	key   FlowKey
	state State

	// Send sequence space (RFC 9293 section 3.3.1).
	iss       seqnum.Value
	sndUna    seqnum.Value
	sndNxt    seqnum.Value
	sndWnd    uint32 // peer's window, scaled
	maxSndWnd uint32 // largest window the peer has offered (RFC 5961 section 5)
	sndWL1    seqnum.Value
	sndWL2    seqnum.Value
	sndWScale uint8 // the peer's window scale shift, applied to windows it sends
	sndMSS    int   // the peer's MSS, lowered by path MTU discovery
	finSent   bool  // our FIN occupies sndBufSeq+sndBuf.Len() in sequence space

	// Receive sequence space.
	irs        seqnum.Value
	rcvNxt     seqnum.Value
	rcvAdvEdge seqnum.Value // RCV.NXT + RCV.WND as last advertised; never moved left
	rcvWScale  uint8        // our window scale shift
	finRcvd    bool

	// Options agreed in the handshake.
	wsOK, sackOK, tsOK bool
	tsRecent           uint32 // TS.Recent (RFC 7323 section 4.3)
	tsOffset           uint32

	// Buffers: sndBuf holds everything from sndBufSeq on (unacknowledged and
	// unsent bytes); rcvBuf holds in-order bytes the application has not read.
	sndBuf    ring
	sndBufSeq seqnum.Value
	rcvBuf    ring
	finQueued bool // the application closed its write side; FIN follows the buffered data

	// Memory (memory.go): the partner a proxy splices our bytes into and
	// out of (Splice), when data last moved either way, and whether the
	// record is still charged to the engine's account.
	spliceTo, spliceFrom *Conn
	progressAt           Time
	memCharged           bool

	// Timers: one heap entry per connection, under the earliest deadline.
	deadline     Time
	heapIdx      int
	rtoAt        Time // retransmission (and handshake) timer
	rto          time.Duration
	retries      int
	kaAt         Time // keepalive, or the FIN_WAIT_2 timeout of an orphaned connection
	kaProbes     int
	lastRcvAt    Time
	keepalive    bool
	peer         hop // the interface and next-hop MAC segments leave by
	macKnown     bool
	via          netip.Addr // an active open's next hop (its gateway, or the peer when on-link)
	twCollisions uint8      // SYNs resent at once after a TIME_WAIT ACK (timeWaitCollision)
	listener     *Listener  // a passive open until accepted
	inAcceptQ    bool
	cookieOpen   bool // created from a SYN cookie (no SYN_RCVD record existed)

	// Reliability and congestion control (part 2): RACK-TLP loss recovery
	// (recovery.go, rack.go) over the sent queue and the SACK scoreboard.
	cc         congestion
	ccState    ccState // cc points into it
	rtt        rttEstimator
	synXmit    Time         // when our SYN or SYN-ACK went, for the handshake's RTT; 0: resent (Karn)
	sent       sentQueue    // a record per segment in flight, with its send time
	rack       rackState    // RFC 8985 section 5.2
	rate       rateState    // delivery rate samples (rate.go)
	paceAt     Time         // pacing (pacing.go): when the next segment may go
	paceWaitAt Time         // the pacing timer: output waits for paceAt
	ackTSecr   uint32       // TSecr of the ACK being processed (0: none)
	sacked     oooSet       // the SACK scoreboard: SACKed ranges above SND.UNA
	sackedOut  int          // bytes of records SACKed
	sackedSegs int          // records SACKed
	lostOut    int          // bytes of records deemed lost (retransmitted or not)
	rxtOut     int          // bytes of retransmissions in flight
	rxtHint    seqnum.Value // no record below this is lost and waiting to be resent
	dupAcks    int
	inRecovery bool
	// Proportional rate reduction during fast recovery (RFC 6937), in bytes.
	prrDelivered, prrOut, prrRecoverFS, prrBudget int
	rtoRecovery                                   bool
	recoverySeq                                   seqnum.Value // RFC 6675 RecoveryPoint / RFC 6582 "recover"
	persistAt                                     Time         // zero-window probe timer
	tlpAt                                         Time         // tail loss probe timer (RFC 8985 section 7)
	tlpEpisode                                    bool         // a probe was sent and its episode is not over (TLP.end_seq set)
	tlpEndSeq                                     seqnum.Value // TLP.end_seq
	reoAt                                         Time         // RACK's reordering timer (RFC 8985 section 6.3)
	reordering                                    int          // DupThresh in segments: 3, raised when D-SACKs show reordering (Linux's tp->reordering)
	undoRetrans                                   int          // retransmissions of the last reduction not yet shown spurious by a D-SACK
	priorCwnd                                     int          // cwnd and ssthresh before the last reduction, for undo
	priorSsth                                     int
	undone                                        bool // the last reduction was undone
	rxtTSval                                      uint32
	probes                                        int // unanswered zero-window probes
	persistShift                                  int // persist timer backoff
	delackAt                                      Time
	unackedRcv                                    int // bytes received since we last sent an ACK
	quickAcks                                     int // ACKs still to send at once (Linux's quick-ack mode at connection start)
	rcvMSSSeen                                    int // the largest segment the peer has sent: its MSS as seen here
	lastAckSent                                   seqnum.Value
	ooo                                           oooSet   // out-of-order ranges held in rcvBuf past RCV.NXT
	dsack                                         seqRange // a duplicate to report in the next ACK (RFC 2883)
	hasDSACK                                      bool
	oooFIN                                        seqnum.Value // the sequence number of a FIN held out of order
	hasOOOFIN                                     bool

	// RFC 5961 section 7 challenge ACK rate limit.
	challengeWindowAt Time
	challengeCount    int

	// Application side.
	appClosed     bool // Close or Abort called: no more events
	wantWritable  bool
	ackNeeded     bool
	batchACK      bool // owes an ACK at the end of the engine's current batch
	batchOutput   bool // written to (or half-closed) during the engine's current batch
	err           error
	pending       Events
	queued        bool
	User          any // the application's own state for this connection
	bytesIn       uint64
	bytesOut      uint64
	retransmitted uint64
	trace         *ConnTrace // nil unless traced (trace.go)
}

// State returns the connection's state. After the engine is done with it,
// this is CLOSED, or TIME_WAIT for as long as the connection sits there.
func (c *Conn) State() State {
	if c.state == TimeWait {
		if _, ok := c.e.tw.lookup(c.key); !ok {
			return Closed // the TIME_WAIT entry expired (or was recycled)
		}
	}
	return c.state
}

// Key returns the connection's 4-tuple.
func (c *Conn) Key() FlowKey { return c.key }

// Interface is the index of the interface c's segments leave by.
func (c *Conn) Interface() int { return int(c.peer.ifx) }

// Err returns why the connection ended abnormally (ErrReset, ErrRefused,
// ErrTimeout, ErrNoRoute), or nil.
func (c *Conn) Err() error { return c.err }

// Info is a snapshot of a connection for listings (the admin /connections).
type Info struct {
	Key              FlowKey
	State            State
	SndUna, SndNxt   uint32
	RcvNxt           uint32
	SndWnd, RcvWnd   uint32
	MSS              int
	RTO              time.Duration
	SRTT             time.Duration // smoothed RTT (0 before the first sample)
	RTTVar           time.Duration // its mean deviation (RFC 6298)
	Cwnd             int           // congestion window, bytes
	Ssthresh         int
	Congestion       CongestionControl
	PacingRate       float64       // bytes/s segments are paced at (0: not paced)
	DeliveryRate     float64       // BBR's bandwidth estimate, bytes/s (0: none)
	MinRTT           time.Duration // the least RTT seen (RACK's filter; BBR's own under BBR)
	BytesIn          uint64
	BytesOut         uint64
	Retransmits      uint64
	SndQueued        int
	RcvQueued        int
	SACK, Timestamps bool
}

// Info returns a snapshot of c.
func (c *Conn) Info() Info {
	in := Info{
		Key: c.key, State: c.State(),
		SndUna: uint32(c.sndUna), SndNxt: uint32(c.sndNxt), RcvNxt: uint32(c.rcvNxt),
		SndWnd: c.sndWnd, RcvWnd: uint32(c.rcvAdvEdge - c.rcvNxt),
		MSS: c.sndMSS, RTO: c.rto, SRTT: c.rtt.srtt, RTTVar: c.rtt.rttvar, Cwnd: c.cc.cwnd(), Ssthresh: c.cc.ssthresh(),
		BytesIn: c.bytesIn, BytesOut: c.bytesOut, Retransmits: c.retransmitted,
		SndQueued: c.sndBuf.Len(), RcvQueued: c.rcvBuf.Len(),
		SACK: c.sackOK, Timestamps: c.tsOK,
		Congestion: c.e.cfg.Congestion, PacingRate: c.cc.pacingRate(), MinRTT: c.rack.minRTT.get(),
	}
	if b, ok := c.cc.(*bbr); ok {
		in.DeliveryRate = b.maxBW()
		if b.minRTT > 0 {
			in.MinRTT = b.minRTT
		}
	}
	return in
}

// Read moves received bytes into p. It returns 0, nil when nothing is
// buffered yet (EventReadable follows when something arrives), and io.EOF
// once the peer's FIN has been reached.
func (c *Conn) Read(p []byte) (int, error) {
	if c.appClosed {
		return 0, ErrClosed
	}
	if c.rcvBuf.Len() == 0 {
		switch {
		case c.err != nil:
			return 0, c.err
		case c.finRcvd:
			return 0, io.EOF
		}
		return 0, nil
	}
	n := c.rcvBuf.Read(p)
	c.bytesIn += uint64(n)
	c.windowUpdateAfterRead()
	c.e.flush()
	return n, nil
}

// Buffered returns how many received bytes wait to be read.
func (c *Conn) Buffered() int { return c.rcvBuf.Len() }

// Write copies as much of p as the send buffer has room for and returns how
// much; EventWritable follows a short write once room frees up. Writes are
// accepted before the handshake completes and sent once it does.
func (c *Conn) Write(p []byte) (int, error) {
	switch {
	case c.appClosed:
		return 0, ErrClosed
	case c.err != nil:
		return 0, c.err
	case c.finQueued:
		return 0, ErrWriteClosed
	}
	switch c.state {
	case SynSent, SynReceived, Established, CloseWait:
	default:
		return 0, ErrClosed
	}
	c.rateCheckAppLimited()
	n := c.sndBuf.Write(p[:min(len(p), c.sndSpace())])
	c.wantWritable = n < len(p)
	c.bytesOut += uint64(n)
	if n > 0 {
		c.outputSoon()
		c.e.flush()
	}
	return n, nil
}

// outputSoon sends what the application has queued: at once, or at the
// end of the engine's burst (BeginBatch) when in one. Within a burst the
// frames leave together at its end anyway, so waiting costs no time, and
// what the burst writes goes out in one pass: a FIN queued behind data
// rides on the last data segment (a proxy passing on a response and the
// close right behind it), small writes fill segments together, and the
// ACKs owed ride on them.
func (c *Conn) outputSoon() {
	if !c.e.batching {
		c.output()
		return
	}
	if !c.batchOutput {
		c.batchOutput = true
		c.e.batchOutputs = append(c.e.batchOutputs, c)
	}
}

// WriteSpace returns how many bytes Write would accept now. When it returns
// 0, EventWritable follows once room frees up (as after a short Write).
func (c *Conn) WriteSpace() int {
	if c.finQueued || c.err != nil || c.appClosed {
		return 0
	}
	free := c.sndSpace()
	if free == 0 {
		c.wantWritable = true
	}
	return free
}

// CloseWrite sends a FIN after the buffered data (a half-close: shutdown(SHUT_WR)).
// The connection keeps receiving until the peer's FIN.
func (c *Conn) CloseWrite() error {
	if c.appClosed {
		return ErrClosed
	}
	c.closeWrite()
	c.e.flush()
	return nil
}

func (c *Conn) closeWrite() {
	if c.finQueued {
		return
	}
	switch c.state {
	case SynSent, SynReceived:
		// The FIN waits for the handshake and the data queued behind it
		// (Linux would fail the shutdown; a proxy wants the half-close carried).
		c.finQueued = true
	case Established:
		c.finQueued = true
		c.setState(FinWait1)
		c.outputSoon()
	case CloseWait:
		c.finQueued = true
		c.setState(LastAck)
		c.outputSoon()
	}
}

// Close ends the application's use of c: it half-closes (FIN after the
// buffered data) and detaches, so no further events arrive. As Linux does
// (and RFC 2525 section 2.17 recommends), a Close with unread received data
// resets the connection instead, and so does data arriving after Close.
func (c *Conn) Close() error {
	if c.appClosed {
		return ErrClosed
	}
	if c.rcvBuf.Len() > 0 && c.state.synchronized() && c.state != TimeWait {
		c.abort()
		c.e.flush()
		return nil
	}
	c.appClosed = true
	c.rcvBuf.reset()
	c.ooo.reset()
	switch c.state {
	case SynSent:
		c.e.releaseConn(c, Closed)
	case Closed, TimeWait:
		c.sndBuf.reset()
	default:
		c.closeWrite()
		c.armOrphanTimer()
	}
	c.e.flush()
	return nil
}

// Abort resets the connection (RST) and detaches: no further events.
func (c *Conn) Abort() {
	if c.appClosed {
		return
	}
	c.abort()
	c.e.flush()
}

func (c *Conn) abort() {
	c.appClosed = true
	switch c.state {
	case SynReceived, Established, FinWait1, FinWait2, CloseWait, Closing, LastAck:
		// RFC 9293 section 3.10.5 (ABORT): <SEQ=SND.NXT><CTL=RST>.
		c.e.sendRST(c.key, c.peer, c.sndNxt, 0, false)
	}
	if c.err == nil {
		c.err = ErrAborted
	}
	if c.state != Closed && c.state != TimeWait {
		c.e.releaseConn(c, Closed)
	}
	// Released before (a reset, a timeout) with unread bytes kept for
	// the application, which is done with them now.
	c.rcvBuf.reset()
	c.ooo.reset()
}

// SetKeepalive turns keepalive probes on or off for c (on by default unless
// Config.Keepalive.Disabled).
func (c *Conn) SetKeepalive(on bool) {
	c.keepalive = on
	c.armKeepalive()
}

// SetQuickACK turns c's quick-ACK mode on or off, as Linux's TCP_QUICKACK
// socket option does. A connection starts in it: its first
// maxQuickAcks segments of in-order data are acknowledged at once (at the
// end of the engine's batch), so the sender's slow start is not held back.
// Off, in-order data short of two full-sized segments waits for the
// delayed-ACK timer or for a segment of ours (data, FIN) to carry the ACK,
// as Linux's delayed ACKs in ping-pong mode: for a connection whose peer's
// data draws an answer soon — a proxied request whose reply comes back
// from the other leg — that saves the bare ACK. Out-of-order data, filled
// holes (which turn quick-ACK mode back on) and every second full-sized
// segment are still acknowledged at once.
func (c *Conn) SetQuickACK(on bool) {
	if on {
		c.quickAcks = maxQuickAcks
	} else {
		c.quickAcks = 0
	}
}

// notify queues events for the handler, unless the application has detached.
func (c *Conn) notify(ev Events) {
	if c.appClosed {
		return
	}
	c.pending |= ev
	if !c.queued {
		c.queued = true
		c.e.connEvents = append(c.e.connEvents, c)
	}
}

// setState moves c to s and keeps the per-state gauges.
func (c *Conn) setState(s State) {
	if c.trace != nil {
		c.traceState(s)
	}
	c.e.stats.states[c.state].Add(-1)
	c.state = s
	c.e.stats.states[s].Add(1)
}
