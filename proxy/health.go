package proxy

import (
	"net/netip"

	"github.com/xdproxy/xdproxy/proxy/balance"
	"github.com/xdproxy/xdproxy/proxy/dataplane"
	"github.com/xdproxy/xdproxy/stack"
)

// healthTargets lists the backends of the listeners with active checks
// whose legs are kernel sockets (kernel) or engine connections (!kernel).
// A result that flips a backend's health goes to its listener.
func healthTargets(ls []*Listener, kernel bool) []balance.Target {
	var targets []balance.Target
	for _, l := range ls {
		h := l.Spec.Health
		if h == nil || l.Spec.DialKernel != kernel {
			continue
		}
		for _, b := range l.Backends {
			targets = append(targets, balance.Target{
				Listener: l.Spec.Name, Source: l.Spec.Source, Addr: b.Spec.Addr,
				Interval: h.Interval, Timeout: h.Timeout, Health: b.Health, Runtime: b.Runtime,
				Changed: func() { l.healthChanged(b) },
			})
		}
	}
	return targets
}

// engineDialer dials on the shard's engine, which the data plane makes
// after the shard's handler (the prober is made with the handler).
type engineDialer struct{ sh *dataplane.Shard }

func (d engineDialer) Dial(now stack.Time, src netip.Addr, dst netip.AddrPort) (*stack.Conn, error) {
	return d.sh.Engine().Dial(now, src, dst)
}
