package stack

// FuzzEngine drives one engine holding a connection in every state with a
// sequence of steps decoded from the fuzz input, and checks the engine's
// invariants after each step. FuzzTimeWaitTable checks the TIME_WAIT table
// against a plain model.
//
//	go test ./stack/ -run '^$' -fuzz FuzzEngine -fuzztime 60s
//
// Input layout: byte 0 is the configuration (bit 0 TrustL4Checksum, bit 1
// SYN cookies always, bit 2 the setup's peers send no timestamps, bit 3
// keepalive off for new connections, bit 4 a handler that accepts, reads,
// writes and closes from inside its callbacks); then steps, each
//
//	time byte   0b00nnnnnn n ms, 0b01nnnnnn n×100ms, 0b10nnnnnn n×10s,
//	            0b11nnnnnn to the next deadline, then n ms
//	op byte     low 3 bits: the operation (fzOp*); bit 7: do not Tick even
//	            if a deadline has passed (the timers run late)
//	operands    per operation, see fzWorld.doStep
//
// A structured segment names a target 4-tuple; its sequence number is an
// offset from the target's RCV.NXT (or its advertised window edge), its
// acknowledgment an offset from SND.UNA (or SND.NXT). A target without
// state uses the peer's next sequence number and the engine's last one.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

var (
	fzEngineAddr6 = netip.MustParseAddr("fd00::1")
	fzPeerAddr6   = netip.MustParseAddr("fd00::2")
	fzRouterMAC   = wire.MAC{0x02, 0, 0, 0, 0, 0xfe}
	fzRouter4     = netip.MustParseAddr("10.0.0.254")
	fzRouter6     = netip.MustParseAddr("fd00::fe")
	fzOtherAddr   = netip.MustParseAddr("10.0.0.3") // a peer whose MAC nobody knows
)

// Operations (low 3 bits of the op byte).
const (
	fzOpSeg  = 0 // structured segment (also 1)
	fzOpTick = 2 // Tick now
	fzOpApp  = 3 // Read / Write / CloseWrite / Close / Abort / SetKeepalive ...
	fzOpRaw  = 4 // raw or mutated frame
	fzOpNet  = 5 // ARP, ICMP echo, frag-needed / packet-too-big, NDP
	fzOpMgmt = 6 // Accept, Dial, Listener Close, Listen again
	fzOpSeg2 = 7 // structured segment
)

// Targets set up before the first step, in this order.
const (
	fzEstData    = iota // passive ESTABLISHED: 3000 bytes in flight, 1000 unread
	fzEstIdle           // passive ESTABLISHED, the peer's ISN about to wrap
	fzEstActive         // active ESTABLISHED
	fzSynSent           // active SYN_SENT
	fzSynRcvd           // passive SYN_RCVD
	fzFinWait1          // FIN_WAIT_1
	fzFinWait2          // FIN_WAIT_2
	fzCloseWait         // CLOSE_WAIT
	fzClosing           // CLOSING
	fzLastAck           // LAST_ACK
	fzTimeWait1         // TIME_WAIT entry
	fzTimeWait2         // TIME_WAIT entry
	fzNewPeer1          // a fresh port towards the IPv4 listener
	fzNewPeer2          // another
	fzNewPeer6          // a fresh port towards the IPv6 listener
	fzClosedPort        // towards a port nobody listens on
	fzNumTargets
)

const (
	fzMaxSteps   = 500
	fzMaxTargets = 40
	fzMaxConns   = 64
)

type fzReader struct{ b []byte }

func (r *fzReader) u8() uint8 {
	if len(r.b) == 0 {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}
func (r *fzReader) u16() uint16 { return uint16(r.u8())<<8 | uint16(r.u8()) }
func (r *fzReader) u32() uint32 { return uint32(r.u16())<<16 | uint32(r.u16()) }

// offset reads a sequence offset whose size the low two bits of mode say.
func (r *fzReader) offset(mode uint8) seqnum.Value {
	switch mode & 3 {
	case 1:
		return seqnum.Value(int32(int8(r.u8())))
	case 2:
		return seqnum.Value(int32(int16(r.u16())))
	case 3:
		return seqnum.Value(r.u32())
	}
	return 0
}

// fzFlow is what the fuzzer knows of one 4-tuple: every sequence range the
// peer delivered to it, and from which starting points (the ISNs of SYNs it
// sent, or the state the setup left) those ranges are contiguous.
type fzFlow struct {
	ivs      []fzRange
	anchors  []seqnum.Value
	reach    []seqnum.Value // per anchor: the end of the contiguous run from it
	peerNext seqnum.Value   // after the last segment the peer sent
	engNext  seqnum.Value   // after the last segment the engine sent
	engTS    uint32         // the engine's last TSval
	tainted  bool           // the peer sent bytes other than fzPattern's (raw frames)
}

type fzRange struct {
	start seqnum.Value
	len   seqnum.Size
}

func (f *fzFlow) addAnchor(a, reach seqnum.Value) {
	f.anchors = append(f.anchors, a)
	f.reach = append(f.reach, reach)
	f.extend(len(f.anchors) - 1)
}

// add records a delivered segment occupying [start, start+n).
func (f *fzFlow) add(start seqnum.Value, n seqnum.Size) {
	if n == 0 {
		return
	}
	f.ivs = append(f.ivs, fzRange{start, n})
	for i := range f.anchors {
		if uint32(f.reach[i]-start) < uint32(n) {
			f.extend(i)
		}
	}
}

// extend grows anchor i's contiguous run over every range that touches it.
func (f *fzFlow) extend(i int) {
	for changed := true; changed; {
		changed = false
		for _, iv := range f.ivs {
			if uint32(f.reach[i]-iv.start) < uint32(iv.len) {
				f.reach[i] = iv.start.Add(iv.len)
				changed = true
			}
		}
	}
}

// acks reports whether an acknowledgment of ack covers only delivered sequence space.
func (f *fzFlow) acks(ack seqnum.Value) bool {
	for i, a := range f.anchors {
		if uint32(ack-a) <= uint32(f.reach[i]-a) {
			return true
		}
	}
	return false
}

// fzWorld is the engine under test with its peers, its application (the
// handler and the connections it holds) and what the fuzzer knows of each flow.
type fzWorld struct {
	t      *testing.T
	h      *harness
	e      *Engine
	now    Time
	flags  wire.ParseFlags
	l4, l6 *Listener

	targets  []FlowKey
	flows    map[FlowKey]*fzFlow
	conns    []*Conn // every connection the application holds
	held     map[*Conn]bool
	rcvNxt   map[*Conn]seqnum.Value
	closed   map[*Conn]bool // EventClosed delivered
	peerTS   uint32
	step     int
	reactive bool // the handler reads, writes and closes from its callbacks
	rd, wr   []byte
}

func (w *fzWorld) fatalf(format string, args ...any) {
	w.t.Helper()
	w.t.Fatalf("step %d: %s", w.step, fmt.Sprintf(format, args...))
}

func (w *fzWorld) ConnEvent(c *Conn, ev Events) {
	if c.appClosed || c.listener != nil {
		w.fatalf("event %v for %v, which the application closed or has not accepted", ev, c.key)
	}
	if w.closed[c] {
		w.fatalf("event %v for %v after EventClosed", ev, c.key)
	}
	if ev&EventClosed != 0 {
		w.closed[c] = true
	}
	w.hold(c)
	if !w.reactive {
		return
	}
	// A proxy's reactions, from inside the callback.
	if ev&EventReadable != 0 {
		for w.read(c, w.rd) > 0 {
		}
	}
	if ev&EventWritable != 0 {
		w.write(c, 3000)
	}
	if ev&EventPeerClosed != 0 {
		if w.step%2 == 0 {
			c.CloseWrite()
		} else {
			c.Close()
		}
	}
}

func (w *fzWorld) Acceptable(l *Listener) {
	if l.AcceptQueueLen() == 0 {
		w.fatalf("Acceptable with an empty accept queue")
	}
	if w.reactive {
		if c := l.Accept(); c != nil {
			w.hold(c)
			w.addTarget(c.key)
		}
	}
}

func (w *fzWorld) hold(c *Conn) {
	if c != nil && !w.held[c] && len(w.conns) < fzMaxConns {
		w.held[c] = true
		w.conns = append(w.conns, c)
	}
}

func (w *fzWorld) flow(k FlowKey) *fzFlow {
	f := w.flows[k]
	if f == nil {
		f = &fzFlow{}
		w.flows[k] = f
	}
	return f
}

func (w *fzWorld) addTarget(k FlowKey) {
	for _, t := range w.targets {
		if t == k {
			return
		}
	}
	if len(w.targets) < fzMaxTargets {
		w.targets = append(w.targets, k)
	}
}

// newFuzzWorld builds the engine and puts a connection in every state,
// through the real transitions (the harness checks each segment on the way).
func newFuzzWorld(t *testing.T, cfgByte byte) *fzWorld {
	h := newHarness(t, func(c *Config) {
		c.SYNBacklog = 2
		c.AcceptBacklog = 2
		c.TimeWaitMax = 4
		c.RcvBuffer = 8192
		c.SndBuffer = 8192
		c.MaxRetries = 4
		c.SYNRetries = 2
		c.SYNACKRetries = 2
		c.Keepalive = Keepalive{Idle: 30 * time.Second, Interval: 5 * time.Second, Probes: 3}
		c.TrustL4Checksum = cfgByte&1 != 0
	})
	h.peerTS = cfgByte&4 == 0
	w := &fzWorld{
		t: t, h: h, e: h.e,
		flows:  map[FlowKey]*fzFlow{},
		held:   map[*Conn]bool{},
		rcvNxt: map[*Conn]seqnum.Value{},
		closed: map[*Conn]bool{},
		peerTS: 100_000,
		rd:     make([]byte, 20000),
		wr:     make([]byte, 20000),
	}
	if h.e.cfg.TrustL4Checksum {
		w.flags = wire.ParseSkipL4Checksum
	}
	if cfgByte&8 != 0 {
		h.e.cfg.Keepalive.Disabled = true
	}
	for i := range w.wr {
		w.wr[i] = byte(i * 7)
	}
	h.e.AddAddress(fzEngineAddr6)
	h.e.SetNeighbor(fzPeerAddr6, peerMAC)
	h.listen()
	w.l4 = h.l
	l6, err := h.e.Listen(netip.AddrPortFrom(fzEngineAddr6, 80))
	if err != nil {
		t.Fatal(err)
	}
	w.l6 = l6

	setup := func(port uint16, iss uint32, build func()) {
		h.peerPort, h.peerISS, h.knowISS, h.c, h.ourPort = port, seqnum.Value(iss), false, nil, listenAP.Port()
		build()
		w.targets = append(w.targets, h.key())
		if h.c != nil && h.c.listener == nil { // not SYN_RCVD: the application holds it
			w.hold(h.c)
		}
	}
	timeWait := func() { // h.timeWait, keeping the record the application holds
		h.finWait2()
		c := h.c
		h.send(seg{flags: FIN | ACK, seq: 1, ack: 2})
		h.expect(seg{flags: ACK, seq: 2, ack: 2})
		h.c = c
	}
	setup(40001, 0x1000_0000, func() {
		h.established()
		h.c.Write(fzPattern(make([]byte, 3000), h.c.sndBufSeq))
		h.drain()
		h.send(seg{flags: ACK | PSH, seq: 1, ack: 1, data: fzPattern(make([]byte, 1000), h.peerISS+1)})
		h.expect(seg{flags: ACK, seq: 3001, ack: 1001})
	})
	setup(40002, 0xffff_fff0, h.established)
	setup(peerAP.Port(), 0x2000_0000, h.establishedActive)
	setup(peerAP.Port(), 0x3000_0000, h.synSent)
	setup(40003, 0x4000_0000, h.synReceived)
	setup(40004, 0x5000_0000, h.finWait1)
	setup(40005, 0x6000_0000, h.finWait2)
	setup(40006, 0x7000_0000, h.closeWait)
	setup(40007, 0x8000_0000, h.closing)
	setup(40008, 0x9000_0000, h.lastAck)
	setup(40009, 0xa000_0000, timeWait)
	setup(40010, 0xb000_0000, timeWait)
	w.targets = append(w.targets,
		FlowKey{LocalAddr: engineAddr, RemoteAddr: peerAddr, LocalPort: 80, RemotePort: 41001},
		FlowKey{LocalAddr: engineAddr, RemoteAddr: peerAddr, LocalPort: 80, RemotePort: 41002},
		FlowKey{LocalAddr: fzEngineAddr6, RemoteAddr: fzPeerAddr6, LocalPort: 80, RemotePort: 42001},
		FlowKey{LocalAddr: engineAddr, RemoteAddr: peerAddr, LocalPort: 8080, RemotePort: 43001},
	)
	if len(w.targets) != fzNumTargets {
		t.Fatalf("%d targets set up, want %d", len(w.targets), fzNumTargets)
	}
	want := map[int]State{
		fzEstData: Established, fzEstIdle: Established, fzEstActive: Established, fzSynSent: SynSent,
		fzSynRcvd: SynReceived, fzFinWait1: FinWait1, fzFinWait2: FinWait2, fzCloseWait: CloseWait,
		fzClosing: Closing, fzLastAck: LastAck,
	}
	for i, k := range w.targets {
		c := h.e.flows[k]
		switch {
		case i == fzTimeWait1 || i == fzTimeWait2:
			slot, ok := h.e.tw.lookup(k)
			if !ok {
				t.Fatalf("setup: target %d not in TIME_WAIT", i)
			}
			en := h.e.tw.entry(slot)
			f := w.flow(k)
			f.addAnchor(en.rcvNxt-1, en.rcvNxt)
			f.peerNext, f.engNext = en.rcvNxt, en.sndNxt
		case i >= fzNewPeer1:
			if c != nil {
				t.Fatalf("setup: target %d has a connection", i)
			}
			w.flow(k).peerNext = seqnum.Value(0x0c00_0000 + uint32(i))
		case c == nil || c.state != want[i]:
			t.Fatalf("setup: target %d: %v, want %v", i, c, want[i])
		default:
			f := w.flow(k)
			if c.state != SynSent {
				f.addAnchor(c.irs, c.rcvNxt)
			}
			f.peerNext, f.engNext = c.rcvNxt, c.sndNxt
		}
	}
	if cfgByte&2 != 0 {
		h.e.cfg.SYNCookies = SYNCookiesAlways // after the setup, which needs a SYN_RCVD entry
	}
	w.reactive = cfgByte&16 != 0
	h.drain()
	h.e.handler = w
	w.now = h.now
	w.check()
	return w
}

// run executes the steps in in.
func (w *fzWorld) run(in []byte) {
	r := &fzReader{b: in}
	for w.step = 1; len(r.b) > 0 && w.step <= fzMaxSteps; w.step++ {
		w.doStep(r)
		w.check()
	}
	if w.e.batching {
		w.e.EndBatch(w.now)
		w.check()
	}
}

// doStep decodes and runs one step. The operands: a segment, see segFrame;
// an application call, see appOp; a raw frame, rawOp; ARP and ICMP, netOp;
// accept, dial and listeners, mgmtOp. Tick has none.
func (w *fzWorld) doStep(r *fzReader) {
	tb, op := r.u8(), r.u8()
	n := time.Duration(tb & 63)
	switch tb >> 6 {
	case 0:
		w.now = w.now.Add(n * time.Millisecond)
	case 1:
		w.now = w.now.Add(n * 100 * time.Millisecond)
	case 2:
		w.now = w.now.Add(n * 10 * time.Second)
	case 3:
		if d := w.e.NextDeadline(); d != Never && d > w.now {
			w.now = d
		}
		w.now = w.now.Add(n * time.Millisecond)
	}
	seg := op&7 == fzOpSeg || op&7 == 1 || op&7 == fzOpSeg2
	if op&0x40 != 0 && seg && !w.e.batching {
		// Segments from here to the next non-segment step are one burst
		// (the shard loop's RX batch).
		w.e.BeginBatch()
	} else if w.e.batching && (!seg || op&0x40 != 0) {
		w.e.EndBatch(w.now)
	}
	if op&0x80 == 0 && w.e.NextDeadline() <= w.now && !w.e.batching {
		w.tick()
	}
	switch op & 7 {
	case fzOpSeg, 1, fzOpSeg2:
		_, fr := w.segFrame(r)
		w.deliver(fr)
	case fzOpTick:
		w.tick()
	case fzOpApp:
		w.appOp(r)
	case fzOpRaw:
		w.rawOp(r)
	case fzOpNet:
		w.netOp(r)
	case fzOpMgmt:
		w.mgmtOp(r)
	}
}

func (w *fzWorld) tick() {
	w.e.Tick(w.now)
	if d := w.e.NextDeadline(); d <= w.now {
		w.fatalf("after Tick the next deadline is %v in the past", w.now.Sub(d))
	}
}

// refs are the reference numbers of a target: RCV.NXT, the right edge of
// the window we advertised, SND.UNA and SND.NXT.
func (w *fzWorld) refs(k FlowKey) (rcvNxt, edge, sndUna, sndNxt seqnum.Value) {
	if c := w.e.flows[k]; c != nil {
		return c.rcvNxt, c.rcvAdvEdge, c.sndUna, c.sndNxt
	}
	if slot, ok := w.e.tw.lookup(k); ok {
		en := w.e.tw.entry(slot)
		return en.rcvNxt, en.rcvNxt, en.sndNxt, en.sndNxt
	}
	f := w.flow(k)
	return f.peerNext, f.peerNext, f.engNext, f.engNext
}

// segFrame decodes a structured segment: target, flags, sequence mode and
// offset, acknowledgment mode and offset, window, options, payload length.
func (w *fzWorld) segFrame(r *fzReader) (FlowKey, []byte) {
	k := w.targets[int(r.u8())%len(w.targets)]
	flags := r.u8()
	rcvNxt, edge, sndUna, sndNxt := w.refs(k)
	sm := r.u8()
	seq := rcvNxt
	if sm&4 != 0 {
		seq = edge
	}
	seq += r.offset(sm)
	am := r.u8()
	ack := sndUna
	if am&4 != 0 {
		ack = sndNxt
	}
	ack += r.offset(am)
	wnd := r.u16()
	ob := r.u8()
	var o wire.TCPOptions
	if ob&1 != 0 {
		o.MSS = r.u16()
	}
	if ob&2 != 0 {
		o.HasWScale, o.WScale = true, r.u8()
	}
	o.SACKPermitted = ob&4 != 0
	if ob&8 != 0 {
		w.peerTS += uint32(int32(int8(r.u8())))
		o.HasTimestamps, o.TSVal, o.TSEcr = true, w.peerTS, w.flow(k).engTS
	}
	if ob&16 != 0 {
		start := uint32(sndUna) + uint32(r.u16())
		o.NumSACK, o.SACK[0] = 1, wire.SACKBlock{Start: start, End: start + uint32(r.u16())}
	}
	payload := fzPattern(make([]byte, int(r.u8())*16), seq)
	f := wire.TCPFrame{
		EthSrc: peerMAC, EthDst: engineMAC, Src: k.RemoteAddr, Dst: k.LocalAddr,
		TCP: wire.TCPHeader{
			SrcPort: k.RemotePort, DstPort: k.LocalPort,
			Seq: uint32(seq), Ack: uint32(ack), Flags: flags, Window: wnd, Options: o,
		},
	}
	b := make([]byte, wire.TCPFrameLen(&f, len(payload)))
	if wire.EncodeTCP(b, &f, payload, nil) == 0 {
		w.fatalf("encode %+v failed", f.TCP)
	}
	return k, b
}

// deliver hands frame to the engine, first recording what a TCP segment in
// it delivers to its 4-tuple.
func (w *fzWorld) deliver(frame []byte) {
	var p wire.Packet
	isTCP := wire.Parse(frame, &p, w.flags) == wire.DropNone && p.Proto == wire.ProtoTCP
	if isTCP {
		f := w.flow(FlowKey{LocalAddr: p.Dst, RemoteAddr: p.Src, LocalPort: p.TCP.DstPort, RemotePort: p.TCP.SrcPort})
		seq := seqnum.Value(p.TCP.Seq)
		n := seqnum.Size(len(p.Payload))
		if p.TCP.Flags&SYN != 0 {
			n++
		}
		if p.TCP.Flags&FIN != 0 {
			n++
		}
		if p.TCP.Flags&SYN != 0 {
			f.addAnchor(seq, seq)
		}
		f.add(seq, n)
		f.peerNext = seq.Add(n)
		if !bytes.Equal(p.Payload, fzPattern(make([]byte, len(p.Payload)), seq)) {
			f.tainted = true
		}
	}
	sent := len(w.h.sink.frames)
	w.e.HandleFrame(w.now, frame)
	if isTCP && p.TCP.Flags&RST != 0 {
		// Never answer an RST with an RST (RFC 9293 section 3.10.7).
		for _, b := range w.h.sink.frames[sent:] {
			var q wire.Packet
			if wire.Parse(b, &q, 0) == wire.DropNone && q.Proto == wire.ProtoTCP && q.TCP.Flags&RST != 0 &&
				q.Dst == p.Src && q.TCP.DstPort == p.TCP.SrcPort {
				w.fatalf("engine answered an RST %v with an RST", p.TCP)
			}
		}
	}
}

// appOp: connection index, action, argument.
func (w *fzWorld) appOp(r *fzReader) {
	ci, act, arg := r.u8(), r.u8(), int(r.u16())
	if len(w.conns) == 0 {
		return
	}
	c := w.conns[int(ci)%len(w.conns)]
	switch act % 9 {
	case 0:
		w.read(c, w.rd[:arg%len(w.rd)])
	case 1:
		w.write(c, arg%len(w.wr))
	case 2:
		c.CloseWrite()
	case 3:
		c.Close()
	case 4:
		c.Abort()
	case 5:
		c.SetKeepalive(arg&1 != 0)
	case 6:
		_, _, _, _, _ = c.Info(), c.Buffered(), c.WriteSpace(), c.State(), c.Err()
	case 7:
		for w.read(c, w.rd) > 0 {
		}
	case 8:
		w.write(c, len(w.wr))
		if c.Info().SndQueued > w.e.cfg.SndBuffer {
			w.fatalf("send queue %d over its bound", c.Info().SndQueued)
		}
	}
}

// fzPattern fills b with the bytes that sequence numbers seq.. carry: every
// byte either side sends is a function of its sequence number, so that
// retransmissions, overlaps and reassembly can be checked byte for byte.
func fzPattern(b []byte, seq seqnum.Value) []byte {
	for i := range b {
		b[i] = byte((uint32(seq) + uint32(i)) * 0x9e3779b1 >> 24)
	}
	return b
}

// read reads into p and checks that the bytes are those the peer sent at
// their sequence numbers.
func (w *fzWorld) read(c *Conn, p []byte) int {
	pos := c.rcvNxt - seqnum.Value(c.rcvBuf.Len())
	if c.finRcvd {
		pos--
	}
	n, _ := c.Read(p)
	if n < 0 || n > len(p) {
		w.fatalf("Read(%d) = %d", len(p), n)
	}
	if !w.flow(c.key).tainted && n > 0 && !bytes.Equal(p[:n], fzPattern(make([]byte, n), pos)) {
		w.fatalf("%v: read %d bytes that differ from what the peer sent from %d", c.key, n, pos)
	}
	return n
}

// write writes n pattern bytes for the sequence numbers they will occupy.
func (w *fzWorld) write(c *Conn, n int) {
	p := fzPattern(w.wr[:n], c.sndBufSeq.Add(seqnum.Size(c.sndBuf.Len())))
	if k, _ := c.Write(p); k < 0 || k > len(p) {
		w.fatalf("Write(%d) = %d", len(p), k)
	}
}

// rawOp: mode, then raw bytes, or a structured segment and mutations.
func (w *fzWorld) rawOp(r *fzReader) {
	mode := r.u8()
	switch mode % 3 {
	case 0: // bytes as they are
		n := int(r.u8())
		b := make([]byte, n)
		for i := range b {
			b[i] = r.u8()
		}
		w.deliver(b)
	case 1: // a structured segment with bytes overwritten
		_, b := w.segFrame(r)
		for range int(r.u8()%4) + 1 {
			off := int(r.u16()) % len(b)
			b[off] = r.u8()
		}
		if mode&0x80 != 0 {
			fzFixChecksums(b)
		}
		w.deliver(b)
	case 2: // an Ethernet header towards us, an EtherType, then bytes
		n := int(r.u8())
		b := make([]byte, wire.EthernetHeaderLen+n)
		copy(b[0:6], engineMAC[:])
		copy(b[6:12], peerMAC[:])
		binary.BigEndian.PutUint16(b[12:14], []uint16{wire.EtherTypeIPv4, wire.EtherTypeIPv6, wire.EtherTypeARP, wire.EtherTypeVLAN}[mode>>6])
		for i := wire.EthernetHeaderLen; i < len(b); i++ {
			b[i] = r.u8()
		}
		if mode&0x20 != 0 {
			fzFixChecksums(b)
		}
		w.deliver(b)
	}
}

// fzFixChecksums recomputes the IPv4 header checksum and the TCP checksum of
// a mutated frame where its headers allow, so that mutations reach past them.
func fzFixChecksums(b []byte) {
	if len(b) < wire.EthernetHeaderLen+wire.IPv6HeaderLen {
		return
	}
	ip := b[wire.EthernetHeaderLen:]
	var seg []byte
	var src, dst netip.Addr
	switch binary.BigEndian.Uint16(b[12:14]) {
	case wire.EtherTypeIPv4:
		ihl := int(ip[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(ip[2:4]))
		if ihl < wire.IPv4HeaderLen || ihl > len(ip) {
			return
		}
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:12], wire.Checksum(ip[:ihl], 0))
		if ip[9] != wire.ProtoTCP || total < ihl || total > len(ip) {
			return
		}
		seg = ip[ihl:total]
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
	case wire.EtherTypeIPv6:
		plen := int(binary.BigEndian.Uint16(ip[4:6]))
		if ip[6] != wire.ProtoTCP || wire.IPv6HeaderLen+plen > len(ip) {
			return
		}
		seg = ip[wire.IPv6HeaderLen : wire.IPv6HeaderLen+plen]
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
	default:
		return
	}
	if len(seg) < wire.TCPHeaderLen {
		return
	}
	seg[16], seg[17] = 0, 0
	binary.BigEndian.PutUint16(seg[16:18], wire.Checksum(seg, wire.PseudoHeaderSum(src, dst, wire.ProtoTCP, len(seg))))
}

// netOp: kind, then its operands.
func (w *fzWorld) netOp(r *fzReader) {
	kind := r.u8()
	b := make([]byte, 1600)
	var n int
	switch kind % 7 {
	case 0: // ARP request, for us or not, from 10.0.0.x
		target := engineAddr
		if kind&0x80 != 0 {
			target = netip.MustParseAddr("10.0.0.99")
		}
		x := r.u8()
		n = wire.EncodeARP(b, wire.ARPRequest, wire.MAC{0x02, 0, 0, 0, 1, x}, netip.AddrFrom4([4]byte{10, 0, 0, x}), wire.MAC{}, target)
	case 1: // ARP reply from 10.0.0.x (x = 3 resolves fzOtherAddr)
		x := r.u8()
		n = wire.EncodeARP(b, wire.ARPReply, wire.MAC{0x02, 0, 0, 0, 1, x}, netip.AddrFrom4([4]byte{10, 0, 0, x}), engineMAC, engineAddr)
	case 2: // ICMP echo request, to us or not
		dst := engineAddr
		if kind&0x80 != 0 {
			dst = netip.MustParseAddr("10.0.0.99")
		}
		n = copy(b, echoRequest(peerAddr, dst, r.u16(), r.u16(), w.wr[:r.u8()]))
	case 3: // frag-needed / packet-too-big quoting a target's segment
		k := w.targets[int(r.u8())%len(w.targets)]
		_, _, sndUna, sndNxt := w.refs(k)
		m := r.u8()
		seq := sndUna
		if m&4 != 0 {
			seq = sndNxt
		}
		seq += r.offset(m)
		mtu := r.u16()
		f := wire.TCPFrame{
			EthSrc: engineMAC, EthDst: peerMAC, Src: k.LocalAddr, Dst: k.RemoteAddr,
			TCP: wire.TCPHeader{SrcPort: k.LocalPort, DstPort: k.RemotePort, Seq: uint32(seq), Flags: ACK},
		}
		q := make([]byte, wire.TCPFrameLen(&f, 100))
		qn := wire.EncodeTCP(q, &f, w.wr[:100], nil)
		quoted := q[wire.EthernetHeaderLen:qn]
		if k.LocalAddr.Is4() {
			n = wire.EncodeICMPFragNeeded(b, fzRouterMAC, engineMAC, fzRouter4, mtu, quoted)
		} else {
			n = wire.EncodePacketTooBig(b, fzRouterMAC, engineMAC, fzRouter6, uint32(mtu), quoted)
		}
	case 4: // neighbour solicitation for our IPv6 address
		n = wire.EncodeNeighborSolicit(b, peerMAC, fzPeerAddr6, fzEngineAddr6)
	case 5: // neighbour advertisement from the IPv6 peer
		n = wire.EncodeNeighborAdvert(b, peerMAC, fzPeerAddr6, engineMAC, fzEngineAddr6, fzPeerAddr6)
	case 6: // ICMPv6 echo request to our IPv6 address
		n = copy(b, fzEchoRequest6(r.u16(), w.wr[:r.u8()]))
	}
	if n > 0 {
		w.deliver(b[:n])
	}
}

// fzEchoRequest6 builds an ICMPv6 echo request from the IPv6 peer to us.
func fzEchoRequest6(seq uint16, data []byte) []byte {
	b := make([]byte, wire.EthernetHeaderLen+wire.IPv6HeaderLen+wire.ICMPHeaderLen+len(data))
	copy(b[0:6], engineMAC[:])
	copy(b[6:12], peerMAC[:])
	binary.BigEndian.PutUint16(b[12:14], wire.EtherTypeIPv6)
	ip := b[wire.EthernetHeaderLen:]
	ip[0] = 0x60
	m := ip[wire.IPv6HeaderLen:]
	binary.BigEndian.PutUint16(ip[4:6], uint16(len(m)))
	ip[6], ip[7] = wire.ProtoICMPv6, 64
	s, d := fzPeerAddr6.As16(), fzEngineAddr6.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	m[0] = wire.ICMPv6EchoRequest
	binary.BigEndian.PutUint16(m[4:6], 0x77)
	binary.BigEndian.PutUint16(m[6:8], seq)
	copy(m[wire.ICMPHeaderLen:], data)
	binary.BigEndian.PutUint16(m[2:4], wire.Checksum(m, wire.PseudoHeaderSum(fzPeerAddr6, fzEngineAddr6, wire.ProtoICMPv6, len(m))))
	return b
}

// mgmtOp: kind and argument.
func (w *fzWorld) mgmtOp(r *fzReader) {
	kind, arg := r.u8(), r.u8()
	l := w.l4
	if arg&1 != 0 {
		l = w.l6
	}
	switch kind % 6 {
	case 0, 1:
		if c := l.Accept(); c != nil {
			if c.listener != nil || c.inAcceptQ {
				w.fatalf("accepted %v still belongs to its listener", c.key)
			}
			w.hold(c)
			w.addTarget(c.key)
		}
	case 2:
		local, remote := engineAddr, []netip.AddrPort{
			peerAP,
			netip.AddrPortFrom(peerAddr, 40000+uint16(arg%3)),
			netip.AddrPortFrom(fzOtherAddr, 80),
			netip.AddrPortFrom(fzPeerAddr6, 80),
		}[arg%4]
		if remote.Addr().Is6() {
			local = fzEngineAddr6
		}
		c, err := w.e.Dial(w.now, local, remote)
		if err == nil {
			w.hold(c)
			w.addTarget(c.key)
		}
	case 3:
		l.Close()
	case 4:
		if l.closed {
			nl, err := w.e.Listen(l.addr)
			if err != nil {
				w.fatalf("listen again on %v: %v", l.addr, err)
			}
			if l == w.l4 {
				w.l4 = nl
			} else {
				w.l6 = nl
			}
		}
	case 5: // the TX ring runs out of frames, or has them again
		w.h.sink.full = arg&2 != 0
	}
}

// check verifies every invariant after a step.
func (w *fzWorld) check() {
	e := w.e
	// Every frame the engine sent parses; no ACK covers data never delivered.
	for _, b := range w.h.sink.frames {
		var p wire.Packet
		if d := wire.Parse(b, &p, 0); d != wire.DropNone {
			w.fatalf("engine sent a frame that does not parse (%v): %x", d, b)
		}
		if p.EthSrc != engineMAC {
			w.fatalf("engine sent a frame from %v", p.EthSrc)
		}
		if p.Proto != wire.ProtoTCP {
			continue
		}
		if !e.owns(p.Src) {
			w.fatalf("engine sent a segment from %v, not its own", p.Src)
		}
		k := FlowKey{LocalAddr: p.Src, RemoteAddr: p.Dst, LocalPort: p.TCP.SrcPort, RemotePort: p.TCP.DstPort}
		f := w.flow(k)
		h := &p.TCP
		if h.Flags&ACK != 0 && h.Flags&RST == 0 && !f.acks(seqnum.Value(h.Ack)) {
			w.fatalf("%v: engine acknowledged %d, beyond what was delivered (runs %v from %v)", k, h.Ack, f.reach, f.anchors)
		}
		n := seqnum.Size(len(p.Payload))
		if h.Flags&(SYN|FIN) != 0 {
			n++
		}
		if h.Flags&RST == 0 {
			f.engNext = seqnum.Value(h.Seq).Add(n)
		}
		if len(p.Payload) > 0 && !bytes.Equal(p.Payload, fzPattern(make([]byte, len(p.Payload)), seqnum.Value(h.Seq))) {
			w.fatalf("%v: engine sent %d bytes at %d that differ from what the application wrote there", k, len(p.Payload), h.Seq)
		}
		if h.Options.HasTimestamps {
			f.engTS = h.Options.TSVal
		}
	}
	w.h.sink.frames = w.h.sink.frames[:0]

	// The flow table.
	var count [numStates]int64
	for k, c := range e.flows {
		if c.key != k || c.e != e {
			w.fatalf("flow table key %v holds the connection of %v", k, c.key)
		}
		if c.state <= Listen || c.state == TimeWait || c.state >= numStates {
			w.fatalf("%v in the flow table in state %v", k, c.state)
		}
		count[c.state]++
		if c.sndUna.GreaterThan(c.sndNxt) {
			w.fatalf("%v (%v): SND.UNA %d > SND.NXT %d", k, c.state, c.sndUna, c.sndNxt)
		}
		fin := seqnum.Size(0)
		if c.finSent {
			fin = 1
		}
		if end := c.sndBufSeq.Add(seqnum.Size(c.sndBuf.Len()) + fin); c.sndNxt.GreaterThan(end) {
			w.fatalf("%v (%v): SND.NXT %d past the end of the data %d", k, c.state, c.sndNxt, end)
		}
		if msg := c.sentQueueError(); msg != "" {
			w.fatalf("%v (%v): sent queue: %s", k, c.state, msg)
		}
		if c.sndBuf.Len() > c.sndBuf.max || len(c.sndBuf.buf) > c.sndBuf.max || c.sndBuf.max != e.cfg.SndBuffer {
			w.fatalf("%v: send buffer %d (storage %d) over its bound %d", k, c.sndBuf.Len(), len(c.sndBuf.buf), c.sndBuf.max)
		}
		if c.rcvBuf.Len() > c.rcvBuf.max || len(c.rcvBuf.buf) > c.rcvBuf.max || c.rcvBuf.max != e.cfg.RcvBuffer {
			w.fatalf("%v: receive buffer %d (storage %d) over its bound %d", k, c.rcvBuf.Len(), len(c.rcvBuf.buf), c.rcvBuf.max)
		}
		if c.state != SynSent {
			if prev, ok := w.rcvNxt[c]; ok && c.rcvNxt.LessThan(prev) {
				w.fatalf("%v (%v): RCV.NXT moved back from %d to %d", k, c.state, prev, c.rcvNxt)
			}
			w.rcvNxt[c] = c.rcvNxt
		}
		// The heap entry may fire early (onTimer re-arms it), never late.
		if next := c.nextTimer(); c.deadline > next {
			w.fatalf("%v (%v): heap deadline %d after the next timer %d", k, c.state, c.deadline, next)
		}
		if c.deadline == Never {
			if c.heapIdx != -1 {
				w.fatalf("%v: no deadline but in the heap", k)
			}
		} else if c.heapIdx < 0 || c.heapIdx >= len(e.timers) || e.timers[c.heapIdx] != c {
			w.fatalf("%v (%v): deadline armed but not in the heap", k, c.state)
		}
		// Liveness: whatever waits on the peer has a timer that ends the wait.
		unsent := c.sndBufSeq.Add(seqnum.Size(c.sndBuf.Len())).GreaterThan(c.sndNxt) || (c.finQueued && !c.finSent)
		sending := c.state == Established || c.state == CloseWait || c.state == FinWait1 || c.state == Closing || c.state == LastAck
		switch {
		case c.nextTimer() != Never:
		case c.state == SynSent || c.state == SynReceived:
			w.fatalf("%v (%v): handshake without a timer", k, c.state)
		case c.sndUna != c.sndNxt:
			w.fatalf("%v (%v): %d bytes in flight without a timer", k, c.state, c.sndUna.Size(c.sndNxt))
		case c.appClosed:
			w.fatalf("%v (%v): closed by the application, without a timer to end it", k, c.state)
		case sending && unsent:
			w.fatalf("%v (%v): data or FIN waiting to be sent without a timer (window %d)", k, c.state, c.sndWnd)
		}
		if c.listener != nil && c.state != SynReceived && !c.inAcceptQ {
			w.fatalf("%v (%v): belongs to a listener but is in neither queue", k, c.state)
		}
		if _, tw := e.tw.lookup(k); tw {
			w.fatalf("%v is both a connection and a TIME_WAIT entry", k)
		}
	}
	for i, c := range e.timers {
		if e.flows[c.key] != c {
			w.fatalf("timer heap holds %v (%v), which is not in the flow table", c.key, c.state)
		}
		if i > 0 && e.timers[(i-1)/2].deadline > c.deadline {
			w.fatalf("timer heap order broken at %d", i)
		}
	}

	// The gauges against the tables.
	for s := range numStates {
		want := count[s]
		if s == TimeWait {
			want = int64(e.tw.live)
		}
		if got := e.Stats().Connections(s); got != want {
			w.fatalf("gauge %v = %d, the tables hold %d", s, got, want)
		}
	}
	tw := &e.tw
	if tw.live != len(tw.index) || tw.live > tw.max || tw.n > len(tw.ring) || tw.live > tw.n {
		w.fatalf("TIME_WAIT table: live %d, index %d, slots %d of %d, max %d", tw.live, len(tw.index), tw.n, len(tw.ring), tw.max)
	}
	for k, slot := range tw.index {
		if en := tw.entry(slot); !en.live || en.key != k {
			w.fatalf("TIME_WAIT index %v points at slot %d holding %v (live %v)", k, slot, en.key, en.live)
		}
	}

	// Listeners and their queues.
	if got := e.stats.listeners.Load(); got != int64(len(e.listeners)) {
		w.fatalf("listener gauge %d, %d listeners", got, len(e.listeners))
	}
	for _, l := range e.listeners {
		syn := 0
		for _, c := range e.flows {
			if c.listener == l && c.state == SynReceived && !c.inAcceptQ {
				syn++
			}
		}
		if syn != l.synQLen || l.synQLen > e.cfg.SYNBacklog {
			w.fatalf("listener %v: SYN queue length %d, %d SYN_RCVD entries", l.addr, l.synQLen, syn)
		}
		if l.AcceptQueueLen() > e.cfg.AcceptBacklog {
			w.fatalf("listener %v: accept queue %d over its bound", l.addr, l.AcceptQueueLen())
		}
		for _, c := range l.acceptQ[l.acceptHd:] {
			if e.flows[c.key] != c || !c.inAcceptQ || c.listener != l {
				w.fatalf("listener %v: accept queue holds %v (%v), not a live connection of its own", l.addr, c.key, c.state)
			}
		}
	}
}

// --- seeds ---

// fzSeg is a structured segment for seeds.
type fzSeg struct {
	target, flags       byte
	seqFromEdge         bool
	seq                 int32
	ackFromNxt          bool
	ack                 int32
	wnd                 uint16
	ts                  bool
	mss                 uint16
	plen16              byte // payload length / 16
	tb, opExtra, opCode byte
}

func fzOffsetBytes(mode byte, v int32) []byte {
	switch {
	case v == 0:
		return []byte{mode}
	case v >= -128 && v <= 127:
		return []byte{mode | 1, byte(int8(v))}
	case v >= -32768 && v <= 32767:
		return []byte{mode | 2, byte(uint16(v) >> 8), byte(v)}
	}
	u := uint32(v)
	return []byte{mode | 3, byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)}
}

// body is the segment's operand bytes (after the time and op bytes).
func (s fzSeg) body() []byte {
	b := []byte{s.target, s.flags}
	var sm, am byte
	if s.seqFromEdge {
		sm = 4
	}
	if s.ackFromNxt {
		am = 4
	}
	b = append(b, fzOffsetBytes(sm, s.seq)...)
	b = append(b, fzOffsetBytes(am, s.ack)...)
	wnd := s.wnd
	if wnd == 0 {
		wnd = 65535
	}
	b = append(b, byte(wnd>>8), byte(wnd))
	var ob byte
	var opts []byte
	if s.mss != 0 {
		ob |= 1
		opts = append(opts, byte(s.mss>>8), byte(s.mss))
	}
	if s.ts {
		ob |= 8
		opts = append(opts, 1)
	}
	b = append(b, ob)
	b = append(b, opts...)
	return append(b, s.plen16)
}

func (s fzSeg) step() []byte {
	return append([]byte{s.tb, fzOpSeg | s.opExtra}, s.body()...)
}

func fzInput(cfg byte, steps ...[]byte) []byte {
	b := []byte{cfg}
	for _, s := range steps {
		b = append(b, s...)
	}
	return b
}

func fzApp(conn, act byte, arg uint16) []byte {
	return []byte{0, fzOpApp, conn, act, byte(arg >> 8), byte(arg)}
}

func fzTickAt(tb byte) []byte      { return []byte{tb, fzOpTick} }
func fzMgmt(kind, arg byte) []byte { return []byte{0, fzOpMgmt, kind, arg} }

// Indexes of the connections the application holds after setup (w.conns).
const (
	fzConnEstData = iota
	fzConnEstIdle
	fzConnEstActive
	fzConnSynSent
	fzConnFinWait1 // SYN_RCVD has no handle
	fzConnFinWait2
	fzConnCloseWait
	fzConnClosing
	fzConnLastAck
	fzConnTimeWait1 // the TIME_WAIT entries' records
	fzConnTimeWait2
)

func fzSeeds() [][]byte {
	all := func(mk func(target byte) []byte) [][]byte {
		var s [][]byte
		for t := range byte(fzNumTargets) {
			s = append(s, mk(t))
		}
		return s
	}
	seeds := [][]byte{
		{0},
		// In-order data, read by the application; then the in-flight data ACKed.
		fzInput(0,
			fzSeg{target: fzEstData, flags: ACK | PSH, plen16: 10, ts: true}.step(),
			fzApp(fzConnEstData, 7, 0),
			fzSeg{target: fzEstData, flags: ACK, ackFromNxt: true, ts: true}.step(),
			fzApp(fzConnEstData, 8, 0),
			fzSeg{target: fzEstData, flags: ACK, ack: 1448, ts: true}.step(),
			fzTickAt(0xc0), fzTickAt(0xc0), fzTickAt(0xc0),
		),
		// The receive buffer filled to a zero window, then probed and data trimmed.
		fzInput(0,
			fzSeg{target: fzEstIdle, flags: ACK, plen16: 255}.step(),
			fzSeg{target: fzEstIdle, flags: ACK, plen16: 255}.step(),
			fzSeg{target: fzEstIdle, flags: ACK | FIN, plen16: 10}.step(),
			fzSeg{target: fzEstIdle, flags: ACK, plen16: 1}.step(),
			fzApp(fzConnEstIdle, 0, 100),
			fzApp(fzConnEstIdle, 7, 0),
			fzSeg{target: fzEstIdle, flags: ACK | FIN}.step(),
		),
		// Out of order, duplicate and overlapping data.
		fzInput(0,
			fzSeg{target: fzEstActive, flags: ACK, seq: 1000, plen16: 10}.step(),
			fzSeg{target: fzEstActive, flags: ACK, seq: -100, plen16: 10}.step(),
			fzSeg{target: fzEstActive, flags: ACK, plen16: 10}.step(),
			fzSeg{target: fzEstActive, flags: ACK, seq: -16, plen16: 2}.step(),
			fzSeg{target: fzEstActive, flags: ACK, seqFromEdge: true, plen16: 1}.step(),
		),
		// A new connection from a fresh port: handshake, data, both closes.
		fzInput(0,
			fzSeg{target: fzNewPeer1, flags: SYN, ts: true, mss: 1200}.step(),
			fzSeg{target: fzNewPeer1, flags: ACK, ackFromNxt: true, ts: true}.step(),
			fzMgmt(0, 0),
			fzSeg{target: fzNewPeer1, flags: ACK | PSH, ts: true, plen16: 3}.step(),
			fzApp(11, 7, 0), fzApp(11, 1, 500), fzApp(11, 2, 0),
			fzSeg{target: fzNewPeer1, flags: ACK | FIN, ackFromNxt: true, ts: true}.step(),
			fzTickAt(0xc0), fzTickAt(0xc0),
		),
		// The same with SYN cookies, and an IPv6 peer.
		fzInput(2,
			fzSeg{target: fzNewPeer2, flags: SYN, ts: true}.step(),
			fzSeg{target: fzNewPeer2, flags: ACK, ts: true, plen16: 2}.step(),
			fzSeg{target: fzNewPeer6, flags: SYN}.step(),
			fzSeg{target: fzNewPeer6, flags: ACK, ackFromNxt: true}.step(),
			fzMgmt(0, 0), fzMgmt(0, 1),
			fzSeg{target: fzNewPeer6, flags: ACK | FIN}.step(),
		),
		// A SYN flood past the SYN queue, then the listeners closed and reopened.
		fzInput(0,
			fzSeg{target: fzNewPeer1, flags: SYN, seq: 1}.step(),
			fzSeg{target: fzNewPeer2, flags: SYN, seq: 2}.step(),
			fzSeg{target: fzNewPeer1, flags: SYN, seq: 3}.step(),
			fzSeg{target: fzNewPeer2, flags: SYN, seq: 4}.step(),
			fzSeg{target: fzNewPeer2, flags: ACK}.step(),
			fzMgmt(3, 0), fzMgmt(4, 0), fzMgmt(3, 1),
			fzSeg{target: fzNewPeer1, flags: SYN}.step(),
			fzTickAt(0xc0), fzTickAt(0xc0), fzTickAt(0xc0),
		),
		// Timers: retransmissions to give-up, keepalive, TIME_WAIT expiry, a
		// Dial whose next hop never answers.
		fzInput(0, fzMgmt(2, 2), fzTickAt(0xc0), fzTickAt(0xc0), fzTickAt(0xc0), fzTickAt(0xc0), fzTickAt(0xc0),
			fzTickAt(0xc0), fzTickAt(0xc0), fzTickAt(0xc0), fzTickAt(0xc0), fzTickAt(0xc0),
			fzTickAt(0xbf), fzTickAt(0xbf), fzTickAt(0xbf), fzTickAt(0xc0), fzTickAt(0xc0)),
		// Late timers: a long jump without Tick, then segments.
		fzInput(0,
			fzSeg{tb: 0xbf, opExtra: 0x80, target: fzEstData, flags: ACK, ackFromNxt: true}.step(),
			fzSeg{tb: 0xbf, opExtra: 0x80, target: fzSynRcvd, flags: ACK, ackFromNxt: true}.step(),
			fzSeg{target: fzFinWait1, flags: ACK | FIN, ackFromNxt: true}.step(),
		),
		// ICMP: frag-needed quoting data in flight, and not; ARP; echo; NDP.
		fzInput(0,
			[]byte{0, fzOpNet, 3, fzEstData, 0, 0x02, 0x00},
			[]byte{0, fzOpNet, 3, fzEstData, 0x05, 0x10, 0x05, 0xdc},
			[]byte{0, fzOpNet, 3, fzEstData, 0x02, 0x12, 0x34, 0x02, 0x40},
			[]byte{0, fzOpNet, 0, 9}, []byte{0, fzOpNet, 0x80, 9},
			[]byte{0, fzOpNet, 1, 2}, []byte{0, fzOpNet, 2, 0, 1, 0, 1, 20},
			[]byte{0, fzOpNet, 4}, []byte{0, fzOpNet, 5}, []byte{0, fzOpNet, 6, 0, 1},
		),
		// Dial to a next hop nobody knows; ARP answers; the SYN-ACK completes it.
		fzInput(0,
			fzMgmt(2, 2),
			[]byte{0, fzOpNet, 1, 3},
			fzSeg{target: fzNumTargets, flags: SYN | ACK, ackFromNxt: true}.step(),
			fzMgmt(2, 3),
			fzSeg{target: fzNumTargets + 1, flags: SYN | ACK, ackFromNxt: true}.step(),
			fzMgmt(2, 0), fzTickAt(0xc0), fzTickAt(0xc0), fzTickAt(0xc0), fzTickAt(0xc0),
		),
		// Simultaneous open: a SYN to the SYN_SENT connection, then its SYN-ACK.
		fzInput(0,
			fzSeg{target: fzSynSent, flags: SYN, seq: 77}.step(),
			fzSeg{target: fzSynSent, flags: SYN | ACK, seq: -1, ackFromNxt: true}.step(),
			fzSeg{target: fzSynSent, flags: ACK}.step(),
		),
		// Both listener queues full: a SYN_RCVD entry's ACK finds no room.
		fzInput(0,
			fzSeg{target: fzNewPeer1, flags: SYN}.step(),
			fzSeg{target: fzNewPeer2, flags: SYN, ts: true}.step(),
			fzSeg{target: fzNewPeer1, flags: ACK, ackFromNxt: true}.step(),
			fzSeg{target: fzNewPeer2, flags: ACK, ts: true}.step(),
			fzSeg{target: fzSynRcvd, flags: ACK, ackFromNxt: true}.step(),
			fzSeg{target: fzNewPeer1, flags: RST}.step(),
			fzSeg{target: fzSynRcvd, flags: ACK, ackFromNxt: true}.step(),
			fzMgmt(0, 0), fzMgmt(0, 0),
		),
		// The TX ring empty while segments arrive and timers run, then back.
		fzInput(0,
			fzMgmt(5, 2),
			fzSeg{target: fzEstData, flags: ACK | PSH, plen16: 4}.step(),
			fzApp(fzConnEstIdle, 1, 500),
			fzTickAt(0xc0), fzTickAt(0xc0),
			fzMgmt(5, 0),
			fzTickAt(0xc0), fzTickAt(0xc0),
		),
		// A burst of in-window RSTs: challenge ACKs, then their rate limit.
		fzInput(0,
			fzSeg{target: fzEstIdle, flags: RST, seq: 10}.step(), fzSeg{target: fzEstIdle, flags: RST, seq: 11}.step(),
			fzSeg{target: fzEstIdle, flags: RST, seq: 12}.step(), fzSeg{target: fzEstIdle, flags: RST, seq: 13}.step(),
			fzSeg{target: fzEstIdle, flags: RST, seq: 14}.step(), fzSeg{target: fzEstIdle, flags: RST, seq: 15}.step(),
			fzSeg{tb: 0x4a, target: fzEstIdle, flags: SYN, seq: 16}.step(),
		),
		// The application's calls on every connection, then time.
		fzInput(8,
			fzApp(fzConnEstData, 3, 0), fzApp(fzConnEstIdle, 3, 0), fzApp(fzConnEstActive, 2, 0),
			fzApp(fzConnSynSent, 1, 100), fzApp(fzConnSynSent, 2, 0), fzApp(fzConnFinWait1, 4, 0),
			fzApp(fzConnFinWait2, 3, 0), fzApp(fzConnCloseWait, 1, 3000), fzApp(fzConnCloseWait, 3, 0),
			fzApp(fzConnClosing, 5, 1), fzApp(fzConnLastAck, 4, 0), fzApp(fzConnTimeWait1, 5, 1),
			fzApp(fzConnTimeWait2, 3, 0), fzApp(fzConnTimeWait2, 1, 1),
			fzTickAt(0xc0), fzTickAt(0xc0), fzTickAt(0xc0), fzTickAt(0xc0), fzTickAt(0xc0),
			fzTickAt(0xbf), fzTickAt(0xbf), fzTickAt(0xbf),
		),
		// More connections into TIME_WAIT than the table holds.
		fzInput(0,
			fzSeg{target: fzFinWait2, flags: FIN | ACK}.step(),
			fzSeg{target: fzClosing, flags: ACK, ackFromNxt: true}.step(),
			fzApp(fzConnEstActive, 2, 0),
			fzSeg{target: fzEstActive, flags: FIN | ACK, ackFromNxt: true}.step(),
			fzSeg{target: fzTimeWait1, flags: FIN | ACK, seq: -1}.step(),
		),
		// Raw bytes, and segments with a byte overwritten (checksums fixed or not).
		fzInput(1,
			[]byte{0, fzOpRaw, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x00, 0x45, 0, 0, 40, 0, 0},
			append(append([]byte{0, fzOpRaw, 1}, fzSeg{target: fzEstData, flags: ACK, plen16: 1}.body()...), 0, 0, 46, 0x5f),
			append(append([]byte{0, fzOpRaw, 0x81}, fzSeg{target: fzEstData, flags: ACK | SYN}.body()...), 1, 0, 54, 0x0a),
			[]byte{0, fzOpRaw, 0x42, 40, 0x60, 0, 0, 0, 0, 0, 6, 64},
		),
	}
	// Each flag combination worth trying, at RCV.NXT/SND.UNA, against every target.
	for _, flags := range []byte{FIN | ACK, RST, RST | ACK, SYN, SYN | ACK, ACK} {
		seeds = append(seeds, fzInput(0, all(func(t byte) []byte {
			return fzSeg{target: t, flags: flags, ts: true, plen16: 1}.step()
		})...))
	}
	// In-window but not exact RSTs and SYNs (RFC 5961 challenge ACKs), and an old ACK.
	seeds = append(seeds, fzInput(0, all(func(t byte) []byte {
		return append(fzSeg{target: t, flags: RST, seq: 1}.step(), fzSeg{target: t, flags: SYN, seq: 100}.step()...)
	})...))
	seeds = append(seeds, fzInput(0, all(func(t byte) []byte {
		return fzSeg{target: t, flags: ACK, ack: -70000}.step()
	})...))
	// The data, handshake and close seeds again with a handler that reacts
	// from inside its callbacks.
	for _, i := range []int{1, 2, 4, 5} {
		seeds = append(seeds, append([]byte{seeds[i][0] | 16}, seeds[i][1:]...))
	}
	// A new SYN for each TIME_WAIT entry, newer and older.
	seeds = append(seeds, fzInput(0,
		fzSeg{target: fzTimeWait1, flags: SYN, seq: 100, ts: true}.step(),
		fzSeg{target: fzTimeWait2, flags: SYN, seq: -100}.step(),
		fzSeg{target: fzTimeWait1, flags: ACK, ackFromNxt: true, ts: true}.step(),
	))
	return seeds
}

func FuzzEngine(f *testing.F) {
	for _, s := range fzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		w := newFuzzWorld(t, in[0])
		w.run(in[1:])
	})
}

// TestFuzzSeedsReachStates checks that the seeds do what they say: between
// them they reach every state and the paths named below.
func TestFuzzSeedsReachStates(t *testing.T) {
	var total [NumCounters]uint64
	for _, s := range fzSeeds() {
		w := newFuzzWorld(t, s[0])
		w.run(s[1:])
		for i := range total {
			total[i] += w.e.Counters().Load(Counter(i))
		}
	}
	for _, c := range []Counter{
		PassiveOpens, ActiveOpens, SYNCookiesSent, SYNCookiesAccepted, ChallengeACKs, RxResets,
		TimeWaitExpired, TimeWaitReopened, TimeWaitRecycled, Retransmits, RetransmitTimeouts,
		KeepaliveProbes, ICMPPathMTU, ICMPEchoReplies, ARPRepliesOut, NDPAdvertsOut, RxOutOfOrder,
		SYNQueueOverflow, FinWait2Timeouts, ConnectNoRoute, AcceptQueueOverflow, TxNoBuffer,
		ChallengeACKsLimited, SYNRetransmits,
	} {
		if total[c] == 0 {
			t.Errorf("no seed reaches %v", c)
		}
	}
}

// --- the TIME_WAIT table against a model ---

// twModel is the table as documented: a FIFO of slots (tombstones
// included) holding at most max, from which live entries expire in order.
type twModel struct {
	slots []twModelSlot
	max   int
}

type twModelSlot struct {
	port    uint16
	expires Time
	live    bool
}

func (m *twModel) live() int {
	n := 0
	for _, s := range m.slots {
		if s.live {
			n++
		}
	}
	return n
}

func (m *twModel) find(port uint16) int {
	for i, s := range m.slots {
		if s.live && s.port == port {
			return i
		}
	}
	return -1
}

func (m *twModel) popHead() bool {
	live := m.slots[0].live
	m.slots = m.slots[1:]
	return live
}

func (m *twModel) insert(port uint16, expires Time) (recycled bool) {
	if len(m.slots) == m.max {
		recycled = m.popHead()
	}
	if m.live() >= m.max {
		for !m.popHead() {
		}
		recycled = true
	}
	m.slots = append(m.slots, twModelSlot{port, expires, true})
	return recycled
}

func (m *twModel) expire(now Time) (n int) {
	for len(m.slots) > 0 && (!m.slots[0].live || m.slots[0].expires <= now) {
		if m.popHead() {
			n++
		}
	}
	return n
}

func FuzzTimeWaitTable(f *testing.F) {
	f.Add([]byte{0})
	f.Add([]byte{0, 0, 1, 0, 2, 0, 3, 1, 2, 2, 0, 3, 9, 0, 4, 4, 2, 3, 200})
	f.Add([]byte{5, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 1, 3, 0, 8, 1, 5, 0, 9, 3, 100, 4, 0})
	f.Add([]byte{2, 0, 1, 0, 2, 1, 1, 0, 3, 0, 4, 1, 3, 0, 1, 0, 2, 3, 30, 0, 5})
	f.Add(func() []byte {
		b := []byte{6} // max 100: the ring grows past 64
		for i := range byte(120) {
			b = append(b, 0, i%40, 3, 1, 1, i%7)
		}
		return b
	}())
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		max := []int{1, 2, 3, 5, 8, 64, 100, 200}[in[0]%8]
		var e Engine
		e.tw.init(max)
		m := &twModel{max: max}
		const ttl = 50
		now := Time(1000)
		var expired uint64 // by the model
		for i := 1; i+1 < len(in); i += 2 {
			op, arg := in[i], in[i+1]
			port := uint16(arg % 40)
			key := twKey(int(port))
			switch op % 5 {
			case 0: // insert (a restart if the key is live: remove, then insert)
				if slot, ok := e.tw.lookup(key); ok {
					e.tw.remove(slot)
					m.slots[m.find(port)].live = false
				}
				got := e.tw.insert(twEntry{key: key, expires: now + ttl, rcvNxt: seqnum.Value(arg)})
				if want := m.insert(port, now+ttl); got != want {
					t.Fatalf("op %d: insert %d recycled %v, model %v", i, port, got, want)
				}
			case 1: // remove
				slot, ok := e.tw.lookup(key)
				if j := m.find(port); ok != (j >= 0) {
					t.Fatalf("op %d: lookup %d found %v, model %v", i, port, ok, j >= 0)
				} else if ok {
					e.tw.remove(slot)
					m.slots[j].live = false
				}
			case 2: // time passes
				now += Time(arg)
			case 3: // expire
				now += Time(arg)
				e.tw.expire(&e, now)
				expired += uint64(m.expire(now))
				if got := e.counters.Load(TimeWaitExpired); got != expired {
					t.Fatalf("op %d: %d entries expired by %d, model %d", i, got, now, expired)
				}
			case 4: // next expiry
				want := Never
				for _, s := range m.slots {
					if s.live {
						want = s.expires
						break
					}
				}
				if got := e.tw.nextExpiry(); got != want {
					t.Fatalf("op %d: next expiry %d, model %d", i, got, want)
				}
			}
			// The whole table against the model after every operation.
			if e.tw.live != m.live() || len(e.tw.index) != m.live() || e.tw.live > max || len(e.tw.ring) > max {
				t.Fatalf("op %d: live %d (index %d, ring %d), model %d, max %d", i, e.tw.live, len(e.tw.index), len(e.tw.ring), m.live(), max)
			}
			var got, want []uint16
			e.tw.each(func(k FlowKey, _ int) bool { got = append(got, k.RemotePort-1000); return true })
			for _, s := range m.slots {
				if s.live {
					want = append(want, s.port)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("op %d: entries in order %v, model %v", i, got, want)
			}
			for p := range uint16(40) {
				slot, ok := e.tw.lookup(twKey(int(p)))
				j := m.find(p)
				if ok != (j >= 0) {
					t.Fatalf("op %d: lookup %d found %v, model %v", i, p, ok, j >= 0)
				}
				if ok && (e.tw.entry(slot).key != twKey(int(p)) || e.tw.entry(slot).expires != m.slots[j].expires) {
					t.Fatalf("op %d: lookup %d gives slot %d holding %v expiring %d, model expiry %d",
						i, p, slot, e.tw.entry(slot).key, e.tw.entry(slot).expires, m.slots[j].expires)
				}
			}
		}
	})
}
