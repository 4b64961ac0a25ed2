package balance

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// The engine checks run against a second engine joined in memory: the
// prober's engine ("proxy", 10.9.0.1) and a backend engine (10.9.0.2)
// that listens on :80 only.

var (
	proberIP   = netip.MustParseAddr("10.9.0.1")
	backendIP  = netip.MustParseAddr("10.9.0.2")
	listening  = netip.AddrPortFrom(backendIP, 80)
	closed     = netip.AddrPortFrom(backendIP, 81)
	unroutable = netip.MustParseAddrPort("[fd00::9]:80") // no IPv6 source: Dial fails
)

type memSink struct {
	buf  [2048]byte
	out  [][]byte
	drop bool // lose every frame
}

func (s *memSink) NextFrame() []byte { return s.buf[:] }
func (s *memSink) Commit(n int) {
	if !s.drop {
		s.out = append(s.out, append([]byte(nil), s.buf[:n]...))
	}
}

// probeHandler passes probe connections' events on, as the shard app does,
// and leaves accepted connections to sit.
type probeHandler struct{}

func (probeHandler) Acceptable(el *stack.Listener) {
	for c := el.Accept(); c != nil; c = el.Accept() {
	}
}

func (probeHandler) ConnEvent(c *stack.Conn, ev stack.Events) {
	if pr, ok := c.User.(*Probe); ok {
		pr.ConnEvent(c, ev)
	}
}

type probeLink struct {
	t                      *testing.T
	proxy, backend         *stack.Engine
	proxySink, backendSink *memSink
	now                    stack.Time
}

func newProbeLink(t *testing.T) *probeLink {
	l := &probeLink{t: t, proxySink: &memSink{}, backendSink: &memSink{}, now: stack.Time(time.Second)}
	macP, macB := wire.MAC{2, 0, 0, 0, 9, 1}, wire.MAC{2, 0, 0, 0, 9, 2}
	var err error
	l.proxy, err = stack.New(stack.Config{MAC: macP, Addresses: []netip.Addr{proberIP}, Sink: l.proxySink, Handler: probeHandler{}, Rand: rand.New(rand.NewPCG(1, 2))})
	if err != nil {
		t.Fatal(err)
	}
	l.backend, err = stack.New(stack.Config{MAC: macB, Addresses: []netip.Addr{backendIP}, Sink: l.backendSink, Handler: probeHandler{}, Rand: rand.New(rand.NewPCG(3, 4))})
	if err != nil {
		t.Fatal(err)
	}
	l.proxy.SetNeighbor(backendIP, macB)
	l.backend.SetNeighbor(proberIP, macP)
	if _, err := l.backend.Listen(listening); err != nil {
		t.Fatal(err)
	}
	return l
}

// run delivers frames both ways until the link is quiet, a millisecond a hop.
func (l *probeLink) run() {
	for range 1000 {
		fp, fb := l.proxySink.out, l.backendSink.out
		l.proxySink.out, l.backendSink.out = nil, nil
		if len(fp) == 0 && len(fb) == 0 {
			return
		}
		l.now += stack.Time(time.Millisecond)
		for _, f := range fp {
			l.backend.HandleFrame(l.now, f)
		}
		for _, f := range fb {
			l.proxy.HandleFrame(l.now, f)
		}
	}
	l.t.Fatal("the engines never went quiet")
}

func (l *probeLink) target(addr netip.AddrPort, h *Health, changed *int) Target {
	return Target{Listener: "web", Source: proberIP, Addr: addr, Interval: time.Second, Timeout: 300 * time.Millisecond,
		Health: h, Changed: func() { *changed++ }}
}

func TestProberNoTargets(t *testing.T) {
	if p := NewProber(nil, nil, 0); p != nil {
		t.Fatal("a prober without targets")
	}
}

func TestProberConnects(t *testing.T) {
	l := newProbeLink(t)
	h, changed := NewHealth(1, 1), 0
	p := NewProber(l.proxy, []Target{l.target(listening, h, &changed)}, l.now)
	if p.Next() != l.now {
		t.Fatalf("first check due at %v, want now (%v)", p.Next(), l.now)
	}
	for round := 1; round <= 3; round++ {
		roundStart := l.now
		p.Tick(l.now)
		if want := l.now.Add(300 * time.Millisecond); p.Next() != want {
			t.Fatalf("round %d: next %v while the check is in flight, want its deadline %v", round, p.Next(), want)
		}
		var probe *Probe
		l.proxy.Conns(func(c *stack.Conn) bool { probe, _ = c.User.(*Probe); return probe == nil })
		if probe == nil || probe.Listener() != "web" {
			t.Fatalf("round %d: no probe connection for web", round)
		}
		l.run()
		if ok, failed := h.Checks(); ok != uint64(round) || failed != 0 {
			t.Fatalf("round %d: checks ok=%d failed=%d", round, ok, failed)
		}
		// Reset, not closed: neither side keeps TIME_WAIT.
		n := 0
		l.proxy.Conns(func(*stack.Conn) bool { n++; return true })
		if tw := l.proxy.Stats().Connections(stack.TimeWait) + l.backend.Stats().Connections(stack.TimeWait); n != 0 || tw != 0 {
			t.Fatalf("round %d: %d connections and %d TIME_WAIT entries left", round, n, tw)
		}
		p.Tick(l.now) // not due: nothing starts
		if ok, _ := h.Checks(); ok != uint64(round) {
			t.Fatal("a check ran before its interval")
		}
		if want := roundStart.Add(time.Second); p.Next() != want {
			t.Fatalf("round %d: next %v, want one interval after the last start, %v", round, p.Next(), want)
		}
		l.now = p.Next()
	}
	if !h.Up() || changed != 0 {
		t.Fatalf("up=%v changed=%d", h.Up(), changed)
	}
}

func TestProberFailures(t *testing.T) {
	l := newProbeLink(t)
	refused, silent, unroutableH := NewHealth(1, 2), NewHealth(1, 2), NewHealth(1, 2)
	var cRefused, cUnroutable int
	p := NewProber(l.proxy, []Target{
		l.target(closed, refused, &cRefused),
		l.target(unroutable, unroutableH, &cUnroutable),
	}, l.now)
	for round := 1; round <= 2; round++ {
		p.Tick(l.now)
		l.run()
		l.now += stack.Time(time.Second)
	}
	if refused.Up() || cRefused != 1 {
		t.Errorf("refused backend: up=%v changed %d times, want down after 2 checks, 1 change", refused.Up(), cRefused)
	}
	if unroutableH.Up() || cUnroutable != 1 {
		t.Errorf("unroutable backend: up=%v changed %d times", unroutableH.Up(), cUnroutable)
	}

	// A backend that never answers fails at the timeout, not before.
	l = newProbeLink(t)
	l.proxySink.drop = true
	var cSilent int
	p = NewProber(l.proxy, []Target{l.target(listening, silent, &cSilent)}, l.now)
	p.Tick(l.now)
	deadline := p.Next()
	p.Tick(deadline - 1)
	if _, failed := silent.Checks(); failed != 0 {
		t.Fatal("check failed before its timeout")
	}
	p.Tick(deadline)
	if _, failed := silent.Checks(); failed != 1 {
		t.Fatalf("%d failed checks at the timeout, want 1", failed)
	}
	n := 0
	l.proxy.Conns(func(*stack.Conn) bool { n++; return true })
	if n != 0 {
		t.Fatalf("%d connections left after the timeout", n)
	}
	if want := l.now.Add(time.Second); p.Next() != want {
		t.Fatalf("next %v after the timeout, want the next interval %v", p.Next(), want)
	}
}
