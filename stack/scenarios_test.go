package stack

// TCP-SCENARIOS.md, one test per scenario, written as ladders: the peer's
// segment, the engine's reply, and both states after each step.

import (
	"testing"
)

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
