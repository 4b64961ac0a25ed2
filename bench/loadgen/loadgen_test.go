package loadgen

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// serve runs handle for every connection accepted on a loopback listener.
func serve(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

func echo(c net.Conn) { io.Copy(c, c) }

func TestConnRate(t *testing.T) {
	addr := serve(t, echo)
	r, err := ConnRate(context.Background(), ConnRateConfig{
		Addrs: []string{addr}, Concurrency: 4, Warmup: 50 * time.Millisecond, Duration: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Conns == 0 || r.Errors != 0 || r.AllConns < r.Conns || r.Latency.Count != r.Conns {
		t.Fatalf("%+v", r)
	}
	t.Logf("%.0f conns/s, p99 %.0fµs", r.PerSecond, r.Latency.P99Us)
}

func TestRROpenLoop(t *testing.T) {
	addr := serve(t, echo)
	r, err := RR(context.Background(), RRConfig{
		Addrs: []string{addr}, Conns: 4, Rate: 2000, Warmup: 50 * time.Millisecond, Duration: 500 * time.Millisecond, Echo: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	// 1000 slots in the window; allow for the odd missed one on a busy box.
	if r.Errors != 0 || r.Requests+r.Missed < 990 || r.Requests+r.Missed > 1010 {
		t.Fatalf("%+v", r)
	}
	t.Logf("achieved %.0f/s, p50 %.0fµs p99 %.0fµs, pacing late p50 %.0fµs", r.Achieved, r.Latency.P50Us, r.Latency.P99Us, r.PacingLate.P50Us)
}

// A server that stalls for 100ms once: with coordinated omission handled,
// the requests scheduled during the stall show it in the tail.
func TestRROpenLoopStall(t *testing.T) {
	addr := serve(t, func(c net.Conn) {
		buf := make([]byte, 64)
		for n := 0; ; n++ {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if n == 100 {
				time.Sleep(100 * time.Millisecond)
			}
			c.Write(buf)
		}
	})
	r, err := RR(context.Background(), RRConfig{
		Addrs: []string{addr}, Conns: 1, Rate: 1000, Duration: 500 * time.Millisecond, Echo: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	// ~100 of 500 requests were due during the stall: p90 must be well above 10ms.
	if r.Latency.P90Us < 10000 || r.Latency.MaxUs < 90000 {
		t.Fatalf("stall hidden: %+v", r.Latency)
	}
}

func TestRRClosedLoop(t *testing.T) {
	addr := serve(t, echo)
	r, err := RR(context.Background(), RRConfig{Addrs: []string{addr}, Conns: 2, Duration: 200 * time.Millisecond, Echo: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests == 0 || r.Errors != 0 {
		t.Fatalf("%+v", r)
	}
}

func TestBulkAndIdle(t *testing.T) {
	src := serve(t, func(c net.Conn) {
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	r, err := Bulk(context.Background(), BulkConfig{Addrs: []string{src}, Streams: 2, Warmup: 50 * time.Millisecond, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Bytes == 0 || r.Errors != 0 {
		t.Fatalf("%+v", r)
	}
	addr := serve(t, echo)
	set, ir, err := OpenIdle(context.Background(), IdleConfig{Addrs: []string{addr}, N: 100, Concurrency: 8})
	if err != nil || ir.Open != 100 {
		t.Fatalf("%+v %v", ir, err)
	}
	set.Close()
}
