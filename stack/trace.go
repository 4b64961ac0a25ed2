package stack

import (
	"time"

	"github.com/xdproxy/xdproxy/stack/wire"
)

// Connection traces: the raw material of ladder diagrams. The owner of the
// engine installs a Tracer (SetTracer); the engine asks it, as each
// connection record is made (a SYN reaching a listener, a SYN cookie's ACK,
// Dial), whether to trace that connection. A traced connection records every
// segment it receives and sends, every state it enters and every timer that
// fires, with the engine's current time, until the engine is done with it
// (CLOSED, or TIME_WAIT; with FollowTimeWait, the end of TIME_WAIT). Then
// its trace is Done and the Tracer hears of it (TraceDone); from then on
// the engine never touches it again, so the owner may hand it to another
// goroutine.
//
// Cost when no connection is traced: a nil check per segment received (the
// Conn's trace pointer, on the connection already looked up; a map length
// for one to a TIME_WAIT entry), a zero check of an engine field per
// segment sent, a map length per Tick and a nil check on the Tracer per
// connection made. Nothing is allocated. Memory while tracing is bounded:
// each trace keeps at most its Max events (then only counts the rest,
// Truncated) and an engine traces at most MaxTracedConns connections at
// once (further ones are not offered to the Tracer; TraceStats counts them).
//
// The hooks elsewhere in the package are one line each: handleTCP (for a
// connection and for a TIME_WAIT entry), sendSegment, releaseConn and Tick
// (engine.go), setState (conn.go), onTimer (snd.go), and the three places
// that make connection records (listen.go, dial.go).
//
// TIME_WAIT entries are compact records without a Conn (timewait.go), so
// a trace that follows one (FollowTimeWait) sits in a small map of the
// engine's, keyed by 4-tuple, while the entry lives: the segments it
// answers are recorded, and at the first Tick after the entry is gone its
// end — the TIME_WAIT expiry timer, or the 4-tuple taken over early (a new
// SYN, a reused port, the table recycling its oldest) — and CLOSED.

// MaxTracedConns bounds the connections an engine traces at once.
const MaxTracedConns = 128

// DefaultTraceEvents is a trace's event cap when the Tracer sets none.
const DefaultTraceEvents = 1024

// Tracer chooses which connections are traced and hears when a trace ends.
// Both methods run on the engine's goroutine, inside the engine: they must
// not call back into it.
type Tracer interface {
	// TraceConn is asked once per connection record the engine makes:
	// passive opens with the listener (l) they arrived on, active opens
	// (Dial) with l nil. A non-nil result traces the connection.
	TraceConn(k FlowKey, l *Listener) *ConnTrace
	// TraceDone is told when the engine is done with a traced connection.
	TraceDone(t *ConnTrace)
}

// SetTracer installs t (nil: trace nothing new; connections already traced
// go on until they end).
func (e *Engine) SetTracer(t Tracer) { e.tr.tracer = t }

// TraceStats reports the traces in progress and those refused because
// MaxTracedConns were in progress.
func (e *Engine) TraceStats() (active int, refused uint64) { return e.tr.active, e.tr.refused }

// TraceKind is what a trace event is.
type TraceKind uint8

const (
	TraceRecv  TraceKind = iota + 1 // a segment arrived
	TraceSent                       // a segment left
	TraceState                      // the connection changed state (From → To)
	TraceTimer                      // a timer fired (Timer)
)

// TraceTimerKind names a timer.
type TraceTimerKind uint8

const (
	TimerRTO        TraceTimerKind = iota + 1 // retransmission timeout (or the handshake's)
	TimerTLP                                  // tail loss probe
	TimerReorder                              // RACK's reordering timer (in recovery: the silence probe)
	TimerPersist                              // zero-window probe
	TimerDelayedACK                           // delayed ACK
	TimerKeepalive                            // keepalive probe due
	TimerFinWait2                             // the FIN_WAIT_2 limit of a closed connection
	TimerTimeWait                             // TIME_WAIT expiry (2MSL)
)

var timerNames = [...]string{"", "RTO", "TLP", "reordering", "persist", "delayed ACK", "keepalive", "FIN_WAIT_2 timeout", "TIME_WAIT expiry"}

func (k TraceTimerKind) String() string {
	if int(k) < len(timerNames) && k != 0 {
		return timerNames[k]
	}
	return "timer"
}

// TraceSegment is a segment as a trace keeps it: raw sequence numbers (the
// renderer makes them relative to the ISNs), the window as the sender
// meant it (scaled, except in a SYN), options in short.
type TraceSegment struct {
	Seq, Ack uint32
	Len      uint32 // payload bytes
	Window   uint32
	Flags    uint8 // wire.Flag*
	// Options.
	MSS        uint16 // 0: absent
	WScale     int8   // -1: absent
	SACKPermit bool
	Timestamps bool
	NumSACK    uint8
	SACK       [4]wire.SACKBlock // raw, in the receiver's sequence space
}

// TraceEvent is one thing that happened to a traced connection.
type TraceEvent struct {
	At    Time   // the engine's time
	Order uint64 // engine-wide order: events of one engine sort by it
	Kind  TraceKind
	Seg   TraceSegment   // TraceRecv, TraceSent
	From  State          // TraceState
	To    State          // TraceState
	Timer TraceTimerKind // TraceTimer
	Dur   time.Duration  // TraceState into TIME_WAIT: its 2MSL
}

// ConnTrace is one traced connection: the events in order, and what the
// renderer needs to make numbers relative.
type ConnTrace struct {
	Key       FlowKey
	Passive   bool   // opened by a SYN to a listener
	Cookie    bool   // opened from a SYN cookie: SYN and SYN-ACK were not recorded
	ISS, IRS  uint32 // our and the peer's initial sequence numbers (IRS: 0 until known)
	HaveIRS   bool
	Events    []TraceEvent
	Max       int  // event cap (0: DefaultTraceEvents)
	Truncated int  // events past the cap, not recorded
	Done      bool // the engine is done with it
	User      any  // the tracer's own state
	// FollowTimeWait keeps the trace going through TIME_WAIT: the
	// segments the TIME_WAIT entry receives and answers, then its expiry.
	// Set by the Tracer; without it the trace ends on entering TIME_WAIT.
	FollowTimeWait bool
	engine         *Engine
	sndShift       uint8 // window shifts: the peer's (segments received), ours (sent)
	rcvShift       uint8
}

// Trace returns c's trace, or nil.
func (c *Conn) Trace() *ConnTrace { return c.trace }

// engineTrace is the engine's side of tracing.
type engineTrace struct {
	tracer  Tracer
	active  int // traced connections not yet done
	refused uint64
	order   uint64
	tw      map[FlowKey]*twTrace // traces following a TIME_WAIT entry (counted in active)
}

// twTrace is a trace following a TIME_WAIT entry.
type twTrace struct {
	t       *ConnTrace
	expires Time // the entry's expiry as last seen
}

// traceOpen asks the tracer about c, just made; s is the segment that made
// it (nil for Dial).
func (e *Engine) traceOpen(c *Conn, s *segment) {
	var l *Listener
	if s != nil {
		l = e.listeners[s.key.Local()]
	}
	if e.tr.active >= MaxTracedConns {
		// Refused before asking: a trace the tracer hands out is always
		// attached, so it always hears TraceDone.
		e.tr.refused++
		return
	}
	t := e.tr.tracer.TraceConn(c.key, l)
	if t == nil {
		return
	}
	e.tr.active++
	c.trace = t
	t.engine = e
	t.Key = c.key
	t.Passive = s != nil
	t.Cookie = c.cookieOpen
	if t.Max <= 0 {
		t.Max = DefaultTraceEvents
	}
	from := Closed
	if s != nil {
		from = Listen
		t.add(e, TraceEvent{Kind: TraceRecv, Seg: traceSegIn(c, s)})
	}
	c.traceSeqs()
	t.add(e, TraceEvent{Kind: TraceState, From: from, To: c.state})
}

func (t *ConnTrace) add(e *Engine, ev TraceEvent) {
	if len(t.Events) >= t.Max {
		t.Truncated++
		return
	}
	e.tr.order++
	ev.At, ev.Order = e.now, e.tr.order
	t.Events = append(t.Events, ev)
}

// traceSeqs keeps the ISNs and window shifts the renderer needs.
func (c *Conn) traceSeqs() {
	t := c.trace
	t.ISS = uint32(c.iss)
	if c.state != SynSent && c.state != Closed || c.irs != 0 {
		t.IRS, t.HaveIRS = uint32(c.irs), true
	}
	t.sndShift, t.rcvShift = c.sndWScale, c.rcvWScale
}

func traceSegIn(c *Conn, s *segment) TraceSegment {
	shift := c.sndWScale
	if s.has(wire.FlagSYN) {
		shift = 0
	}
	g := TraceSegment{
		Seq: uint32(s.seq), Ack: uint32(s.ack), Len: uint32(len(s.payload)),
		Window: uint32(s.wnd) << shift, Flags: s.flags,
	}
	g.setOptions(s.opts)
	return g
}

func (g *TraceSegment) setOptions(o *wire.TCPOptions) {
	g.WScale = -1
	if o == nil {
		return
	}
	g.MSS = o.MSS
	if o.HasWScale {
		g.WScale = int8(o.WScale)
	}
	g.SACKPermit, g.Timestamps = o.SACKPermitted, o.HasTimestamps
	g.NumSACK, g.SACK = o.NumSACK, o.SACK
}

// traceIn records a segment arriving on c (hook: handleTCP).
func (c *Conn) traceIn(s *segment) {
	if s.has(wire.FlagSYN) {
		c.trace.IRS, c.trace.HaveIRS = uint32(s.seq), true
	}
	c.trace.add(c.e, TraceEvent{Kind: TraceRecv, Seg: traceSegIn(c, s)})
}

// traceOut records the segment just encoded into e.txf (hook: sendSegment),
// if it belongs to a traced connection.
func (e *Engine) traceOut(k FlowKey, n int) {
	var t *ConnTrace
	c := e.flows[k]
	switch {
	case c != nil && c.trace != nil:
		t = c.trace
		c.traceSeqs()
	case c == nil && e.tr.tw[k] != nil:
		t = e.tr.tw[k].t // a TIME_WAIT entry's ACK
	default:
		return
	}
	h := &e.txf.TCP
	shift := t.rcvShift
	if h.Flags&wire.FlagSYN != 0 {
		shift = 0
	}
	g := TraceSegment{Seq: h.Seq, Ack: h.Ack, Len: uint32(n), Window: uint32(h.Window) << shift, Flags: h.Flags}
	g.setOptions(&h.Options)
	t.add(e, TraceEvent{Kind: TraceSent, Seg: g})
}

// traceState records c moving to s (hooks: setState, releaseConn). Moving
// to CLOSED or TIME_WAIT ends the trace.
func (c *Conn) traceState(s State) {
	t, e := c.trace, c.e
	if s == c.state && s != Closed {
		return
	}
	ev := TraceEvent{Kind: TraceState, From: c.state, To: s}
	if s == TimeWait {
		ev.Dur = e.cfg.TimeWait
	}
	c.traceSeqs()
	t.add(e, ev)
	if s == TimeWait && t.FollowTimeWait {
		if e.tr.tw == nil {
			e.tr.tw = make(map[FlowKey]*twTrace)
		}
		e.tr.tw[c.key] = &twTrace{t: t, expires: e.now.Add(e.cfg.TimeWait)}
		c.trace = nil
		return
	}
	if s == Closed || s == TimeWait {
		c.trace = nil
		e.traceDone(t)
	}
}

func (e *Engine) traceDone(t *ConnTrace) {
	t.Done = true
	t.engine = nil
	e.tr.active--
	if e.tr.tracer != nil {
		e.tr.tracer.TraceDone(t)
	}
}

// traceTimeWaitIn records a segment arriving for a TIME_WAIT entry (hook:
// handleTCP), if a trace follows it.
func (e *Engine) traceTimeWaitIn(s *segment) {
	tw := e.tr.tw[s.key]
	if tw == nil {
		return
	}
	shift := tw.t.sndShift
	if s.has(wire.FlagSYN) {
		shift = 0
	}
	g := TraceSegment{Seq: uint32(s.seq), Ack: uint32(s.ack), Len: uint32(len(s.payload)), Window: uint32(s.wnd) << shift, Flags: s.flags}
	g.setOptions(s.opts)
	tw.t.add(e, TraceEvent{Kind: TraceRecv, Seg: g})
}

// traceTimeWaitEnds ends the traces whose TIME_WAIT entry is gone (hook:
// Tick, after the table's expiry): by its expiry, or taken over early.
func (e *Engine) traceTimeWaitEnds(now Time) {
	for k, tw := range e.tr.tw {
		if i, ok := e.tw.lookup(k); ok {
			tw.expires = e.tw.entry(i).expires // a retransmitted FIN restarts it
			continue
		}
		if now >= tw.expires {
			tw.t.add(e, TraceEvent{Kind: TraceTimer, Timer: TimerTimeWait})
		}
		tw.t.add(e, TraceEvent{Kind: TraceState, From: TimeWait, To: Closed})
		delete(e.tr.tw, k)
		e.traceDone(tw.t)
	}
}

// traceTimers records the timers of c due at now, before onTimer runs them
// (hook: onTimer). A timer whose deadline passed but that has nothing to do
// (an RTO with everything acknowledged, a keepalive deadline that only
// re-arms) is not recorded.
func (c *Conn) traceTimers(now Time) {
	t, e := c.trace, c.e
	note := func(k TraceTimerKind) { t.add(e, TraceEvent{Kind: TraceTimer, Timer: k}) }
	if c.rtoAt <= now && (c.sndNxt != c.sndUna || !c.state.synchronized()) {
		note(TimerRTO)
	}
	if c.tlpAt <= now && ((c.prrActive() && c.sent.n > 0) || (!c.inRecovery && c.sndUna != c.sndNxt && !c.tlpEpisode)) {
		note(TimerTLP)
	}
	if c.reoAt <= now && c.sndUna != c.sndNxt && c.sackOK {
		note(TimerReorder)
	}
	if c.persistAt <= now && c.sndNxt == c.sndUna {
		note(TimerPersist)
	}
	if c.delackAt <= now && (c.ackNeeded || c.unackedRcv > 0 || c.lastAckSent != c.rcvNxt) {
		note(TimerDelayedACK)
	}
	if c.kaAt <= now {
		switch {
		case c.appClosed && c.state == FinWait2:
			note(TimerFinWait2)
		case c.keepalive && c.state.synchronized() && c.sndUna == c.sndNxt && c.sndBuf.Len() == 0 &&
			(c.kaProbes > 0 || now.Sub(c.lastRcvAt) >= e.cfg.Keepalive.Idle):
			note(TimerKeepalive)
		}
	}
}
