package main

// End-to-end tests: the real daemon binary in the lab (internal/lab's
// Topology: client — router — proxy (p0, XDP) — backends), real clients
// (curl, redis-benchmark, iperf3, Go sockets) and real servers (Go servers in
// the backend namespace, redis-server, iperf3 -s). Need root; skipped
// without it, except under CI=true (lab.RequireRoot).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/xdproxy/xdproxy/internal/lab"
	"github.com/xdproxy/xdproxy/proxy/balance"
)

// xdproxyBin is the daemon, built once by TestMain.
var xdproxyBin string

func TestMain(m *testing.M) {
	if spec := os.Getenv(memHelperEnv); spec != "" {
		os.Exit(memHelper(spec))
	}
	dir, err := os.MkdirTemp("", "xdproxy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	xdproxyBin = filepath.Join(dir, "xdproxy")
	goTool := "go"
	if p, err := exec.LookPath("go"); err == nil {
		goTool = p
	} else if root := os.Getenv("GOROOT"); root != "" {
		goTool = filepath.Join(root, "bin", "go")
	}
	cmd := exec.Command(goTool, "build", "-o", xdproxyBin, ".")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building the daemon: %v\n", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ---- the lab and the daemon ----

const (
	listenerIP = "10.10.1.1"
	backend1   = "10.10.2.2"
	backend2   = "10.10.2.3"
	adminAddr  = "127.0.0.1:9100"
	e2eQueues  = 2 // shards: exercises the hand-offs between them
)

func newTopology(t *testing.T, queues int) *lab.Topology {
	t.Helper()
	return newTopologyMTU(t, queues, 0)
}

// newTopologyMTU is newTopology with every link's MTU set (0: the default).
func newTopologyMTU(t *testing.T, queues, mtu int) *lab.Topology {
	t.Helper()
	lab.RequireRoot(t)
	l, err := lab.New(t)
	if err != nil {
		t.Fatal(err)
	}
	topo, err := l.NewTopologyWith(lab.TopologyOpts{Queues: queues, MTU: mtu})
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

// sumMetric adds up every sample of the counter name in the /metrics text.
func sumMetric(text, name string) float64 {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil || fams[name] == nil {
		return 0
	}
	var sum float64
	for _, m := range fams[name].GetMetric() {
		sum += m.GetCounter().GetValue()
	}
	return sum
}

// daemonConfig is a configuration file for the topology: the proxy's
// interface, the given listeners (YAML list items, "  - name: ..."), the
// admin server on adminAddr and drain_timeout drain.
func daemonConfig(topo *lab.Topology, drain string, listeners ...string) string {
	return fmt.Sprintf(`interfaces:
  - name: %s
listeners:
%s
drain_timeout: %s
admin:
  address: %s
log:
  level: info
  format: text
`, topo.ProxyIf, strings.Join(listeners, "\n"), drain, adminAddr)
}

// listenerYAML is one listener; extra lines (already indented by four
// spaces) go before the backends.
func listenerYAML(name, addr, balance string, extra string, backends ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  - name: %s\n    address: %s\n    balance: %s\n", name, addr, balance)
	b.WriteString(extra)
	b.WriteString("    backends:\n")
	for _, be := range backends {
		fmt.Fprintf(&b, "      - address: %s\n", be)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

type daemon struct {
	t         *testing.T
	topo      *lab.Topology
	proc      *lab.Proc
	drain     time.Duration
	admin     *http.Client
	adminAddr string // the config's admin.address (adminAddr unless the test set another)
	path      string // the config file
	mu        sync.Mutex
	exited    bool
	result    error
}

// startDaemon writes cfg, starts `xdproxy run --config FILE` in the proxy
// namespace and waits for readiness: the msg=ready log line and /healthz
// 200 (on the config's admin.address). At cleanup it is stopped with
// SIGTERM and must exit 0.
func startDaemon(t *testing.T, topo *lab.Topology, cfg string) *daemon {
	t.Helper()
	path := filepath.Join(t.TempDir(), "xdproxy.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	drain := 30 * time.Second
	if m := regexp.MustCompile(`(?m)^drain_timeout: (\S+)`).FindStringSubmatch(cfg); m != nil {
		if d, err := time.ParseDuration(m[1]); err == nil {
			drain = d
		}
	}
	p, err := topo.Proxy.Start(context.Background(), xdproxyBin, "run", "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, topo: topo, proc: p, drain: drain, adminAddr: adminAddr, path: path}
	if m := regexp.MustCompile(`(?m)^admin:\n  address: (\S+)`).FindStringSubmatch(cfg); m != nil {
		d.adminAddr = m[1]
	}
	d.admin = &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return topo.Proxy.DialTCP(ctx, addr)
			},
		},
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon metrics (non-zero):\n%s", d.metrics())
		}
		if _, err := d.stop(); err != nil {
			t.Errorf("daemon: %v", err)
		}
		out := d.proc.Output()
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "level=ERROR") {
				t.Errorf("daemon logged an error: %s", line)
			}
		}
		if t.Failed() {
			t.Logf("daemon output (tail):\n%s", tail(out, 6000))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.Output(), "msg=ready") {
		select {
		case <-p.Done():
			t.Fatalf("daemon exited before ready: %v\n%s", p.Wait(), p.Output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not ready within 30s:\n%s", p.Output())
		}
	}
	var last string
	for {
		code, body, err := d.healthz()
		if err == nil && code == http.StatusOK && body == "ok" {
			break
		}
		last = fmt.Sprintf("%d %q %v", code, body, err)
		if time.Now().After(deadline) {
			t.Fatalf("/healthz never answered 200 ok (last: %s)", last)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return d
}

func (d *daemon) healthz() (int, string, error) {
	resp, err := d.admin.Get("http://" + d.adminAddr + "/healthz")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// metrics is the daemon's non-zero xdproxy_ metrics (for failure reports).
func (d *daemon) metrics() string {
	resp, err := d.admin.Get("http://" + d.adminAddr + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "xdproxy_") && !strings.HasSuffix(l, " 0") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// stop sends SIGTERM and waits for the exit; an exit status other than 0,
// or no exit within drain_timeout + 20s, is an error. It returns how long
// the daemon took to exit.
func (d *daemon) stop() (time.Duration, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.exited {
		return 0, nil
	}
	d.exited = true
	start := time.Now()
	select {
	case <-d.proc.Done():
		d.result = fmt.Errorf("exited before SIGTERM: %v", d.proc.Wait())
		return 0, d.result
	default:
	}
	if err := d.proc.Signal(syscall.SIGTERM); err != nil {
		d.result = fmt.Errorf("SIGTERM: %v", err)
		return 0, d.result
	}
	limit := d.drain + 20*time.Second
	select {
	case <-d.proc.Done():
	case <-time.After(limit):
		d.proc.Stop(0)
		d.result = fmt.Errorf("did not exit within %v of SIGTERM", limit)
		return time.Since(start), d.result
	}
	el := time.Since(start)
	if err := d.proc.Wait(); err != nil {
		d.result = fmt.Errorf("exit after SIGTERM: %v (want status 0)", err)
	}
	return el, d.result
}

// output is everything the daemon logged so far.
func (d *daemon) output() string { return d.proc.Output() }

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// ---- deterministic bodies ----

var blobSeed = [32]byte{'x', 'd', 'p', 'r', 'o', 'x', 'y', ' ', 'e', '2', 'e'}

// blob is the body of GET /blob?size=n: n bytes of a fixed ChaCha8 stream.
func blob(n int64) io.Reader { return io.LimitReader(rand.NewChaCha8(blobSeed), n) }

var (
	blobSumMu sync.Mutex
	blobSums  = map[int64]string{}
)

// blobSum is the hex SHA-256 of blob(n).
func blobSum(n int64) string {
	blobSumMu.Lock()
	defer blobSumMu.Unlock()
	if s, ok := blobSums[n]; ok {
		return s
	}
	h := sha256.New()
	io.Copy(h, blob(n))
	s := hex.EncodeToString(h.Sum(nil))
	blobSums[n] = s
	return s
}

// randomBytes returns n bytes of a ChaCha8 stream of the given seed.
func randomBytes(seed uint64, n int) []byte {
	var s [32]byte
	s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7] = byte(seed), byte(seed>>8), byte(seed>>16), byte(seed>>24), byte(seed>>32), byte(seed>>40), byte(seed>>48), byte(seed>>56)
	s[31] = 0x5a
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// ---- backends ----

// server is a backend listening in a lab namespace whose connections the
// test can reset all at once (kill).
type server struct {
	name  string
	ln    net.Listener
	mu    sync.Mutex
	conns map[*net.TCPConn]struct{}
	dead  bool
	wg    sync.WaitGroup

	accepts atomic.Int64
	results chan string // mode 'g' reports what it received here
}

type trackedConn struct {
	*net.TCPConn
	s    *server
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c.TCPConn)
		c.s.mu.Unlock()
	})
	return c.TCPConn.Close()
}

func listen(t *testing.T, ns *lab.NS, addr, name string) *server {
	t.Helper()
	ln, err := ns.ListenTCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{name: name, ln: ln, conns: map[*net.TCPConn]struct{}{}, results: make(chan string, 1024)}
	t.Cleanup(func() { s.kill(); s.wg.Wait() })
	return s
}

// Accept makes the server a net.Listener (for http.Server) whose
// connections are tracked.
func (s *server) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		tc.SetLinger(0)
		tc.Close()
		return nil, net.ErrClosed
	}
	s.conns[tc] = struct{}{}
	s.mu.Unlock()
	s.accepts.Add(1)
	return &trackedConn{TCPConn: tc, s: s}, nil
}

func (s *server) Close() error   { return s.ln.Close() }
func (s *server) Addr() net.Addr { return s.ln.Addr() }

// kill closes the listener (new connections are refused) and resets every
// open connection (SO_LINGER 0).
func (s *server) kill() {
	s.mu.Lock()
	s.dead = true
	conns := make([]*net.TCPConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.ln.Close()
	for _, c := range conns {
		c.SetLinger(0)
		c.Close()
	}
}

// open is the number of connections the server holds.
func (s *server) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// startHTTP serves: GET /blob?size=N (blob(N)), POST /upload (answers "SHA256
// SIZE"), POST /echo (the body back), GET / (the backend's name); every
// answer carries X-Backend: name.
func startHTTP(t *testing.T, ns *lab.NS, addr, name string) *server {
	t.Helper()
	s := listen(t, ns, addr, name)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /blob", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "bad size", http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Backend", name)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		io.Copy(w, blob(n))
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Backend", name)
		fmt.Fprintf(w, "%x %d\n", h.Sum(nil), n)
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Backend", name)
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		fmt.Fprintln(w, name)
	})
	hs := &http.Server{Handler: mux}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		hs.Serve(s)
	}()
	return s
}

// Raw protocol: on accept the server sends its name and "\n", then reads a
// mode byte:
//
//	'e' echo everything until EOF, then close
//	'h' read until EOF, then reply "SHA256 SIZE\n" of what it read and
//	    blob(halfReply), then close (a reply only after the client's FIN)
//	's' stream blob bytes until the connection breaks
//	'f' send blob(finReply), shut down its write side, read until EOF or
//	    error, close
//	'g' send "bye\n", shut down its write side, read until EOF, report
//	    "SHA256 SIZE" of what it read on s.results, close
//	'p' close (a ping: the name is the answer)
const (
	halfReply = 4 << 20
	finReply  = 32 << 10
)

func startRaw(t *testing.T, ns *lab.NS, addr, name string) *server {
	t.Helper()
	s := listen(t, ns, addr, name)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				s.rawConn(c.(*trackedConn))
			}()
		}
	}()
	return s
}

func (s *server) rawConn(c *trackedConn) {
	if _, err := io.WriteString(c, s.name+"\n"); err != nil {
		return
	}
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case 'e':
		io.Copy(c.TCPConn, c.TCPConn)
	case 'h':
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "%x %d\n", h.Sum(nil), n)
		io.Copy(c.TCPConn, blob(halfReply))
	case 's':
		io.Copy(c.TCPConn, rand.NewChaCha8(blobSeed))
	case 'f':
		if _, err := io.Copy(c.TCPConn, blob(finReply)); err != nil {
			return
		}
		c.CloseWrite()
		io.Copy(io.Discard, c)
	case 'g':
		io.WriteString(c, "bye\n")
		c.CloseWrite()
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err != nil {
			s.results <- "error: " + err.Error()
			return
		}
		s.results <- fmt.Sprintf("%x %d", h.Sum(nil), n)
	case 'p':
	}
}

// ---- clients ----

// httpClient makes requests from the client namespace, one connection per
// request.
func httpClient(ns *lab.NS, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return ns.DialTCP(ctx, addr)
			},
		},
	}
}

// dialRaw connects from the client namespace and reads the backend's name.
func dialRaw(ctx context.Context, ns *lab.NS, addr string) (*net.TCPConn, string, error) {
	c, err := ns.DialTCP(ctx, addr)
	if err != nil {
		return nil, "", err
	}
	tc := c.(*net.TCPConn)
	name, err := readName(tc)
	if err != nil {
		tc.Close()
		return nil, "", err
	}
	return tc, name, nil
}

// dialFrom is dialRaw from a fixed local address.
func dialFrom(ctx context.Context, ns *lab.NS, local netip.AddrPort, addr string) (*net.TCPConn, string, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		d := net.Dialer{FallbackDelay: -1, LocalAddr: net.TCPAddrFromAddrPort(local)}
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	tc := c.(*net.TCPConn)
	name, err := readName(tc)
	if err != nil {
		tc.Close()
		return nil, "", err
	}
	return tc, name, nil
}

func readName(c *net.TCPConn) (string, error) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var b [3]byte // "b1\n"
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return "", fmt.Errorf("reading the backend's name: %w", err)
	}
	if b[2] != '\n' {
		return "", fmt.Errorf("bad name line %q", b[:])
	}
	return string(b[:2]), nil
}

// ping makes one raw 'p' connection and returns the backend's name, or the
// error the client saw, and how long it took.
func ping(ns *lab.NS, addr string, limit time.Duration) (string, time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	c, err := ns.DialTCP(ctx, addr)
	if err != nil {
		return "", time.Since(start), err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(limit))
	// A reset that arrives before the write is reported by the write (and
	// only once: the read after it would see a plain EOF).
	if _, err := c.Write([]byte{'p'}); err != nil {
		return "", time.Since(start), err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return "", time.Since(start), err
	}
	if len(b) != 3 || b[2] != '\n' {
		return "", time.Since(start), fmt.Errorf("answer %q", b)
	}
	return string(b[:2]), time.Since(start), nil
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// curl runs curl in the client namespace.
func curl(t *testing.T, ns *lab.NS, timeout time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	args = append([]string{"-sS", "--fail", "--max-time", strconv.Itoa(int(timeout / time.Second))}, args...)
	out, err := ns.Run(ctx, "curl", args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

func fileSHA256(t *testing.T, path string) (string, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

// ---- 1. curl: 50 MiB each way ----

const bigBody = 50 << 20

func webConfig(topo *lab.Topology, extra string) string {
	return daemonConfig(topo, "2s", listenerYAML("web", listenerIP+":80", "round_robin",
		extra+"    health_check: {interval: 1s, timeout: 500ms, rise: 1, fall: 2}\n",
		backend1+":8080", backend2+":8080"))
}

// download fetches blob(size) with curl through the daemon and checks it;
// it returns the backend that served it and curl's time.
func download(t *testing.T, topo *lab.Topology, size int64, timeout time.Duration) (string, string) {
	t.Helper()
	dir := t.TempDir()
	body, hdrs := filepath.Join(dir, "body"), filepath.Join(dir, "headers")
	out := curl(t, topo.Client, timeout, "-o", body, "-D", hdrs,
		"-w", "%{http_code} %{size_download} %{time_total} %{speed_download}",
		fmt.Sprintf("http://%s/blob?size=%d", listenerIP, size))
	sum, n := fileSHA256(t, body)
	if n != size || sum != blobSum(size) {
		t.Fatalf("downloaded %d bytes, sha256 %s; want %d bytes, %s (curl: %s)", n, sum, size, blobSum(size), out)
	}
	h, _ := os.ReadFile(hdrs)
	m := regexp.MustCompile(`(?im)^x-backend: (\S+)`).FindSubmatch(h)
	if m == nil {
		t.Fatalf("no X-Backend header in %q", h)
	}
	f := strings.Fields(out)
	if len(f) != 4 {
		t.Fatalf("curl -w output %q", out)
	}
	secs, _ := strconv.ParseFloat(f[2], 64)
	bps, _ := strconv.ParseFloat(f[3], 64)
	if bps*8 < 1e9 {
		return string(m[1]), fmt.Sprintf("%.2fs (%.1f Mbit/s)", secs, bps*8/1e6)
	}
	return string(m[1]), fmt.Sprintf("%.2fs (%.2f Gbit/s)", secs, bps*8/1e9)
}

func TestCurl(t *testing.T) {
	if err := lab.EnsureTools("curl:curl"); err != nil {
		t.Fatal(err)
	}
	topo := newTopology(t, e2eQueues)
	startHTTP(t, topo.Backends, backend1+":8080", "b1")
	startHTTP(t, topo.Backends, backend2+":8080", "b2")
	startDaemon(t, topo, webConfig(topo, ""))

	// Both backends serve.
	hc := httpClient(topo.Client, 10*time.Second)
	seen := map[string]int{}
	for range 8 {
		resp, err := hc.Get("http://" + listenerIP + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		name := resp.Header.Get("X-Backend")
		if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != name {
			t.Fatalf("GET /: %s, body %q, X-Backend %q", resp.Status, b, name)
		}
		seen[name]++
	}
	if seen["b1"] == 0 || seen["b2"] == 0 {
		t.Fatalf("8 requests went to %v; want both backends", seen)
	}

	for i := range 2 {
		be, took := download(t, topo, bigBody, 120*time.Second)
		t.Logf("download %d: 50 MiB from %s in %s", i+1, be, took)
	}

	// Upload: the backend's SHA-256 of what it received is the file's.
	file := filepath.Join(t.TempDir(), "upload")
	data := randomBytes(1, bigBody)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%s %d", sha256Hex(data), len(data))
	data = nil
	out := curl(t, topo.Client, 120*time.Second, "--data-binary", "@"+file,
		"-H", "Content-Type: application/octet-stream", "-w", "\n%{time_total} %{speed_upload}",
		"http://"+listenerIP+"/upload")
	f := strings.Fields(out) // "SHA256 SIZE" from the backend, then curl's -w
	if len(f) != 4 || f[0]+" "+f[1] != want {
		t.Fatalf("upload: backend answered %q; want %q", out, want)
	}
	secs, _ := strconv.ParseFloat(f[2], 64)
	bps, _ := strconv.ParseFloat(f[3], 64)
	t.Logf("upload: 50 MiB in %.2fs (%.2f Gbit/s)", secs, bps*8/1e9)
}

// ---- 2. 500 concurrent connections, three balancers ----

// TestJumboFrames: on links with an MTU over what a 2 KiB UMEM frame holds
// the daemon picks 4 KiB frames and the engine the link's MTU, so a
// download moves in segments of MTU-52 bytes (3448 at MTU 3500), intact.
// Beyond a 4 KiB frame (MTU 9000: 8948-byte segments) the sockets use
// multi-buffer AF_XDP: every full-sized frame travels as a chain of
// descriptors, gathered on RX and split on TX, and none is dropped.
func TestJumboFrames(t *testing.T) {
	if err := lab.EnsureTools("curl:curl"); err != nil {
		t.Fatal(err)
	}
	for _, mtu := range []int{3500, 9000} {
		t.Run(fmt.Sprint("mtu", mtu), func(t *testing.T) {
			topo := newTopologyMTU(t, e2eQueues, mtu)
			startHTTP(t, topo.Backends, backend1+":8080", "b1")
			startHTTP(t, topo.Backends, backend2+":8080", "b2")
			d := startDaemon(t, topo, webConfig(topo, ""))
			const size = 20 << 20
			be, took := download(t, topo, size, 60*time.Second)
			t.Logf("MTU %d: 20 MiB from %s in %s", mtu, be, took)
			resp, err := d.admin.Get("http://" + d.adminAddr + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			text, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			// Sent: the data to the client plus about one ACK per two segments to
			// the backend — over 14,000 data frames alone at 1448 bytes a segment,
			// about 6,100 (+ 3,050 ACKs) at 3448.
			rx, tx := sumMetric(string(text), "xdproxy_xsk_rx_frames_total"), sumMetric(string(text), "xdproxy_xsk_tx_frames_total")
			rxChains, txChains := sumMetric(string(text), "xdproxy_xsk_rx_chains_total"), sumMetric(string(text), "xdproxy_xsk_tx_chains_total")
			// Bad commits are not counted here: the engine puts SACK blocks
			// on full-sized segments (over the MTU; the sockets refuse them).
			drops := sumMetric(string(text), "xdproxy_xsk_rx_chain_drops_total")
			t.Logf("XSK frames: %.0f received (%.0f chains), %.0f sent (%.0f chains)", rx, rxChains, tx, txChains)
			if maxFrames := float64(size) / 2000; tx > maxFrames || tx < float64(size)/float64(mtu-52) {
				t.Fatalf("%.0f frames sent for a %d-byte download: want between %d and %.0f (segments of ~%d bytes)",
					tx, size, size/(mtu-52), maxFrames, mtu-52)
			}
			// Most segments are full-sized (three descriptors at 9000);
			// short ones come at window edges.
			multi, minChains := mtu+22 > 4096, 0.8*float64(size)/float64(mtu)
			if drops != 0 || (multi && (rxChains < minChains || txChains < minChains)) || (!multi && rxChains+txChains != 0) {
				t.Fatalf("chains: %.0f received, %.0f sent, %.0f dropped (multi-buffer %v)", rxChains, txChains, drops, multi)
			}
		})
	}
}

func TestConcurrentBalance(t *testing.T) {
	topo := newTopology(t, e2eQueues)
	startRaw(t, topo.Backends, backend1+":7000", "b1")
	startRaw(t, topo.Backends, backend2+":7000", "b2")
	backends := []netip.AddrPort{netip.MustParseAddrPort(backend1 + ":7000"), netip.MustParseAddrPort(backend2 + ":7000")}

	for _, tc := range []struct {
		balance string
		weights []int
	}{
		{"round_robin", []int{1, 1}},
		{"least_conn", []int{3, 1}},
		{"maglev", []int{1, 1}},
	} {
		t.Run(tc.balance, func(t *testing.T) {
			lst := fmt.Sprintf("  - name: echo\n    address: %s:7000\n    balance: %s\n    backends:\n      - {address: %s, weight: %d}\n      - {address: %s, weight: %d}",
				listenerIP, tc.balance, backends[0], tc.weights[0], backends[1], tc.weights[1])
			d := startDaemon(t, topo, daemonConfig(topo, "2s", lst))
			const n = 500
			conns, names := concurrentEcho(t, topo, n, 64<<10)
			count := map[string]int{}
			for _, nm := range names {
				count[nm]++
			}
			t.Logf("%s: %d connections × 64 KiB each way: b1 %d, b2 %d", tc.balance, n, count["b1"], count["b2"])
			switch tc.balance {
			case "round_robin":
				// Each shard alternates: the totals differ by at most one per shard.
				if diff := count["b1"] - count["b2"]; diff > e2eQueues || diff < -e2eQueues {
					t.Errorf("round_robin: b1 %d, b2 %d; want an even split (±%d)", count["b1"], count["b2"], e2eQueues)
				}
			case "least_conn":
				// Every connection is held open until all are: active
				// counts per weight stay level, so 3:1.
				if got := count["b1"]; got < n*3/4-15 || got > n*3/4+15 {
					t.Errorf("least_conn with weights 3:1: b1 %d, b2 %d; want b1 ≈ %d", count["b1"], count["b2"], n*3/4)
				}
			case "maglev":
				m := balance.NewMaglev(backends, tc.weights, 0)
				wrong := 0
				for i, c := range conns {
					want := []string{"b1", "b2"}[m.Pick(c, nil)]
					if names[i] != want {
						if wrong++; wrong <= 5 {
							t.Errorf("maglev: client %v went to %s; NewMaglev over the same backends says %s", c, names[i], want)
						}
					}
				}
				if wrong > 0 {
					t.Errorf("maglev: %d of %d clients not where the table says", wrong, n)
				}
				if count["b1"] < n/4 || count["b2"] < n/4 {
					t.Errorf("maglev: b1 %d, b2 %d; want both well used", count["b1"], count["b2"])
				}
				// The same client address:port comes back to the same backend.
				for i := range 5 {
					local := netip.AddrPortFrom(topo.ClientAddr, uint16(61001+i))
					want := []string{"b1", "b2"}[m.Pick(local, nil)]
					for round := range 3 {
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						c, name, err := dialFrom(ctx, topo.Client, local, listenerIP+":7000")
						cancel()
						if err != nil {
							t.Fatalf("from %v (round %d): %v", local, round, err)
						}
						c.SetLinger(0) // RST: no TIME_WAIT, the port is free at once
						c.Close()
						if name != want {
							t.Errorf("maglev: client %v went to %s in round %d; want %s", local, name, round, want)
						}
					}
				}
			}
			if el, err := d.stop(); err != nil {
				t.Error(err)
			} else {
				t.Logf("daemon stopped in %v", el.Round(time.Millisecond))
			}
		})
	}
}

// concurrentEcho opens n connections to the raw listener (all open at once),
// then has each send size bytes in 'e' mode and half-close, and checks the
// echo. It returns each connection's client address and backend.
func concurrentEcho(t *testing.T, topo *lab.Topology, n, size int) ([]netip.AddrPort, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	conns := make([]*net.TCPConn, n)
	addrs := make([]netip.AddrPort, n)
	names := make([]string, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			conns[i], names[i], errs[i] = dialRaw(ctx, topo.Client, listenerIP+":7000")
			if errs[i] == nil {
				addrs[i] = conns[i].LocalAddr().(*net.TCPAddr).AddrPort()
				addrs[i] = netip.AddrPortFrom(addrs[i].Addr().Unmap(), addrs[i].Port())
			}
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	fatalIfAny(t, errs, func(i int) string { return fmt.Sprintf("connection %d", i) }, "connections failed to open")
	start := time.Now()
	for i, c := range conns {
		wg.Go(func() {
			c.SetDeadline(time.Now().Add(60 * time.Second))
			data := randomBytes(uint64(i)+1000, size)
			werr := make(chan error, 1)
			go func() {
				_, err := c.Write(append([]byte{'e'}, data...))
				if err == nil {
					err = c.CloseWrite()
				}
				werr <- err
			}()
			got, err := io.ReadAll(c)
			if err == nil {
				err = <-werr
			}
			switch {
			case err != nil:
				errs[i] = err
			case !bytes.Equal(got, data):
				errs[i] = fmt.Errorf("echo of %d bytes came back as %d bytes, different", len(data), len(got))
			}
		})
	}
	wg.Wait()
	fatalIfAny(t, errs, func(i int) string { return fmt.Sprintf("connection %d (%v, %s)", i, addrs[i], names[i]) }, "exchanges failed")
	t.Logf("%d exchanges of %d KiB each way in %v", n, size>>10, time.Since(start).Round(time.Millisecond))
	return addrs, names
}

// ---- 3. redis-benchmark and iperf3 ----

func TestRedisBenchmark(t *testing.T) {
	if err := lab.EnsureTools("redis-server", "redis-benchmark:redis-tools", "redis-cli:redis-tools"); err != nil {
		t.Fatal(err)
	}
	topo := newTopology(t, e2eQueues)
	srv, err := topo.Backends.Start(context.Background(), "redis-server", "--bind", backend1, "--port", "6379",
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, srv, "Ready to accept connections", 20*time.Second)
	startDaemon(t, topo, daemonConfig(topo, "2s",
		listenerYAML("redis", listenerIP+":6379", "round_robin", "", backend1+":6379")))

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if out, err := topo.Client.Run(ctx, "redis-cli", "-h", listenerIP, "-p", "6379", "set", "xdproxy", "e2e"); err != nil || strings.TrimSpace(out) != "OK" {
		t.Fatalf("redis-cli set: %q %v", out, err)
	}
	if out, err := topo.Client.Run(ctx, "redis-cli", "-h", listenerIP, "-p", "6379", "get", "xdproxy"); err != nil || strings.TrimSpace(out) != "e2e" {
		t.Fatalf("redis-cli get: %q %v", out, err)
	}
	out, err := topo.Client.Run(ctx, "redis-benchmark", "-h", listenerIP, "-p", "6379", "-n", "20000", "-c", "20", "-q", "-t", "set,get,incr,lpush")
	if err != nil {
		t.Fatal(err)
	}
	// -q prints progress lines ending in \r, then one line per test.
	final := regexp.MustCompile(`([A-Z_]+(?: \([^)]*\))?): ([0-9.]+) requests per second`).FindAllStringSubmatch(out, -1)
	rps := map[string]string{}
	for _, m := range final {
		rps[m[1]] = m[2]
	}
	for _, test := range []string{"SET", "GET", "INCR"} {
		if rps[test] == "" {
			t.Errorf("no result for %s", test)
		}
	}
	if !strings.Contains(out, "LPUSH") {
		t.Errorf("no result for LPUSH")
	}
	if regexp.MustCompile(`(?i)error|reset|refused`).MatchString(out) {
		t.Errorf("redis-benchmark reported errors:\n%s", out)
	}
	var summary []string
	for _, m := range final {
		summary = append(summary, m[1]+" "+m[2]+" rps")
	}
	t.Logf("redis-benchmark -n 20000 -c 20 through xdproxy: %s", strings.Join(summary, ", "))
}

// fatalIfAny reports the first five errors of errs, each named by label,
// and fails the test when there is any ("N of M what").
func fatalIfAny(t *testing.T, errs []error, label func(i int) string, what string) {
	t.Helper()
	failed := 0
	for i, err := range errs {
		if err != nil {
			if failed++; failed <= 5 {
				t.Errorf("%s: %v", label(i), err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d %s", failed, len(errs), what)
	}
}

func waitFor(t *testing.T, p *lab.Proc, s string, limit time.Duration) {
	t.Helper()
	deadline := time.After(limit)
	for !strings.Contains(p.Output(), s) {
		select {
		case <-p.Done():
			t.Fatalf("exited waiting for %q: %v\n%s", s, p.Wait(), p.Output())
		case <-deadline:
			t.Fatalf("no %q within %v:\n%s", s, limit, p.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestIperf3 runs iperf3 both ways through the daemon, on links at MTU
// 1500 and, in the same run, at MTU 9000 (multi-buffer AF_XDP), and logs
// the rates side by side.
func TestIperf3(t *testing.T) {
	if err := lab.EnsureTools("iperf3"); err != nil {
		t.Fatal(err)
	}
	var summary strings.Builder
	for _, mtu := range []int{1500, 9000} {
		t.Run(fmt.Sprint("mtu", mtu), func(t *testing.T) {
			topo := newTopologyMTU(t, e2eQueues, mtu)
			srv, err := topo.Backends.Start(context.Background(), "iperf3", "-s", "-B", backend1, "-p", "5201", "--forceflush")
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, srv, "Server listening", 20*time.Second)
			startDaemon(t, topo, daemonConfig(topo, "2s",
				listenerYAML("iperf", listenerIP+":5201", "round_robin", "", backend1+":5201")))
			fmt.Fprintf(&summary, "\nMTU %d:", mtu)
			for _, dir := range []struct {
				name string
				args []string
			}{{"client → server", nil}, {"server → client (-R)", []string{"-R"}}} {
				bps := iperf3Run(t, topo, dir.name, dir.args)
				fmt.Fprintf(&summary, "  %s %.2f Gbit/s", dir.name, bps/1e9)
			}
		})
	}
	t.Log(summary.String())
}

// iperf3Run runs a 3-second iperf3 from the client to the listener and
// returns the received rate in bits per second.
func iperf3Run(t *testing.T, topo *lab.Topology, name string, extra []string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	args := append([]string{"-c", listenerIP, "-p", "5201", "-t", "3", "-J"}, extra...)
	out, err := topo.Client.Run(ctx, "iperf3", args...)
	cancel()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var res struct {
		Error string
		End   struct {
			SumSent struct {
				Bytes         int64
				BitsPerSecond float64 `json:"bits_per_second"`
				Retransmits   int
			} `json:"sum_sent"`
			SumReceived struct {
				Bytes         int64
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%s: iperf3 JSON: %v\n%s", name, err, tail(out, 2000))
	}
	if res.Error != "" {
		t.Fatalf("%s: iperf3: %s", name, res.Error)
	}
	if res.End.SumReceived.Bytes <= 0 || res.End.SumReceived.BitsPerSecond <= 0 {
		t.Fatalf("%s: nothing received:\n%s", name, tail(out, 2000))
	}
	t.Logf("iperf3 %s: %.2f Gbit/s received (%d MiB; sender retransmits %d)", name,
		res.End.SumReceived.BitsPerSecond/1e9, res.End.SumReceived.Bytes>>20, res.End.SumSent.Retransmits)
	return res.End.SumReceived.BitsPerSecond
}

// ---- 4. a backend dies mid-run ----

func TestBackendFailure(t *testing.T) {
	topo := newTopology(t, e2eQueues)
	b1 := startRaw(t, topo.Backends, backend1+":7000", "b1")
	b2 := startRaw(t, topo.Backends, backend2+":7000", "b2")
	const (
		interval = 200 * time.Millisecond
		timeout  = 200 * time.Millisecond
		fall     = 2
	)
	d := startDaemon(t, topo, daemonConfig(topo, "1s", listenerYAML("raw", listenerIP+":7000", "round_robin",
		"    connect_timeout: 1s\n    health_check: {interval: 200ms, timeout: 200ms, rise: 1, fall: 2}\n",
		backend1+":7000", backend2+":7000")))
	addr := listenerIP + ":7000"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// In flight: streams (the backend is sending when it dies) and
	// finished replies (the backend sent everything and its FIN, and waits
	// for the client's).
	type stream struct {
		c     *net.TCPConn
		name  string
		bytes atomic.Int64
		err   error
		at    time.Time
		done  chan struct{}
	}
	var streams []*stream
	for range 10 {
		c, name, err := dialRaw(ctx, topo.Client, addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{'s'})
		s := &stream{c: c, name: name, done: make(chan struct{})}
		streams = append(streams, s)
		go func() {
			defer close(s.done)
			buf := make([]byte, 64<<10)
			for {
				c.SetReadDeadline(time.Now().Add(20 * time.Second))
				n, err := c.Read(buf)
				s.bytes.Add(int64(n))
				if err != nil {
					s.err, s.at = err, time.Now()
					return
				}
			}
		}()
	}
	type finished struct {
		c    *net.TCPConn
		name string
	}
	var fins []finished
	for range 10 {
		c, name, err := dialRaw(ctx, topo.Client, addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{'f'})
		fins = append(fins, finished{c, name})
	}
	perBackend := func(names ...string) map[string]int {
		m := map[string]int{}
		for _, n := range names {
			m[n]++
		}
		return m
	}
	var sn, fn []string
	for _, s := range streams {
		sn = append(sn, s.name)
	}
	for _, f := range fins {
		fn = append(fn, f.name)
	}
	if m := perBackend(sn...); m["b1"] == 0 || m["b2"] == 0 {
		t.Fatalf("streams went to %v; want both backends", m)
	}
	if m := perBackend(fn...); m["b1"] == 0 {
		t.Fatalf("finished replies went to %v; want some on b1", m)
	}
	// Wait until every finished reply, FIN included, is at the client
	// (its sockets in CLOSE-WAIT) and the streams flow.
	waitUntil(t, 10*time.Second, "the finished replies' FINs reach the clients", func() bool {
		out, err := topo.Client.SS()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(out, "CLOSE-WAIT") >= len(fins)
	})
	waitUntil(t, 10*time.Second, "every stream flowing", func() bool {
		for _, s := range streams {
			if s.bytes.Load() < 1<<20 {
				return false
			}
		}
		return true
	})

	// Kill b1.
	killed := time.Now()
	b1.kill()

	for _, s := range streams {
		if s.name != "b1" {
			continue
		}
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			t.Fatalf("a stream from b1 still open 5s after b1 died (%d bytes)", s.bytes.Load())
		}
		if !isReset(s.err) {
			t.Errorf("stream from b1 ended with %v; want a reset", s.err)
		} else if el := s.at.Sub(killed); el > time.Second {
			t.Errorf("stream from b1 reset %v after b1 died; want at once", el)
		}
	}
	for _, f := range fins {
		f.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(f.c)
		if err != nil || len(got) != finReply || sha256Hex(got) != blobSum(finReply) {
			t.Errorf("finished reply from %s: %d bytes, %v; want the whole %d-byte reply, then EOF", f.name, len(got), err, finReply)
		}
		f.c.Close()
	}

	// New connections: some may still go to b1 (and be reset) until the
	// health checks take it down; from then on all go to b2.
	bound := interval*(fall+1) + timeout + 300*time.Millisecond
	var lastBad time.Time
	var bad, good int
	for ok := 0; ok < 40; {
		if time.Since(killed) > 5*time.Second {
			t.Fatalf("5s after b1 died, new connections still fail or go to b1 (%d bad)", bad)
		}
		name, _, err := ping(topo.Client, addr, 2*time.Second)
		switch {
		case err == nil && name == "b2":
			ok++
			good++
		default:
			if err == nil {
				err = fmt.Errorf("served by %s", name)
			} else if !isReset(err) {
				t.Errorf("a new connection while b1 goes down: %v; want a reset at worst", err)
			}
			bad++
			ok = 0
			lastBad = time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Duration(0)
	if bad > 0 {
		took = lastBad.Sub(killed)
	}
	t.Logf("b1 died: %d new connections reset or sent to b1, the last %v after; then %d in a row to b2", bad, took.Round(time.Millisecond), good)
	if took > bound {
		t.Errorf("new connections reached the dead b1 until %v after it died; want within %v (interval %v, fall %d)", took, bound, interval, fall)
	}
	if !regexp.MustCompile(`msg="backend health changed".*backend=` + regexp.QuoteMeta(backend1) + `:7000 up=false`).MatchString(d.output()) {
		t.Errorf("no log line taking b1 down")
	}
	for _, s := range streams {
		if s.name == "b2" {
			select {
			case <-s.done:
				t.Errorf("a stream from b2 broke when b1 died: %v", s.err)
			default:
			}
		}
	}

	// Kill b2 too: its streams are reset, new clients are reset at once,
	// and the daemon says so once.
	killed = time.Now()
	b2.kill()
	for _, s := range streams {
		if s.name != "b2" {
			continue
		}
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			t.Fatalf("a stream from b2 still open 5s after b2 died")
		}
		if !isReset(s.err) {
			t.Errorf("stream from b2 ended with %v; want a reset", s.err)
		} else if el := s.at.Sub(killed); el > time.Second {
			t.Errorf("stream from b2 reset %v after b2 died; want at once", el)
		}
	}
	waitUntil(t, 5*time.Second, "the health checks take b2 down", func() bool {
		return regexp.MustCompile(`msg="backend health changed".*backend=` + regexp.QuoteMeta(backend2) + `:7000 up=false`).MatchString(d.output())
	})
	for i := range 20 {
		name, el, err := ping(topo.Client, addr, 3*time.Second)
		if err == nil {
			t.Fatalf("with both backends dead, a client was served by %s", name)
		}
		if !isReset(err) {
			t.Errorf("client %d with both backends dead: %v; want a reset", i, err)
		}
		if el > 500*time.Millisecond {
			t.Errorf("client %d with both backends dead: reset after %v; want at once", i, el)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := strings.Count(d.output(), "every backend is down"); n != 1 {
		t.Errorf("the daemon logged \"every backend is down\" %d times; want once", n)
	}

	// b1 comes back: rise 1, so the next check brings it up.
	startRaw(t, topo.Backends, backend1+":7000", "b1")
	back := time.Now()
	for {
		name, _, err := ping(topo.Client, addr, 2*time.Second)
		if err == nil {
			if name != "b1" {
				t.Fatalf("served by %s; only b1 is alive", name)
			}
			t.Logf("b1 back: serving after %v", time.Since(back).Round(time.Millisecond))
			break
		}
		if time.Since(back) > 3*time.Second {
			t.Fatalf("b1 restarted 3s ago, new connections still fail: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out (%v) waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---- 5. half-close ----

// halfCloseChecks runs the two half-close exchanges against a raw listener.
func halfCloseChecks(t *testing.T, ns *lab.NS, addr string, results func(name string) chan string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The client shuts down its write side; the backend replies only then,
	// and the whole reply arrives.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			c, name, err := dialRaw(ctx, ns, addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(45 * time.Second))
			data := randomBytes(uint64(i)+7, 1<<20)
			if _, err := c.Write(append([]byte{'h'}, data...)); err != nil {
				t.Errorf("write: %v", err)
				return
			}
			if err := c.CloseWrite(); err != nil {
				t.Errorf("shutdown: %v", err)
				return
			}
			r := bufio.NewReader(c)
			line, err := r.ReadString('\n')
			if err != nil {
				t.Errorf("%s: reading the reply after our FIN: %v", name, err)
				return
			}
			if want := fmt.Sprintf("%s %d\n", sha256Hex(data), len(data)); line != want {
				t.Errorf("%s: backend got %q; we sent %q", name, line, want)
			}
			h := sha256.New()
			n, err := io.Copy(h, r)
			if err != nil || n != halfReply || hex.EncodeToString(h.Sum(nil)) != blobSum(halfReply) {
				t.Errorf("%s: reply after our FIN: %d bytes (%v); want the whole %d", name, n, err, halfReply)
			}
		})
	}
	wg.Wait()
	// The other way: the backend shuts down its write side first; the
	// client sees EOF, then still sends, and the backend gets it all.
	for i := range 4 {
		c, name, err := dialRaw(ctx, ns, addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		c.Write([]byte{'g'})
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "bye\n" {
			t.Fatalf("%s: %q, %v; want \"bye\\n\" then EOF", name, got, err)
		}
		data := randomBytes(uint64(i)+100, 512<<10)
		if _, err := c.Write(data); err != nil {
			t.Fatalf("%s: writing after the backend's FIN: %v", name, err)
		}
		c.CloseWrite()
		select {
		case res := <-results(name):
			if want := fmt.Sprintf("%s %d", sha256Hex(data), len(data)); res != want {
				t.Errorf("%s: backend got %q after its FIN; we sent %q", name, res, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: backend reported nothing 20s after our FIN", name)
		}
		// Our FIN went through: the backend closed, and so does the proxy.
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("%s: after both FINs: %v; want EOF", name, err)
		}
		c.Close()
	}
}

func TestHalfClose(t *testing.T) {
	topo := newTopology(t, e2eQueues)
	servers := map[string]*server{
		"b1": startRaw(t, topo.Backends, backend1+":7000", "b1"),
		"b2": startRaw(t, topo.Backends, backend2+":7000", "b2"),
	}
	startDaemon(t, topo, daemonConfig(topo, "2s", listenerYAML("raw", listenerIP+":7000", "round_robin", "",
		backend1+":7000", backend2+":7000")))
	halfCloseChecks(t, topo.Client, listenerIP+":7000", func(name string) chan string { return servers[name].results })
}

// ---- 6. dial: kernel ----

func TestDialKernel(t *testing.T) {
	topo := newTopology(t, e2eQueues)
	startHTTP(t, topo.Proxy, "127.0.0.1:8000", "k0")
	raw := startRaw(t, topo.Proxy, "127.0.0.1:8001", "k1")
	kernel := "    dial: kernel\n    health_check: {interval: 500ms, timeout: 200ms, rise: 1, fall: 2}\n"
	startDaemon(t, topo, daemonConfig(topo, "2s",
		listenerYAML("local", listenerIP+":8000", "round_robin", kernel, "127.0.0.1:8000"),
		listenerYAML("localraw", listenerIP+":8001", "round_robin", kernel, "127.0.0.1:8001")))

	hc := httpClient(topo.Client, 60*time.Second)
	base := "http://" + listenerIP + ":8000"
	const size = 16 << 20
	start := time.Now()
	resp, err := hc.Get(fmt.Sprintf("%s/blob?size=%d", base, size))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || n != size || hex.EncodeToString(h.Sum(nil)) != blobSum(size) || resp.Header.Get("X-Backend") != "k0" {
		t.Fatalf("GET /blob via dial: kernel: %d bytes, %v, backend %q", n, err, resp.Header.Get("X-Backend"))
	}
	t.Logf("dial: kernel: 16 MiB download in %v", time.Since(start).Round(time.Millisecond))

	up := randomBytes(3, size)
	resp, err = hc.Post(base+"/upload", "application/octet-stream", bytes.NewReader(up))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%s %d\n", sha256Hex(up), len(up)); string(b) != want {
		t.Fatalf("upload via dial: kernel: backend answered %q; want %q", b, want)
	}

	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			body := randomBytes(uint64(i)+50, 256<<10)
			resp, err := hc.Post(base+"/echo", "application/octet-stream", bytes.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || !bytes.Equal(got, body) {
				t.Errorf("echo %d via dial: kernel: %d bytes back, %v", i, len(got), err)
			}
		})
	}
	wg.Wait()

	halfCloseChecks(t, topo.Client, listenerIP+":8001", func(string) chan string { return raw.results })
}

// ---- 7. loss on the client leg ----

func TestLossyClient(t *testing.T) {
	if err := lab.EnsureTools("curl:curl"); err != nil {
		t.Fatal(err)
	}
	topo := newTopology(t, e2eQueues)
	startHTTP(t, topo.Backends, backend1+":8080", "b1")
	startHTTP(t, topo.Backends, backend2+":8080", "b2")
	startDaemonResult := startDaemon(t, topo, webConfig(topo, ""))
	undo, err := topo.Client.Loss("c0", 3, lab.Both)
	if err != nil {
		t.Fatal(err)
	}
	defer undo()
	d := startDaemonResult
	be, took := download(t, topo, bigBody, 180*time.Second)
	t.Logf("3%% loss both ways on the client leg: 50 MiB from %s in %s", be, took)
	// The engine's recovery counters, for whoever reads -v output.
	t.Logf("engine recovery counters:\n%s", recoveryCounters(d))
}

// ---- 9. drain on SIGTERM ----

func reservedPorts(t *testing.T, ns *lab.NS) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := ns.Run(ctx, "cat", "/proc/sys/net/ipv4/ip_local_reserved_ports")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// xdpAttached reports whether ip -d link shows an XDP program on iface.
func xdpAttached(t *testing.T, ns *lab.NS, iface string) (bool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := ns.Run(ctx, "ip", "-d", "link", "show", "dev", iface)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(out, iface, "IFACE") // the lab's names start with "xdp"
	return regexp.MustCompile(`(^|\s)(xdp|xdpgeneric|xdpdrv|xdpoffload|xdpmulti)(\s|$)|prog/xdp`).MatchString(s), out
}

// processesOf lists the pids running the binary.
func processesOf(bin string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink("/proc/" + e.Name() + "/exe"); err == nil && strings.TrimSuffix(exe, " (deleted)") == bin {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestDrainOnSIGTERM(t *testing.T) {
	topo := newTopology(t, e2eQueues)
	b1 := startRaw(t, topo.Backends, backend1+":7000", "b1")
	b2 := startRaw(t, topo.Backends, backend2+":7000", "b2")
	before := reservedPorts(t, topo.Proxy)
	if on, out := xdpAttached(t, topo.Proxy, topo.ProxyIf); on {
		t.Fatalf("XDP attached before the daemon runs:\n%s", out)
	}
	d := startDaemon(t, topo, daemonConfig(topo, "2s", listenerYAML("raw", listenerIP+":7000", "round_robin", "",
		backend1+":7000", backend2+":7000")))
	if during := reservedPorts(t, topo.Proxy); !strings.Contains(during, "20000-59999") {
		t.Errorf("while running, ip_local_reserved_ports is %q; want the source ports 20000-59999 reserved", during)
	}
	if on, out := xdpAttached(t, topo.Proxy, topo.ProxyIf); !on {
		t.Fatalf("XDP not attached while the daemon runs:\n%s", out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 100
	conns := make([]*net.TCPConn, n)
	for i := range conns {
		c, _, err := dialRaw(ctx, topo.Client, listenerIP+":7000")
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns[i] = c
	}
	if got := b1.open() + b2.open(); got != n {
		t.Fatalf("backends hold %d connections; want %d", got, n)
	}

	// SIGTERM: the idle connections do not finish, so the daemon waits
	// drain_timeout, resets them and exits 0.
	type exit struct {
		took time.Duration
		err  error
	}
	exited := make(chan exit, 1)
	go func() {
		took, err := d.stop()
		exited <- exit{took, err}
	}()
	// While draining: /healthz says 503 and new clients are reset.
	waitUntil(t, time.Second, "the daemon to start draining", func() bool { return strings.Contains(d.output(), "msg=draining") })
	if code, body, err := d.healthz(); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("/healthz while draining: %d %q %v; want 503", code, body, err)
	}
	if _, _, err := ping(topo.Client, listenerIP+":7000", time.Second); err == nil || !isReset(err) && !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("a new client while draining: %v; want it reset or refused", err)
	}
	var ex exit
	select {
	case ex = <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("no exit 30s after SIGTERM")
	}
	if ex.err != nil {
		t.Fatalf("daemon: %v", ex.err)
	}
	t.Logf("SIGTERM with %d idle connections: exit 0 after %v", n, ex.took.Round(time.Millisecond))
	if ex.took < 1900*time.Millisecond || ex.took > 5*time.Second {
		t.Errorf("exit %v after SIGTERM; want drain_timeout (2s) and a little", ex.took)
	}
	out := d.output()
	if !regexp.MustCompile(`msg="drain timeout: reset the remaining sessions" sessions=100`).MatchString(out) {
		t.Errorf("no log line saying the 100 sessions were reset at the drain timeout")
	}

	// Both legs of every session were reset.
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err := c.Read(make([]byte, 1))
		if !isReset(err) {
			t.Errorf("client %d after the drain: %v; want a reset", i, err)
			if i > 5 {
				break
			}
		}
		c.Close()
	}
	waitUntil(t, 3*time.Second, "the backends' connections to be reset", func() bool { return b1.open()+b2.open() == 0 })

	// The system is as it was.
	if on, out := xdpAttached(t, topo.Proxy, topo.ProxyIf); on {
		t.Errorf("XDP still attached after exit:\n%s", out)
	}
	if after := reservedPorts(t, topo.Proxy); after != before {
		t.Errorf("ip_local_reserved_ports after exit %q; before the daemon %q", after, before)
	}
	if pids := processesOf(xdproxyBin); len(pids) > 0 {
		t.Errorf("xdproxy processes left: %v", pids)
	}
}

// ---- PROXY protocol to backends ----

// TestProxyProtocol: with proxy_protocol v1 / v2 the backend's first bytes
// are the PROXY header naming the real client (as seen by the daemon) and
// the listener address; the client's own bytes follow untouched.
func TestProxyProtocol(t *testing.T) {
	for _, version := range []string{"v1", "v2"} {
		t.Run(version, func(t *testing.T) {
			topo := newTopology(t, e2eQueues)
			ln, err := topo.Backends.ListenTCP(backend1 + ":7100")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			got := make(chan []byte, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				b, _ := io.ReadAll(c) // the client half-closes after its message
				got <- b
			}()
			startDaemon(t, topo, daemonConfig(topo, "2s", listenerYAML("pp", listenerIP+":7100", "round_robin",
				"    proxy_protocol: "+version+"\n", backend1+":7100")))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := topo.Client.DialTCP(ctx, listenerIP+":7100")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			client := netip.MustParseAddrPort(c.LocalAddr().String())
			c.Write([]byte("payload"))
			c.(*net.TCPConn).CloseWrite()
			var b []byte
			select {
			case b = <-got:
			case <-time.After(10 * time.Second):
				t.Fatal("backend received nothing")
			}
			var want []byte
			dst := netip.MustParseAddrPort(listenerIP + ":7100")
			if version == "v1" {
				want = fmt.Appendf(nil, "PROXY TCP4 %s %s %d %d\r\n", client.Addr(), dst.Addr(), client.Port(), dst.Port())
			} else {
				want = []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
				want = append(want, client.Addr().AsSlice()...)
				want = append(want, dst.Addr().AsSlice()...)
				want = append(want, byte(client.Port()>>8), byte(client.Port()), byte(dst.Port()>>8), byte(dst.Port()))
			}
			want = append(want, "payload"...)
			if !bytes.Equal(b, want) {
				t.Fatalf("backend received %q, want %q", b, want)
			}
		})
	}
}
