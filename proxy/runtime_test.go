package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/proxy/admin"
	"github.com/xdproxy/xdproxy/proxy/balance"
	"github.com/xdproxy/xdproxy/proxy/dataplane"
)

var runtimeBackends = []BackendSpec{
	{Addr: netip.MustParseAddrPort("10.0.2.2:8080"), Weight: 1},
	{Addr: netip.MustParseAddrPort("10.0.2.3:8080"), Weight: 1},
	{Addr: netip.MustParseAddrPort("[fd00::4]:8080"), Weight: 2},
}

// syncBuf is a log sink for tests.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runtimeProxy is a Proxy with one listener "web" of the balance mode,
// with health checks, and a shard's view of it; no data plane.
func runtimeProxy(t *testing.T, mode string) (*Proxy, *Listener, *shardListener, *syncBuf) {
	logs := &syncBuf{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	l := newListener(ListenerSpec{Name: "web", Addr: webAP, Balance: mode, Backends: runtimeBackends,
		Health: &HealthSpec{Interval: time.Second, Timeout: time.Second, Rise: 2, Fall: 3}}, log)
	if l.maglev != nil {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); l.rebuilder(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	return newTestProxy([]*Listener{l}, nil, log), l, newShardListener(l), logs
}

// pickCounts makes n picks from distinct clients; each stays open (so
// least_conn spreads by weight).
func (sl *shardListener) pickCounts(t *testing.T, n int) []int {
	t.Helper()
	counts := make([]int, len(sl.l.Backends))
	for k := range n {
		client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(k)}), uint16(1024+k))
		i := sl.bal.Pick(client, sl.eligible)
		if i < 0 {
			t.Fatal("no backend picked")
		}
		counts[i]++
		sl.l.Backends[i].active.Add(1)
	}
	for _, b := range sl.l.Backends {
		b.active.Store(0)
	}
	return counts
}

// waitMaglev waits for the rebuilder to take backend i out of (or put it
// back into) the table.
func waitMaglev(t *testing.T, l *Listener, i int, in bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		found := false
		for k := range 2000 {
			c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(k >> 8), byte(k)}), 4000)
			if l.maglev.Lookup(c) == i {
				found = true
				break
			}
		}
		if found == in {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %d in the Maglev table: %v after 5s, want %v", i, found, in)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ptr[T any](v T) *T { return &v }

// TestSetBackendEveryBalancer: through SetBackend (the runtime API's way
// in), drain, maint and weight 0 keep every balancer's new picks off a
// backend; ready brings it back, a weight is followed, and Maglev's table
// follows too.
func TestSetBackendEveryBalancer(t *testing.T) {
	for _, mode := range []string{"round_robin", "least_conn", "maglev"} {
		t.Run(mode, func(t *testing.T) {
			p, l, sl, logs := runtimeProxy(t, mode)
			b := runtimeBackends[0].Addr
			for _, c := range []admin.BackendChange{
				{State: ptr(balance.Drain)},
				{State: ptr(balance.Maint)},
				{State: ptr(balance.Ready), Weight: ptr(0)},
			} {
				v, err := p.SetBackend("web", b, c)
				if err != nil {
					t.Fatal(err)
				}
				if v.Addr != b || (c.State != nil && v.State != *c.State) || (c.Weight != nil && v.Weight != *c.Weight) || v.ConfiguredWeight != 1 {
					t.Fatalf("after %+v: view %+v", c, v)
				}
				if got := sl.pickCounts(t, 400); got[0] != 0 {
					t.Fatalf("after %v, weight %d: backend 0 picked %d of 400 times", v.State, v.Weight, got[0])
				}
				if l.maglev != nil {
					waitMaglev(t, l, 0, false)
				}
			}
			// Ready with weight 4 of 4+1+2: more than half of the picks.
			if _, err := p.SetBackend("web", b, admin.BackendChange{Weight: ptr(4)}); err != nil {
				t.Fatal(err)
			}
			if l.maglev != nil {
				waitMaglev(t, l, 0, true)
			}
			if got := sl.pickCounts(t, 700); got[0] < 330 || got[0] > 470 {
				t.Fatalf("backend 0 of weight 4 among 4, 1, 2: %v", got)
			}
			for _, want := range []string{
				`msg="backend setting changed" listener=web backend=10.0.2.2:8080 state=drain weight=1 was_state=ready was_weight=1`,
				`state=maint weight=1 was_state=drain`,
				`state=ready weight=0 was_state=maint was_weight=1`,
				`state=ready weight=4 was_state=ready was_weight=0`,
			} {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log lacks %q:\n%s", want, logs.String())
				}
			}
		})
	}
}

func TestSetBackendErrors(t *testing.T) {
	p, l, _, _ := runtimeProxy(t, "round_robin")
	b := runtimeBackends[1].Addr
	for _, c := range []struct {
		listener string
		addr     netip.AddrPort
		change   admin.BackendChange
		err      error
		msg      string
	}{
		{"api", b, admin.BackendChange{State: ptr(balance.Drain)}, admin.ErrUnknownListener, `unknown listener "api" (listeners: web)`},
		{"web", netip.MustParseAddrPort("10.0.2.9:8080"), admin.BackendChange{State: ptr(balance.Drain)}, admin.ErrUnknownBackend,
			"unknown backend 10.0.2.9:8080 in listener web (its backends: 10.0.2.2:8080, 10.0.2.3:8080, [fd00::4]:8080)"},
		{"web", b, admin.BackendChange{}, admin.ErrInvalidChange, "nothing to change"},
		{"web", b, admin.BackendChange{Weight: ptr(-1)}, admin.ErrInvalidChange, "weight -1 is out of range"},
		{"web", b, admin.BackendChange{State: ptr(balance.Drain), Weight: ptr(balance.MaxWeight + 1)}, admin.ErrInvalidChange, "out of range"},
		{"web", b, admin.BackendChange{State: ptr(balance.State(9))}, admin.ErrInvalidChange, "unknown state(9)"},
	} {
		_, err := p.SetBackend(c.listener, c.addr, c.change)
		if !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("SetBackend(%s, %v, %+v): %v, want %v with %q", c.listener, c.addr, c.change, err, c.err, c.msg)
		}
	}
	if s := l.Backends[1].Runtime.Load(); s != (balance.Setting{State: balance.Ready, Weight: 1}) {
		t.Fatalf("refused changes left %+v", s)
	}
	// Another spelling of an address finds the backend.
	if v, err := p.SetBackend("web", netip.MustParseAddrPort("[::ffff:10.0.2.3]:8080"), admin.BackendChange{Weight: ptr(3)}); err != nil || v.Weight != 3 {
		t.Fatalf("IPv4-mapped spelling: %+v, %v", v, err)
	}
	if v, err := p.SetBackend("web", netip.MustParseAddrPort("[fd00:0::4%eth0]:8080"), admin.BackendChange{Weight: ptr(3)}); err != nil || v.Weight != 3 {
		t.Fatalf("IPv6 with a zone: %+v, %v", v, err)
	}
}

// TestMaintKeepsHealth: in maint, failed connects do not mark the
// backend (its checks are stopped too); out of maint it serves at once,
// on probation: the first failure takes it down.
func TestMaintKeepsHealth(t *testing.T) {
	p, l, _, logs := runtimeProxy(t, "round_robin")
	b := l.Backends[0]
	if _, err := p.SetBackend("web", b.Spec.Addr, admin.BackendChange{State: ptr(balance.Maint)}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		l.passiveFailure(b)
	}
	if !b.Health.Up() || b.Health.ConnectFailures() != 0 {
		t.Fatalf("in maint: up=%v after %d passive failures", b.Health.Up(), b.Health.ConnectFailures())
	}
	// Down before maint (by its checks), then maint, then ready.
	for range 3 {
		b.Health.Report(false)
	}
	if b.Health.Up() {
		t.Fatal("not down after 3 failed checks")
	}
	v, err := p.SetBackend("web", b.Spec.Addr, admin.BackendChange{State: ptr(balance.Ready)})
	if err != nil || !v.Up || !b.Eligible() {
		t.Fatalf("out of maint: %+v, %v; eligible %v", v, err, b.Eligible())
	}
	if !strings.Contains(logs.String(), `msg="backend health changed" listener=web backend=10.0.2.2:8080 up=true reason="out of maint`) {
		t.Errorf("no health log line out of maint:\n%s", logs.String())
	}
	l.passiveFailure(b)
	if b.Health.Up() {
		t.Fatal("on probation, one failure did not take it down")
	}
	// Drain to ready is no return from maint: health untouched.
	p.SetBackend("web", b.Spec.Addr, admin.BackendChange{State: ptr(balance.Drain)})
	p.SetBackend("web", b.Spec.Addr, admin.BackendChange{State: ptr(balance.Ready)})
	if b.Health.Up() {
		t.Fatal("drain and back brought a down backend up")
	}
}

// TestBackendsView: what the admin server shows of the backends.
func TestBackendsView(t *testing.T) {
	p, l, _, _ := runtimeProxy(t, "maglev")
	l.Backends[1].Health.Report(true)
	l.Backends[1].Health.Report(false)
	p.SetBackend("web", l.Backends[2].Spec.Addr, admin.BackendChange{State: ptr(balance.Drain), Weight: ptr(5)})
	ls := p.Listeners()
	if len(ls) != 1 || ls[0].Balance != "maglev" || len(ls[0].Backends) != 3 {
		t.Fatalf("listeners %+v", ls)
	}
	got := ls[0].Backends
	if v := got[1]; !v.Checked || v.ChecksOK != 1 || v.ChecksFailed != 1 || v.State != balance.Ready || v.Weight != 1 {
		t.Errorf("backend 1: %+v", v)
	}
	if v := got[2]; v.State != balance.Drain || v.Weight != 5 || v.ConfiguredWeight != 2 || !v.Up {
		t.Errorf("backend 2: %+v", v)
	}
	// Without health checks: not checked.
	plain := newListener(ListenerSpec{Name: "x", Backends: runtimeBackends[:1]}, slog.Default())
	if v := plain.backendView(plain.Backends[0]); v.Checked || plain.balanceName() != "round_robin" {
		t.Errorf("no checks: %+v, balance %q", v, plain.balanceName())
	}
}

// newTestProxy is a Proxy with the given listeners and data plane (nil: none).
func newTestProxy(ls []*Listener, dp *dataplane.Dataplane, log *slog.Logger) *Proxy {
	p := &Proxy{dp: dp, log: log}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.listeners.Store(&ls)
	return p
}
