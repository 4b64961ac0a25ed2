package proxy

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/proxy/admin"
	"github.com/xdproxy/xdproxy/proxy/balance"
	"github.com/xdproxy/xdproxy/proxy/dataplane"
	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// These tests read the proxy as the admin server sees it (Proxy is its
// admin.Source): who owns each connection, TIME_WAIT attribution, kernel
// legs, filters and limits of the walk, shards that do not answer. They
// need no root: the proxy they read is put together by hand from two
// engines joined in memory, each one a "shard" whose control channel a
// test goroutine serves (as the shard loop would).

var (
	macA  = wire.MAC{2, 0, 0, 0, 0, 1}
	macB  = wire.MAC{2, 0, 0, 0, 0, 2}
	ipA   = netip.MustParseAddr("10.0.0.1")
	ipB   = netip.MustParseAddr("10.0.0.2")
	webAP = netip.MustParseAddrPort("10.0.0.1:80")
)

// memSink queues an engine's frames for the other engine.
type memSink struct {
	buf [2048]byte
	out [][]byte
}

func (s *memSink) NextFrame() []byte { return s.buf[:] }
func (s *memSink) Commit(n int)      { s.out = append(s.out, append([]byte(nil), s.buf[:n]...)) }

// tagApp accepts every connection and marks it as the client leg of a
// session of listener l.
type tagApp struct{ l *Listener }

func (a *tagApp) Acceptable(el *stack.Listener) {
	for c := el.Accept(); c != nil; c = el.Accept() {
		c.User = &session{sl: &shardListener{l: a.l}, client: c}
	}
}
func (a *tagApp) ConnEvent(*stack.Conn, stack.Events) {}

type enginePair struct {
	t          *testing.T
	a, b       *stack.Engine
	sinkA      *memSink
	sinkB      *memSink
	now        stack.Time
	listenerA  *stack.Listener
	web, other *Listener
}

func newEnginePair(t *testing.T) *enginePair {
	p := &enginePair{t: t, sinkA: &memSink{}, sinkB: &memSink{}, now: stack.Time(time.Second)}
	p.web = &Listener{Spec: ListenerSpec{Name: "web", Addr: webAP, Backends: []BackendSpec{{Addr: netip.MustParseAddrPort("10.0.2.2:8080"), Weight: 1}}}, listenerShared: &listenerShared{}}
	p.web.Backends = []*BackendState{newBackendState(p.web.Spec.Backends[0], balance.NewHealth(1, 1))}
	var err error
	p.a, err = stack.New(stack.Config{MAC: macA, Addresses: []netip.Addr{ipA}, Sink: p.sinkA, Handler: &tagApp{p.web}, Rand: dataplane.NewRand()})
	if err != nil {
		t.Fatal(err)
	}
	p.b, err = stack.New(stack.Config{MAC: macB, Addresses: []netip.Addr{ipB}, Sink: p.sinkB, Handler: &tagApp{}, Rand: dataplane.NewRand()})
	if err != nil {
		t.Fatal(err)
	}
	p.a.SetNeighbor(ipB, macB)
	p.b.SetNeighbor(ipA, macA)
	if p.listenerA, err = p.a.Listen(webAP); err != nil {
		t.Fatal(err)
	}
	return p
}

// run delivers frames both ways until the link is quiet.
func (p *enginePair) run() {
	for i := 0; i < 1000; i++ {
		p.now += stack.Time(time.Millisecond)
		fa, fb := p.sinkA.out, p.sinkB.out
		p.sinkA.out, p.sinkB.out = nil, nil
		if len(fa) == 0 && len(fb) == 0 {
			return
		}
		for _, f := range fa {
			p.b.HandleFrame(p.now, f)
		}
		for _, f := range fb {
			p.a.HandleFrame(p.now, f)
		}
	}
	p.t.Fatal("the engines never went quiet")
}

// dial opens a connection from B to A's listener and returns both ends.
func (p *enginePair) dial(user any) (atB, atA *stack.Conn) {
	var before []*stack.Conn
	p.a.Conns(func(c *stack.Conn) bool { before = append(before, c); return true })
	c, err := p.b.Dial(p.now, ipB, webAP)
	if err != nil {
		p.t.Fatal(err)
	}
	c.User = user
	p.run()
	if c.State() != stack.Established {
		p.t.Fatalf("dialed connection is %v, want ESTABLISHED", c.State())
	}
	p.a.Conns(func(x *stack.Conn) bool {
		if x.Key().Remote() == c.Key().Local() {
			atA = x
			return false
		}
		return true
	})
	if atA == nil {
		p.t.Fatal("accepted connection not found")
	}
	return c, atA
}

// labProxy builds a Proxy with listener "web" and one interface "test0"
// whose shard 0 (queue 4) is engine A and shard 1 (queue 5) is engine B:
//
//   - conn1: B (backend leg of web) → A (client leg), 5 bytes B→A, read by A
//   - conn2: the same, closed by A first: A holds a TIME_WAIT entry
//   - conn3: B (no session: leg "other") → A (client leg)
func labProxy(t *testing.T) (*Proxy, *enginePair) {
	p := newEnginePair(t)
	c1b, c1a := p.dial(nil)
	c1b.User = &session{sl: &shardListener{l: p.web}, client: c1a} // B's end is web's backend leg
	if n, err := c1b.Write([]byte("hello")); n != 5 || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	p.run()
	buf := make([]byte, 16)
	if n, _ := c1a.Read(buf); n != 5 {
		t.Fatalf("read %d bytes, want 5", n)
	}
	p.run()

	c2b, c2a := p.dial(nil)
	c2a.Close()
	p.run()
	c2b.Close()
	p.run()
	if n := p.a.Stats().Connections(stack.TimeWait); n != 1 {
		t.Fatalf("A has %d TIME_WAIT entries, want 1", n)
	}

	p.dial(nil)

	dp := dataplane.Detached([]string{"test0"}, [][]int{{4}, {5}}, []*stack.Engine{p.a, p.b})
	t.Cleanup(func() { dp.Stop() })
	dp.Shards()[0].Stats().RxFrames.Store(100)
	dp.Shards()[0].Stats().HandoffsOut.Store(7)
	dp.Shards()[1].Stats().HandoffsIn.Store(7)
	p.web.Stats.Accepted.Store(3)
	p.web.Stats.BytesIn.Store(5)
	p.web.Stats.ClientResets.Store(2)
	p.web.Backends[0].Sessions.Store(3)
	prx := newTestProxy([]*Listener{p.web}, dp, slog.Default())
	return prx, p
}

func get(t *testing.T, h http.Handler, url string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", url, nil))
	res := rec.Result()
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

func TestAdminHealthz(t *testing.T) {
	prx, _ := labProxy(t)
	a := admin.New(prx, "127.0.0.1:0", slog.Default())
	check := func(code int, body string) {
		t.Helper()
		res, got := get(t, a.Handler(), "/healthz")
		if res.StatusCode != code || got != body {
			t.Fatalf("/healthz = %d %q, want %d %q", res.StatusCode, got, code, body)
		}
	}
	check(503, "starting")
	a.SetReady(true)
	check(200, "ok")
	prx.draining.Store(true)
	check(503, "draining")

	// No proxy yet: starting, whatever SetReady said.
	b := admin.New(nil, "127.0.0.1:0", nil)
	b.SetReady(true)
	res, got := get(t, b.Handler(), "/healthz")
	if res.StatusCode != 503 || got != "starting" {
		t.Fatalf("/healthz without a proxy = %d %q", res.StatusCode, got)
	}
	prx.draining.Store(false)
	b.SetSource(prx)
	if res, got := get(t, b.Handler(), "/healthz"); res.StatusCode != 200 || got != "ok" {
		t.Fatalf("/healthz after SetSource = %d %q", res.StatusCode, got)
	}
	if _, body := get(t, b.Handler(), "/metrics"); !strings.Contains(body, `xdproxy_accepted_total{listener="web"}`) {
		t.Fatal("/metrics after SetSource lacks the listener metrics")
	}
}

// scrape is /metrics of an admin server, ready, reading prx.
func scrape(t *testing.T, prx *Proxy) string {
	t.Helper()
	a := admin.New(prx, "127.0.0.1:0", slog.Default())
	a.SetReady(true)
	res, body := get(t, a.Handler(), "/metrics")
	if res.StatusCode != 200 {
		t.Fatalf("/metrics: %d\n%s", res.StatusCode, body)
	}
	return body
}

// The lab proxy's /metrics passes the Prometheus linter (the metric
// families the admin server describes are linted in package admin; this
// lints what a real proxy's view makes of them).
func TestMetricsLint(t *testing.T) {
	prx, _ := labProxy(t)
	body := scrape(t, prx)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var ours []*dto.MetricFamily
	for name, mf := range families {
		if !strings.HasPrefix(name, "xdproxy_") {
			continue
		}
		ours = append(ours, mf)
		if mf.GetType().String() == "COUNTER" && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s does not end in _total", name)
		}
		if mf.GetType().String() != "COUNTER" && strings.HasSuffix(name, "_total") {
			t.Errorf("%s %s ends in _total", mf.GetType(), name)
		}
	}
	if len(ours) < 30 {
		t.Fatalf("only %d xdproxy_ families:\n%s", len(ours), body)
	}
	problems, err := promlint.NewWithMetricFamilies(ours).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestMetricsValues(t *testing.T) {
	prx, _ := labProxy(t)
	body := scrape(t, prx)
	want := []string{
		`xdproxy_ready 1`,
		`xdproxy_draining 0`,
		`xdproxy_accepted_total{listener="web"} 3`,
		`xdproxy_refused_total{listener="web"} 0`,
		`xdproxy_no_backend_total{listener="web"} 0`,
		`xdproxy_connect_failures_total{listener="web"} 0`,
		`xdproxy_connect_timeouts_total{listener="web"} 0`,
		`xdproxy_idle_timeouts_total{listener="web"} 0`,
		`xdproxy_resets_total{listener="web",side="client"} 2`,
		`xdproxy_resets_total{listener="web",side="backend"} 0`,
		`xdproxy_sessions_completed_total{listener="web"} 0`,
		`xdproxy_bytes_total{direction="in",listener="web"} 5`,
		`xdproxy_bytes_total{direction="out",listener="web"} 0`,
		`xdproxy_active_sessions{listener="web"} 0`,
		`xdproxy_backend_up{backend="10.0.2.2:8080",listener="web"} 1`,
		`xdproxy_backend_active_sessions{backend="10.0.2.2:8080",listener="web"} 0`,
		`xdproxy_backend_sessions_total{backend="10.0.2.2:8080",listener="web"} 3`,
		`xdproxy_backend_failures_total{backend="10.0.2.2:8080",listener="web"} 0`,
		// A: conn1 and conn3; B: conn1 (web's backend leg) and conn3 (no session).
		`xdproxy_connections{leg="client",listener="web",state="ESTABLISHED"} 2`,
		`xdproxy_connections{leg="backend",listener="web",state="ESTABLISHED"} 1`,
		`xdproxy_connections{leg="other",listener="",state="ESTABLISHED"} 1`,
		`xdproxy_connections{leg="client",listener="web",state="SYN_SENT"} 0`,
		`xdproxy_tcp_connections{state="ESTABLISHED"} 4`,
		`xdproxy_tcp_connections{state="TIME_WAIT"} 1`,
		`xdproxy_tcp_events_total{counter="active_opens"} 3`,
		`xdproxy_tcp_events_total{counter="passive_opens"} 3`,
		`xdproxy_tcp_events_total{counter="time_wait_entered"} 1`,
		`xdproxy_tcp_events_total{counter="rx_no_socket"} 0`,
		`xdproxy_tcp_events_total{counter="syn_cookies_sent"} 0`,
		`xdproxy_syn_cookies_total{kind="sent"} 0`,
		`xdproxy_syn_cookies_total{kind="accepted"} 0`,
		`xdproxy_syn_cookies_total{kind="rejected"} 0`,
		`xdproxy_shard_info{interface="test0",queue="4",shard="0"} 1`,
		`xdproxy_shard_info{interface="test0",queue="5",shard="1"} 1`,
		`xdproxy_shard_up{shard="0"} 1`,
		`xdproxy_shard_rx_frames_total{shard="0"} 100`,
		`xdproxy_shard_handoffs_total{direction="out",shard="0"} 7`,
		`xdproxy_shard_handoffs_total{direction="in",shard="1"} 7`,
		`xdproxy_shard_handoff_drops_total{shard="0"} 0`,
		`xdproxy_shard_sleeps_total{shard="1"} 0`,
		`go_goroutines `,
		`process_`,
	}
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("/metrics lacks %s", w)
		}
	}
	// Every engine counter is there, by name; none is "unused".
	for i := 0; i < stack.NumCounters; i++ {
		name := stack.Counter(i).String()
		if name == "unused" {
			continue
		}
		if !strings.Contains(body, `xdproxy_tcp_events_total{counter="`+name+`"}`) {
			t.Errorf("/metrics lacks engine counter %s", name)
		}
	}
	if strings.Contains(body, `counter="unused"`) {
		t.Error(`/metrics has counter="unused"`)
	}
	if !regexp.MustCompile(`xdproxy_tcp_events_total\{counter="rx_drop_[a-z0-9_]+"\}`).MatchString(body) {
		t.Error("/metrics has no parse drop counters")
	}
	if t.Failed() {
		t.Log(body)
	}
}

func TestMetricsShardTimeout(t *testing.T) {
	prx, _ := labProxy(t)
	// A third shard whose loop never runs: the scrape must not hang.
	prx.dp = dataplane.Detached([]string{"test0"}, [][]int{{4}, {5}, {6}}, append(prx.dp.Shards()[0].Dataplane().Engines(), nil))
	t.Cleanup(func() { prx.dp.Stop() })
	a := admin.New(prx, "127.0.0.1:0", slog.Default())
	a.ShardTimeout = 100 * time.Millisecond
	start := time.Now()
	res, body := get(t, a.Handler(), "/metrics")
	if res.StatusCode != 200 {
		t.Fatalf("/metrics: %d", res.StatusCode)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("scrape took %v", d)
	}
	for _, w := range []string{
		`xdproxy_shard_up{shard="2"} 0`,
		`xdproxy_shard_up{shard="0"} 1`,
		`xdproxy_connections{leg="client",listener="web",state="ESTABLISHED"} 2`,
	} {
		if !strings.Contains(body, w) {
			t.Errorf("/metrics lacks %s", w)
		}
	}
	res, _ = get(t, a.Handler(), "/connections")
	if res.Header.Get("X-Xdproxy-Partial") != "true" {
		t.Error("/connections with a stuck shard is not marked partial")
	}
}

var (
	estLine = regexp.MustCompile(`^(\d+) ESTABLISHED (\S+) (\S+) rtt=(\S+) cwnd=(\d+) in=(\d+) out=(\d+)( listener=\S+)?( leg=\S+)? if=test0$`)
	twLine  = regexp.MustCompile(`^0 TIME_WAIT 10\.0\.0\.1:80 10\.0\.0\.2:\d+ listener=web leg=client if=test0$`)
)

func TestAdminConnectionsText(t *testing.T) {
	prx, _ := labProxy(t)
	a := admin.New(prx, "127.0.0.1:0", slog.Default())
	res, body := get(t, a.Handler(), "/connections")
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/connections: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("got %d lines, want 4 connections and 1 TIME_WAIT:\n%s", len(lines), body)
	}
	est := 0
	for i, l := range lines {
		switch {
		case twLine.MatchString(l):
			if i != 2 {
				t.Errorf("TIME_WAIT entry is line %d, want it after shard 0's connections:\n%s", i, body)
			}
		case estLine.MatchString(l):
			est++
			m := estLine.FindStringSubmatch(l)
			if _, err := time.ParseDuration(m[4]); err != nil {
				t.Errorf("rtt %q: %v", m[4], err)
			}
		default:
			t.Errorf("unexpected line %q", l)
		}
	}
	if est != 4 {
		t.Errorf("%d ESTABLISHED lines, want 4:\n%s", est, body)
	}
	// The 5 bytes B wrote on conn1: out=5 on B's end (shard 1, backend leg), in=5 on A's.
	if !regexp.MustCompile(`(?m)^1 ESTABLISHED 10\.0\.0\.2:\d+ 10\.0\.0\.1:80 rtt=\S+ cwnd=\d+ in=0 out=5 listener=web leg=backend if=test0$`).MatchString(body) {
		t.Errorf("no backend-leg line with out=5:\n%s", body)
	}
	if !regexp.MustCompile(`(?m)^0 ESTABLISHED 10\.0\.0\.1:80 10\.0\.0\.2:\d+ rtt=\S+ cwnd=\d+ in=5 out=0 listener=web leg=client if=test0$`).MatchString(body) {
		t.Errorf("no client-leg line with in=5:\n%s", body)
	}

	// Filters.
	_, body = get(t, a.Handler(), "/connections?state=time-wait")
	if strings.TrimSpace(body) == "" || strings.Count(body, "\n") != 1 || !twLine.MatchString(strings.TrimSpace(body)) {
		t.Errorf("?state=time-wait:\n%s", body)
	}
	_, body = get(t, a.Handler(), "/connections?time_wait=false")
	if strings.Contains(body, "TIME_WAIT") || strings.Count(body, "\n") != 4 {
		t.Errorf("?time_wait=false:\n%s", body)
	}
	res, body = get(t, a.Handler(), "/connections?limit=2")
	if strings.Count(body, "\n") != 2 || res.Header.Get("X-Xdproxy-Truncated") != "true" {
		t.Errorf("?limit=2 (truncated=%q):\n%s", res.Header.Get("X-Xdproxy-Truncated"), body)
	}
	for _, bad := range []string{"?format=xml", "?state=NOPE", "?limit=-1", "?time_wait=maybe"} {
		if res, _ := get(t, a.Handler(), "/connections"+bad); res.StatusCode != 400 {
			t.Errorf("/connections%s: %d, want 400", bad, res.StatusCode)
		}
	}
}

func TestAdminConnectionsJSON(t *testing.T) {
	prx, _ := labProxy(t)
	a := admin.New(prx, "127.0.0.1:0", slog.Default())
	res, body := get(t, a.Handler(), "/connections?format=json")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("/connections?format=json: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatalf("%v:\n%s", err, body)
	}
	if len(list) != 5 {
		t.Fatalf("%d entries, want 5:\n%s", len(list), body)
	}
	legs := map[string]int{}
	for _, e := range list {
		for _, k := range []string{"interface", "shard", "queue", "state", "local", "remote"} {
			if _, ok := e[k]; !ok {
				t.Errorf("entry lacks %q: %v", k, e)
			}
		}
		if _, err := netip.ParseAddrPort(e["local"].(string)); err != nil {
			t.Errorf("local: %v", err)
		}
		leg, _ := e["leg"].(string)
		legs[leg]++
		switch e["state"] {
		case "ESTABLISHED":
			for _, k := range []string{"rtt", "rtt_us", "cwnd", "in", "out"} {
				if _, ok := e[k]; !ok {
					t.Errorf("ESTABLISHED entry lacks %q: %v", k, e)
				}
			}
			if _, err := time.ParseDuration(e["rtt"].(string)); err != nil {
				t.Errorf("rtt: %v", err)
			}
		case "TIME_WAIT":
			for _, k := range []string{"rtt", "rtt_us", "cwnd", "in", "out"} {
				if _, ok := e[k]; ok {
					t.Errorf("TIME_WAIT entry has %q: %v", k, e)
				}
			}
			if e["listener"] != "web" || e["leg"] != "client" || e["shard"] != float64(0) || e["queue"] != float64(4) {
				t.Errorf("TIME_WAIT entry: %v", e)
			}
		default:
			t.Errorf("state %v", e["state"])
		}
	}
	// A: 2 client legs + TIME_WAIT (client); B: 1 backend leg, 1 unknown.
	if legs["client"] != 3 || legs["backend"] != 1 || legs[""] != 1 {
		t.Errorf("legs %v:\n%s", legs, body)
	}
	// Empty listing: an empty array, not null.
	_, body = get(t, a.Handler(), "/connections?format=json&state=SYN_SENT")
	if strings.TrimSpace(body) != "[]" {
		t.Errorf("empty listing = %q, want []", body)
	}
}

// A backend leg of a dial: kernel listener is an OS socket: it is listed
// (from TCP_INFO) and counted as the listener's backend leg.
func TestAdminKernelLegs(t *testing.T) {
	prx, p := labProxy(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	end := make(chan struct{})
	defer close(end)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("hey"))
		<-end
		c.Close()
	}()
	backend := netip.MustParseAddrPort(ln.Addr().String())
	app := &shardApp{kernelLegs: map[int]*kernelLeg{}, epfd: -1}
	k, err := app.dialKernel(backend, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(k.fd); unix.Close(app.epfd) })
	k.sess = &session{sl: &shardListener{l: p.web}, backend: &BackendState{Spec: BackendSpec{Addr: backend}, backendShared: &backendShared{}}}
	// Wait until the kernel has the 3 bytes.
	for i := 0; ; i++ {
		ti, err := unix.GetsockoptTCPInfo(k.fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil && ti.State == 1 && ti.Bytes_received == 3 {
			break
		}
		if i > 500 {
			t.Fatalf("kernel leg not established with 3 bytes in: %+v %v", ti, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	sh := prx.dp.Shards()[1]
	sh.Do(func(sh *dataplane.Shard) { sh.SetDriver(app) })

	a := admin.New(prx, "127.0.0.1:0", slog.Default())
	_, body := get(t, a.Handler(), "/connections?listener=web&state=ESTABLISHED")
	re := regexp.MustCompile(`(?m)^1 ESTABLISHED 127\.0\.0\.1:\d+ ` + regexp.QuoteMeta(backend.String()) + ` rtt=\S+ cwnd=[1-9]\d* in=3 out=0 listener=web leg=backend kernel$`)
	if !re.MatchString(body) {
		t.Errorf("no kernel leg line:\n%s", body)
	}
	if strings.Contains(body, "leg=other") || strings.Count(body, "\n") != 4 {
		t.Errorf("?listener=web&state=ESTABLISHED: want web's 3 engine legs and the kernel leg:\n%s", body)
	}
	_, body = get(t, a.Handler(), "/connections?format=json&state=ESTABLISHED")
	if !strings.Contains(body, `"kernel": true`) {
		t.Errorf("JSON lacks the kernel leg:\n%s", body)
	}
	_, body = get(t, a.Handler(), "/metrics")
	if !strings.Contains(body, `xdproxy_connections{leg="backend",listener="web",state="ESTABLISHED"} 2`) {
		t.Errorf("kernel leg not counted:\n%s", body)
	}
}
