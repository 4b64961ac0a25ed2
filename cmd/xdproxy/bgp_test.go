package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/internal/lab"
	"github.com/xdproxy/xdproxy/proxy/admin"
)

// Issue 15: two xdproxy nodes behind a BIRD router with ECMP, each
// announcing the VIP over BGP. The test's own address plan is
// lab.ECMPTopology's.

const (
	bgpHold     = 3 * time.Second // the neighbors' hold time (short, to measure)
	bgpWithdraw = 2 * time.Second // withdraw_delay
	bgpPassword = "lab-md5"
)

type bgpNode struct {
	t        *testing.T
	i        int
	ns       *lab.NS
	addr     netip.Addr
	cfgPath  string
	proc     *lab.Proc
	admin    *http.Client
	finished bool // stopped or killed by the test
}

// bgpNodeOpts are what differs between the tests' node configurations.
type bgpNodeOpts struct {
	hold time.Duration // the neighbor's hold_time
	bfd  string        // the neighbor's bfd block in flow style ("": none)
}

func bgpNodeConfig(topo *lab.ECMPTopology, i int, stateDir string, o bgpNodeOpts) string {
	bfd := ""
	if o.bfd != "" {
		bfd = "\n      bfd: " + o.bfd
	}
	return fmt.Sprintf(`interfaces:
  - name: %s
listeners:
  - name: web
    address: %s:80
    balance: maglev
    health_check: {interval: 500ms, timeout: 400ms, rise: 1, fall: 2}
    backends:
      - address: %s:8080
      - address: %s:8080
drain_timeout: 15s
state_dir: %s
admin:
  address: 127.0.0.1:9100
bgp:
  asn: 65001
  router_id: %s
  withdraw_delay: %s
  neighbors:
    - address: %s
      asn: 65000
      hold_time: %s
      password: %s%s
  second_chance:
    peers: [%s]
`, topo.NodeIfs[i], topo.VIP, topo.BackendAddrs[0], topo.BackendAddrs[1], stateDir,
		topo.NodeAddrs[i], bgpWithdraw, topo.RouterAddrs[i], o.hold, bgpPassword, bfd, strings.Join(otherNodes(topo, i), ", "))
}

// otherNodes are the addresses of every node but i: its second chance peers.
func otherNodes(topo *lab.ECMPTopology, i int) []string {
	var out []string
	for j, a := range topo.NodeAddrs {
		if j != i {
			out = append(out, a.String())
		}
	}
	return out
}

// metrics returns the node's /metrics text ("" when it does not answer).
func (n *bgpNode) metrics() string {
	resp, err := n.admin.Get("http://127.0.0.1:9100/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// secondChance reads the node's second chance counters: segments it
// forwarded to its peer, and segments the peer forwarded that its XDP
// program decapsulated.
func (n *bgpNode) secondChance() (forwarded, received float64) {
	m := n.metrics()
	return gaugeWith(m, "xdproxy_tcp_events_total", "counter", "second_chance_forwarded"),
		gaugeWith(m, "xdproxy_xdp_packets_total", "reason", "redirect_second_chance")
}

// finishAll finishes the sessions at once (a lost one takes its whole
// deadline) and returns the errors.
func finishAll(ss []*session) []error {
	errs := make([]error, len(ss))
	var wg sync.WaitGroup
	for i, s := range ss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.finish()
		}()
	}
	wg.Wait()
	var out []error
	for _, err := range errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// startBGPNode runs the daemon of node i (state in stateDir) and waits for
// msg=ready.
func startBGPNode(t *testing.T, topo *lab.ECMPTopology, i int, stateDir string) *bgpNode {
	t.Helper()
	return startBGPNodeWith(t, topo, i, stateDir, bgpNodeOpts{hold: bgpHold})
}

func startBGPNodeWith(t *testing.T, topo *lab.ECMPTopology, i int, stateDir string, o bgpNodeOpts) *bgpNode {
	t.Helper()
	n := &bgpNode{t: t, i: i, ns: topo.Nodes[i], addr: topo.NodeAddrs[i]}
	n.cfgPath = filepath.Join(t.TempDir(), "xdproxy.yaml")
	if err := os.WriteFile(n.cfgPath, []byte(bgpNodeConfig(topo, i, stateDir, o)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := n.ns.Run(context.Background(), xdproxyBin, "check", "--config", n.cfgPath); err != nil {
		t.Fatalf("node %d: check: %v\n%s", i, err, out)
	}
	p, err := n.ns.Start(context.Background(), xdproxyBin, "run", "--config", n.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	n.proc = p
	n.admin = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return n.ns.DialTCP(ctx, addr) }}}
	t.Cleanup(func() {
		if !n.finished {
			n.proc.Signal(syscall.SIGTERM)
			select {
			case <-n.proc.Done():
			case <-time.After(30 * time.Second):
				n.proc.Stop(0)
			}
		}
		if t.Failed() {
			t.Logf("node %d output (tail):\n%s", i, tail(n.proc.Output(), 4000))
		}
	})
	waitFor(t, p, "msg=ready", 30*time.Second)
	return n
}

// iptables adds (-A) or deletes (-D) rules in the node's namespace.
func (n *bgpNode) iptables(op string, rules [][]string) {
	n.t.Helper()
	for _, rule := range rules {
		if out, err := n.ns.Run(context.Background(), "iptables", append([]string{op}, rule...)...); err != nil {
			n.t.Fatalf("node %d: iptables %s %v: %v %s", n.i, op, rule, err, out)
		}
	}
}

func (n *bgpNode) status() (admin.BGPView, error) {
	var v admin.BGPView
	resp, err := n.admin.Get("http://127.0.0.1:9100/bgp")
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	return v, json.NewDecoder(resp.Body).Decode(&v)
}

// serveIdentity answers each connection with "BACKEND NODE\n" (its own
// address and the peer's, which is the node that dialed it), then waits
// for one line and answers "ok\n" and closes (so the client end of each
// session is the passive closer and keeps no TIME_WAIT).
func serveIdentity(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			local := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr()
			remote := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
			fmt.Fprintf(c, "%s %s\n", local, remote)
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
				return
			}
			io.WriteString(c, "ok\n")
		}()
	}
}

// session is one client connection through the VIP.
type session struct {
	port          int
	node, backend string
	c             *net.TCPConn
	r             *bufio.Reader
}

// open connects from the client's port to the VIP and reads which node
// and backend serve it.
func openSession(topo *lab.ECMPTopology, port int) (*session, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var c net.Conn
	err := topo.Client.Do(func() (err error) {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(topo.ClientAddr, uint16(port)))}
		c, err = d.DialContext(ctx, "tcp", netip.AddrPortFrom(topo.VIP, 80).String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("port %d: dial: %w", port, err)
	}
	s := &session{port: port, c: c.(*net.TCPConn), r: bufio.NewReader(c)}
	s.c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := s.r.ReadString('\n')
	if err != nil {
		s.c.Close()
		return nil, fmt.Errorf("port %d: reading the greeting: %w", port, err)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		s.c.Close()
		return nil, fmt.Errorf("port %d: greeting %q", port, line)
	}
	s.backend, s.node = f[0], f[1]
	return s, nil
}

// finish sends the request, reads "ok" and the backend's close.
func (s *session) finish() error {
	defer s.c.Close()
	s.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(s.c, "x\n"); err != nil {
		return fmt.Errorf("port %d: write: %w", s.port, err)
	}
	rest, err := io.ReadAll(s.r)
	if err != nil || string(rest) != "ok\n" {
		return fmt.Errorf("port %d: answer %q, %v", s.port, rest, err)
	}
	return nil
}

type result struct {
	node, backend string
	err           error
}

// exchange runs whole sessions from each client port, 32 at a time.
func exchange(topo *lab.ECMPTopology, ports []int) map[int]result {
	out := make(map[int]result, len(ports))
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				var r result
				s, err := openSession(topo, p)
				if err == nil {
					r.node, r.backend = s.node, s.backend
					err = s.finish()
				}
				r.err = err
				mu.Lock()
				out[p] = r
				mu.Unlock()
			}
		}()
	}
	for _, p := range ports {
		work <- p
	}
	close(work)
	wg.Wait()
	return out
}

func portRange(lo, n int) []int {
	ps := make([]int, n)
	for i := range ps {
		ps[i] = lo + i
	}
	return ps
}

// holdSessions opens sessions from ports lo, lo+1, ... until want of them
// are served by node (the others are finished at once).
func holdSessions(t *testing.T, topo *lab.ECMPTopology, lo int, node netip.Addr, want int) []*session {
	t.Helper()
	var held []*session
	for p := lo; len(held) < want; p++ {
		if p > lo+20*want {
			t.Fatalf("only %d of %d sessions landed on %s", len(held), p-lo, node)
		}
		s, err := openSession(topo, p)
		if err != nil {
			t.Fatal(err)
		}
		if s.node == node.String() {
			s.c.SetDeadline(time.Time{})
			held = append(held, s)
		} else if err := s.finish(); err != nil {
			t.Fatal(err)
		}
	}
	return held
}

// startECMPLab builds the two-node ECMP lab, runs BIRD on its router
// (hold time hold; BFD with node i when bfd[i] is set) and the identity
// backends. It returns BIRD and its directory (bird.ctl, for birdc).
func startECMPLab(t *testing.T, hold time.Duration, bfd map[int]*lab.BIRDBFD) (*lab.ECMPTopology, *lab.Proc, string) {
	t.Helper()
	lab.RequireRoot(t)
	if err := lab.EnsureTools("bird", "iptables"); err != nil {
		t.Fatal(err)
	}
	l, err := lab.New(t)
	if err != nil {
		t.Fatal(err)
	}
	topo, err := l.NewECMPTopology(2)
	if err != nil {
		t.Fatal(err)
	}
	var peers []lab.BIRDPeer
	for i := range topo.Nodes {
		peers = append(peers, lab.BIRDPeer{Node: topo.NodeAddrs[i], Local: topo.RouterAddrs[i], ASN: 65001,
			HoldTime: int(hold / time.Second), Password: bgpPassword, BFD: bfd[i]})
	}
	dir := t.TempDir()
	bird, err := topo.StartBIRD(context.Background(), dir, 65000, peers)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("bird output (tail):\n%s", tail(bird.Output(), 3000))
		}
	})
	for _, a := range topo.BackendAddrs {
		ln, err := topo.Backends.ListenTCP(netip.AddrPortFrom(a, 8080).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go serveIdentity(ln)
	}
	return topo, bird, dir
}

func TestBGPECMP(t *testing.T) {
	topo, _, _ := startECMPLab(t, bgpHold, nil)
	states := []string{t.TempDir(), t.TempDir()}
	nodes := []*bgpNode{startBGPNode(t, topo, 0, states[0]), startBGPNode(t, topo, 1, states[1])}
	vip := netip.PrefixFrom(topo.VIP, 32)
	node0, node1 := topo.NodeAddrs[0], topo.NodeAddrs[1]

	// Both routes, one multipath route in the router's kernel table.
	took, err := topo.WaitNexthops(vip, topo.NodeAddrs, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("multipath route via %v installed %v after both nodes were ready", topo.NodeAddrs, took.Round(time.Millisecond))
	for _, n := range nodes {
		v, err := n.status()
		if err != nil || !v.Enabled || len(v.Neighbors) != 1 || !v.Neighbors[0].Up || len(v.Routes) != 1 || !v.Routes[0].Announced {
			t.Fatalf("node %d: /bgp %+v %v", n.i, v, err)
		}
	}

	// 1,000 connections split between the nodes, every one answered.
	clientPorts := portRange(41000, 1000)
	first := exchange(topo, clientPorts)
	perNode := map[string]int{}
	for p, r := range first {
		if r.err != nil {
			t.Fatalf("port %d: %v", p, r.err)
		}
		perNode[r.node]++
	}
	t.Logf("1,000 connections: %v", perNode)
	for _, a := range topo.NodeAddrs {
		if n := perNode[a.String()]; n < 300 || n > 700 {
			t.Errorf("node %s served %d of 1,000 connections, want 300-700", a, n)
		}
	}

	// Health gates the route: node 1 with every backend in maintenance
	// withdraws it; one backend ready again brings it back.
	setState := func(n *bgpNode, backend netip.Addr, state string) {
		t.Helper()
		url := fmt.Sprintf("http://127.0.0.1:9100/backends/web/%s:8080", backend)
		resp, err := n.admin.Post(url, "application/json", strings.NewReader(`{"state": "`+state+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %s", url, resp.Status)
		}
	}
	for _, b := range topo.BackendAddrs {
		setState(nodes[1], b, "maint")
	}
	gone, err := topo.WaitNexthops(vip, []netip.Addr{node0}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := nodes[1].status(); len(v.Routes) != 1 || v.Routes[0].Announced || v.Routes[0].Reason != "web: no eligible backend" {
		t.Errorf("node 1's route with no backend: %+v", v.Routes)
	}
	setState(nodes[1], topo.BackendAddrs[0], "ready")
	back, err := topo.WaitNexthops(vip, topo.NodeAddrs, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	setState(nodes[1], topo.BackendAddrs[1], "ready")
	t.Logf("health: node 1's route left %v after its last backend went to maint, came back %v after one was ready",
		gone.Round(time.Millisecond), back.Round(time.Millisecond))

	// A reload (SIGHUP, same bgp block) keeps the session.
	if err := nodes[1].proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, nodes[1].proc, "reload applied", 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	if v, err := nodes[1].status(); err != nil || !v.Neighbors[0].Up || v.Neighbors[0].Established != 1 {
		t.Errorf("node 1's session after a reload: %+v %v", v.Neighbors, err)
	}

	// Drain node 0: its route leaves before its listener closes, no new
	// connection is refused, its open sessions finish.
	held := holdSessions(t, topo, 45000, node0, 8)
	stopLoad := make(chan struct{})
	var loadWG sync.WaitGroup
	var loadMu sync.Mutex
	var loadErrs []error
	loadCount := 0
	const loadWorkers = 4
	for w := range loadWorkers {
		loadWG.Add(1)
		go func() {
			defer loadWG.Done()
			for p := 46000 + w*1000; ; p++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				s, err := openSession(topo, p)
				if err == nil {
					err = s.finish()
				}
				loadMu.Lock()
				loadCount++
				if err != nil {
					loadErrs = append(loadErrs, err)
				}
				loadMu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	sigterm := time.Now()
	if err := nodes[0].proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	withdrawn, err := topo.WaitNexthops(vip, []netip.Addr{node1}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, nodes[0].proc, "msg=draining", 10*time.Second)
	draining := time.Since(sigterm)
	t.Logf("drain: route withdrawn %v after SIGTERM, listener closed %v after", withdrawn.Round(time.Millisecond), draining.Round(time.Millisecond))
	if withdrawn >= draining {
		t.Errorf("the route left %v after SIGTERM, not before the listener closed (%v)", withdrawn, draining)
	}
	time.Sleep(500 * time.Millisecond) // new clients meet the closed listener if they still reach node 0
	// Sessions open on node 0 when its route left: their next segments
	// reach node 1 (the router's ECMP now has one next hop), which holds
	// no state for them and hands them to node 0 (second chance); node 0
	// answers the clients through the router. Every one finishes.
	fwdBefore, _ := nodes[1].secondChance()
	failed := finishAll(held)
	fwd, _ := nodes[1].secondChance()
	_, rcvd := nodes[0].secondChance() // node 0 may have finished its drain and gone: 0
	t.Logf("drain: %d of %d sessions open on node 0 when its route left finished; node 1 forwarded %.0f segments to node 0, which decapsulated %.0f",
		len(held)-len(failed), len(held), fwd-fwdBefore, rcvd)
	for _, err := range failed {
		t.Errorf("drain: a session open on node 0 did not finish: %v", err)
	}
	if fwd-fwdBefore < float64(len(held)) {
		t.Errorf("drain: node 1 forwarded %.0f segments, want at least one per held session (%d)", fwd-fwdBefore, len(held))
	}
	close(stopLoad)
	loadWG.Wait()
	// A refusal is a SYN answered with a reset: the closed listener.
	// A session open across the route change (its SYN to node 0, its
	// later segments to node 1) is handed back to node 0 as above: none
	// fails.
	refused, remapped := 0, 0
	for _, err := range loadErrs {
		if errors.Is(err, syscall.ECONNREFUSED) {
			refused++
			t.Errorf("new connection refused during the drain: %v", err)
		} else {
			remapped++
			t.Errorf("new connection failed during the drain: %v", err)
		}
	}
	t.Logf("drain: %d new connections during the drain: %d refused, %d failed otherwise", loadCount, refused, remapped)
	select {
	case <-nodes[0].proc.Done():
		if err := nodes[0].proc.Wait(); err != nil {
			t.Errorf("node 0 after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("node 0 did not exit after its drain")
	}
	nodes[0].finished = true

	// Node 0 again; then node 1 dies (SIGKILL) with its BGP packets
	// dropped, as when a machine dies (a killed process's socket would
	// otherwise tell the router at once): the router drops its route when
	// the hold time runs out.
	nodes[0] = startBGPNode(t, topo, 0, states[0])
	if _, err := topo.WaitNexthops(vip, topo.NodeAddrs, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	inflight := holdSessions(t, topo, 47000, node1, 20)
	cut := time.Now()
	bgpDrop := [][]string{
		{"OUTPUT", "-p", "tcp", "--dport", "179", "-j", "DROP"},
		{"INPUT", "-p", "tcp", "--sport", "179", "-j", "DROP"},
	}
	nodes[1].iptables("-A", bgpDrop)
	killed := time.Now()
	if err := nodes[1].proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	nodes[1].finished = true
	failover, err := topo.WaitNexthops(vip, []netip.Addr{node0}, bgpHold+5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	failover = time.Since(cut) - time.Since(killed) + failover // from the moment node 1 went silent
	t.Logf("SIGKILL: node 1's route left the router %v after node 1 went silent (hold time %v)", failover.Round(time.Millisecond), bgpHold)
	if failover > bgpHold+2*time.Second {
		t.Errorf("failover took %v, want within the hold time %v (+2s of slack)", failover, bgpHold)
	}
	// Node 0 hands their segments to node 1, whose kernel, with no daemon
	// there, answers ICMP protocol unreachable: node 0 passes node 1 over
	// (second_chance_peer_unreachable) and resets them, as it would without
	// second chance. (A machine that is gone answers nothing: its clients
	// would time out instead.)
	lostAt := time.Now()
	lost := len(finishAll(inflight))
	unreachable := gaugeWith(nodes[0].metrics(), "xdproxy_tcp_events_total", "counter", "second_chance_peer_unreachable")
	t.Logf("SIGKILL: %d of %d sessions open on node 1 were lost, within %v (node 0 heard %.0f ICMP unreachables for what it forwarded to node 1)",
		lost, len(inflight), time.Since(lostAt).Round(time.Millisecond), unreachable)
	if unreachable == 0 {
		t.Errorf("SIGKILL: node 0 forwarded node 1's sessions but never heard that node 1 cannot take them")
	}
	after := exchange(topo, portRange(48000, 200))
	for p, r := range after {
		if r.err != nil {
			t.Errorf("new connection after the failover: port %d: %v", p, r.err)
		} else if r.node != node0.String() {
			t.Errorf("new connection after the failover went to %s", r.node)
		}
	}

	// Maglev across nodes: the same 1,000 client ports, now all on node 0,
	// reach the backends they reached before (through either node).
	again := exchange(topo, clientPorts)
	crossed, mismatched := 0, 0
	for _, p := range clientPorts {
		r := again[p]
		if r.err != nil {
			t.Errorf("replay: port %d: %v", p, r.err)
			continue
		}
		if first[p].node != r.node {
			crossed++
		}
		if first[p].backend != r.backend {
			mismatched++
		}
	}
	t.Logf("maglev: 1,000 client ports replayed, %d of them served by the other node than the first time; %d reached another backend", crossed, mismatched)
	if mismatched > 0 || crossed < 300 {
		t.Errorf("maglev: %d of 1,000 client ports changed backend (%d crossed nodes)", mismatched, crossed)
	}

	// A node added: sessions open on node 0 while it served alone keep
	// working once node 1's route appears, though about half of them now
	// hash to node 1, which hands their segments to node 0.
	alone := holdSessions(t, topo, 50000, node0, 16)
	nodes[1].iptables("-D", bgpDrop)
	nodes[1] = startBGPNode(t, topo, 1, states[1])
	if _, err := topo.WaitNexthops(vip, topo.NodeAddrs, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	failed = finishAll(alone)
	fwd, _ = nodes[1].secondChance()
	_, rcvd = nodes[0].secondChance()
	t.Logf("node added: %d of %d sessions open on node 0 before node 1's route appeared finished; node 1 forwarded %.0f segments, node 0 decapsulated %.0f",
		len(alone)-len(failed), len(alone), fwd, rcvd)
	for _, err := range failed {
		t.Errorf("node added: a session open on node 0 did not finish: %v", err)
	}
	if fwd == 0 || rcvd == 0 {
		t.Errorf("node added: no segment went through second chance (forwarded %.0f, decapsulated %.0f): did no session hash to node 1?", fwd, rcvd)
	}
}
