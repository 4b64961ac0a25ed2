// Package bench measures xdproxy's data path against the kernel's, side by
// side in one run. This package holds the micro-benchmarks, all in _test
// files; their raw pieces (test frames, sendmmsg, the tiny XDP programs,
// AF_XDP send and receive loops) are in bench/rawxsk, which the
// side-by-side harness (bench/cmd/sidebyside) also uses to measure the raw
// XSK frame rate of the lab's proxy veth. Nothing under bench is imported
// by the daemon.
//
// # The side-by-side harness (make bench)
//
// bench/cmd/sidebyside runs xdproxy, HAProxy, nginx, a Go proxy and the
// direct path in the lab (its package doc has the details). -shape picks
// the deployment shape of the lab's topology:
//
//   - one-armed (default): one proxy veth p0; clients and backends both
//     behind the router. Results: bench/results/latest.json, latest.md,
//     latency.svg.
//   - two-armed: front veth p0 towards the router, back veth p1 with the
//     backends on-link (-back-queues sets p1's queues; default -queues).
//     xdproxy's config lists both interfaces. The direct path is routed
//     through the proxy namespace's kernel (router → p0 → p1 → backends,
//     set up for that contender only), one forwarding hop more than
//     one-armed's. The raw XSK rate is measured on the front link.
//     Results: bench/results/latest-two-armed.json, latest-two-armed.md,
//     latency-two-armed.svg, beside the one-armed files.
//
// -workloads loss (`make bench-loss`) is a run of its own: 50 MiB
// downloads through xdproxy and kernel-to-kernel over the lab's WAN
// emulator on the client leg, at 0%, 1% and 3% loss each way and 1 and
// 50 ms RTT, with each side's retransmissions and RTOs. Results:
// bench/results/loss.json, loss.md.
//
// Every results file records its shape (latest*.json: settings.shape; the
// Markdown's heading). To compare the shapes, run both back to back with
// the same flags and compare within the session; the box's noise between
// sessions is larger than most differences.
//
// # Running
//
// As root (network namespaces, veth pairs, XDP, AF_XDP):
//
//	go test ./bench/ -run '^$' -bench . -benchtime 3s
//
// Add -count N for benchstat (the testing package runs each sub-benchmark's
// N rounds back to back, xsk×N then kernel×N, inside one lab; for rounds that
// alternate the two paths, repeat the whole command with -count 1). Without
// root every benchmark skips with the reason, except under CI=true, where
// that is a failure (lab.RequireRoot). Each benchmark builds its own lab
// (internal/lab) and removes it afterwards; traffic never leaves the lab's
// namespaces, and every run is bounded (b.N frames or round trips, a
// 60-second send limit, a 10-second stall limit per echo).
//
// # BenchmarkRawRX/{xsk,kernel}
//
// Frames per second received on the proxy end (dut/p0) of one veth pair. A
// sender in the peer namespace (gen/g0) blasts b.N 64-byte UDP frames with
// AF_PACKET sendmmsg, 64 frames per call, qdisc bypassed, refused calls
// retried. xsk: a redirect-all XDP program (bpf_redirect_map to the XSKMAP
// slot of the RX queue; attached for this sub-benchmark only) puts every
// frame into an AF_XDP socket (xsk.Socket, copy mode: veth has no
// zero-copy), drained 64 at a time with Receive/Frame/Recycle. kernel: no
// XDP program; a UDP socket drains the same frames with recvmmsg, 64 per
// call. Both receivers run on their own locked thread and spin for 50µs on
// an empty ring or socket before blocking (the shard loop's SpinLimit).
//
// Metrics: frames/s (test frames received, from the first send to the last
// frame received), sent-frames/s (frames the sender got accepted per second
// of sending), lost-% (accepted but never received), allocs/op (sender and
// receiver together; 0).
//
// On veth the receive path's kernel work (the peer's NAPI or backlog, XDP and
// the copy into the UMEM, or IP and UDP and the socket queue) runs in
// softirq on the sending CPU, so unless the receiver falls behind (lost-%)
// frames/s equals sent-frames/s and is the cost of the whole path per frame
// on one sending core: the AF_PACKET send itself (BenchmarkRawTX/afpacket)
// plus the receive path.
//
// # BenchmarkRawTX/{xsk,kernel,afpacket}
//
// Frames per second transmitted from dut/p0. The peer runs a count-and-drop
// XDP program, so the far side costs the same for every sender and counts
// what actually crossed the veth. xsk: NextFrame/Commit of a prebuilt
// frame, Flush every 64, completions reaped, until all b.N are completed.
// kernel: a connected UDP socket, sendmmsg of 64 datagrams (the same
// 64-byte frames on the wire). afpacket: an AF_PACKET socket, qdisc
// bypassed, sendmmsg of 64 prebuilt frames.
//
// Metrics: frames/s (frames counted at the peer per second of sending),
// sent-frames/s (accepted by the sending API), lost-% (accepted but never
// seen by the peer; a UDP socket without IP_RECVERR hides ENOBUFS), allocs/op.
//
// # BenchmarkEchoRR/conns={1,16}/{engine,kernel}
//
// Request/response over kept-alive TCP connections. The client is the
// Linux kernel's TCP (Go's net package) in namespace cli; the echo server
// is in prx. engine: xdproxy's engine on AF_XDP (proxy.StartDataplane on
// prx/p0, one queue and shard, an echo handler on the engine). kernel: a Go
// echo server on kernel sockets behind a second, identical veth pair
// (prx/p1, no XDP), so the kernel path runs without any XDP program on its
// interface. Both links have TX checksum offload off, as xdproxy needs. An
// op is one round trip: write a 64-byte message, read the echo in full, and
// compare it byte for byte. conns=1 runs b.N round trips on one connection;
// conns=16 spreads them over sixteen connections doing ping-pong at once.
// The connections are dialed once per benchmark and kept alive.
//
// Metrics: rr/s (round trips per second, all connections together), p50-µs
// and p99-µs (percentiles of per-op round-trip times; every op is timed and
// up to 2^18 per run are kept, evenly strided, then sorted), allocs/op
// (client, kernel server and engine shard together, all in this process).
//
// # Reading the numbers
//
// The client, the servers, the sender and the receivers share the machine
// with the kernel work they cause; on a small or shared machine (the
// project's reference box has two vCPUs) the ratios between paths mean more
// than the absolute rates, and medians of several runs (-count) more than
// one run. The engine's shard busy-polls for 5µs (the default SpinLimit)
// after its last work and then sleeps in poll; a ping-pong whose round
// trip is longer than that pays a wake-up, which shows in p50 and p99.
package bench
