package proxy

import (
	"testing"

	"github.com/xdproxy/xdproxy/proxy/admin"
	"github.com/xdproxy/xdproxy/proxy/balance"
	"github.com/xdproxy/xdproxy/proxy/dataplane"
)

func TestServing(t *testing.T) {
	p, l, _, _ := runtimeProxy(t, "maglev")
	check := func(name string, wantOK bool, wantWhy string) {
		t.Helper()
		if ok, why := p.Serving(name); ok != wantOK || why != wantWhy {
			t.Errorf("Serving(%q) = %v %q, want %v %q", name, ok, why, wantOK, wantWhy)
		}
	}
	check("web", false, "data plane not up")
	p.dp = &dataplane.Dataplane{} // only its presence counts here
	check("web", true, "serving")
	check("api", false, "not running")
	for i, b := range l.Backends {
		st := balance.Maint
		if i == 0 {
			st = balance.Drain
		}
		if _, err := p.SetBackend("web", b.Spec.Addr, admin.BackendChange{State: &st}); err != nil {
			t.Fatal(err)
		}
	}
	check("web", false, "no eligible backend")
	ready := balance.Ready
	p.SetBackend("web", l.Backends[2].Spec.Addr, admin.BackendChange{State: &ready})
	check("web", true, "serving")
	p.draining.Store(true)
	check("web", false, "draining")
}
