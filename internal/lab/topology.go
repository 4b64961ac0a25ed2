package lab

import (
	"errors"
	"fmt"
	"net/netip"
)

// Topology is the lab that the demo, the daemon's end-to-end tests and the
// benchmarks share: clients behind a router, the proxy, and backends, in the
// deployment shapes users run xdproxy in (TopologyOpts picks one).
//
// One-armed (Shape OneArmed, the default): the proxy has one interface.
// Clients reach the listener 10.10.1.1 through the router; the proxy's
// backend legs leave through the same interface and the router forwards
// them to the backends.
//
//	client c0 ──── rc router rp ──── p0 proxy      (XDP + AF_XDP on p0)
//	                      rb
//	                      │
//	backends b0 ──────────┘
//
// Two-armed (Shape TwoArmed): the proxy has a front interface p0 towards the
// router, as above, and a back one p1 with the backends on-link. The router
// has no link to the backends and no route to their subnet, so a backend leg
// that leaves through p0 gets an ICMP unreachable from the router; the
// backends' default route is p1's address, so whatever they send goes back
// through p1.
//
//	client c0 ──── rc router rp ──── p0 proxy p1 ──── b0 backends
//
// The address plan; every IPv4 prefix is a /24 and every IPv6 one a /64, and
// the IPv6 addresses exist only with TopologyOpts.IPv6 (10.10.N.x becomes
// fd00:10:N::x, the router's .254 written ::254):
//
//	namespace  if  IPv4                  IPv6                         shape
//	client     c0  10.10.0.2             fd00:10:0::2                 both
//	router     rc  10.10.0.1             fd00:10:0::1                 both
//	router     rp  10.10.1.254           fd00:10:1::254               both
//	proxy      p0  10.10.1.1             fd00:10:1::1                 both
//	router     rb  10.10.2.254           fd00:10:2::254               one-armed
//	backends   b0  10.10.2.2, 10.10.2.3  fd00:10:2::2, fd00:10:2::3   one-armed
//	proxy      p1  10.10.3.1             fd00:10:3::1                 two-armed
//	backends   b0  10.10.3.2, 10.10.3.3  fd00:10:3::2, fd00:10:3::3   two-armed
//
// Interface names carry the lab's prefix (Topology.ProxyIfs has the
// proxy's). Each namespace has a default route of each family in use through
// its neighbour on the way to the router: the client's via rc (10.10.0.1,
// fd00:10:0::1), the proxy's via rp (10.10.1.254, fd00:10:1::254), the
// backends' via rb (one-armed: 10.10.2.254, fd00:10:2::254) or via the
// proxy's p1 (two-armed: 10.10.3.1, fd00:10:3::1). The router forwards both
// families; the proxy namespace does not forward. With IPv6 on, a topology
// is also the dual-stack one (IPv6 clients to IPv4 backends and the
// reverse). TopologyOpts.Queues is the queue count of p0 ↔ rp (and of
// p1 ↔ b0 unless BackQueues says otherwise); the other links have one.
//
// Every veth end has TX checksum offload off, so the frames the proxy's
// AF_XDP sockets see carry complete checksums, unless
// TopologyOpts.TxChecksumOffload leaves the veths as Linux makes them (the
// container-veth case: the namespaces' kernels send CHECKSUM_PARTIAL
// segments, and the router forwards them as such; see the package doc).
type Topology struct {
	Client, Router, Proxy, Backends *NS
	// ClientLink is client c0 (A) ↔ router rc (B); ProxyLink is proxy p0
	// (A) ↔ router rp (B). BackendLink's A end is always the backends' b0:
	// its B end is the router's rb (one-armed) or the proxy's p1
	// (two-armed, the same pair as BackLink, ends swapped).
	ClientLink, ProxyLink, BackendLink *Veth
	// BackLink is proxy p1 (A) ↔ backends b0 (B) in the two-armed shape,
	// nil in the one-armed one.
	BackLink *Veth
	// ClientWAN is the WAN emulator on the client link
	// (TopologyOpts.ClientWAN), nil without one. ClientLink then holds the
	// ends c0 and rc, which are not one veth pair but the outer ends of
	// the emulator's two.
	ClientWAN *WAN

	ClientAddr, ProxyAddr netip.Addr   // 10.10.0.2, 10.10.1.1
	BackendAddrs          []netip.Addr // 10.10.2.2, 10.10.2.3 (two-armed: 10.10.3.2, 10.10.3.3)
	// ProxyBackAddr is p1's address, the proxy's own on the backends'
	// subnet (two-armed only: 10.10.3.1).
	ProxyBackAddr netip.Addr

	// The IPv6 addresses, zero (nil) without TopologyOpts.IPv6.
	ClientAddr6, ProxyAddr6 netip.Addr   // fd00:10::2, fd00:10:1::1
	BackendAddrs6           []netip.Addr // fd00:10:2::2, fd00:10:2::3 (two-armed: fd00:10:3::2, fd00:10:3::3)
	ProxyBackAddr6          netip.Addr   // two-armed only: fd00:10:3::1

	ProxyIf  string   // the proxy's front interface name, p0 (where XDP attaches)
	ProxyIfs []string // all of the proxy's interfaces, front first: [p0] or [p0 p1]

	Opts TopologyOpts // what the topology was built with
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

	// Two-armed: the proxy's p1 and the backends behind it.
	TopoProxyBack    = netip.MustParsePrefix("10.10.3.1/24")
	TopoBackBackend1 = netip.MustParsePrefix("10.10.3.2/24")
	TopoBackBackend2 = netip.MustParsePrefix("10.10.3.3/24")

	// IPv6 (TopologyOpts.IPv6), parallel to the above.
	TopoClient6        = netip.MustParsePrefix("fd00:10:0::2/64")
	TopoRouterC6       = netip.MustParsePrefix("fd00:10:0::1/64")
	TopoProxy6         = netip.MustParsePrefix("fd00:10:1::1/64")
	TopoRouterP6       = netip.MustParsePrefix("fd00:10:1::254/64")
	TopoBackend1v6     = netip.MustParsePrefix("fd00:10:2::2/64")
	TopoBackend2v6     = netip.MustParsePrefix("fd00:10:2::3/64")
	TopoRouterB6       = netip.MustParsePrefix("fd00:10:2::254/64")
	TopoProxyBack6     = netip.MustParsePrefix("fd00:10:3::1/64")
	TopoBackBackend1v6 = netip.MustParsePrefix("fd00:10:3::2/64")
	TopoBackBackend2v6 = netip.MustParsePrefix("fd00:10:3::3/64")
)

// Shape is where a Topology's backends sit relative to the proxy.
type Shape int

const (
	// OneArmed: the proxy has one interface; clients and backends are both
	// reached through the router.
	OneArmed Shape = iota
	// TwoArmed: the proxy has a front interface towards the router and a
	// back one with the backends on-link.
	TwoArmed
)

func (s Shape) String() string {
	switch s {
	case OneArmed:
		return "one-armed"
	case TwoArmed:
		return "two-armed"
	}
	return fmt.Sprintf("Shape(%d)", int(s))
}

// NewTopology builds the namespaces, links, addresses and routes; queues is
// the number of queues of the proxy's link.
func (l *Lab) NewTopology(queues int) (*Topology, error) {
	return l.NewTopologyWith(TopologyOpts{Queues: queues})
}

// TopologyOpts shapes a topology. The zero value is the one-armed IPv4
// topology with checksum offload off that NewTopology builds.
type TopologyOpts struct {
	Queues int // queues of the proxy's links (both ends; the front one and, two-armed, the back one)
	MTU    int // of every link, both ends (0: the veth default, 1500)

	// Shape is OneArmed (the default) or TwoArmed.
	Shape Shape
	// IPv6 gives every link IPv6 addresses too (see Topology for the plan)
	// and every namespace an IPv6 default route.
	IPv6 bool
	// BackQueues is the number of queues of the back link, proxy p1 ↔
	// backends b0 (0: Queues). Only for TwoArmed.
	BackQueues int
	// TxChecksumOffload leaves every veth's offloads as Linux sets them up
	// (no `ethtool -K tx off`), so that the namespaces' kernels send
	// CHECKSUM_PARTIAL TCP segments, as on container veths. (Not on the
	// client link when it goes through a WAN emulator.)
	TxChecksumOffload bool
	// ClientWAN, when set, puts a WAN emulator with this configuration on
	// the client link (Lab.WANLink): client c0 is its A side, router rc its
	// B side, so AtoB is the upload direction and BtoA the download one.
	// Topology.ClientWAN is the emulator, to read and change at run time.
	ClientWAN *WANConfig
}

// NewTopologyWith is NewTopology with every option.
func (l *Lab) NewTopologyWith(o TopologyOpts) (*Topology, error) {
	switch {
	case o.Shape != OneArmed && o.Shape != TwoArmed:
		return nil, fmt.Errorf("lab: topology: unknown shape %v", o.Shape)
	case o.BackQueues < 0:
		return nil, fmt.Errorf("lab: topology: BackQueues %d", o.BackQueues)
	case o.BackQueues > 0 && o.Shape != TwoArmed:
		return nil, errors.New("lab: topology: BackQueues needs the two-armed shape")
	}
	backQueues := o.BackQueues
	if backQueues == 0 {
		backQueues = o.Queues
	}
	t := &Topology{ClientAddr: TopoClient.Addr(), ProxyAddr: TopoProxy.Addr(), Opts: o}
	if o.IPv6 {
		t.ClientAddr6, t.ProxyAddr6 = TopoClient6.Addr(), TopoProxy6.Addr()
	}
	// both returns the prefixes of the families in use.
	both := func(v4, v6 []netip.Prefix) []netip.Prefix {
		if !o.IPv6 {
			return v4
		}
		return append(append([]netip.Prefix(nil), v4...), v6...)
	}
	addrs := func(ps ...netip.Prefix) []netip.Addr {
		var as []netip.Addr
		for _, p := range ps {
			as = append(as, p.Addr())
		}
		return as
	}
	var err error
	for _, x := range []struct {
		p    **NS
		name string
	}{{&t.Client, "client"}, {&t.Router, "router"}, {&t.Proxy, "proxy"}, {&t.Backends, "backend"}} {
		if *x.p, err = l.NS(x.name); err != nil {
			return nil, err
		}
	}
	txOff := !o.TxChecksumOffload
	clientOpts := LinkOpts{
		AAddrs: both([]netip.Prefix{TopoClient}, []netip.Prefix{TopoClient6}),
		BAddrs: both([]netip.Prefix{TopoRouterC}, []netip.Prefix{TopoRouterC6}), DisableTxChecksum: txOff, MTU: o.MTU,
	}
	if o.ClientWAN != nil {
		if t.ClientWAN, err = l.WANLink(t.Client, "c0", t.Router, "rc", clientOpts, *o.ClientWAN); err != nil {
			return nil, err
		}
		t.ClientLink = t.ClientWAN.Link
	} else if t.ClientLink, err = l.Link(t.Client, "c0", t.Router, "rc", clientOpts); err != nil {
		return nil, err
	}
	if t.ProxyLink, err = l.Link(t.Proxy, "p0", t.Router, "rp", LinkOpts{
		Queues: o.Queues,
		AAddrs: both([]netip.Prefix{TopoProxy}, []netip.Prefix{TopoProxy6}),
		BAddrs: both([]netip.Prefix{TopoRouterP}, []netip.Prefix{TopoRouterP6}), DisableTxChecksum: txOff, MTU: o.MTU,
	}); err != nil {
		return nil, err
	}
	t.ProxyIf = t.ProxyLink.A.Name
	t.ProxyIfs = []string{t.ProxyIf}

	type route struct {
		ns  *NS
		gw4 netip.Prefix
		gw6 netip.Prefix
	}
	routes := []route{{t.Client, TopoRouterC, TopoRouterC6}, {t.Proxy, TopoRouterP, TopoRouterP6}}
	switch o.Shape {
	case OneArmed:
		t.BackendAddrs = addrs(TopoBackend1, TopoBackend2)
		if o.IPv6 {
			t.BackendAddrs6 = addrs(TopoBackend1v6, TopoBackend2v6)
		}
		if t.BackendLink, err = l.Link(t.Backends, "b0", t.Router, "rb", LinkOpts{
			AAddrs: both([]netip.Prefix{TopoBackend1, TopoBackend2}, []netip.Prefix{TopoBackend1v6, TopoBackend2v6}),
			BAddrs: both([]netip.Prefix{TopoRouterB}, []netip.Prefix{TopoRouterB6}), DisableTxChecksum: txOff, MTU: o.MTU,
		}); err != nil {
			return nil, err
		}
		routes = append(routes, route{t.Backends, TopoRouterB, TopoRouterB6})
	case TwoArmed:
		t.BackendAddrs = addrs(TopoBackBackend1, TopoBackBackend2)
		t.ProxyBackAddr = TopoProxyBack.Addr()
		if o.IPv6 {
			t.BackendAddrs6 = addrs(TopoBackBackend1v6, TopoBackBackend2v6)
			t.ProxyBackAddr6 = TopoProxyBack6.Addr()
		}
		if t.BackLink, err = l.Link(t.Proxy, "p1", t.Backends, "b0", LinkOpts{
			Queues:            backQueues,
			AAddrs:            both([]netip.Prefix{TopoProxyBack}, []netip.Prefix{TopoProxyBack6}),
			BAddrs:            both([]netip.Prefix{TopoBackBackend1, TopoBackBackend2}, []netip.Prefix{TopoBackBackend1v6, TopoBackBackend2v6}),
			DisableTxChecksum: txOff, MTU: o.MTU,
		}); err != nil {
			return nil, err
		}
		t.BackendLink = &Veth{A: t.BackLink.B, B: t.BackLink.A}
		t.ProxyIfs = append(t.ProxyIfs, t.BackLink.A.Name)
		routes = append(routes, route{t.Backends, TopoProxyBack, TopoProxyBack6})
	}
	if err := t.Router.SetForwarding(true); err != nil {
		return nil, err
	}
	for _, r := range routes {
		if err := r.ns.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), r.gw4.Addr()); err != nil {
			return nil, fmt.Errorf("lab: topology: %w", err)
		}
		if o.IPv6 {
			if err := r.ns.AddRoute(netip.MustParsePrefix("::/0"), r.gw6.Addr()); err != nil {
				return nil, fmt.Errorf("lab: topology: %w", err)
			}
		}
	}
	return t, nil
}
