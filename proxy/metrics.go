package proxy

import (
	"context"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/bpf"
	"github.com/xdproxy/xdproxy/proxy/balance"
	"github.com/xdproxy/xdproxy/proxy/dataplane"
	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/xsk"
)

// The admin server reads the proxy through adminSource, which *Proxy
// implements; tests substitute a fake with canned views.
//
// Everything that is an atomic (listener, backend, shard-loop and engine
// counters, the engines' per-state gauges) is read straight from the
// scraping goroutine. What is not safe to touch from another goroutine (the
// engine's connection table, the TIME_WAIT table, the AF_XDP socket's own
// counters) is read by a function the shard runs between two batches
// (Shard.Do), once per scrape: nothing is added to the per-packet path.
type adminSource interface {
	Listeners() []*Listener
	Draining() bool
	// view gathers the state of every interface and every shard. It
	// returns what it has when ctx ends: a shard that did not answer in
	// time has Answered false.
	view(ctx context.Context, q connQuery) planeView
}

// connQuery says what a view walks on each shard.
type connQuery struct {
	counts    bool                 // count connections by listener, leg and state (metrics)
	list      bool                 // list connections (/connections)
	timeWaits bool                 // with list: the TIME_WAIT entries too
	states    map[stack.State]bool // with list: only these states (nil: all)
	listener  string               // with list: only this listener's legs ("": all)
	limit     int                  // with list: at most this many entries per shard (0: no limit)
}

// planeView is the data plane at one moment: every interface, every shard.
type planeView struct {
	Ifaces []ifaceView
	Shards []shardView
}

// ifaceView is one interface at one moment.
type ifaceView struct {
	Name   string
	XDP    []bpf.Counter // the XDP program's counters (nil when XDPErr)
	XDPErr error
	// Summed over the shards' engines (atomics).
	RxFrames, ChecksumDrops, PartialChecksums uint64
	Queues                                    []queueView // one per shard with a socket on it
}

// queueView is one AF_XDP socket: a shard's queue of an interface.
type queueView struct {
	Shard, Queue int
	Answered     bool // read on the shard in time: XSK and XSKErr are current
	XSK          xsk.Stats
	XSKErr       error
}

// shardView is one shard at one moment.
type shardView struct {
	ID int

	// Read from atomics: always valid.
	Counters [stack.NumCounters]uint64
	States   [stack.NumStates]int64
	Loop     loopStats

	// Read on the shard: valid when Answered.
	Answered bool
	XSK      []queueView // per interface (Queue -1: no socket there)
	Conns    engineView
}

// loopStats is a copy of dataplane.ShardStats.
type loopStats struct {
	RxFrames, HandoffsOut, HandoffsIn, HandoffDrops uint64
	Sleeps, Wakeups, FlushErrors, CtlDrops          uint64
	TxHandoffs, TxHandoffDrops                      uint64
}

func loadLoop(s *dataplane.ShardStats) loopStats {
	return loopStats{
		RxFrames: s.RxFrames.Load(), HandoffsOut: s.HandoffsOut.Load(),
		HandoffsIn: s.HandoffsIn.Load(), HandoffDrops: s.HandoffDrops.Load(),
		Sleeps: s.Sleeps.Load(), Wakeups: s.Wakeups.Load(),
		FlushErrors: s.FlushErrors.Load(), CtlDrops: s.CtlDrops.Load(),
		TxHandoffs: s.TxHandoffs.Load(), TxHandoffDrops: s.TxHandoffDrops.Load(),
	}
}

// connGroup is one xdproxy_connections series.
type connGroup struct {
	listener, leg string
	state         stack.State
}

// engineView is what a walk of one engine's tables found.
type engineView struct {
	counts    map[connGroup]int
	list      []connEntry
	truncated bool // list stopped at the limit
}

// connEntry is one connection (or TIME_WAIT entry) of /connections.
type connEntry struct {
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
}

// Legs: what a connection of the engine is to the proxy.
const (
	legClient  = "client"       // a client's connection to a listener
	legBackend = "backend"      // the proxy's connection to a backend
	legHealth  = "health_check" // an active health check
	legOther   = "other"
)

// connOwner names the listener and leg of an engine connection. It reads
// the connection's User, so it runs on the shard only.
func connOwner(c *stack.Conn) (listener, leg string) {
	switch u := c.User.(type) {
	case *session:
		name := u.sl.l.Spec.Name
		if u.client == c {
			return name, legClient
		}
		return name, legBackend
	case *balance.Probe:
		return u.Listener(), legHealth
	}
	return "", legOther
}

// twOwners attributes TIME_WAIT entries, which keep only their 4-tuple: a
// local address that is a listener's is that listener's client leg; a
// remote address that is a backend of exactly one listener is that
// listener's backend leg.
type twOwners struct {
	listeners map[netip.AddrPort]string
	backends  map[netip.AddrPort]string // "" when several listeners share the backend
}

func newTWOwners(ls []*Listener) *twOwners {
	o := &twOwners{listeners: map[netip.AddrPort]string{}, backends: map[netip.AddrPort]string{}}
	for _, l := range ls {
		o.listeners[l.Spec.Addr] = l.Spec.Name
		for _, b := range l.Backends {
			if name, seen := o.backends[b.Spec.Addr]; seen && name != l.Spec.Name {
				o.backends[b.Spec.Addr] = ""
			} else {
				o.backends[b.Spec.Addr] = l.Spec.Name
			}
		}
	}
	return o
}

func (o *twOwners) owner(k stack.FlowKey) (listener, leg string) {
	if o == nil {
		return "", ""
	}
	if name, ok := o.listeners[k.Local()]; ok {
		return name, legClient
	}
	if name, ok := o.backends[k.Remote()]; ok && name != "" {
		return name, legBackend
	}
	return "", ""
}

// full reports whether the listing has reached q's limit (and notes it).
func (v *engineView) full(q connQuery) bool {
	if q.limit > 0 && len(v.list) >= q.limit {
		v.truncated = true
		return true
	}
	return false
}

// wants reports whether q lists a connection in state st of listener.
func (q *connQuery) wants(st stack.State, listener string) bool {
	return q.list && (q.states == nil || q.states[st]) && (q.listener == "" || q.listener == listener)
}

// walkEngine reads e's connection table (and TIME_WAIT table) as q asks.
// It must run on the engine's goroutine.
func walkEngine(e *stack.Engine, q connQuery, tw *twOwners, ifName func(int) (string, int)) engineView {
	var v engineView
	if q.counts {
		v.counts = map[connGroup]int{}
	}
	if q.counts || q.list {
		e.Conns(func(c *stack.Conn) bool {
			listener, leg := connOwner(c)
			st := c.State()
			if q.counts {
				v.counts[connGroup{listener, leg, st}]++
			}
			if !q.wants(st, listener) {
				return true
			}
			if v.full(q) {
				return q.counts // keep counting; stop listing
			}
			in := c.Info()
			ifn, queue := ifName(c.Interface())
			ce := connEntry{
				Interface: ifn, Queue: queue,
				State: st, Local: in.Key.Local(), Remote: in.Key.Remote(),
				Listener: listener, Leg: leg,
				SRTT: in.SRTT, Cwnd: in.Cwnd, BytesIn: in.BytesIn, BytesOut: in.BytesOut,
			}
			if leg == legOther {
				ce.Leg = ""
			}
			v.list = append(v.list, ce)
			return true
		})
	}
	if q.timeWaits && q.wants(stack.TimeWait, q.listener) && !v.full(q) {
		e.TimeWaits(func(k stack.FlowKey, ifx int) bool {
			listener, leg := tw.owner(k)
			if q.listener != "" && q.listener != listener {
				return true
			}
			if v.full(q) {
				return false
			}
			ifn, queue := ifName(ifx)
			v.list = append(v.list, connEntry{Interface: ifn, Queue: queue, State: stack.TimeWait, Local: k.Local(), Remote: k.Remote(), Listener: listener, Leg: leg})
			return true
		})
	}
	return v
}

// walkKernelLegs adds the backend legs of dial: kernel listeners (OS
// sockets the shard owns) to v, read with getsockopt(TCP_INFO): one system
// call per leg and scrape. It must run on the shard.
func walkKernelLegs(a *shardApp, q connQuery, v *engineView) {
	if a == nil || !(q.counts || q.list) {
		return
	}
	if q.counts && v.counts == nil {
		v.counts = map[connGroup]int{}
	}
	for _, k := range a.kernelLegs {
		if k.closed {
			continue
		}
		ti, err := unix.GetsockoptTCPInfo(k.fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			continue
		}
		listener := ""
		var backend netip.AddrPort
		if s := k.sess; s != nil {
			if s.sl != nil {
				listener = s.sl.l.Spec.Name
			}
			if s.backend != nil {
				backend = s.backend.Spec.Addr
			}
		}
		st := kernelTCPState(ti.State)
		if q.counts {
			v.counts[connGroup{listener, legBackend, st}]++
		}
		if !q.wants(st, listener) || v.full(q) {
			continue
		}
		ce := connEntry{
			State: st, Local: sockAddrPort(unix.Getsockname(k.fd)), Remote: backend,
			Listener: listener, Leg: legBackend, Kernel: true,
			SRTT: time.Duration(ti.Rtt) * time.Microsecond, Cwnd: int(ti.Snd_cwnd) * int(ti.Snd_mss),
			BytesIn: ti.Bytes_received, BytesOut: ti.Bytes_sent - ti.Bytes_retrans,
		}
		if r := sockAddrPort(unix.Getpeername(k.fd)); r.IsValid() {
			ce.Remote = r
		}
		v.list = append(v.list, ce)
	}
}

// kernelTCPState maps Linux's TCP states (include/net/tcp_states.h) to the engine's.
func kernelTCPState(s uint8) stack.State {
	switch s {
	case 1:
		return stack.Established
	case 2:
		return stack.SynSent
	case 3:
		return stack.SynReceived
	case 4:
		return stack.FinWait1
	case 5:
		return stack.FinWait2
	case 6:
		return stack.TimeWait
	case 8:
		return stack.CloseWait
	case 9:
		return stack.LastAck
	case 10:
		return stack.Listen
	case 11:
		return stack.Closing
	}
	return stack.Closed
}

func sockAddrPort(sa unix.Sockaddr, err error) netip.AddrPort {
	if err != nil {
		return netip.AddrPort{}
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// view implements adminSource.
func (p *Proxy) view(ctx context.Context, q connQuery) planeView {
	var out planeView
	dp := p.dp
	if dp == nil {
		return out
	}
	var tw *twOwners
	if q.list && q.timeWaits {
		tw = newTWOwners(p.listeners)
	}
	shards := dp.Shards()
	out.Shards = make([]shardView, len(shards))
	var wg sync.WaitGroup
	for i, sh := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out.Shards[i] = viewShard(ctx, sh, q, tw)
		}()
	}
	for _, f := range dp.Interfaces() {
		iv := ifaceView{Name: f.Name()}
		if prog := f.Program(); prog != nil {
			if c, err := prog.Counters(); err != nil {
				iv.XDPErr = err
			} else {
				iv.XDP = c.List()
			}
		}
		for _, sh := range shards {
			if e := sh.Engine(); e != nil {
				st := e.IfaceStats(f.Index())
				iv.RxFrames += st.RxFrames.Load()
				iv.ChecksumDrops += st.ChecksumDrops.Load()
				iv.PartialChecksums += st.PartialChecksums.Load()
			}
		}
		out.Ifaces = append(out.Ifaces, iv)
	}
	wg.Wait()
	for j := range out.Ifaces {
		for _, sv := range out.Shards {
			if j < len(sv.XSK) && sv.XSK[j].Queue >= 0 {
				out.Ifaces[j].Queues = append(out.Ifaces[j].Queues, sv.XSK[j])
			}
		}
	}
	return out
}

// viewShard reads one shard: its atomics here, the rest on the shard.
func viewShard(ctx context.Context, sh *dataplane.Shard, q connQuery, tw *twOwners) shardView {
	v := shardView{ID: sh.ID(), Loop: loadLoop(sh.Stats())}
	if e := sh.Engine(); e != nil {
		e.Counters().Snapshot(v.Counters[:])
		for st := range stack.NumStates {
			v.States[st] = e.Stats().Connections(stack.State(st))
		}
	}
	type onShard struct {
		xsk   []queueView
		conns engineView
	}
	// The function writes only its own result, handed over on a buffered
	// channel: if we stop waiting (ctx), a late run touches nothing of ours.
	res := make(chan onShard, 1)
	stopped := make(chan struct{})
	go func() {
		ok := sh.Do(func(sh *dataplane.Shard) {
			var r onShard
			ifs := sh.Dataplane().Interfaces()
			for j := range ifs {
				qv := queueView{Shard: sh.ID(), Queue: sh.Queue(j), Answered: true}
				if s := sh.Socket(j); s != nil {
					qv.XSK, qv.XSKErr = s.Stats()
				}
				r.xsk = append(r.xsk, qv)
			}
			ifName := func(ifx int) (string, int) {
				if ifx < 0 || ifx >= len(ifs) {
					return "", -1
				}
				return ifs[ifx].Name(), sh.Queue(ifx)
			}
			if e := sh.Engine(); e != nil {
				r.conns = walkEngine(e, q, tw, ifName)
			}
			if a, ok := sh.Driver().(*shardApp); ok {
				walkKernelLegs(a, q, &r.conns)
			}
			res <- r
		})
		if !ok {
			close(stopped)
		}
	}()
	select {
	case r := <-res:
		v.Answered, v.XSK, v.Conns = true, r.xsk, r.conns
	case <-stopped:
	case <-ctx.Done():
	}
	for k := range v.Conns.list {
		v.Conns.list[k].Shard = v.ID
	}
	return v
}

// --- the Prometheus collector ---

// collector turns a view into metrics at scrape time.
type collector struct {
	source  func() adminSource // nil, or returning nil: no proxy (yet)
	ready   func() bool
	timeout func() time.Duration // how long a scrape waits for the shards (nil: 2s)
}

const ns = "xdproxy_"

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(ns+name, help, labels, nil)
}

var (
	mReady    = desc("ready", "1 once every shard of every listener is serving (the admin /healthz answers 200 when ready and not draining).")
	mDraining = desc("draining", "1 while the proxy drains: new clients are reset, open sessions finish.")

	// Listeners.
	mAccepted        = desc("accepted_total", "Client connections taken into a session.", "listener")
	mRefused         = desc("refused_total", "Client connections reset at once because max_connections was reached or the proxy was draining.", "listener")
	mNoBackend       = desc("no_backend_total", "Client connections reset at once because every backend was down.", "listener")
	mConnectFailures = desc("connect_failures_total", "Backend connections refused or unreachable (the client was reset).", "listener")
	mConnectTimeouts = desc("connect_timeouts_total", "Backend connections not established within connect_timeout (the client was reset).", "listener")
	mIdleTimeouts    = desc("idle_timeouts_total", "Sessions reset after idle_timeout without traffic.", "listener")
	mResets          = desc("resets_total", "Sessions ended by a reset or timeout of one leg (side), passed on to the other leg as a reset.", "listener", "side")
	mCompleted       = desc("sessions_completed_total", "Sessions closed by FINs in both directions.", "listener")
	mBytes           = desc("bytes_total", "Bytes spliced: in is client to backend, out is backend to client.", "listener", "direction")
	mActive          = desc("active_sessions", "Open sessions.", "listener")

	// Backends.
	mBackendUp       = desc("backend_up", "1 when the backend may receive new sessions (health checks), else 0.", "listener", "backend")
	mBackendActive   = desc("backend_active_sessions", "Open sessions to the backend.", "listener", "backend")
	mBackendSessions = desc("backend_sessions_total", "Sessions sent to the backend.", "listener", "backend")
	mBackendFailures = desc("backend_failures_total", "Connect failures and connect timeouts of the backend.", "listener", "backend")

	// Engine.
	mConnections    = desc("connections", "Engine connections by listener, leg (client, backend, health_check, other) and TCP state; TIME_WAIT entries are in xdproxy_tcp_connections.", "listener", "leg", "state")
	mTCPConnections = desc("tcp_connections", "Engine connections by TCP state (TIME_WAIT counts the compact entries), summed over shards.", "state")
	mTCPEvents      = desc("tcp_events_total", "Engine counters (every drop and notable event), summed over shards and interfaces.", "counter")
	mSYNCookies     = desc("syn_cookies_total", "SYN cookies sent, accepted (a valid cookie completed a handshake) and rejected, summed over shards.", "kind")

	// XDP.
	mXDPPackets = desc("xdp_packets_total", "Packets the XDP program saw (rx_packets) and what it did with them (reason).", "interface", "reason")

	// Shards.
	mShardInfo           = desc("shard_info", "Maps a shard to the queue of each interface it serves (always 1).", "interface", "shard", "queue")
	mShardUp             = desc("shard_up", "1 when the shard answered the scrape in time (its connection and AF_XDP metrics are then current), else 0.", "shard")
	mShardRxFrames       = desc("shard_rx_frames_total", "Frames the shard received on its queues (every interface).", "shard")
	mShardHandoffs       = desc("shard_handoffs_total", "Frames handed between shards (out: to the shard owning the flow; in: from another shard).", "shard", "direction")
	mShardHandoffDrops   = desc("shard_handoff_drops_total", "Frames dropped because the hand-off ring to the owning shard was full.", "shard")
	mShardTxHandoffs     = desc("shard_tx_handoffs_total", "Frames the shard sent through another shard's socket: it has no queue on the interface they leave by (interfaces with fewer queues than there are shards).", "shard")
	mShardTxHandoffDrops = desc("shard_tx_handoff_drops_total", "Such frames lost because the ring to that shard, or its TX ring, was full.", "shard")
	mShardSleeps         = desc("shard_sleeps_total", "Times the shard loop went to sleep in poll.", "shard")
	mShardWakeups        = desc("shard_wakeups_total", "Eventfd wake-ups sent to the shard.", "shard")
	mShardFlushErrors    = desc("shard_flush_errors_total", "TX kicks the kernel refused (retried on the next loop).", "shard")
	mShardControlDrops   = desc("shard_control_drops_total", "Control messages dropped because the shard's queue was full.", "shard")

	// Interfaces, as the engines see them.
	mIfaceRxFrames      = desc("interface_rx_frames_total", "Frames the engines handled from the interface.", "interface")
	mIfaceChecksumDrops = desc("interface_checksum_drops_total", "TCP segments from the interface dropped for a bad checksum.", "interface")
	mIfacePartialSums   = desc("interface_partial_checksums_total", "TCP segments accepted on a virtual interface (veth) with a partial checksum: their sender's kernel left the checksum to an offload that never ran.", "interface")
)

// xskStats are the AF_XDP socket's statistics, one counter family each.
var xskStats = []struct {
	d   *prometheus.Desc
	get func(*xsk.Stats) uint64
}{
	{desc("xsk_rx_dropped_total", "Frames the kernel dropped for reasons other than a full RX ring or an empty fill ring.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.RxDropped }},
	{desc("xsk_rx_invalid_descs_total", "Invalid descriptors on the fill ring.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.RxInvalidDescs }},
	{desc("xsk_tx_invalid_descs_total", "Invalid descriptors on the TX ring.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.TxInvalidDescs }},
	{desc("xsk_rx_ring_full_total", "Frames the kernel dropped because the RX ring was full.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.RxRingFull }},
	{desc("xsk_rx_fill_ring_empty_total", "Times the kernel found the fill ring empty.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.RxFillRingEmptyDescs }},
	{desc("xsk_tx_ring_empty_total", "Times the kernel found the TX ring empty.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.TxRingEmptyDescs }},
	{desc("xsk_rx_frames_total", "Descriptors received from the RX ring.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.RxFrames }},
	{desc("xsk_tx_frames_total", "Frames queued on the TX ring.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.TxFrames }},
	{desc("xsk_tx_completed_total", "Frames reaped from the completion ring.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.Completed }},
	{desc("xsk_tx_kicks_total", "sendto calls made to kick TX.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.Kicks }},
	{desc("xsk_tx_kicks_busy_total", "TX kicks answered EAGAIN, EBUSY or ENOBUFS.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.KickBusy }},
	{desc("xsk_tx_kick_errors_total", "TX kicks answered with any other error.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.KickErrors }},
	{desc("xsk_wakeups_total", "recvfrom calls made to wake the kernel (need_wakeup).", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.Wakeups }},
	{desc("xsk_tx_no_frame_total", "Outgoing frames lost because no UMEM frame was free.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.TxNoFrame }},
	{desc("xsk_tx_ring_full_total", "Outgoing frames lost because the TX ring had no free slot.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.TxRingFull }},
	{desc("xsk_bad_descs_total", "Descriptors outside the UMEM, or frames returned twice.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.BadDescs }},
	{desc("xsk_bad_commits_total", "Frame commits with a length outside the frame.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.BadCommits }},
}

// legsZero are the legs and states reported for every listener even at
// zero, so their series do not come and go.
var (
	legsZero   = []string{legClient, legBackend}
	statesZero = []stack.State{stack.SynSent, stack.SynReceived, stack.Established, stack.FinWait1, stack.FinWait2, stack.CloseWait, stack.Closing, stack.LastAck}
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		mReady, mDraining,
		mAccepted, mRefused, mNoBackend, mConnectFailures, mConnectTimeouts, mIdleTimeouts, mResets, mCompleted, mBytes, mActive,
		mBackendUp, mBackendActive, mBackendSessions, mBackendFailures,
		mConnections, mTCPConnections, mTCPEvents, mSYNCookies,
		mXDPPackets,
		mShardInfo, mShardUp, mShardRxFrames, mShardHandoffs, mShardHandoffDrops, mShardTxHandoffs, mShardTxHandoffDrops,
		mShardSleeps, mShardWakeups, mShardFlushErrors, mShardControlDrops,
		mIfaceRxFrames, mIfaceChecksumDrops, mIfacePartialSums,
	} {
		ch <- d
	}
	for _, x := range xskStats {
		ch <- x.d
	}
}

func counter(d *prometheus.Desc, v uint64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	if c.ready != nil {
		ch <- gauge(mReady, b2f(c.ready()))
	}
	var src adminSource
	if c.source != nil {
		src = c.source()
	}
	if src == nil {
		return
	}
	ch <- gauge(mDraining, b2f(src.Draining()))
	ls := src.Listeners()
	for _, l := range ls {
		n, s := l.Spec.Name, &l.Stats
		ch <- counter(mAccepted, s.Accepted.Load(), n)
		ch <- counter(mRefused, s.Refused.Load(), n)
		ch <- counter(mNoBackend, s.NoBackend.Load(), n)
		ch <- counter(mConnectFailures, s.ConnectFailed.Load(), n)
		ch <- counter(mConnectTimeouts, s.ConnectTimeouts.Load(), n)
		ch <- counter(mIdleTimeouts, s.IdleTimeouts.Load(), n)
		ch <- counter(mResets, s.ClientResets.Load(), n, "client")
		ch <- counter(mResets, s.BackendResets.Load(), n, "backend")
		ch <- counter(mCompleted, s.Completed.Load(), n)
		ch <- counter(mBytes, s.BytesIn.Load(), n, "in")
		ch <- counter(mBytes, s.BytesOut.Load(), n, "out")
		ch <- gauge(mActive, float64(l.Active()), n)
		seen := map[string]bool{}
		for _, b := range l.Backends {
			addr := b.Spec.Addr.String()
			if seen[addr] { // the same backend listed twice: one series
				continue
			}
			seen[addr] = true
			up := b.Health == nil || b.Health.Up()
			ch <- gauge(mBackendUp, b2f(up), n, addr)
			ch <- gauge(mBackendActive, float64(b.Active()), n, addr)
			ch <- counter(mBackendSessions, b.Sessions.Load(), n, addr)
			ch <- counter(mBackendFailures, b.Failures.Load(), n, addr)
		}
	}

	timeout := 2 * time.Second
	if c.timeout != nil {
		timeout = c.timeout()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	pv := src.view(ctx, connQuery{counts: true})

	var events [stack.NumCounters]uint64
	var states [stack.NumStates]int64
	conns := map[connGroup]int{}
	for _, l := range ls {
		for _, leg := range legsZero {
			for _, st := range statesZero {
				conns[connGroup{l.Spec.Name, leg, st}] += 0
			}
		}
	}
	for _, iv := range pv.Ifaces {
		for _, x := range iv.XDP {
			ch <- counter(mXDPPackets, x.Value, iv.Name, x.Name)
		}
		ch <- counter(mIfaceRxFrames, iv.RxFrames, iv.Name)
		ch <- counter(mIfaceChecksumDrops, iv.ChecksumDrops, iv.Name)
		ch <- counter(mIfacePartialSums, iv.PartialChecksums, iv.Name)
		for _, qv := range iv.Queues {
			queue := strconv.Itoa(qv.Queue)
			ch <- gauge(mShardInfo, 1, iv.Name, strconv.Itoa(qv.Shard), queue)
			if qv.Answered && qv.XSKErr == nil {
				for _, x := range xskStats {
					ch <- counter(x.d, x.get(&qv.XSK), iv.Name, queue)
				}
			}
		}
	}
	for _, sv := range pv.Shards {
		shard := strconv.Itoa(sv.ID)
		for i, v := range sv.Counters {
			events[i] += v
		}
		for i, v := range sv.States {
			states[i] += v
		}
		ch <- gauge(mShardUp, b2f(sv.Answered), shard)
		ch <- counter(mShardRxFrames, sv.Loop.RxFrames, shard)
		ch <- counter(mShardHandoffs, sv.Loop.HandoffsIn, shard, "in")
		ch <- counter(mShardHandoffs, sv.Loop.HandoffsOut, shard, "out")
		ch <- counter(mShardHandoffDrops, sv.Loop.HandoffDrops, shard)
		ch <- counter(mShardTxHandoffs, sv.Loop.TxHandoffs, shard)
		ch <- counter(mShardTxHandoffDrops, sv.Loop.TxHandoffDrops, shard)
		ch <- counter(mShardSleeps, sv.Loop.Sleeps, shard)
		ch <- counter(mShardWakeups, sv.Loop.Wakeups, shard)
		ch <- counter(mShardFlushErrors, sv.Loop.FlushErrors, shard)
		ch <- counter(mShardControlDrops, sv.Loop.CtlDrops, shard)
		if !sv.Answered {
			continue
		}
		for g, n := range sv.Conns.counts {
			conns[g] += n
		}
	}
	for g, n := range conns {
		ch <- gauge(mConnections, float64(n), g.listener, g.leg, g.state.String())
	}
	for st, n := range states {
		if s := stack.State(st); s != stack.Closed && s != stack.Listen {
			ch <- gauge(mTCPConnections, float64(n), s.String())
		}
	}
	for i, v := range events {
		if name := stack.Counter(i).String(); name != "unused" {
			ch <- counter(mTCPEvents, v, name)
		}
	}
	ch <- counter(mSYNCookies, events[stack.SYNCookiesSent], "sent")
	ch <- counter(mSYNCookies, events[stack.SYNCookiesAccepted], "accepted")
	ch <- counter(mSYNCookies, events[stack.SYNCookiesRejected], "rejected")
}

// sortConns orders a listing: by interface (in view order), shard, live
// connections before TIME_WAIT entries, then local and remote address.
func sortConns(list []connEntry, ifOrder map[string]int) {
	sort.SliceStable(list, func(i, j int) bool {
		a, b := &list[i], &list[j]
		if a.Interface != b.Interface {
			return ifOrder[a.Interface] < ifOrder[b.Interface]
		}
		if a.Shard != b.Shard {
			return a.Shard < b.Shard
		}
		if at, bt := a.State == stack.TimeWait, b.State == stack.TimeWait; at != bt {
			return bt
		}
		if c := a.Local.Compare(b.Local); c != 0 {
			return c < 0
		}
		return a.Remote.Compare(b.Remote) < 0
	})
}
