package main

// The runtime API end to end (issue 16, item 4): the daemon in the lab,
// its admin server on the proxy namespace's own address (not loopback, so
// behind a token), and the CLI commands run in that namespace.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/internal/lab"
	"github.com/xdproxy/xdproxy/proxy/admin"
)

// pingLoad makes raw pings ('p') through the listener from the client
// namespace, workers at a time, until stop, recording each one.
type pingLoad struct {
	mu    sync.Mutex
	pings []pingResult
	stop  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

type pingResult struct {
	start time.Time
	name  string
	err   error
}

func startPingLoad(ns *lab.NS, addr string, workers int) *pingLoad {
	l := &pingLoad{stop: make(chan struct{})}
	for range workers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				start := time.Now()
				name, _, err := ping(ns, addr, 5*time.Second)
				l.mu.Lock()
				l.pings = append(l.pings, pingResult{start, name, err})
				l.mu.Unlock()
			}
		})
	}
	return l
}

func (l *pingLoad) halt() {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// since counts by backend the pings that began at or after t (errors under
// "error"), and returns the first error.
func (l *pingLoad) since(t time.Time) (map[string]int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := map[string]int{}
	var first error
	for _, p := range l.pings {
		if p.start.Before(t) {
			continue
		}
		if p.err != nil {
			m["error"]++
			if first == nil {
				first = p.err
			}
			continue
		}
		m[p.name]++
	}
	return m, first
}

// cli runs the daemon binary's admin commands in the proxy namespace.
type cli struct {
	t    *testing.T
	ns   *lab.NS
	args []string // appended to every command (--config FILE)
}

func (c cli) run(args ...string) (int, string, string) {
	c.t.Helper()
	return inNS(c.t, c.ns, append(args, c.args...)...)
}

// set runs `backend set web BACKEND ARGS...`, which must succeed, and
// returns when it did.
func (c cli) set(backend string, args ...string) time.Time {
	c.t.Helper()
	code, out, errs := c.run(append([]string{"backend", "set", "web", backend}, args...)...)
	if code != 0 || errs != "" {
		c.t.Fatalf("backend set %s %v: exit %d, stdout %q, stderr %q", backend, args, code, out, errs)
	}
	c.t.Logf("backend set %s %s: %s", backend, strings.Join(args, " "), strings.TrimSpace(out))
	return time.Now()
}

// backend is backend addr of listener web as `backends --json` shows it.
func (c cli) backend(addr string) admin.BackendDoc {
	c.t.Helper()
	code, out, errs := c.run("backends", "--json")
	if code != 0 {
		c.t.Fatalf("backends --json: exit %d, %s", code, errs)
	}
	var doc admin.BackendsDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		c.t.Fatalf("backends --json: %v\n%s", err, out)
	}
	for _, l := range doc.Listeners {
		for _, b := range l.Backends {
			if l.Name == "web" && b.Address == addr {
				return b
			}
		}
	}
	c.t.Fatalf("backends --json has no web %s:\n%s", addr, out)
	return admin.BackendDoc{}
}

// TestRuntimeAPI: under a steady connection rate, drain a backend (its
// open sessions finish normally, it gets no new ones, its health checks
// go on), put it in maint (its health checks stop too), back to ready
// (checks and sessions resume), weight 0 (no new sessions) and back; all
// through the CLI, against an admin server on a non-loopback address that
// answers 401 without the token. Not one connection fails.
func TestRuntimeAPI(t *testing.T) {
	topo := newTopology(t, e2eQueues)
	b1 := startRaw(t, topo.Backends, backend1+":8080", "b1")
	startRaw(t, topo.Backends, backend2+":8080", "b2")
	b1Addr := backend1 + ":8080"

	secret := make([]byte, 16)
	rand.Read(secret)
	token := writeToken(t, hex.EncodeToString(secret), 0o644)
	adminHere := listenerIP + ":9100" // p0's own address in the proxy namespace
	cfg := daemonConfig(topo, "5s", listenerYAML("web", listenerIP+":80", "round_robin",
		"    health_check: {interval: 200ms, timeout: 150ms, rise: 1, fall: 2}\n", b1Addr, backend2+":8080"))
	cfg = strings.Replace(cfg, "admin:\n  address: "+adminAddr+"\n", "admin:\n  address: "+adminHere+"\n  token_file: "+token+"\n", 1)
	if !strings.Contains(cfg, "token_file") {
		t.Fatal("no admin block to replace in the config")
	}

	// check refuses the token file while group and others may read it.
	path := writeConfig(t, "xdproxy.yaml", cfg)
	code, _, errs := inNS(t, topo.Proxy, "check", "--config", path)
	line := strings.Count(cfg[:strings.Index(cfg, "token_file")], "\n") + 1
	want := fmt.Sprintf("%s:%d: admin.token_file: %s is open to group or others (mode 0644); the token is a secret: chmod 600 %s\n", path, line, token, token)
	if code != 1 || errs != want {
		t.Fatalf("check with a 0644 token file: exit %d, stderr %q; want 1 and %q", code, errs, want)
	}
	if err := os.Chmod(token, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := inNS(t, topo.Proxy, "check", "--config", path); code != 0 || out != "ok\n" {
		t.Fatalf("check with a 0600 token file: exit %d, %q %q", code, out, errs)
	}

	d := startDaemon(t, topo, cfg)
	if d.adminAddr != adminHere {
		t.Fatalf("daemon admin address %s", d.adminAddr)
	}
	withToken := cli{t: t, ns: topo.Proxy, args: []string{"--config", d.path}}
	noToken := cli{t: t, ns: topo.Proxy, args: []string{"--admin", adminHere}}

	// ---- 401 without the token ----
	code, out, errs := noToken.run("backends")
	if code != 1 || out != "" || !strings.Contains(errs, "401 Unauthorized") || strings.Count(errs, "\n") != 1 {
		t.Fatalf("backends without the token: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if code, _, errs := noToken.run("backend", "set", "web", b1Addr, "--state", "drain"); code != 1 || !strings.Contains(errs, "401 Unauthorized") {
		t.Fatalf("backend set without the token: exit %d, stderr %q", code, errs)
	}
	for path, want := range map[string]int{"/healthz": 200, "/metrics": 200, "/backends": 401, "/connections": 401, "/debug/pprof/": 401} {
		resp, err := d.admin.Get("http://" + adminHere + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s without the token: %d, want %d", path, resp.StatusCode, want)
		}
	}
	req, _ := http.NewRequest("GET", "http://"+adminHere+"/connections", nil)
	req.Header.Set("Authorization", "Bearer "+hex.EncodeToString(secret))
	if resp, err := d.admin.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /connections with the token: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	metricsText := func() string {
		resp, err := d.admin.Get("http://" + adminHere + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if n := sumMetric(metricsText(), "xdproxy_admin_unauthorized_total"); n != 5 {
		t.Errorf("xdproxy_admin_unauthorized_total %v, want 5", n)
	}
	code, out, errs = withToken.run("backends")
	if code != 0 || !regexp.MustCompile(`(?m)^web\s+10\.10\.2\.2:8080\s+ready\s+1\s+up\s`).MatchString(out) {
		t.Fatalf("backends with the token: exit %d\n%s%s", code, out, errs)
	}
	t.Logf("backends:\n%s", out)

	// ---- drain under load ----
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	listenAddr := listenerIP + ":80"
	// Echo sessions held open across the changes; at least three on b1.
	var onB1 []*net.TCPConn
	for tries := 0; len(onB1) < 3; tries++ {
		if tries == 40 {
			t.Fatalf("only %d of 40 sessions went to b1", len(onB1))
		}
		c, name, err := dialRaw(ctx, topo.Client, listenAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte{'e'}); err != nil {
			t.Fatal(err)
		}
		if name == "b1" {
			onB1 = append(onB1, c)
		}
	}
	load := startPingLoad(topo.Client, listenAddr, 4)
	defer load.halt()
	begin := time.Now()
	waitUntil(t, 10*time.Second, "pings reach both backends", func() bool {
		m, _ := load.since(begin)
		return m["b1"] >= 20 && m["b2"] >= 20
	})

	drained := withToken.set(b1Addr, "--state", "drain")
	before := withToken.backend(b1Addr)
	if before.State.String() != "drain" || before.Checks == nil || before.ActiveSessions < int64(len(onB1)) {
		t.Fatalf("b1 after drain: %+v", before)
	}
	waitUntil(t, 10*time.Second, "200 pings after the drain", func() bool {
		m, _ := load.since(drained)
		return m["b2"] >= 200
	})
	if m, err := load.since(drained); m["b1"] != 0 || err != nil {
		t.Fatalf("pings since the drain: %v (first error %v); want none on b1 and no error", m, err)
	}
	// b1's open sessions go on and finish normally: echo, half-close, EOF.
	for i, c := range onB1 {
		msg := fmt.Sprintf("session %d after the drain", i)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatalf("b1 session %d after the drain: write: %v", i, err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatalf("b1 session %d after the drain: close-write: %v", i, err)
		}
		got, err := io.ReadAll(c)
		if err != nil || string(got) != msg {
			t.Fatalf("b1 session %d after the drain: echo %q, %v; want %q and EOF", i, got, err, msg)
		}
		c.Close()
	}
	waitUntil(t, 3*time.Second, "b1's health checks go on in drain", func() bool {
		return withToken.backend(b1Addr).Checks.OK > before.Checks.OK
	})
	if after := withToken.backend(b1Addr); after.SessionsTotal != before.SessionsTotal {
		t.Errorf("b1 got %d new sessions while drained", after.SessionsTotal-before.SessionsTotal)
	}
	waitUntil(t, 5*time.Second, "b1's drained sessions closed", func() bool {
		return withToken.backend(b1Addr).ActiveSessions == 0
	})
	m := metricsText()
	for _, w := range []string{
		`xdproxy_backend_state{backend="10.10.2.2:8080",listener="web",state="drain"} 1`,
		`xdproxy_backend_state{backend="10.10.2.2:8080",listener="web",state="ready"} 0`,
		`xdproxy_backend_state{backend="10.10.2.3:8080",listener="web",state="ready"} 1`,
	} {
		if !strings.Contains(m, w+"\n") {
			t.Errorf("/metrics lacks %s", w)
		}
	}

	// ---- maint: no sessions, no health checks ----
	withToken.set(b1Addr, "--state", "maint")
	time.Sleep(300 * time.Millisecond) // a check in flight ends
	inMaint, accepts := withToken.backend(b1Addr), b1.accepts.Load()
	maintAt := time.Now()
	time.Sleep(1200 * time.Millisecond) // six check intervals
	later := withToken.backend(b1Addr)
	if later.State.String() != "maint" || later.Checks.OK != inMaint.Checks.OK || later.Checks.Failed != inMaint.Checks.Failed {
		t.Errorf("b1 in maint: checks %+v then %+v; want them stopped", inMaint.Checks, later.Checks)
	}
	if n := b1.accepts.Load(); n != accepts {
		t.Errorf("b1 accepted %d connections in maint (health checks or sessions)", n-accepts)
	}
	if m, err := load.since(maintAt); m["b1"] != 0 || err != nil || m["b2"] == 0 {
		t.Fatalf("pings in maint: %v (first error %v)", m, err)
	}
	code, out, _ = withToken.run("backends")
	if code != 0 || !regexp.MustCompile(`(?m)^web\s+10\.10\.2\.2:8080\s+maint\s`).MatchString(out) {
		t.Fatalf("backends in maint: exit %d\n%s", code, out)
	}

	// ---- ready again: sessions and checks resume ----
	ready := withToken.set(b1Addr, "--state", "ready")
	waitUntil(t, 5*time.Second, "pings on b1 again", func() bool {
		m, _ := load.since(ready)
		return m["b1"] >= 20
	})
	waitUntil(t, 3*time.Second, "b1's health checks resume (within an interval)", func() bool {
		b := withToken.backend(b1Addr)
		return b.Checks.OK > later.Checks.OK && b.Health == "up"
	})

	// ---- weight 0: ready, checked, but no new sessions ----
	zero := withToken.set(b1Addr, "--weight", "0")
	z := withToken.backend(b1Addr)
	if z.State.String() != "ready" || z.Weight != 0 || z.ConfiguredWeight != 1 {
		t.Fatalf("b1 at weight 0: %+v", z)
	}
	waitUntil(t, 10*time.Second, "200 pings at weight 0", func() bool {
		m, _ := load.since(zero)
		return m["b2"] >= 200
	})
	if m, err := load.since(zero); m["b1"] != 0 || err != nil {
		t.Fatalf("pings at weight 0: %v (first error %v)", m, err)
	}
	waitUntil(t, 3*time.Second, "b1's health checks go on at weight 0", func() bool {
		return withToken.backend(b1Addr).Checks.OK > z.Checks.OK
	})
	if b := withToken.backend(b1Addr); b.SessionsTotal != z.SessionsTotal {
		t.Errorf("b1 got %d sessions at weight 0", b.SessionsTotal-z.SessionsTotal)
	}
	if !strings.Contains(metricsText(), `xdproxy_backend_weight{backend="10.10.2.2:8080",listener="web"} 0`+"\n") {
		t.Error("/metrics lacks xdproxy_backend_weight 0 for b1")
	}
	one := withToken.set(b1Addr, "--weight", "1")
	waitUntil(t, 5*time.Second, "pings on b1 at weight 1", func() bool {
		m, _ := load.since(one)
		return m["b1"] >= 20
	})

	// Errors the operator may make: one clear line, exit 1.
	if code, _, errs := withToken.run("backend", "set", "web", "10.10.2.9:8080", "--state", "drain"); code != 1 ||
		!strings.Contains(errs, "404 Not Found: unknown backend 10.10.2.9:8080 in listener web (its backends: 10.10.2.2:8080, 10.10.2.3:8080)") {
		t.Errorf("unknown backend: exit %d, stderr %q", code, errs)
	}
	if code, _, errs := withToken.run("backend", "set", "web", b1Addr, "--state", "off"); code != 1 ||
		!strings.Contains(errs, `400 Bad Request: state: unknown state "off"; expected one of: ready, drain, maint`) {
		t.Errorf("bad state: exit %d, stderr %q", code, errs)
	}

	load.halt()
	all, err := load.since(begin)
	if err != nil {
		t.Fatalf("pings: %v; first error: %v", all, err)
	}
	t.Logf("pings through the changes: %v", all)
	out = d.output()
	for _, w := range []string{
		`msg="backend setting changed" listener=web backend=10.10.2.2:8080 state=drain weight=1 was_state=ready was_weight=1 by="admin 10.10.1.1:`,
		`state=maint weight=1 was_state=drain`,
		`state=ready weight=1 was_state=maint`,
		`state=ready weight=0 was_state=ready was_weight=1`,
		`msg="admin request refused: unauthorized"`,
	} {
		if !strings.Contains(out, w) {
			t.Errorf("daemon log lacks %q", w)
		}
	}
}
