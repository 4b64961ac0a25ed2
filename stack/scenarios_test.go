package stack

// TCP-SCENARIOS.md, one test per scenario, written as ladders: the peer's
// segment, the engine's reply, and both states after each step (the peer's
// as a comment, the engine's asserted). seq/ack are relative to the ISNs.

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// peerConn is the harness's view of one peer connection, so that a test can
// play several peers (or both legs of a proxy) and switch between them.
type peerConn struct {
	peerPort, ourPort     uint16
	peerISS, ourISS       seqnum.Value
	knowISS               bool
	c                     *Conn
	peerTSVal, lastTSEcho uint32
}

func (h *harness) savePeer() peerConn {
	return peerConn{h.peerPort, h.ourPort, h.peerISS, h.ourISS, h.knowISS, h.c, h.peerTSVal, h.lastTSEcho}
}

func (h *harness) usePeer(p peerConn) {
	h.peerPort, h.ourPort, h.peerISS, h.ourISS, h.knowISS = p.peerPort, p.ourPort, p.peerISS, p.ourISS, p.knowISS
	h.c, h.peerTSVal, h.lastTSEcho = p.c, p.peerTSVal, p.lastTSEcho
}

// freshPeer makes the harness play a fresh connection between the peer's port
// and ours; the engine's ISN is learned anew from its next SYN.
func (h *harness) freshPeer(peerPort, ourPort uint16) {
	h.peerPort, h.ourPort = peerPort, ourPort
	h.ourISS, h.knowISS, h.c, h.lastTSEcho = 0, false, nil, 0
}

// eventsOf returns the union of the events recorded for c since the last
// takeEvents, and clears them all.
func (h *harness) eventsOf(c *Conn) Events {
	var got Events
	for _, e := range h.takeEvents() {
		if e.c == c {
			got |= e.ev
		}
	}
	return got
}

// readAll drains c's receive buffer.
func (h *harness) readAll(c *Conn) string {
	h.t.Helper()
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if n == 0 || err != nil {
			return string(out)
		}
	}
}

func (h *harness) writeAll(c *Conn, s string) {
	h.t.Helper()
	if n, err := c.Write([]byte(s)); n != len(s) || err != nil {
		h.t.Fatalf("Write(%q) = %d, %v", s, n, err)
	}
}

func withConfig(f func(*Config)) harnessOpt { return harnessOpt(f) }

// Scenario 1: three-way handshake, passive side.
func TestScenario01PassiveHandshake(t *testing.T) {
	h := newHarness(t)
	h.listen()
	// peer: SYN(seq=x)               → engine: LISTEN → SYN_RCVD
	h.send(seg{flags: SYN, seq: 0})
	// engine: SYN|ACK(seq=y, ack=x+1)
	p := h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
	h.expectState(SynReceived)
	if p.TCP.Options.MSS != 1460 || !p.TCP.Options.HasWScale || !p.TCP.Options.SACKPermitted || !p.TCP.Options.HasTimestamps {
		t.Fatalf("SYN-ACK options %+v: want MSS 1460, window scale, SACK-permitted, timestamps", p.TCP.Options)
	}
	h.expectDeadline(DefaultInitialRTO) // the SYN-ACK retransmission timer
	// peer: ACK(seq=x+1, ack=y+1)    → engine: ESTABLISHED, nothing sent
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	h.expectNone()
	h.expectState(Established)
	if h.rec.acceptable != 1 {
		t.Fatalf("listener reported acceptable %d times, want 1", h.rec.acceptable)
	}
	if c := h.l.Accept(); c != h.c {
		t.Fatalf("Accept returned %v, want the established connection", c)
	}
	h.expectCounter(PassiveOpens, 1)
}

// Scenario 2: three-way handshake, active side (the backend leg). The third
// segment's ACK carries no data and consumes no sequence number, so the
// first data segment reuses seq=x+1.
func TestScenario02ActiveHandshake(t *testing.T) {
	h := newHarness(t)
	// engine: CLOSED → SYN_SENT, SYN(seq=x)          peer: LISTEN
	c, err := h.e.Dial(h.now, engineAddr, peerAP)
	if err != nil {
		t.Fatal(err)
	}
	h.c, h.ourPort = c, c.Key().LocalPort
	p := h.expect(seg{flags: SYN, seq: 0, wnd: 65535})
	h.expectState(SynSent)
	if o := p.TCP.Options; o.MSS != 1460 || !o.HasWScale || o.WScale != 3 || !o.SACKPermitted || !o.HasTimestamps || o.TSEcr != 0 {
		t.Fatalf("SYN options %+v: want MSS 1460, wscale 3, SACK-permitted, timestamps with TSecr 0", o)
	}
	h.expectDeadline(DefaultInitialRTO) // SYN retransmission
	h.expectCounter(ActiveOpens, 0)

	// peer: SYN|ACK(seq=y, ack=x+1)                  peer: SYN_RCVD
	h.send(seg{flags: SYN | ACK, seq: 0, ack: 1})
	// engine: ACK(seq=x+1, ack=y+1), no data         engine: ESTABLISHED
	p = h.expect(seg{flags: ACK, seq: 1, ack: 1})
	if len(p.Payload) != 0 || p.TCP.Options.TSEcr != h.peerTSVal {
		t.Fatalf("third segment: %d bytes, TSecr %d; want none, TSecr %d", len(p.Payload), p.TCP.Options.TSEcr, h.peerTSVal)
	}
	h.expectState(Established)
	h.expectEvents(EventConnected)
	h.expectCounter(ActiveOpens, 1)
	h.expectDeadline(DefaultKeepaliveIdle) // nothing in flight: only keepalive
	if i := c.Info(); i.SndUna != uint32(h.ourISS)+1 || i.SndNxt != uint32(h.ourISS)+1 || i.RcvNxt != uint32(h.peerISS)+1 {
		t.Fatalf("after the handshake SND.UNA=%d SND.NXT=%d RCV.NXT=%d, want x+1, x+1, y+1", i.SndUna-uint32(h.ourISS), i.SndNxt-uint32(h.ourISS), i.RcvNxt-uint32(h.peerISS))
	}
	// (the peer, on that ACK: SYN_RCVD → ESTABLISHED)

	// engine: PSH|ACK(seq=x+1, ack=y+1, "GET /")     the same seq as the third segment
	h.writeAll(c, "GET /")
	h.expect(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("GET /")})
	// The RTO from the SYN-ACK's RTT sample, and the tail loss probe
	// capped at it (RFC 8985 section 7.2).
	h.expectDeadline(rtoAfterHandshake)
	// peer: PSH|ACK(seq=y+1, ack=x+6, "200")
	h.send(seg{flags: PSH | ACK, seq: 1, ack: 6, data: []byte("200")})
	// engine: ACK(seq=x+6, ack=y+4)
	h.expect(seg{flags: ACK, seq: 6, ack: 4})
	h.expectState(Established)
	h.expectDeadline(DefaultKeepaliveIdle)
	if got := h.readAll(c); got != "200" {
		t.Fatalf("read %q, want %q", got, "200")
	}
	// The window of a SYN-ACK is not scaled; that of every later segment is.
	if i := c.Info(); i.SndWnd != 65535<<7 {
		t.Fatalf("SND.WND %d, want %d", i.SndWnd, 65535<<7)
	}
}

// Scenario 3: a stale, delayed SYN must not create a connection that holds
// resources.
func TestScenario03StaleSYN(t *testing.T) {
	t.Run("answered by RST", func(t *testing.T) {
		h := newHarness(t)
		h.listen()
		// old SYN(seq=x), delayed in the network   → engine: LISTEN → SYN_RCVD
		h.send(seg{flags: SYN, seq: 0})
		// engine: SYN|ACK(seq=y, ack=x+1)
		h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
		h.expectState(SynReceived)
		if n := h.l.SYNQueueLen(); n != 1 {
			t.Fatalf("SYN queue %d, want 1", n)
		}
		// The real client has no such connection: it answers the SYN-ACK
		// with <SEQ=SEG.ACK><CTL=RST> (RFC 9293 3.10.7.1), i.e. seq=x+1,
		// which is RCV.NXT exactly and therefore acceptable.
		h.send(seg{flags: RST, seq: 1, noTS: true})
		h.expectNone()
		h.expectState(Closed) // the half-open entry is gone, nothing answered
		if n := h.l.SYNQueueLen(); n != 0 {
			t.Fatalf("SYN queue %d after the RST, want 0", n)
		}
		if len(h.e.flows) != 0 {
			t.Fatalf("%d flows left, want none", len(h.e.flows))
		}
		h.expectDeadline(-1) // no SYN-ACK retransmission pending
		h.expectCounter(RxResets, 1)
		h.expectCounter(PassiveOpens, 0)
		if n := h.e.Stats().Connections(SynReceived); n != 0 {
			t.Fatalf("SYN_RCVD gauge %d, want 0", n)
		}
		if h.rec.acceptable != 0 || len(h.takeEvents()) != 0 {
			t.Fatal("a connection that never completed was reported")
		}
		// The listener keeps working: the real client's own SYN completes.
		h.freshPeer(40001, 80)
		h.established()
		h.expectCounter(PassiveOpens, 1)
	})

	t.Run("never completed", func(t *testing.T) {
		h := newHarness(t)
		h.listen()
		h.send(seg{flags: SYN, seq: 0})
		h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
		h.expectState(SynReceived)
		// Nobody answers: the SYN-ACK is retransmitted SYNACKRetries times
		// with exponential backoff, then the entry is dropped silently.
		rto := DefaultInitialRTO
		for i := 0; i < DefaultSYNACKRetries; i++ {
			h.expectDeadline(rto)
			h.advance(rto)
			h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
			h.expectState(SynReceived)
			rto *= 2
		}
		h.expectDeadline(rto)
		h.advance(rto)
		h.expectNone()
		h.expectState(Closed)
		h.expectDeadline(-1)
		h.expectCounter(SYNRetransmits, DefaultSYNACKRetries)
		h.expectCounter(HalfOpenTimeouts, 1)
		if n := h.l.SYNQueueLen(); n != 0 || len(h.e.flows) != 0 {
			t.Fatalf("SYN queue %d, %d flows left; want 0, 0", n, len(h.e.flows))
		}
	})

	t.Run("cookie", func(t *testing.T) {
		h := newHarness(t, withConfig(func(c *Config) { c.SYNCookies = SYNCookiesAlways }))
		h.listen()
		// old SYN(seq=x)                            → engine: SYN|ACK(seq=cookie, ack=x+1), LISTEN
		h.send(seg{flags: SYN, seq: 0})
		h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
		// Nothing is kept at all: no entry, no timer.
		h.expectState(Closed)
		if n := h.l.SYNQueueLen(); n != 0 || len(h.e.flows) != 0 {
			t.Fatalf("SYN queue %d, %d flows; want nothing kept", n, len(h.e.flows))
		}
		h.expectDeadline(-1)
		h.expectCounter(SYNCookiesSent, 1)
		// The real client's RST reaches the listener, which ignores it.
		h.send(seg{flags: RST, seq: 1, noTS: true})
		h.expectNone()
		h.expectCounter(RxRSTIgnored, 1)
		h.expectCounter(SYNCookiesAccepted, 0)
		if len(h.e.flows) != 0 {
			t.Fatal("the RST created state")
		}
	})
}

// Scenario 4: simultaneous open. Both sides send SYN, both pass through
// SYN_RCVD (RFC 9293 section 3.5, figure 8).
func TestScenario04SimultaneousOpen(t *testing.T) {
	h := newHarness(t)
	// engine: CLOSED → SYN_SENT, SYN(seq=x)       peer: CLOSED → SYN_SENT, SYN(seq=y); they cross
	h.synSent()
	// peer's SYN(seq=y) arrives                   → engine: SYN_SENT → SYN_RCVD
	h.send(seg{flags: SYN, seq: 0})
	// engine: SYN|ACK(seq=x, ack=y+1) — the same ISN as its SYN
	p := h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
	h.expectState(SynReceived)
	if o := p.TCP.Options; o.MSS != 1460 || !o.HasWScale || !o.SACKPermitted || !o.HasTimestamps {
		t.Fatalf("SYN-ACK options %+v", o)
	}
	h.expectDeadline(DefaultInitialRTO)
	h.expectEvents(0)
	// (our SYN reached the peer: SYN_SENT → SYN_RCVD, and it sent its SYN-ACK)
	// peer: SYN|ACK(seq=y, ack=x+1)               → engine: SYN_RCVD → ESTABLISHED
	h.send(seg{flags: SYN | ACK, seq: 0, ack: 1})
	// Nothing to send: the SYN-ACK each side sent is the other's ACK (as
	// Linux, since 6.x, which neither challenges nor ACKs it).
	h.expectNone()
	h.expectState(Established)
	h.expectEvents(EventConnected)
	h.expectCounter(ActiveOpens, 1)
	h.expectCounter(PassiveOpens, 0)
	h.expectCounter(ChallengeACKs, 0)
	h.expectDeadline(DefaultKeepaliveIdle)
	// (our SYN-ACK reached the peer: SYN_RCVD → ESTABLISHED)
	// The SYN-ACK's window is not scaled.
	if i := h.c.Info(); i.SndWnd != 65535 || i.SndUna != uint32(h.ourISS)+1 {
		t.Fatalf("SND.WND %d SND.UNA %d, want 65535, x+1", i.SndWnd, i.SndUna-uint32(h.ourISS))
	}
	// Data flows both ways from seq 1.
	h.writeAll(h.c, "ping")
	h.expect(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("ping")})
	h.send(seg{flags: PSH | ACK, seq: 1, ack: 5, data: []byte("pong")})
	h.expect(seg{flags: ACK, seq: 5, ack: 5})
	if got := h.readAll(h.c); got != "pong" {
		t.Fatalf("read %q", got)
	}
	h.expectDeadline(DefaultKeepaliveIdle)
}

// Scenario 4, the variant where the peer answers our SYN-ACK with a bare ACK
// (as older Linux did): SYN_RCVD → ESTABLISHED on it.
func TestScenario04SimultaneousOpenBareACK(t *testing.T) {
	h := newHarness(t)
	h.synSent()
	h.send(seg{flags: SYN, seq: 0})
	h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
	h.expectState(SynReceived)
	h.send(seg{flags: ACK, seq: 1, ack: 1})
	h.expectNone()
	h.expectState(Established)
	h.expectEvents(EventConnected)
	// A retransmitted SYN-ACK of the peer now is a SYN on a synchronized
	// connection: challenge ACK (RFC 5961 section 4.2).
	h.send(seg{flags: SYN | ACK, seq: 0, ack: 1})
	h.expect(seg{flags: ACK, seq: 1, ack: 1})
	h.expectState(Established)
	h.expectCounter(ChallengeACKs, 1)
}

// Scenario 5: the listen backlog. Completed handshakes wait in a bounded
// accept queue; when it is full, new SYNs and the final ACKs of handshakes
// are dropped and counted, and the SYN_RCVD entry waits for its SYN-ACK
// retransmission (Linux's tcp_abort_on_overflow=0). Under a SYN flood,
// cookies carry the state.
func TestScenario05Backlog(t *testing.T) {
	t.Run("accept queue full", func(t *testing.T) {
		h := newHarness(t, withConfig(func(c *Config) { c.AcceptBacklog = 1 }))
		h.listen()
		// A and B send SYNs while the accept queue is empty.
		h.freshPeer(40000, 80)
		h.send(seg{flags: SYN, seq: 0})
		h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
		a := h.savePeer()
		h.freshPeer(40001, 80)
		h.send(seg{flags: SYN, seq: 0})
		h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
		b := h.savePeer()
		if n := h.l.SYNQueueLen(); n != 2 {
			t.Fatalf("SYN queue %d, want 2", n)
		}
		// A: ACK → ESTABLISHED, in the accept queue (now full).
		h.usePeer(a)
		h.send(seg{flags: ACK, seq: 1, ack: 1})
		h.expectNone()
		h.expectState(Established)
		a = h.savePeer()
		if q, s := h.l.AcceptQueueLen(), h.l.SYNQueueLen(); q != 1 || s != 1 {
			t.Fatalf("accept queue %d, SYN queue %d; want 1, 1", q, s)
		}
		// B: ACK → dropped, B stays SYN_RCVD (peer B believes it is ESTABLISHED).
		h.usePeer(b)
		h.send(seg{flags: ACK, seq: 1, ack: 1})
		h.expectNone()
		h.expectState(SynReceived)
		h.expectCounter(AcceptQueueOverflow, 1)
		// C: SYN → dropped, nothing sent, no entry.
		h.freshPeer(40002, 80)
		h.send(seg{flags: SYN, seq: 0})
		h.expectNone()
		h.expectState(Closed)
		h.expectCounter(AcceptQueueOverflow, 2)
		h.expectCounter(PassiveOpens, 1)
		if h.rec.acceptable != 1 {
			t.Fatalf("acceptable reported %d times, want 1", h.rec.acceptable)
		}
		// The application accepts A; B's SYN-ACK is retransmitted on its
		// timer and the peer's ACK to it completes B.
		h.usePeer(a)
		if c := h.l.Accept(); c != h.c {
			t.Fatalf("Accept = %v, want A", c)
		}
		h.usePeer(b)
		h.expectDeadline(DefaultInitialRTO)
		h.advance(DefaultInitialRTO)
		h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
		h.send(seg{flags: ACK, seq: 1, ack: 1})
		h.expectNone()
		h.expectState(Established)
		if q, s := h.l.AcceptQueueLen(), h.l.SYNQueueLen(); q != 1 || s != 0 {
			t.Fatalf("accept queue %d, SYN queue %d; want 1, 0", q, s)
		}
		if c := h.l.Accept(); c != h.c {
			t.Fatalf("Accept = %v, want B", c)
		}
		h.expectCounter(PassiveOpens, 2)
		h.expectCounter(AcceptQueueOverflow, 2)
	})

	t.Run("SYN flood with cookies", func(t *testing.T) {
		h := newHarness(t, withConfig(func(c *Config) { c.SYNBacklog = 2 }))
		h.listen()
		// Two spoofed SYNs fill the SYN queue (nobody will ever ACK them).
		for _, port := range []uint16{50000, 50001} {
			h.freshPeer(port, 80)
			h.send(seg{flags: SYN, seq: 0})
			h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
		}
		h.expectCounter(SYNCookiesSent, 0)
		// A real client arrives: its SYN is answered with a cookie.
		h.freshPeer(40000, 80)
		h.peerOpts.MSS = 1400 // rounded down to 1380 in the cookie's MSS table
		h.send(seg{flags: SYN, seq: 0})
		p := h.expect(seg{flags: SYN | ACK, seq: 0, ack: 1})
		h.expectState(Closed) // no SYN_RCVD entry for it
		h.expectCounter(SYNQueueOverflow, 1)
		h.expectCounter(SYNCookiesSent, 1)
		if o := p.TCP.Options; o.MSS != 1460 || !o.HasWScale || o.WScale != 3 || !o.SACKPermitted || !o.HasTimestamps || o.TSEcr != h.peerTSVal {
			t.Fatalf("cookie SYN-ACK options %+v", o)
		}
		// client: ACK(seq=x+1, ack=cookie+1)  → engine: ESTABLISHED from the cookie
		h.send(seg{flags: ACK, seq: 1, ack: 1})
		h.expectNone()
		h.expectState(Established)
		h.expectCounter(SYNCookiesAccepted, 1)
		c := h.l.Accept()
		if c != h.c {
			t.Fatalf("Accept = %v, want the cookie connection", c)
		}
		if !c.cookieOpen || c.sndMSS != 1380 || !c.wsOK || c.sndWScale != 7 || c.rcvWScale != 3 || !c.sackOK || !c.tsOK {
			t.Fatalf("cookie connection MSS %d wscale %v %d/%d SACK %v TS %v; want 1380, 7/3, SACK, TS",
				c.sndMSS, c.wsOK, c.sndWScale, c.rcvWScale, c.sackOK, c.tsOK)
		}
		// The recovered MSS limits the segments: 1380 - 12 bytes of timestamps.
		h.writeAll(c, string(bytes.Repeat([]byte("x"), 2000)))
		h.expect(seg{flags: ACK, seq: 1, ack: 1, data: bytes.Repeat([]byte("x"), 1368)})
		h.expect(seg{flags: PSH | ACK, seq: 1369, ack: 1, data: bytes.Repeat([]byte("x"), 632)})
		// The peer's window is scaled by the recovered shift 7.
		h.send(seg{flags: ACK, seq: 1, ack: 2001, wnd: 100})
		if i := c.Info(); i.SndWnd != 100<<7 {
			t.Fatalf("SND.WND %d, want %d", i.SndWnd, 100<<7)
		}
	})
}

// Scenario 6: ack = the peer's seq + length (+1 for SYN or FIN).
func TestScenario06SeqAckArithmetic(t *testing.T) {
	h := newHarness(t)
	h.established()
	req := bytes.Repeat([]byte("q"), 99)
	resp := bytes.Repeat([]byte("r"), 119)
	// peer: PSH|ACK(seq=1, ack=1, 99 bytes)       both ESTABLISHED
	h.send(seg{flags: PSH | ACK, seq: 1, ack: 1, data: req})
	// engine: ACK(seq=1, ack=100)
	h.expect(seg{flags: ACK, seq: 1, ack: 100})
	h.expectEvents(EventReadable)
	if got := h.readAll(h.c); got != string(req) {
		t.Fatalf("read %d bytes, want 99", len(got))
	}
	h.expectNone() // reading 99 bytes does not warrant a window update
	// engine: PSH|ACK(seq=1, ack=100, 119 bytes)
	h.writeAll(h.c, string(resp))
	h.expect(seg{flags: PSH | ACK, seq: 1, ack: 100, data: resp})
	h.expectDeadline(rtoAfterHandshake)
	// peer: ACK(seq=100, ack=120)
	h.send(seg{flags: ACK, seq: 100, ack: 120})
	h.expectNone()
	h.expectDeadline(DefaultKeepaliveIdle) // all acknowledged: the RTO is off
	i := h.c.Info()
	if i.SndUna != uint32(h.ourISS)+120 || i.SndNxt != uint32(h.ourISS)+120 || i.RcvNxt != uint32(h.peerISS)+100 {
		t.Fatalf("SND.UNA=%d SND.NXT=%d RCV.NXT=%d, want 120, 120, 100",
			i.SndUna-uint32(h.ourISS), i.SndNxt-uint32(h.ourISS), i.RcvNxt-uint32(h.peerISS))
	}
	// A FIN counts one: peer FIN(seq=100) is acknowledged with ack=101 —
	// here by our own FIN (the passive close's ACK waits for the
	// delayed-ACK timer, and we close before it fires: scenario 13).
	h.send(seg{flags: FIN | ACK, seq: 100, ack: 120})
	h.expectNone()
	h.expectState(CloseWait)
	h.expectDeadline(DefaultDelayedACK)
	// And ours: FIN(seq=120), acknowledged with ack=121.
	h.c.CloseWrite()
	h.expect(seg{flags: FIN | ACK, seq: 120, ack: 101})
	h.expectState(LastAck)
	h.send(seg{flags: ACK, seq: 101, ack: 121})
	h.expectNone()
	h.expectState(Closed)
}

// Scenario 9: a byte stream, not messages. Two writes of the peer arrive as
// one read; two writes of the application may leave as one segment.
func TestScenario09ByteStream(t *testing.T) {
	h := newHarness(t)
	h.established()
	// peer: PSH|ACK(seq=1, "hello ")   → engine: ACK(ack=7)
	h.send(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("hello ")})
	h.expect(seg{flags: ACK, seq: 1, ack: 7})
	// peer: PSH|ACK(seq=7, "world")    → engine: ACK(ack=12)
	h.send(seg{flags: PSH | ACK, seq: 7, ack: 1, data: []byte("world")})
	h.expect(seg{flags: ACK, seq: 1, ack: 12})
	h.expectEvents(EventReadable)
	if n := h.c.Buffered(); n != 11 {
		t.Fatalf("buffered %d, want 11", n)
	}
	// One read returns both writes, with no boundary between them.
	buf := make([]byte, 64)
	n, err := h.c.Read(buf)
	if err != nil || string(buf[:n]) != "hello world" {
		t.Fatalf("Read = %q, %v; want %q in one read", buf[:n], err, "hello world")
	}
	// And one segment may be read in pieces.
	h.send(seg{flags: PSH | ACK, seq: 12, ack: 1, data: []byte("abcdef")})
	h.expect(seg{flags: ACK, seq: 1, ack: 18})
	for _, want := range []string{"abc", "def"} {
		if n, err := h.c.Read(buf[:3]); err != nil || string(buf[:n]) != want {
			t.Fatalf("Read = %q, %v; want %q", buf[:n], err, want)
		}
	}
	if n, err := h.c.Read(buf); n != 0 || err != nil {
		t.Fatalf("Read on an empty buffer = %d, %v; want 0, nil", n, err)
	}

	// The other direction: two writes before the handshake completes leave
	// as one segment, the third of the handshake.
	h2 := newHarness(t)
	h2.synSent()
	h2.writeAll(h2.c, "GET / ")
	h2.writeAll(h2.c, "HTTP/1.1")
	h2.expectNone() // nothing before the handshake
	h2.send(seg{flags: SYN | ACK, seq: 0, ack: 1})
	h2.expect(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("GET / HTTP/1.1")})
	h2.expectNone()
	h2.expectState(Established)
}

// Scenario 10: four-way close, active side.
func TestScenario10ActiveClose(t *testing.T) {
	h := newHarness(t)
	h.established()
	// engine: CloseWrite → FIN|ACK(seq=1, ack=1)       engine: ESTABLISHED → FIN_WAIT_1
	h.c.CloseWrite()
	h.expect(seg{flags: FIN | ACK, seq: 1, ack: 1})
	h.expectState(FinWait1)
	h.expectDeadline(rtoAfterHandshake) // our FIN is retransmitted until acknowledged
	// (peer: ESTABLISHED → CLOSE_WAIT, acknowledges the FIN: it counts one)
	// peer: ACK(seq=1, ack=2)                          engine: FIN_WAIT_1 → FIN_WAIT_2
	h.send(seg{flags: ACK, seq: 1, ack: 2})
	h.expectNone()
	h.expectState(FinWait2)
	h.expectDeadline(DefaultKeepaliveIdle) // not orphaned: no FIN_WAIT_2 timeout
	if w, err := h.c.Write([]byte("x")); w != 0 || !errors.Is(err, ErrWriteClosed) {
		t.Fatalf("Write after CloseWrite = %d, %v; want ErrWriteClosed", w, err)
	}
	// peer: FIN|ACK(seq=1, ack=2)                      peer: CLOSE_WAIT → LAST_ACK
	h.send(seg{flags: FIN | ACK, seq: 1, ack: 2})
	// engine: ACK(seq=2, ack=2)                        engine: FIN_WAIT_2 → TIME_WAIT
	h.expect(seg{flags: ACK, seq: 2, ack: 2})
	h.expectState(TimeWait)
	h.expectEvents(EventPeerClosed | EventReadable | EventClosed)
	if n, err := h.c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("Read = %d, %v; want io.EOF", n, err)
	}
	c := h.c
	h.c = nil // from here on the compact TIME_WAIT entry stands for it
	h.expectState(TimeWait)
	if c.State() != TimeWait {
		t.Fatalf("the Conn reads %v during TIME_WAIT", c.State())
	}
	h.expectCounter(TimeWaitEntered, 1)
	if n := h.e.Stats().Connections(TimeWait); n != 1 {
		t.Fatalf("TIME_WAIT gauge %d, want 1", n)
	}
	// (peer: LAST_ACK → CLOSED on our ACK)
	// 2MSL later: TIME_WAIT → CLOSED.
	h.expectDeadline(DefaultTimeWait)
	h.advance(DefaultTimeWait - time.Nanosecond)
	h.expectState(TimeWait)
	h.advance(time.Nanosecond)
	h.expectNone()
	h.expectState(Closed)
	h.expectDeadline(-1)
	h.expectCounter(TimeWaitExpired, 1)
	if n := h.e.Stats().Connections(TimeWait); n != 0 {
		t.Fatalf("TIME_WAIT gauge %d, want 0", n)
	}
	if c.State() != Closed || c.Err() != nil {
		t.Fatalf("the Conn reads %v, %v after 2MSL; want CLOSED, nil", c.State(), c.Err())
	}
}

// Scenario 10, with the application gone (Close instead of CloseWrite): an
// orphaned FIN_WAIT_2 waits at most TimeWait for the peer's FIN.
func TestScenario10ActiveCloseOrphaned(t *testing.T) {
	h := newHarness(t)
	h.established()
	h.c.Close()
	h.expect(seg{flags: FIN | ACK, seq: 1, ack: 1})
	h.expectState(FinWait1)
	h.send(seg{flags: ACK, seq: 1, ack: 2})
	h.expectNone()
	h.expectState(FinWait2)
	h.expectDeadline(DefaultTimeWait)
	h.advance(DefaultTimeWait)
	h.expectNone()
	h.expectState(Closed)
	h.expectCounter(FinWait2Timeouts, 1)
	h.expectDeadline(-1)
	h.expectEvents(0) // the application has detached
}

// Scenario 11: four-way close, passive side. CLOSE_WAIT may still send.
func TestScenario11PassiveClose(t *testing.T) {
	h := newHarness(t)
	h.established()
	// peer: FIN|ACK(seq=1, ack=1)                      peer: ESTABLISHED → FIN_WAIT_1
	h.send(seg{flags: FIN | ACK, seq: 1, ack: 1})
	//                                                  engine: ESTABLISHED → CLOSE_WAIT
	h.expectState(CloseWait)
	h.expectEvents(EventPeerClosed | EventReadable)
	// engine: ACK(seq=1, ack=2) when the delayed-ACK timer fires (as Linux
	// delays it: a FIN puts tcp_fin into ping-pong mode).
	h.expectNone()
	h.expectDeadline(DefaultDelayedACK)
	h.advance(DefaultDelayedACK)
	h.expect(seg{flags: ACK, seq: 1, ack: 2})
	h.expectCounter(DelayedACKs, 1)
	if n, err := h.c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("Read = %d, %v; want io.EOF", n, err)
	}
	// (peer: FIN_WAIT_1 → FIN_WAIT_2)
	// The application may still send: PSH|ACK(seq=1, ack=2, "bye")
	h.writeAll(h.c, "bye")
	h.expect(seg{flags: PSH | ACK, seq: 1, ack: 2, data: []byte("bye")})
	h.expectState(CloseWait)
	// peer: ACK(seq=2, ack=4)
	h.send(seg{flags: ACK, seq: 2, ack: 4})
	h.expectNone()
	// engine: CloseWrite → FIN|ACK(seq=4, ack=2)       engine: CLOSE_WAIT → LAST_ACK
	h.c.CloseWrite()
	h.expect(seg{flags: FIN | ACK, seq: 4, ack: 2})
	h.expectState(LastAck)
	h.expectDeadline(rtoAfterHandshake)
	// The FIN is lost; it is retransmitted when the timer expires — by
	// the tail loss probe, whose timeout is capped at the RTO (RFC 8985
	// section 7.2), and which restarts the RTO.
	h.advance(rtoAfterHandshake)
	h.expect(seg{flags: FIN | ACK, seq: 4, ack: 2})
	h.expectState(LastAck)
	h.expectDeadline(rtoAfterHandshake)
	h.expectCounter(TailLossProbes, 1)
	h.expectCounter(Retransmits, 1)
	// (peer: FIN_WAIT_2 → TIME_WAIT, ACK(seq=2, ack=5))
	h.send(seg{flags: ACK, seq: 2, ack: 5})
	// engine: LAST_ACK → CLOSED, nothing sent, no timer, no TIME_WAIT entry
	h.expectNone()
	h.expectState(Closed)
	h.expectDeadline(-1)
	h.expectEvents(EventClosed)
	h.expectCounter(TimeWaitEntered, 0)
	if len(h.e.flows) != 0 {
		t.Fatal("the connection is still in the flow table")
	}
}

// Scenario 12: half-close carried across the proxy's two legs. The client
// closes its direction; the proxy passes the FIN to the backend, which keeps
// sending (CLOSE_WAIT) to the engine (FIN_WAIT_2), whose data the proxy
// relays to the client through a connection in CLOSE_WAIT.
func TestScenario12HalfClose(t *testing.T) {
	h := newHarness(t)
	// Client leg A: passive, 10.0.0.2:40000 → 10.0.0.1:80.
	h.established()
	a := h.savePeer()
	// Backend leg B: active, 10.0.0.1:eph → 10.0.0.2:8080.
	backend := netip.AddrPortFrom(peerAddr, 8080)
	cb, err := h.e.Dial(h.now, engineAddr, backend)
	if err != nil {
		t.Fatal(err)
	}
	h.freshPeer(8080, cb.Key().LocalPort)
	h.c = cb
	h.peerISS = 7_000_000
	h.expect(seg{flags: SYN, seq: 0})
	h.send(seg{flags: SYN | ACK, seq: 0, ack: 1})
	h.expect(seg{flags: ACK, seq: 1, ack: 1})
	h.expectState(Established)
	b := h.savePeer()
	h.takeEvents()

	// client → A: FIN|ACK(seq=1, ack=1)                client: FIN_WAIT_1
	h.usePeer(a)
	h.send(seg{flags: FIN | ACK, seq: 1, ack: 1})
	h.expectNone() //                                 A: ESTABLISHED → CLOSE_WAIT, its ACK delayed
	h.expectState(CloseWait)
	if ev := h.eventsOf(a.c); ev != EventPeerClosed|EventReadable {
		t.Fatalf("A events %v", ev)
	}
	// The proxy carries the half-close: B.CloseWrite.
	cb.CloseWrite()
	h.usePeer(b)
	h.expect(seg{flags: FIN | ACK, seq: 1, ack: 1}) // B: ESTABLISHED → FIN_WAIT_1
	h.expectState(FinWait1)
	// backend → B: ACK(seq=1, ack=2)                   backend: CLOSE_WAIT
	h.send(seg{flags: ACK, seq: 1, ack: 2})
	h.expectNone()
	h.expectState(FinWait2) //                         B: FIN_WAIT_1 → FIN_WAIT_2
	// The backend keeps sending: PSH|ACK(seq=1, ack=2, "response")
	h.send(seg{flags: PSH | ACK, seq: 1, ack: 2, data: []byte("response")})
	h.expect(seg{flags: ACK, seq: 2, ack: 9}) //       B still receives in FIN_WAIT_2
	h.expectState(FinWait2)
	if ev := h.eventsOf(cb); ev != EventReadable {
		t.Fatalf("B events %v", ev)
	}
	data := h.readAll(cb)
	// The proxy relays it to the client over A, in CLOSE_WAIT.
	h.usePeer(a)
	h.writeAll(a.c, data)
	h.expect(seg{flags: PSH | ACK, seq: 1, ack: 2, data: []byte("response")})
	h.expectState(CloseWait)
	// client: ACK(seq=2, ack=9)                        client: FIN_WAIT_2, still receiving
	h.send(seg{flags: ACK, seq: 2, ack: 9})
	h.expectNone()
	// backend → B: FIN|ACK(seq=9, ack=2)               backend: LAST_ACK
	h.usePeer(b)
	h.send(seg{flags: FIN | ACK, seq: 9, ack: 2})
	h.expect(seg{flags: ACK, seq: 2, ack: 10}) //      B: FIN_WAIT_2 → TIME_WAIT
	h.expectState(TimeWait)
	if ev := h.eventsOf(cb); ev != EventPeerClosed|EventReadable|EventClosed {
		t.Fatalf("B events %v", ev)
	}
	// The proxy carries the second half-close: A.CloseWrite.
	a.c.CloseWrite()
	h.usePeer(a)
	h.expect(seg{flags: FIN | ACK, seq: 9, ack: 2}) // A: CLOSE_WAIT → LAST_ACK
	h.expectState(LastAck)
	// client: ACK(seq=2, ack=10)                       client: TIME_WAIT
	h.send(seg{flags: ACK, seq: 2, ack: 10})
	h.expectNone()
	h.expectState(Closed) //                           A: LAST_ACK → CLOSED
	h.expectCounter(TimeWaitEntered, 1)
}

// Scenario 13: three-segment close. The peer has nothing left to send, so
// its ACK of our FIN and its own FIN come in one segment: FIN_WAIT_1 goes
// straight to TIME_WAIT.
func TestScenario13ThreeSegmentClose(t *testing.T) {
	h := newHarness(t)
	h.established()
	// engine: FIN|ACK(seq=1, ack=1)                    engine: FIN_WAIT_1
	h.c.CloseWrite()
	h.expect(seg{flags: FIN | ACK, seq: 1, ack: 1})
	h.expectState(FinWait1)
	// peer: FIN|ACK(seq=1, ack=2)                      peer: ESTABLISHED → LAST_ACK
	h.send(seg{flags: FIN | ACK, seq: 1, ack: 2})
	// engine: ACK(seq=2, ack=2)                        engine: FIN_WAIT_1 → TIME_WAIT
	h.expect(seg{flags: ACK, seq: 2, ack: 2})
	h.expectNone()
	h.expectState(TimeWait)
	h.expectEvents(EventPeerClosed | EventReadable | EventClosed)
	h.expectDeadline(DefaultTimeWait)
	h.expectCounter(TimeWaitEntered, 1)
	// (peer: LAST_ACK → CLOSED)

	// The same with data in flight: our last data and FIN in one segment,
	// the peer's ACK of both and its FIN in one segment.
	h2 := newHarness(t)
	h2.established()
	h2.writeAll(h2.c, "last")
	h2.expect(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("last")})
	h2.c.CloseWrite()
	h2.expect(seg{flags: FIN | ACK, seq: 5, ack: 1})
	h2.send(seg{flags: FIN | ACK, seq: 1, ack: 6})
	h2.expect(seg{flags: ACK, seq: 6, ack: 2})
	h2.expectState(TimeWait)

	// The engine as the passive side: the ACK of the peer's FIN waits for
	// the delayed-ACK timer, so an application that closes meanwhile sends
	// ACK and FIN in one segment.
	h3 := newHarness(t)
	h3.established()
	// peer: FIN|ACK(seq=1, ack=1)                      engine: ESTABLISHED → CLOSE_WAIT
	h3.send(seg{flags: FIN | ACK, seq: 1, ack: 1})
	h3.expectNone()
	h3.expectEvents(EventPeerClosed | EventReadable)
	h3.advance(DefaultDelayedACK / 2)
	// engine: FIN|ACK(seq=1, ack=2)                    engine: CLOSE_WAIT → LAST_ACK
	h3.c.CloseWrite()
	h3.expect(seg{flags: FIN | ACK, seq: 1, ack: 2})
	h3.expectNone()
	h3.expectState(LastAck)
	h3.send(seg{flags: ACK, seq: 2, ack: 2})
	h3.expectState(Closed)
	h3.expectCounter(DelayedACKs, 0)
}

// Scenario 14: simultaneous close. Both FINs cross; both sides go through
// CLOSING and end in TIME_WAIT.
func TestScenario14SimultaneousClose(t *testing.T) {
	h := newHarness(t)
	h.established()
	// engine: FIN|ACK(seq=1, ack=1)                    engine: ESTABLISHED → FIN_WAIT_1
	h.c.CloseWrite()
	h.expect(seg{flags: FIN | ACK, seq: 1, ack: 1})
	// peer: FIN|ACK(seq=1, ack=1), sent before ours arrived    peer: FIN_WAIT_1
	h.send(seg{flags: FIN | ACK, seq: 1, ack: 1})
	// engine: ACK(seq=2, ack=2)                        engine: FIN_WAIT_1 → CLOSING
	h.expect(seg{flags: ACK, seq: 2, ack: 2})
	h.expectState(Closing)
	h.expectEvents(EventPeerClosed | EventReadable)
	h.expectDeadline(rtoAfterHandshake) // our FIN still unacknowledged
	// (our FIN reaches the peer: FIN_WAIT_1 → CLOSING; it sends ACK(seq=2, ack=2))
	// Before that ACK arrives our FIN is retransmitted.
	h.advance(rtoAfterHandshake)
	h.expect(seg{flags: FIN | ACK, seq: 1, ack: 2})
	h.expectState(Closing)
	// peer: ACK(seq=2, ack=2)                          engine: CLOSING → TIME_WAIT
	h.send(seg{flags: ACK, seq: 2, ack: 2})
	h.expectNone()
	h.expectState(TimeWait)
	h.expectEvents(EventClosed)
	h.expectDeadline(DefaultTimeWait)
	// (our ACK reaches the peer: CLOSING → TIME_WAIT; both sides are there)
	// The peer's ACK of our retransmitted FIN is a duplicate: nothing to say.
	h.c = nil
	h.send(seg{flags: ACK, seq: 2, ack: 2})
	h.expectNone()
	h.expectState(TimeWait)
	h.advance(DefaultTimeWait)
	h.expectState(Closed)
	h.expectCounter(TimeWaitExpired, 1)
}

// Scenario 15: TIME_WAIT lasts 2MSL; a retransmitted FIN is ACKed again and
// restarts the timer; an RST does not cut it short (RFC 1337); a new SYN
// that is newer by timestamp or sequence number reopens the 4-tuple
// (RFC 6191), one that is not gets an ACK.
func TestScenario15TimeWait(t *testing.T) {
	t.Run("2MSL", func(t *testing.T) {
		h := newHarness(t)
		h.timeWait() // engine: TIME_WAIT after ACK(seq=2, ack=2); peer: LAST_ACK → CLOSED
		h.expectDeadline(DefaultTimeWait)
		h.advance(DefaultTimeWait - time.Millisecond)
		h.expectState(TimeWait)
		h.expectDeadline(time.Millisecond)
		h.advance(time.Millisecond)
		h.expectState(Closed)
		h.expectNone()
		h.expectDeadline(-1)
		h.expectCounter(TimeWaitExpired, 1)
		// The 4-tuple is free: a late ACK of the old connection now meets
		// the listener and is refused with <SEQ=SEG.ACK><CTL=RST>.
		h.send(seg{flags: ACK, seq: 2, ack: 2})
		h.expect(seg{flags: RST, seq: 2})
		h.expectCounter(RxNoSocket, 1)
	})

	t.Run("retransmitted FIN", func(t *testing.T) {
		h := newHarness(t)
		h.timeWait()
		h.advance(30 * time.Second)
		h.expectDeadline(DefaultTimeWait - 30*time.Second)
		// Our last ACK was lost; the peer (LAST_ACK) retransmits its FIN.
		// peer: FIN|ACK(seq=1, ack=2)  → engine: ACK(seq=2, ack=2), 2MSL restarted
		h.send(seg{flags: FIN | ACK, seq: 1, ack: 2})
		p := h.expect(seg{flags: ACK, seq: 2, ack: 2})
		if o := p.TCP.Options; !o.HasTimestamps || o.TSEcr != h.peerTSVal {
			t.Fatalf("TIME_WAIT ACK options %+v: want timestamps echoing %d", o, h.peerTSVal)
		}
		h.expectState(TimeWait)
		h.expectDeadline(DefaultTimeWait)
		h.expectCounter(TimeWaitFINReACKed, 1)
		if n := h.e.Stats().Connections(TimeWait); n != 1 {
			t.Fatalf("TIME_WAIT gauge %d, want 1", n)
		}
		// A duplicate ACK is not answered and does not restart the timer.
		h.advance(10 * time.Second)
		h.send(seg{flags: ACK, seq: 2, ack: 2})
		h.expectNone()
		h.expectDeadline(DefaultTimeWait - 10*time.Second)
		// A segment that is neither (old data) is answered with the ACK.
		h.send(seg{flags: PSH | ACK, seq: 1, ack: 2, data: []byte("old")})
		h.expect(seg{flags: ACK, seq: 2, ack: 2})
		h.expectDeadline(DefaultTimeWait - 10*time.Second)
		h.advance(DefaultTimeWait - 10*time.Second)
		h.expectState(Closed)
		h.expectCounter(TimeWaitExpired, 1)
	})

	t.Run("RST ignored", func(t *testing.T) {
		h := newHarness(t)
		h.timeWait()
		h.advance(time.Second)
		for _, s := range []seg{
			{flags: RST, seq: 2},               // exactly RCV.NXT
			{flags: RST | ACK, seq: 2, ack: 2}, // as an RST|ACK
			{flags: RST, seq: 1000},            // anywhere
		} {
			h.send(s)
			h.expectNone()
			h.expectState(TimeWait)
		}
		h.expectCounter(TimeWaitRSTIgnored, 3)
		h.expectDeadline(DefaultTimeWait - time.Second) // not cut short, not restarted
	})

	// reopen plays a new incarnation's SYN against the TIME_WAIT entry: a
	// reopen answers with SYN|ACK from an ISN past the old SND.NXT (Linux:
	// tw_snd_nxt + 65535 + 2), anything else with the TIME_WAIT ACK.
	reopen := []struct {
		name   string
		seq    uint32 // relative to the old incarnation's ISN; its RCV.NXT is 2
		tsVal  uint32 // the old incarnation's last TSval is 5000
		noTS   bool
		reopen bool
	}{
		{"higher seq, same timestamp", 1000, 5000, false, true},
		{"higher timestamp, old seq", 0, 6000, false, true},
		{"not newer", 0, 5000, false, false},
		{"not newer, seq at RCV.NXT", 2, 5000, false, false},
		// RFC 6191 and Linux (PAWS in tcp_timewait_state_process): an older
		// timestamp rejects the SYN whatever its sequence number.
		{"higher seq, older timestamp", 1000, 4000, false, false},
		// Without timestamps in the SYN, the sequence number decides.
		{"higher seq, no timestamps", 1000, 0, true, true},
		{"old seq, no timestamps", 0, 0, true, false},
	}
	for _, tc := range reopen {
		t.Run("SYN "+tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.timeWait()
			h.advance(time.Second)
			h.peerTSVal = tc.tsVal
			s := seg{flags: SYN, seq: tc.seq}
			if tc.noTS {
				s.opts = &wire.TCPOptions{MSS: 1460}
			}
			h.send(s)
			if !tc.reopen {
				h.expect(seg{flags: ACK, seq: 2, ack: 2})
				h.expectState(TimeWait)
				h.expectCounter(TimeWaitReopened, 0)
				h.expectDeadline(DefaultTimeWait - time.Second)
				return
			}
			// engine: SYN|ACK(seq=2+65537, ack=seq+1)   TIME_WAIT → SYN_RCVD
			h.expect(seg{flags: SYN | ACK, seq: 2 + 65537, ack: tc.seq + 1})
			h.expectState(SynReceived)
			h.expectCounter(TimeWaitReopened, 1)
			if n := h.e.Stats().Connections(TimeWait); n != 0 {
				t.Fatalf("TIME_WAIT gauge %d, want 0", n)
			}
			h.expectDeadline(DefaultInitialRTO)
			// peer: ACK   → the new incarnation is ESTABLISHED
			h.send(seg{flags: ACK, seq: tc.seq + 1, ack: 2 + 65538, noTS: tc.noTS})
			h.expectNone()
			h.expectState(Established)
			if c := h.l.Accept(); c != h.c {
				t.Fatalf("Accept = %v, want the new incarnation", c)
			}
			h.expectCounter(PassiveOpens, 2)
		})
	}
}

// Scenario 16: TIME_WAIT entries are bounded (the oldest is recycled, and
// counted), and active opens never pick a port whose 4-tuple is live or in
// TIME_WAIT; running out of ports is an error that is counted.
func TestScenario16TimeWaitBoundedAndPorts(t *testing.T) {
	t.Run("bounded", func(t *testing.T) {
		h := newHarness(t, withConfig(func(c *Config) { c.TimeWaitMax = 2 }))
		h.listen()
		for i, port := range []uint16{40000, 40001, 40002} {
			h.freshPeer(port, 80)
			h.timeWait()
			if i < 2 {
				h.advance(time.Second)
			}
		}
		h.expectCounter(TimeWaitEntered, 3)
		h.expectCounter(TimeWaitRecycled, 1)
		if n := h.e.Stats().Connections(TimeWait); n != 2 {
			t.Fatalf("TIME_WAIT gauge %d, want 2", n)
		}
		var ports []uint16
		h.e.TimeWaits(func(k FlowKey, _ int) bool { ports = append(ports, k.RemotePort); return true })
		if len(ports) != 2 || ports[0] != 40001 || ports[1] != 40002 {
			t.Fatalf("TIME_WAIT entries for ports %v, want [40001 40002]", ports)
		}
		// The oldest remaining expires first.
		h.expectDeadline(DefaultTimeWait - time.Second)
		// The recycled 4-tuple is gone: a retransmitted FIN there meets the
		// listener and is refused.
		h.freshPeer(40000, 80)
		h.send(seg{flags: FIN | ACK, seq: 1, ack: 2})
		h.expect(seg{flags: RST, seq: 2})
		h.advance(DefaultTimeWait - time.Second)
		h.expectCounter(TimeWaitExpired, 1)
		h.advance(time.Second)
		h.expectCounter(TimeWaitExpired, 2)
		h.expectDeadline(-1)
	})

	t.Run("port choice and exhaustion", func(t *testing.T) {
		h := newHarness(t, withConfig(func(c *Config) { c.EphemeralPorts = [2]uint16{20000, 20002} }))
		// A: established, live.
		h.establishedActive()
		a := h.savePeer()
		// B: actively closed, in TIME_WAIT.
		h.freshPeer(peerAP.Port(), 0)
		h.synSent()
		h.send(seg{flags: SYN | ACK, seq: 0, ack: 1})
		h.expect(seg{flags: ACK, seq: 1, ack: 1})
		h.c.CloseWrite()
		h.expect(seg{flags: FIN | ACK, seq: 1, ack: 1})
		h.send(seg{flags: FIN | ACK, seq: 1, ack: 2})
		h.expect(seg{flags: ACK, seq: 2, ack: 2})
		h.expectState(TimeWait)
		b := h.savePeer()
		// C: must take the one port left.
		h.freshPeer(peerAP.Port(), 0)
		h.synSent()
		c := h.savePeer()
		used := map[uint16]bool{a.ourPort: true, b.ourPort: true, c.ourPort: true}
		if len(used) != 3 {
			t.Fatalf("ports A %d, B %d, C %d: a 4-tuple was reused", a.ourPort, b.ourPort, c.ourPort)
		}
		for p := range used {
			if p < 20000 || p > 20002 {
				t.Fatalf("port %d outside the ephemeral range", p)
			}
		}
		// D: nothing left.
		if _, err := h.e.Dial(h.now, engineAddr, peerAP); !errors.Is(err, ErrNoPorts) {
			t.Fatalf("Dial = %v, want ErrNoPorts", err)
		}
		h.expectNone()
		h.expectCounter(EphemeralPortsExhausted, 1)
		// Another destination has its own 4-tuples: the same ports are free.
		other, err := h.e.Dial(h.now, engineAddr, netip.AddrPortFrom(peerAddr, 8080))
		if err != nil {
			t.Fatalf("Dial to another port: %v", err)
		}
		other.Abort()
		h.drain()
		// Once B's TIME_WAIT expires its port is free again.
		h.usePeer(b)
		h.advance(DefaultTimeWait)
		h.expectState(Closed)
		h.drain() // C's SYN retransmissions meanwhile
		d, err := h.e.Dial(h.now, engineAddr, peerAP)
		if err != nil {
			t.Fatalf("Dial after TIME_WAIT expired: %v", err)
		}
		if d.Key().LocalPort != b.ourPort {
			t.Fatalf("Dial took port %d, want B's %d", d.Key().LocalPort, b.ourPort)
		}
		h.expectCounter(EphemeralPortsExhausted, 1)
	})

	// An active open may take over a 4-tuple in TIME_WAIT once the entry is
	// TimeWaitReuse old and the old connection used timestamps (Linux's
	// tcp_tw_reuse): the new ISN starts 65537 past the old SND.NXT.
	activeClose := func(h *harness) (oldNxt seqnum.Value) {
		h.t.Helper()
		h.establishedActive()
		if _, err := h.c.Write([]byte("hello")); err != nil {
			h.t.Fatal(err)
		}
		h.expect(seg{flags: ACK | PSH, seq: 1, ack: 1, data: []byte("hello")})
		h.send(seg{flags: ACK, seq: 1, ack: 6})
		h.c.CloseWrite()
		h.expect(seg{flags: FIN | ACK, seq: 6, ack: 1})
		h.send(seg{flags: FIN | ACK, seq: 1, ack: 7})
		h.expect(seg{flags: ACK, seq: 7, ack: 2})
		h.expectState(TimeWait)
		return h.ourISS.Add(7)
	}
	onePort := func(c *Config) { c.EphemeralPorts = [2]uint16{20000, 20000} }
	t.Run("TIME_WAIT reuse by an active open", func(t *testing.T) {
		h := newHarness(t, withConfig(onePort))
		oldNxt := activeClose(h)
		h.advance(DefaultTimeWaitReuse - time.Millisecond)
		if _, err := h.e.Dial(h.now, engineAddr, peerAP); !errors.Is(err, ErrNoPorts) {
			t.Fatalf("Dial %v into TIME_WAIT = %v, want ErrNoPorts", DefaultTimeWaitReuse-time.Millisecond, err)
		}
		h.expectCounter(EphemeralPortsExhausted, 1)
		h.advance(time.Millisecond)
		h.freshPeer(peerAP.Port(), 0)
		h.peerISS += 1 << 20
		h.synSent()
		if h.ourISS != oldNxt.Add(65535+2) {
			t.Fatalf("new ISN = old SND.NXT%+d, want +65537", int32(uint32(h.ourISS)-uint32(oldNxt)))
		}
		h.expectCounter(TimeWaitReused, 1)
		if n := h.e.Stats().Connections(TimeWait); n != 0 {
			t.Fatalf("TIME_WAIT gauge = %d after the takeover, want 0", n)
		}
		h.send(seg{flags: SYN | ACK, seq: 0, ack: 1})
		h.expect(seg{flags: ACK, seq: 1, ack: 1})
		h.expectState(Established)
	})
	t.Run("no TIME_WAIT reuse without timestamps", func(t *testing.T) {
		h := newHarness(t, withConfig(onePort))
		h.peerTS = false
		activeClose(h)
		h.advance(10 * DefaultTimeWaitReuse)
		if _, err := h.e.Dial(h.now, engineAddr, peerAP); !errors.Is(err, ErrNoPorts) {
			t.Fatalf("Dial into a TIME_WAIT entry without timestamps = %v, want ErrNoPorts", err)
		}
		h.expectCounter(TimeWaitReused, 0)
	})
	t.Run("no TIME_WAIT reuse when disabled", func(t *testing.T) {
		h := newHarness(t, withConfig(func(c *Config) { onePort(c); c.TimeWaitReuse = -1 }))
		activeClose(h)
		h.advance(10 * DefaultTimeWaitReuse)
		if _, err := h.e.Dial(h.now, engineAddr, peerAP); !errors.Is(err, ErrNoPorts) {
			t.Fatalf("Dial into TIME_WAIT with reuse off = %v, want ErrNoPorts", err)
		}
		h.expectCounter(TimeWaitReused, 0)
	})
}

// Scenario 17: failures. RSTs are validated (RFC 5961); segments for no
// connection are answered with RST, never an RST with an RST; a peer that
// lost its state (half-open) is detected by its RST.
func TestScenario17ResetsAndHalfOpen(t *testing.T) {
	t.Run("RST at RCV.NXT resets", func(t *testing.T) {
		h := newHarness(t)
		h.established()
		h.send(seg{flags: RST, seq: 1})
		h.expectNone()
		h.expectState(Closed)
		h.expectEvents(EventReset | EventClosed)
		if !errors.Is(h.c.Err(), ErrReset) {
			t.Fatalf("Err = %v, want ErrReset", h.c.Err())
		}
		if _, err := h.c.Write([]byte("x")); !errors.Is(err, ErrReset) {
			t.Fatalf("Write = %v, want ErrReset", err)
		}
		h.expectCounter(RxResets, 1)
		h.expectCounter(EstablishedResets, 1)
		h.expectDeadline(-1)
	})

	t.Run("in-window RST gets a challenge ACK", func(t *testing.T) {
		h := newHarness(t)
		h.established()
		// peer (or a blind attacker): RST(seq=1000), in the window but not RCV.NXT
		h.send(seg{flags: RST, seq: 1000})
		// engine: challenge ACK(seq=1, ack=1)
		h.expect(seg{flags: ACK, seq: 1, ack: 1})
		h.expectState(Established)
		h.expectCounter(ChallengeACKs, 1)
		h.expectCounter(RxResets, 0)
		// A genuine peer answers the challenge with an RST at exactly RCV.NXT.
		h.send(seg{flags: RST, seq: 1})
		h.expectNone()
		h.expectState(Closed)
		h.expectCounter(RxResets, 1)
	})

	t.Run("out-of-window RST dropped", func(t *testing.T) {
		h := newHarness(t)
		h.established()
		for _, s := range []uint32{0, 1 + 65535, 1 << 30} { // left of, just right of, far from the window
			h.send(seg{flags: RST, seq: s})
			h.expectNone()
			h.expectState(Established)
		}
		h.expectCounter(RxRSTIgnored, 3)
		h.expectCounter(ChallengeACKs, 0)
	})

	t.Run("challenge ACK rate limit", func(t *testing.T) {
		h := newHarness(t)
		h.established()
		for i := 0; i < 5; i++ {
			h.send(seg{flags: RST, seq: 100 + uint32(i)})
			h.expect(seg{flags: ACK, seq: 1, ack: 1})
		}
		// The sixth within the second is suppressed — RST or SYN alike.
		h.send(seg{flags: RST, seq: 200})
		h.expectNone()
		h.send(seg{flags: SYN, seq: 5000})
		h.expectNone()
		h.expectCounter(ChallengeACKs, 5)
		h.expectCounter(ChallengeACKsLimited, 2)
		h.advance(time.Second) // ChallengeACKWindow (default 1s): a new window
		h.send(seg{flags: RST, seq: 300})
		h.expect(seg{flags: ACK, seq: 1, ack: 1})
		h.expectCounter(ChallengeACKs, 6)
		h.expectState(Established)
	})

	t.Run("closed port", func(t *testing.T) {
		h := newHarness(t)
		h.listen()
		h.ourPort = 81 // nobody listens here
		// With ACK: <SEQ=SEG.ACK><CTL=RST>. (ack is absolute here: no ISN of ours.)
		h.send(seg{flags: PSH | ACK, seq: 50, ack: 777, data: []byte("stale")})
		h.expect(seg{flags: RST, seq: 777})
		// Without ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
		h.send(seg{flags: SYN, seq: 0})
		h.expect(seg{flags: RST | ACK, seq: 0, ack: 1})
		h.send(seg{flags: FIN, seq: 10, data: []byte("abc")})
		h.expect(seg{flags: RST | ACK, seq: 0, ack: 14})
		// Never an RST to an RST.
		h.send(seg{flags: RST, seq: 5})
		h.expectNone()
		h.send(seg{flags: RST | ACK, seq: 5, ack: 9})
		h.expectNone()
		h.expectCounter(RxNoSocket, 5)
		h.expectCounter(TxResets, 3)
		h.expectCounter(RxRSTIgnored, 2)
		// A stray ACK at the listening port (no connection, no cookie out) is refused too.
		h.ourPort = 80
		h.send(seg{flags: ACK, seq: 1, ack: 4242})
		h.expect(seg{flags: RST, seq: 4242})
		if len(h.e.flows) != 0 {
			t.Fatal("a segment for no connection created state")
		}
	})

	t.Run("half-open: our data meets the peer's RST", func(t *testing.T) {
		h := newHarness(t)
		h.established()
		// (the peer restarts and forgets the connection)
		// engine: PSH|ACK(seq=1, ack=1, "hello")
		h.writeAll(h.c, "hello")
		h.expect(seg{flags: PSH | ACK, seq: 1, ack: 1, data: []byte("hello")})
		h.expectDeadline(rtoAfterHandshake)
		// peer (CLOSED): <SEQ=SEG.ACK><CTL=RST> = RST(seq=1), exactly RCV.NXT
		h.send(seg{flags: RST, seq: 1, noTS: true})
		h.expectNone()
		h.expectState(Closed)
		h.expectEvents(EventReset | EventClosed)
		if !errors.Is(h.c.Err(), ErrReset) {
			t.Fatalf("Err = %v, want ErrReset", h.c.Err())
		}
		h.expectDeadline(-1) // no retransmission of the lost data
		h.expectCounter(EstablishedResets, 1)
	})

	t.Run("half-open: the restarted peer connects again", func(t *testing.T) {
		h := newHarness(t)
		h.established()
		// (the peer restarts and connects again from the same port)
		// peer: SYN(seq=z), a new ISN          peer: SYN_SENT
		h.send(seg{flags: SYN, seq: 5000})
		// engine: challenge ACK(seq=1, ack=1)   RFC 5961 section 4.2
		h.expect(seg{flags: ACK, seq: 1, ack: 1})
		h.expectState(Established)
		h.expectCounter(RxSYNInWindow, 1)
		// peer: the ACK does not acknowledge its SYN → <SEQ=SEG.ACK><CTL=RST>
		h.send(seg{flags: RST, seq: 1, noTS: true})
		h.expectNone()
		h.expectState(Closed)
		h.expectEvents(EventReset | EventClosed)
		// peer: SYN(seq=z) retransmitted → a new connection
		h.knowISS, h.c = false, nil
		h.send(seg{flags: SYN, seq: 5000})
		h.expect(seg{flags: SYN | ACK, seq: 0, ack: 5001})
		h.expectState(SynReceived)
		h.send(seg{flags: ACK, seq: 5001, ack: 1})
		h.expectNone()
		h.expectState(Established)
		h.expectCounter(PassiveOpens, 2)
	})
}

// rtoAfterHandshake is the RTO once the handshake has given an RTT sample:
// the harness answers at once, so the sample is 0 and RTO = SRTT +
// max(4*RTTVAR, min_rto) = min_rto (rtt.go).
const rtoAfterHandshake = DefaultMinRTO
