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
// # WAN emulator
//
// Lab.WANLink joins two namespaces as Lab.Link does, but through a delay
// line that adds a one-way delay with jitter, random and Gilbert-Elliott
// burst loss, reordering and a rate limit with a bounded queue, per
// direction (WANConfig, WANPath); TopologyOpts.ClientWAN puts one on a
// Topology's client link (client c0 is side A, router rc side B). The
// kernel here has no netem (and no fq), so the emulator is ours:
//
//	c := lab.RTT(50 * time.Millisecond) // 25 ms each way
//	c.BtoA.Loss = 0.01                  // 1% on the download (router → client)
//	topo, _ := l.NewTopologyWith(lab.TopologyOpts{ClientWAN: &c})
//	...
//	topo.ClientWAN.Set(lab.Symmetric(lab.WANPath{Delay: 10 * time.Millisecond, Rate: 100e6}))
//	st, _ := topo.ClientWAN.Stats() // per direction: forwarded, dropped by reason, reordered, ...
//	t.Log(topo.ClientWAN)           // configuration and counters
//
// Between any two namespaces of a lab, Lab.WANLink(a, "eth0", b, "eth0",
// LinkOpts{...}, c) instead of Lab.Link.
//
//	a ──veth── wa [wanN] wb ──veth── b        wanN: the emulator's namespace
//	              XDP → AF_XDP (copy mode)
//	              pump process: RX → line → TX
//
// It is a bump in the wire: a namespace of its own (prefix + "wanN") with a
// veth pair to each side. An XDP program on its two inner ends redirects
// every frame to an AF_XDP socket (package xsk; copy mode, veth has no
// zero-copy), and the pump, one thread, takes the frames off the RX rings in
// batches, copies each into a slot of the direction's delay line (line:
// loss, bottleneck, delay, reordering) and, when it is due, into a TX frame
// of the other inner end, with one sendto per 32 frames. The two sides see
// one Ethernet segment (ARP, neighbour discovery and all) with their own
// addresses and MACs; nothing is routed, and the emulator's namespace has no
// stack on the wire (no addresses, IPv6 off, XDP drops what has no socket).
// Compared with TUN devices in a router namespace, a frame does not go
// through a routing stack twice, the pump makes no system call per
// received frame, and no test's address plan changes. Measured (kernel TCP,
// iperf3, MTU frames, same machine minutes apart, load about 1): a bare
// TUN forwarder (two TUN devices with policy routes, one read and one write
// per packet, no delay line at all) moved 0.63 to 0.65 Gbit/s with a core
// fully busy and thousands of retransmissions; this emulator without delay
// 3.0 Gbit/s; plain routing 5.5 to 6.7 Gbit/s.
//
// The pump is a process of its own: this program, started again by
// WANLink in the emulator's namespace with XDPROXY_LAB_WAN_PUMP set, which
// this package's init turns into the pump (so any program that imports
// lab can use WANLink; package xsk's own tests cannot import lab, which
// imports xsk). It talks to its WAN over a socket pair (JSON: the
// configuration, Set, Stats, stop). Why not a goroutine of the test's
// process: there the pump's thread needs a Go P to run after each wait,
// and a test's busy goroutines hold them, and the test's GC and crashes
// would be the pump's. Measured on TestWANLoss's load at 40k frames/s each
// way (both CPUs saturated), mean lateness against the due time: in-process
// 1.1 to 1.6 ms at nice 0 and 2 to 7 ms at nice -10 (the favoured thread
// waits for a P held by a descheduled one); as a process at nice -10, 0.7
// to 2.5 ms; at 25k frames/s each way, 0.16 to 0.29 ms. Beyond that it is
// this VM: a SCHED_FIFO thread that only sleeps saw stalls of up to 80 ms
// under that load. The pump's thread runs at nice -10 with 1 µs timer
// slack; the lab closes it first (its last counters stay readable), or
// kills it with the other processes of lab namespaces (ReapStale too).
//
// Time and order. Every timestamp is the monotonic clock's. A batch is
// stamped when it has been taken off the RX ring, so no frame is stamped
// before it arrived, and a frame never leaves before it is due. While
// frames keep arriving the pump sleeps at most a tick (1/100 of the
// smaller delay, between 20 and 250 µs) without waking for each of them;
// idle, it sleeps in ppoll until a frame arrives, using no CPU (0 ticks in
// 5 s). Each direction is one FIFO: jitter never reorders (see
// WANPath.Jitter for what that does to the delay distribution); only
// WANPath.Reorder does, holding a packet until ReorderDistance later ones
// have left. The outer ends have GRO on, so that they receive through their
// NAPI ring in the order the pump sent, whichever CPU it sent from.
//
// Counters (WANStats): per direction, at every snapshot, Packets =
// Forwarded + Dropped.Total() + InFlight, with drops by reason (Loss,
// Burst, Queue, NoBuffer, RxRing); Reordered counts the frames that left
// after a later one; Hold, Late and MaxLate give the added delay and the
// scheduling error. RxRing drops mean the emulator fell behind (overload,
// or the machine did not run it for longer than its 8192-frame rings hold,
// 100 ms at 1 Gbit/s): a test that needs a clean path checks it is 0.
//
// Limits: the MTU is at most 2030; the outer ends always have TX checksum
// offload off; the delay line holds WANConfig.Slots frames per direction
// (16384 by default: 200 ms at 1 Gbit/s of 1500-byte frames); loss and
// reordering spare ARP and IPv6 neighbour discovery.
//
// Measured by TestWANThroughput and TestWANRTT (2-vCPU VM shared with
// other sessions; go test without -race; kernel TCP, cubic, 64 MiB
// buffers, the rate after slow start; plain veth, emulator without delay
// and emulator at 50 ms RTT side by side in one run):
//
//	                                  load ~1            load 4-6
//	plain veth                        6.5-6.7 Gbit/s     3.1-6.2 Gbit/s
//	emulator, no delay                2.9-3.0 Gbit/s     2.0-3.0 Gbit/s
//	emulator, 50 ms RTT               2.6-2.9 Gbit/s     1.1-2.0 Gbit/s  (losses: its RX rings)
//	emulator, 50 ms RTT, 1 Gbit/s     0.96 Gbit/s        0.87-0.96 Gbit/s (losses: the bottleneck)
//	emulator's CPU at 1 Gbit/s        67-69% of a core   (with the kernel TCP work done in its sendto calls)
//	emulator's CPU idle               0 (no wakeups but for Stats requests)
//	TCP's least RTT at 50 ms          50.1-50.2 ms
//	ping at 20 ms / 100 ms            median 20.4-20.8 ms / 100-101 ms, never below
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
