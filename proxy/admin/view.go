package admin

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/xdproxy/xdproxy/bpf"
	"github.com/xdproxy/xdproxy/proxy/balance"
	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/xsk"
)

// Source is what the admin server reports on: the proxy (*proxy.Proxy
// implements it), or a fake with canned views in tests.
//
// Everything that is an atomic (listener, backend, shard-loop and engine
// counters, the engines' per-state gauges) is read straight from the
// scraping goroutine. What is not safe to touch from another goroutine (the
// engine's connection table, the TIME_WAIT table, the AF_XDP socket's own
// counters) is read by a function the shard runs between two batches, once
// per scrape: nothing is added to the per-packet path.
type Source interface {
	// Draining reports whether the proxy has begun to drain.
	Draining() bool
	// Listeners reports every listener's counters and backends, in
	// configuration order.
	Listeners() []ListenerView
	// View gathers the state of every interface and every shard. It
	// returns what it has when ctx ends: a shard that did not answer in
	// time has Answered false.
	View(ctx context.Context, q ConnQuery) PlaneView
	// SetBackend changes the run-time setting of a backend of a listener
	// (the fields of change that are nil stay as they are), logs the
	// change, and returns the backend as it is after it. Its errors wrap
	// ErrUnknownListener, ErrUnknownBackend or ErrInvalidChange.
	SetBackend(listener string, backend netip.AddrPort, change BackendChange) (BackendView, error)
}

// BackendChange is a change of a backend's run-time setting (the runtime
// API's POST /backends/LISTENER/BACKEND).
type BackendChange struct {
	State  *balance.State // nil: unchanged
	Weight *int           // nil: unchanged; 0 to balance.MaxWeight
	Origin string         // who asks, for the log ("admin 10.0.0.5:40112")
}

// Errors of Source.SetBackend, which the runtime API answers with 404
// (unknown listener or backend) or 400 (invalid change).
var (
	ErrUnknownListener = errors.New("unknown listener")
	ErrUnknownBackend  = errors.New("unknown backend")
	ErrInvalidChange   = errors.New("invalid change")
)

// ListenerView is one listener's counters at one moment, summed over shards.
type ListenerView struct {
	Name            string
	Accepted        uint64 // client connections taken into a session
	Refused         uint64 // reset at once: max_connections reached, or draining
	NoBackend       uint64 // reset at once: every backend down
	ConnectFailed   uint64 // backend refused or unreachable: client reset
	ConnectTimeouts uint64 // backend did not answer within connect_timeout: client reset
	IdleTimeouts    uint64 // both legs reset after idle_timeout
	ClientTimeouts  uint64 // both legs reset: the client took nothing of its response for client_timeout
	MemoryResets    uint64 // both legs reset: the engine freed the session's buffers at its memory high mark
	ClientResets    uint64 // the client reset (or timed out): backend leg reset
	BackendResets   uint64 // the backend reset (or timed out): client leg reset
	Completed       uint64 // sessions closed by FINs both ways
	BytesIn         uint64 // client → backend
	BytesOut        uint64 // backend → client
	Active          int64  // open sessions
	Balance         string // round_robin | least_conn | maglev
	Backends        []BackendView
}

// BackendView is one backend of a listener at one moment.
type BackendView struct {
	Addr     netip.AddrPort
	Up       bool   // healthy (by its checks; always without them)
	Active   int64  // open sessions to it
	Sessions uint64 // sessions sent to it
	Failures uint64 // connect failures and timeouts

	// The run-time setting: the backend takes new sessions when Up, State
	// is ready and Weight is positive.
	State            balance.State
	Weight           int // current
	ConfiguredWeight int // as in the configuration

	Checked                bool   // the listener has active health checks
	ChecksOK, ChecksFailed uint64 // their results so far
}

// ConnQuery says what a view walks on each shard.
type ConnQuery struct {
	Counts    bool                 // count connections by listener, leg and state (metrics)
	List      bool                 // list connections (/connections)
	TimeWaits bool                 // with List: the TIME_WAIT entries too
	States    map[stack.State]bool // with List: only these states (nil: all)
	Listener  string               // with List: only this listener's legs ("": all)
	Limit     int                  // with List: at most this many entries per shard (0: no limit)
}

// Wants reports whether q lists a connection in state st of listener.
func (q *ConnQuery) Wants(st stack.State, listener string) bool {
	return q.List && (q.States == nil || q.States[st]) && (q.Listener == "" || q.Listener == listener)
}

// PlaneView is the data plane at one moment: every interface, every shard.
type PlaneView struct {
	Ifaces      []IfaceView
	Shards      []ShardView
	MemoryLimit int64 // the engines' budget (tcp.memory_limit), 0 for none
	// XDPSYNCookies: the XDP programs answer SYNs now (tcp.syn_cookies
	// always, or auto under SYN pressure).
	XDPSYNCookies bool
}

// MemoryView is one engine's memory at one moment (stack.MemoryStats).
type MemoryView struct {
	Bytes [stack.NumMemoryKinds]int64
	Share int64 // the engine's share of the budget
	Level stack.MemoryLevel
}

// IfaceView is one interface at one moment.
type IfaceView struct {
	Name   string
	XDP    []bpf.Counter // the XDP program's counters (nil when XDPErr)
	XDPErr error
	// Summed over the shards' engines (atomics).
	RxFrames, ChecksumDrops, PartialChecksums uint64
	Queues                                    []QueueView // one per shard with a socket on it
}

// QueueView is one AF_XDP socket: a shard's queue of an interface.
type QueueView struct {
	Shard, Queue int
	Answered     bool // read on the shard in time: XSK and XSKErr are current
	XSK          xsk.Stats
	XSKErr       error
}

// ShardView is one shard at one moment.
type ShardView struct {
	ID int

	// Read from atomics: always valid.
	Counters [stack.NumCounters]uint64
	States   [stack.NumStates]int64
	Loop     LoopStats
	Memory   MemoryView

	// Read on the shard: valid when Answered.
	Answered bool
	XSK      []QueueView // per interface (Queue -1: no socket there)
	Conns    EngineView
}

// LoopStats are the shard loop's counters (the data plane's ShardStats).
type LoopStats struct {
	RxFrames, HandoffsOut, HandoffsIn, HandoffDrops uint64
	Sleeps, Wakeups, FlushErrors, CtlDrops          uint64
	TxHandoffs, TxHandoffDrops                      uint64
}

// ConnGroup is one xdproxy_connections series.
type ConnGroup struct {
	Listener, Leg string
	State         stack.State
}

// EngineView is what a walk of one shard's connections found.
type EngineView struct {
	Counts    map[ConnGroup]int
	List      []ConnEntry
	Truncated bool // List stopped at the limit
}

// Full reports whether the listing has reached q's limit (and notes it).
func (v *EngineView) Full(q ConnQuery) bool {
	if q.Limit > 0 && len(v.List) >= q.Limit {
		v.Truncated = true
		return true
	}
	return false
}

// ConnEntry is one connection (or TIME_WAIT entry) of /connections.
type ConnEntry struct {
	Interface     string
	Shard, Queue  int
	State         stack.State
	Local, Remote netip.AddrPort
	Listener, Leg string // "" when not known
	Kernel        bool   // an OS socket (a backend leg of a dial: kernel listener)

	// Meaningful for ESTABLISHED connections.
	SRTT              time.Duration
	Cwnd              int
	BytesIn, BytesOut uint64

	// TCP is what `xdproxy ss` shows of a connection's TCP state (nil for
	// TIME_WAIT entries); Other is the session's other leg, "local->remote".
	TCP   *TCPDetail
	Other string
}

// TCPDetail is a connection's TCP state as ss -tni shows the kernel's.
type TCPDetail struct {
	RTTVar, RTO            time.Duration
	MSS, Ssthresh          int
	Retransmits            uint64
	Congestion             string        // the congestion control ("" unknown)
	PacingRate             float64       // bytes/s (0: not paced)
	DeliveryRate           float64       // bytes/s (0: no estimate)
	MinRTT                 time.Duration // 0: unknown
	SendQueue, RecvQueue   int           // bytes not yet acknowledged or sent; received, not yet read
	SendWindow, RecvWindow uint32        // the peer's window; ours as advertised
}

// Legs: what a connection is to the proxy (the leg label of
// xdproxy_connections and /connections).
const (
	LegClient  = "client"       // a client's connection to a listener
	LegBackend = "backend"      // the proxy's connection to a backend
	LegHealth  = "health_check" // an active health check
	LegOther   = "other"
)
