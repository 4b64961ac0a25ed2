package proxy

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/xdproxy/xdproxy/proxy/admin"
	"github.com/xdproxy/xdproxy/proxy/balance"
)

// The runtime API's changes (admin.Source's SetBackend): a backend's state
// (ready, drain, maint) and weight, set while the proxy runs, without a
// reload. They take effect on the shards' next pick (balance.Runtime is an
// atomic word the balancers read), and a Maglev table is rebuilt off the
// shards, as for a health change. Open sessions are never touched: a
// drained backend's sessions finish as they would have.
//
// A setting lives in the backend's *balance.Runtime, which belongs to the
// pair (listener name, backend address): a reload that keeps the pair is
// to keep the Runtime (see balance.Runtime).

// SetBackend changes a backend's run-time setting (admin.Source).
func (p *Proxy) SetBackend(listener string, addr netip.AddrPort, c admin.BackendChange) (admin.BackendView, error) {
	l := p.listenerNamed(listener)
	if l == nil {
		names := make([]string, len(p.lis()))
		for i, x := range p.lis() {
			names[i] = x.Spec.Name
		}
		return admin.BackendView{}, fmt.Errorf("%w %q (listeners: %s)", admin.ErrUnknownListener, listener, strings.Join(names, ", "))
	}
	b := l.backendAt(addr)
	if b == nil {
		addrs := make([]string, len(l.Backends))
		for i, x := range l.Backends {
			addrs[i] = x.Spec.Addr.String()
		}
		return admin.BackendView{}, fmt.Errorf("%w %s in listener %s (its backends: %s)", admin.ErrUnknownBackend, addr, listener, strings.Join(addrs, ", "))
	}
	if c.State == nil && c.Weight == nil {
		return admin.BackendView{}, fmt.Errorf("%w: nothing to change", admin.ErrInvalidChange)
	}
	var invalid error
	before, after := b.Runtime.Update(func(s balance.Setting) balance.Setting {
		next := s
		if c.State != nil {
			next.State = *c.State
		}
		if c.Weight != nil {
			next.Weight = *c.Weight
		}
		if invalid = next.Valid(); invalid != nil {
			return s
		}
		return next
	})
	if invalid != nil {
		return admin.BackendView{}, fmt.Errorf("%w: %v", admin.ErrInvalidChange, invalid)
	}
	l.log.Info("backend setting changed", "backend", b.Spec.Addr,
		"state", after.State.String(), "weight", after.Weight,
		"was_state", before.State.String(), "was_weight", before.Weight, "by", c.Origin)
	if before.State == balance.Maint && after.State != balance.Maint && l.Spec.Health != nil && b.Health.Recheck() {
		// Its checks stopped with maint: its health is stale. It serves
		// again at once, and the first failure takes it down.
		l.log.Info("backend health changed", "backend", b.Spec.Addr, "up", true, "reason", "out of maint: up until a check fails")
	}
	l.eligibilityChanged()
	return l.backendView(b), nil
}

// listenerNamed is the listener of that name, or nil.
func (p *Proxy) listenerNamed(name string) *Listener {
	for _, l := range p.lis() {
		if l.Spec.Name == name {
			return l
		}
	}
	return nil
}

// backendAt is the backend of that address (any spelling of it: an
// IPv4-mapped IPv6 form, a zone), or nil.
func (l *Listener) backendAt(addr netip.AddrPort) *BackendState {
	want := netip.AddrPortFrom(addr.Addr().Unmap().WithZone(""), addr.Port())
	for _, b := range l.Backends {
		a := b.Spec.Addr
		if netip.AddrPortFrom(a.Addr().Unmap().WithZone(""), a.Port()) == want {
			return b
		}
	}
	return nil
}

// backendView is what the admin server shows of a backend.
func (l *Listener) backendView(b *BackendState) admin.BackendView {
	set := b.Runtime.Load()
	v := admin.BackendView{
		Addr: b.Spec.Addr, Up: b.Health.Up(),
		Active: b.Active(), Sessions: b.Sessions.Load(), Failures: b.Failures.Load(),
		State: set.State, Weight: set.Weight, ConfiguredWeight: b.Spec.Weight,
		Checked: l.Spec.Health != nil,
	}
	if v.Checked {
		v.ChecksOK, v.ChecksFailed = b.Health.Checks()
	}
	return v
}

// balanceName is the listener's balance mode as the configuration names it.
func (l *Listener) balanceName() string {
	if l.Spec.Balance == "" {
		return "round_robin"
	}
	return l.Spec.Balance
}
