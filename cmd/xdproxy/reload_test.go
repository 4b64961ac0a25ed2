package main

// Reload under traffic: keep-alive streams and a steady connection rate run
// while reloads add a backend, remove one, change weights and add a
// listener; then a file with a mistake is refused and changes nothing.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/internal/lab"
)

func TestReloadUnderTraffic(t *testing.T) {
	topo := newTopology(t, e2eQueues)
	startHTTP(t, topo.Backends, backend1+":8080", "b1")
	startHTTP(t, topo.Backends, backend2+":8080", "b2")
	startHTTP(t, topo.Backends, backend1+":8081", "b3")
	web := listenerYAML("web", listenerIP+":80", "round_robin", "", backend1+":8080", backend2+":8080")
	cfg := daemonConfig(topo, "2s", web)
	d := startDaemon(t, topo, cfg)

	// 200 keep-alive streams, each on its own connection for the whole test.
	keep := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 300, MaxConnsPerHost: 300,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return topo.Client.DialTCP(ctx, addr) },
	}}
	var streamsOK, streamsFailed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	get := func(hc *http.Client, url string) (string, error) {
		resp, err := hc.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			return "", fmt.Errorf("status %d, %v", resp.StatusCode, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	for range 200 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := get(keep, "http://"+listenerIP+"/"); err != nil {
					streamsFailed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				} else {
					streamsOK.Add(1)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	// A steady connection rate: a new connection per request.
	fresh := httpClient(topo.Client, 10*time.Second)
	var mu sync.Mutex
	seen := map[string]int{} // by backend, new connections since reset
	var freshFailed atomic.Int64
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				name, err := get(fresh, "http://"+listenerIP+"/")
				if err != nil {
					freshFailed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				mu.Lock()
				seen[name]++
				mu.Unlock()
			}
		})
	}
	counts := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int{}
		for k, v := range seen {
			out[k] = v
		}
		clear(seen)
		return out
	}
	time.Sleep(1500 * time.Millisecond)
	before := counts()
	t.Logf("before the reload, new connections went to %v", before)
	if before["b1"] == 0 || before["b2"] == 0 {
		t.Fatalf("before the reload: %v, want both b1 and b2", before)
	}

	// Reload: b1 removed, b2 weight 3, b3 added (weight 1); a listener added.
	api := listenerYAML("api", listenerIP+":81", "round_robin", "", backend1+":8081")
	web2 := strings.Replace(listenerYAML("web", listenerIP+":80", "round_robin", "", backend2+":8080", backend1+":8081"),
		"      - address: "+backend2+":8080\n", "      - address: "+backend2+":8080\n        weight: 3\n", 1)
	if err := os.WriteFile(d.path, []byte(daemonConfig(topo, "2s", web2, api)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := inNS(t, topo.Proxy, "reload", "--config", d.path)
	if code != 0 || !strings.Contains(out, "applied in") {
		t.Fatalf("xdproxy reload: exit %d, %q, %q", code, out, errs)
	}
	t.Logf("xdproxy reload: %s", strings.TrimSpace(out))
	time.Sleep(300 * time.Millisecond) // requests that picked a backend before it end
	counts()
	time.Sleep(2 * time.Second)
	after := counts()
	t.Logf("after the reload, new connections went to %v", after)
	if after["b1"] != 0 {
		t.Errorf("the removed backend b1 got %d new sessions after the reload", after["b1"])
	}
	if r := float64(after["b2"]) / float64(max(after["b3"], 1)); after["b3"] == 0 || r < 2 || r > 4.5 {
		t.Errorf("b2:b3 = %d:%d (%.2f), want about 3:1", after["b2"], after["b3"], r)
	}
	if name, err := get(fresh, "http://"+listenerIP+":81/"); err != nil || name != "b3" {
		t.Errorf("the added listener: %q, %v", name, err)
	}

	// SIGHUP does the same: b1 back with weight 1.
	if err := os.WriteFile(d.path, []byte(daemonConfig(topo, "2s", web, api)), 0o644); err != nil {
		t.Fatal(err)
	}
	d.proc.Signal(syscall.SIGHUP)
	waitUntil(t, 5*time.Second, "the SIGHUP reload", func() bool {
		return strings.Count(d.output(), "reload applied") >= 2
	})
	// Connections that chose their backend before the reload and finish
	// after it are counted by the next counts(): give them time (a loaded
	// box stretches them; one to b3 was seen 300 ms on).
	time.Sleep(time.Second)
	counts()
	time.Sleep(1500 * time.Millisecond)
	if c := counts(); c["b1"] == 0 || c["b3"] != 0 {
		t.Errorf("after SIGHUP (web: b1, b2): %v", c)
	}

	// A bad file is refused with its check lines; nothing changes.
	m := d.fullMetrics()
	hashBefore := metricLabel(m, "xdproxy_config_info", "sha256")
	bad := strings.Replace(daemonConfig(topo, "2s", web, api), "address: "+listenerIP+":81", "address: "+listenerIP+":0", 1)
	if err := os.WriteFile(d.path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	// (--admin: the CLI cannot read the admin address from a bad file.)
	code, out, errs = inNS(t, topo.Proxy, "reload", "--admin", d.adminAddr)
	if code != 1 || !strings.Contains(errs, d.path+":") || !strings.Contains(errs, "listeners[1].address") {
		t.Errorf("reload of a bad file: exit %d, stdout %q, stderr %q; want 1 and a FILE:LINE line", code, out, errs)
	}
	m = d.fullMetrics()
	if h := metricLabel(m, "xdproxy_config_info", "sha256"); h != hashBefore || h == "" {
		t.Errorf("config hash %q after a refused reload, want %q", h, hashBefore)
	}
	if gaugeWith(m, "xdproxy_config_reloads_total", "result", "applied") != 2 || gaugeWith(m, "xdproxy_config_reloads_total", "result", "refused") != 1 {
		t.Errorf("reload counters: applied %v refused %v, want 2 and 1",
			gaugeWith(m, "xdproxy_config_reloads_total", "result", "applied"), gaugeWith(m, "xdproxy_config_reloads_total", "result", "refused"))
	}
	if name, err := get(fresh, "http://"+listenerIP+":81/"); err != nil || name != "b3" {
		t.Errorf("the api listener after a refused reload: %q, %v", name, err)
	}

	close(stop)
	wg.Wait()
	t.Logf("keep-alive requests: %d ok, %d failed; new-connection failures: %d", streamsOK.Load(), streamsFailed.Load(), freshFailed.Load())
	if streamsFailed.Load() > 0 || freshFailed.Load() > 0 {
		t.Errorf("requests failed across the reloads: %d keep-alive, %d new connections (first: %v)", streamsFailed.Load(), freshFailed.Load(), firstErr.Load())
	}
}

// metricLabel is the value of label on the first sample of name.
func metricLabel(text, name, label string) string {
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		i := strings.Index(line, label+`="`)
		if i < 0 {
			continue
		}
		rest := line[i+len(label)+2:]
		if j := strings.IndexByte(rest, '"'); j >= 0 {
			return rest[:j]
		}
	}
	return ""
}

// TestReloadWith10kSessions: a reload's cost does not grow with the open
// sessions (it swaps listeners, never walks sessions): 10,000 sessions
// open through the daemon (to redis-server, a process of its own: file
// descriptors), a reload that re-weights and adds a backend, timed from
// the request to the new configuration serving on every shard; every
// session still answers afterwards.
func TestReloadWith10kSessions(t *testing.T) {
	if err := lab.EnsureTools("redis-server", "redis-cli:redis-tools"); err != nil {
		t.Fatal(err)
	}
	const n = 10000
	topo := newTopology(t, e2eQueues)
	srv, err := topo.Backends.Start(context.Background(), "redis-server", "--bind", backend1, "--port", "6379",
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no", "--maxclients", "10100")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, srv, "Ready to accept connections", 20*time.Second)
	startHTTP(t, topo.Backends, backend2+":6379", "spare")
	redis := listenerYAML("redis", listenerIP+":6379", "round_robin", "", backend1+":6379")
	d := startDaemon(t, topo, daemonConfig(topo, "2s", redis))

	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for len(conns) < n {
		c, err := topo.Client.DialTCP(ctx, listenerIP+":6379")
		if err != nil {
			t.Fatalf("session %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	ping := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return err
		}
		buf := make([]byte, 7)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "+PONG\r\n" {
			return fmt.Errorf("%q, %v", buf, err)
		}
		return nil
	}
	for i := 0; i < n; i += 97 {
		if err := ping(conns[i]); err != nil {
			t.Fatalf("session %d before the reload: %v", i, err)
		}
	}
	waitUntil(t, 10*time.Second, "10,000 sessions", func() bool {
		return gaugeWith(d.fullMetrics(), "xdproxy_active_sessions", "", "") >= n
	})

	redis2 := strings.Replace(listenerYAML("redis", listenerIP+":6379", "round_robin", "", backend1+":6379", backend2+":6379"),
		"      - address: "+backend1+":6379\n", "      - address: "+backend1+":6379\n        weight: 5\n", 1)
	if err := os.WriteFile(d.path, []byte(daemonConfig(topo, "2s", redis2)), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	code, out, errs := inNS(t, topo.Proxy, "reload", "--admin", d.adminAddr)
	wall := time.Since(start)
	if code != 0 {
		t.Fatalf("reload: exit %d, %q %q", code, out, errs)
	}
	var took time.Duration
	if f := strings.Fields(out); len(f) > 2 {
		took, _ = time.ParseDuration(f[2])
	}
	t.Logf("reload with %d open sessions: %v in the daemon (%v with the CLI's start): %s", n, took, wall.Round(time.Millisecond), strings.TrimSpace(out))
	if took <= 0 || took > 100*time.Millisecond {
		t.Errorf("reload took %v in the daemon with %d open sessions, want under 100ms", took, n)
	}
	for i := 0; i < n; i += 97 {
		if err := ping(conns[i]); err != nil {
			t.Fatalf("session %d after the reload: %v", i, err)
		}
	}
}
