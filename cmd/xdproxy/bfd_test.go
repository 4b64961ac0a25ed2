package main

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/internal/lab"
)

// BFD beside BGP (issue 15, item 1): the ECMP lab with node 1 running BFD
// with the router and node 0 without, so that one run measures a silent
// node's route leaving the router both ways.
const (
	// bfdHold is both sessions' hold time; the keepalives go every third
	// of it, so without BFD the route of a node that went silent leaves
	// between hold-keepalive (4 s) and hold (6 s) later.
	bfdHold = 9 * time.Second
	// bfdBound is what the route's removal must beat with BFD: half of
	// the earliest the hold timer can do it.
	bfdBound = 2 * time.Second
	// bfdBlock is node 1's bfd block (BIRD's side has the same timers):
	// detection in 3 × 100 ms.
	bfdBlock      = "{min_tx: 100ms, min_rx: 100ms, multiplier: 3}"
	bfdInterval   = 100 * time.Millisecond
	bfdMultiplier = 3
)

var (
	// bfdDrop silences BFD in a node's namespace, both ways (single-hop
	// BFD goes to UDP port 3784 from either side).
	bfdDrop = [][]string{
		{"INPUT", "-p", "udp", "--dport", "3784", "-j", "DROP"},
		{"OUTPUT", "-p", "udp", "--dport", "3784", "-j", "DROP"},
	}
	// bgpDropAll silences BGP in a node's namespace (as the SIGKILL step
	// of TestBGPECMP: a dead machine closes no socket).
	bgpDropAll = [][]string{
		{"OUTPUT", "-p", "tcp", "--dport", "179", "-j", "DROP"},
		{"INPUT", "-p", "tcp", "--sport", "179", "-j", "DROP"},
	}
)

func TestBGPECMPBFD(t *testing.T) {
	topo, bird, birdDir := startECMPLab(t, bfdHold, map[int]*lab.BIRDBFD{1: {Interval: bfdInterval, Multiplier: bfdMultiplier}})
	plain := startBGPNodeWith(t, topo, 0, t.TempDir(), bgpNodeOpts{hold: bfdHold})
	fast := startBGPNodeWith(t, topo, 1, t.TempDir(), bgpNodeOpts{hold: bfdHold, bfd: bfdBlock})
	vip := netip.PrefixFrom(topo.VIP, 32)
	node0, router1 := topo.NodeAddrs[0], topo.RouterAddrs[1]
	if _, err := topo.WaitNexthops(vip, topo.NodeAddrs, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	// GoBGP's BFD and BIRD's agree: up on node 1, in /bgp and /metrics;
	// node 0 has none.
	waitBFD := func(what string, cond func(up bool, established uint64) bool) {
		t.Helper()
		end := time.Now().Add(20 * time.Second)
		for {
			v, err := fast.status()
			if err == nil && len(v.Neighbors) == 1 && v.Neighbors[0].BFD != nil &&
				cond(v.Neighbors[0].BFD.Up && v.Neighbors[0].Up, v.Neighbors[0].Established) {
				return
			}
			if time.Now().After(end) {
				t.Fatalf("node 1: %s: /bgp %+v %v", what, v, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitBFD("bfd up", func(up bool, _ uint64) bool { return up })
	m := fast.metrics()
	if got := gaugeWith(m, "xdproxy_bgp_bfd_up", "neighbor", router1.String()); got != 1 {
		t.Errorf("node 1: xdproxy_bgp_bfd_up = %v, want 1", got)
	}
	if got := gaugeWith(m, "xdproxy_bgp_bfd_packets_total", "direction", "received"); got == 0 {
		t.Errorf("node 1: no BFD packet received from the router")
	}
	if v, err := plain.status(); err != nil || len(v.Neighbors) != 1 || v.Neighbors[0].BFD != nil {
		t.Errorf("node 0 (no bfd block): /bgp %+v %v", v, err)
	}

	// BFD alone goes silent towards node 1 (BGP's keepalives still flow):
	// node 1's BFD times out and GoBGP resets the session; the route leaves
	// the router long before a hold time. Heard again, BFD comes back up and
	// so do the session and the route.
	fast.iptables("-A", bfdDrop[:1])
	cut := time.Now()
	gone, err := topo.WaitNexthops(vip, []netip.Addr{node0}, bfdHold+5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Node 1 closed the session (GoBGP's BFD peer timed out and reset it),
	// not the router: BIRD heard why.
	waitFor(t, fast.proc, "msg=Expired", 5*time.Second)
	waitFor(t, bird, `Received: Administrative reset: "BFD is down"`, 5*time.Second)
	t.Logf("bfd silent towards node 1: its BFD timed out, its route left the router %v later", gone.Round(time.Millisecond))
	if gone >= bfdBound {
		t.Errorf("node 1's route left %v after its BFD went deaf, want < %v (the hold time alone cannot before %v)", gone, bfdBound, bfdHold*2/3)
	}
	fast.iptables("-D", bfdDrop[:1])
	back, err := topo.WaitNexthops(vip, topo.NodeAddrs, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	waitBFD("bfd and the session up again", func(up bool, established uint64) bool { return up && established >= 2 })
	t.Logf("bfd heard again: route back %v after (%v after the cut)", back.Round(time.Millisecond), time.Since(cut).Round(time.Millisecond))

	// onceThenHolds says node 1's session came back exactly once and then
	// held, BFD up, through several of the flap cycles it would otherwise
	// go through (2-7 s each: GoBGP's detection time, then BIRD's error
	// wait before the next session, which the queued reset closes at once).
	onceThenHolds := func(what string, before uint64) {
		t.Helper()
		waitBFD(what, func(up bool, established uint64) bool { return up && established > before })
		time.Sleep(8 * time.Second)
		v, err := fast.status()
		if err != nil || !v.Neighbors[0].Up || v.Neighbors[0].Established != before+1 || !v.Neighbors[0].BFD.Up {
			t.Fatalf("node 1: %s: the session did not come back once and hold: established %d before, 8s after it came back %+v %v",
				what, before, v.Neighbors, err)
		}
		if _, err := topo.WaitNexthops(vip, topo.NodeAddrs, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	// The router restarts the session: BIRD opens a new BFD session with
	// the new BGP session (a new discriminator); the speaker's fresh BFD
	// session takes it (proxy/bgp restartBFD) and the session comes back
	// once, for good.
	v, err := fast.status()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := topo.Router.Run(context.Background(), "birdc", "-s", filepath.Join(birdDir, "bird.ctl"), "restart", "node1"); err != nil {
		t.Fatalf("birdc restart node1: %v %s", err, out)
	}
	onceThenHolds("after the router restarted the session", v.Neighbors[0].Established)

	// A reload with new timers: GoBGP replaces its BFD session for the
	// neighbor (new discriminator, from down), which BIRD, its session up,
	// takes for the node going down: it resets the BGP session, which comes
	// back once. The reload's log says so.
	if v, err = fast.status(); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(fast.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	slower := strings.Replace(string(cfg), bfdBlock, "{min_tx: 150ms, min_rx: 150ms, multiplier: 3}", 1)
	if err := os.WriteFile(fast.cfgPath, []byte(slower), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := fast.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, fast.proc, "bfd restarted with new timers", 10*time.Second)
	onceThenHolds("after a reload with new bfd timers", v.Neighbors[0].Established)
	if v, _ := fast.status(); v.Neighbors[0].BFD.MinTxMs != 150 {
		t.Errorf("node 1 after the reload: bfd %+v, want min_tx 150ms", v.Neighbors[0].BFD)
	}

	// SIGKILL, the machine gone silent (BGP and BFD dropped): node 1 with
	// BFD, then node 0 without.
	killSilently := func(n *bgpNode, drop [][]string, want []netip.Addr) time.Duration {
		t.Helper()
		n.iptables("-A", drop)
		cut := time.Now()
		if err := n.proc.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		n.finished = true
		waited := time.Now()
		took, err := topo.WaitNexthops(vip, want, bfdHold+5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return waited.Sub(cut) + took
	}
	withBFD := killSilently(fast, append(bgpDropAll, bfdDrop...), []netip.Addr{node0})
	withoutBFD := killSilently(plain, bgpDropAll, nil)
	t.Logf("SIGKILL, node silent: route left the router %v after with BFD (%v × %d), %v after without (hold time %v)",
		withBFD.Round(time.Millisecond), bfdInterval, bfdMultiplier, withoutBFD.Round(time.Millisecond), bfdHold)
	if withBFD >= bfdBound {
		t.Errorf("with BFD the route left %v after the node went silent, want < %v", withBFD, bfdBound)
	}
	if withoutBFD <= withBFD {
		t.Errorf("without BFD the route left in %v, not later than with BFD (%v): is the hold time in force?", withoutBFD, withBFD)
	}
}
