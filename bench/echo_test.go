package bench

// Echo request/response over kept-alive TCP connections: xdproxy's engine
// against the kernel's TCP, the Linux kernel as the client of both. See the
// package doc.

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/bpf"
	"github.com/xdproxy/xdproxy/internal/lab"
	"github.com/xdproxy/xdproxy/proxy/dataplane"
	"github.com/xdproxy/xdproxy/stack"
)

var (
	// c0 ⇄ p0 carries the engine's echo server (XDP and AF_XDP on p0).
	engCliPrefix = netip.MustParsePrefix("10.79.0.1/24")
	engPrxPrefix = netip.MustParsePrefix("10.79.0.2/24")
	// c1 ⇄ p1 carries the kernel's (no XDP anywhere).
	kerCliPrefix = netip.MustParsePrefix("10.79.1.1/24")
	kerPrxPrefix = netip.MustParsePrefix("10.79.1.2/24")
)

const (
	echoPort = 7
	msgSize  = 64
	parConns = 16
	// maxSamples bounds the latency sample of one run: every op is timed,
	// every stride-th kept.
	maxSamples = 1 << 18
	// opTimeout fails a run whose echo stalls.
	opTimeout = 10 * time.Second
)

// echoHandler is an echo server on the engine: what it reads it writes
// back, reading only as much as the send buffer takes (EventWritable
// resumes it), and it half-closes once the peer has and all is echoed.
type echoHandler struct {
	buf [64 << 10]byte
}

func (h *echoHandler) Acceptable(l *stack.Listener) {
	for c := l.Accept(); c != nil; c = l.Accept() {
		h.echo(c)
	}
}

func (h *echoHandler) ConnEvent(c *stack.Conn, ev stack.Events) {
	if ev&(stack.EventReset|stack.EventTimedOut|stack.EventClosed) != 0 {
		c.Close()
		return
	}
	h.echo(c)
}

func (h *echoHandler) echo(c *stack.Conn) {
	for {
		room := c.WriteSpace()
		if room == 0 {
			return
		}
		n, err := c.Read(h.buf[:min(room, len(h.buf))])
		if n > 0 {
			c.Write(h.buf[:n])
		}
		if err == io.EOF {
			c.CloseWrite()
			return
		}
		if err != nil || n == 0 {
			return
		}
	}
}

// kernelEcho is the same server on kernel sockets: one goroutine per
// connection, read then write back.
func kernelEcho(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// newEchoLab builds cli and prx with two identical veth pairs (checksum
// offload off on both, as xdproxy needs): the engine's echo server on
// p0 through dataplane.Start, the kernel's on p1. It returns the
// client's connections to each, parConns apiece, kept alive for the whole
// benchmark.
func newEchoLab(b *testing.B) map[string][]net.Conn {
	b.Helper()
	lab.RequireRoot(b)
	l, err := lab.New(b)
	if err != nil {
		b.Fatal(err)
	}
	cli, prx := newNS(b, l, "cli"), newNS(b, l, "prx")
	link := func(c, p string, cp, pp netip.Prefix) *lab.Veth {
		v, err := l.Link(cli, c, prx, p, lab.LinkOpts{
			AAddrs: []netip.Prefix{cp}, BAddrs: []netip.Prefix{pp}, DisableTxChecksum: true,
		})
		if err != nil {
			b.Fatal(err)
		}
		return v
	}
	v0 := link("c0", "p0", engCliPrefix, engPrxPrefix)
	link("c1", "p1", kerCliPrefix, kerPrxPrefix)
	engAddr := netip.AddrPortFrom(engPrxPrefix.Addr(), echoPort)
	kerAddr := netip.AddrPortFrom(kerPrxPrefix.Addr(), echoPort)

	var dp *dataplane.Dataplane
	err = prx.Do(func() (err error) {
		dp, err = dataplane.Start(dataplane.Config{
			Interfaces: []dataplane.InterfaceConfig{{Name: v0.B.Name, XDPMode: bpf.ModeAuto}},
			Listeners:  []netip.AddrPort{engAddr},
			NewHandler: func(*dataplane.Shard) stack.Handler { return &echoHandler{} },
			Logger:     slog.New(slog.DiscardHandler),
		})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := dp.Stop(); err != nil {
			b.Errorf("stopping the data plane: %v", err)
		}
	})

	ln, err := prx.ListenTCP(kerAddr.String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go kernelEcho(c)
		}
	}()

	conns := map[string][]net.Conn{}
	for path, addr := range map[string]netip.AddrPort{"engine": engAddr, "kernel": kerAddr} {
		for range parConns {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := cli.DialTCP(ctx, addr.String())
			cancel()
			if err != nil {
				b.Fatalf("%s: %v", path, err)
			}
			b.Cleanup(func() { c.Close() })
			conns[path] = append(conns[path], c)
		}
	}
	return conns
}

// BenchmarkEchoRR: request/response over kept-alive TCP connections, the
// client (Linux's TCP, Go's net package) in one namespace, the echo server
// in the other: engine (xdproxy's engine on AF_XDP, one shard) or kernel (a
// Go server on kernel sockets). Each op is one round trip of a 64-byte
// message, written and then read back in full (ping-pong); conns=1 is one
// connection, conns=16 sixteen connections each doing ping-pong at once
// (b.N round trips in all). rr/s is round trips per second; p50-µs and
// p99-µs are percentiles of the per-op round-trip times (up to 2^18 kept
// per run, evenly strided). Every echo is checked byte for byte.
func BenchmarkEchoRR(b *testing.B) {
	conns := newEchoLab(b)
	for _, n := range []int{1, parConns} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			for _, path := range []string{"engine", "kernel"} {
				b.Run(path, func(b *testing.B) { runRR(b, conns[path][:n]) })
			}
		})
	}
}

// runRR spreads b.N round trips over conns, one goroutine each, and reports
// the rate and latency percentiles.
func runRR(b *testing.B, conns []net.Conn) {
	k := len(conns)
	samples := make([][]time.Duration, k)
	errs := make([]error, k)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range conns {
		ops := b.N / k
		if i < b.N%k {
			ops++
		}
		stride := max(1, (ops*k+maxSamples-1)/maxSamples)
		samples[i] = make([]time.Duration, 0, ops/stride+1)
		wg.Go(func() {
			<-start
			samples[i], errs[i] = pingPong(c, i, ops, stride, samples[i])
		})
	}
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	close(start)
	wg.Wait()
	d := time.Since(t0)
	b.StopTimer()
	for i, err := range errs {
		if err != nil {
			b.Fatalf("connection %d: %v", i, err)
		}
	}
	var all []time.Duration
	for _, s := range samples {
		all = append(all, s...)
	}
	b.ReportMetric(float64(b.N)/d.Seconds(), "rr/s")
	reportLatency(b, all)
}

// pingPong does ops round trips on c, appending every stride-th round-trip
// time to sample. The message carries the connection and op number, so a
// stale or misplaced echo is caught.
func pingPong(c net.Conn, id, ops, stride int, sample []time.Duration) ([]time.Duration, error) {
	var out, in [msgSize]byte
	for i := range out {
		out[i] = byte(i)
	}
	binary.LittleEndian.PutUint64(out[0:], uint64(id))
	for i := range ops {
		if i&255 == 0 {
			if err := c.SetDeadline(time.Now().Add(opTimeout)); err != nil {
				return sample, err
			}
		}
		binary.LittleEndian.PutUint64(out[8:], uint64(i))
		t := time.Now()
		if _, err := c.Write(out[:]); err != nil {
			return sample, fmt.Errorf("round trip %d: write: %w", i, err)
		}
		if _, err := io.ReadFull(c, in[:]); err != nil {
			return sample, fmt.Errorf("round trip %d: read: %w", i, err)
		}
		rtt := time.Since(t)
		if in != out {
			return sample, fmt.Errorf("round trip %d: echo differs: sent % x, got % x", i, out[:16], in[:16])
		}
		if i%stride == 0 {
			sample = append(sample, rtt)
		}
	}
	return sample, nil
}
