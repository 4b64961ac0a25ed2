package bgp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/xdproxy/xdproxy/internal/config"
)

// router is a GoBGP server standing in for a router: it listens on
// addr:port and accepts a session from 127.0.0.1 (AS 65001).
type router struct {
	srv  *server.BgpServer
	addr netip.Addr
	port uint16
}

func newRouter(t *testing.T, addr string) *router {
	t.Helper()
	// A free port on addr (GoBGP's listener takes it right after).
	ln, err := net.Listen("tcp", addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	r := &router{srv: server.NewBgpServer(), addr: netip.MustParseAddr(addr), port: uint16(port)}
	go r.srv.Serve()
	if err := r.srv.StartBgp(context.Background(), &api.StartBgpRequest{Global: &api.Global{
		Asn: 65000, RouterId: addr, ListenPort: int32(port), ListenAddresses: []string{addr},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := r.srv.AddPeer(context.Background(), &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: 65001},
		Transport: &api.Transport{PassiveMode: true},
	}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.srv.Stop)
	return r
}

func (r *router) neighbor() Neighbor {
	return Neighbor{Addr: r.addr, ASN: 65000, HoldTime: 9 * time.Second, Port: r.port, Local: netip.MustParseAddr("127.0.0.1")}
}

// received is what the router holds from us: prefix → its attributes.
type received struct {
	communities []uint32
	med         uint32
	hasMED      bool
}

func (r *router) routes(t *testing.T) map[string]received {
	t.Helper()
	out := map[string]received{}
	err := r.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: bgp.RF_IPv4_UC},
		func(prefix bgp.NLRI, paths []*apiutil.Path) {
			var got received
			for _, a := range paths[0].Attrs {
				switch a := a.(type) {
				case *bgp.PathAttributeCommunities:
					got.communities = a.Value
				case *bgp.PathAttributeMultiExitDisc:
					got.med, got.hasMED = a.Value, true
				}
			}
			out[prefix.String()] = got
		})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// health is a ServingFunc the test sets.
type health struct {
	mu sync.Mutex
	up map[string]bool
}

func (h *health) set(l string, up bool) { h.mu.Lock(); h.up[l] = up; h.mu.Unlock() }
func (h *health) serving(l string) (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.up[l] {
		return true, ""
	}
	return false, "no eligible backend"
}

func TestSpeakerFollowsHealthAndReload(t *testing.T) {
	r1 := newRouter(t, "127.0.0.2")
	r2 := newRouter(t, "127.0.0.3")
	h := &health{up: map[string]bool{"web": true, "api": true}}
	s := New(h.serving, nil)
	defer s.Stop()
	web := Route{Prefix: netip.MustParsePrefix("10.10.1.1/32"), Listeners: []string{"web"}, Communities: []uint32{65000<<16 | 100}, MED: 7, HasMED: true}
	api := Route{Prefix: netip.MustParsePrefix("10.10.1.2/32"), Listeners: []string{"api"}}
	cfg := &Config{ASN: 65001, RouterID: netip.MustParseAddr("10.0.0.1"), WithdrawDelay: 3 * time.Second,
		Neighbors: []Neighbor{r1.neighbor()}, Routes: []Route{web, api}}
	if _, err := s.Apply(cfg); err != nil {
		t.Fatal(err)
	}

	// Announced, with the attributes of the file.
	waitFor(t, "both routes at router 1", func() bool { return len(r1.routes(t)) == 2 })
	if got := r1.routes(t)["10.10.1.1/32"]; !slices.Equal(got.communities, web.Communities) || !got.hasMED || got.med != 7 {
		t.Errorf("web's route carries %+v, want communities 65000:100 and med 7", got)
	}
	st := s.BGPStatus()
	if !st.Enabled || len(st.Neighbors) != 1 || !st.Neighbors[0].Up || st.Neighbors[0].HoldTime != 9 || st.Neighbors[0].Established != 1 {
		t.Errorf("status: %+v", st)
	}

	// A listener that cannot serve is withdrawn, and comes back.
	h.set("api", false)
	s.Kick()
	waitFor(t, "api withdrawn", func() bool { _, ok := r1.routes(t)["10.10.1.2/32"]; return !ok })
	for _, rv := range s.BGPStatus().Routes {
		if rv.Prefix == "10.10.1.2/32" && (rv.Announced || rv.Reason != "api: no eligible backend" || rv.Withdrawals != 1) {
			t.Errorf("api's route: %+v", rv)
		}
	}
	h.set("api", true)
	s.Kick()
	waitFor(t, "api back", func() bool { _, ok := r1.routes(t)["10.10.1.2/32"]; return ok })

	// Reload: a second neighbor, web's communities changed, api no longer
	// announced. Router 1's session stays up.
	web2 := web
	web2.Communities = []uint32{65000<<16 | 200}
	cfg2 := &Config{ASN: 65001, RouterID: netip.MustParseAddr("10.0.0.1"), WithdrawDelay: 3 * time.Second,
		Neighbors: []Neighbor{r1.neighbor(), r2.neighbor()}, Routes: []Route{web2}}
	changed, err := s.Apply(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reload: %v", changed)
	waitFor(t, "router 2 gets web", func() bool { return len(r2.routes(t)) == 1 })
	waitFor(t, "router 1 loses api, web re-announced", func() bool {
		got := r1.routes(t)
		return len(got) == 1 && slices.Equal(got["10.10.1.1/32"].communities, web2.Communities)
	})
	for _, n := range s.BGPStatus().Neighbors {
		if n.Address == "127.0.0.2" && (n.Established != 1 || !n.Up) {
			t.Errorf("router 1's session was reset by the reload: %+v", n)
		}
	}

	// Removing a neighbor closes its session; the other stays.
	if _, err := s.Apply(&Config{ASN: 65001, RouterID: netip.MustParseAddr("10.0.0.1"), WithdrawDelay: 3 * time.Second,
		Neighbors: []Neighbor{r2.neighbor()}, Routes: []Route{web2}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "router 1 loses web with its session", func() bool { return len(r1.routes(t)) == 0 })
	if st := s.BGPStatus(); len(st.Neighbors) != 1 || st.Neighbors[0].Address != "127.0.0.3" {
		t.Errorf("neighbors after removal: %+v", st.Neighbors)
	}

	// Shutdown: everything withdrawn at once, the delay is the file's.
	if d := s.WithdrawAll(); d != 3*time.Second {
		t.Errorf("WithdrawAll = %s, want the withdraw_delay 3s", d)
	}
	waitFor(t, "router 2 empty", func() bool { return len(r2.routes(t)) == 0 })
	if st := s.BGPStatus(); !st.Withdrawn || st.Routes[0].Announced || st.Routes[0].Reason != "withdrawn for shutdown" {
		t.Errorf("after WithdrawAll: %+v", st)
	}
	// Health no longer brings it back.
	s.Kick()
	time.Sleep(2 * PollInterval)
	if n := len(r2.routes(t)); n != 0 {
		t.Errorf("%d routes re-announced after WithdrawAll", n)
	}
}

func TestSpeakerRestartsOnNewRouterID(t *testing.T) {
	r := newRouter(t, "127.0.0.4")
	s := New(func(string) (bool, string) { return true, "" }, nil)
	defer s.Stop()
	cfg := &Config{ASN: 65001, RouterID: netip.MustParseAddr("10.0.0.1"), Neighbors: []Neighbor{r.neighbor()},
		Routes: []Route{{Prefix: netip.MustParsePrefix("10.10.1.1/32"), Listeners: []string{"web"}}}}
	if _, err := s.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "route", func() bool { return len(r.routes(t)) == 1 })
	cfg.RouterID = netip.MustParseAddr("10.0.0.9")
	changed, err := s.Apply(cfg)
	if err != nil || !slices.Contains(changed, "bgp restarted (asn or router_id)") {
		t.Fatalf("Apply: %v %v", changed, err)
	}
	waitFor(t, "route again from the new speaker", func() bool {
		st := s.BGPStatus()
		return st.RouterID == "10.0.0.9" && st.Neighbors[0].Up && len(r.routes(t)) == 1
	})
	// Stopping BGP by reload (no bgp block) withdraws and closes.
	if _, err := s.Apply(nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "route gone", func() bool { return len(r.routes(t)) == 0 })
	if st := s.BGPStatus(); st.Enabled {
		t.Errorf("still enabled: %+v", st)
	}
}

func TestFromConfig(t *testing.T) {
	src := `interfaces: [{name: eth0}]
listeners:
  - {name: web, address: 10.10.1.1:80, backends: [{address: 10.10.2.2:80}]}
  - {name: tls, address: 10.10.1.1:443, backends: [{address: 10.10.2.2:443}]}
  - {name: v6, address: "[2001:db8::1]:80", backends: [{address: "[2001:db8:2::2]:80"}]}
  - {name: quiet, address: 10.10.1.9:80, backends: [{address: 10.10.2.2:80}]}
bgp:
  asn: 65001
  router_id: 10.0.0.1
  neighbors: [{address: 10.10.1.254, asn: 65000}]
  announce:
    - {listener: web, communities: ["65000:1"], med: 20}
    - {listener: tls, communities: ["65000:2", "65000:1"], med: 10}
    - {listener: v6}
`
	c, err := config.Parse("t.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	got := FromConfig(c)
	want := []Route{
		{Prefix: netip.MustParsePrefix("10.10.1.1/32"), Listeners: []string{"web", "tls"}, Communities: []uint32{65000<<16 | 1, 65000<<16 | 2}, MED: 10, HasMED: true},
		{Prefix: netip.MustParsePrefix("2001:db8::1/128"), Listeners: []string{"v6"}},
	}
	if fmt.Sprint(got.Routes) != fmt.Sprint(want) {
		t.Errorf("routes:\n%v\nwant\n%v", got.Routes, want)
	}
	if got.Neighbors[0].HoldTime != config.DefaultBGPHoldTime || got.WithdrawDelay != config.DefaultBGPWithdrawDelay {
		t.Errorf("defaults: %+v", got)
	}
}

// The router here runs no BFD, so the session never comes up; what this
// shows is the wiring: the bfd block reaches GoBGP (its BFD peer sends),
// /bgp reports it, a BGP session does not wait for BFD, and a reload that
// changes the bfd block alone keeps the BGP session. The lab test
// (cmd/xdproxy TestBGPECMPBFD) runs it against BIRD.
func TestSpeakerBFD(t *testing.T) {
	r := newRouter(t, "127.0.0.5")
	s := New(func(string) (bool, string) { return true, "" }, nil)
	defer s.Stop()
	n := r.neighbor()
	cfg := &Config{ASN: 65001, RouterID: netip.MustParseAddr("10.0.0.1"), Neighbors: []Neighbor{n},
		Routes: []Route{{Prefix: netip.MustParsePrefix("10.10.1.1/32"), Listeners: []string{"web"}}}}
	if _, err := s.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "route", func() bool { return len(r.routes(t)) == 1 })
	if f := s.BGPStatus().Neighbors[0].BFD; f != nil {
		t.Errorf("bfd view without bfd: %+v", f)
	}

	// BFD on by reload: applied in place.
	n.BFD = config.BGPBFD{Enabled: true, MinTx: 100 * time.Millisecond, MinRx: 150 * time.Millisecond, Multiplier: 4}
	cfg.Neighbors = []Neighbor{n}
	changed, err := s.Apply(cfg)
	if err != nil || !slices.Equal(changed, []string{"neighbor 127.0.0.5 bfd on"}) {
		t.Fatalf("Apply: %q %v", changed, err)
	}
	// GoBGP's BFD peer dials its socket after a second, then sends every min_tx.
	waitFor(t, "bfd packets sent", func() bool {
		f := s.BGPStatus().Neighbors[0].BFD
		return f != nil && f.PacketsSent >= 3
	})
	nv := s.BGPStatus().Neighbors[0]
	if f := nv.BFD; f.State != "down" || f.Up || f.MinTxMs != 100 || f.MinRxMs != 150 || f.Multiplier != 4 {
		t.Errorf("bfd view: %+v", f)
	}
	if !nv.Up || nv.Established != 1 {
		t.Errorf("the BGP session after bfd on: %+v", nv)
	}

	// New timers, then off: in place too; the session never reset.
	n.BFD.MinTx = 200 * time.Millisecond
	cfg.Neighbors = []Neighbor{n}
	if changed, err := s.Apply(cfg); err != nil || len(changed) != 1 || !strings.HasPrefix(changed[0], "neighbor 127.0.0.5 bfd restarted") {
		t.Fatalf("Apply: %q %v", changed, err)
	}
	if f := s.BGPStatus().Neighbors[0].BFD; f == nil || f.MinTxMs != 200 {
		t.Errorf("bfd view after new timers: %+v", f)
	}
	n.BFD = config.BGPBFD{}
	cfg.Neighbors = []Neighbor{n}
	if changed, err := s.Apply(cfg); err != nil || len(changed) != 1 || !strings.HasPrefix(changed[0], "neighbor 127.0.0.5 bfd off") {
		t.Fatalf("Apply: %q %v", changed, err)
	}
	time.Sleep(time.Second)
	if nv := s.BGPStatus().Neighbors[0]; nv.BFD != nil || !nv.Up || nv.Established != 1 {
		t.Errorf("after bfd off: %+v", nv)
	}
}

func TestPeerOfBFD(t *testing.T) {
	n := Neighbor{Addr: netip.MustParseAddr("10.10.1.254"), ASN: 65000, HoldTime: 9 * time.Second}
	if p := peerOf(n); p.Bfd != nil {
		t.Errorf("bfd off: %+v", p.Bfd)
	}
	n.BFD = config.BGPBFD{Enabled: true, MinTx: 300 * time.Millisecond, MinRx: 250 * time.Millisecond, Multiplier: 3}
	// RFC 5880's intervals are microseconds.
	if b := peerOf(n).Bfd; b == nil || !b.Enabled || b.DesiredMinimumTxInterval != 300000 || b.RequiredMinimumReceive != 250000 || b.DetectionMultiplier != 3 {
		t.Errorf("bfd on: %+v", b)
	}
}

func TestBFDStateNames(t *testing.T) {
	for st, want := range map[api.BfdSessionState]string{
		api.BfdSessionState_BFD_SESSION_STATE_UNSPECIFIED: "down",
		api.BfdSessionState_BFD_SESSION_STATE_ADMIN_DOWN:  "admin_down",
		api.BfdSessionState_BFD_SESSION_STATE_DOWN:        "down",
		api.BfdSessionState_BFD_SESSION_STATE_INIT:        "init",
		api.BfdSessionState_BFD_SESSION_STATE_UP:          "up",
	} {
		if got := bfdStateName(st); got != want {
			t.Errorf("%v: %q, want %q", st, got, want)
		}
	}
}
