package balance

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/stack"
)

func TestStateNames(t *testing.T) {
	for _, st := range States {
		got, err := ParseState(st.String())
		if err != nil || got != st {
			t.Fatalf("ParseState(%q) = %v, %v", st.String(), got, err)
		}
	}
	for _, bad := range []string{"", "READY", "up", "disabled"} {
		if _, err := ParseState(bad); err == nil {
			t.Errorf("ParseState(%q) succeeded", bad)
		}
	}
	b, err := json.Marshal(struct{ S State }{Drain})
	if err != nil || string(b) != `{"S":"drain"}` {
		t.Fatalf("JSON %s, %v", b, err)
	}
	var v struct{ S State }
	if err := json.Unmarshal([]byte(`{"S":"maint"}`), &v); err != nil || v.S != Maint {
		t.Fatalf("unmarshal: %v, %v", v.S, err)
	}
	if err := json.Unmarshal([]byte(`{"S":"off"}`), &v); err == nil {
		t.Fatal("unmarshal of an unknown state succeeded")
	}
	if _, err := State(7).MarshalText(); err == nil || State(7).String() != "state(7)" {
		t.Fatalf("state 7: %q, %v", State(7).String(), err)
	}
}

func TestRuntimeSetting(t *testing.T) {
	r := NewRuntime(3)
	if s := r.Load(); s != (Setting{Ready, 3}) || !r.Accepts() || r.Paused() {
		t.Fatalf("new runtime: %+v accepts=%v paused=%v", s, r.Accepts(), r.Paused())
	}
	for _, c := range []struct {
		set             Setting
		accepts, paused bool
	}{
		{Setting{Drain, 3}, false, false},
		{Setting{Maint, 3}, false, true},
		{Setting{Ready, 0}, false, false},
		{Setting{Ready, MaxWeight}, true, false},
	} {
		r.Store(c.set)
		if r.Load() != c.set || r.State() != c.set.State || r.Weight() != c.set.Weight {
			t.Fatalf("stored %+v, loaded %+v", c.set, r.Load())
		}
		if r.Accepts() != c.accepts || r.Paused() != c.paused {
			t.Errorf("%+v: accepts=%v paused=%v, want %v %v", c.set, r.Accepts(), r.Paused(), c.accepts, c.paused)
		}
	}
	before, after := r.Update(func(s Setting) Setting { s.State = Drain; return s })
	if before != (Setting{Ready, MaxWeight}) || after != (Setting{Drain, MaxWeight}) || r.Load() != after {
		t.Fatalf("update: %+v -> %+v, now %+v", before, after, r.Load())
	}
	var none *Runtime
	if none.Paused() {
		t.Fatal("a nil Runtime is paused")
	}
	for _, bad := range []Setting{{Ready, -1}, {Ready, MaxWeight + 1}, {State(3), 1}} {
		if bad.Valid() == nil {
			t.Errorf("%+v is valid", bad)
		}
	}
	if err := (Setting{Maint, 0}).Valid(); err != nil {
		t.Error(err)
	}
}

// TestRuntimeConcurrentUpdates: changes from many goroutines are never
// lost or torn (state and weight always move together).
func TestRuntimeConcurrentUpdates(t *testing.T) {
	r := NewRuntime(0)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for range 1000 {
				r.Update(func(s Setting) Setting {
					return Setting{State: States[(s.Weight+g)%len(States)], Weight: s.Weight + 1}
				})
				if s := r.Load(); s.Valid() != nil {
					t.Errorf("torn setting %+v", s)
					return
				}
			}
		})
	}
	wg.Wait()
	if w := r.Weight(); w != 8000 {
		t.Fatalf("weight %d after 8000 increments", w)
	}
}

// runtimePool is a listener's backends as the proxy wires them to a
// balancer: eligible when healthy and accepting, weighted by the Runtime.
type runtimePool struct {
	addrs   []netip.AddrPort
	health  []*Health
	runtime []*Runtime
	active  []int
}

func newRuntimePool(weights ...int) *runtimePool {
	p := &runtimePool{addrs: maglevBackends(len(weights)), active: make([]int, len(weights))}
	for _, w := range weights {
		p.health = append(p.health, NewHealth(1, 1))
		p.runtime = append(p.runtime, NewRuntime(w))
	}
	return p
}

func (p *runtimePool) eligible(i int) bool { return p.health[i].Up() && p.runtime[i].Accepts() }
func (p *runtimePool) weight(i int) int    { return p.runtime[i].Weight() }

// effective is the weight Maglev's table is rebuilt with.
func (p *runtimePool) effective(i int) int {
	if !p.eligible(i) {
		return 0
	}
	return p.weight(i)
}

// TestBalancersHonorRuntime: with every balancer, a backend in drain, in
// maint or of weight 0 gets no new connection; ready again it gets its
// share, and a weight set at run time is followed. Maglev is checked both
// before its table is rebuilt (Pick walks past the backend) and after.
func TestBalancersHonorRuntime(t *testing.T) {
	clients := maglevClients(3000)
	for _, kind := range []string{"round_robin", "least_conn", "maglev"} {
		t.Run(kind, func(t *testing.T) {
			p := newRuntimePool(1, 1, 1)
			var b Balancer
			var g *Maglev
			switch kind {
			case "round_robin":
				b = NewRoundRobin(3, p.weight)
			case "least_conn":
				b = NewLeastConn(3, p.weight, func(i int) int { return p.active[i] })
			default:
				g = NewMaglev(p.addrs, []int{1, 1, 1}, 0)
				b = g
			}
			// picks counts each backend's picks over every client; with
			// least_conn every pick stays open.
			picks := func(rebuild bool) []int {
				if rebuild && g != nil {
					g.RebuildWeights(p.effective)
				}
				clear(p.active)
				counts := make([]int, 3)
				for _, c := range clients {
					i := b.Pick(c, p.eligible)
					if i < 0 {
						t.Fatal("no backend picked")
					}
					counts[i]++
					p.active[i]++
				}
				return counts
			}
			if got := picks(false); got[0] == 0 || got[1] == 0 || got[2] == 0 {
				t.Fatalf("all ready: picks %v", got)
			}
			for _, set := range []Setting{{Drain, 1}, {Maint, 1}, {Ready, 0}} {
				p.runtime[1].Store(set)
				for _, rebuild := range []bool{false, true} {
					if got := picks(rebuild); got[1] != 0 {
						t.Fatalf("backend 1 %v weight %d (rebuilt %v): picked %d times of %d", set.State, set.Weight, rebuild, got[1], len(clients))
					}
				}
				if g != nil && g.Lookup(clients[0]) == 1 {
					t.Fatal("backend 1 still in the rebuilt Maglev table")
				}
			}
			// Ready with weight 3 of 5: three fifths of the picks.
			p.runtime[1].Store(Setting{Ready, 3})
			got := picks(true)
			if share := float64(got[1]) / float64(len(clients)); share < 0.55 || share > 0.65 {
				t.Fatalf("backend 1 of weight 3 among 1, 3, 1: %.0f%% of the picks (%v), want ~60%%", 100*share, got)
			}
			// Down by health, ready by setting: still none.
			p.health[1].Report(false)
			if got := picks(true); got[1] != 0 {
				t.Fatalf("backend 1 down: picked %d times", got[1])
			}
		})
	}
}

func TestMaglevRebuildWeights(t *testing.T) {
	g := NewMaglev(maglevBackends(3), []int{1, 1, 1}, 1009)
	t0 := g.table.Load()
	g.RebuildWeights(func(int) int { return 1 })
	if g.table.Load() != t0 {
		t.Fatal("the same weights rebuilt the table")
	}
	g.RebuildWeights(func(i int) int { return []int{2, 1, 1}[i] })
	shares := tableShares(g)
	if shares[0] < 480 || shares[0] > 530 {
		t.Fatalf("backend 0 of weight 2 among 2, 1, 1 holds %d of 1009 slots", shares[0])
	}
	g.RebuildWeights(func(int) int { return -1 })
	if g.Lookup(maglevClients(1)[0]) != -1 {
		t.Fatal("negative weights left a table")
	}
	// Health-only rebuilds use the weights NewMaglev was given.
	g.RebuildFunc(nil)
	if g.table.Load().weights[0] != 1 {
		t.Fatalf("RebuildFunc weights %v", g.table.Load().weights)
	}
}

func TestHealthRecheck(t *testing.T) {
	h := NewHealth(2, 3)
	runHealth(t, h, []healthStep{{'F', true, false}, {'F', true, false}, {'F', false, true}})
	if !h.Recheck() || !h.Up() {
		t.Fatal("Recheck of a down backend: not up, or no transition")
	}
	// On probation: one failure takes it down.
	runHealth(t, h, []healthStep{{'F', false, true}})
	h.Recheck()
	// A success ends the probation: fall failures again.
	runHealth(t, h, []healthStep{{'S', true, false}, {'F', true, false}, {'F', true, false}, {'F', false, true}})
	h.Recheck()
	runHealth(t, h, []healthStep{{'C', false, true}})
	up := NewHealth(1, 1)
	if up.Recheck() || !up.Up() {
		t.Fatal("Recheck of an up backend reported a transition")
	}
	if n := h.Transitions(); n != 7 {
		t.Fatalf("%d transitions, want 7", n)
	}
}

// TestProberPausedInMaint: a backend in maint is not checked, a check in
// flight when maint begins is dropped unreported, and checks resume
// within an interval of leaving maint.
func TestProberPausedInMaint(t *testing.T) {
	l := newProbeLink(t)
	h, rt, changed := NewHealth(1, 1), NewRuntime(1), 0
	target := l.target(listening, h, &changed)
	target.Runtime = rt
	rt.Store(Setting{Maint, 1})
	p := NewProber(l.proxy, []Target{target}, l.now)
	for range 3 {
		p.Tick(l.now)
		l.run()
		l.now = p.Next()
	}
	n := 0
	l.proxy.Conns(func(*stack.Conn) bool { n++; return true })
	if ok, failed := h.Checks(); ok+failed != 0 || n != 0 {
		t.Fatalf("in maint: %d ok and %d failed checks, %d connections", ok, failed, n)
	}
	rt.Store(Setting{Ready, 1})
	p.Tick(l.now)
	l.run()
	if ok, _ := h.Checks(); ok != 1 {
		t.Fatalf("after maint: %d checks, want 1 within an interval", ok)
	}

	// A check in flight (the backend never answers) when maint begins.
	l.proxySink.drop = true
	l.now = p.Next()
	p.Tick(l.now)
	rt.Store(Setting{Maint, 1})
	p.Tick(l.now + 1)
	if ok, failed := h.Checks(); ok != 1 || failed != 0 || !h.Up() {
		t.Fatalf("check dropped by maint: ok=%d failed=%d up=%v", ok, failed, h.Up())
	}
	n = 0
	l.proxy.Conns(func(*stack.Conn) bool { n++; return true })
	if n != 0 {
		t.Fatalf("%d connections left after maint aborted the check", n)
	}
}

// TestKernelChecksPausedInMaint: RunKernelChecks skips a backend in maint.
func TestKernelChecksPausedInMaint(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepts atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			c.Close()
		}
	}()
	h, rt := NewHealth(1, 1), NewRuntime(1)
	rt.Store(Setting{Maint, 1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		RunKernelChecks(ctx, []Target{{Addr: netip.MustParseAddrPort(ln.Addr().String()), Interval: 20 * time.Millisecond,
			Timeout: time.Second, Health: h, Runtime: rt}})
	}()
	defer func() { cancel(); <-done }()
	time.Sleep(300 * time.Millisecond)
	if ok, failed := h.Checks(); ok+failed != 0 || accepts.Load() != 0 {
		t.Fatalf("in maint: %d ok, %d failed, %d connections", ok, failed, accepts.Load())
	}
	rt.Store(Setting{Ready, 1})
	deadline := time.Now().Add(5 * time.Second)
	for ok, _ := h.Checks(); ok == 0; ok, _ = h.Checks() {
		if time.Now().After(deadline) {
			t.Fatal("no check within 5s of leaving maint")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
