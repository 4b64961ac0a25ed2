package stack

import (
	"fmt"
	"net/netip"
	"sync/atomic"

	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// Engine is one shard's TCP/IP stack. All methods must be called from one
// goroutine; Counters and Stats may be read from any.
type Engine struct {
	cfg     Config
	ifs     []netIf
	handler Handler
	rand    Rand
	now     Time

	counters Counters
	stats    Stats

	owned     []netip.Addr
	listeners map[netip.AddrPort]*Listener
	flows     map[FlowKey]*Conn
	tw        timeWaitTable
	timers    timerHeap
	neigh     neighborTable

	isnHash flowHasher
	tsHash  flowHasher
	cookies cookieJar
	mem     memAcct
	sc      secondChance // peers to hand stray segments to (secondchance.go)

	rcvWScale   uint8
	portCounter uint32

	// A burst of frames read together (BeginBatch..EndBatch): connections
	// owing the ACK of in-order data, sent once for the burst at its end,
	// and connections the application wrote to (or half-closed) during it,
	// whose output runs once at its end.
	batching     bool
	batchACKs    []*Conn
	batchOutputs []*Conn

	inIf uint8 // the interface of the frame being handled

	tr engineTrace // connection traces (trace.go)

	sentRings [][]sentSeg // free sent-queue storage (sentq.go)

	// Scratch space, reused for every frame so that input and output never allocate.
	pkt wire.Packet
	seg segment
	txf wire.TCPFrame

	// Events waiting for the handler (see flush).
	connEvents  []*Conn
	lisEvents   []*Listener
	dispatching bool
}

// Stats are gauges readable from any goroutine.
type Stats struct {
	states    [numStates]atomic.Int64
	listeners atomic.Int64
}

// Connections returns how many connections are in state s (TIME_WAIT counts
// the compact entries).
func (s *Stats) Connections(st State) int64 { return s.states[st].Load() }

// New builds an engine from cfg (defaults filled in). It fails only on an
// invalid configuration, naming the field.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("stack: invalid config: %w", err)
	}
	cfg.setDefaults()
	e := &Engine{
		cfg:       cfg,
		handler:   cfg.Handler,
		rand:      cfg.Rand,
		owned:     append([]netip.Addr(nil), cfg.Addresses...),
		listeners: make(map[netip.AddrPort]*Listener),
		flows:     make(map[FlowKey]*Conn),
		cookies:   cookieJar{lifetime: cfg.CookieSecretLifetime},
	}
	if k := cfg.Keys; k != nil {
		e.isnHash, e.tsHash = flowHasher{k.ISN[0], k.ISN[1]}, flowHasher{k.Timestamp[0], k.Timestamp[1]}
		e.cookies.master, e.cookies.derived = k.Cookie, true
	} else {
		e.isnHash, e.tsHash = newFlowHasher(cfg.Rand), newFlowHasher(cfg.Rand)
	}
	e.mem.counters = &e.counters
	e.mem.pub.share.Store(cfg.MemoryLimit)
	e.tw.init(cfg.TimeWaitMax)
	if cfg.Flows != nil {
		e.tw.released = cfg.Flows.FlowReleased
	}
	e.neigh.init()
	for _, ifc := range cfg.Interfaces {
		e.ifs = append(e.ifs, netIf{
			Interface: ifc,
			mss4:      uint16(ifc.MTU - wire.IPv4HeaderLen - wire.TCPHeaderLen),
			mss6:      uint16(ifc.MTU - wire.IPv6HeaderLen - wire.TCPHeaderLen),
			stats:     new(IfaceStats),
		})
		for _, a := range ifc.Sources {
			e.AddAddress(a.Unmap())
		}
	}
	e.initSecondChance(cfg.SecondChance)
	// The smallest shift that lets the 16-bit window field cover the whole
	// receive buffer (RFC 7323 section 2.3).
	for cfg.RcvBuffer>>e.rcvWScale > 0xffff {
		e.rcvWScale++
	}
	return e, nil
}

// Counters returns the engine's counters (safe to read from any goroutine).
func (e *Engine) Counters() *Counters { return &e.counters }

// Stats returns the engine's gauges (safe to read from any goroutine).
func (e *Engine) Stats() *Stats { return &e.stats }

// Config returns the configuration in force, defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// AddAddress makes the engine own a (answer ARP/NDP/echo, terminate TCP).
func (e *Engine) AddAddress(a netip.Addr) {
	if !e.owns(a) {
		e.owned = append(e.owned, a)
	}
}

// owns reports whether a is one of the engine's addresses. The list is a
// handful of entries; a linear scan beats a map here.
func (e *Engine) owns(a netip.Addr) bool {
	for _, o := range e.owned {
		if o == a {
			return true
		}
	}
	return false
}

// HandleFrame processes one Ethernet frame received on the first interface
// (HandleFrameOn for the others) at time now.
func (e *Engine) HandleFrame(now Time, frame []byte) { e.HandleFrameOn(now, 0, frame) }

// HandleFrameOn processes one Ethernet frame received on interface ifx at
// time now. The frame is not retained: payload bytes are copied into the
// connection's buffer. Replies and every later segment of a connection the
// frame opens passively leave by the same interface.
func (e *Engine) HandleFrameOn(now Time, ifx int, frame []byte) {
	e.now = now
	e.counters.inc(RxFrames)
	if ifx < 0 || ifx >= len(e.ifs) {
		e.counters.inc(RxBadInterface)
		return
	}
	e.inIf = uint8(ifx)
	ifc := &e.ifs[ifx]
	ifc.stats.RxFrames.Store(ifc.stats.RxFrames.Load() + 1)
	p := &e.pkt
	var flags wire.ParseFlags
	if e.cfg.TrustL4Checksum {
		flags |= wire.ParseSkipL4Checksum
	}
	if ifc.Virtual {
		flags |= wire.ParseAllowPartialL4Checksum
	}
	if d := wire.Parse(frame, p, flags); d != wire.DropNone {
		e.counters.inc(ParseDropCounter(d))
		if d == wire.DropTCPChecksum {
			ifc.stats.ChecksumDrops.Store(ifc.stats.ChecksumDrops.Load() + 1)
		}
		return
	}
	if p.IgnoredTCPOptions {
		e.counters.inc(RxIgnoredTCPOptions)
	}
	if p.PartialChecksum {
		e.counters.inc(RxPartialChecksum)
		ifc.stats.PartialChecksums.Store(ifc.stats.PartialChecksums.Load() + 1)
	}
	switch {
	case p.EtherType == wire.EtherTypeARP:
		e.handleARP(p)
	case p.Proto == wire.ProtoTCP:
		e.handleTCP(p)
	case p.Proto == wire.ProtoICMP || p.Proto == wire.ProtoICMPv6:
		e.handleICMP(p)
	default:
		e.counters.inc(RxNotOurs)
	}
	e.flush()
}

// BeginBatch starts a burst: the frames handled until EndBatch arrived
// together (one read of the RX ring). In-order data they carry is
// acknowledged once per connection for the whole burst, at EndBatch — what
// GRO does for the kernel's TCP by merging a burst into one segment, here
// without merging: every segment is still processed, delivered and its
// data passed on as it comes. Out-of-order data, duplicates and filled
// holes are still acknowledged at once (the sender's loss detection counts
// on them).
func (e *Engine) BeginBatch() { e.batching = true }

// EndBatch ends the burst BeginBatch started: it sends what the
// application wrote during it, then the ACKs the burst owes (none for a
// connection whose data or FIN has carried the ACK).
func (e *Engine) EndBatch(now Time) {
	e.batching = false
	if len(e.batchACKs) == 0 && len(e.batchOutputs) == 0 {
		return
	}
	e.now = now
	for i, c := range e.batchOutputs {
		e.batchOutputs[i] = nil
		c.batchOutput = false
		c.output()
	}
	e.batchOutputs = e.batchOutputs[:0]
	for i, c := range e.batchACKs {
		e.batchACKs[i] = nil
		c.batchACK = false
		if c.state.synchronized() && c.state != TimeWait && c.lastAckSent != c.rcvNxt {
			c.sendACK()
		}
	}
	e.batchACKs = e.batchACKs[:0]
	e.flush()
}

// Tick runs every timer due at now. Call it at NextDeadline (or later).
func (e *Engine) Tick(now Time) {
	e.now = now
	e.mem.relevel() // the share may have moved (SetMemoryShare)
	for {
		c := e.timers.peek()
		if c == nil || c.deadline > now {
			break
		}
		c.onTimer()
	}
	e.tw.expire(e, now)
	if len(e.tr.tw) != 0 {
		e.traceTimeWaitEnds(now)
	}
	e.flush()
}

// NextDeadline is when the engine next needs Tick, or Never.
func (e *Engine) NextDeadline() Time {
	d := Never
	// Heap entries may be early (rearm moves deadlines later lazily): settle
	// the top until it is exact.
	for c := e.timers.peek(); c != nil; c = e.timers.peek() {
		if exact := c.nextTimer(); exact != c.deadline {
			c.deadline = exact
			e.timers.set(c)
			continue
		}
		d = c.deadline
		break
	}
	if e.mem.level == MemoryHigh {
		d = min(d, e.mem.reapAt)
	}
	return min(d, e.tw.nextExpiry())
}

// flush hands queued events to the handler. Handlers may call back into the
// engine, which may queue more events; those are delivered in the same loop.
func (e *Engine) flush() {
	if e.dispatching {
		return
	}
	if e.mem.level == MemoryHigh && e.now >= e.mem.reapAt {
		e.reap()
	}
	if e.handler == nil {
		for _, c := range e.connEvents {
			c.pending, c.queued = 0, false
		}
		for _, l := range e.lisEvents {
			l.queued = false
		}
		clear(e.connEvents)
		clear(e.lisEvents)
		e.connEvents, e.lisEvents = e.connEvents[:0], e.lisEvents[:0]
		return
	}
	e.dispatching = true
	// Until both queues are empty: an Accept from Acceptable queues the
	// events that waited for it.
	for len(e.connEvents) > 0 || len(e.lisEvents) > 0 {
		for i := 0; i < len(e.connEvents); i++ {
			c := e.connEvents[i]
			e.connEvents[i] = nil
			c.queued = false
			if c.listener != nil {
				// Not accepted yet: the events wait; Accept queues them again.
				continue
			}
			ev := c.pending
			c.pending = 0
			if ev != 0 && !c.appClosed {
				e.handler.ConnEvent(c, ev)
			}
		}
		e.connEvents = e.connEvents[:0]
		for i := 0; i < len(e.lisEvents); i++ {
			l := e.lisEvents[i]
			l.queued = false
			e.lisEvents[i] = nil
			if !l.closed && len(l.acceptQ) > 0 {
				e.handler.Acceptable(l)
			}
		}
		e.lisEvents = e.lisEvents[:0]
	}
	e.dispatching = false
}

// handleTCP demultiplexes a TCP segment: connection, TIME_WAIT entry,
// listener, or nobody (RFC 9293 section 3.10.7.1: answer with RST).
func (e *Engine) handleTCP(p *wire.Packet) {
	if !e.owns(p.Dst) {
		e.counters.inc(RxNotOurs)
		return
	}
	e.counters.inc(RxSegments)
	s := &e.seg
	s.load(p, e.inIf)
	if c := e.flows[s.key]; c != nil {
		if c.trace != nil {
			c.traceIn(s)
		}
		c.input(s)
		return
	}
	if i, ok := e.tw.lookup(s.key); ok {
		if len(e.tr.tw) != 0 {
			e.traceTimeWaitIn(s)
		}
		e.timeWaitInput(i, s)
		return
	}
	if l := e.listeners[s.key.Local()]; l != nil && !l.closed {
		l.input(s)
		return
	}
	e.noSocket(s)
}

// noSocket answers a segment that matched nothing (RFC 9293 section
// 3.10.7.1, CLOSED state); an RST is never answered.
func (e *Engine) noSocket(s *segment) {
	e.counters.inc(RxNoSocket)
	if e.secondChance(s) {
		return
	}
	if s.flags&wire.FlagRST != 0 {
		e.counters.inc(RxRSTIgnored)
		return
	}
	if s.flags&wire.FlagACK != 0 {
		e.sendRST(s.key, s.from, s.ack, 0, false)
		return
	}
	e.sendRST(s.key, s.from, 0, s.seq.Add(s.seqLen()), true)
}

// sendRST sends <SEQ=seq><CTL=RST>, or <SEQ=seq><ACK=ack><CTL=RST,ACK> when withACK.
func (e *Engine) sendRST(k FlowKey, to hop, seq, ack seqnum.Value, withACK bool) {
	flags := uint8(wire.FlagRST)
	if withACK {
		flags |= wire.FlagACK
	} else {
		ack = 0
	}
	if e.sendSegment(k, to, seq, ack, flags, 0, nil, nil, nil) {
		e.counters.inc(TxResets)
	}
}

// sendSegment encodes one segment into a frame from the sink of the
// interface it leaves by.
func (e *Engine) sendSegment(k FlowKey, to hop, seq, ack seqnum.Value, flags uint8, wnd uint16, opts *wire.TCPOptions, p1, p2 []byte) bool {
	ifc := &e.ifs[to.ifx]
	buf := ifc.Sink.NextFrame()
	if buf == nil {
		e.counters.inc(TxNoBuffer)
		return false
	}
	f := &e.txf
	f.EthSrc, f.EthDst = ifc.MAC, to.mac
	f.Src, f.Dst = k.LocalAddr, k.RemoteAddr
	f.TTL = 64
	f.TCP = wire.TCPHeader{
		SrcPort: k.LocalPort, DstPort: k.RemotePort,
		Seq: uint32(seq), Ack: uint32(ack),
		Flags: flags, Window: wnd,
	}
	if opts != nil {
		f.TCP.Options = *opts
	}
	n := wire.EncodeTCP(buf, f, p1, p2)
	if n == 0 {
		e.counters.inc(TxNoBuffer)
		return false
	}
	ifc.Sink.Commit(n)
	if e.tr.active != 0 {
		e.traceOut(k, len(p1)+len(p2))
	}
	e.counters.inc(TxFrames)
	e.counters.inc(TxSegments)
	return true
}

// flowHeld and flowReleased tell Config.Flows.
func (e *Engine) flowHeld(k FlowKey) {
	if e.cfg.Flows != nil {
		e.cfg.Flows.FlowHeld(k)
	}
}

func (e *Engine) flowReleased(k FlowKey) {
	if e.cfg.Flows != nil {
		e.cfg.Flows.FlowReleased(k)
	}
}

// releaseConn ends the engine's side of c in state final (Closed or
// TimeWait): out of the flow table and the timer heap, listener slots
// returned, EventClosed queued.
func (e *Engine) releaseConn(c *Conn, final State) {
	if cur, ok := e.flows[c.key]; ok && cur == c {
		delete(e.flows, c.key)
		if final != TimeWait { // else its TIME_WAIT entry holds the flow on
			e.flowReleased(c.key)
		}
	}
	c.deadline = Never
	e.timers.remove(c)
	if c.memCharged {
		c.memCharged = false
		e.mem.add(MemConn, -(connBytes + int64(e.cfg.ConnOverhead)))
	}
	if l := c.listener; l != nil {
		// Never accepted: the application has not seen c and hears nothing of it.
		c.appClosed = true
		l.forget(c)
	}
	if c.trace != nil {
		c.traceState(final)
	}
	// Gauges count live connections only; a TIME_WAIT entry is counted by the table.
	e.stats.states[c.state].Add(-1)
	c.state = final
	c.sndBuf.reset()
	c.sent.release(e)
	if c.appClosed {
		c.rcvBuf.reset()
		c.ooo.reset()
	}
	c.notify(EventClosed)
}

// maxQuickAcks is how many segments a new connection ACKs at once before
// delaying ACKs (Linux's TCP_MAX_QUICKACKS): the sender's slow start is not
// held back by our delayed ACKs while its window is small.
const maxQuickAcks = 16

// newConn makes a connection record for k with the engine's defaults; its
// segments leave by to.
func (e *Engine) newConn(k FlowKey, to hop) *Conn {
	c := &Conn{
		e: e, key: k, state: Closed,
		heapIdx: -1, deadline: Never, rtoAt: Never, kaAt: Never,
		peer: to, macKnown: true,
		persistAt: Never, delackAt: Never, tlpAt: Never, reoAt: Never, paceWaitAt: Never,
		quickAcks:  maxQuickAcks,
		reordering: dupThresh, rack: rackState{reoWndMult: 1},
		rcvMSSSeen: int(defaultMSS(k)),
		rto:        e.cfg.InitialRTO,
		keepalive:  !e.cfg.Keepalive.Disabled,
		lastRcvAt:  e.now,
		tsOffset:   e.tsOffset(k.LocalAddr, k.RemoteAddr),
	}
	c.cc = c.ccState.init(e.cfg.Congestion, int(defaultMSS(k)))
	c.sndBuf.max = e.cfg.SndBuffer
	c.rcvBuf.max = e.cfg.RcvBuffer
	c.sndBuf.acct, c.sndBuf.kind = &e.mem, MemSend
	c.rcvBuf.acct, c.rcvBuf.kind = &e.mem, MemReceive
	c.progressAt, c.memCharged = e.now, true
	e.mem.add(MemConn, connBytes+int64(e.cfg.ConnOverhead))
	e.stats.states[Closed].Add(1)
	return c
}

// Conns calls fn for every connection (not TIME_WAIT entries) until fn returns false.
func (e *Engine) Conns(fn func(c *Conn) bool) {
	for _, c := range e.flows {
		if !fn(c) {
			return
		}
	}
}

// TimeWaits calls fn with the 4-tuple and the interface of every TIME_WAIT
// entry until fn returns false.
func (e *Engine) TimeWaits(fn func(k FlowKey, iface int) bool) { e.tw.each(fn) }

// ourMSS is the MSS we advertise for k's address family on interface ifx.
func (e *Engine) ourMSS(ifx uint8, k FlowKey) uint16 {
	if k.LocalAddr.Is4() {
		return e.ifs[ifx].mss4
	}
	return e.ifs[ifx].mss6
}

// ourMSS is the MSS we advertise on c.
func (c *Conn) ourMSS() uint16 { return c.e.ourMSS(c.peer.ifx, c.key) }

// hop is where a frame goes: the interface it leaves by and the MAC of the
// next hop on that link.
type hop struct {
	mac wire.MAC
	ifx uint8
}

// netIf is an interface as the engine keeps it.
type netIf struct {
	Interface
	mss4, mss6 uint16
	stats      *IfaceStats
}

// IfaceStats are one interface's receive counters, readable from any
// goroutine: what the daemon needs to tell an operator which link is
// misconfigured (checksum drops dominating on one of them).
type IfaceStats struct {
	RxFrames         atomic.Uint64 // frames handled from this interface
	ChecksumDrops    atomic.Uint64 // TCP segments dropped for their checksum
	PartialChecksums atomic.Uint64 // segments accepted with a partial checksum (Virtual)
}

// Interfaces is the number of interfaces.
func (e *Engine) Interfaces() int { return len(e.ifs) }

// IfaceStats returns interface ifx's counters.
func (e *Engine) IfaceStats(ifx int) *IfaceStats { return e.ifs[ifx].stats }
