package proxy

import (
	"container/heap"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/proxy/balance"
	"github.com/xdproxy/xdproxy/proxy/dataplane"
	"github.com/xdproxy/xdproxy/stack"
)

// ListenerSpec is one configured listener, as the daemon hands it to the proxy.
type ListenerSpec struct {
	Name           string
	Addr           netip.AddrPort
	Balance        string // round_robin | least_conn | maglev
	DialKernel     bool   // dial: kernel (OS sockets) instead of the engine
	Source         netip.Addr
	ProxyProtocol  int // 0 none, 1 or 2
	ConnectTimeout time.Duration
	IdleTimeout    time.Duration
	ClientTimeout  time.Duration // a client that takes none of the data sent to it this long is closed (0: off)
	MaxConnections int           // 0: unlimited
	Health         *HealthSpec
	Backends       []BackendSpec
	SndBuffer      int // bound of a kernel leg's write buffer
}

// BackendSpec is one backend of a listener.
type BackendSpec struct {
	Addr   netip.AddrPort
	Weight int
}

// HealthSpec configures active health checks.
type HealthSpec struct {
	Interval, Timeout time.Duration
	Rise, Fall        int
}

// ListenerStats are a listener's counters, summed over shards.
type ListenerStats struct {
	Accepted        atomic.Uint64 // client connections taken into a session
	Refused         atomic.Uint64 // reset at once: max_connections reached, or draining
	NoBackend       atomic.Uint64 // reset at once: every backend down
	ConnectFailed   atomic.Uint64 // backend refused or unreachable: client reset
	ConnectTimeouts atomic.Uint64 // backend did not answer within connect_timeout: client reset
	IdleTimeouts    atomic.Uint64 // both legs reset after idle_timeout
	ClientTimeouts  atomic.Uint64 // both legs reset: the client took nothing of its response for client_timeout
	MemoryResets    atomic.Uint64 // both legs reset: the engine freed the session's buffers at its memory high mark
	ClientResets    atomic.Uint64 // the client reset (or timed out): backend leg reset
	BackendResets   atomic.Uint64 // the backend reset (or timed out): client leg reset
	Completed       atomic.Uint64 // sessions closed by FINs both ways
	BytesIn         atomic.Uint64 // client → backend
	BytesOut        atomic.Uint64 // backend → client
}

// Listener is a listener's shared state: its backends with their health,
// the open-session count that max_connections bounds, counters.
type Listener struct {
	Spec     ListenerSpec
	Backends []*BackendState
	// The counters and the open-session count outlive a reload: the
	// listener a reload makes for the same name and address shares them
	// with the one it replaces (sessions keep the one they started with).
	*listenerShared
	allDown atomic.Bool     // logged once per outage
	maglev  *balance.Maglev // shared by every shard (nil unless balance: maglev)
	rebuild chan struct{}   // wakes the Maglev rebuilder
	log     *slog.Logger
}

// Active is the number of open sessions.
func (l *Listener) Active() int64 { return l.active.Load() }

// listenerShared is the part of a Listener that a reload carries over.
type listenerShared struct {
	Stats  ListenerStats
	active atomic.Int64
}

// BackendState is a backend's shared state.
type BackendState struct {
	Spec    BackendSpec
	Health  *balance.Health
	Runtime *balance.Runtime // state (ready, drain, maint) and current weight, set at run time
	// Its counters outlive a reload that keeps the backend (same listener,
	// same address), with its health and runtime setting.
	*backendShared
}

// backendShared is the part of a BackendState that a reload carries over.
type backendShared struct {
	active   atomic.Int64
	Sessions atomic.Uint64 // sessions sent to it
	Failures atomic.Uint64 // connect failures and timeouts
}

func newBackendState(spec BackendSpec, health *balance.Health) *BackendState {
	return &BackendState{Spec: spec, Health: health, Runtime: balance.NewRuntime(spec.Weight), backendShared: &backendShared{}}
}

// Active is the number of open sessions to the backend.
func (b *BackendState) Active() int64 { return b.active.Load() }

// Eligible reports whether the backend may take a new session: healthy,
// ready and of a positive weight. Two atomic loads: the shards call it on
// every pick.
func (b *BackendState) Eligible() bool { return b.Health.Up() && b.Runtime.Accepts() }

// effectiveWeight is the weight Maglev's table gives the backend: its
// current weight when eligible, else 0.
func (b *BackendState) effectiveWeight() int {
	if !b.Health.Up() {
		return 0
	}
	if s := b.Runtime.Load(); s.Accepts() {
		return s.Weight
	}
	return 0
}

func newListener(spec ListenerSpec, log *slog.Logger) *Listener {
	l := &Listener{Spec: spec, listenerShared: &listenerShared{}, log: log.With("listener", spec.Name)}
	rise, fall := 2, 3
	if h := spec.Health; h != nil {
		rise, fall = h.Rise, h.Fall
	}
	for _, b := range spec.Backends {
		l.Backends = append(l.Backends, newBackendState(b, balance.NewHealth(rise, fall)))
	}
	if spec.Balance == "maglev" {
		l.initMaglev()
	}
	return l
}

// initMaglev builds the listener's Maglev table from its configured
// weights; a rebuild is queued, so that run-time settings and health (kept
// across a reload) are taken into account as soon as the rebuilder runs.
func (l *Listener) initMaglev() {
	addrs := make([]netip.AddrPort, len(l.Backends))
	weights := make([]int, len(l.Backends))
	for i, b := range l.Backends {
		addrs[i], weights[i] = b.Spec.Addr, b.Spec.Weight
	}
	l.maglev = balance.NewMaglev(addrs, weights, 0)
	l.rebuild = make(chan struct{}, 1)
	l.rebuild <- struct{}{}
}

// passiveFailure marks a failed connect against the backend's health — only
// when active checks are configured: without them nothing would ever bring
// the backend back up; and not in maint, whose health stays as it was.
func (l *Listener) passiveFailure(b *BackendState) {
	if l.Spec.Health != nil && !b.Runtime.Paused() && b.Health.ConnectFailed() {
		l.healthChanged(b)
	}
}

// healthChanged is called after a backend's health flipped.
func (l *Listener) healthChanged(b *BackendState) {
	up := 0
	for _, x := range l.Backends {
		if x.Health.Up() {
			up++
		}
	}
	l.log.Info("backend health changed", "backend", b.Spec.Addr, "up", b.Health.Up(), "backends_up", up)
	l.eligibilityChanged()
}

// eligibilityChanged is called after a backend's health, state or weight
// changed: new clients may find a backend again, and Maglev's table must
// follow.
func (l *Listener) eligibilityChanged() {
	for _, b := range l.Backends {
		if b.Eligible() {
			l.allDown.Store(false)
			break
		}
	}
	if l.maglev != nil {
		// Rebuilding takes milliseconds: not on a shard. The rebuilder
		// goroutine reads the backends as it finds them then, so the last
		// rebuild always has the latest view; meanwhile Pick skips the
		// backends that are not eligible.
		select {
		case l.rebuild <- struct{}{}:
		default:
		}
	}
}

// rebuilder keeps the listener's Maglev table in step with the backends'
// health, states and weights until ctx ends. Every xdproxy node with the
// same configuration and view builds the same table.
func (l *Listener) rebuilder(ctx context.Context) {
	weight := func(i int) int { return l.Backends[i].effectiveWeight() }
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.rebuild:
			l.maglev.RebuildWeights(weight)
		}
	}
}

// shardListener is a listener's per-shard state: its balancer (round robin
// and least-conn keep per-shard positions; Maglev's table is shared).
type shardListener struct {
	l        *Listener
	bal      balance.Balancer
	eligible func(int) bool
}

func newShardListener(l *Listener) *shardListener {
	sl := &shardListener{l: l}
	sl.eligible = func(i int) bool { return l.Backends[i].Eligible() }
	n := len(l.Backends)
	weight := func(i int) int { return l.Backends[i].Runtime.Weight() }
	switch l.Spec.Balance {
	case "least_conn":
		sl.bal = balance.NewLeastConn(n, weight, func(i int) int { return int(l.Backends[i].active.Load()) })
	case "maglev":
		sl.bal = maglevRef{l}
	default:
		sl.bal = balance.NewRoundRobin(n, weight)
	}
	return sl
}

// shardApp is the proxy running inside one shard: it implements the
// engine's Handler (client legs, engine backend legs, engine health probes)
// and the shard's Driver (session timers, the epoll set of kernel legs).
type shardApp struct {
	sh        *dataplane.Shard
	p         *Proxy
	listeners map[netip.AddrPort]*shardListener
	sessions  map[*session]struct{}
	timers    sessionHeap

	epfd       int
	kernelLegs map[int]*kernelLeg
	epEvents   [64]unix.EpollEvent

	probes *balance.Prober // active health checks, on shard 0 only

	dialTrace *stack.ConnTrace // the trace the next Dial joins (trace.go)

	buf [64 << 10]byte
}

func newShardApp(p *Proxy, sh *dataplane.Shard) *shardApp {
	a := &shardApp{sh: sh, p: p, listeners: map[netip.AddrPort]*shardListener{}, sessions: map[*session]struct{}{}, epfd: -1, kernelLegs: map[int]*kernelLeg{}}
	for _, l := range p.lis() {
		a.listeners[l.Spec.Addr] = newShardListener(l)
	}
	return a
}

// maglevRef picks from the listener's current shared table.
type maglevRef struct{ l *Listener }

func (m maglevRef) Pick(client netip.AddrPort, healthy func(int) bool) int {
	return m.l.maglev.Pick(client, healthy)
}

func (a *shardApp) ensureEpoll() error {
	if a.epfd >= 0 {
		return nil
	}
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	a.epfd = fd
	return nil
}

// --- stack.Handler ---

func (a *shardApp) Acceptable(el *stack.Listener) {
	sl := a.listeners[el.Addr()]
	for c := el.Accept(); c != nil; c = el.Accept() {
		if sl == nil {
			c.Abort()
			continue
		}
		a.newSession(sl, c)
	}
}

func (a *shardApp) ConnEvent(c *stack.Conn, ev stack.Events) {
	switch u := c.User.(type) {
	case *session:
		u.onConnEvent(c, ev)
	case *balance.Probe:
		u.ConnEvent(c, ev)
	default:
		c.Abort()
	}
}

// --- Driver ---

func (a *shardApp) FD() int { return a.epfd }

func (a *shardApp) Poll(now stack.Time) bool {
	if len(a.kernelLegs) == 0 {
		return false
	}
	n, err := unix.EpollWait(a.epfd, a.epEvents[:], 0)
	if err != nil || n <= 0 {
		return false
	}
	for _, ev := range a.epEvents[:n] {
		if k := a.kernelLegs[int(ev.Fd)]; k != nil {
			k.onEvent(ev.Events)
		}
	}
	return true
}

func (a *shardApp) Deadline() stack.Time {
	d := stack.Never
	if len(a.timers) > 0 {
		d = a.timers[0].deadline
	}
	if a.probes != nil {
		d = min(d, a.probes.Next())
	}
	return d
}

func (a *shardApp) Tick(now stack.Time) {
	for len(a.timers) > 0 && a.timers[0].deadline <= now {
		s := a.timers[0]
		s.onTimer(now)
	}
	if a.probes != nil && a.probes.Next() <= now {
		a.probes.Tick(now)
	}
}

// --- sessions ---

// leg is what a session splices: an engine connection or a kernel socket.
type leg interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	WriteSpace() int
	CloseWrite() error
	Close() error
	Abort()
}

type session struct {
	app      *shardApp
	sl       *shardListener
	backend  *BackendState
	client   *stack.Conn
	back     leg
	backConn *stack.Conn // when the backend leg runs on the engine
	backK    *kernelLeg  // when it is a kernel socket

	connected bool
	cEOF      bool // the client's FIN was passed on to the backend
	bEOF      bool // the backend's FIN was passed on to the client
	done      bool

	deadline     stack.Time
	lastActivity stack.Time
	// client_timeout: when the client last took something of what we sent
	// it (SND.UNA of its leg moved) or sent us something (RCV.NXT moved).
	clientProgress       stack.Time
	clientUna, clientRcv uint32
	heapIdx              int
	startedAt            stack.Time
}

func (a *shardApp) newSession(sl *shardListener, c *stack.Conn) {
	l := sl.l
	now := a.sh.Now()
	if a.p.draining.Load() {
		l.Stats.Refused.Add(1)
		c.Abort()
		return
	}
	if m := l.Spec.MaxConnections; m > 0 && l.active.Add(1) > int64(m) {
		l.active.Add(-1)
		l.Stats.Refused.Add(1)
		c.Abort()
		return
	} else if m == 0 {
		l.active.Add(1)
	}
	i := sl.bal.Pick(c.Key().Remote(), sl.eligible)
	if i < 0 {
		l.active.Add(-1)
		l.Stats.NoBackend.Add(1)
		if l.allDown.CompareAndSwap(false, true) {
			l.log.Warn("every backend is down, drained, in maint or of weight 0: resetting new clients until one can take them")
		}
		c.Abort()
		return
	}
	b := l.Backends[i]
	s := &session{app: a, sl: sl, backend: b, client: c, heapIdx: -1, startedAt: now, lastActivity: now, clientProgress: now}
	in := c.Info()
	s.clientUna, s.clientRcv = in.SndUna, in.RcvNxt
	if err := s.dialBackend(now); err != nil {
		l.active.Add(-1)
		l.Stats.ConnectFailed.Add(1)
		b.Failures.Add(1)
		l.passiveFailure(b)
		l.log.Debug("backend dial failed", "backend", b.Spec.Addr, "err", err)
		c.Abort()
		return
	}
	if bc := s.backConn; bc != nil {
		// Each leg's window bounded by the room in the other's send
		// buffer: a stalled reader holds one buffer per direction.
		c.Splice(bc)
		bc.Splice(c)
		bc.SetQuickACK(false)
	}
	// Delayed ACKs from the start on both legs (quick-ACK mode off, as
	// Linux's TCP_QUICKACK 0): the client's request is acknowledged by
	// the reply that comes back from the backend, the backend's reply by
	// the next request or our FIN — one bare ACK fewer on each leg per
	// exchange. Bulk still gets an ACK per two full-sized segments.
	c.SetQuickACK(false)
	b.active.Add(1)
	b.Sessions.Add(1)
	l.Stats.Accepted.Add(1)
	c.User = s
	a.sessions[s] = struct{}{}
	if h := l.Spec.ProxyProtocol; h != 0 {
		var hdr []byte
		if h == 1 {
			hdr = AppendV1(a.buf[:0], c.Key().Remote(), c.Key().Local())
		} else {
			hdr = AppendV2(a.buf[:0], c.Key().Remote(), c.Key().Local())
		}
		s.back.Write(hdr)
	}
	s.deadline = now.Add(l.Spec.ConnectTimeout)
	heap.Push(&a.timers, s)
	// Data that came with the handshake goes out behind the backend's SYN.
	s.pumpClient()
}

func (s *session) dialBackend(now stack.Time) error {
	l := s.sl.l
	addr := s.backend.Spec.Addr
	if l.Spec.DialKernel {
		k, err := s.app.dialKernel(addr, l.Spec.SndBuffer)
		if err != nil {
			return err
		}
		k.sess = s
		s.back, s.backK = k, k
		return nil
	}
	// With no source configured the engine picks it: the route's
	// interface, and that interface's address.
	s.app.dialTrace = s.client.Trace() // a traced session's backend leg joins its trace
	c, err := s.app.sh.Engine().Dial(now, l.Spec.Source, addr)
	s.app.dialDone(err == nil)
	if err != nil {
		return err
	}
	c.User = s
	s.back, s.backConn = c, c
	return nil
}

func (s *session) onConnEvent(c *stack.Conn, ev stack.Events) {
	if s.done {
		return
	}
	if c == s.client {
		if ev&(stack.EventReset|stack.EventTimedOut) != 0 {
			s.legReset(c, &s.sl.l.Stats.ClientResets)
			return
		}
		if ev&(stack.EventReadable|stack.EventPeerClosed) != 0 {
			s.pumpClient()
		}
		if ev&stack.EventWritable != 0 {
			s.pumpBackend()
		}
		return
	}
	// the engine backend leg
	switch {
	case ev&stack.EventConnectFailed != 0:
		s.onBackendFailed(c.Err())
		return
	case ev&(stack.EventReset|stack.EventTimedOut) != 0:
		s.legReset(c, &s.sl.l.Stats.BackendResets)
		return
	}
	if ev&stack.EventConnected != 0 {
		s.onBackendConnected()
	}
	if ev&(stack.EventReadable|stack.EventPeerClosed) != 0 {
		s.pumpBackend()
	}
	if ev&stack.EventWritable != 0 {
		s.pumpClient()
	}
}

// legReset ends the session after one leg was reset or timed out: counted
// as the leg's side (side), or as a memory reset when the engine reset the
// leg to free its buffers.
func (s *session) legReset(c *stack.Conn, side *atomic.Uint64) {
	if errors.Is(c.Err(), stack.ErrMemoryPressure) {
		s.sl.l.Stats.MemoryResets.Add(1)
	} else {
		side.Add(1)
	}
	s.resetAll()
}

func (s *session) onBackendConnected() {
	if s.connected || s.done {
		return
	}
	s.connected = true
	s.touch()
	s.pumpClient()
	s.pumpBackend()
}

func (s *session) onBackendFailed(err error) {
	if s.done {
		return
	}
	l, b := s.sl.l, s.backend
	l.Stats.ConnectFailed.Add(1)
	b.Failures.Add(1)
	l.passiveFailure(b)
	l.log.Debug("backend connect failed", "backend", b.Spec.Addr, "err", err)
	s.resetAll()
}

// onBackendActivity is a kernel leg's readiness: move what can move.
func (s *session) onBackendActivity() {
	if s.done {
		return
	}
	s.pumpBackend()
	s.pumpClient()
	s.maybeFinish()
}

// pumpClient moves client bytes to the backend while the backend leg has
// room; when it has none we stop reading, so the client's window closes
// (backpressure) until EventWritable on the backend leg resumes us.
func (s *session) pumpClient() {
	if s.done || s.cEOF {
		return
	}
	n, eof, err := s.pump(s.client, s.back)
	s.sl.l.Stats.BytesIn.Add(uint64(n))
	switch {
	case err != nil:
		s.sl.l.Stats.ClientResets.Add(1)
		s.resetAll()
	case eof:
		s.cEOF = true
		s.back.CloseWrite()
		s.maybeFinish()
	}
}

// pumpBackend moves backend bytes to the client, the same way.
func (s *session) pumpBackend() {
	if s.done || s.bEOF || !s.connected {
		return
	}
	n, eof, err := s.pump(s.back, s.client)
	s.sl.l.Stats.BytesOut.Add(uint64(n))
	switch {
	case err != nil:
		s.sl.l.Stats.BackendResets.Add(1)
		s.resetAll()
	case eof:
		s.bEOF = true
		s.client.CloseWrite()
		s.maybeFinish()
	}
}

func (s *session) pump(src, dst leg) (moved int, eof bool, err error) {
	buf := s.app.buf[:]
	for {
		space := dst.WriteSpace()
		if space == 0 {
			return moved, false, nil
		}
		n, rerr := src.Read(buf[:min(space, len(buf))])
		if n > 0 {
			dst.Write(buf[:n])
			moved += n
			s.touch()
		}
		if errors.Is(rerr, io.EOF) {
			return moved, true, nil
		}
		if rerr != nil {
			return moved, false, rerr
		}
		if n == 0 {
			return moved, false, nil
		}
	}
}

func (s *session) touch() { s.lastActivity = s.app.sh.Now() }

// maybeFinish closes the session once both FINs have been passed on (and a
// kernel leg has handed the kernel every byte).
func (s *session) maybeFinish() {
	if s.done || !s.cEOF || !s.bEOF || (s.backK != nil && !s.backK.drained()) {
		return
	}
	s.sl.l.Stats.Completed.Add(1)
	s.client.Close()
	s.back.Close()
	s.finish()
}

// resetAll resets both legs: a reset on one leg becomes a reset on the other.
func (s *session) resetAll() {
	if s.done {
		return
	}
	s.client.Abort()
	if s.back != nil {
		s.back.Abort()
	}
	s.finish()
}

func (s *session) finish() {
	if s.done {
		return
	}
	s.done = true
	a := s.app
	if s.heapIdx >= 0 {
		heap.Remove(&a.timers, s.heapIdx)
	}
	if s.backK != nil {
		delete(a.kernelLegs, s.backK.fd)
	}
	delete(a.sessions, s)
	s.sl.l.active.Add(-1)
	s.backend.active.Add(-1)
}

// onTimer: connect timeout before the backend answers, idle timeout after.
func (s *session) onTimer(now stack.Time) {
	l := s.sl.l
	if !s.connected {
		l.Stats.ConnectTimeouts.Add(1)
		s.backend.Failures.Add(1)
		l.passiveFailure(s.backend)
		s.resetAll()
		return
	}
	next := stack.Never
	if idle := l.Spec.IdleTimeout; idle > 0 {
		at := s.lastActivity.Add(idle)
		if at <= now {
			l.Stats.IdleTimeouts.Add(1)
			s.resetAll()
			return
		}
		next = at
	}
	if ct := l.Spec.ClientTimeout; ct > 0 {
		at, stalled := s.clientCheck(now, ct)
		if stalled {
			l.Stats.ClientTimeouts.Add(1)
			l.log.Debug("client took none of its response for client_timeout: session reset", "client", s.client.Key().Remote(), "client_timeout", ct)
			s.resetAll()
			return
		}
		next = min(next, at)
	}
	if next == stack.Never {
		heap.Remove(&s.app.timers, s.heapIdx)
		return
	}
	s.deadline = next
	heap.Fix(&s.app.timers, s.heapIdx)
}

// clientCheck samples the client leg for client_timeout: progress is the
// client acknowledging data we sent it or sending us data. A client with
// data of ours outstanding (sent or queued) and no progress for ct is
// stalled — a reader that stopped reading holds the session's buffers on
// both legs. At L4 a request has no end to wait for: a client that stops
// sending is idle_timeout's. It returns when to look again.
func (s *session) clientCheck(now stack.Time, ct time.Duration) (next stack.Time, stalled bool) {
	in := s.client.Info()
	if in.SndUna != s.clientUna || in.RcvNxt != s.clientRcv {
		s.clientUna, s.clientRcv, s.clientProgress = in.SndUna, in.RcvNxt, now
	}
	if in.SndQueued == 0 {
		return now.Add(ct), false // nothing of ours waits on the client
	}
	at := s.clientProgress.Add(ct)
	if at <= now {
		return 0, true
	}
	// Look again at the deadline, or sooner, so that progress moves it.
	return min(at, now.Add(ct/4+time.Millisecond)), false
}

// sessionHeap orders sessions by deadline; entries move later lazily (the
// idle deadline is checked when it fires), so activity costs no heap work.
type sessionHeap []*session

func (h sessionHeap) Len() int           { return len(h) }
func (h sessionHeap) Less(i, j int) bool { return h[i].deadline < h[j].deadline }
func (h sessionHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}
func (h *sessionHeap) Push(x any) {
	s := x.(*session)
	s.heapIdx = len(*h)
	*h = append(*h, s)
}
func (h *sessionHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	s.heapIdx = -1
	return s
}

// abortAll resets every session (the end of a drain).
func (a *shardApp) abortAll() int {
	n := 0
	for s := range a.sessions {
		s.resetAll()
		n++
	}
	return n
}
