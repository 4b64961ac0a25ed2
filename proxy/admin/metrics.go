package admin

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdproxy/xdproxy/proxy/balance"
	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/xsk"
)

// collector turns a view into metrics at scrape time.
type collector struct {
	source       func() Source // nil, or returning nil: no proxy (yet)
	ready        func() bool
	timeout      func() time.Duration // how long a scrape waits for the shards (nil: 2s)
	unauthorized func() uint64        // the admin's 401 answers (nil: none)
	reloader     func() Reloader      // nil, or returning nil: no reloads
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
	mClientTimeouts  = desc("client_timeouts_total", "Sessions reset because the client took nothing of the data sent to it for client_timeout (a reader that stopped reading).", "listener")
	mMemoryResets    = desc("memory_resets_total", "Sessions reset because the engine was above its memory high mark and they had made no progress for longest (tcp.memory_limit).", "listener")
	mResets          = desc("resets_total", "Sessions ended by a reset or timeout of one leg (side), passed on to the other leg as a reset.", "listener", "side")
	mCompleted       = desc("sessions_completed_total", "Sessions closed by FINs in both directions.", "listener")
	mBytes           = desc("bytes_total", "Bytes spliced: in is client to backend, out is backend to client.", "listener", "direction")
	mActive          = desc("active_sessions", "Open sessions.", "listener")

	// Backends.
	mBackendUp       = desc("backend_up", "1 when the backend may receive new sessions (health checks), else 0.", "listener", "backend")
	mBackendActive   = desc("backend_active_sessions", "Open sessions to the backend.", "listener", "backend")
	mBackendSessions = desc("backend_sessions_total", "Sessions sent to the backend.", "listener", "backend")
	mBackendFailures = desc("backend_failures_total", "Connect failures and connect timeouts of the backend.", "listener", "backend")
	mBackendState    = desc("backend_state", "1 for the backend's run-time state (ready; drain: no new sessions; maint: no new sessions nor health checks), 0 for the others.", "listener", "backend", "state")
	mBackendWeight   = desc("backend_weight", "The backend's current weight (as configured unless set at run time; 0: no new sessions).", "listener", "backend")
	mBackendChecks   = desc("backend_health_checks_total", "Results of the backend's active health checks (result ok or failed), for listeners with health checks.", "listener", "backend", "result")

	// Admin.
	mReloads           = desc("config_reloads_total", "Configuration reloads (SIGHUP, POST /reload) by result: applied, or refused (the file did not pass check, or could not be applied; the running configuration stayed).", "result")
	mConfigInfo        = desc("config_info", "The configuration file in force: its SHA-256 (always 1).", "sha256")
	mAdminUnauthorized = desc("admin_unauthorized_total", "Admin requests answered 401: no bearer token, or a wrong one, on an admin address that is not loopback.")

	// Engine.
	mConnections    = desc("connections", "Engine connections by listener, leg (client, backend, health_check, other) and TCP state; TIME_WAIT entries are in xdproxy_tcp_connections.", "listener", "leg", "state")
	mTCPConnections = desc("tcp_connections", "Engine connections by TCP state (TIME_WAIT counts the compact entries), summed over shards.", "state")
	mTCPEvents      = desc("tcp_events_total", "Engine counters (every drop and notable event), summed over shards and interfaces.", "counter")
	mMemoryBytes    = desc("memory_bytes", "What the engines hold, summed over shards: send and receive ring storage, and connection records with the sessions' state (kind); all of it counts against tcp.memory_limit.", "kind")
	mMemoryLimit    = desc("memory_limit_bytes", "The engines' memory budget (tcp.memory_limit; 0: none).")
	mMemoryPressure = desc("memory_pressure", "The highest pressure level of any shard: 0 normal, 1 pressure (above 3/4 of its share: windows clamped, rings held small), 2 high (above 7/8: SYN cookies, stalest sessions reset).")
	mMemoryTransits = desc("memory_pressure_transitions_total", "Changes of a shard's memory pressure level, by the level entered.", "to")
	mSYNCookies     = desc("syn_cookies_total", "SYN cookies sent, accepted (a valid cookie completed a handshake) and rejected, summed over shards.", "kind")

	// XDP.
	mXDPPackets    = desc("xdp_packets_total", "Packets the XDP program saw (rx_packets) and what it did with them (reason).", "interface", "reason")
	mXDPSYNCookies = desc("xdp_syn_cookies", "1 while the XDP programs answer SYNs to the listeners with SYN cookies (tcp.syn_cookies always, or auto under SYN pressure), else 0.")

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
	{desc("xsk_rx_chains_total", "Multi-buffer packets (jumbo frames) received as chains of descriptors and gathered.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.RxChains }},
	{desc("xsk_rx_chain_descs_total", "Descriptors in the received chains.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.RxChainDescs }},
	{desc("xsk_rx_chain_drops_total", "Received chains dropped: longer than the link's largest frame, or never ended.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.RxChainDrops }},
	{desc("xsk_tx_chains_total", "Outgoing frames sent as chains of descriptors (multi-buffer).", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.TxChains }},
	{desc("xsk_tx_chain_descs_total", "Descriptors in the sent chains.", "interface", "queue"), func(s *xsk.Stats) uint64 { return s.TxChainDescs }},
}

// legsZero are the legs and states reported for every listener even at
// zero, so their series do not come and go.
var (
	legsZero   = []string{LegClient, LegBackend}
	statesZero = []stack.State{stack.SynSent, stack.SynReceived, stack.Established, stack.FinWait1, stack.FinWait2, stack.CloseWait, stack.Closing, stack.LastAck}
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		mReady, mDraining, mAdminUnauthorized, mReloads, mConfigInfo,
		mAccepted, mRefused, mNoBackend, mConnectFailures, mConnectTimeouts, mIdleTimeouts, mClientTimeouts, mMemoryResets, mResets, mCompleted, mBytes, mActive,
		mBackendUp, mBackendActive, mBackendSessions, mBackendFailures, mBackendState, mBackendWeight, mBackendChecks,
		mConnections, mTCPConnections, mTCPEvents, mSYNCookies, mMemoryBytes, mMemoryLimit, mMemoryPressure, mMemoryTransits,
		mXDPPackets, mXDPSYNCookies,
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
	if c.unauthorized != nil {
		ch <- counter(mAdminUnauthorized, c.unauthorized())
	}
	if c.reloader != nil {
		if r := c.reloader(); r != nil {
			applied, refused, sum := r.ReloadStats()
			ch <- counter(mReloads, applied, "applied")
			ch <- counter(mReloads, refused, "refused")
			if sum != "" {
				ch <- gauge(mConfigInfo, 1, sum)
			}
		}
	}
	var src Source
	if c.source != nil {
		src = c.source()
	}
	if src == nil {
		return
	}
	ch <- gauge(mDraining, b2f(src.Draining()))
	ls := src.Listeners()
	for _, l := range ls {
		n := l.Name
		ch <- counter(mAccepted, l.Accepted, n)
		ch <- counter(mRefused, l.Refused, n)
		ch <- counter(mNoBackend, l.NoBackend, n)
		ch <- counter(mConnectFailures, l.ConnectFailed, n)
		ch <- counter(mConnectTimeouts, l.ConnectTimeouts, n)
		ch <- counter(mIdleTimeouts, l.IdleTimeouts, n)
		ch <- counter(mClientTimeouts, l.ClientTimeouts, n)
		ch <- counter(mMemoryResets, l.MemoryResets, n)
		ch <- counter(mResets, l.ClientResets, n, "client")
		ch <- counter(mResets, l.BackendResets, n, "backend")
		ch <- counter(mCompleted, l.Completed, n)
		ch <- counter(mBytes, l.BytesIn, n, "in")
		ch <- counter(mBytes, l.BytesOut, n, "out")
		ch <- gauge(mActive, float64(l.Active), n)
		seen := map[string]bool{}
		for _, b := range l.Backends {
			addr := b.Addr.String()
			if seen[addr] { // the same backend listed twice: one series
				continue
			}
			seen[addr] = true
			ch <- gauge(mBackendUp, b2f(b.Up), n, addr)
			ch <- gauge(mBackendActive, float64(b.Active), n, addr)
			ch <- counter(mBackendSessions, b.Sessions, n, addr)
			ch <- counter(mBackendFailures, b.Failures, n, addr)
			for _, st := range balance.States {
				ch <- gauge(mBackendState, b2f(b.State == st), n, addr, st.String())
			}
			ch <- gauge(mBackendWeight, float64(b.Weight), n, addr)
			if b.Checked {
				ch <- counter(mBackendChecks, b.ChecksOK, n, addr, "ok")
				ch <- counter(mBackendChecks, b.ChecksFailed, n, addr, "failed")
			}
		}
	}

	timeout := 2 * time.Second
	if c.timeout != nil {
		timeout = c.timeout()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	pv := src.View(ctx, ConnQuery{Counts: true})

	var events [stack.NumCounters]uint64
	var states [stack.NumStates]int64
	var memBytes [stack.NumMemoryKinds]int64
	memLevel := stack.MemoryNormal
	conns := map[ConnGroup]int{}
	for _, l := range ls {
		for _, leg := range legsZero {
			for _, st := range statesZero {
				conns[ConnGroup{l.Name, leg, st}] += 0
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
		for k, v := range sv.Memory.Bytes {
			memBytes[k] += v
		}
		memLevel = max(memLevel, sv.Memory.Level)
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
		for g, n := range sv.Conns.Counts {
			conns[g] += n
		}
	}
	for g, n := range conns {
		ch <- gauge(mConnections, float64(n), g.Listener, g.Leg, g.State.String())
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
	for k, v := range memBytes {
		ch <- gauge(mMemoryBytes, float64(v), stack.MemoryKind(k).String())
	}
	ch <- gauge(mMemoryLimit, float64(pv.MemoryLimit))
	xdpCookies := 0.0
	if pv.XDPSYNCookies {
		xdpCookies = 1
	}
	ch <- gauge(mXDPSYNCookies, xdpCookies)
	ch <- gauge(mMemoryPressure, float64(memLevel))
	ch <- counter(mMemoryTransits, events[stack.MemoryNormalEntered], "normal")
	ch <- counter(mMemoryTransits, events[stack.MemoryPressureEntered], "pressure")
	ch <- counter(mMemoryTransits, events[stack.MemoryHighEntered], "high")
	ch <- counter(mSYNCookies, events[stack.SYNCookiesSent], "sent")
	ch <- counter(mSYNCookies, events[stack.SYNCookiesAccepted], "accepted")
	ch <- counter(mSYNCookies, events[stack.SYNCookiesRejected], "rejected")
}
