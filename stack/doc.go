// Package stack is xdproxy's TCP/IP engine: a deterministic, single-threaded
// state machine. One Engine is one shard. Frames and the current time go in
// (HandleFrame, Tick); frames come out through the injected Sink, and the
// engine says when it next wants to be called (NextDeadline). Nothing in here
// reads the clock, starts a goroutine, takes a lock or does I/O; randomness
// (ISN and cookie secrets) comes from the injected Rand. That is what lets the
// tests drive it to the exact segment.
//
// Layout, one concern per file, named as the RFCs name things:
//
//	wire/        packet views: Ethernet, ARP, IPv4/IPv6, ICMP, TCP + options, checksums
//	seqnum/      sequence-number arithmetic
//	engine.go    demultiplexing: frame → listener / connection / TIME_WAIT entry / RST
//	listen.go    listeners, the SYN queue and the accept queue
//	syncookie.go SYN cookies
//	isn.go       initial sequence numbers (RFC 6528)
//	rcv.go       segment arrival (RFC 9293 section 3.10.7), RFC 5961 checks
//	snd.go       segment output
//	conn.go      the connection record and the application side
//	timewait.go  the compact TIME_WAIT table
//	timer.go     the per-shard timer heap
//	keepalive.go keepalive probes
//	buffer.go    pooled send/receive rings
//	neighbor.go  ARP, ICMP echo and path MTU
//	counters.go  every drop and notable event, readable from other goroutines
//
// Retransmission here is the simple part: an RTO with exponential backoff that
// resends from SND.UNA (SYN, SYN-ACK, data and FIN alike). RTT estimation,
// fast retransmit, SACK recovery, congestion control, out-of-order reassembly
// and delayed ACKs plug into snd.go/rcv.go (see the TODO markers named "part 2").
package stack
