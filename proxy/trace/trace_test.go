package trace

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/stack/wire"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const (
	syn = wire.FlagSYN
	ack = wire.FlagACK
	fin = wire.FlagFIN
	rst = wire.FlagRST
	psh = wire.FlagPSH
)

// legBuilder writes a ConnTrace by hand: numbers relative to the ISNs, as
// a ladder reads them.
type legBuilder struct {
	ct    *stack.ConnTrace
	order *uint64
	at    stack.Time
}

func newLeg(order *uint64, passive bool, local, remote string, iss, irs uint32) *legBuilder {
	l, r := netip.MustParseAddrPort(local), netip.MustParseAddrPort(remote)
	return &legBuilder{order: order, ct: &stack.ConnTrace{
		Key:     stack.FlowKey{LocalAddr: l.Addr(), LocalPort: l.Port(), RemoteAddr: r.Addr(), RemotePort: r.Port()},
		Passive: passive, ISS: iss, IRS: irs, HaveIRS: true, Done: true,
	}}
}

func (b *legBuilder) add(ev stack.TraceEvent) *stack.TraceEvent {
	*b.order++
	b.at += stack.Time(time.Millisecond)
	ev.At, ev.Order = b.at+stack.Time(*b.order), *b.order
	b.ct.Events = append(b.ct.Events, ev)
	return &b.ct.Events[len(b.ct.Events)-1]
}

func (b *legBuilder) seg(in bool, flags uint8, seq, ackN, n, win uint32) *stack.TraceEvent {
	kind, sb, ab := stack.TraceSent, b.ct.ISS, b.ct.IRS
	if in {
		kind, sb, ab = stack.TraceRecv, b.ct.IRS, b.ct.ISS
	}
	return b.add(stack.TraceEvent{Kind: kind, Seg: stack.TraceSegment{Seq: sb + seq, Ack: ab + ackN, Len: n, Window: win, Flags: flags, WScale: -1}})
}

func (b *legBuilder) in(flags uint8, seq, ackN, n, win uint32) *stack.TraceEvent {
	return b.seg(true, flags, seq, ackN, n, win)
}

func (b *legBuilder) out(flags uint8, seq, ackN, n, win uint32) *stack.TraceEvent {
	return b.seg(false, flags, seq, ackN, n, win)
}

func (b *legBuilder) state(from, to stack.State) {
	ev := stack.TraceEvent{Kind: stack.TraceState, From: from, To: to}
	if to == stack.TimeWait {
		ev.Dur = time.Minute
	}
	b.add(ev)
}

func (b *legBuilder) timer(k stack.TraceTimerKind) {
	b.add(stack.TraceEvent{Kind: stack.TraceTimer, Timer: k})
}

func synOpts(ev *stack.TraceEvent, ws int8) {
	ev.Seg.MSS, ev.Seg.WScale, ev.Seg.SACKPermit, ev.Seg.Timestamps = 1460, ws, true, true
}

// sampleSession: a client leg with a lost segment (SACK, RTO) closed by
// the client, and a backend leg that the backend resets, truncated.
func sampleSession() *Session {
	var order uint64
	c := newLeg(&order, true, "10.0.1.1:80", "10.0.0.2:40000", 1000, 5000)
	b := newLeg(&order, false, "10.0.2.1:20000", "10.0.2.2:8080", 7000, 9000)
	synOpts(c.in(syn, 0, 0, 0, 64240), 7)
	c.state(stack.Listen, stack.SynReceived)
	synOpts(c.out(syn|ack, 0, 1, 0, 65535), 3)
	c.in(ack, 1, 1, 0, 64256)
	c.state(stack.SynReceived, stack.Established)
	b.state(stack.Closed, stack.SynSent)
	synOpts(b.out(syn, 0, 0, 0, 65535), 3)
	synOpts(b.in(syn|ack, 0, 1, 0, 65160), 7)
	b.state(stack.SynSent, stack.Established)
	b.out(ack, 1, 1, 0, 262144)
	c.in(psh|ack, 1, 1, 20, 64256)
	c.out(ack, 1, 21, 0, 262144)
	b.out(psh|ack, 1, 1, 20, 262144)
	b.in(ack, 1, 21, 0, 65536)
	b.in(psh|ack, 1, 21, 3000, 65536)
	b.out(ack, 21, 3001, 0, 262144)
	c.out(ack, 1, 21, 1448, 262144)
	c.out(psh|ack, 1449, 21, 1552, 262144)
	lost := c.in(ack, 21, 1, 0, 64256)
	lost.Seg.NumSACK, lost.Seg.SACK[0] = 1, wire.SACKBlock{Start: 1000 + 1449, End: 1000 + 3001}
	c.timer(stack.TimerRTO)
	c.out(ack, 1, 21, 1448, 262144)
	c.in(ack, 21, 3001, 0, 64256)
	c.in(fin|ack, 21, 3001, 0, 64256)
	c.state(stack.Established, stack.CloseWait)
	c.timer(stack.TimerDelayedACK)
	c.out(ack, 3001, 22, 0, 262144)
	b.state(stack.Established, stack.FinWait1)
	b.out(fin|ack, 21, 3001, 0, 262144)
	b.in(rst, 3001, 0, 0, 0)
	b.state(stack.FinWait1, stack.Closed)
	b.ct.Truncated = 2
	c.state(stack.CloseWait, stack.LastAck)
	c.out(fin|ack, 3001, 22, 0, 262144)
	c.in(ack, 22, 3002, 0, 64256)
	c.state(stack.LastAck, stack.Closed)
	return &Session{ID: 7, Listener: "web", Shard: 1, Client: c.ct, Backend: b.ct}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("%s differs (-update rewrites it); got:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestWriteText pins the ladder: columns, arrows both ways on both legs,
// relative numbers and SACK blocks, states attached to the segment that
// caused them (or to the one they were entered to send), peer states
// inferred, timers as notes, truncation noted.
func TestWriteText(t *testing.T) {
	var b bytes.Buffer
	if err := WriteText(&b, sampleSession()); err != nil {
		t.Fatal(err)
	}
	golden(t, "sample.ladder", b.String())
}

// A session without a backend leg says why.
func TestWriteTextNoBackend(t *testing.T) {
	s := sampleSession()
	s.Backend, s.BackendNote = nil, "dial: kernel (an OS socket, not traced)"
	var b bytes.Buffer
	WriteText(&b, s)
	out := b.String()
	if !strings.Contains(out, "  backend leg: dial: kernel (an OS socket, not traced)\n") || strings.Contains(out, "8080") || strings.Contains(out, "RST") {
		t.Fatalf("ladder without a backend leg:\n%s", out)
	}
}

func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, sampleSession()); err != nil {
		t.Fatal(err)
	}
	if strings.Count(b.String(), "\n") != 1 {
		t.Fatalf("want one line, got %q", b.String())
	}
	var d SessionDoc
	if err := json.Unmarshal(b.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Legs) != 2 || d.Legs[1].Truncated != 2 || d.Legs[0].Leg != "client" || d.Legs[1].Remote != "10.0.2.2:8080" {
		t.Fatalf("legs: %+v", d.Legs)
	}
	e := d.Events[0]
	if e.Kind != "in" || e.Flags != "SYN" || *e.Seq != 0 || e.Ack != nil || e.Opts == nil || e.Opts.MSS != 1460 ||
		*e.Opts.WScale != 7 || e.Peer != "SYN_SENT" || e.T != 0 {
		t.Fatalf("first event: %+v", e)
	}
	var sack, rto bool
	for _, e := range d.Events {
		if e.Opts != nil && len(e.Opts.SACK) == 1 && e.Opts.SACK[0] == [2]uint32{1449, 3001} {
			sack = true
		}
		rto = rto || e.Timer == "RTO"
	}
	if !sack || !rto || d.Events[len(d.Events)-1].To != "CLOSED" || d.Events[1].T <= 0 {
		t.Fatalf("events: sack %v, rto %v, last %+v", sack, rto, d.Events[len(d.Events)-1])
	}
}

// Every bad parameter is refused naming it.
func TestParseQuery(t *testing.T) {
	for _, tc := range []struct{ query, param string }{
		{"count=0", "count"},
		{"count=x", "count"},
		{"count=1001", "count"},
		{"client=10.0.0.300", "client"},
		{"client=10.0.0.0/33", "client"},
		{"port=0", "port"},
		{"port=70000", "port"},
		{"duration=-1s", "duration"},
		{"duration=soon", "duration"},
		{"format=xml", "format"},
		{"time_wait=maybe", "time_wait"},
		{"colour=red", "colour"},
		{"count=1&count=2", "count"},
	} {
		q, _ := url.ParseQuery(tc.query)
		_, _, err := ParseQuery(q)
		var pe *ParamError
		if !errors.As(err, &pe) || pe.Param != tc.param || !strings.HasPrefix(err.Error(), tc.param+": ") {
			t.Errorf("%s: %v, want an error naming %s", tc.query, err, tc.param)
		}
	}
	q, _ := url.ParseQuery("listener=web&client=10.0.0.0/8&port=80&count=3&duration=30s&time_wait=1&format=json")
	f, format, err := ParseQuery(q)
	if err != nil || f.Listener != "web" || f.Client != netip.MustParsePrefix("10.0.0.0/8") || f.Port != 80 ||
		f.Count != 3 || f.Duration != 30*time.Second || !f.TimeWait || format != FormatJSON {
		t.Fatalf("%+v %v %v", f, format, err)
	}
	if back, _, _ := ParseQuery(f.Query(format)); back != f {
		t.Fatalf("Query round trip: %+v, want %+v", back, f)
	}
	f, format, err = ParseQuery(url.Values{})
	if err != nil || f.Count != 1 || f.Duration != DefaultDuration || format != FormatText || f.Client.IsValid() {
		t.Fatalf("defaults: %+v %v %v", f, format, err)
	}
	if p, err := ParseClient("fd00::1"); err != nil || p.Bits() != 128 {
		t.Fatalf("ParseClient(fd00::1) = %v, %v", p, err)
	}
}

func TestFilterMatch(t *testing.T) {
	client, local := netip.MustParseAddrPort("10.0.0.2:40000"), netip.MustParseAddrPort("10.0.1.1:80")
	for _, tc := range []struct {
		f    Filter
		want bool
	}{
		{Filter{}, true},
		{Filter{Listener: "web"}, true},
		{Filter{Listener: "db"}, false},
		{Filter{Client: netip.MustParsePrefix("10.0.0.0/24")}, true},
		{Filter{Client: netip.MustParsePrefix("10.0.0.3/32")}, false},
		{Filter{Port: 80}, true},
		{Filter{Port: 40000}, true},
		{Filter{Port: 443}, false},
	} {
		if got := tc.f.Match("web", client, local); got != tc.want {
			t.Errorf("%+v: %v, want %v", tc.f, got, tc.want)
		}
	}
}

// The hub chooses the next Count sessions per watch, never blocks a
// delivery (drops and counts instead), and forgets closed watches.
func TestHub(t *testing.T) {
	var h Hub
	if h.Active() || h.Select("web", netip.AddrPort{}, netip.AddrPort{}) != nil {
		t.Fatal("an empty hub selects")
	}
	w := h.Watch(Filter{Listener: "web", Count: 2})
	other := h.Watch(Filter{Listener: "db", Count: 1})
	if h.Select("web", netip.AddrPort{}, netip.AddrPort{}) != w || h.Select("web", netip.AddrPort{}, netip.AddrPort{}) != w ||
		h.Select("web", netip.AddrPort{}, netip.AddrPort{}) != nil {
		t.Fatal("a watch for 2 sessions did not select exactly 2")
	}
	for range WatchBuffer + 3 {
		w.Deliver(&Session{})
	}
	if w.Dropped() != 3 || len(w.C) != WatchBuffer {
		t.Fatalf("dropped %d, queued %d; want 3 and %d", w.Dropped(), len(w.C), WatchBuffer)
	}
	w.Close()
	if h.Select("db", netip.AddrPort{}, netip.AddrPort{}) != other {
		t.Fatal("the other watch was lost")
	}
	other.Close()
	if h.Active() {
		t.Fatal("closed watches still active")
	}
	w.Deliver(&Session{}) // a closed watch takes nothing, and does not block
}
