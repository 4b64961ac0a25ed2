// Command demo is `make demo`: it builds the lab (client, router, proxy and
// backend network namespaces), starts two backends and the xdproxy daemon
// with XDP on the proxy's veth, sends real traffic from the client
// namespace (curl, then a burst of a few thousand connections), prints a
// short summary ending with one connection's ladder (`xdproxy trace`) and
// tears everything down — also on Ctrl-C and on failure.
// It exits 0 only when the traffic really went through the daemon.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/xdproxy/xdproxy/internal/lab"
)

func main() {
	bin := flag.String("bin", "bin/xdproxy", "the xdproxy binary")
	cfgPath := flag.String("config", "configs/lab.yaml", "the lab configuration (its interface name is replaced by the lab's)")
	burst := flag.Int("burst", 3000, "connections in the burst")
	flag.Parse()
	if err := run(*bin, *cfgPath, *burst); err != nil {
		fmt.Fprintf(os.Stderr, "demo: FAILED: %v\n", err)
		os.Exit(1)
	}
}

type backend struct {
	addr  string
	reqs  atomic.Int64
	bytes atomic.Int64
}

func run(bin, cfgPath string, burst int) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("the demo needs root (network namespaces, XDP); run it as root")
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("xdproxy binary: %w (run `make build`)", err)
	}
	if err := lab.EnsureTools("curl:curl", "ip:iproute2", "ethtool:ethtool"); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	step("building the lab: client — router — proxy (XDP) — backends")
	l, err := lab.New(nil)
	if err != nil {
		return err
	}
	defer func() {
		step("tearing down the lab")
		if cerr := l.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	topo, err := l.NewTopology(1)
	if err != nil {
		return err
	}

	step("starting two backends on 10.10.2.2:8080 and 10.10.2.3:8080")
	var backends []*backend
	for _, a := range topo.BackendAddrs {
		b := &backend{addr: a.String() + ":8080"}
		ln, err := topo.Backends.ListenTCP(b.addr)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: b.handler(), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		backends = append(backends, b)
	}

	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "xdproxy-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	runCfg := filepath.Join(dir, "lab.yaml")
	text := strings.Replace(string(cfg), "name: p0", "name: "+topo.ProxyIf, 1)
	if err := os.WriteFile(runCfg, []byte(text), 0o644); err != nil {
		return err
	}

	step("starting xdproxy in the proxy namespace (XDP on " + topo.ProxyIf + ")")
	absBin, _ := filepath.Abs(bin)
	daemon, err := topo.Proxy.Start(ctx, absBin, "run", "--config", runCfg)
	if err != nil {
		return err
	}
	defer func() {
		daemon.Stop(15 * time.Second)
	}()
	if err := waitReady(ctx, daemon, 30*time.Second); err != nil {
		return err
	}
	admin := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		return topo.Proxy.DialTCP(ctx, addr)
	}}}
	// Health checks mark backends up after `rise` checks; wait for both.
	if err := waitBackendsUp(ctx, admin, len(backends), 20*time.Second); err != nil {
		return err
	}

	step("curl from the client namespace")
	curlOK := 0
	for i := 0; i < 5; i++ {
		out, err := topo.Client.Run(ctx, "curl", "-sS", "--max-time", "5", "http://10.10.1.1/hello")
		if err != nil {
			return fmt.Errorf("curl: %w", err)
		}
		fmt.Printf("    %s", out)
		curlOK++
	}
	const blob = 20 << 20
	out, err := topo.Client.Run(ctx, "sh", "-c", fmt.Sprintf("curl -sS --max-time 60 http://10.10.1.1/blob?size=%d | sha256sum", blob))
	if err != nil {
		return fmt.Errorf("curl blob: %w", err)
	}
	want := blobSHA(blob)
	if got := strings.Fields(out); len(got) == 0 || got[0] != want {
		return fmt.Errorf("20 MiB download: sha256 %q, want %s", out, want)
	}
	fmt.Printf("    20 MiB download through the daemon: sha256 ok\n")

	step(fmt.Sprintf("a burst of %d connections (64 at a time, one request each)", burst))
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true, MaxConnsPerHost: 64,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return topo.Client.DialTCP(ctx, addr) },
	}}
	var ok, failed atomic.Int64
	var states map[string]int
	start := time.Now()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				resp, err := client.Get("http://10.10.1.1/hello")
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	for i := 0; i < burst; i++ {
		if i == burst/2 {
			states = connectionStates(admin)
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
			close(jobs)
			wg.Wait()
			return ctx.Err()
		}
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)

	metrics := scrape(admin)
	step("summary")
	fmt.Printf("    requests:     %d curl + %d in the burst ok, %d failed (%.0f connections/s)\n", curlOK+1, ok.Load(), failed.Load(), float64(burst)/elapsed.Seconds())
	for _, b := range backends {
		fmt.Printf("    backend %-15s %5d requests, %8.1f MiB\n", b.addr, b.reqs.Load(), float64(b.bytes.Load())/(1<<20))
	}
	fmt.Printf("    engine connection states mid-burst (/connections):")
	keys := make([]string, 0, len(states))
	for k := range states {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf(" %s=%d", k, states[k])
	}
	fmt.Println()
	for _, m := range []string{
		`xdproxy_accepted_total{listener="web"}`,
		`xdproxy_bytes_total{direction="in",listener="web"}`,
		`xdproxy_bytes_total{direction="out",listener="web"}`,
		`xdproxy_tcp_events_total{counter="passive_opens"}`,
		`xdproxy_tcp_events_total{counter="active_opens"}`,
		`xdproxy_tcp_events_total{counter="retransmits"}`,
		`xdproxy_tcp_events_total{counter="syn_cookies_sent"}`,
	} {
		fmt.Printf("    %-58s %s\n", m, metrics[m])
	}
	ladder, err := traceOne(ctx, topo, absBin)
	if err != nil {
		return fmt.Errorf("xdproxy trace: %w", err)
	}
	fmt.Println("    one connection's ladder (xdproxy trace --count 1, then curl http://10.10.1.1/hello):")
	for _, line := range strings.Split(strings.TrimRight(ladder, "\n"), "\n") {
		fmt.Println("    " + line)
	}
	if failed.Load() > 0 {
		return fmt.Errorf("%d of %d burst requests failed", failed.Load(), burst)
	}
	for _, b := range backends {
		if b.reqs.Load() == 0 {
			return fmt.Errorf("backend %s received nothing: balancing is broken", b.addr)
		}
	}
	step("stopping xdproxy (SIGTERM: drain, detach)")
	if err := daemon.Stop(15 * time.Second); err != nil {
		return fmt.Errorf("xdproxy did not exit cleanly: %w\n%s", err, tail(daemon.Output()))
	}
	fmt.Println("demo: OK — traffic went through xdproxy")
	return nil
}

func step(s string) { fmt.Printf("==> %s\n", s) }

// traceOne runs `xdproxy trace --count 1` in the proxy namespace, makes
// one request once it is waiting, and returns the session's ladder.
func traceOne(ctx context.Context, topo *lab.Topology, bin string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := topo.Proxy.Command(ctx, bin, "trace", "--admin", "127.0.0.1:9100", "--listener", "web", "--count", "1")
	var out strings.Builder
	cmd.Stdout = &out
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	sc := bufio.NewScanner(errPipe)
	if !sc.Scan() || !strings.Contains(sc.Text(), "waiting for") {
		cmd.Wait()
		return "", fmt.Errorf("did not start: %s", sc.Text())
	}
	go io.Copy(io.Discard, errPipe)
	if _, err := topo.Client.Run(ctx, "curl", "-sS", "--max-time", "5", "http://10.10.1.1/hello"); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return "", fmt.Errorf("curl: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		return "", err
	}
	return out.String(), nil
}

func (b *backend) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		b.reqs.Add(1)
		msg := fmt.Sprintf("hello from backend %s (client seen as %s)\n", b.addr, r.RemoteAddr)
		b.bytes.Add(int64(len(msg)))
		io.WriteString(w, msg)
	})
	mux.HandleFunc("/blob", func(w http.ResponseWriter, r *http.Request) {
		b.reqs.Add(1)
		var size int
		fmt.Sscan(r.URL.Query().Get("size"), &size)
		w.Header().Set("Content-Length", fmt.Sprint(size))
		n, _ := io.Copy(w, io.LimitReader(blobReader(), int64(size)))
		b.bytes.Add(n)
	})
	return mux
}

// blobReader is the deterministic body /blob serves.
func blobReader() io.Reader { return &prng{r: rand.New(rand.NewPCG(7, 7))} }

type prng struct{ r *rand.Rand }

func (p *prng) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(p.r.Uint32())
	}
	return len(b), nil
}

func blobSHA(size int) string {
	h := sha256.New()
	io.Copy(h, io.LimitReader(blobReader(), int64(size)))
	return hex.EncodeToString(h.Sum(nil))
}

func waitReady(ctx context.Context, p *lab.Proc, timeout time.Duration) error {
	end := time.Now().Add(timeout)
	for time.Now().Before(end) {
		if strings.Contains(p.Output(), "msg=ready") {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("xdproxy exited before it was ready:\n%s", tail(p.Output()))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("xdproxy not ready after %v:\n%s", timeout, tail(p.Output()))
}

func waitBackendsUp(ctx context.Context, admin *http.Client, n int, timeout time.Duration) error {
	end := time.Now().Add(timeout)
	for time.Now().Before(end) {
		up := 0
		for k, v := range scrape(admin) {
			if strings.HasPrefix(k, "xdproxy_backend_up{") && v == "1" {
				up++
			}
		}
		if up >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("backends not up after %v", timeout)
}

// scrape reads /metrics into name{labels} → value.
func scrape(c *http.Client) map[string]string {
	m := map[string]string{}
	resp, err := c.Get("http://127.0.0.1:9100/metrics")
	if err != nil {
		return m
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			m[line[:i]] = line[i+1:]
		}
	}
	return m
}

// connectionStates counts the engine's connections by state from /connections.
func connectionStates(c *http.Client) map[string]int {
	states := map[string]int{}
	resp, err := c.Get("http://127.0.0.1:9100/connections")
	if err != nil {
		return states
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 {
			states[f[1]]++
		}
	}
	return states
}

func tail(s string) string {
	if len(s) > 3000 {
		return s[len(s)-3000:]
	}
	return s
}
