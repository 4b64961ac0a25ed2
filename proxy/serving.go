package proxy

// Serving reports whether this node can serve the listener now — the data
// plane is up, the proxy is not draining, and at least one backend is
// eligible (healthy, ready, of a positive weight) — and, when it cannot,
// why. The BGP speaker (proxy/bgp) announces a listener's address only
// while this holds.
func (p *Proxy) Serving(listener string) (ok bool, reason string) {
	switch {
	case p.dp == nil:
		return false, "data plane not up"
	case p.Draining():
		return false, "draining"
	}
	l := p.listenerNamed(listener)
	if l == nil {
		return false, "not running"
	}
	for _, b := range l.Backends {
		if b.Eligible() {
			return true, "serving"
		}
	}
	return false, "no eligible backend"
}
