// Package lab builds throw-away networks out of Linux network namespaces and
// veth pairs for xdproxy's tests, the demo and the benchmarks.
//
// A Lab owns everything it creates: named network namespaces, the veth pairs
// between them, iptables rules in those namespaces, processes started in them
// and the sockets it opened there. Every name carries a per-run prefix
// (Lab.Prefix, e.g. "xdp3f2a-"), so concurrent labs, in one process or in
// several `go test` package binaries, never collide.
//
//	l, err := lab.New(t) // cleanup registered with t.Cleanup
//	cli, _ := l.NS("cli")
//	srv, _ := l.NS("srv")
//	v, _ := l.Link(cli, "eth0", srv, "eth0", lab.LinkOpts{
//		AAddrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")},
//		BAddrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.2/24")},
//	})
//	ln, _ := srv.ListenTCP("10.9.0.2:8080")
//	c, _ := cli.DialTCP(ctx, "10.9.0.2:8080")
//
// # Cleanup
//
// New(tb) registers Close with tb.Cleanup, which the testing package runs
// when the test returns, calls t.Fatal, or panics. Close (also for non-test
// users such as the demo; idempotent) stops the processes started with
// NS.Start (SIGTERM to the process group, SIGKILL after a grace period),
// then kills any other process still inside a lab namespace, closes the
// sockets made by ListenTCP and DialTCP, removes the iptables rules added by
// Loss, deletes the veth pairs and finally deletes the namespaces.
//
// A process that dies without running its cleanup (SIGKILL, `go test
// -timeout`) leaves its lab behind; each lab reserves its prefix with a file
// in /run/xdproxy-lab holding the owner's pid, and the next New in any
// process reaps the labs whose owner is gone.
//
// # Names
//
// NS.Name is the full namespace name (prefix + the name given to Lab.NS), the
// one `ip netns exec` takes. Interface names are prefix + the given name,
// truncated to 15 bytes (IFNAMSIZ-1); End.Name holds the result. Methods that
// take an interface name (Loss, Neigh, Capture) accept either the full name
// or the short one given to Link.
//
// # Topologies
//
// Lab.NewTopology and Lab.NewTopologyWith build the network that the
// daemon's end-to-end tests, the demo and the benchmarks share, in each
// deployment shape xdproxy runs in (TopologyOpts):
//
//	one-armed (default)                      two-armed (Shape: TwoArmed)
//
//	client c0 ── rc router rp ── p0 proxy    client c0 ── rc router rp ── p0 proxy p1 ── b0 backends
//	                   rb
//	                   │
//	backends b0 ───────┘
//
//	namespace  if  IPv4                  IPv6 (IPv6: true)            shape
//	client     c0  10.10.0.2             fd00:10:0::2                 both
//	router     rc  10.10.0.1             fd00:10:0::1                 both
//	router     rp  10.10.1.254           fd00:10:1::254               both
//	proxy      p0  10.10.1.1             fd00:10:1::1                 both
//	router     rb  10.10.2.254           fd00:10:2::254               one-armed
//	backends   b0  10.10.2.2, 10.10.2.3  fd00:10:2::2, fd00:10:2::3   one-armed
//	proxy      p1  10.10.3.1             fd00:10:3::1                 two-armed
//	backends   b0  10.10.3.2, 10.10.3.3  fd00:10:3::2, fd00:10:3::3   two-armed
//
// IPv4 prefixes are /24s, IPv6 ones /64s (unique local addresses, fd00:10:N::
// parallel to 10.10.N.). The router forwards both families; the client and
// the proxy have a default route of each family in use via the router, the
// backends via the router (one-armed) or via the proxy's p1 (two-armed). In
// the two-armed shape the router has no route to the backends at all, so
// only a leg that leaves through p1 reaches them. Queues sets the queue count of the proxy's front
// link and BackQueues that of the back one (0: the same). TxChecksumOffload
// leaves every veth's offloads as Linux sets them (see below); by default
// they are all off. The Topology type's doc has the details.
//
// # IPv6 without DAD
//
// Lab links do no duplicate address detection at all: the addresses given
// in LinkOpts carry IFA_F_NODAD and each end's accept_dad is 0 before it
// goes up, so that its link-local address is usable at once too. The latter
// matters for routers: Linux solicits a neighbour for a forwarded packet
// from its link-local address and sends no solicitation while that address
// is tentative, so a router namespace would otherwise hold the first
// forwarded IPv6 packets for the one to two seconds DAD takes.
//
// # Checksum offload on veth
//
// A veth advertises TX checksum offload, so a segment that a namespace's own
// kernel TCP sends out of a veth is CHECKSUM_PARTIAL: its TCP checksum field
// holds only the pseudo-header sum, and the real checksum is never computed
// because the frame never leaves the host. A kernel receiver on the peer
// trusts it; an XDP program or an AF_XDP consumer on the peer sees the
// unfinished checksum and rejects the frame if it verifies checksums.
// LinkOpts.DisableTxChecksum runs `ethtool -K <if> tx off` on both ends (which
// also turns off TSO and scatter-gather, which depend on it), so the frames
// carry full checksums; use it for every link whose far side is xdproxy.
//
// # Tools
//
// The package uses netlink (github.com/vishvananda/netlink) for interfaces,
// addresses, routes and neighbours, and shells out for the rest: `ip netns
// exec` (iproute2) to run programs in a namespace, `iptables`/`ip6tables` for
// Loss, `ethtool` for DisableTxChecksum, `tcpdump` for Capture, `ss` for SS.
// Those methods call EnsureTools, which installs a missing Debian package
// with apt-get when running as root and returns an error naming the package
// otherwise. Everything needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); tests
// call RequireRoot first, which skips without root except under CI=true,
// where it fails the test.
package lab
