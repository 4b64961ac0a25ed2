// Package dataplane is xdproxy's data plane: the XDP program on every
// configured interface, one shard per queue index, and what ties them to
// the kernel.
//
// # Shards across interfaces
//
// Shard i owns the i-th queue of every interface: one AF_XDP socket per
// (interface, queue), one TCP engine (stack.Engine) that knows all the
// interfaces, and the application on top, driven by one goroutine locked
// to its OS thread. A session whose client leg arrives on the front NIC and
// whose backend leg leaves by the back NIC therefore lives in one goroutine,
// with no lock between its legs. With interfaces of different queue counts
// there are as many shards as the largest count; a shard without a queue on
// some interface sends there through a TX hand-off ring to the shard that
// has one (Start's doc).
//
// Flows belong to shards as before: a backend leg's return traffic to the
// shard that chose its source port (port mod shards), a client flow to the
// queue RSS put it on. On veth, whose queue is the sender's pick (its
// socket's hash, redrawn on an RTO, or its CPU under XPS), a client flow
// belongs to the shard whose engine holds it — the one that answered its
// SYN — found in a table the engines keep through stack.FlowObserver
// (Dataplane.owner). A frame that lands elsewhere is copied to its owner
// through a lock-free single-producer/single-consumer ring, counted.
//
// # Routes, neighbours, addresses
//
// Every leg leaves by the interface, next hop and source address that the
// kernel's main routing table names for its destination: the engines hold
// a copy of the routes through the configured interfaces, reloaded when the
// kernel announces a change (netlink), and of the neighbour table, updated
// live. A next hop the engine does not know is resolved by the kernel when
// the leg's source is a kernel address (NTF_USE), so the answer reaches the
// kernel that asked; the engine sends its own ARP request or neighbour
// solicitation only from addresses the kernel does not have. Nothing
// depends on arp_accept or accept_untracked_na.
//
// Backend legs are dialed from the listener's source, else from the routed
// interface's first IPv4 or first global IPv6 address (the route's
// preferred source when it is one of those). Listener addresses are
// steered on every interface; the kernel answers ARP/NDP for the ones it
// has, the engine for the others.
//
// # Virtual interfaces
//
// On veth (and macvlan, ipvlan, netkit) the frames come from the same
// host's kernels; one whose TX checksum offload is on (Linux's default)
// leaves TCP checksums partial. The engine accepts such a segment there
// when its checksum field is exactly the pseudo-header sum, counted as
// rx_partial_checksum; on a physical NIC the check stays strict. When bad
// checksums dominate an interface's traffic the data plane logs what is
// likely wrong, at most once every ten minutes.
//
// # SYN floods
//
// The XDP programs answer SYN floods with the engines' own SYN cookies
// (cookies.go, bpf/syncookie.h): always, or under SYN pressure with
// tcp.syn_cookies auto, so that a flood never reaches the shards. The data
// plane gives the programs the engines' keys and parameters, rotates their
// secrets with the engines' epochs, switches them on and off from the
// engines' counters, and turns them off for the run if the kernel refuses
// their XDP_TX (veth in native mode without NAPI on the peer; ethtool.go).
//
// # Second chance
//
// With peers (Config.Engine.SecondChance, the configuration's
// bgp.second_chance), every interface's XDP program decapsulates what the
// peers forward (IP in IP from a peer's address, inner TCP to a listener)
// and marks it for the engine, and the engines forward to the peers, by
// the kernel's route to each, the segments of connections they do not
// hold (stack/secondchance.go). The forwarded frames leave through the
// AF_XDP sockets like any other; the decapsulated ones reach the owning
// shard by the usual hand-off, so nothing else in the data plane knows of
// them. The owner answers the client directly (direct server return).
//
// # Packet capture
//
// StartCapture taps the frames the shards take off their AF_XDP sockets and
// put on them (capture.go): a filter on the raw frame, a bounded ring per
// shard, frames dropped from the capture (counted) rather than from
// traffic when a ring is full. Off, it costs a pointer load and a test per
// RX batch and per loop round.
package dataplane
