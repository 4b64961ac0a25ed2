package proxy

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/proxy/admin"
	"github.com/xdproxy/xdproxy/proxy/balance"
	"github.com/xdproxy/xdproxy/proxy/dataplane"
	"github.com/xdproxy/xdproxy/stack"
)

// Proxy implements admin.Source: the listeners' counters from their
// atomics, and a view of the data plane that walks every shard's sessions
// on the shard (Shard.Do), where they may be read.

// Listeners reports every listener's counters and backends (admin.Source).
func (p *Proxy) Listeners() []admin.ListenerView {
	out := make([]admin.ListenerView, len(p.lis()))
	for i, l := range p.lis() {
		s := &l.Stats
		v := admin.ListenerView{
			Name:     l.Spec.Name,
			Accepted: s.Accepted.Load(), Refused: s.Refused.Load(), NoBackend: s.NoBackend.Load(),
			ConnectFailed: s.ConnectFailed.Load(), ConnectTimeouts: s.ConnectTimeouts.Load(), IdleTimeouts: s.IdleTimeouts.Load(), ClientTimeouts: s.ClientTimeouts.Load(), MemoryResets: s.MemoryResets.Load(),
			ClientResets: s.ClientResets.Load(), BackendResets: s.BackendResets.Load(), Completed: s.Completed.Load(),
			BytesIn: s.BytesIn.Load(), BytesOut: s.BytesOut.Load(),
			Active:   l.Active(),
			Balance:  l.balanceName(),
			Backends: make([]admin.BackendView, len(l.Backends)),
		}
		for j, b := range l.Backends {
			v.Backends[j] = l.backendView(b)
		}
		out[i] = v
	}
	return out
}

// loadLoop copies the shard loop's counters.
func loadLoop(s *dataplane.ShardStats) admin.LoopStats {
	return admin.LoopStats{
		RxFrames: s.RxFrames.Load(), HandoffsOut: s.HandoffsOut.Load(),
		HandoffsIn: s.HandoffsIn.Load(), HandoffDrops: s.HandoffDrops.Load(),
		Sleeps: s.Sleeps.Load(), Wakeups: s.Wakeups.Load(),
		FlushErrors: s.FlushErrors.Load(), CtlDrops: s.CtlDrops.Load(),
		TxHandoffs: s.TxHandoffs.Load(), TxHandoffDrops: s.TxHandoffDrops.Load(),
	}
}

// connOwner names the listener and leg of an engine connection. It reads
// the connection's User, so it runs on the shard only.
func connOwner(c *stack.Conn) (listener, leg string) {
	switch u := c.User.(type) {
	case *session:
		name := u.sl.l.Spec.Name
		if u.client == c {
			return name, admin.LegClient
		}
		return name, admin.LegBackend
	case *balance.Probe:
		return u.Listener(), admin.LegHealth
	}
	return "", admin.LegOther
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
		return name, admin.LegClient
	}
	if name, ok := o.backends[k.Remote()]; ok && name != "" {
		return name, admin.LegBackend
	}
	return "", ""
}

// otherLeg is the other leg of c's session, "local->remote" ("" when c is
// no session's). It reads the session, so it runs on the shard.
func otherLeg(c *stack.Conn) string {
	u, ok := c.User.(*session)
	if !ok {
		return ""
	}
	switch {
	case c != u.client && u.client != nil:
		return u.client.Key().Local().String() + "->" + u.client.Key().Remote().String()
	case u.backConn != nil:
		return u.backConn.Key().Local().String() + "->" + u.backConn.Key().Remote().String()
	case u.backK != nil && !u.backK.closed:
		if u.backend != nil {
			return sockAddrPort(unix.Getsockname(u.backK.fd)).String() + "->" + u.backend.Spec.Addr.String()
		}
	}
	return ""
}

// walkEngine reads e's connection table (and TIME_WAIT table) as q asks.
// It must run on the engine's goroutine.
func walkEngine(e *stack.Engine, q admin.ConnQuery, tw *twOwners, ifName func(int) (string, int)) admin.EngineView {
	var v admin.EngineView
	if q.Counts {
		v.Counts = map[admin.ConnGroup]int{}
	}
	if q.Counts || q.List {
		e.Conns(func(c *stack.Conn) bool {
			listener, leg := connOwner(c)
			st := c.State()
			if q.Counts {
				v.Counts[admin.ConnGroup{Listener: listener, Leg: leg, State: st}]++
			}
			if !q.Wants(st, listener) {
				return true
			}
			if v.Full(q) {
				return q.Counts // keep counting; stop listing
			}
			in := c.Info()
			ifn, queue := ifName(c.Interface())
			ce := admin.ConnEntry{
				Interface: ifn, Queue: queue,
				State: st, Local: in.Key.Local(), Remote: in.Key.Remote(),
				Listener: listener, Leg: leg,
				SRTT: in.SRTT, Cwnd: in.Cwnd, BytesIn: in.BytesIn, BytesOut: in.BytesOut,
				TCP: &admin.TCPDetail{RTTVar: in.RTTVar, RTO: in.RTO, MSS: in.MSS, Ssthresh: in.Ssthresh,
					Retransmits: in.Retransmits, SendQueue: in.SndQueued, RecvQueue: in.RcvQueued,
					SendWindow: in.SndWnd, RecvWindow: in.RcvWnd,
					Congestion: in.Congestion.String(), PacingRate: in.PacingRate, DeliveryRate: in.DeliveryRate, MinRTT: in.MinRTT},
				Other: otherLeg(c),
			}
			if leg == admin.LegOther {
				ce.Leg = ""
			}
			v.List = append(v.List, ce)
			return true
		})
	}
	if q.TimeWaits && q.Wants(stack.TimeWait, q.Listener) && !v.Full(q) {
		e.TimeWaits(func(k stack.FlowKey, ifx int) bool {
			listener, leg := tw.owner(k)
			if q.Listener != "" && q.Listener != listener {
				return true
			}
			if v.Full(q) {
				return false
			}
			ifn, queue := ifName(ifx)
			v.List = append(v.List, admin.ConnEntry{Interface: ifn, Queue: queue, State: stack.TimeWait, Local: k.Local(), Remote: k.Remote(), Listener: listener, Leg: leg})
			return true
		})
	}
	return v
}

// walkKernelLegs adds the backend legs of dial: kernel listeners (OS
// sockets the shard owns) to v, read with getsockopt(TCP_INFO): one system
// call per leg and scrape. It must run on the shard.
func walkKernelLegs(a *shardApp, q admin.ConnQuery, v *admin.EngineView) {
	if a == nil || !(q.Counts || q.List) {
		return
	}
	if q.Counts && v.Counts == nil {
		v.Counts = map[admin.ConnGroup]int{}
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
		if q.Counts {
			v.Counts[admin.ConnGroup{Listener: listener, Leg: admin.LegBackend, State: st}]++
		}
		if !q.Wants(st, listener) || v.Full(q) {
			continue
		}
		ce := admin.ConnEntry{
			State: st, Local: sockAddrPort(unix.Getsockname(k.fd)), Remote: backend,
			Listener: listener, Leg: admin.LegBackend, Kernel: true,
			SRTT: time.Duration(ti.Rtt) * time.Microsecond, Cwnd: int(ti.Snd_cwnd) * int(ti.Snd_mss),
			BytesIn: ti.Bytes_received, BytesOut: ti.Bytes_sent - ti.Bytes_retrans,
			TCP: &admin.TCPDetail{RTTVar: time.Duration(ti.Rttvar) * time.Microsecond, RTO: time.Duration(ti.Rto) * time.Microsecond,
				MSS: int(ti.Snd_mss), Ssthresh: int(ti.Snd_ssthresh) * int(ti.Snd_mss), Retransmits: uint64(ti.Total_retrans),
				SendQueue: int(ti.Notsent_bytes), RecvWindow: ti.Rcv_space,
				PacingRate: float64(ti.Pacing_rate), DeliveryRate: float64(ti.Delivery_rate), MinRTT: time.Duration(ti.Min_rtt) * time.Microsecond},
		}
		if s := k.sess; s != nil && s.client != nil {
			ce.Other = s.client.Key().Local().String() + "->" + s.client.Key().Remote().String()
		}
		if r := sockAddrPort(unix.Getpeername(k.fd)); r.IsValid() {
			ce.Remote = r
		}
		v.List = append(v.List, ce)
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

// View gathers the state of every interface and every shard (admin.Source).
func (p *Proxy) View(ctx context.Context, q admin.ConnQuery) admin.PlaneView {
	var out admin.PlaneView
	dp := p.dp
	if dp == nil {
		return out
	}
	var tw *twOwners
	if q.List && q.TimeWaits {
		tw = newTWOwners(p.lis())
	}
	shards := dp.Shards()
	out.MemoryLimit = dp.MemoryLimit()
	out.XDPSYNCookies = dp.XDPCookies()
	out.Shards = make([]admin.ShardView, len(shards))
	var wg sync.WaitGroup
	for i, sh := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out.Shards[i] = viewShard(ctx, sh, q, tw)
		}()
	}
	for _, f := range dp.Interfaces() {
		iv := admin.IfaceView{Name: f.Name()}
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
func viewShard(ctx context.Context, sh *dataplane.Shard, q admin.ConnQuery, tw *twOwners) admin.ShardView {
	v := admin.ShardView{ID: sh.ID(), Loop: loadLoop(sh.Stats())}
	if e := sh.Engine(); e != nil {
		e.Counters().Snapshot(v.Counters[:])
		m := e.Memory()
		for k := range stack.NumMemoryKinds {
			v.Memory.Bytes[k] = m.Bytes(k)
		}
		v.Memory.Share, v.Memory.Level = m.Share(), m.Level()
		for st := range stack.NumStates {
			v.States[st] = e.Stats().Connections(stack.State(st))
		}
	}
	type onShard struct {
		xsk   []admin.QueueView
		conns admin.EngineView
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
				qv := admin.QueueView{Shard: sh.ID(), Queue: sh.Queue(j), Answered: true}
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
	for k := range v.Conns.List {
		v.Conns.List[k].Shard = v.ID
	}
	return v
}
