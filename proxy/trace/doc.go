// Package trace turns the engine's connection traces (stack.ConnTrace) into
// what an operator reads: session traces that hold both legs of a proxied
// session, the filters that choose them, the hub that carries them from
// the shards to readers, and the renderers — a text ladder with three
// columns (client | xdproxy | backend) and JSON.
//
// Why a package of its own: the proxy fills session traces on its shards,
// the admin server (which never imports the proxy) filters and renders
// them, and the demo and tests render them too. The shared part — types,
// filter parsing with errors that name the parameter, rendering — sits
// here, below both, and holds no shard logic: the proxy decides which
// connections are traced (proxy/trace.go), the engine records them
// (stack/trace.go).
//
// Crossing goroutines: a shard hands a finished session trace to a Watch
// with a non-blocking send on a bounded channel; when the reader is slow
// the trace is dropped and counted (Watch.Dropped), never waited for. The
// engine writes a trace only until it is Done, and a session trace is
// delivered only once all its legs are: after the send, the reader owns it.
//
// The ladder. Each row is one event, in the order the engine saw them
// (both legs of a session live in one shard, so that order is exact).
// Sequence and acknowledgement numbers are relative to each side's initial
// sequence number (the SYN's seq is 0, the first data byte 1); windows are
// in bytes as the sender meant them (scaled, except in a SYN); options are
// shown in SYNs (mss, ws, sack-ok, ts) and as SACK blocks (relative) where
// they appear. xdproxy's own states, the client leg's and the backend leg's,
// are written beside its lifeline when they change, as recorded; the
// client's and the backend's states are inferred from the segments (the
// state a textbook peer enters on sending or receiving each one), so they
// assume that what was sent arrived. Timers that fired are notes on their
// leg. The text has no times (the JSON has them, in nanoseconds since the
// session's first event), so the same exchange renders the same text.
package trace
