// Package xsk holds xdproxy's AF_XDP sockets: one Socket per (interface,
// queue), each with its own UMEM, fill, completion, RX and TX rings, and an
// O(1) frame allocator. It does not parse packets and never panics.
//
// # Use
//
// A shard owns one Socket (no locks: it is not safe for concurrent use):
//
//	s, err := xsk.Open(ifindex, queue, xsk.Config{}) // 4096 × 2 KiB frames, 2048-entry rings
//	// put s.FD() into the XDP program's XSKMAP at key queue
//	n := s.Receive(descs)        // batch of received frames
//	frame := s.Frame(descs[i])   // their bytes, in place
//	s.Recycle(descs[:n])         // back to the fill ring once copied
//	buf := s.NextFrame()         // a free frame to transmit from ...
//	s.Commit(len)                // ... queued (NextFrame/Commit is stack.Sink)
//	s.Flush()                    // publish TX, sendto only if the kernel asks
//	s.Complete()                 // transmitted frames back to the free list
//	if s.RefillNeedsWakeup() { s.Poll(timeout) }
//
// Half the frames (at most FillSize) start on the fill ring and stay on the
// RX side: Recycle returns them to the fill ring. The other half start on
// the TX free list and come back to it through the completion ring. Every
// frame has a recorded owner, so a frame recycled twice or a descriptor
// that was never ours is counted (Stats.BadDescs) and refused instead of
// being handed to the kernel twice.
//
// # Files
//
// One file per ring, after gVisor's pkg/xdp: fillring.go, rxring.go,
// txring.go, completionring.go over the shared header in ring.go; umem.go
// (frames, free list, owners); socket.go (Open, bind, Close); rx.go and
// tx.go (the hot paths); poll.go (need_wakeup, Poll, Wakeup); stats.go;
// sys.go (the raw SOL_XDP calls x/sys/unix has no helper for); multibuf.go
// (packets larger than a frame).
//
// # Multi-buffer (jumbo frames)
//
// A frame is at most a page (aligned mode), so a link whose MTU needs more
// (9000 on a NIC) sets Config.MaxPacket above FrameSize: the socket binds
// with XDP_USE_SG (Linux 6.6+; EINVAL before, EOPNOTSUPP from a zero-copy
// driver without it, and the bind error says so) and a packet travels as a
// chain of descriptors with XDP_PKT_CONTD on all but the last, on RX and
// TX. The API stays one contiguous frame per packet: Receive gathers a
// chain into a per-socket scratch slot (one copy, only for packets that
// span frames; the chain's frames go back to the fill ring at once), and
// NextFrame hands out a MaxPacket-sized scratch buffer that Commit splits
// into a chain. Chains too long, or never ended, are dropped and counted
// (Stats.RxChainDrops). Measured on the fake rings (no kernel), 9000-byte
// packets in three 4096-byte frames, 0 allocs:
//
//	go test ./xsk/ -run '^$' -bench MultiBuffer -benchmem
//
//	BenchmarkMultiBufferRX   280 ns/packet (32 GB/s): Receive, gather, Recycle
//	BenchmarkMultiBufferTX   556 ns/packet (16 GB/s): NextFrame, Commit (split), Flush, Complete
//
// # Rings
//
// Producer and consumer indices are free-running uint32s shared with the
// kernel; a slot is index&mask (sizes are powers of two), and
// producer-consumer counts entries across the 2^32 wrap (tested from
// starting indices just below 2^32 in ordinary memory). Each side keeps
// cached copies and touches the shared words with sync/atomic once per
// batch: Receive does at most one atomic load of the RX producer and one
// store of the RX consumer however many frames it takes, Recycle one store
// of the fill producer, Flush one store of the TX producer. Go's atomics
// are sequentially consistent, which covers the acquire/release pairing
// the kernel uses on its side.
//
// With need_wakeup (the default) Flush calls sendto(MSG_DONTWAIT) only
// while the TX ring's need-wakeup flag is set: always in copy mode, only
// when the driver went idle in zero-copy mode. EAGAIN, EBUSY and ENOBUFS are
// back-pressure (counted, nil); other errnos, ENETDOWN among them, come
// back as a *KickError that is never fatal. In copy mode the kernel sends at
// most 32 frames per sendto unless the socket raises that budget
// (XDP_MAX_TX_SKB_BUDGET, Linux 6.17 and later), which Open does to the TX
// ring's size, so that a batch is one kernel entry (TxBudget says which);
// Flush keeps kicking while it makes progress, so the ring drains in one
// Flush either way.
//
// Veth has no zero-copy: ZeroCopyOn fails there with EOPNOTSUPP, and
// ZeroCopyAuto binds again in copy mode (a failed bind leaves the socket
// unbound with its UMEM and rings, so the same socket is reused).
//
// # asavie/xdp v0.3.3: what it is used for, what was replaced, and why
//
// xdproxy was asked to use github.com/asavie/xdp. Its source (xdp.go,
// program.go) was read and measured; every limit below was confirmed, and
// the socket, rings and allocator here replace it. asavie/xdp is imported
// only by this package's benchmarks, as the baseline they measure against;
// its NewProgram does load under cilium/ebpf v0.22, but the XDP program
// and its attachment belong to package bpf (and asavie's Attach/Detach go
// through netlink with a one-second sleep loop). Its flags are mutable
// package globals (DefaultSocketFlags, DefaultXdpFlags), so there were no
// constants worth taking over: they come from golang.org/x/sys/unix.
//
//   - Ring indices are plain loads and stores (*ring.Producer = prod; the
//     fences are commented out: //fencer.SFence()). The Go memory model
//     orders nothing between those and the kernel: a descriptor written
//     before the producer store may become visible after it on a weakly
//     ordered CPU (arm64), and the compiler may keep a polled index in a
//     register. Replaced by atomic loads/stores with cached copies.
//   - Transmit panics on any sendto errno other than EINTR, EAGAIN and
//     EBUSY: ENETDOWN when the link goes down, ENOBUFS, ENXIO would kill
//     the daemon. Flush counts back-pressure and returns *KickError.
//   - GetDescs scans a []bool of all frames from frame 0 on every call.
//     BenchmarkAlloc at 4096 frames, half on the fill ring: GetDescs(1)
//     1132 ns and GetDescs(64) 1227 ns per call, against 1.2 ns for one pop
//     and push of our free list and 127 ns for 64 (0 allocs either way).
//     Worse for a one-frame-at-a-time sink: GetDescs does not reserve what
//     it returns (only Transmit and Fill mark frames used), so the next call
//     returns the same frame, and stack.Sink's NextFrame/Commit can only be
//     built on it with one Transmit, hence one sendto, per frame: 0.36 M
//     frames/s on veth against 1.10 M for our NextFrame/Commit/Flush.
//   - No need_wakeup: it binds without XDP_USE_NEED_WAKEUP, cannot read
//     the ring flags, and every Transmit calls sendto even when a zero-copy
//     driver is already polling the ring.
//   - Found while measuring: Close never unmaps the four rings, and a
//     mapping holds the socket's file, so the kernel never releases the
//     socket: the queue stays bound for the life of the process (still
//     EBUSY 2 s after Close; ours is free again about 20 ms after Close),
//     and each socket leaks four mappings.
//   - Receive marks frames free as soon as it returns them, while the
//     caller is still reading them, so a GetDescs for TX can hand out the
//     same frame; and since RX and TX share one pool, refilling the fill
//     ring pulls the TX frames into it.
//
// Measured (2-vCPU AMD EPYC shared with other jobs, Linux 6.18, veth in copy
// mode, 4096 frames, 2048-entry rings, batches of 64; medians of 9 rounds
// that alternate which library goes first):
//
//	go test ./xsk/ -run '^$' -bench AsavieVsXSK -benchtime 9x
//
//	                                     xsk        asavie/xdp
//	rx, streamed (frames/s)              0.55 M     0.52 M     kernel-bound: the generator's
//	rx drops per 200k (fill ring empty)  16.9 k     22.2 k       copy-mode path runs ~1 µs/frame
//	rx drain, userspace only (ns/frame)  5.8        7.8        2000 frames waiting in the ring
//	tx, batches of 64 (frames/s)         1.10 M     1.15 M     sendto-bound; rounds spread 1.0–1.35 M
//	tx, one frame at a time (frames/s)   1.10 M     0.36 M     the stack.Sink pattern
//
//	go test ./xsk/ -run '^$' -bench 'Alloc|ReceiveRecycle|VethRX|VethTX' -benchmem
//
//	BenchmarkReceiveRecycle   6.5 ns/frame, 0 allocs (fake kernel: Receive+Frame+Recycle)
//	BenchmarkVethRX           0.88 M frames/s, 0 allocs/op (generator and receiver)
//	BenchmarkVethTX           1.32 M frames/s, 0 allocs/op
//
// In copy mode on veth the kernel's own per-frame work (an skb, a copy, the
// veth hop) is most of the cost, so the streamed RX and batched TX rates do
// not separate the two libraries beyond the noise of a shared machine; the
// allocator, the per-frame sink and the drain numbers are the userspace
// difference, which is what remains at zero-copy NIC rates. The decision
// rests on correctness first (ordering, panics, the leaked binding, the
// early-freed frames) and on the allocator second.
package xsk
