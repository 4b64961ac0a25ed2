package stack

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// testTracer traces every connection (or none) and collects finished traces.
type testTracer struct {
	on, follow bool // trace; follow TIME_WAIT
	max        int
	done       []*ConnTrace
}

func (t *testTracer) TraceConn(k FlowKey, l *Listener) *ConnTrace {
	if !t.on {
		return nil
	}
	return &ConnTrace{Max: t.max, FollowTimeWait: t.follow}
}

func (t *testTracer) TraceDone(c *ConnTrace) { t.done = append(t.done, c) }

// traceLines renders a trace compactly, sequence numbers relative to the ISNs.
func traceLines(t *ConnTrace) string {
	var b strings.Builder
	for _, ev := range t.Events {
		switch ev.Kind {
		case TraceRecv, TraceSent:
			dir, seqBase, ackBase := "in ", t.IRS, t.ISS
			if ev.Kind == TraceSent {
				dir, seqBase, ackBase = "out", t.ISS, t.IRS
			}
			var f []string
			for _, x := range []struct {
				bit  uint8
				name string
			}{{SYN, "SYN"}, {FIN, "FIN"}, {RST, "RST"}, {PSH, "PSH"}, {ACK, "ACK"}} {
				if ev.Seg.Flags&x.bit != 0 {
					f = append(f, x.name)
				}
			}
			fmt.Fprintf(&b, "%s %s seq=%d", dir, strings.Join(f, "|"), ev.Seg.Seq-seqBase)
			if ev.Seg.Flags&ACK != 0 {
				fmt.Fprintf(&b, " ack=%d", ev.Seg.Ack-ackBase)
			}
			if ev.Seg.Len > 0 {
				fmt.Fprintf(&b, " len=%d", ev.Seg.Len)
			}
			if ev.Seg.MSS != 0 {
				fmt.Fprintf(&b, " mss=%d", ev.Seg.MSS)
			}
		case TraceState:
			fmt.Fprintf(&b, "state %v>%v", ev.From, ev.To)
			if ev.Dur > 0 {
				fmt.Fprintf(&b, " %v", ev.Dur)
			}
		case TraceTimer:
			fmt.Fprintf(&b, "timer %v", ev.Timer)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// A passive connection traced from its SYN to CLOSED: every segment both
// ways, every state, the delayed ACK of the passive close.
func TestTracePassiveLifecycle(t *testing.T) {
	h := newHarness(t)
	tr := &testTracer{on: true}
	h.e.SetTracer(tr)
	h.established()
	h.send(seg{flags: ACK | PSH, seq: 1, ack: 1, data: make([]byte, 99)})
	h.expect(seg{flags: ACK, seq: 1, ack: 100})
	h.c.Read(make([]byte, 200))
	h.c.Write(make([]byte, 119))
	h.expect(seg{flags: ACK | PSH, seq: 1, ack: 100, data: make([]byte, 119)})
	h.send(seg{flags: ACK, seq: 100, ack: 120})
	h.send(seg{flags: FIN | ACK, seq: 100, ack: 120})
	h.expectNone()
	h.advance(h.e.cfg.DelayedACK)
	h.expect(seg{flags: ACK, seq: 120, ack: 101})
	h.c.Close()
	h.expect(seg{flags: FIN | ACK, seq: 120, ack: 101})
	h.send(seg{flags: ACK, seq: 101, ack: 121})
	h.expectState(Closed)
	if len(tr.done) != 1 || !tr.done[0].Done {
		t.Fatalf("%d traces done, want 1", len(tr.done))
	}
	got := traceLines(tr.done[0])
	want := `in  SYN seq=0 mss=1460
state LISTEN>SYN_RCVD
out SYN|ACK seq=0 ack=1 mss=1460
in  ACK seq=1 ack=1
state SYN_RCVD>ESTABLISHED
in  PSH|ACK seq=1 ack=1 len=99
out ACK seq=1 ack=100
out PSH|ACK seq=1 ack=100 len=119
in  ACK seq=100 ack=120
in  FIN|ACK seq=100 ack=120
state ESTABLISHED>CLOSE_WAIT
timer delayed ACK
out ACK seq=120 ack=101
state CLOSE_WAIT>LAST_ACK
out FIN|ACK seq=120 ack=101
in  ACK seq=101 ack=121
state LAST_ACK>CLOSED
`
	if got != want {
		t.Fatalf("trace:\n%s\nwant:\n%s", got, want)
	}
	if a, _ := h.e.TraceStats(); a != 0 {
		t.Fatalf("%d traces active after the end, want 0", a)
	}
}

// An active open ends in TIME_WAIT, its 2MSL recorded; timers that fire
// (the SYN's RTO) are noted before what they send.
func TestTraceActiveTimeWait(t *testing.T) {
	h := newHarness(t)
	tr := &testTracer{on: true}
	h.e.SetTracer(tr)
	h.synSent()
	h.advance(h.e.cfg.InitialRTO)
	h.expect(seg{flags: SYN, seq: 0})
	h.send(seg{flags: SYN | ACK, seq: 0, ack: 1})
	h.expect(seg{flags: ACK, seq: 1, ack: 1})
	h.c.CloseWrite()
	h.expect(seg{flags: FIN | ACK, seq: 1, ack: 1})
	h.send(seg{flags: FIN | ACK, seq: 1, ack: 2})
	h.expect(seg{flags: ACK, seq: 2, ack: 2})
	if len(tr.done) != 1 {
		t.Fatalf("%d traces done, want 1", len(tr.done))
	}
	got := traceLines(tr.done[0])
	want := fmt.Sprintf(`state CLOSED>SYN_SENT
out SYN seq=0 mss=1460
timer RTO
out SYN seq=0 mss=1460
in  SYN|ACK seq=0 ack=1 mss=1460
state SYN_SENT>ESTABLISHED
out ACK seq=1 ack=1
state ESTABLISHED>FIN_WAIT_1
out FIN|ACK seq=1 ack=1
in  FIN|ACK seq=1 ack=2
state FIN_WAIT_1>FIN_WAIT_2
out ACK seq=2 ack=2
state FIN_WAIT_2>TIME_WAIT %v
`, h.e.cfg.TimeWait)
	if got != want {
		t.Fatalf("trace:\n%s\nwant:\n%s", got, want)
	}
}

// Following TIME_WAIT: the entry's re-ACK of a retransmitted FIN, then
// its expiry — 2MSL after the restart the retransmission caused.
func TestTraceFollowTimeWait(t *testing.T) {
	h := newHarness(t)
	tr := &testTracer{on: true, follow: true}
	h.e.SetTracer(tr)
	h.timeWait()
	if len(tr.done) != 0 {
		t.Fatal("trace done on entering TIME_WAIT")
	}
	h.advance(time.Second)
	h.send(seg{flags: FIN | ACK, seq: 1, ack: 2})
	h.expect(seg{flags: ACK, seq: 2, ack: 2})
	h.advance(h.e.cfg.TimeWait - time.Millisecond)
	if len(tr.done) != 0 {
		t.Fatal("trace done before the restarted 2MSL")
	}
	h.advance(time.Millisecond)
	if len(tr.done) != 1 {
		t.Fatalf("%d traces done after TIME_WAIT expired, want 1", len(tr.done))
	}
	got := traceLines(tr.done[0])
	want := fmt.Sprintf(`state FIN_WAIT_2>TIME_WAIT %v
in  FIN|ACK seq=1 ack=2
out ACK seq=2 ack=2
timer TIME_WAIT expiry
state TIME_WAIT>CLOSED
`, h.e.cfg.TimeWait)
	if !strings.HasSuffix(got, want) {
		t.Fatalf("trace:\n%s\nwant it to end:\n%s", got, want)
	}
	if a, _ := h.e.TraceStats(); a != 0 {
		t.Fatalf("%d traces active, want 0", a)
	}
}

// The event cap: past it events are counted, not kept; the cap on traced
// connections refuses further ones.
func TestTraceBounds(t *testing.T) {
	h := newHarness(t)
	tr := &testTracer{on: true, max: 4}
	h.e.SetTracer(tr)
	h.established()
	for i := 0; i < 10; i++ {
		h.send(seg{flags: ACK, seq: 1, ack: 1, data: []byte{byte(i)}})
	}
	ct := h.c.Trace()
	if ct == nil || len(ct.Events) != 4 || ct.Truncated == 0 {
		t.Fatalf("trace with %d events, %d truncated; want 4 and some", len(ct.Events), ct.Truncated)
	}
	h.e.tr.active = MaxTracedConns
	h.peerPort++
	h.send(seg{flags: SYN, seq: 0})
	if c := h.e.flows[h.key()]; c == nil || c.Trace() != nil {
		t.Fatalf("connection past MaxTracedConns traced (or not made)")
	}
	if _, refused := h.e.TraceStats(); refused != 1 {
		t.Fatalf("refused %d, want 1", refused)
	}
}

// dataSteps returns a function that feeds an established connection one
// in-order full-sized segment and reads it, with tr as the engine's tracer.
func dataSteps(tb testing.TB, tr Tracer) (*Conn, func()) {
	e, sink := newBenchEngine(tb, nil)
	e.SetTracer(tr)
	l, _ := e.Listen(listenAP)
	p := &benchPeer{e: e, sink: sink, l: l, port: 40000, iss: 1_000_000, tsVal: 100}
	now := t0
	c := p.handshake(now, make([]byte, 2048))
	dataFrame := p.frame(make([]byte, 2048), ACK|PSH, 1, 1, make([]byte, benchSegSize))
	seq := uint32(1)
	rd := make([]byte, 4096)
	return c, func() {
		patch32(dataFrame, benchSeqOff, uint32(p.iss)+seq)
		seq += benchSegSize
		now += 1000
		e.HandleFrame(now, dataFrame)
		c.Read(rd)
	}
}

// With a tracer installed that selects nothing, the data path allocates nothing.
func TestTraceOffAllocatesNothing(t *testing.T) {
	_, step := dataSteps(t, &testTracer{})
	if allocs := testing.AllocsPerRun(1000, step); allocs != 0 {
		t.Fatalf("%v allocations per segment with tracing off, want 0", allocs)
	}
}

// BenchmarkEstablishedDataTraced is BenchmarkEstablishedData on a traced
// connection whose trace is full (events counted, not kept): the cost of
// tracing on, in steady state.
func BenchmarkEstablishedDataTraced(b *testing.B) {
	c, step := dataSteps(b, &testTracer{on: true, max: 64})
	b.ReportAllocs()
	b.SetBytes(benchSegSize)
	b.ResetTimer()
	for range b.N {
		step()
	}
	b.StopTimer()
	if c.Trace() == nil {
		b.Fatal("connection not traced")
	}
}
