package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/xdproxy/xdproxy/internal/config"
	"github.com/xdproxy/xdproxy/proxy/admin"
)

// ServingFunc says whether this node can serve a listener now (its shards
// up, not draining, at least one backend eligible) and, when not, why.
type ServingFunc func(listener string) (ok bool, reason string)

// PollInterval is how often the speaker re-reads the listeners' health
// (Kick re-reads at once). A backend's health changes at the pace of its
// checks (seconds), so a quarter second adds little to a withdrawal.
const PollInterval = 250 * time.Millisecond

// ConnectRetry is how long a session waits between connection attempts
// (GoBGP's default is 120 s; a proxy node that restarts wants its routes
// back sooner).
const ConnectRetry = 5 * time.Second

// Speaker is the daemon's BGP speaker: one GoBGP server that opens a
// session to each neighbor and announces each configured listener address
// as a host route while serving says the node can serve it.
type Speaker struct {
	serving ServingFunc
	log     *slog.Logger

	mu        sync.Mutex
	cfg       *Config            // nil: no BGP
	srv       *server.BgpServer  // nil when cfg is nil
	cancel    context.CancelFunc // the current server's peer watch
	routes    map[netip.Prefix]*routeState
	peers     map[netip.Addr]*peerStats
	withdrawn bool // WithdrawAll was called: nothing is announced any more

	kick     chan struct{}
	stop     chan struct{}
	loopDone chan struct{}
	looping  bool // the health poll runs (from the first configuration on)
	stopOnce sync.Once
}

type routeState struct {
	route       Route
	announced   bool
	attrs       string // the attributes announced (to re-announce on a change)
	reason      string
	announces   uint64
	withdrawals uint64
}

type peerStats struct {
	state       string
	since       time.Time
	established uint64
}

// New returns a speaker that asks serving about listeners. It runs no BGP
// until Apply gives it a configuration.
func New(serving ServingFunc, log *slog.Logger) *Speaker {
	if log == nil {
		log = slog.Default()
	}
	s := &Speaker{
		serving: serving, log: log.With("component", "bgp"),
		routes: map[netip.Prefix]*routeState{}, peers: map[netip.Addr]*peerStats{},
		kick: make(chan struct{}, 1), stop: make(chan struct{}), loopDone: make(chan struct{}),
	}
	return s
}

func (s *Speaker) loop() {
	defer close(s.loopDone)
	t := time.NewTicker(PollInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.kick:
		}
		s.mu.Lock()
		s.sync()
		s.mu.Unlock()
	}
}

// Kick re-reads the listeners' health now.
func (s *Speaker) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Apply runs cfg (nil: stops BGP). The first call starts the speaker; later
// ones (reloads) change it in place: neighbors added are connected,
// neighbors removed are closed, a neighbor whose settings changed is
// reconnected (a change of its bfd block alone is applied to the running
// session, see bfdChange), and the others' sessions stay up; routes follow the new
// announce list. A new asn or router_id takes a new BGP server, so every
// session restarts (GoBGP cannot change its global settings while
// running). It returns what it changed, one word each, for the reload log.
func (s *Speaker) Apply(cfg *Config) (changed []string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case cfg == nil && s.cfg == nil:
		return nil, nil
	case cfg == nil:
		s.stopServer()
		s.cfg = nil
		s.routes = map[netip.Prefix]*routeState{}
		return []string{"bgp stopped"}, nil
	case s.cfg == nil || cfg.ASN != s.cfg.ASN || cfg.RouterID != s.cfg.RouterID:
		if !s.looping {
			// A daemon without BGP runs no poll at all.
			s.looping = true
			go s.loop()
		}
		if s.cfg != nil {
			s.stopServer()
			changed = append(changed, "bgp restarted (asn or router_id)")
		} else {
			changed = append(changed, "bgp started")
		}
		if err := s.startServer(cfg); err != nil {
			return changed, err
		}
		s.cfg = &Config{ASN: cfg.ASN, RouterID: cfg.RouterID, WithdrawDelay: cfg.WithdrawDelay}
	}
	old := s.cfg.Neighbors
	var errs []error
	for _, n := range old {
		i := slices.IndexFunc(cfg.Neighbors, func(m Neighbor) bool { return m.Addr == n.Addr })
		if i >= 0 && (cfg.Neighbors[i] == n || onlyBFDChanged(n, cfg.Neighbors[i])) {
			continue
		}
		if err := s.srv.DeletePeer(context.Background(), &api.DeletePeerRequest{Address: n.Addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("remove neighbor %s: %w", n.Addr, err))
		}
		delete(s.peers, n.Addr)
		if i < 0 {
			changed = append(changed, "neighbor "+n.Addr.String()+" removed")
		}
	}
	var kept []Neighbor
	for _, n := range cfg.Neighbors {
		i := slices.IndexFunc(old, func(m Neighbor) bool { return m.Addr == n.Addr })
		if i >= 0 && old[i] == n {
			kept = append(kept, n)
			continue
		}
		if i >= 0 && onlyBFDChanged(old[i], n) {
			if _, err := s.srv.UpdatePeer(context.Background(), &api.UpdatePeerRequest{Peer: peerOf(n)}); err != nil {
				errs = append(errs, fmt.Errorf("neighbor %s: bfd: %w", n.Addr, err))
				kept = append(kept, old[i])
				continue
			}
			kept = append(kept, n)
			changed = append(changed, "neighbor "+n.Addr.String()+" "+bfdChange(old[i].BFD, n.BFD))
			continue
		}
		if err := s.srv.AddPeer(context.Background(), &api.AddPeerRequest{Peer: peerOf(n)}); err != nil {
			errs = append(errs, fmt.Errorf("add neighbor %s: %w", n.Addr, err))
			continue
		}
		s.peers[n.Addr] = &peerStats{state: "idle"}
		kept = append(kept, n)
		if i >= 0 {
			changed = append(changed, "neighbor "+n.Addr.String()+" reconnected (settings changed)")
		} else {
			changed = append(changed, "neighbor "+n.Addr.String()+" added")
		}
	}
	s.cfg.Neighbors = kept
	s.cfg.WithdrawDelay = cfg.WithdrawDelay
	s.cfg.Routes = slices.Clone(cfg.Routes)
	for p, rs := range s.routes {
		if !slices.ContainsFunc(cfg.Routes, func(r Route) bool { return r.Prefix == p }) {
			if rs.announced {
				s.withdraw(rs)
			}
			delete(s.routes, p)
			changed = append(changed, "route "+p.String()+" removed")
		}
	}
	for _, r := range cfg.Routes {
		if rs, ok := s.routes[r.Prefix]; ok {
			rs.route = r
		} else {
			s.routes[r.Prefix] = &routeState{route: r}
		}
	}
	s.sync()
	return changed, errors.Join(errs...)
}

// onlyBFDChanged says whether a and b differ in their bfd blocks alone:
// GoBGP applies that to a running session (UpdatePeer), without a reset.
func onlyBFDChanged(a, b Neighbor) bool {
	a.BFD = b.BFD
	return a == b
}

// bfdChange words a change of a neighbor's bfd block for the reload log.
// GoBGP replaces its BFD session for the neighbor (a new discriminator,
// starting down) rather than renegotiating the timers in place (RFC 5880
// 6.8.3's poll sequence): a router whose BFD session was up sees it go
// down, and with BFD tied to BGP (BIRD's "bfd on") closes the session;
// it comes back at once. Turning BFD on keeps the session.
func bfdChange(from, to config.BGPBFD) string {
	switch {
	case !from.Enabled:
		return "bfd on"
	case !to.Enabled:
		return "bfd off (a router still running BFD for it resets the session)"
	}
	return "bfd restarted with new timers (a router running BFD for it resets the session)"
}

func (s *Speaker) startServer(cfg *Config) error {
	// GoBGP logs through ours (its level var only serves its SetLogLevel
	// API): peer added, up, down, notifications; its debug lines at debug.
	srv := server.NewBgpServer(server.LoggerOption(s.log.With("lib", "gobgp"), &slog.LevelVar{}))
	go srv.Serve()
	err := srv.StartBgp(context.Background(), &api.StartBgpRequest{Global: &api.Global{
		Asn:        cfg.ASN,
		RouterId:   cfg.RouterID.String(),
		ListenPort: -1, // xdproxy opens the sessions; the routers may be passive
	}})
	if err != nil {
		srv.Stop()
		return fmt.Errorf("bgp: start: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	err = srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{
		OnPeerUpdate: func(ev *apiutil.WatchEventMessage_PeerEvent, at time.Time) {
			if ev.Type == apiutil.PEER_EVENT_STATE {
				s.peerChanged(srv, ev.Peer.State.NeighborAddress, stateName(ev.Peer.State.SessionState), ev.Peer.State.DisconnectMessage, at)
			}
		},
	}, server.WatchPeer())
	if err != nil {
		cancel()
		srv.Stop()
		return fmt.Errorf("bgp: watch peers: %w", err)
	}
	s.srv, s.cancel = srv, cancel
	for _, rs := range s.routes {
		rs.announced = false // a new server has announced nothing
	}
	s.log.Info("bgp speaker started", "asn", cfg.ASN, "router_id", cfg.RouterID)
	return nil
}

// stopServer closes every session (a Cease to each peer, which drops our
// routes) and the server.
func (s *Speaker) stopServer() {
	if s.srv == nil {
		return
	}
	s.cancel()
	s.srv.Stop()
	s.srv, s.cancel = nil, nil
	for _, rs := range s.routes {
		if rs.announced {
			rs.announced = false
			rs.withdrawals++
		}
	}
	s.peers = map[netip.Addr]*peerStats{}
	s.cfg.Neighbors = nil
}

func (s *Speaker) peerChanged(srv *server.BgpServer, addr netip.Addr, state, msg string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if srv != s.srv {
		return // an old server's last words
	}
	p := s.peers[addr]
	if p == nil || p.state == state {
		return
	}
	wasUp := p.state == "established"
	p.state, p.since = state, at
	switch {
	case state == "established":
		p.established++
		s.log.Info("bgp session up", "neighbor", addr)
	case wasUp:
		s.log.Warn("bgp session down", "neighbor", addr, "state", state, "reason", msg)
		go s.restartBFD(srv, addr)
	default:
		s.log.Debug("bgp session state", "neighbor", addr, "state", state)
	}
}

// restartBFD replaces GoBGP's BFD session with n by a fresh one (down, no
// remote discriminator) once n's BGP session went down. Without it GoBGP
// (v4.8.0) and a router that opens a new BFD session with each BGP
// session (BIRD 2) can reset each other for ever: GoBGP drops the
// packets of the router's new BFD session, whose discriminator is not
// the one it bound (bfd_peer.go, rxPacket), until its detection time
// runs out; it then resets the BGP peer, and a reset asked while the
// session is not established waits for the next one to come up and
// closes it at once (sendNotification queues a Cease); the router opens
// yet another BFD session with the next BGP session, and so on.
// TestBGPECMPBFD restarts the router's session to show it.
func (s *Speaker) restartBFD(srv *server.BgpServer, addr netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if srv != s.srv {
		return
	}
	// The neighbor as it is now (a reload may have come in between).
	i := slices.IndexFunc(s.cfg.Neighbors, func(n Neighbor) bool { return n.Addr == addr })
	if i < 0 || !s.cfg.Neighbors[i].BFD.Enabled {
		return
	}
	n := s.cfg.Neighbors[i]
	off := peerOf(n)
	off.Bfd = nil
	_, err := srv.UpdatePeer(context.Background(), &api.UpdatePeerRequest{Peer: off})
	if err == nil {
		_, err = srv.UpdatePeer(context.Background(), &api.UpdatePeerRequest{Peer: peerOf(n)})
	}
	if err != nil {
		s.log.Warn("bgp: restarting bfd after the session went down", "neighbor", n.Addr, "err", err)
		return
	}
	s.log.Info("bgp: bfd session restarted after the bgp session went down", "neighbor", n.Addr)
}

func stateName(st bgp.FSMState) string {
	switch st {
	case bgp.BGP_FSM_IDLE:
		return "idle"
	case bgp.BGP_FSM_CONNECT:
		return "connect"
	case bgp.BGP_FSM_ACTIVE:
		return "active"
	case bgp.BGP_FSM_OPENSENT:
		return "opensent"
	case bgp.BGP_FSM_OPENCONFIRM:
		return "openconfirm"
	case bgp.BGP_FSM_ESTABLISHED:
		return "established"
	}
	return "idle"
}

func apiStateName(st api.PeerState_SessionState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "SESSION_STATE_"))
}

func peerOf(n Neighbor) *api.Peer {
	fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	if n.Addr.Is6() {
		fam.Afi = api.Family_AFI_IP6
	}
	p := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: n.Addr.String(), PeerAsn: n.ASN, AuthPassword: n.Password},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:     uint64(n.HoldTime / time.Second),
			ConnectRetry: uint64(ConnectRetry / time.Second),
			// After a reset, try again soon (GoBGP's default idle hold is 30 s).
			IdleHoldTimeAfterReset: 1,
		}},
		AfiSafis:  []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: fam, Enabled: true}}},
		Transport: &api.Transport{RemotePort: uint32(n.Port)},
	}
	if n.Local.IsValid() {
		p.Transport.LocalAddress = n.Local.String()
	}
	if n.BFD.Enabled {
		// GoBGP listens on UDP 3784 and sends from a port of 49152-65535
		// with TTL 255 (RFC 5881); the intervals travel in microseconds.
		p.Bfd = &api.BfdPeerConfig{
			Enabled:                  true,
			DesiredMinimumTxInterval: uint32(n.BFD.MinTx / time.Microsecond),
			RequiredMinimumReceive:   uint32(n.BFD.MinRx / time.Microsecond),
			DetectionMultiplier:      uint32(n.BFD.Multiplier),
		}
	}
	return p
}

// bfdStateName is admin_down, down, init or up (RFC 5880 4.1); down also
// before GoBGP's BFD peer exists (unspecified).
func bfdStateName(st api.BfdSessionState) string {
	if st == api.BfdSessionState_BFD_SESSION_STATE_UNSPECIFIED {
		return "down"
	}
	return strings.ToLower(strings.TrimPrefix(st.String(), "BFD_SESSION_STATE_"))
}

// bfdView is the BFD session of n as p (nil: not known to GoBGP) reports it.
func bfdView(n Neighbor, p *api.Peer) *admin.BGPBFDView {
	if !n.BFD.Enabled {
		return nil
	}
	v := &admin.BGPBFDView{State: "down", MinTxMs: uint64(n.BFD.MinTx / time.Millisecond),
		MinRxMs: uint64(n.BFD.MinRx / time.Millisecond), Multiplier: uint32(n.BFD.Multiplier)}
	if p != nil && p.State != nil && p.State.BfdState != nil {
		st := p.State.BfdState
		v.State = bfdStateName(st.SessionState)
		if c := st.BfdAsync; c != nil {
			v.PacketsSent, v.PacketsReceived = c.TransmittedPackets, c.ReceivedPackets
		}
	}
	v.Up = v.State == "up"
	return v
}

// sync announces the routes that should be and withdraws the others.
// s.mu is held.
func (s *Speaker) sync() {
	if s.srv == nil {
		return
	}
	for _, rs := range s.routes {
		want, reason := false, "withdrawn for shutdown"
		if !s.withdrawn {
			reason = ""
			for _, l := range rs.route.Listeners {
				ok, why := s.serving(l)
				if ok {
					want, reason = true, "serving"
					break
				}
				if reason == "" {
					reason = l + ": " + why
				}
			}
		}
		rs.reason = reason
		attrs := attrKey(rs.route)
		switch {
		case want && (!rs.announced || rs.attrs != attrs):
			if err := s.announce(rs); err != nil {
				s.log.Error("bgp: announce", "prefix", rs.route.Prefix, "err", err)
				continue
			}
			if !rs.announced {
				s.log.Info("bgp: announced", "prefix", rs.route.Prefix, "listeners", rs.route.Listeners)
			}
			rs.announced, rs.attrs = true, attrs
			rs.announces++
		case !want && rs.announced:
			s.withdraw(rs)
			s.log.Info("bgp: withdrawn", "prefix", rs.route.Prefix, "reason", reason)
		}
	}
}

func attrKey(r Route) string {
	return fmt.Sprint(r.Communities, r.MED, r.HasMED)
}

func pathOf(r Route) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(r.Prefix)
	if err != nil {
		return nil, err
	}
	p := &apiutil.Path{Family: bgp.RF_IPv4_UC, Nlri: nlri}
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if r.Prefix.Addr().Is4() {
		// 0.0.0.0: GoBGP sends its address on the session as the next hop.
		nh, err := bgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, nh)
	} else {
		p.Family = bgp.RF_IPv6_UC
		mp, err := bgp.NewPathAttributeMpReachNLRI(bgp.RF_IPv6_UC, []bgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, mp)
	}
	if r.HasMED {
		attrs = append(attrs, bgp.NewPathAttributeMultiExitDisc(r.MED))
	}
	if len(r.Communities) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeCommunities(r.Communities))
	}
	p.Attrs = attrs
	return p, nil
}

func (s *Speaker) announce(rs *routeState) error {
	p, err := pathOf(rs.route)
	if err != nil {
		return err
	}
	_, err = s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{p}})
	return err
}

func (s *Speaker) withdraw(rs *routeState) {
	rs.announced = false
	rs.withdrawals++
	p, err := pathOf(rs.route)
	if err == nil {
		err = s.srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{p}})
	}
	if err != nil {
		s.log.Error("bgp: withdraw", "prefix", rs.route.Prefix, "err", err)
	}
}

// WithdrawAll withdraws every route for good (the daemon is shutting
// down) and returns how long the configuration says to wait before the
// listeners close (bgp.withdraw_delay; 0 without BGP or with nothing that
// was announced).
func (s *Speaker) WithdrawAll() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.withdrawn || s.cfg == nil {
		return 0
	}
	s.withdrawn = true
	was := false
	for _, rs := range s.routes {
		was = was || rs.announced
	}
	s.sync()
	if !was {
		return 0
	}
	return s.cfg.WithdrawDelay
}

// Stop closes the sessions and the speaker.
func (s *Speaker) Stop() {
	s.stopOnce.Do(func() {
		close(s.stop)
		s.mu.Lock()
		looping := s.looping
		s.mu.Unlock()
		if looping {
			<-s.loopDone
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.withdrawn = true
		s.sync()
		s.stopServer()
	})
}

// BGPStatus implements admin.BGPSource.
func (s *Speaker) BGPStatus() admin.BGPView {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := admin.BGPView{Neighbors: []admin.BGPNeighborView{}, Routes: []admin.BGPRouteView{}, Withdrawn: s.withdrawn}
	if s.cfg == nil {
		return v
	}
	v.Enabled, v.ASN, v.RouterID = true, s.cfg.ASN, s.cfg.RouterID.String()
	live := map[string]*api.Peer{}
	if s.srv != nil {
		s.srv.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
			if p.Conf != nil {
				live[p.Conf.NeighborAddress] = p
			}
		})
	}
	for _, n := range s.cfg.Neighbors {
		nv := admin.BGPNeighborView{Address: n.Addr.String(), ASN: n.ASN, State: "idle", HoldTime: uint64(n.HoldTime / time.Second)}
		if ps := s.peers[n.Addr]; ps != nil {
			nv.Established = ps.established
			if !ps.since.IsZero() {
				nv.Since = ps.since.UTC().Format(time.RFC3339)
			}
		}
		if p := live[n.Addr.String()]; p != nil && p.State != nil {
			nv.State = apiStateName(p.State.SessionState)
			nv.DisconnectMessage = p.State.DisconnectMessage
			if m := p.State.Messages; m != nil {
				if m.Sent != nil {
					nv.UpdatesSent = m.Sent.Update
				}
				if m.Received != nil {
					nv.UpdatesReceived = m.Received.Update
				}
			}
			if nv.State == "established" && p.Timers != nil && p.Timers.State != nil && p.Timers.State.NegotiatedHoldTime > 0 {
				nv.HoldTime = p.Timers.State.NegotiatedHoldTime
			}
		}
		nv.Up = nv.State == "established"
		nv.BFD = bfdView(n, live[n.Addr.String()])
		v.Neighbors = append(v.Neighbors, nv)
	}
	for _, r := range s.cfg.Routes {
		rs := s.routes[r.Prefix]
		if rs == nil {
			continue
		}
		rv := admin.BGPRouteView{Prefix: r.Prefix.String(), Listeners: r.Listeners, Announced: rs.announced,
			Reason: rs.reason, Announces: rs.announces, Withdrawals: rs.withdrawals}
		for _, c := range r.Communities {
			rv.Communities = append(rv.Communities, config.FormatCommunity(c))
		}
		if r.HasMED {
			med := r.MED
			rv.MED = &med
		}
		v.Routes = append(v.Routes, rv)
	}
	return v
}
