package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// ECMPTopology is the scale-out lab: several proxy nodes, each in its own
// namespace on its own link to one router, announcing the same service
// address (VIP) over BGP; the router (BIRD 2, StartBIRD) installs their
// routes as one multipath route and spreads flows by an L4 hash
// (net.ipv4.fib_multipath_hash_policy=1). Clients and backends sit behind
// the router as in the one-armed Topology.
//
//	client c0 ──── rc router r0 ──── n0 node 0     (XDP + AF_XDP on n0)
//	                      r1 ──── n1 node 1
//	                      rb
//	                      │
//	backends b0 ──────────┘
//
//	namespace  if    IPv4
//	client     c0    10.10.0.2
//	router     rc    10.10.0.1
//	router     rI    10.10.(1+3I).254     (10.10.1.254, 10.10.4.254, ...)
//	node I     nI    10.10.(1+3I).1       (10.10.1.1, 10.10.4.1, ...)
//	router     rb    10.10.2.254
//	backends   b0    10.10.2.2, 10.10.2.3
//	VIP              10.10.9.1            (on no interface: the nodes' engines take it)
type ECMPTopology struct {
	Client, Router, Backends *NS
	Nodes                    []*NS
	NodeIfs                  []string     // each node's interface (full name)
	NodeAddrs                []netip.Addr // each node's address on its link
	RouterAddrs              []netip.Addr // the router's address on each node's link
	ClientAddr               netip.Addr
	BackendAddrs             []netip.Addr
	VIP                      netip.Addr
	routerIfs                []string // the router's interfaces (full names)
}

// ECMPVIP is the service address the nodes announce.
var ECMPVIP = netip.MustParseAddr("10.10.9.1")

// NewECMPTopology builds the lab with n nodes (1 to 8).
func (l *Lab) NewECMPTopology(n int) (*ECMPTopology, error) {
	if n < 1 || n > 8 {
		return nil, fmt.Errorf("lab: ecmp topology: %d nodes (1 to 8)", n)
	}
	t := &ECMPTopology{ClientAddr: TopoClient.Addr(), VIP: ECMPVIP,
		BackendAddrs: []netip.Addr{TopoBackend1.Addr(), TopoBackend2.Addr()}}
	var err error
	if t.Client, err = l.NS("client"); err != nil {
		return nil, err
	}
	if t.Router, err = l.NS("router"); err != nil {
		return nil, err
	}
	if t.Backends, err = l.NS("backend"); err != nil {
		return nil, err
	}
	if _, err := l.Link(t.Client, "c0", t.Router, "rc", LinkOpts{
		AAddrs: []netip.Prefix{TopoClient}, BAddrs: []netip.Prefix{TopoRouterC}, DisableTxChecksum: true,
	}); err != nil {
		return nil, err
	}
	if _, err := l.Link(t.Backends, "b0", t.Router, "rb", LinkOpts{
		AAddrs: []netip.Prefix{TopoBackend1, TopoBackend2}, BAddrs: []netip.Prefix{TopoRouterB}, DisableTxChecksum: true,
	}); err != nil {
		return nil, err
	}
	for i := range n {
		node, err := l.NS(fmt.Sprintf("node%d", i))
		if err != nil {
			return nil, err
		}
		third := byte(1 + 3*i)
		nodeAddr := netip.AddrFrom4([4]byte{10, 10, third, 1})
		routerAddr := netip.AddrFrom4([4]byte{10, 10, third, 254})
		v, err := l.Link(node, fmt.Sprintf("n%d", i), t.Router, fmt.Sprintf("r%d", i), LinkOpts{
			AAddrs: []netip.Prefix{netip.PrefixFrom(nodeAddr, 24)}, BAddrs: []netip.Prefix{netip.PrefixFrom(routerAddr, 24)},
			DisableTxChecksum: true,
		})
		if err != nil {
			return nil, err
		}
		if err := node.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), routerAddr); err != nil {
			return nil, fmt.Errorf("lab: ecmp topology: %w", err)
		}
		t.Nodes = append(t.Nodes, node)
		t.NodeIfs = append(t.NodeIfs, v.A.Name)
		t.NodeAddrs = append(t.NodeAddrs, nodeAddr)
		t.RouterAddrs = append(t.RouterAddrs, routerAddr)
		t.routerIfs = append(t.routerIfs, v.B.Name)
	}
	if err := t.Client.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), TopoRouterC.Addr()); err != nil {
		return nil, err
	}
	if err := t.Backends.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), TopoRouterB.Addr()); err != nil {
		return nil, err
	}
	if err := t.Router.SetForwarding(true); err != nil {
		return nil, err
	}
	// ECMP by the 5-tuple (L4), not by addresses alone: one client's
	// connections spread over the nodes.
	if err := t.Router.Sysctl("net.ipv4.fib_multipath_hash_policy", "1"); err != nil {
		return nil, err
	}
	// Second chance: a node answers the clients of the flows another node
	// forwarded to it straight through the router (direct server return),
	// from the VIP, on a link the router's ECMP route may no longer name
	// for the VIP (it was withdrawn there). Strict reverse path filtering
	// would drop those packets; loose or none lets them through. The
	// effective value is the larger of "all" and the interface's.
	for _, key := range []string{"all", "default"} {
		if err := t.Router.Sysctl("net.ipv4.conf."+key+".rp_filter", "0"); err != nil {
			return nil, err
		}
	}
	for _, ifname := range t.routerIfs {
		if err := t.Router.Sysctl("net/ipv4/conf/"+ifname+"/rp_filter", "0"); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// BIRDPeer is one BGP session of the router's BIRD.
type BIRDPeer struct {
	Node     netip.Addr // the node's address
	Local    netip.Addr // the router's on that link
	ASN      uint32     // the node's AS
	HoldTime int        // seconds
	Password string     // TCP MD5 ("" for none)
	// BFD, when set, runs a BFD session (RFC 5880, single hop) with the
	// node beside the BGP session ("bfd on"): BIRD closes the session when
	// BFD says the node is down, instead of waiting for the hold time.
	BFD *BIRDBFD
}

// BIRDBFD is the router's side of a BFD session.
type BIRDBFD struct {
	Interval   time.Duration // min rx and min tx interval
	Multiplier int
}

// StartBIRD runs BIRD 2 in the router namespace as AS asn, peering
// (passively: the nodes connect) with each peer, importing their routes
// and exporting them to the kernel's main table with ECMP (merge paths).
// The process is stopped when the lab closes; dir holds its config and
// control socket.
func (t *ECMPTopology) StartBIRD(ctx context.Context, dir string, asn uint32, peers []BIRDPeer) (*Proc, error) {
	if err := EnsureTools("bird"); err != nil {
		return nil, err
	}
	bird, err := LookTool("bird")
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "router id %s;\nlog stderr all;\n", TopoRouterC.Addr())
	b.WriteString("protocol device { scan time 1; }\n")
	b.WriteString("protocol kernel {\n  ipv4 { import none; export all; };\n  merge paths on;\n}\n")
	if err := t.birdBFD(&b, peers); err != nil {
		return nil, err
	}
	for i, p := range peers {
		fmt.Fprintf(&b, "protocol bgp node%d {\n  local %s as %d;\n  neighbor %s as %d;\n", i, p.Local, asn, p.Node, p.ASN)
		fmt.Fprintf(&b, "  passive on;\n  hold time %d;\n  keepalive time %d;\n", p.HoldTime, max(1, p.HoldTime/3))
		// After a session error (a node that died: hold timer expired) BIRD
		// waits 60-300 s before it takes the neighbor again; a node back
		// within a test should be heard within seconds.
		b.WriteString("  error wait time 1, 5;\n")
		if p.Password != "" {
			fmt.Fprintf(&b, "  password %q;\n", p.Password)
		}
		if p.BFD != nil {
			b.WriteString("  bfd on;\n")
		}
		b.WriteString("  ipv4 { import all; export none; };\n}\n")
	}
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	return t.Router.Start(ctx, bird, "-f", "-c", conf, "-s", filepath.Join(dir, "bird.ctl"))
}

// birdBFD writes BIRD's protocol bfd: for each peer with BFD, the timers
// on the router's interface to that node (BIRD starts the sessions its
// BGP protocols ask for).
func (t *ECMPTopology) birdBFD(b *strings.Builder, peers []BIRDPeer) error {
	var ifaces strings.Builder
	for _, p := range peers {
		if p.BFD == nil {
			continue
		}
		i := slices.Index(t.RouterAddrs, p.Local)
		if i < 0 {
			return fmt.Errorf("lab: bird: bfd with %s: %s is not the router's address on a node's link", p.Node, p.Local)
		}
		ms := p.BFD.Interval.Milliseconds()
		fmt.Fprintf(&ifaces, "  interface %q {\n    min rx interval %d ms;\n    min tx interval %d ms;\n    idle tx interval %d ms;\n    multiplier %d;\n  };\n",
			t.routerIfs[i], ms, ms, max(ms, 1000), p.BFD.Multiplier)
	}
	if ifaces.Len() > 0 {
		fmt.Fprintf(b, "protocol bfd {\n%s}\n", ifaces.String())
	}
	return nil
}

// Nexthops are the gateways of the router's kernel route to prefix in its
// main table: one for a plain route, several for a multipath one, none
// when there is no such route.
func (t *ECMPTopology) Nexthops(prefix netip.Prefix) ([]netip.Addr, error) {
	routes, err := t.Router.Netlink().RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Dst: ipNet(prefix), Table: 254}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, r := range routes {
		if r.Gw != nil {
			if a, ok := netip.AddrFromSlice(r.Gw.To4()); ok {
				out = append(out, a)
			}
		}
		for _, nh := range r.MultiPath {
			if a, ok := netip.AddrFromSlice(nh.Gw.To4()); ok {
				out = append(out, a)
			}
		}
	}
	return out, nil
}

// WaitNexthops polls Nexthops until it has exactly want (in any order) or
// limit passes; it returns when that happened, measured from the call.
func (t *ECMPTopology) WaitNexthops(prefix netip.Prefix, want []netip.Addr, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	var got []netip.Addr
	var err error
	for time.Since(start) < limit {
		got, err = t.Nexthops(prefix)
		if err == nil && sameAddrs(got, want) {
			return time.Since(start), nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start), fmt.Errorf("route to %s: next hops %v (err %v), want %v within %v", prefix, got, err, want, limit)
}

func sameAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		found := false
		for _, y := range b {
			found = found || x == y
		}
		if !found {
			return false
		}
	}
	return true
}
