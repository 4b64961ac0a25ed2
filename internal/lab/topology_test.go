package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestTopologyShapes builds each deployment shape and proves its plumbing
// with the kernel alone: who reaches whom, through which interface, with
// how many queues and which offloads.
func TestTopologyShapes(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    TopologyOpts
	}{
		{"one-armed-v4", TopologyOpts{Queues: 1}},
		{"one-armed-v6", TopologyOpts{Queues: 2, IPv6: true}},
		{"two-armed-v4", TopologyOpts{Shape: TwoArmed}},
		{"two-armed-v6", TopologyOpts{Shape: TwoArmed, IPv6: true}},
		{"two-armed-multiqueue", TopologyOpts{Shape: TwoArmed, IPv6: true, Queues: 4, BackQueues: 2}},
		{"two-armed-offload", TopologyOpts{Shape: TwoArmed, IPv6: true, TxChecksumOffload: true}},
		{"one-armed-offload", TopologyOpts{IPv6: true, TxChecksumOffload: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newLab(t)
			topo, err := l.NewTopologyWith(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			checkTopology(t, topo, tc.o)
		})
	}
}

// TestTopologyDefault checks that NewTopology(q) is today's one-armed IPv4
// topology, field by field.
func TestTopologyDefault(t *testing.T) {
	l := newLab(t)
	topo, err := l.NewTopology(1)
	if err != nil {
		t.Fatal(err)
	}
	if topo.ClientAddr.String() != "10.10.0.2" || topo.ProxyAddr.String() != "10.10.1.1" ||
		fmt.Sprint(topo.BackendAddrs) != "[10.10.2.2 10.10.2.3]" {
		t.Errorf("addresses: client %v proxy %v backends %v", topo.ClientAddr, topo.ProxyAddr, topo.BackendAddrs)
	}
	if topo.ClientAddr6.IsValid() || topo.ProxyAddr6.IsValid() || topo.BackendAddrs6 != nil || topo.ProxyBackAddr.IsValid() || topo.BackLink != nil {
		t.Errorf("IPv6 or two-armed fields set: %+v", topo)
	}
	if topo.BackendLink.A.NS != topo.Backends || topo.BackendLink.B.NS != topo.Router ||
		topo.ProxyLink.A.NS != topo.Proxy || topo.ProxyLink.B.NS != topo.Router ||
		topo.ClientLink.A.NS != topo.Client || topo.ClientLink.B.NS != topo.Router {
		t.Error("links' ends are not where they were")
	}
	if topo.ProxyIf != l.Prefix()+"p0" || fmt.Sprint(topo.ProxyIfs) != "["+topo.ProxyIf+"]" {
		t.Errorf("ProxyIf %q, ProxyIfs %q", topo.ProxyIf, topo.ProxyIfs)
	}
	checkTopology(t, topo, TopologyOpts{Queues: 1})
	for _, o := range []TopologyOpts{{BackQueues: 2}, {Shape: TwoArmed, BackQueues: -1}, {Shape: 7}} {
		if _, err := l.NewTopologyWith(o); err == nil {
			t.Errorf("NewTopologyWith(%+v): no error", o)
		}
	}
}

const (
	topoBackendPort = 7100
	topoFrontPort   = 7101
)

func checkTopology(t *testing.T, topo *Topology, o TopologyOpts) {
	t.Helper()
	twoArmed := o.Shape == TwoArmed

	// The proxy's interfaces, front first, and its links' queues.
	wantIfs := []string{topo.ProxyLink.A.Name}
	if twoArmed {
		if topo.BackLink == nil || topo.BackLink.A.NS != topo.Proxy || topo.BackLink.B.NS != topo.Backends ||
			topo.BackendLink.A != topo.BackLink.B || topo.BackendLink.B != topo.BackLink.A {
			t.Fatalf("two-armed back link: %+v, backend link %+v", topo.BackLink, topo.BackendLink)
		}
		wantIfs = append(wantIfs, topo.BackLink.A.Name)
	}
	if topo.ProxyIf != wantIfs[0] || strings.Join(topo.ProxyIfs, " ") != strings.Join(wantIfs, " ") {
		t.Errorf("ProxyIf %q, ProxyIfs %q; want %q", topo.ProxyIf, topo.ProxyIfs, wantIfs)
	}
	queues := func(ends []*End, want int) {
		for _, e := range ends {
			link, err := e.NS.Netlink().LinkByIndex(e.Index)
			if err != nil {
				t.Fatal(err)
			}
			if a := link.Attrs(); a.NumTxQueues != want || a.NumRxQueues != want {
				t.Errorf("%s: %d TX, %d RX queues; want %d", e.Name, a.NumTxQueues, a.NumRxQueues, want)
			}
		}
	}
	queues([]*End{topo.ProxyLink.A, topo.ProxyLink.B}, max(o.Queues, 1))
	if twoArmed {
		back := o.BackQueues
		if back == 0 {
			back = o.Queues
		}
		queues([]*End{topo.BackLink.A, topo.BackLink.B}, max(back, 1))
	}

	// Offloads of every end.
	links := []*Veth{topo.ClientLink, topo.ProxyLink, topo.BackendLink}
	for _, v := range links {
		for _, e := range []*End{v.A, v.B} {
			out, err := e.NS.Run(context.Background(), "ethtool", "-k", e.Name)
			if err != nil {
				t.Fatal(err)
			}
			want := "tx-checksumming: off"
			if o.TxChecksumOffload {
				want = "tx-checksumming: on"
			}
			if !strings.Contains(out, want) {
				t.Errorf("ethtool -k %s in %s: no %q:\n%s", e.Name, e.NS.Name, want, out)
			}
		}
	}

	// The addresses of each family.
	fams := []family{{"IPv4", topo.ClientAddr, topo.ProxyAddr, topo.BackendAddrs, topo.ProxyBackAddr, topo.ProxyLink.B.IP4()}}
	if o.IPv6 {
		fams = append(fams, family{"IPv6", topo.ClientAddr6, topo.ProxyAddr6, topo.BackendAddrs6, topo.ProxyBackAddr6, topo.ProxyLink.B.IP6()})
	} else if topo.ClientAddr6.IsValid() || topo.ProxyAddr6.IsValid() || len(topo.BackendAddrs6) != 0 || topo.ProxyBackAddr6.IsValid() {
		t.Errorf("IPv6 addresses without IPv6: %v %v %v %v", topo.ClientAddr6, topo.ProxyAddr6, topo.BackendAddrs6, topo.ProxyBackAddr6)
	}
	if !twoArmed {
		for i := range fams {
			if fams[i].proxyBack.IsValid() {
				t.Errorf("one-armed, with a back address %v", fams[i].proxyBack)
			}
			fams[i].proxyBack = fams[i].proxy
		}
	}
	for _, f := range fams {
		if !f.client.IsValid() || !f.proxy.IsValid() || len(f.backends) != 2 || !f.proxyBack.IsValid() {
			t.Fatalf("%s: client %v, proxy %v, backends %v, proxy's back address %v", f.name, f.client, f.proxy, f.backends, f.proxyBack)
		}
	}
	if !o.IPv6 {
		// No global IPv6 address anywhere.
		for _, v := range links {
			for _, e := range []*End{v.A, v.B} {
				link, _ := e.NS.Netlink().LinkByIndex(e.Index)
				as, err := e.NS.Netlink().AddrList(link, netlink.FAMILY_V6)
				if err != nil {
					t.Fatal(err)
				}
				for _, a := range as {
					if !a.IP.IsLinkLocalUnicast() {
						t.Errorf("%s: IPv6 address %v without IPv6", e.Name, a.IPNet)
					}
				}
			}
		}
	}

	// Backends: from the proxy, each address of each family, out of the
	// expected interface (the back one in two-armed), with the proxy's
	// address there as the source.
	ln, err := topo.Backends.ListenTCP(fmt.Sprintf(":%d", topoBackendPort))
	if err != nil {
		t.Fatal(err)
	}
	peers := echoPeers(ln)
	out := topo.ProxyLink.A // the proxy's interface towards the backends
	if twoArmed {
		out = topo.BackLink.A
	}
	outPeer := topo.ProxyLink.B
	if twoArmed {
		outPeer = topo.BackLink.B
	}
	var stop func() error
	pcap := filepath.Join(t.TempDir(), "back.pcap")
	if stop, err = topo.Proxy.Capture(context.Background(), out.Name, fmt.Sprintf("tcp port %d", topoBackendPort), pcap); err != nil {
		t.Fatal(err)
	}
	before := txPackets(t, out)
	for _, f := range fams {
		for _, b := range f.backends {
			r := routeGet(t, topo.Proxy, b)
			if r.LinkIndex != out.Index {
				t.Errorf("proxy → %v: the kernel routes it out of ifindex %d, want %s (%d)", b, r.LinkIndex, out.Name, out.Index)
			}
			if twoArmed && r.Gw != nil {
				t.Errorf("proxy → %v: via %v, want on-link", b, r.Gw)
			}
			if !twoArmed && !r.Gw.Equal(f.router.AsSlice()) {
				t.Errorf("proxy → %v: via %v, want the router %v", b, r.Gw, f.router)
			}
			local, err := dialEcho(topo.Proxy, netip.AddrPortFrom(b, topoBackendPort), "")
			if err != nil {
				t.Errorf("proxy → backend %v: %v", b, err)
				continue
			}
			if local.Addr() != f.proxyBack {
				t.Errorf("proxy → backend %v: from %v, want %v", b, local, f.proxyBack)
			}
			if got := <-peers; got.Addr() != f.proxyBack {
				t.Errorf("backend %v saw the proxy as %v, want %v", b, got, f.proxyBack)
			}
		}
	}
	if after := txPackets(t, out); after-before < uint64(4*2*len(fams)) {
		t.Errorf("%s sent %d packets for %d connections to the backends", out.Name, after-before, 2*len(fams))
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Segments of the backends' kernels as the proxy receives them:
	// complete checksums, or partial ones with the offload left on.
	good, bad := checkPcap(t, pcap, outPeer.MAC)
	t.Logf("backends' segments on %s: %d with a full checksum, %d partial", out.Name, good, bad)
	if good+bad < 4*len(fams) {
		t.Errorf("captured only %d segments from the backends on %s", good+bad, out.Name)
	}
	if o.TxChecksumOffload && bad == 0 {
		t.Error("no partial checksums with TxChecksumOffload")
	}
	if !o.TxChecksumOffload && bad != 0 {
		t.Errorf("%d partial checksums with the offload off", bad)
	}

	if twoArmed {
		// The backends' replies (and anything else) go back through p1.
		for _, f := range fams {
			r := routeGet(t, topo.Backends, f.client)
			if r.LinkIndex != topo.BackLink.B.Index || !r.Gw.Equal(f.proxyBack.AsSlice()) {
				t.Errorf("backends → %v: ifindex %d via %v; want %s via %v", f.client, r.LinkIndex, r.Gw, topo.BackLink.B.Name, f.proxyBack)
			}
		}
		// A leg that leaves through the front interface cannot reach the
		// backends (the router answers with an ICMP unreachable), and nor
		// can the router. The dials run at once: Linux's TCP over IPv6
		// takes the first ICMPv6 error for a SYN while connect() still
		// holds the socket (LockDroppedIcmps) and only gives up on the
		// retransmitted SYN's, a second later.
		var wg sync.WaitGroup
		for _, f := range fams {
			for _, b := range f.backends {
				wg.Go(func() {
					if _, err := dialEcho(topo.Proxy, netip.AddrPortFrom(b, topoBackendPort), topo.ProxyIf); !unreachable(err) {
						t.Errorf("proxy → backend %v out of the front interface: %v, want unreachable", b, err)
					}
				})
				if _, err := topo.Router.Netlink().RouteGet(b.AsSlice()); err == nil {
					t.Errorf("the router has a route to the backend %v", b)
				}
				if _, err := dialEcho(topo.Router, netip.AddrPortFrom(b, topoBackendPort), ""); !unreachable(err) {
					t.Errorf("router → backend %v: %v, want unreachable", b, err)
				}
			}
		}
		wg.Wait()
	}

	// The client reaches the proxy's front address through the router.
	fl, err := topo.Proxy.ListenTCP(fmt.Sprintf(":%d", topoFrontPort))
	if err != nil {
		t.Fatal(err)
	}
	clients := echoPeers(fl)
	for _, f := range fams {
		r := routeGet(t, topo.Client, f.proxy)
		if gw := routerOf(topo.ClientLink.B, f.proxy); r.LinkIndex != topo.ClientLink.A.Index || !r.Gw.Equal(gw.AsSlice()) {
			t.Errorf("client → %v: ifindex %d via %v; want %s via %v", f.proxy, r.LinkIndex, r.Gw, topo.ClientLink.A.Name, gw)
		}
		r = routeGet(t, topo.Proxy, f.client)
		if r.LinkIndex != topo.ProxyLink.A.Index || !r.Gw.Equal(f.router.AsSlice()) {
			t.Errorf("proxy → client %v: ifindex %d via %v; want %s via %v", f.client, r.LinkIndex, r.Gw, topo.ProxyIf, f.router)
		}
		local, err := dialEcho(topo.Client, netip.AddrPortFrom(f.proxy, topoFrontPort), "")
		if err != nil {
			t.Errorf("client → proxy %v: %v", f.proxy, err)
			continue
		}
		if local.Addr() != f.client {
			t.Errorf("client → proxy %v: from %v, want %v", f.proxy, local, f.client)
		}
		if got := <-clients; got != local {
			t.Errorf("the proxy saw the client as %v, want %v", got, local)
		}
	}
}

// family is a topology's addresses of one family.
type family struct {
	name          string
	client, proxy netip.Addr
	backends      []netip.Addr
	proxyBack     netip.Addr // the proxy's source address towards the backends
	router        netip.Addr // the router's address on the proxy's front link
}

// routerOf returns e's address of addr's family.
func routerOf(e *End, addr netip.Addr) netip.Addr {
	if addr.Is4() {
		return e.IP4()
	}
	return e.IP6()
}

// echoPeers echoes the connections ln accepts and sends each one's remote
// address on the returned channel (buffered; extra ones are dropped).
func echoPeers(ln net.Listener) <-chan netip.AddrPort {
	ch := make(chan netip.AddrPort, 64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case ch <- unmapPort(c.RemoteAddr().(*net.TCPAddr).AddrPort()):
			default:
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ch
}

func unmapPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// dialEcho connects from ns to dst (bound to the interface dev unless
// empty), checks an echo and that no segment had to be retransmitted, and
// returns the connection's local address.
func dialEcho(ns *NS, dst netip.AddrPort, dev string) (netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var c net.Conn
	err := ns.Do(func() (err error) {
		d := net.Dialer{FallbackDelay: -1}
		if dev != "" {
			d.Control = func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) {
					serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dev)
				}); err != nil {
					return err
				}
				return serr
			}
		}
		c, err = d.DialContext(ctx, "tcp", dst.String())
		return err
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	msg := []byte("shape check to " + dst.String())
	if _, err := c.Write(msg); err != nil {
		return netip.AddrPort{}, err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return netip.AddrPort{}, err
	}
	if string(got) != string(msg) {
		return netip.AddrPort{}, fmt.Errorf("echo: got %q, want %q", got, msg)
	}
	// A segment held on the way (e.g. by a router that cannot resolve its
	// next hop yet) shows as a retransmission.
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		return netip.AddrPort{}, err
	}
	if ierr != nil {
		return netip.AddrPort{}, ierr
	}
	if info.Total_retrans != 0 {
		return netip.AddrPort{}, fmt.Errorf("%d segments retransmitted", info.Total_retrans)
	}
	return unmapPort(c.LocalAddr().(*net.TCPAddr).AddrPort()), nil
}

// unreachable reports whether err says that there is no route (from the
// kernel, or from a router's ICMP error), as opposed to a timeout.
func unreachable(err error) bool {
	return errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH)
}

func routeGet(t *testing.T, ns *NS, dst netip.Addr) netlink.Route {
	t.Helper()
	rs, err := ns.Netlink().RouteGet(dst.AsSlice())
	if err != nil || len(rs) == 0 {
		t.Fatalf("%s: route to %v: %v %v", ns.Name, dst, rs, err)
	}
	return rs[0]
}

func txPackets(t *testing.T, e *End) uint64 {
	t.Helper()
	link, err := e.NS.Netlink().LinkByIndex(e.Index)
	if err != nil {
		t.Fatal(err)
	}
	if link.Attrs().Statistics == nil {
		t.Fatalf("%s: no statistics", e.Name)
	}
	return link.Attrs().Statistics.TxPackets
}
