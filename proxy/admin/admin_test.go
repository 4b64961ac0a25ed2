package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/xdproxy/xdproxy/bpf"
	"github.com/xdproxy/xdproxy/proxy/balance"
	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/xsk"
)

// These tests read a fakeSource with canned views: they pin what the admin
// server makes of a view (paths, formats, metric names, labels and help).
// The tests of package proxy read a real proxy's view through the same
// server.

type fakeSource struct {
	mu       sync.Mutex
	draining bool
	ls       []ListenerView
	pv       PlaneView
	queries  []ConnQuery     // what View was asked
	changes  []BackendChange // what SetBackend was asked
}

func (f *fakeSource) Draining() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.draining
}

func (f *fakeSource) setDraining(d bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.draining = d
}

func (f *fakeSource) Listeners() []ListenerView {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ls
}

// SetBackend changes the canned view as a proxy would its backend.
func (f *fakeSource) SetBackend(listener string, addr netip.AddrPort, c BackendChange) (BackendView, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changes = append(f.changes, c)
	for _, l := range f.ls {
		if l.Name != listener {
			continue
		}
		for i := range l.Backends {
			b := &l.Backends[i]
			if b.Addr != addr {
				continue
			}
			if c.State == nil && c.Weight == nil {
				return BackendView{}, fmt.Errorf("%w: nothing to change", ErrInvalidChange)
			}
			if c.State != nil {
				b.State = *c.State
			}
			if c.Weight != nil {
				b.Weight = *c.Weight
			}
			return *b, nil
		}
		return BackendView{}, fmt.Errorf("%w %s in listener %s", ErrUnknownBackend, addr, listener)
	}
	return BackendView{}, fmt.Errorf("%w %q", ErrUnknownListener, listener)
}

func (f *fakeSource) View(_ context.Context, q ConnQuery) PlaneView {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	return f.pv
}

func (f *fakeSource) lastQuery() ConnQuery {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries[len(f.queries)-1]
}

var (
	backendA = netip.MustParseAddrPort("10.0.2.2:8080")
	backendB = netip.MustParseAddrPort("10.0.2.3:8080")
)

// fullSource has something for every metric family: a listener with a
// backend listed twice, two interfaces (one whose XDP counters failed),
// sockets that answered and one that did not, connections of every leg.
func fullSource() *fakeSource {
	sv0 := ShardView{ID: 0, Answered: true, Loop: LoopStats{RxFrames: 100, HandoffsOut: 7, Sleeps: 3}}
	sv0.Counters[stack.SYNCookiesSent] = 5
	sv0.States[stack.Established] = 3
	sv0.States[stack.TimeWait] = 1
	sv0.Conns.Counts = map[ConnGroup]int{
		{Listener: "web", Leg: LegClient, State: stack.Established}:  2,
		{Listener: "web", Leg: LegHealth, State: stack.SynSent}:      1,
		{Listener: "", Leg: LegOther, State: stack.Established}:      1,
		{Listener: "web", Leg: LegBackend, State: stack.Established}: 1,
	}
	sv1 := ShardView{ID: 1, Loop: LoopStats{HandoffsIn: 7}} // did not answer
	return &fakeSource{
		ls: []ListenerView{{
			Name: "web", Accepted: 3, BytesIn: 5, BytesOut: 9, ClientResets: 2, BackendResets: 1, Active: 2,
			Balance: "round_robin",
			Backends: []BackendView{
				{Addr: backendA, Up: true, Active: 2, Sessions: 3, Weight: 1, ConfiguredWeight: 1, Checked: true, ChecksOK: 7},
				{Addr: backendB, Up: false, Failures: 4, State: balance.Drain, Weight: 2, ConfiguredWeight: 1, Checked: true, ChecksOK: 1, ChecksFailed: 3},
				{Addr: backendA, Up: true, Active: 2, Sessions: 3, Weight: 1, ConfiguredWeight: 1, Checked: true, ChecksOK: 7}, // listed twice in the config
			},
		}},
		pv: PlaneView{
			Ifaces: []IfaceView{{
				Name: "eth0", XDP: []bpf.Counter{{Name: "rx_packets", Value: 100}},
				RxFrames: 100, ChecksumDrops: 1, PartialChecksums: 2,
				Queues: []QueueView{
					{Shard: 0, Queue: 0, Answered: true, XSK: xsk.Stats{RxFrames: 100}},
					{Shard: 1, Queue: 1},
				},
			}, {Name: "eth1", XDPErr: errors.New("closed")}},
			Shards: []ShardView{sv0, sv1},
		},
	}
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
	src := fullSource()
	a := New(src, "127.0.0.1:0", slog.Default())
	check := func(a *Admin, code int, body string) {
		t.Helper()
		res, got := get(t, a.Handler(), "/healthz")
		if res.StatusCode != code || got != body {
			t.Fatalf("/healthz = %d %q, want %d %q", res.StatusCode, got, code, body)
		}
		if res.Header.Get("Cache-Control") != "no-store" {
			t.Fatal("/healthz may be cached")
		}
	}
	check(a, 503, "starting")
	a.SetReady(true)
	check(a, 200, "ok")
	src.setDraining(true)
	check(a, 503, "draining")

	// No source yet: starting, whatever SetReady said.
	b := New(nil, "127.0.0.1:0", nil)
	b.SetReady(true)
	check(b, 503, "starting")
	src.setDraining(false)
	b.SetSource(src)
	check(b, 200, "ok")
	if _, body := get(t, b.Handler(), "/metrics"); !strings.Contains(body, `xdproxy_accepted_total{listener="web"} 3`) {
		t.Fatal("/metrics after SetSource lacks the listener metrics")
	}
	b.SetSource(nil)
	check(b, 503, "starting")
}

func TestAdminServeAndShutdown(t *testing.T) {
	a := New(fullSource(), "127.0.0.1:0", slog.Default())
	a.SetReady(true)
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err == nil {
		t.Error("a second Start succeeded")
	}
	base := "http://" + a.Addr()
	for _, path := range []string{"/healthz", "/metrics", "/connections", "/connections?format=json", "/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/"} {
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("GET %s: %s", path, res.Status)
		}
	}
	if res, err := http.Get(base + "/nope"); err == nil {
		res.Body.Close()
		if res.StatusCode != 404 {
			t.Errorf("GET /nope: %s, want 404", res.Status)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("server still answering after Shutdown")
	}
}

func TestAdminIndex(t *testing.T) {
	_, body := get(t, New(nil, "", nil).Handler(), "/")
	want := "xdproxy admin\n\n/healthz\n/metrics\n/connections  (?format=json, ?state=ESTABLISHED,TIME_WAIT, ?listener=NAME, ?limit=N, ?time_wait=0)\n/backends  (GET; POST /backends/LISTENER/BACKEND {\"state\": \"ready|drain|maint\", \"weight\": N})\n/trace  (?listener=NAME, ?client=A[/len], ?port=P, ?count=N, ?duration=D, ?time_wait=1, ?format=text|json)\n/capture  (pcapng; ?host=A, ?port=P, ?listener=NAME, ?count=N, ?duration=D)\n/debug/pprof/\n"
	if body != want {
		t.Fatalf("/ = %q, want %q", body, want)
	}
}

func TestAdminWithoutSource(t *testing.T) {
	a := New(nil, "127.0.0.1:0", nil)
	res, body := get(t, a.Handler(), "/metrics")
	if res.StatusCode != 200 || !strings.Contains(body, "xdproxy_ready 0") || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics without a source: %d\n%s", res.StatusCode, body)
	}
	if strings.Contains(body, "xdproxy_draining") {
		t.Fatalf("/metrics without a source has xdproxy_draining:\n%s", body)
	}
	if res, body := get(t, a.Handler(), "/connections"); res.StatusCode != 200 || body != "" {
		t.Fatalf("/connections without a source: %d %q", res.StatusCode, body)
	}
}

// lint runs the Prometheus linter over c's metrics and returns a pedantic
// registry holding c: its Gather fails unless every metric collected is
// described, with consistent labels and no duplicates.
func lint(t *testing.T, c prometheus.Collector) *prometheus.Registry {
	t.Helper()
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	return reg
}

// descName is a Desc's fully qualified name.
var descName = regexp.MustCompile(`fqName: "([^"]+)"`)

func TestMetricsLint(t *testing.T) {
	src := fullSource()
	c := &collector{source: func() Source { return src }, ready: func() bool { return true }, unauthorized: func() uint64 { return 2 },
		reloader: func() Reloader { return fakeReloader{} }}
	reg := lint(t, c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	gathered := map[string]bool{}
	for _, mf := range mfs {
		name := mf.GetName()
		gathered[name] = true
		if !strings.HasPrefix(name, "xdproxy_") {
			t.Errorf("metric %s lacks the xdproxy_ prefix", name)
		}
		if mf.GetType().String() == "COUNTER" && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s does not end in _total", name)
		}
		if mf.GetType().String() != "COUNTER" && strings.HasSuffix(name, "_total") {
			t.Errorf("%s %s ends in _total", mf.GetType(), name)
		}
	}
	// The fake has something for every family described, so all were linted.
	ch := make(chan *prometheus.Desc, 100)
	c.Describe(ch)
	close(ch)
	for d := range ch {
		m := descName.FindStringSubmatch(d.String())
		if m == nil || !gathered[m[1]] {
			t.Errorf("described but not collected from the full source: %v", d)
		}
	}
}

func TestMetricsListeners(t *testing.T) {
	src := fullSource()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(&collector{source: func() Source { return src }, ready: func() bool { return false }})
	want := `
# HELP xdproxy_ready 1 once every shard of every listener is serving (the admin /healthz answers 200 when ready and not draining).
# TYPE xdproxy_ready gauge
xdproxy_ready 0
# HELP xdproxy_draining 1 while the proxy drains: new clients are reset, open sessions finish.
# TYPE xdproxy_draining gauge
xdproxy_draining 0
# HELP xdproxy_accepted_total Client connections taken into a session.
# TYPE xdproxy_accepted_total counter
xdproxy_accepted_total{listener="web"} 3
# HELP xdproxy_resets_total Sessions ended by a reset or timeout of one leg (side), passed on to the other leg as a reset.
# TYPE xdproxy_resets_total counter
xdproxy_resets_total{listener="web",side="backend"} 1
xdproxy_resets_total{listener="web",side="client"} 2
# HELP xdproxy_bytes_total Bytes spliced: in is client to backend, out is backend to client.
# TYPE xdproxy_bytes_total counter
xdproxy_bytes_total{direction="in",listener="web"} 5
xdproxy_bytes_total{direction="out",listener="web"} 9
# HELP xdproxy_active_sessions Open sessions.
# TYPE xdproxy_active_sessions gauge
xdproxy_active_sessions{listener="web"} 2
# HELP xdproxy_backend_up 1 when the backend may receive new sessions (health checks), else 0.
# TYPE xdproxy_backend_up gauge
xdproxy_backend_up{backend="10.0.2.2:8080",listener="web"} 1
xdproxy_backend_up{backend="10.0.2.3:8080",listener="web"} 0
# HELP xdproxy_backend_sessions_total Sessions sent to the backend.
# TYPE xdproxy_backend_sessions_total counter
xdproxy_backend_sessions_total{backend="10.0.2.2:8080",listener="web"} 3
xdproxy_backend_sessions_total{backend="10.0.2.3:8080",listener="web"} 0
# HELP xdproxy_backend_failures_total Connect failures and connect timeouts of the backend.
# TYPE xdproxy_backend_failures_total counter
xdproxy_backend_failures_total{backend="10.0.2.2:8080",listener="web"} 0
xdproxy_backend_failures_total{backend="10.0.2.3:8080",listener="web"} 4
# HELP xdproxy_backend_state 1 for the backend's run-time state (ready; drain: no new sessions; maint: no new sessions nor health checks), 0 for the others.
# TYPE xdproxy_backend_state gauge
xdproxy_backend_state{backend="10.0.2.2:8080",listener="web",state="drain"} 0
xdproxy_backend_state{backend="10.0.2.2:8080",listener="web",state="maint"} 0
xdproxy_backend_state{backend="10.0.2.2:8080",listener="web",state="ready"} 1
xdproxy_backend_state{backend="10.0.2.3:8080",listener="web",state="drain"} 1
xdproxy_backend_state{backend="10.0.2.3:8080",listener="web",state="maint"} 0
xdproxy_backend_state{backend="10.0.2.3:8080",listener="web",state="ready"} 0
# HELP xdproxy_backend_weight The backend's current weight (as configured unless set at run time; 0: no new sessions).
# TYPE xdproxy_backend_weight gauge
xdproxy_backend_weight{backend="10.0.2.2:8080",listener="web"} 1
xdproxy_backend_weight{backend="10.0.2.3:8080",listener="web"} 2
# HELP xdproxy_backend_health_checks_total Results of the backend's active health checks (result ok or failed), for listeners with health checks.
# TYPE xdproxy_backend_health_checks_total counter
xdproxy_backend_health_checks_total{backend="10.0.2.2:8080",listener="web",result="failed"} 0
xdproxy_backend_health_checks_total{backend="10.0.2.2:8080",listener="web",result="ok"} 7
xdproxy_backend_health_checks_total{backend="10.0.2.3:8080",listener="web",result="failed"} 3
xdproxy_backend_health_checks_total{backend="10.0.2.3:8080",listener="web",result="ok"} 1
# HELP xdproxy_shard_up 1 when the shard answered the scrape in time (its connection and AF_XDP metrics are then current), else 0.
# TYPE xdproxy_shard_up gauge
xdproxy_shard_up{shard="0"} 1
xdproxy_shard_up{shard="1"} 0
# HELP xdproxy_shard_handoffs_total Frames handed between shards (out: to the shard owning the flow; in: from another shard).
# TYPE xdproxy_shard_handoffs_total counter
xdproxy_shard_handoffs_total{direction="in",shard="0"} 0
xdproxy_shard_handoffs_total{direction="in",shard="1"} 7
xdproxy_shard_handoffs_total{direction="out",shard="0"} 7
xdproxy_shard_handoffs_total{direction="out",shard="1"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"xdproxy_ready", "xdproxy_draining", "xdproxy_accepted_total", "xdproxy_resets_total", "xdproxy_bytes_total",
		"xdproxy_active_sessions", "xdproxy_backend_up", "xdproxy_backend_sessions_total", "xdproxy_backend_failures_total",
		"xdproxy_backend_state", "xdproxy_backend_weight", "xdproxy_backend_health_checks_total",
		"xdproxy_shard_up", "xdproxy_shard_handoffs_total"); err != nil {
		t.Error(err)
	}
	if q := src.lastQuery(); !q.Counts || q.List {
		t.Errorf("a scrape asked for %+v, want counts only", q)
	}
	// Connections: the counted groups, and every listener's client and
	// backend legs in the live states at zero; the second shard did not
	// answer, so it adds none.
	n, err := testutil.GatherAndCount(reg, "xdproxy_connections")
	if err != nil || n != 2*8+2 { // 2 legs × 8 states, + health_check SYN_SENT and other ESTABLISHED
		t.Errorf("xdproxy_connections: %d series (%v), want %d", n, err, 2*8+2)
	}
	body, err := testutil.CollectAndFormat(&collector{source: func() Source { return src }}, expfmt.TypeTextPlain, "xdproxy_connections", "xdproxy_tcp_connections")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{
		`xdproxy_connections{leg="client",listener="web",state="ESTABLISHED"} 2`,
		`xdproxy_connections{leg="backend",listener="web",state="ESTABLISHED"} 1`,
		`xdproxy_connections{leg="health_check",listener="web",state="SYN_SENT"} 1`,
		`xdproxy_connections{leg="other",listener="",state="ESTABLISHED"} 1`,
		`xdproxy_connections{leg="backend",listener="web",state="LAST_ACK"} 0`,
		`xdproxy_tcp_connections{state="ESTABLISHED"} 3`,
		`xdproxy_tcp_connections{state="TIME_WAIT"} 1`,
	} {
		if !strings.Contains(string(body), w) {
			t.Errorf("lacks %s", w)
		}
	}
	for _, no := range []string{`state="CLOSED"`, `state="LISTEN"`} {
		if strings.Contains(string(body), "xdproxy_tcp_connections{"+no) {
			t.Errorf("xdproxy_tcp_connections has %s", no)
		}
	}
}

func TestMetricsXDPAndXSK(t *testing.T) {
	sv := ShardView{ID: 0, Answered: true}
	sv.Counters[stack.SYNCookiesSent] = 5
	sv.Counters[stack.SYNCookiesAccepted] = 4
	sv.Counters[stack.SYNCookiesRejected] = 1
	sv.Counters[stack.ParseDropCounter(1)] = 6
	good := QueueView{Shard: 0, Queue: 2, Answered: true,
		XSK: xsk.Stats{RxDropped: 1, RxRingFull: 2, RxFrames: 10, TxFrames: 11, Kicks: 4, BadCommits: 9}}
	bad := QueueView{Shard: 1, Queue: 3, Answered: true, XSKErr: xsk.ErrClosed}
	src := &fakeSource{pv: PlaneView{Ifaces: []IfaceView{{
		Name:     "eth0",
		XDP:      []bpf.Counter{{Name: "rx_packets", Value: 100}, {Name: "redirect_listener", Value: 60}, {Name: "pass_not_ours", Value: 40}},
		RxFrames: 100, ChecksumDrops: 3, PartialChecksums: 7,
		Queues: []QueueView{good, bad},
	}, {
		Name: "eth1", XDPErr: errors.New("closed"),
	}}, Shards: []ShardView{sv, {ID: 1, Answered: true}}}}
	reg := lint(t, &collector{source: func() Source { return src }})
	want := `
# HELP xdproxy_xdp_packets_total Packets the XDP program saw (rx_packets) and what it did with them (reason).
# TYPE xdproxy_xdp_packets_total counter
xdproxy_xdp_packets_total{interface="eth0",reason="pass_not_ours"} 40
xdproxy_xdp_packets_total{interface="eth0",reason="redirect_listener"} 60
xdproxy_xdp_packets_total{interface="eth0",reason="rx_packets"} 100
# HELP xdproxy_syn_cookies_total SYN cookies sent, accepted (a valid cookie completed a handshake) and rejected, summed over shards.
# TYPE xdproxy_syn_cookies_total counter
xdproxy_syn_cookies_total{kind="accepted"} 4
xdproxy_syn_cookies_total{kind="rejected"} 1
xdproxy_syn_cookies_total{kind="sent"} 5
# HELP xdproxy_xsk_rx_dropped_total Frames the kernel dropped for reasons other than a full RX ring or an empty fill ring.
# TYPE xdproxy_xsk_rx_dropped_total counter
xdproxy_xsk_rx_dropped_total{interface="eth0",queue="2"} 1
# HELP xdproxy_xsk_rx_ring_full_total Frames the kernel dropped because the RX ring was full.
# TYPE xdproxy_xsk_rx_ring_full_total counter
xdproxy_xsk_rx_ring_full_total{interface="eth0",queue="2"} 2
# HELP xdproxy_xsk_bad_commits_total Frame commits with a length outside the frame.
# TYPE xdproxy_xsk_bad_commits_total counter
xdproxy_xsk_bad_commits_total{interface="eth0",queue="2"} 9
# HELP xdproxy_interface_partial_checksums_total TCP segments accepted on a virtual interface (veth) with a partial checksum: their sender's kernel left the checksum to an offload that never ran.
# TYPE xdproxy_interface_partial_checksums_total counter
xdproxy_interface_partial_checksums_total{interface="eth0"} 7
xdproxy_interface_partial_checksums_total{interface="eth1"} 0
# HELP xdproxy_interface_checksum_drops_total TCP segments from the interface dropped for a bad checksum.
# TYPE xdproxy_interface_checksum_drops_total counter
xdproxy_interface_checksum_drops_total{interface="eth0"} 3
xdproxy_interface_checksum_drops_total{interface="eth1"} 0
# HELP xdproxy_shard_info Maps a shard to the queue of each interface it serves (always 1).
# TYPE xdproxy_shard_info gauge
xdproxy_shard_info{interface="eth0",queue="2",shard="0"} 1
xdproxy_shard_info{interface="eth0",queue="3",shard="1"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"xdproxy_xdp_packets_total", "xdproxy_syn_cookies_total", "xdproxy_xsk_rx_dropped_total",
		"xdproxy_xsk_rx_ring_full_total", "xdproxy_xsk_bad_commits_total",
		"xdproxy_interface_partial_checksums_total", "xdproxy_interface_checksum_drops_total", "xdproxy_shard_info"); err != nil {
		t.Error(err)
	}
	n, err := testutil.GatherAndCount(reg, "xdproxy_xsk_tx_kicks_total")
	if err != nil || n != 1 {
		t.Errorf("xdproxy_xsk_tx_kicks_total: %d series (%v), want 1 (none for the socket whose stats failed)", n, err)
	}
	drop := "xdproxy_tcp_events_total"
	mfs, _ := reg.Gather()
	found := false
	for _, mf := range mfs {
		if mf.GetName() != drop {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == stack.ParseDropCounter(1).String() && m.GetCounter().GetValue() == 6 {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("%s{counter=%q} 6 missing", drop, stack.ParseDropCounter(1).String())
	}
}

// connSource lists, out of order, connections of two shards on two
// interfaces: a TIME_WAIT entry, a leg of no listener. (Kernel sockets,
// which have no interface, are left to TestConnectionsKernelLeg: the
// listing does not order them against the first interface's entries.)
func connSource() *fakeSource {
	ap := netip.MustParseAddrPort
	est := func(ifn string, shard, queue int, local, remote, listener, leg string) ConnEntry {
		return ConnEntry{Interface: ifn, Shard: shard, Queue: queue, State: stack.Established, Local: ap(local), Remote: ap(remote),
			Listener: listener, Leg: leg, SRTT: 1234567 * time.Nanosecond, Cwnd: 14600, BytesIn: 5, BytesOut: 7}
	}
	return &fakeSource{pv: PlaneView{
		Ifaces: []IfaceView{{Name: "front"}, {Name: "back"}},
		Shards: []ShardView{
			{ID: 0, Answered: true, Conns: EngineView{List: []ConnEntry{
				{Interface: "front", Shard: 0, Queue: 4, State: stack.TimeWait, Local: ap("10.0.0.1:80"), Remote: ap("10.0.0.9:1000"), Listener: "web", Leg: LegClient},
				est("front", 0, 4, "10.0.0.1:80", "10.0.0.9:2000", "web", LegClient),
				est("back", 0, 6, "10.0.1.1:30000", "10.0.2.2:8080", "web", LegBackend),
			}}},
			{ID: 1, Answered: true, Conns: EngineView{Truncated: false, List: []ConnEntry{
				est("front", 1, 5, "10.0.0.1:80", "10.0.0.8:3000", "", ""),
			}}},
		},
	}}
}

func TestConnectionsText(t *testing.T) {
	src := connSource()
	a := New(src, "", nil)
	res, body := get(t, a.Handler(), "/connections")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/plain; charset=utf-8" || res.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("/connections: %d %v", res.StatusCode, res.Header)
	}
	if res.Header.Get("X-Xdproxy-Truncated") != "" || res.Header.Get("X-Xdproxy-Partial") != "" {
		t.Fatalf("complete listing marked: %v", res.Header)
	}
	// By interface in view order, then shard, live before TIME_WAIT, then
	// addresses.
	want := "" +
		"0 ESTABLISHED 10.0.0.1:80 10.0.0.9:2000 rtt=1.235ms cwnd=14600 in=5 out=7 listener=web leg=client if=front\n" +
		"0 TIME_WAIT 10.0.0.1:80 10.0.0.9:1000 listener=web leg=client if=front\n" +
		"1 ESTABLISHED 10.0.0.1:80 10.0.0.8:3000 rtt=1.235ms cwnd=14600 in=5 out=7 if=front\n" +
		"0 ESTABLISHED 10.0.1.1:30000 10.0.2.2:8080 rtt=1.235ms cwnd=14600 in=5 out=7 listener=web leg=backend if=back\n"
	if body != want {
		t.Fatalf("/connections:\n%s\nwant:\n%s", body, want)
	}
	if q := src.lastQuery(); !q.List || !q.TimeWaits || q.Counts || q.States != nil || q.Listener != "" || q.Limit != 0 {
		t.Errorf("plain /connections asked for %+v", q)
	}

	// The limit holds over all shards.
	res, body = get(t, a.Handler(), "/connections?limit=2")
	if body != strings.Join(strings.SplitAfter(want, "\n")[:2], "") || res.Header.Get("X-Xdproxy-Truncated") != "true" {
		t.Errorf("?limit=2 (truncated=%q):\n%s", res.Header.Get("X-Xdproxy-Truncated"), body)
	}
	// A shard that stopped at the limit marks the listing truncated.
	src.pv.Shards[1].Conns.Truncated = true
	if res, _ = get(t, a.Handler(), "/connections"); res.Header.Get("X-Xdproxy-Truncated") != "true" {
		t.Error("a shard's truncated listing is not marked")
	}
	// A shard that did not answer: partial, and its connections are missing.
	src.pv.Shards[1].Answered = false
	res, body = get(t, a.Handler(), "/connections")
	if res.Header.Get("X-Xdproxy-Partial") != "true" || strings.Contains(body, "\n1 ") || strings.HasPrefix(body, "1 ") {
		t.Errorf("partial listing (partial=%q):\n%s", res.Header.Get("X-Xdproxy-Partial"), body)
	}
}

func TestConnectionsQuery(t *testing.T) {
	src := connSource()
	a := New(src, "", nil)
	if res, _ := get(t, a.Handler(), "/connections?state=time-wait,syn_recv,Established&listener=web&limit=3&time_wait=0&format=text"); res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	q := src.lastQuery()
	wantStates := map[stack.State]bool{stack.TimeWait: true, stack.SynReceived: true, stack.Established: true}
	if !q.List || q.TimeWaits || q.Listener != "web" || q.Limit != 3 || len(q.States) != len(wantStates) {
		t.Fatalf("query %+v", q)
	}
	for st := range wantStates {
		if !q.States[st] {
			t.Errorf("state %v not asked for: %v", st, q.States)
		}
	}
	if !q.Wants(stack.Established, "web") || q.Wants(stack.Established, "api") || q.Wants(stack.FinWait1, "web") {
		t.Error("ConnQuery.Wants disagrees with the query")
	}
	for _, bad := range []string{"?format=xml", "?state=NOPE", "?limit=-1", "?limit=x", "?time_wait=maybe"} {
		if res, _ := get(t, a.Handler(), "/connections"+bad); res.StatusCode != 400 {
			t.Errorf("/connections%s: %d, want 400", bad, res.StatusCode)
		}
	}
}

func TestConnectionsJSON(t *testing.T) {
	a := New(connSource(), "", nil)
	res, body := get(t, a.Handler(), "/connections?format=json&limit=3")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/json" || res.Header.Get("X-Xdproxy-Truncated") != "true" {
		t.Fatalf("/connections?format=json: %d %v", res.StatusCode, res.Header)
	}
	want := `[
  {
    "interface": "front",
    "shard": 0,
    "queue": 4,
    "state": "ESTABLISHED",
    "local": "10.0.0.1:80",
    "remote": "10.0.0.9:2000",
    "listener": "web",
    "leg": "client",
    "rtt": "1.235ms",
    "rtt_us": 1234,
    "cwnd": 14600,
    "in": 5,
    "out": 7
  },
  {
    "interface": "front",
    "shard": 0,
    "queue": 4,
    "state": "TIME_WAIT",
    "local": "10.0.0.1:80",
    "remote": "10.0.0.9:1000",
    "listener": "web",
    "leg": "client"
  },
  {
    "interface": "front",
    "shard": 1,
    "queue": 5,
    "state": "ESTABLISHED",
    "local": "10.0.0.1:80",
    "remote": "10.0.0.8:3000",
    "rtt": "1.235ms",
    "rtt_us": 1234,
    "cwnd": 14600,
    "in": 5,
    "out": 7
  }
]
`
	if body != want {
		t.Fatalf("/connections?format=json:\n%s\nwant:\n%s", body, want)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list) != 3 {
		t.Fatalf("%v, %d entries", err, len(list))
	}
	// Empty listing: an empty array, not null.
	_, body = get(t, New(&fakeSource{}, "", nil).Handler(), "/connections?format=json")
	if strings.TrimSpace(body) != "[]" {
		t.Errorf("empty listing = %q, want []", body)
	}
}

// A backend leg that is a kernel socket: no interface, marked kernel, and
// the ESTABLISHED fields only when established.
func TestConnectionsKernelLeg(t *testing.T) {
	ap := netip.MustParseAddrPort
	src := &fakeSource{pv: PlaneView{Shards: []ShardView{{ID: 1, Answered: true, Conns: EngineView{List: []ConnEntry{
		{Shard: 1, State: stack.SynSent, Local: ap("127.0.0.1:40000"), Remote: ap("127.0.0.1:9000"), Listener: "api", Leg: LegBackend, Kernel: true},
		{Shard: 1, State: stack.Established, Local: ap("127.0.0.1:40001"), Remote: ap("127.0.0.1:9000"), Listener: "api", Leg: LegBackend, Kernel: true,
			SRTT: 50 * time.Microsecond, Cwnd: 43690, BytesIn: 3},
	}}}}}}
	a := New(src, "", nil)
	_, body := get(t, a.Handler(), "/connections")
	want := "1 SYN_SENT 127.0.0.1:40000 127.0.0.1:9000 listener=api leg=backend kernel\n" +
		"1 ESTABLISHED 127.0.0.1:40001 127.0.0.1:9000 rtt=50µs cwnd=43690 in=3 out=0 listener=api leg=backend kernel\n"
	if body != want {
		t.Fatalf("/connections:\n%s\nwant:\n%s", body, want)
	}
	_, body = get(t, a.Handler(), "/connections?format=json")
	var list []map[string]any
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list) != 2 {
		t.Fatalf("%v:\n%s", err, body)
	}
	if list[1]["kernel"] != true || list[1]["interface"] != "" || list[1]["rtt_us"] != float64(50) || list[0]["kernel"] != true {
		t.Errorf("JSON:\n%s", body)
	}
	if _, ok := list[0]["rtt"]; ok {
		t.Errorf("SYN_SENT entry has rtt:\n%s", body)
	}
}

// fakeReloader answers /reload with a canned outcome.
type fakeReloader struct{ refuse bool }

func (f fakeReloader) Reload(string) ReloadOutcome {
	if f.refuse {
		return ReloadOutcome{Problems: []string{"x.yaml:3: listeners[0].address: invalid"}, Took: "1ms"}
	}
	return ReloadOutcome{Applied: true, Added: []string{"api"}, SHA256: "ab12", Took: "2ms"}
}

func (fakeReloader) ReloadStats() (uint64, uint64, string) { return 3, 1, "ab12" }

func TestReloadEndpoint(t *testing.T) {
	a := New(nil, "127.0.0.1:0", nil)
	res, body := get(t, a.Handler(), "/reload")
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /reload: %d, want 405", res.StatusCode)
	}
	post := func() (int, string) {
		rec := httptest.NewRecorder()
		a.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/reload", nil))
		return rec.Code, rec.Body.String()
	}
	if code, _ := post(); code != http.StatusServiceUnavailable {
		t.Errorf("POST /reload without a reloader: %d, want 503", code)
	}
	a.SetReloader(fakeReloader{})
	if code, body := post(); code != http.StatusOK || !strings.Contains(body, `"applied": true`) || !strings.Contains(body, `"added": [`) {
		t.Errorf("POST /reload applied: %d %s", code, body)
	}
	a.SetReloader(fakeReloader{refuse: true})
	if code, body := post(); code != http.StatusUnprocessableEntity || !strings.Contains(body, "x.yaml:3: listeners[0].address") {
		t.Errorf("POST /reload refused: %d %s", code, body)
	}
	_, body = get(t, a.Handler(), "/metrics")
	for _, w := range []string{`xdproxy_config_reloads_total{result="applied"} 3`, `xdproxy_config_reloads_total{result="refused"} 1`, `xdproxy_config_info{sha256="ab12"} 1`} {
		if !strings.Contains(body, w) {
			t.Errorf("/metrics lacks %s", w)
		}
	}
}
