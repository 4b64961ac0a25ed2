package main

import (
	"math"
	"strings"
	"testing"
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
	for _, want := range []string{
		"| stack | EstablishedACK | 3614505 | 331.2 | 0 | 0 |  |",
		"| stack | Timers/conns=100000 | 100 | 12345678 | 12 | 1 | 8.00 MB/s |",
		"| bench | RawRX/xsk | 1000000 | 1200 | – | 0 | 833333 frames/s, 0 lost-% |",
		"- bench: --- SKIP: BenchmarkEchoRR",
		"CPU: AMD EPYC.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("missing %q in:\n%s", want, md)
		}
	}
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
