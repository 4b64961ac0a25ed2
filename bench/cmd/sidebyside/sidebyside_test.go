package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/bench/loadgen"
	"github.com/xdproxy/xdproxy/bench/rawxsk"
	"github.com/xdproxy/xdproxy/internal/config"
	"github.com/xdproxy/xdproxy/internal/lab"
)

func TestMicroTable(t *testing.T) {
	in := `goos: linux
goarch: amd64
pkg: github.com/xdproxy/xdproxy/stack
cpu: AMD EPYC
BenchmarkEstablishedACK-2   	 3614505	       331.2 ns/op	       0 B/op	       0 allocs/op
BenchmarkTimers/conns=100000-2 	     100	  12345678 ns/op	  8.00 MB/s	 12 B/op	 1 allocs/op
PASS
ok  	github.com/xdproxy/xdproxy/stack	3.1s
pkg: github.com/xdproxy/xdproxy/bench
BenchmarkRawRX/xsk-2   	 1000000	      1200 ns/op	    833333 frames/s	         0 lost-%	       0 allocs/op
--- SKIP: BenchmarkEchoRR
    lab.go:1: needs root
ok  	github.com/xdproxy/xdproxy/bench	1.0s
`
	md, ok := microTable(strings.NewReader(in))
	if !ok {
		t.Error("ok = false without a failure")
	}
	assertContains(t, md,
		"| stack | EstablishedACK | 3614505 | 331.2 | 0 | 0 |  |",
		"| stack | Timers/conns=100000 | 100 | 12345678 | 12 | 1 | 8.00 MB/s |",
		"| bench | RawRX/xsk | 1000000 | 1200 | – | 0 | 833333 frames/s, 0 lost-% |",
		"- bench: --- SKIP: BenchmarkEchoRR",
		"CPU: AMD EPYC.",
	)
	if _, ok := microTable(strings.NewReader("--- FAIL: BenchmarkX\nFAIL\tgithub.com/xdproxy/xdproxy/xsk\t1s\n")); ok {
		t.Error("ok = true with a failure")
	}
}

func TestParseWrk(t *testing.T) {
	out := `Running 2s test @ http://10.10.1.1:7003/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   412.00us  200.00us   5.00ms   90.00%
  Latency Distribution
     50%  389.00us
     75%  450.00us
     90%  600.00us
     99%    1.41ms
  73052 requests in 2.00s, 6.13MB read
Requests/sec:  36526.12
Transfer/sec:      3.07MB
`
	rps, p50, p99, err := parseWrk(out)
	if err != nil || rps != 36526.12 || p50 != 389 || math.Abs(p99-1410) > 1e-9 {
		t.Fatalf("parseWrk = %v %v %v %v", rps, p50, p99, err)
	}
}

func TestMedianAndRatio(t *testing.T) {
	if m := median([]float64{3, math.NaN(), 1, 2}); m != 2 {
		t.Errorf("median = %v", m)
	}
	if m := median([]float64{4, 1}); m != 2.5 {
		t.Errorf("median = %v", m)
	}
	if m := median(nil); !math.IsNaN(float64(m)) {
		t.Errorf("median(nil) = %v", m)
	}
	if r := ratio(3, 2); r != "1.50×" {
		t.Errorf("ratio = %q", r)
	}
	if r := ratio(nan, 2); r != "–" {
		t.Errorf("ratio = %q", r)
	}
	if c := commas(1234567); c != "1,234,567" {
		t.Errorf("commas = %q", c)
	}
}

func TestSumSamples(t *testing.T) {
	text := []byte(`# HELP xdproxy_xsk_rx_frames_total Descriptors received from the RX ring.
# TYPE xdproxy_xsk_rx_frames_total counter
xdproxy_xsk_rx_frames_total{interface="xdp1-p0",queue="0"} 1.5e+06
xdproxy_xsk_rx_frames_total{interface="we\"ird}",queue="1"} 250
xdproxy_xsk_rx_frames_total_extra{queue="0"} 7
xdproxy_xsk_rx_frames_total_created 1
xdproxy_xsk_tx_frames_total{interface="xdp1-p0",queue="0"} 10
xdproxy_ready 1
`)
	if sum, n := sumSamples(text, metricXSKRx); sum != 1500250 || n != 2 {
		t.Errorf("rx = %v over %d series", sum, n)
	}
	if sum, n := sumSamples(text, metricXSKTx); sum != 10 || n != 1 {
		t.Errorf("tx = %v over %d series", sum, n)
	}
	if sum, n := sumSamples(text, "xdproxy_ready"); sum != 1 || n != 1 {
		t.Errorf("unlabelled = %v over %d series", sum, n)
	}
	if _, n := sumSamples(text, "xdproxy_missing"); n != 0 {
		t.Errorf("missing metric: %d series", n)
	}
}

func TestFramesBetween(t *testing.T) {
	t0 := time.Unix(100, 0)
	f := framesBetween(xskCounts{rx: 1000, tx: 500, series: 2, at: t0}, xskCounts{rx: 5000, tx: 2500, series: 2, at: t0.Add(3 * time.Second)}, 2*time.Second)
	if f.Error != "" || f.RX != 4000 || f.TX != 2000 || f.RXPerSec != 2000 || f.TXPerSec != 1000 || f.Seconds != 3 || f.LoadSeconds != 2 {
		t.Errorf("framesBetween = %+v", f)
	}
	for _, c := range []struct {
		after xskCounts
		load  time.Duration
	}{
		{xskCounts{rx: 5000, tx: 2500, series: 1, at: t0.Add(time.Second)}, time.Second}, // a shard did not answer
		{xskCounts{rx: 10, tx: 2500, series: 2, at: t0.Add(time.Second)}, time.Second},   // restarted
		{xskCounts{rx: 5000, tx: 2500, series: 2, at: t0.Add(time.Second)}, 0},           // no load time
	} {
		f := framesBetween(xskCounts{rx: 1000, tx: 500, series: 2, at: t0}, c.after, c.load)
		if f.Error == "" || !math.IsNaN(float64(f.RXPerSec)) {
			t.Errorf("framesBetween(…, %+v, %v) = %+v, want an error", c.after, c.load, f)
		}
	}
}

// TestFramesSummary checks the medians, the fractions of the raw rate, the
// bytes per frame of bulk, and the Markdown section and target row built
// from them.
func TestFramesSummary(t *testing.T) {
	res := &Results{
		Settings: options{Rounds: 3, Queues: 2, Raw: 2 * time.Second, Rates: []float64{2000}},
		Machine:  Machine{Cores: 2},
		RawXSK: []RawXSK{
			{Round: 0, TX: &rawxsk.Rate{PerSecond: 1e6}, RX: &rawxsk.Rate{PerSecond: 500e3}},
			{Round: 1, TX: &rawxsk.Rate{PerSecond: 2e6}, Error: "RX: busy"},
			{Round: 2, TX: &rawxsk.Rate{PerSecond: 3e6}, RX: &rawxsk.Rate{PerSecond: 700e3}},
		},
		Contenders: []ContenderInfo{{Name: "xdproxy-xdp"}, {Name: "haproxy"}},
		Summary:    map[string]*Summary{},
	}
	bulk := func(round int, rx, tx uint64, bytes int64) Run {
		return Run{Round: round, Contender: "xdproxy-xdp", Workload: "bulk8", Bulk: &loadgen.BulkResult{AllBytes: bytes},
			XSK: &XSKFrames{RX: rx, TX: tx, Seconds: 2, RXPerSec: num(rx / 2), TXPerSec: num(tx / 2)}}
	}
	res.Runs = []Run{
		{Contender: "haproxy", Workload: "bulk8", Bulk: &loadgen.BulkResult{AllBytes: 1 << 30}},
		{Contender: "xdproxy-xdp", Workload: "connrate", ConnRate: &loadgen.ConnRateResult{}, XSK: &XSKFrames{RX: 100, TX: 300, Seconds: 1, RXPerSec: 100, TXPerSec: 300}},
		bulk(0, 200e3, 300e3, 250e6), // 500 bytes per frame
		bulk(1, 400e3, 400e3, 400e6), // 500
		bulk(2, 600e3, 600e3, 720e6), // 600
		{Contender: "xdproxy-xdp", Workload: "bulk8", Error: "failed", XSK: &XSKFrames{RX: 1, TX: 1, Seconds: 1, RXPerSec: 1, TXPerSec: 1}},
		{Contender: "xdproxy-xdp", Workload: "rr@2000", RR: &loadgen.RRResult{}, XSK: &XSKFrames{Error: "after: timeout", RXPerSec: nan, TXPerSec: nan}},
	}
	res.summarize()
	if r := res.RawSummary; r.TXPerSec != 2e6 || r.RXPerSec != 600e3 || r.Rounds != 2 {
		t.Errorf("raw summary = %+v", r)
	}
	if len(res.Summary["haproxy"].XSKFrames) != 0 {
		t.Errorf("haproxy has frames: %+v", res.Summary["haproxy"].XSKFrames)
	}
	fs := res.Summary["xdproxy-xdp"].XSKFrames
	if len(fs) != 3 || fs[0].Workload != "connrate" || fs[1].Workload != "bulk8" || fs[2].Workload != "rr@2000" {
		t.Fatalf("frame summaries = %+v", fs)
	}
	b := fs[1]
	if b.RXPerSec != 200e3 || b.TXPerSec != 200e3 || b.RXOfRaw != num(200e3/600e3) || b.TXOfRaw != 0.1 || b.BytesPerFrame != 500 {
		t.Errorf("bulk8 = %+v", b)
	}
	if c := fs[0]; !math.IsNaN(float64(c.BytesPerFrame)) || c.TXOfRaw != num(300/2e6) {
		t.Errorf("connrate = %+v", c)
	}
	if r := fs[2]; !math.IsNaN(float64(r.RXPerSec)) || !math.IsNaN(float64(r.RXOfRaw)) {
		t.Errorf("rr@2000 (scrape failed) = %+v", r)
	}
	assertContains(t, res.markdown(),
		"| TX from p0 | 2,000,000 | 1,000,000, 2,000,000, 3,000,000 |",
		"| RX into p0 | 600,000 | 500,000, failed, 700,000 |",
		"Round 2: RX: busy",
		"| xdproxy-xdp | bulk, 8 streams | 200,000 | 33.3% | 200,000 | 10.0% | 500 |",
		"| xdproxy-xdp | connection rate | 100 | 0.0% | 300 | 0.0% | – |",
		"| xdproxy-xdp | request/response, 2,000 req/s | – | – | – | – | – |",
		"| kernel-bypass path shown as a fraction of the raw XSK frame rate (no threshold) | RX 33.3%, TX 10.0% of raw (bulk, 8 streams, its busiest workload) | shown |",
	)

	res.Settings.Raw, res.RawXSK = 0, nil
	res.summarize()
	assertContains(t, res.markdown(), "Not measured (-raw 0).", "raw XSK frame rate (no threshold) | – | not measured |")
}

// assertContains reports each of wants that text lacks.
func assertContains(t *testing.T, text string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q in:\n%s", want, text)
		}
	}
}

func TestParseArgs(t *testing.T) {
	o, cs, err := parseArgs(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Shape != "one-armed" || o.shape() != lab.OneArmed || o.Queues != 1 || o.BackQueues != 0 || o.backQueues() != 1 || o.shards() != 1 || len(cs) != len(allContenders) {
		t.Errorf("defaults: %+v, %d contenders", o, len(cs))
	}
	if n := o.planned(len(cs)); n != 3*len(cs)*(1+3+1+2)+len(cs) {
		t.Errorf("defaults: %d workloads planned", n)
	}
	if len(o.Rates) != 3 || o.Command != "go run ./bench/cmd/sidebyside " {
		t.Errorf("defaults: rates %v, command %q", o.Rates, o.Command)
	}

	args := []string{"-shape", "two-armed", "-queues", "2", "-back-queues", "1", "-contenders", "xdproxy-xdp,haproxy", "-workloads", "connrate,bulk1,bulk8"}
	o, cs, err = parseArgs(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.shape() != lab.TwoArmed || o.Queues != 2 || o.backQueues() != 1 || o.shards() != 2 || len(cs) != 2 || cs[0].name != "xdproxy-xdp" || cs[1].name != "haproxy" {
		t.Errorf("two-armed: %+v, contenders %v", o, cs)
	}
	if !o.runs("bulk8") || o.runs("rr") || o.planned(len(cs)) != 3*2*3 {
		t.Errorf("workloads %q: %d planned", o.Workloads, o.planned(len(cs)))
	}
	if want := "go run ./bench/cmd/sidebyside " + strings.Join(args, " "); o.Command != want {
		t.Errorf("command %q, want %q", o.Command, want)
	}
	if _, cs, err := parseArgs([]string{"-contenders", "haproxy", "-base-bin", "/tmp/old-xdproxy"}, io.Discard); err != nil || len(cs) != 2 || cs[1].name != "xdproxy-base" {
		t.Errorf("-base-bin: contenders %v, %v", cs, err)
	}
	if o, _, err := parseArgs([]string{"-shape", "two-armed", "-queues", "2"}, io.Discard); err != nil || o.backQueues() != 2 {
		t.Errorf("two-armed without -back-queues: back queues %d, %v", o.backQueues(), err)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-shape", "three-armed"}, `-shape: unknown "three-armed"`},
		{[]string{"-back-queues", "1"}, "-back-queues needs -shape two-armed"},
		{[]string{"-shape", "two-armed", "-back-queues", "-1"}, "-back-queues must not be negative"},
		{[]string{"-queues", "0"}, "must be positive"},
		{[]string{"-contenders", "xdproxy-xdp,envoy"}, `-contenders: unknown "envoy"`},
		{[]string{"-workloads", "connrate,bulk9"}, `-workloads: unknown "bulk9"`},
		{[]string{"-rates", "2000,x"}, `-rates: bad rate "x"`},
		{[]string{"-mtu", "9000"}, "-mtu: 9000"},
		{[]string{"two-armed"}, "unexpected arguments"},
		{[]string{"-workloads", "loss", "-base-bin", "x"}, "-base-bin does not apply"},
	} {
		if _, _, err := parseArgs(c.args, io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseArgs(%q) = %v, want %q", c.args, err, c.want)
		}
	}
	var fe flagError
	if _, _, err := parseArgs([]string{"-sharp", "two-armed"}, io.Discard); !errors.As(err, &fe) {
		t.Errorf("undefined flag: %v, want a flagError", err)
	}
	var usage strings.Builder
	if _, _, err := parseArgs([]string{"-h"}, &usage); !errors.Is(err, flag.ErrHelp) || !strings.Contains(usage.String(), "-back-queues") {
		t.Errorf("-h: %v, usage %q", err, usage.String())
	}
}

func TestOutputFiles(t *testing.T) {
	if f := outputFiles(lab.OneArmed); f != (resultFiles{"latest.json", "latest.md", "latency.svg"}) {
		t.Errorf("one-armed: %+v", f)
	}
	if f := outputFiles(lab.TwoArmed); f != (resultFiles{"latest-two-armed.json", "latest-two-armed.md", "latency-two-armed.svg"}) {
		t.Errorf("two-armed: %+v", f)
	}
	if n := profileName(lab.TwoArmed, 0, "xdproxy-xdp", "rr@2000"); n != "two-armed-r1-xdproxy-xdp-rr-2000.pprof" {
		t.Errorf("profile name %q", n)
	}
}

// TestWriteShapes writes a one-armed and a two-armed run's results into one
// directory: each shape has its own files, its shape in the JSON and in the
// Markdown's heading.
func TestWriteShapes(t *testing.T) {
	dir := t.TempDir()
	for _, shape := range []string{"one-armed", "two-armed"} {
		res := &Results{Settings: options{Shape: shape, Rounds: 1, Queues: 2, Raw: time.Second, Rates: []float64{2000}}, Machine: Machine{Cores: 2},
			Contenders: []ContenderInfo{{Name: "xdproxy-xdp"}, {Name: "haproxy"}}, Summary: map[string]*Summary{}}
		res.summarize()
		if err := res.write(dir, res.markdown()); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]string{
		"latest.json":           `"shape": "one-armed"`,
		"latest.md":             "# xdproxy side by side, one-armed\n",
		"latency.svg":           "<svg",
		"latest-two-armed.json": `"shape": "two-armed"`,
		"latest-two-armed.md":   "# xdproxy side by side, two-armed\n",
		"latency-two-armed.svg": "<svg",
	} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Error(err)
			continue
		}
		assertContains(t, string(b), want)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "latest-two-armed.md"))
	assertContains(t, string(b), "Lab, two-armed:", "(veth p1, 2 queues)", "the proxy's front veth", "both interfaces (p0 and p1)", "two kernel forwarding hops")
}

// TestXdproxyConfig renders the bench's xdproxy config for the two-armed
// proxy and has the daemon's config parser check it.
func TestXdproxyConfig(t *testing.T) {
	backs := []netip.Addr{lab.TopoBackBackend1.Addr(), lab.TopoBackBackend2.Addr()}
	text := xdproxyConfig([]string{"xdp1-p0", "xdp1-p1"}, "xdp", backs)
	cfg, err := config.Parse("bench.yaml", []byte(text))
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if len(cfg.Interfaces) != 2 || cfg.Interfaces[0].Name != "xdp1-p0" || cfg.Interfaces[1].Name != "xdp1-p1" {
		t.Errorf("interfaces %+v", cfg.Interfaces)
	}
	if len(cfg.Listeners) != len(services) {
		t.Fatalf("%d listeners", len(cfg.Listeners))
	}
	for i, l := range cfg.Listeners {
		s := services[i]
		var got []string
		for _, b := range l.Backends {
			got = append(got, b.Address.String())
		}
		want := []string{fmt.Sprintf("10.10.3.2:%d", s.backendPort), fmt.Sprintf("10.10.3.3:%d", s.backendPort)}
		if s.firstOnly {
			want = want[:1]
		}
		if l.Name != s.name || l.Address.String() != fmt.Sprintf("%s:%d", listenIP, s.proxyPort) || l.Dial != "xdp" || !slices.Equal(got, want) {
			t.Errorf("listener %d: %s %v dial %s backends %v, want %s %s:%d xdp %v", i, l.Name, l.Address, l.Dial, got, s.name, listenIP, s.proxyPort, want)
		}
	}
	if cfg.Admin.Address != xdproxyAdmin {
		t.Errorf("admin %v", cfg.Admin.Address)
	}
	one, err := config.Parse("bench.yaml", []byte(xdproxyConfig([]string{"xdp1-p0"}, "kernel", []netip.Addr{lab.TopoBackend1.Addr()})))
	if err != nil || len(one.Interfaces) != 1 || one.Listeners[0].Dial != "kernel" || one.Listeners[0].Backends[0].Address.String() != "10.10.2.2:8000" {
		t.Errorf("one-armed config: %v %+v", err, one)
	}
}

func TestLossArgs(t *testing.T) {
	o, _, err := parseArgs([]string{"-workloads", "loss", "-loss-repeats", "2", "-loss-rates", "0, 1.5", "-loss-rtts", "1ms,100ms"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	lo := o.Loss
	if lo.Repeats != 2 || lo.MiB != 50 || !slices.Equal(lo.Losses, []float64{0, 1.5}) ||
		!slices.Equal(lo.RTTs, []time.Duration{time.Millisecond, 100 * time.Millisecond}) || lo.Rate != 1e9 || lo.BufferKiB != 4096 {
		t.Errorf("loss options %+v", lo)
	}
	c := lo.lossConfig(100*time.Millisecond, 1.5)
	if c.AtoB != c.BtoA || c.AtoB.Delay != 50*time.Millisecond || c.AtoB.Loss != 0.015 || c.AtoB.Rate != 1e9 {
		t.Errorf("WAN config %+v", c)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-workloads", "loss,bulk1"}, "runs on its own"},
		{[]string{"-workloads", "loss", "-contenders", "haproxy"}, "no -contenders"},
		{[]string{"-workloads", "loss", "-shape", "two-armed"}, "one-armed lab only"},
		{[]string{"-workloads", "loss", "-loss-rates", "1,x"}, `-loss-rates: bad rate "x"`},
		{[]string{"-workloads", "loss", "-loss-rtts", "50"}, `-loss-rtts: bad RTT "50"`},
		{[]string{"-workloads", "loss", "-loss-repeats", "0"}, "must be positive"},
	} {
		if _, _, err := parseArgs(c.args, io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseArgs(%q) = %v, want %q", c.args, err, c.want)
		}
	}
	// The loss flags are not looked at without -workloads loss.
	if _, _, err := parseArgs([]string{"-loss-rates", "x"}, io.Discard); err != nil {
		t.Errorf("-loss-rates x without -workloads loss: %v", err)
	}
}

func TestLossCounters(t *testing.T) {
	re, to, err := parseNstat("#kernel\nTcpRetransSegs                  258                0.0\nTcpExtTCPTimeouts               3                  0.0\n")
	if err != nil || re != 258 || to != 3 {
		t.Errorf("parseNstat: %v %v %v", re, to, err)
	}
	if _, _, err := parseNstat("#kernel\n"); err == nil {
		t.Error("parseNstat of nothing: no error")
	}
	metrics := `# TYPE xdproxy_tcp_events_total counter
xdproxy_tcp_events_total{counter="retransmits"} 80
xdproxy_tcp_events_total{counter="rto_recoveries"} 2
xdproxy_tcp_events_total{counter="tail_loss_probes"} 7
`
	re, to, err = parseEngineCounters(strings.NewReader(metrics))
	if err != nil || re != 80 || to != 2 {
		t.Errorf("parseEngineCounters: %v %v %v", re, to, err)
	}
	if _, _, err := parseEngineCounters(strings.NewReader("# TYPE x counter\nx 1\n")); err == nil {
		t.Error("parseEngineCounters without the engine's counters: no error")
	}
}

func TestLossSummary(t *testing.T) {
	res := &LossResults{Settings: lossOptions{Repeats: 3, MiB: 50, Losses: []float64{1}, RTTs: []time.Duration{50 * time.Millisecond}, Rate: 1e9, BufferKiB: 4096,
		XdproxyCC: []string{"cubic"}, KernelCC: []string{"cubic", "bbr"}, KernelDefault: "bbr"}}
	for i, s := range []float64{3, 1, 2} {
		res.Runs = append(res.Runs,
			LossRun{RTTms: 50, LossPct: 1, Repeat: i, Side: "xdproxy-cubic", Seconds: num(s), Retransmits: num(100 * s), RTOs: num(s - 1)},
			LossRun{RTTms: 50, LossPct: 1, Repeat: i, Side: "kernel-cubic", Seconds: num(s / 4), Retransmits: num(90), RTOs: 0},
			LossRun{RTTms: 50, LossPct: 1, Repeat: i, Side: "kernel-bbr", Seconds: num(s / 8), Retransmits: num(80), RTOs: 0})
	}
	res.Runs[7].Seconds, res.Runs[7].Error = nan, "timed out"
	res.summarize()
	if len(res.Cells) != 1 {
		t.Fatalf("cells %+v", res.Cells)
	}
	c := res.Cells[0]
	if c.Seconds["xdproxy-cubic"] != 2 || c.MinSeconds["xdproxy-cubic"] != 1 || c.MaxSeconds["xdproxy-cubic"] != 3 || c.Retransmits["xdproxy-cubic"] != 200 || c.RTOs["xdproxy-cubic"] != 1 {
		t.Errorf("xdproxy: %+v", c)
	}
	if c.OK["kernel-cubic"] != 2 || c.Seconds["kernel-cubic"] != 0.5 || c.Ratios["xdproxy-cubic/kernel-cubic"] != 4 || c.Ratios["xdproxy-cubic/kernel-bbr"] != 8 {
		t.Errorf("kernel: %+v", c)
	}
	md := res.markdown()
	for _, want := range []string{"| 50 ms, 1% | 2.00 (1.00-3.00) | 0.50 (0.25-0.75) | 0.25 (0.12-0.38) | 4.00× | 8.00× | 200 / 90 / 80 | 1 / 0 / 0 |",
		"50 ms, 1%, kernel-cubic: 1 of 3 downloads failed", "this lab's default is bbr"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

// TestMarginal checks the machine CPU per unit, its difference from the
// direct path's of the same round, xdproxy's frames and kernel entries per
// unit, and the rows they make.
func TestMarginal(t *testing.T) {
	res := &Results{
		Settings:   options{Rounds: 2, Queues: 2, Duration: 2 * time.Second, Warmup: 0, Rates: []float64{2000}},
		Machine:    Machine{Cores: 2},
		Contenders: []ContenderInfo{{Name: "direct"}, {Name: "xdproxy-xdp"}, {Name: "haproxy"}},
		Summary:    map[string]*Summary{},
	}
	conn := func(round int, who string, cpu float64, conns int64, x *XSKFrames) Run {
		return Run{Round: round, Contender: who, Workload: "connrate", MachineCPU: cpu, ConnRate: &loadgen.ConnRateResult{AllConns: conns}, XSK: x}
	}
	res.Runs = []Run{
		conn(0, "direct", 1, 10000, nil),   // 100 µs
		conn(1, "direct", 1.2, 10000, nil), // 120 µs
		conn(0, "haproxy", 2.2, 10000, nil),
		conn(1, "haproxy", 1.8, 6000, nil), // 300 µs: adds 180; round 0 adds 120
		conn(0, "xdproxy-xdp", 1.5, 10000, &XSKFrames{RX: 100000, TX: 90000, Syscalls: 30000}),
		conn(1, "xdproxy-xdp", 3, 15000, &XSKFrames{RX: 150000, TX: 120000, Syscalls: 60000}), // 200: adds 80; round 0 adds 50
		{Round: 1, Contender: "xdproxy-xdp", Workload: "connrate", Error: "boom"},
		{Round: 0, Contender: "direct", Workload: "bulk1", MachineCPU: 1, Bulk: &loadgen.BulkResult{AllBytes: 2 << 30}},
		{Round: 0, Contender: "haproxy", Workload: "bulk1", MachineCPU: 2, Bulk: &loadgen.BulkResult{AllBytes: 1 << 30}},
		{Round: 0, Contender: "xdproxy-xdp", Workload: "rr@2000", MachineCPU: 0.4, RR: &loadgen.RRResult{Achieved: 2000}},
	}
	res.summarize()
	x := res.Summary["xdproxy-xdp"].marginalOf("connrate")
	if x.Unit != "conn" || x.Machine != 175 || x.Added != 65 || x.FramesIn != 10 || x.FramesOut != 8.5 || x.Syscalls != 3.5 {
		t.Errorf("xdproxy connrate = %+v", x)
	}
	if h := res.Summary["haproxy"].marginalOf("connrate"); h.Added != 150 || !math.IsNaN(float64(h.FramesIn)) {
		t.Errorf("haproxy connrate = %+v", h)
	}
	if d := res.Summary["direct"].marginalOf("connrate"); d.Added != 0 || d.Machine != 110 {
		t.Errorf("direct connrate = %+v", d)
	}
	if h := res.Summary["haproxy"].marginalOf("bulk1"); h.Unit != "GiB" || h.Machine != 2e6 || h.Added != 1.5e6 {
		t.Errorf("haproxy bulk1 = %+v", h)
	}
	// No direct run of rr@2000: the machine figure, no difference.
	if r := res.Summary["xdproxy-xdp"].marginalOf("rr@2000"); r.Unit != "req" || r.Machine != 100 || !math.IsNaN(float64(r.Added)) {
		t.Errorf("xdproxy rr@2000 = %+v", r)
	}
	if m := res.Summary["haproxy"].marginalOf("rr-max"); m.Unit != "" || !math.IsNaN(float64(m.Added)) {
		t.Errorf("haproxy rr-max (not run) = %+v", m)
	}
	assertContains(t, res.markdown(),
		"| connection rate (per conn) | xdproxy-xdp | 175.0 | 65.0 | 0.43× | 10.00 / 8.50 | 3.50 |",
		"| connection rate (per conn) | direct | 110.0 | – | – | – | – |",
		"| bulk, 1 stream (per GiB) | haproxy | 2.00 | 1.50 | 1.00× | – | – |",
		"| request/response, 2,000 req/s (per req) | xdproxy-xdp | 100.0 | – | – | – | – |",
		"| 65.0 | 0.43× | 10.00 / 8.50 |",
		"| machine CPU added per connection (minus direct) ≤ 0.5× HAProxy's | 0.43× | met |",
	)
}
