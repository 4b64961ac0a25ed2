package stack

// The exact-segment harness. A test plays the peer: it sends one segment at
// an exact time and asserts the exact segments the engine sends back (or
// none) and the engine's next deadline. Sequence and acknowledgment numbers
// in tests are relative to the ISNs, as in the ladder diagrams of RFC 9293:
// seq 0 is the sender's ISN (its SYN), seq 1 its first data byte.

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

const (
	SYN = wire.FlagSYN
	ACK = wire.FlagACK
	FIN = wire.FlagFIN
	RST = wire.FlagRST
	PSH = wire.FlagPSH
)

var (
	engineMAC  = wire.MAC{0x02, 0, 0, 0, 0, 0x01}
	peerMAC    = wire.MAC{0x02, 0, 0, 0, 0, 0x02}
	engineAddr = netip.MustParseAddr("10.0.0.1")
	peerAddr   = netip.MustParseAddr("10.0.0.2")
	listenAP   = netip.AddrPortFrom(engineAddr, 80)
	peerAP     = netip.AddrPortFrom(peerAddr, 40000)
	t0         = Time(1_000_000_000_000) // an arbitrary origin, far from 0
)

// recordingSink records every frame the engine sends.
type recordingSink struct {
	last   []byte
	frames [][]byte
	full   bool // simulate an exhausted TX ring
}

func (s *recordingSink) NextFrame() []byte {
	if s.full {
		return nil
	}
	s.last = make([]byte, 9100)
	return s.last
}
func (s *recordingSink) Commit(n int) { s.frames = append(s.frames, s.last[:n]) }

type event struct {
	c  *Conn
	ev Events
}

type recorder struct {
	events     []event
	acceptable int
}

func (r *recorder) ConnEvent(c *Conn, ev Events) { r.events = append(r.events, event{c, ev}) }
func (r *recorder) Acceptable(l *Listener)       { r.acceptable++ }

// seg is a segment in a ladder. seq and ack are relative to the sender's and
// the receiver's ISN respectively. wnd 0 means "do not check" on expect and
// "65535" on send; zeroWnd asserts or sends a zero window.
type seg struct {
	flags   uint8
	seq     uint32
	ack     uint32
	wnd     int
	zeroWnd bool
	data    []byte
	opts    *wire.TCPOptions // nil: the harness's defaults (timestamps if agreed)
	noTS    bool             // send without timestamps even if they were agreed
}

func (s seg) String() string {
	var f []string
	for _, x := range []struct {
		bit  uint8
		name string
	}{{SYN, "SYN"}, {FIN, "FIN"}, {RST, "RST"}, {PSH, "PSH"}, {ACK, "ACK"}} {
		if s.flags&x.bit != 0 {
			f = append(f, x.name)
		}
	}
	out := fmt.Sprintf("<%s seq=%d", strings.Join(f, "|"), s.seq)
	if s.flags&ACK != 0 {
		out += fmt.Sprintf(" ack=%d", s.ack)
	}
	if s.wnd > 0 || s.zeroWnd {
		out += fmt.Sprintf(" wnd=%d", s.wnd)
	}
	if len(s.data) > 0 {
		out += fmt.Sprintf(" len=%d", len(s.data))
	}
	return out + ">"
}

type harness struct {
	t    *testing.T
	e    *Engine
	sink *recordingSink
	rec  *recorder
	now  Time
	l    *Listener
	c    *Conn // the connection under test

	peerISS  seqnum.Value // the test's (peer's) ISN
	ourISS   seqnum.Value // the engine's ISN, learned from its SYN
	knowISS  bool
	peerPort uint16
	ourPort  uint16

	peerTS     bool // the peer sends timestamps
	peerTSVal  uint32
	lastTSEcho uint32 // last TSval the engine sent
	peerOpts   wire.TCPOptions
}

type harnessOpt func(*Config)

func newHarness(t *testing.T, opts ...harnessOpt) *harness {
	t.Helper()
	sink := &recordingSink{}
	rec := &recorder{}
	cfg := Config{
		MAC:       engineMAC,
		Addresses: []netip.Addr{engineAddr},
		Sink:      sink,
		Handler:   rec,
		Rand:      rand.New(rand.NewPCG(1, 2)),
	}
	for _, o := range opts {
		o(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.SetNeighbor(peerAddr, peerMAC)
	h := &harness{
		t: t, e: e, sink: sink, rec: rec, now: t0,
		peerISS:  1_000_000,
		peerPort: peerAP.Port(), ourPort: listenAP.Port(),
		peerTS: true, peerTSVal: 5000,
		peerOpts: wire.TCPOptions{MSS: 1460, HasWScale: true, WScale: 7, SACKPermitted: true},
	}
	return h
}

// listen opens the listener on listenAP.
func (h *harness) listen() *Listener {
	h.t.Helper()
	l, err := h.e.Listen(listenAP)
	if err != nil {
		h.t.Fatal(err)
	}
	h.l = l
	return l
}

func (h *harness) key() FlowKey {
	return FlowKey{LocalAddr: engineAddr, RemoteAddr: peerAddr, LocalPort: h.ourPort, RemotePort: h.peerPort}
}

// frame builds the peer's segment as a frame.
func (h *harness) frame(s seg) []byte {
	f := wire.TCPFrame{
		EthSrc: peerMAC, EthDst: engineMAC, Src: peerAddr, Dst: engineAddr,
		TCP: wire.TCPHeader{
			SrcPort: h.peerPort, DstPort: h.ourPort,
			Seq:   uint32(h.peerISS) + s.seq,
			Flags: s.flags, Window: 65535,
		},
	}
	if s.flags&ACK != 0 {
		f.TCP.Ack = uint32(h.ourISS) + s.ack
	}
	switch {
	case s.zeroWnd:
		f.TCP.Window = 0
	case s.wnd > 0:
		f.TCP.Window = uint16(s.wnd)
	}
	switch {
	case s.opts != nil:
		f.TCP.Options = *s.opts
	case s.flags&SYN != 0:
		f.TCP.Options = h.peerOpts
		if h.peerTS {
			f.TCP.Options.HasTimestamps = true
			f.TCP.Options.TSVal = h.peerTSVal
			f.TCP.Options.TSEcr = h.lastTSEcho
		}
	case h.peerTS && !s.noTS:
		f.TCP.Options = wire.TCPOptions{HasTimestamps: true, TSVal: h.peerTSVal, TSEcr: h.lastTSEcho}
	}
	b := make([]byte, wire.TCPFrameLen(&f, len(s.data)))
	if n := wire.EncodeTCP(b, &f, s.data, nil); n == 0 {
		h.t.Fatalf("encode %v failed", s)
	}
	return b
}

// send delivers the peer's segment at the current time.
func (h *harness) send(s seg) {
	h.t.Helper()
	h.e.HandleFrame(h.now, h.frame(s))
}

// recv pops the next frame the engine sent, as a relative seg.
func (h *harness) recv() (seg, *wire.Packet, bool) {
	h.t.Helper()
	if len(h.sink.frames) == 0 {
		return seg{}, nil, false
	}
	b := h.sink.frames[0]
	h.sink.frames = h.sink.frames[1:]
	p := new(wire.Packet)
	if d := wire.Parse(b, p, 0); d != wire.DropNone {
		h.t.Fatalf("engine sent an invalid frame (%v): %x", d, b)
	}
	if p.Proto != wire.ProtoTCP {
		return seg{}, p, true
	}
	if p.EthSrc != engineMAC || p.EthDst != peerMAC {
		h.t.Errorf("frame MACs %v -> %v, want %v -> %v", p.EthSrc, p.EthDst, engineMAC, peerMAC)
	}
	if p.TCP.Flags&SYN != 0 && !h.knowISS {
		h.ourISS, h.knowISS = seqnum.Value(p.TCP.Seq), true
	}
	if p.TCP.Options.HasTimestamps {
		h.lastTSEcho = p.TCP.Options.TSVal
	}
	s := seg{
		flags: p.TCP.Flags,
		seq:   p.TCP.Seq - uint32(h.ourISS),
		wnd:   int(p.TCP.Window),
		data:  append([]byte(nil), p.Payload...),
	}
	if p.TCP.Flags&ACK != 0 {
		s.ack = p.TCP.Ack - uint32(h.peerISS)
	}
	if p.TCP.Flags&RST != 0 && p.TCP.Flags&ACK == 0 && !h.knowISS {
		s.seq = p.TCP.Seq
	}
	return s, p, true
}

// expect asserts that the next segment the engine sent matches want (flags,
// seq, ack, data; the window when wnd or zeroWnd is set). It returns the parsed packet.
func (h *harness) expect(want seg) *wire.Packet {
	h.t.Helper()
	got, p, ok := h.recv()
	if !ok {
		h.t.Fatalf("engine sent nothing, want %v", want)
	}
	if p.Proto != wire.ProtoTCP {
		h.t.Fatalf("engine sent a non-TCP frame (proto %d), want %v", p.Proto, want)
	}
	if want.wnd <= 0 && !want.zeroWnd {
		got.wnd = want.wnd
	}
	got.zeroWnd = want.zeroWnd && got.wnd == 0
	if got.flags != want.flags || got.seq != want.seq || (want.flags&ACK != 0 && got.ack != want.ack) ||
		got.wnd != want.wnd || !bytes.Equal(got.data, want.data) {
		h.t.Fatalf("engine sent %v, want %v", got, want)
	}
	return p
}

// expectNone asserts that the engine sent nothing.
func (h *harness) expectNone() {
	h.t.Helper()
	if got, p, ok := h.recv(); ok {
		if p.Proto == wire.ProtoTCP {
			h.t.Fatalf("engine sent %v, want nothing", got)
		}
		h.t.Fatalf("engine sent a frame (ethertype %#x), want nothing", p.EtherType)
	}
}

// drain discards what the engine sent.
func (h *harness) drain() { h.sink.frames = nil }

// advance moves the clock by d and runs the timers.
func (h *harness) advance(d time.Duration) {
	h.now = h.now.Add(d)
	h.e.Tick(h.now)
}

// expectDeadline asserts the engine's next deadline, relative to now.
func (h *harness) expectDeadline(d time.Duration) {
	h.t.Helper()
	got := h.e.NextDeadline()
	if d < 0 {
		if got != Never {
			h.t.Fatalf("next deadline in %v, want none", got.Sub(h.now))
		}
		return
	}
	if got == Never || got.Sub(h.now) != d {
		if got == Never {
			h.t.Fatalf("no deadline, want one in %v", d)
		}
		h.t.Fatalf("next deadline in %v, want %v", got.Sub(h.now), d)
	}
}

// expectState asserts the state of the connection under test.
func (h *harness) expectState(s State) {
	h.t.Helper()
	if h.c == nil {
		if c := h.e.flows[h.key()]; c != nil {
			h.c = c
		}
	}
	got := Closed
	switch {
	case h.c != nil:
		got = h.c.State()
	case h.e.tw.index != nil:
		if _, ok := h.e.tw.lookup(h.key()); ok {
			got = TimeWait
		}
	}
	if got != s {
		h.t.Fatalf("state %v, want %v", got, s)
	}
}

// takeEvents returns and clears the events recorded so far.
func (h *harness) takeEvents() []event {
	ev := h.rec.events
	h.rec.events = nil
	return ev
}

// expectEvents asserts the union of events recorded for the connection under test since the last call.
func (h *harness) expectEvents(want Events) {
	h.t.Helper()
	var got Events
	for _, e := range h.takeEvents() {
		if e.c == h.c {
			got |= e.ev
		}
	}
	if got != want {
		h.t.Fatalf("events %v, want %v", got, want)
	}
}

func (h *harness) counter(k Counter) uint64 { return h.e.Counters().Load(k) }

func (h *harness) expectCounter(k Counter, want uint64) {
	h.t.Helper()
	if got := h.counter(k); got != want {
		h.t.Fatalf("counter %v = %d, want %d", k, got, want)
	}
}

// --- Putting the connection under test into a state, through the real transitions. ---

// synReceived: LISTEN, peer's SYN, our SYN-ACK.
func (h *harness) synReceived() {
	h.t.Helper()
	if h.l == nil {
		h.listen()
	}
	h.send(seg{flags: SYN, seq: 0})
	h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
	h.expectState(SynReceived)
}

// established: a full passive handshake, and the connection accepted.
func (h *harness) established() {
	h.t.Helper()
	h.synReceived()
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	h.expectNone()
	h.c = h.l.Accept()
	if h.c == nil {
		h.t.Fatal("handshake completed but the accept queue is empty")
	}
	h.expectState(Established)
	h.takeEvents()
}

// synSent: an active open from the engine to the peer.
func (h *harness) synSent() {
	h.t.Helper()
	c, err := h.e.Dial(h.now, engineAddr, peerAP)
	if err != nil {
		h.t.Fatal(err)
	}
	h.c = c
	h.ourPort = c.Key().LocalPort
	h.expect(seg{flags: SYN, seq: 0})
	h.expectState(SynSent)
}

// establishedActive: our SYN, the peer's SYN-ACK, our ACK.
func (h *harness) establishedActive() {
	h.t.Helper()
	h.synSent()
	h.send(seg{flags: SYN | ACK, seq: 0, ack: 1})
	h.expect(seg{flags: ACK, seq: 1, ack: 1})
	h.expectState(Established)
	h.expectEvents(EventConnected)
}

// finWait1: established, then we close first; our FIN unacknowledged.
func (h *harness) finWait1() {
	h.t.Helper()
	h.established()
	h.c.CloseWrite()
	h.expect(seg{flags: FIN | ACK, seq: 1, ack: 1})
	h.expectState(FinWait1)
}

// finWait2: our FIN acknowledged.
func (h *harness) finWait2() {
	h.t.Helper()
	h.finWait1()
	h.send(seg{flags: ACK, seq: 1, ack: 2})
	h.expectNone()
	h.expectState(FinWait2)
}

// closeWait: the peer closed first.
func (h *harness) closeWait() {
	h.t.Helper()
	h.established()
	h.send(seg{flags: FIN | ACK, seq: 1, ack: 1})
	// The passive close's ACK waits for the delayed-ACK timer: whatever we
	// send next (data, our FIN) carries it.
	h.expectNone()
	h.expectState(CloseWait)
	h.takeEvents()
}

// lastAck: the peer closed first, then we did.
func (h *harness) lastAck() {
	h.t.Helper()
	h.closeWait()
	h.c.CloseWrite()
	h.expect(seg{flags: FIN | ACK, seq: 1, ack: 2})
	h.expectState(LastAck)
}

// closing: both FINs crossed; ours not yet acknowledged.
func (h *harness) closing() {
	h.t.Helper()
	h.finWait1()
	h.send(seg{flags: FIN | ACK, seq: 1, ack: 1})
	h.expect(seg{flags: ACK, seq: 2, ack: 2})
	h.expectState(Closing)
}

// timeWait: we closed first and the peer's FIN arrived.
func (h *harness) timeWait() {
	h.t.Helper()
	h.finWait2()
	h.send(seg{flags: FIN | ACK, seq: 1, ack: 2})
	h.expect(seg{flags: ACK, seq: 2, ack: 2})
	h.c = nil
	h.expectState(TimeWait)
}
