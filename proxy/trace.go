package proxy

import (
	"fmt"

	"github.com/xdproxy/xdproxy/proxy/dataplane"
	"github.com/xdproxy/xdproxy/proxy/trace"
	"github.com/xdproxy/xdproxy/stack"
)

// Ladder traces (admin /trace, `xdproxy trace`). Each shard's engine asks
// its shardApp (a stack.Tracer) about every connection record it makes. A
// client connection is traced when an open watch of the hub matches it
// (listener, client address or prefix, port) and still wants sessions;
// the session's backend leg joins the same trace when it is dialed
// (dialTrace, set around Dial). The session trace goes to its watch when
// the engine is done with every traced leg — after the session ends, once
// the last ACK is in (LAST_ACK) or the leg is in TIME_WAIT — through
// trace.Watch.Deliver, which never blocks the shard.

// sessionTrace is a session's trace while its legs run.
type sessionTrace struct {
	w       *trace.Watch
	s       *trace.Session
	open    int  // legs traced and not yet done
	kernel  bool // the listener dials with OS sockets
	refused bool // the backend leg was dialed but not traced (the engine's cap)
}

// Trace opens a watch for the sessions f matches (admin.TraceSource).
func (p *Proxy) Trace(f trace.Filter) *trace.Watch { return p.traces.Watch(f) }

// installTracers makes every shard's application its engine's tracer.
func (p *Proxy) installTracers() {
	for _, a := range p.apps {
		a.sh.Do(func(sh *dataplane.Shard) { sh.Engine().SetTracer(a) })
	}
}

// TraceConn implements stack.Tracer: a client connection a watch wants,
// or the backend leg of a traced session being dialed.
func (a *shardApp) TraceConn(k stack.FlowKey, l *stack.Listener) *stack.ConnTrace {
	if l == nil {
		client := a.dialTrace
		if client == nil {
			return nil
		}
		a.dialTrace = nil
		st, ok := client.User.(*sessionTrace)
		if !ok {
			return nil
		}
		ct := &stack.ConnTrace{User: st, FollowTimeWait: client.FollowTimeWait}
		st.open++
		st.s.Backend = ct
		return ct
	}
	hub := &a.p.traces
	if !hub.Active() {
		return nil
	}
	sl := a.listeners[l.Addr()]
	if sl == nil {
		return nil
	}
	w := hub.Select(sl.l.Spec.Name, k.Remote(), k.Local())
	if w == nil {
		return nil
	}
	st := &sessionTrace{w: w, open: 1, kernel: sl.l.Spec.DialKernel,
		s: &trace.Session{ID: hub.NextID(), Listener: sl.l.Spec.Name, Shard: a.sh.ID()}}
	ct := &stack.ConnTrace{User: st, FollowTimeWait: w.Filter.TimeWait}
	st.s.Client = ct
	return ct
}

// dialDone follows a Dial made with dialTrace set: a trace the engine did
// not ask for (at its MaxTracedConns) is noted.
func (a *shardApp) dialDone(dialed bool) {
	if a.dialTrace != nil && dialed {
		if st, ok := a.dialTrace.User.(*sessionTrace); ok {
			st.refused = true
		}
	}
	a.dialTrace = nil
}

// TraceDone implements stack.Tracer: when the last traced leg of a
// session is done, the session trace goes to its reader.
func (a *shardApp) TraceDone(ct *stack.ConnTrace) {
	st, ok := ct.User.(*sessionTrace)
	if !ok {
		return
	}
	st.open--
	if st.open > 0 {
		return
	}
	if st.s.Backend == nil {
		st.s.BackendNote = "none: the session never dialed its backend"
		switch {
		case st.kernel:
			st.s.BackendNote = "dial: kernel (an OS socket, not traced)"
		case st.refused:
			st.s.BackendNote = fmt.Sprintf("not traced: the shard was tracing %d connections, its most", stack.MaxTracedConns)
		}
	}
	st.w.Deliver(st.s)
}
