package proxy

import (
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/xdproxy/xdproxy/proxy/balance"
)

// TestReloadCarriesOver: a reload that keeps a listener keeps its counters
// and, for the backends that stay, their health, counters and run-time
// setting (a drain survives; a run-time weight equal to the old configured
// one follows the file); new backends start fresh; a new listener is added.
var (
	b1 = netip.MustParseAddrPort("10.0.2.2:8080")
	b2 = netip.MustParseAddrPort("10.0.2.3:8080")
	b3 = netip.MustParseAddrPort("10.0.2.4:8080")
)

func TestReloadCarriesOver(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	spec := ListenerSpec{Name: "web", Addr: netip.MustParseAddrPort("10.0.0.1:80"), Balance: "round_robin",
		Backends: []BackendSpec{{Addr: b1, Weight: 1}, {Addr: b2, Weight: 1}}}
	l := newListener(spec, log)
	p := newTestProxy([]*Listener{l}, nil, log)
	l.Stats.Accepted.Store(7)
	l.Backends[0].Sessions.Store(5)
	l.Backends[0].Runtime.Update(func(s balance.Setting) balance.Setting { s.State = balance.Drain; return s })

	next := spec
	next.Backends = []BackendSpec{{Addr: b1, Weight: 4}, {Addr: b3, Weight: 2}} // b2 gone, b3 new, b1 re-weighted
	api := ListenerSpec{Name: "api", Addr: netip.MustParseAddrPort("10.0.0.1:81"), Backends: []BackendSpec{{Addr: b3, Weight: 1}}}
	res, err := p.Reload(Config{Listeners: []ListenerSpec{next, api}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Changed, []string{"web"}) || !slices.Equal(res.Added, []string{"api"}) || len(res.Removed) != 0 {
		t.Fatalf("result %+v", res)
	}
	ls := p.lis()
	if len(ls) != 2 || ls[0] == l || ls[0].Spec.Name != "web" {
		t.Fatalf("listeners after the reload: %v", ls)
	}
	nl := ls[0]
	if nl.Stats.Accepted.Load() != 7 || nl.listenerShared != l.listenerShared {
		t.Error("the listener's counters did not carry over")
	}
	k := nl.backendAt(b1)
	if k == nil || k.Sessions.Load() != 5 || k.Health != l.Backends[0].Health || k.Runtime != l.Backends[0].Runtime {
		t.Fatalf("b1 did not carry its counters, health and setting over: %+v", k)
	}
	if s := k.Runtime.Load(); s.State != balance.Drain || s.Weight != 4 {
		t.Errorf("b1's setting %+v, want still drained, weight 4 from the file (its run-time weight was the configured one)", s)
	}
	if nl.backendAt(b2) != nil || nl.backendAt(b3) == nil || nl.backendAt(b3).Sessions.Load() != 0 {
		t.Error("b2 should be gone and b3 new")
	}
	// A run-time weight set apart from the file survives a re-weighting.
	k.Runtime.Update(func(s balance.Setting) balance.Setting { s.Weight = 9; return s })
	next.Backends[0].Weight = 5
	if _, err := p.Reload(Config{Listeners: []ListenerSpec{next, api}}); err != nil {
		t.Fatal(err)
	}
	if w := p.lis()[0].backendAt(b1).Runtime.Weight(); w != 9 {
		t.Errorf("run-time weight %d after a reload re-weighted the backend, want the operator's 9", w)
	}
}
