package main

// The deployment shapes users run xdproxy in, each a lab topology
// (internal/lab): one-armed and two-armed, IPv4, IPv6 and both mixed, veth
// peers left as Linux sets them up, interfaces with one queue and several.
// In each, real clients through the daemon: a 50 MiB curl download checked
// by SHA-256, 400 concurrent requests, redis-benchmark; and afterwards no
// connection left but TIME_WAIT, no reset, no frame lost.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/xdproxy/xdproxy/internal/lab"
)

type shapeCase struct {
	name string
	opts lab.TopologyOpts
	// Families of the listener (client leg) and the backends.
	listener6, backend6 bool
	// Extra checks on the metrics after the traffic.
	check func(t *testing.T, m string)
	// A shipped config for this shape (configs/), which check must pass
	// in the lab's proxy namespace (p0, p1 renamed to the lab's).
	config string
}

func TestDeploymentShapes(t *testing.T) {
	if err := lab.EnsureTools("curl:curl", "redis-server", "redis-benchmark:redis-tools"); err != nil {
		t.Fatal(err)
	}
	positive := func(names ...string) func(*testing.T, string) {
		return func(t *testing.T, m string) {
			for _, n := range names {
				if v := sumMetric(m, n); v <= 0 {
					t.Errorf("%s = %v, want > 0", n, v)
				}
			}
		}
	}
	for _, tc := range []shapeCase{
		{name: "one-armed-ipv6", opts: lab.TopologyOpts{IPv6: true}, listener6: true, backend6: true},
		{name: "dual-stack-6to4", opts: lab.TopologyOpts{IPv6: true}, listener6: true, config: "dual-stack.yaml"},
		{name: "dual-stack-4to6", opts: lab.TopologyOpts{IPv6: true}, backend6: true},
		{name: "two-armed-ipv4", opts: lab.TopologyOpts{Shape: lab.TwoArmed}},
		{name: "two-armed-ipv6", opts: lab.TopologyOpts{Shape: lab.TwoArmed, IPv6: true}, listener6: true, backend6: true, config: "two-armed.yaml"},
		// Both interfaces' queues carry traffic; replies landing on the
		// other queue are handed to their shard, none lost.
		{name: "two-armed-2q", opts: lab.TopologyOpts{Shape: lab.TwoArmed, Queues: 2},
			check: func(t *testing.T, m string) {
				positive("xdproxy_shard_handoffs_total")(t, m)
				everyQueueReceived(t, m, 2)
			}},
		// The back interface has one queue for two shards: shard 1 sends
		// its backend legs through shard 0's socket.
		{name: "two-armed-2q-1q", opts: lab.TopologyOpts{Shape: lab.TwoArmed, Queues: 2, BackQueues: 1},
			check: positive("xdproxy_shard_tx_handoffs_total")},
		// Veths as Linux sets them up: every segment from the client and
		// the backends arrives with a partial checksum.
		{name: "veth-default-offloads", opts: lab.TopologyOpts{TxChecksumOffload: true, IPv6: true}, backend6: true,
			check: positive("xdproxy_interface_partial_checksums_total")},
	} {
		t.Run(tc.name, func(t *testing.T) { testShape(t, tc) })
	}
}

func testShape(t *testing.T, tc shapeCase) {
	lab.RequireRoot(t)
	l, err := lab.New(t)
	if err != nil {
		t.Fatal(err)
	}
	topo, err := l.NewTopologyWith(tc.opts)
	if err != nil {
		t.Fatal(err)
	}
	if tc.config != "" {
		data, err := os.ReadFile("../../configs/" + tc.config)
		if err != nil {
			t.Fatal(err)
		}
		cfg := string(data)
		for i, name := range topo.ProxyIfs {
			cfg = regexp.MustCompile(fmt.Sprintf(`- name: p%d\b`, i)).ReplaceAllString(cfg, "- name: "+name)
		}
		path := writeConfig(t, tc.config, cfg)
		if code, out, errs := inNS(t, topo.Proxy, "check", "--config", path); code != 0 || out != "ok\n" {
			t.Errorf("check configs/%s in its lab: exit %d, %q, %q", tc.config, code, out, errs)
		}
	}
	lip := topo.ProxyAddr
	if tc.listener6 {
		lip = topo.ProxyAddr6
	}
	backends := topo.BackendAddrs
	if tc.backend6 {
		backends = topo.BackendAddrs6
	}
	be := func(i, port int) string { return netip.AddrPortFrom(backends[i], uint16(port)).String() }
	q := func(s string) string { return `"` + s + `"` } // YAML: [v6]:port is not a flow sequence
	startHTTP(t, topo.Backends, be(0, 8080), "b1")
	startHTTP(t, topo.Backends, be(1, 8080), "b2")
	redis, err := topo.Backends.Start(context.Background(), "redis-server", "--bind", backends[0].String(), "--port", "6379",
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, redis, "Ready to accept connections", 20*time.Second)

	var ifs strings.Builder
	for _, name := range topo.ProxyIfs {
		fmt.Fprintf(&ifs, "  - name: %s\n", name)
	}
	web := netip.AddrPortFrom(lip, 80)
	rds := netip.AddrPortFrom(lip, 6379)
	cfg := fmt.Sprintf(`interfaces:
%slisteners:
%s
%s
drain_timeout: 2s
admin:
  address: %s
log:
  level: info
`, ifs.String(),
		listenerYAML("web", q(web.String()), "round_robin", "    health_check: {interval: 1s, timeout: 500ms, rise: 1, fall: 2}\n", q(be(0, 8080)), q(be(1, 8080))),
		listenerYAML("redis", q(rds.String()), "round_robin", "", q(be(0, 6379))),
		adminAddr)
	d := startDaemon(t, topo, cfg)

	// 50 MiB through the daemon, checked end to end.
	dir := t.TempDir()
	body := filepath.Join(dir, "body")
	out := curl(t, topo.Client, 120*time.Second, "-g", "-o", body, "-w", "%{http_code} %{time_total}",
		fmt.Sprintf("http://%s/blob?size=%d", web, bigBody))
	if sum, n := fileSHA256(t, body); n != bigBody || sum != blobSum(bigBody) {
		t.Fatalf("downloaded %d bytes, sha256 %s; want %d, %s (curl: %s)", n, sum, bigBody, blobSum(bigBody), out)
	}
	t.Logf("50 MiB download: %s", out)

	// 400 requests at once, each on its own connection.
	shapeConcurrent(t, topo.Client, web, 400)

	// redis-benchmark, no errors.
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	bout, err := topo.Client.Run(ctx, "redis-benchmark", "-h", lip.String(), "-p", "6379", "-n", "10000", "-c", "20", "-q", "-t", "set,get")
	if err != nil {
		t.Fatalf("redis-benchmark: %v\n%s", err, bout)
	}
	rps := regexp.MustCompile(`(SET|GET): ([0-9.]+) requests per second`).FindAllStringSubmatch(bout, -1)
	if len(rps) != 2 || regexp.MustCompile(`(?i)error|reset|refused`).MatchString(bout) {
		t.Fatalf("redis-benchmark through the daemon:\n%s", bout)
	}
	t.Logf("redis-benchmark -n 10000 -c 20: %s %s rps, %s %s rps", rps[0][1], rps[0][2], rps[1][1], rps[1][2])

	// Afterwards: every session over, no connection but TIME_WAIT, nothing
	// reset or lost on the way.
	var m string
	waitUntil(t, 10*time.Second, "sessions to end", func() bool {
		m = d.fullMetrics()
		live := 0.0
		for _, st := range []string{"SYN_SENT", "SYN_RCVD", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING", "LAST_ACK"} {
			live += gaugeWith(m, "xdproxy_tcp_connections", "state", st)
		}
		return live == 0 && sumMetric(m, "xdproxy_accepted_total") > 0 && gaugeWith(m, "xdproxy_active_sessions", "", "") == 0
	})
	for _, zero := range []string{"xdproxy_resets_total", "xdproxy_connect_failures_total", "xdproxy_connect_timeouts_total",
		"xdproxy_shard_handoff_drops_total", "xdproxy_shard_tx_handoff_drops_total", "xdproxy_interface_checksum_drops_total",
		"xdproxy_refused_total", "xdproxy_no_backend_total"} {
		if v := sumMetric(m, zero); v != 0 {
			t.Errorf("%s = %v, want 0", zero, v)
		}
	}
	// Each interface carried traffic (two-armed: the back one the backend legs).
	for _, name := range topo.ProxyIfs {
		if v := gaugeWith(m, "xdproxy_interface_rx_frames_total", "interface", name); v == 0 {
			t.Errorf("no frames from %s", name)
		}
	}
	if tc.check != nil {
		tc.check(t, m)
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", d.metrics())
	}
}

// everyQueueReceived checks that each AF_XDP socket (interface, queue) of
// the daemon received frames, and that there are sockets on queues
// 0..queues-1 of at least one interface.
func everyQueueReceived(t *testing.T, m string, queues int) {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(m))
	if err != nil || fams["xdproxy_xsk_rx_frames_total"] == nil {
		t.Fatalf("no xdproxy_xsk_rx_frames_total (%v)", err)
	}
	seen := map[string]bool{}
	for _, s := range fams["xdproxy_xsk_rx_frames_total"].GetMetric() {
		var ifc, q string
		for _, lp := range s.GetLabel() {
			switch lp.GetName() {
			case "interface":
				ifc = lp.GetValue()
			case "queue":
				q = lp.GetValue()
			}
		}
		seen[q] = true
		if s.GetCounter().GetValue() == 0 {
			t.Errorf("%s queue %s received nothing", ifc, q)
		}
	}
	if len(seen) != queues {
		t.Errorf("sockets on queues %v, want %d queues", seen, queues)
	}
}

// shapeConcurrent sends n POST /echo requests at once, each on a new
// connection, and checks every answer.
func shapeConcurrent(t *testing.T, ns *lab.NS, addr netip.AddrPort, n int) {
	t.Helper()
	hc := &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			MaxConnsPerHost:   0,
			DialContext: func(ctx context.Context, _, a string) (net.Conn, error) {
				return ns.DialTCP(ctx, a)
			},
		},
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			msg := randomBytes(uint64(i)+7000, 1000+i*37)
			resp, err := hc.Post("http://"+addr.String()+"/echo", "application/octet-stream", bytes.NewReader(msg))
			if err != nil {
				errs[i] = err
				return
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case err != nil:
				errs[i] = err
			case resp.StatusCode != 200 || !bytes.Equal(got, msg):
				errs[i] = fmt.Errorf("%s, %d bytes back of %d", resp.Status, len(got), len(msg))
			}
		})
	}
	wg.Wait()
	fatalIfAny(t, errs, func(i int) string { return fmt.Sprintf("request %d", i) }, "concurrent requests failed")
	t.Logf("%d concurrent requests in %v", n, time.Since(start).Round(time.Millisecond))
}

// fullMetrics is the daemon's /metrics text, zeros included.
func (d *daemon) fullMetrics() string {
	resp, err := d.admin.Get("http://" + d.adminAddr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// gaugeWith sums the samples of metric name (gauge or counter) whose label
// has value ("" label: every sample).
func gaugeWith(text, name, label, value string) float64 {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil || fams[name] == nil {
		return 0
	}
	var sum float64
	for _, m := range fams[name].GetMetric() {
		if label != "" {
			match := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					match = true
				}
			}
			if !match {
				continue
			}
		}
		if g := m.GetGauge(); g != nil {
			sum += g.GetValue()
		} else {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
