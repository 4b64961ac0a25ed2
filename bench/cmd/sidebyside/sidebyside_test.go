package main

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/bench/loadgen"
	"github.com/xdproxy/xdproxy/bench/rawxsk"
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
