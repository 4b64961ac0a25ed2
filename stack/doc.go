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
//	rcv.go       segment arrival (RFC 9293 section 3.10.7), RFC 5961 checks, PAWS, delayed ACKs
//	reassembly.go out-of-order data held in place in the receive ring; SACK/D-SACK blocks
//	snd.go       segment output, RTO, persist timer, sender/receiver silly window avoidance
//	sentq.go     the sent queue: a record per segment in flight with its send time and SACK/lost marks
//	rack.go      RACK (RFC 8985 section 6): loss detection by send time, reordering window and timer
//	recovery.go  loss recovery around it: SACK scoreboard, pipe, PRR (RFC 6937), tail loss probe
//	             (RFC 8985 section 7), undo; NewReno (RFC 6582) without SACK; limited transmit
//	cc.go        congestion control interface, NewReno; cubic.go CUBIC (RFC 9438);
//	             bbr.go BBR v1 (as Linux's tcp_bbr.c) on rate.go's delivery rate
//	             samples, paced by pacing.go
//	rtt.go       RTT estimation (RFC 6298) from send times; the minimum RTT filter
//	conn.go      the connection record and the application side
//	timewait.go  the compact TIME_WAIT table
//	timer.go     the per-shard timer heap
//	keepalive.go keepalive probes
//	buffer.go    pooled send/receive rings
//	neighbor.go  ARP, ICMP echo and path MTU
//	secondchance.go segments of connections other nodes hold, forwarded to them IP-in-IP (second chance)
//	counters.go  every drop and notable event, readable from other goroutines
//	trace.go     connection traces (segments, states, timers) for ladder diagrams
//
// Loss recovery is RACK-TLP (RFC 8985), as Linux's: each segment in flight
// is stamped with its send time on the engine's nanosecond clock, a segment
// sent before one since delivered and out longer than the RTT plus a
// reordering window (adapted from D-SACKs) is lost — first transmission or
// retransmission alike — and a tail loss probe makes the receiver show
// losses at the end of a flight. RTT samples come from the same send times
// (Karn-safe), so SRTT is exact to the microsecond on a LAN; the
// timestamp option serves PAWS and the peer.
//
// Timers: one binary heap per engine holds each connection once, under its
// earliest deadline. Deadlines that move later (the RTO restarted by every
// ACK) do not touch the heap; the entry fires early and is re-armed, so the
// per-segment cost does not grow with the number of connections.
package stack
