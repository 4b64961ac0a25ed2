package stack

// Memory accounting and pressure (memory.go): windows under pressure never
// retract and come back when it ends, send buffers follow the peer's
// window, a splice holds one buffer's worth per direction, the high mark
// answers SYNs with cookies and resets the stalest connections first, and a
// full share drops SYNs.

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// lastACK pops every frame the engine sent and returns the last ACK's
// acknowledgment and right window edge (relative to the peer's ISN).
func (h *harness) lastACK() (ack, edge uint32) {
	h.t.Helper()
	found := false
	for {
		s, p, ok := h.recv()
		if !ok {
			break
		}
		if p.Proto != wire.ProtoTCP || s.flags&ACK == 0 {
			continue
		}
		found = true
		ack, edge = s.ack, s.ack+uint32(s.wnd)<<h.c.rcvWScale
	}
	if !found {
		h.t.Fatal("engine sent no ACK")
	}
	return ack, edge
}

// view is a second connection on h's engine: the same peer address on
// another port, with its own ISNs.
func (h *harness) view(peerPort uint16) *harness {
	v := *h
	v.peerPort, v.knowISS, v.c = peerPort, false, nil
	v.peerISS = 7_000_000 + seqnumOffset(peerPort)
	return &v
}

func seqnumOffset(p uint16) seqnum.Value { return seqnum.Value(p) * 100_000 }

func TestMemoryPressureWindowNeverRetracts(t *testing.T) {
	// A connection record charged 1 MiB: with the share set to 4/3 of it,
	// the record alone keeps the engine in pressure and the high mark
	// stays 1/6 above.
	h := newHarness(t, func(c *Config) { c.MemoryLimit = 1 << 30; c.ConnOverhead = 1 << 20 })
	h.established()
	// step: the peer sends one segment, as much of a full one as the
	// window allows, the application reads everything, and the ACK (sent
	// by the delayed-ACK timer at the latest) is returned.
	off, edge := uint32(1), uint32(0)
	buf := make([]byte, 1<<20)
	step := func(read bool) (ack, right uint32) {
		n := smss
		if edge != 0 {
			n = min(smss, int(edge-off))
		}
		h.send(seg{flags: ACK | PSH, seq: off, ack: 1, data: relData(int(off), n)})
		off += uint32(n)
		if read {
			h.c.Read(buf)
		}
		h.advance(h.e.cfg.DelayedACK)
		ack, right = h.lastACK()
		if ack != off {
			t.Fatalf("ACK %d, want %d", ack, off)
		}
		if right < edge {
			t.Fatalf("the right edge moved left: %d after %d", right, edge)
		}
		edge = right
		return ack, right
	}
	for range 20 {
		step(false)
	}
	if full := uint32(1 + DefaultBuffer); edge < full-smss {
		t.Fatalf("normal mode: right edge %d, want about %d", edge, full)
	}
	rec := h.e.Memory().Bytes(MemConn)
	h.e.SetMemoryShare(rec / 3 * 4)
	h.advance(0)
	if lv := h.e.Memory().Level(); lv != MemoryPressure {
		t.Fatalf("level %v with %d of %d held, want pressure", lv, h.e.Memory().Used(), rec/3*4)
	}
	h.expectCounter(MemoryPressureEntered, 1)

	// Under pressure the edge already advertised stands while the peer
	// fills it (step checks it never moves left)...
	old := edge
	for old-off > pressureRing+smss {
		if _, right := step(true); right != old {
			t.Fatalf("right edge %d under pressure before the old one (%d) was reached", right, old)
		}
	}
	// ...and past it the window is pressure's: at most the small ring, at
	// least one MSS.
	for range 20 {
		ack, right := step(true)
		if w := right - ack; w > pressureRing || w < smss {
			t.Fatalf("window %d under pressure, want between one MSS and %d", w, pressureRing)
		}
	}
	if lv := h.e.Memory().Level(); lv != MemoryPressure {
		t.Fatalf("level %v, want still pressure", lv)
	}

	// Pressure ends: the next ACK offers the whole buffer again.
	h.e.SetMemoryShare(0)
	h.advance(time.Millisecond)
	h.expectCounter(MemoryNormalEntered, 1)
	if ack, right := step(true); right-ack < DefaultBuffer-smss {
		t.Fatalf("window %d after pressure ended, want the whole buffer (%d)", right-ack, DefaultBuffer)
	}
}

func TestMemorySendBufferFollowsPeerWindow(t *testing.T) {
	h := newHarness(t)
	h.peerOpts.HasWScale = false
	h.listen()
	h.send(seg{flags: SYN, seq: 0, wnd: 8000})
	h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
	h.send(seg{flags: ACK, seq: 1, ack: 1, wnd: 8000})
	h.c = h.l.Accept()
	// Twice the peer's window, at least minSndLimit.
	if got := h.c.WriteSpace(); got != minSndLimit {
		t.Fatalf("send space %d with the peer's window at 8000, want %d", got, minSndLimit)
	}
	h.send(seg{flags: ACK, seq: 1, ack: 1, wnd: 40000})
	if got := h.c.WriteSpace(); got != 80000 {
		t.Fatalf("send space %d with the peer's window at 40000, want 80000", got)
	}
	n, _ := h.c.Write(make([]byte, 200000))
	if n != 80000 {
		t.Fatalf("wrote %d, want 80000", n)
	}
	// The largest window offered counts: a window closing does not shrink the buffer.
	h.drain()
	h.send(seg{flags: ACK, seq: 1, ack: 1, zeroWnd: true})
	if got := h.c.sndLimit(); got != 80000 {
		t.Fatalf("send limit %d after the window closed, want 80000", got)
	}
}

func TestMemorySpliceHoldsOneBuffer(t *testing.T) {
	h := newHarness(t)
	h.established() // the client leg; its peer never acknowledges our data
	b := h.view(9999)
	back, err := h.e.Dial(h.now, engineAddr, netip.AddrPortFrom(peerAddr, 9999))
	if err != nil {
		t.Fatal(err)
	}
	b.c, b.ourPort = back, back.Key().LocalPort
	b.expect(seg{flags: SYN, seq: 0})
	b.send(seg{flags: SYN | ACK, seq: 0, ack: 1})
	b.expect(seg{flags: ACK, seq: 1, ack: 1})
	h.c.Splice(back)
	back.Splice(h.c)
	h.takeEvents()

	// The backend sends all its window allows; a proxy moves what the
	// client leg takes.
	buf := make([]byte, 64<<10)
	pump := func() {
		for {
			n, _ := back.Read(buf[:min(len(buf), h.c.WriteSpace())])
			if n == 0 {
				return
			}
			h.c.Write(buf[:n])
		}
	}
	// backEdge is the right edge of the backend leg's window an ACK to the
	// backend advertises, relative to the backend's ISN.
	backEdge := func(s seg, p *wire.Packet) (uint32, bool) {
		if p.Proto != wire.ProtoTCP || s.flags&ACK == 0 || p.TCP.DstPort != 9999 {
			return 0, false
		}
		return p.TCP.Ack - uint32(b.peerISS) + uint32(p.TCP.Window)<<back.rcvWScale, true
	}
	off, edge := 1, uint32(1+65535)
	for off+smss <= int(edge) {
		b.send(seg{flags: ACK | PSH, seq: uint32(off), ack: 1, data: relData(off, smss)})
		off += smss
		pump()
		for {
			s, p, ok := h.recv()
			if !ok {
				break
			}
			if e, ok := backEdge(s, p); ok {
				edge = e
			}
		}
	}
	held := back.rcvBuf.Len() + h.c.sndBuf.Len()
	if lim := h.c.sndLimit(); held > lim {
		t.Fatalf("the session holds %d bytes in one direction, want at most the client leg's send buffer (%d)", held, lim)
	}
	if held < DefaultBuffer-2*smss {
		t.Fatalf("the session holds %d bytes, want the client leg's buffer nearly full (%d)", held, DefaultBuffer)
	}
	// The client acknowledges everything sent: room on the client leg is
	// window on the backend leg again.
	h.send(seg{flags: ACK, seq: 1, ack: uint32(h.c.sndNxt) - uint32(h.ourISS)})
	pump()
	opened := false
	for {
		s, p, ok := h.recv()
		if !ok {
			break
		}
		if e, ok := backEdge(s, p); ok && e > edge {
			opened = true
		}
	}
	if !opened {
		t.Fatal("the backend leg's window did not reopen when the client leg's buffer drained")
	}
}

func TestMemoryHighResetsStalestFirst(t *testing.T) {
	h := newHarness(t)
	h.listen()
	var legs []*harness
	for i := range 4 {
		v := h.view(41000 + uint16(i))
		v.synReceived()
		v.send(seg{flags: ACK, seq: 1, ack: 1})
		v.c = h.l.Accept()
		if i > 0 { // the stalest holds no buffer: a record costs too
			v.send(seg{flags: ACK | PSH, seq: 1, ack: 1, data: relData(0, 1000)})
		}
		v.drain()
		legs = append(legs, v)
		h.now = h.now.Add(time.Second)
		v.now = h.now
	}
	h.takeEvents()
	total := h.e.Memory().Used()
	held := func(i int) int64 { return legs[i].c.freeable() }
	// A share whose reset target (13/16) needs the two stalest connections gone.
	target := total - held(0) - held(1)/2
	share := target * 16 / 13
	if share/8*7 > total {
		t.Fatalf("test setup: %d held, share %d does not reach the high mark", total, share)
	}
	h.e.SetMemoryShare(share)
	h.advance(0)
	h.expectCounter(MemoryHighEntered, 1)
	h.expectCounter(MemoryResets, 2)
	for i, v := range legs {
		reset := v.c.State() == Closed
		if reset != (i < 2) {
			t.Errorf("connection %d (progress %d s ago): reset %v, want %v", i, 4-i, reset, i < 2)
		}
		if reset && !errors.Is(v.c.Err(), ErrMemoryPressure) {
			t.Errorf("connection %d: Err %v, want ErrMemoryPressure", i, v.c.Err())
		}
	}
	var resets int
	for _, ev := range h.takeEvents() {
		if ev.ev&EventReset != 0 {
			resets++
		}
	}
	if resets != 2 {
		t.Errorf("%d EventReset delivered, want 2", resets)
	}
}

func TestMemoryHighCookiesAndFullDrops(t *testing.T) {
	// A half-open entry charged 100 KiB: it counts, and nothing can be
	// reset to free it (only synchronized connections are).
	h := newHarness(t, func(c *Config) { c.ConnOverhead = 100 << 10 })
	h.synReceived()
	used := h.e.Memory().Used()
	// Above the high mark, under the share: a new SYN gets a cookie, no state.
	h.e.SetMemoryShare(used * 16 / 15)
	h.advance(0)
	if lv := h.e.Memory().Level(); lv != MemoryHigh {
		t.Fatalf("level %v, want high", lv)
	}
	v := h.view(42000)
	v.send(seg{flags: SYN, seq: 0})
	v.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
	v.expectCounter(SYNCookiesMemory, 1)
	if n := h.e.Stats().Connections(SynReceived); n != 1 {
		t.Fatalf("%d SYN_RCVD entries, want only the first (a cookie keeps no state)", n)
	}
	// At the share itself, SYNs are dropped.
	h.e.SetMemoryShare(used)
	h.advance(0)
	w := h.view(42001)
	w.send(seg{flags: SYN, seq: 0})
	w.expectNone()
	w.expectCounter(SYNDropsMemory, 1)
}

func TestMemoryAccounting(t *testing.T) {
	h := newHarness(t)
	h.established()
	m := h.e.Memory()
	if got := m.Bytes(MemConn); got != connBytes {
		t.Fatalf("conn bytes %d, want %d", got, connBytes)
	}
	h.send(seg{flags: ACK | PSH, seq: 1, ack: 1, data: relData(0, 1000)})
	h.c.Write(make([]byte, 3000))
	if m.Bytes(MemReceive) < 1000 || m.Bytes(MemSend) < 3000 {
		t.Fatalf("receive %d, send %d bytes held, want at least 1000 and 3000", m.Bytes(MemReceive), m.Bytes(MemSend))
	}
	h.c.Abort()
	// What the application charges (a proxy's own buffers) counts too.
	h.e.ChargeMemory(MemSend, 5000)
	if got := m.Bytes(MemSend); got != 5000 {
		t.Fatalf("send bytes %d after the application charged 5000, want 5000", got)
	}
	h.e.ChargeMemory(MemSend, -5000)
	for k := range NumMemoryKinds {
		if got := m.Bytes(k); got != 0 {
			t.Errorf("%v: %d bytes held after the connection ended, want 0", k, got)
		}
	}
}
