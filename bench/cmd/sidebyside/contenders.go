package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xdproxy/xdproxy/internal/lab"
)

// A contender is one way from the client to the backends: a proxy started
// in the proxy namespace, listening on 10.10.1.1:<service port>, or the
// direct path (no proxy: the client connects to the backends through the
// router).
type contender struct {
	name  string
	about string
	start func(ctx context.Context, h *harness) (*instance, error)
	// fdsPerConn is how many file descriptors the proxy holds per idle
	// proxied connection (it bounds the idle measurement under the
	// descriptor limit): 2 for a kernel proxy (client and backend socket),
	// 6 for the Go proxy (io.Copy's splice holds a pipe per direction),
	// 1 for xdproxy dial: kernel, 0 for dial: xdp and the direct path.
	fdsPerConn int
}

// instance is a started contender.
type instance struct {
	proc  *lab.Proc           // nil for the direct path
	addrs map[string][]string // service → addresses the client connects to
	admin string              // xdproxy's admin endpoint in the proxy namespace ("" for the others)
	stop  func() error
}

func (in *instance) pid() int {
	if in.proc == nil {
		return 0
	}
	return in.proc.Pid()
}

var allContenders = []contender{
	{"direct", "no proxy: client → router → backend (the ceiling)", startDirect, 0},
	{"xdproxy-xdp", "xdproxy, dial: xdp (both legs on the userspace engine, AF_XDP)", func(ctx context.Context, h *harness) (*instance, error) {
		return startXdproxy(ctx, h, "xdp")
	}, 0},
	{"xdproxy-kernel", "xdproxy, dial: kernel (client leg on the engine, backend leg on kernel sockets)", func(ctx context.Context, h *harness) (*instance, error) {
		return startXdproxy(ctx, h, "kernel")
	}, 1},
	{"haproxy", "HAProxy (Debian), mode tcp, nbthread %d (xdproxy's shards), roundrobin", startHAProxy, 2},
	{"nginx", "nginx stream (Debian), worker_processes %d (xdproxy's shards)", startNginx, 2},
	{"gocopy", "a plain Go proxy: goroutine pair per connection, io.Copy each way (splice(2) inside)", startGoCopy, 6},
}

const listenIP = "10.10.1.1"

// xdproxyAdmin is xdproxy's admin address, on the proxy namespace's
// loopback.
const xdproxyAdmin = "127.0.0.1:9100"

// proxyAddrs is the service map of a proxy listening on listenIP.
func proxyAddrs() map[string][]string {
	m := map[string][]string{}
	for _, s := range services {
		m[s.name] = []string{fmt.Sprintf("%s:%d", listenIP, s.proxyPort)}
	}
	return m
}

// backendsOf is the backend addresses of service s in the run's topology.
func backendsOf(h *harness, s service) []string { return serviceBackends(h.topo.BackendAddrs, s) }

// serviceBackends is the host:port addresses of service s on the backend
// addresses (only the first for a firstOnly service).
func serviceBackends(addrs []netip.Addr, s service) []string {
	var out []string
	for i, a := range addrs {
		if s.firstOnly && i > 0 {
			break
		}
		out = append(out, netip.AddrPortFrom(a, uint16(s.backendPort)).String())
	}
	return out
}

// directTwoArmed is what the direct path is in the two-armed lab.
const directTwoArmed = "no proxy: client → router → the proxy namespace's kernel, forwarding from p0 to p1 → backend (the ceiling on the same links; the router gets a route to the back subnet via p0's address and the proxy namespace forwards, for this contender only)"

// startDirect gives the client the backends' addresses. One-armed the
// router reaches them. Two-armed it has no route to the back subnet, so for
// as long as this contender runs the router routes it to the proxy's p0
// and the proxy namespace forwards (no proxy process, no XDP): the same
// links as every proxy's traffic, with kernel forwarding in place of the
// proxy.
func startDirect(ctx context.Context, h *harness) (*instance, error) {
	m := map[string][]string{}
	for _, s := range services {
		m[s.name] = backendsOf(h, s)
	}
	in := &instance{addrs: m, stop: func() error { return nil }}
	if h.topo.BackLink == nil {
		return in, nil
	}
	back := netip.PrefixFrom(h.topo.BackendAddrs[0], lab.TopoBackBackend1.Bits()).Masked()
	if err := h.topo.Router.AddRoute(back, h.topo.ProxyAddr); err != nil {
		return nil, err
	}
	undo := func() error {
		err := h.topo.Router.Netlink().RouteDel(&netlink.Route{Dst: &net.IPNet{IP: back.Addr().AsSlice(), Mask: net.CIDRMask(back.Bits(), back.Addr().BitLen())}, Gw: h.topo.ProxyAddr.AsSlice()})
		if err != nil {
			err = fmt.Errorf("router: deleting the route to %v: %w", back, err)
		}
		return errors.Join(err, h.topo.Proxy.SetForwarding(false))
	}
	if err := h.topo.Proxy.SetForwarding(true); err != nil {
		return nil, errors.Join(err, undo())
	}
	in.stop = undo
	return in, nil
}

// xdproxyConfig is xdproxy's config for the bench: every interface of the
// proxy (front first), the services on listenIP with dial, the backends on
// backendAddrs, the admin endpoint on xdproxyAdmin.
func xdproxyConfig(ifaces []string, dial string, backendAddrs []netip.Addr) string {
	var b strings.Builder
	b.WriteString("interfaces:\n")
	for _, i := range ifaces {
		fmt.Fprintf(&b, "  - name: %s\n", i)
	}
	b.WriteString("listeners:\n")
	for _, s := range services {
		fmt.Fprintf(&b, "  - name: %s\n    address: %s:%d\n    balance: round_robin\n    dial: %s\n    connect_timeout: 3s\n    idle_timeout: 10m\n    backends:\n",
			s.name, listenIP, s.proxyPort, dial)
		for _, be := range serviceBackends(backendAddrs, s) {
			fmt.Fprintf(&b, "      - address: %s\n", be)
		}
	}
	fmt.Fprintf(&b, "drain_timeout: 1s\nadmin:\n  address: %s\nlog:\n  level: info\n  format: text\n", xdproxyAdmin)
	return b.String()
}

func startXdproxy(ctx context.Context, h *harness, dial string) (*instance, error) {
	return startXdproxyBin(ctx, h, h.bin, dial)
}

func startXdproxyBin(ctx context.Context, h *harness, bin, dial string) (*instance, error) {
	path := filepath.Join(h.tmp, "xdproxy-"+dial+".yaml")
	if err := os.WriteFile(path, []byte(xdproxyConfig(h.topo.ProxyIfs, dial, h.topo.BackendAddrs)), 0o644); err != nil {
		return nil, err
	}
	return runXdproxy(ctx, h.topo.Proxy, bin, path)
}

// baseContender is -base-bin's contender: the same configuration as
// xdproxy-xdp on another binary, for a before/after in one run.
func baseContender(bin string) contender {
	return contender{"xdproxy-base", "xdproxy, dial: xdp, the binary given by -base-bin (" + filepath.Base(bin) + "; the before of a before/after)", func(ctx context.Context, h *harness) (*instance, error) {
		abs, err := filepath.Abs(bin)
		if err != nil {
			return nil, err
		}
		return startXdproxyBin(ctx, h, abs, "xdp")
	}, 0}
}

// runXdproxy starts `bin run --config path` in ns and waits for its
// msg=ready log line.
func runXdproxy(ctx context.Context, ns *lab.NS, bin, path string) (*instance, error) {
	p, err := ns.Start(ctx, bin, "run", "--config", path)
	if err != nil {
		return nil, err
	}
	in := &instance{proc: p, addrs: proxyAddrs(), admin: xdproxyAdmin, stop: func() error { return p.Stop(15 * time.Second) }}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.Output(), "msg=ready") {
		select {
		case <-p.Done():
			return nil, fmt.Errorf("xdproxy exited before ready: %v\n%s", p.Wait(), tail(p.Output(), 3000))
		case <-ctx.Done():
			in.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			in.stop()
			return nil, fmt.Errorf("xdproxy not ready within 30s:\n%s", tail(p.Output(), 3000))
		}
	}
	return in, nil
}

func startHAProxy(ctx context.Context, h *harness) (*instance, error) {
	var b strings.Builder
	// No maxconn: HAProxy derives it from the descriptor limit.
	fmt.Fprintf(&b, `global
    nbthread %d

defaults
    mode tcp
    timeout connect 3s
    timeout client 10m
    timeout server 10m
`, h.opt.shards())
	for _, s := range services {
		fmt.Fprintf(&b, "\nlisten %s\n    bind %s:%d\n    balance roundrobin\n", s.name, listenIP, s.proxyPort)
		for i, be := range backendsOf(h, s) {
			fmt.Fprintf(&b, "    server b%d %s\n", i+1, be)
		}
	}
	path := filepath.Join(h.tmp, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	p, err := h.topo.Proxy.Start(ctx, "haproxy", "-db", "-f", path)
	if err != nil {
		return nil, err
	}
	return &instance{proc: p, addrs: proxyAddrs(), stop: func() error { return p.Stop(10 * time.Second) }}, nil
}

// nginxStreamModule is where Debian's libnginx-mod-stream puts the module.
const nginxStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

func startNginx(ctx context.Context, h *harness) (*instance, error) {
	dir := filepath.Join(h.tmp, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, `load_module %s;
daemon off;
worker_processes %d;
worker_rlimit_nofile %d;
pid %s/nginx.pid;
error_log %s/error.log warn;
events {
    worker_connections %d;
}
stream {
    proxy_connect_timeout 3s;
    proxy_timeout 10m;
`, nginxStreamModule, h.opt.shards(), h.nofile, dir, dir, h.nofile-100)
	for _, s := range services {
		fmt.Fprintf(&b, "    upstream %s {\n", s.name)
		for _, be := range backendsOf(h, s) {
			fmt.Fprintf(&b, "        server %s;\n", be)
		}
		fmt.Fprintf(&b, "    }\n    server {\n        listen %s:%d;\n        proxy_pass %s;\n    }\n", listenIP, s.proxyPort, s.name)
	}
	b.WriteString("}\n")
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	p, err := h.topo.Proxy.Start(ctx, "nginx", "-c", path, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	if err != nil {
		return nil, err
	}
	return &instance{proc: p, addrs: proxyAddrs(), stop: func() error { return p.Stop(10 * time.Second) }}, nil
}

func startGoCopy(ctx context.Context, h *harness) (*instance, error) {
	args := []string{"gocopy"}
	for _, s := range services {
		args = append(args, "-map", fmt.Sprintf("%s:%d=%s", listenIP, s.proxyPort, strings.Join(backendsOf(h, s), ",")))
	}
	p, err := h.topo.Proxy.Start(ctx, h.self, args...)
	if err != nil {
		return nil, err
	}
	return &instance{proc: p, addrs: proxyAddrs(), stop: func() error { return p.Stop(10 * time.Second) }}, nil
}

// waitServing probes the echo service through the instance (one 64-byte
// round trip from the client namespace) until it answers, for every
// address of the service.
func waitServing(ctx context.Context, h *harness, in *instance, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	msg := []byte(strings.Repeat("probe!", 11)[:64])
	var last error
	for _, addr := range in.addrs["echo"] {
		for {
			if in.proc != nil {
				select {
				case <-in.proc.Done():
					return fmt.Errorf("exited: %v\n%s", in.proc.Wait(), tail(in.proc.Output(), 3000))
				default:
				}
			}
			last = probe(ctx, h, addr, msg)
			if last == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not serving after %v: %v", addr, timeout, last)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

func probe(ctx context.Context, h *harness, addr string, msg []byte) error {
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c, err := h.topo.Client.DialTCP(dctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != string(msg) {
		return errors.New("echo mismatch")
	}
	return nil
}

// gocopyMain is `sidebyside gocopy -map LISTEN=BACKEND[,BACKEND...] ...`:
// the plain Go proxy, a goroutine per direction per connection, io.Copy
// each way (which splices between TCP sockets), half-closes propagated,
// backends in turn. It runs until SIGTERM or SIGINT.
func gocopyMain(args []string) int {
	var maps []string
	for i := 0; i < len(args); i++ {
		if args[i] == "-map" && i+1 < len(args) {
			maps = append(maps, args[i+1])
			i++
		}
	}
	if len(maps) == 0 {
		fmt.Fprintln(os.Stderr, "usage: sidebyside gocopy -map LISTEN=BACKEND[,BACKEND...] ...")
		return 2
	}
	for _, m := range maps {
		listen, bes, ok := strings.Cut(m, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "gocopy: bad -map %q\n", m)
			return 2
		}
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			fmt.Fprintln(os.Stderr, "gocopy:", err)
			return 1
		}
		backends := strings.Split(bes, ",")
		var n atomic.Uint64
		go serve(ln, func(c net.Conn) {
			goCopy(c.(*net.TCPConn), backends[(n.Add(1)-1)%uint64(len(backends))])
		})
	}
	fmt.Println("gocopy: serving")
	waitSignal()
	return 0
}

// goCopy splices c to a new connection to backend, each way (serve closes c).
func goCopy(c *net.TCPConn, backend string) {
	bc, err := net.DialTimeout("tcp", backend, 3*time.Second)
	if err != nil {
		return
	}
	b := bc.(*net.TCPConn)
	defer b.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(b, c)
		b.CloseWrite()
		close(done)
	}()
	io.Copy(c, b)
	c.CloseWrite()
	<-done
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
