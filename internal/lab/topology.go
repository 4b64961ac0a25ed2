package lab

import (
	"fmt"
	"net/netip"
)

// Topology is the lab that the demo, the daemon's end-to-end tests and the
// benchmarks share: a one-armed proxy, as xdproxy runs in front of services.
//
//	client (10.10.0.2) ── router ── proxy  p0 (10.10.1.1; XDP + AF_XDP here)
//	                        │
//	                        └─────── backends (10.10.2.2, 10.10.2.3)
//
// Clients reach the listener 10.10.1.1 through the router; the proxy's
// backend legs leave through the same interface and the router forwards
// them to the backends. Every veth end has TX checksum offload off, so the
// frames the proxy's AF_XDP sockets see carry complete checksums.
type Topology struct {
	Client, Router, Proxy, Backends    *NS
	ClientLink, ProxyLink, BackendLink *Veth
	ClientAddr, ProxyAddr              netip.Addr
	BackendAddrs                       []netip.Addr
	ProxyIf                            string // the proxy's interface name (where XDP attaches)
}

// Addresses of the topology.
var (
	TopoClient   = netip.MustParsePrefix("10.10.0.2/24")
	TopoRouterC  = netip.MustParsePrefix("10.10.0.1/24")
	TopoProxy    = netip.MustParsePrefix("10.10.1.1/24")
	TopoRouterP  = netip.MustParsePrefix("10.10.1.254/24")
	TopoBackend1 = netip.MustParsePrefix("10.10.2.2/24")
	TopoBackend2 = netip.MustParsePrefix("10.10.2.3/24")
	TopoRouterB  = netip.MustParsePrefix("10.10.2.254/24")
)

// NewTopology builds the namespaces, links, addresses and routes; queues is
// the number of queues of the proxy's link.
func (l *Lab) NewTopology(queues int) (*Topology, error) {
	return l.NewTopologyWith(TopologyOpts{Queues: queues})
}

// TopologyOpts shapes a topology.
type TopologyOpts struct {
	Queues int // queues of the proxy's link
	MTU    int // of every link, both ends (0: the veth default, 1500)
}

// NewTopologyWith is NewTopology with every option.
func (l *Lab) NewTopologyWith(o TopologyOpts) (*Topology, error) {
	queues := o.Queues
	t := &Topology{ClientAddr: TopoClient.Addr(), ProxyAddr: TopoProxy.Addr(),
		BackendAddrs: []netip.Addr{TopoBackend1.Addr(), TopoBackend2.Addr()}}
	var err error
	for _, x := range []struct {
		p    **NS
		name string
	}{{&t.Client, "client"}, {&t.Router, "router"}, {&t.Proxy, "proxy"}, {&t.Backends, "backend"}} {
		if *x.p, err = l.NS(x.name); err != nil {
			return nil, err
		}
	}
	if t.ClientLink, err = l.Link(t.Client, "c0", t.Router, "rc", LinkOpts{
		AAddrs: []netip.Prefix{TopoClient}, BAddrs: []netip.Prefix{TopoRouterC}, DisableTxChecksum: true, MTU: o.MTU,
	}); err != nil {
		return nil, err
	}
	if t.ProxyLink, err = l.Link(t.Proxy, "p0", t.Router, "rp", LinkOpts{
		Queues: queues, AAddrs: []netip.Prefix{TopoProxy}, BAddrs: []netip.Prefix{TopoRouterP}, DisableTxChecksum: true, MTU: o.MTU,
	}); err != nil {
		return nil, err
	}
	if t.BackendLink, err = l.Link(t.Backends, "b0", t.Router, "rb", LinkOpts{
		AAddrs: []netip.Prefix{TopoBackend1, TopoBackend2}, BAddrs: []netip.Prefix{TopoRouterB}, DisableTxChecksum: true, MTU: o.MTU,
	}); err != nil {
		return nil, err
	}
	t.ProxyIf = t.ProxyLink.A.Name
	if err := t.Router.SetForwarding(true); err != nil {
		return nil, err
	}
	for _, r := range []struct {
		ns *NS
		gw netip.Addr
	}{{t.Client, TopoRouterC.Addr()}, {t.Proxy, TopoRouterP.Addr()}, {t.Backends, TopoRouterB.Addr()}} {
		if err := r.ns.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), r.gw); err != nil {
			return nil, fmt.Errorf("lab: topology: %w", err)
		}
	}
	return t, nil
}
