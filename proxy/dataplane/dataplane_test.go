package dataplane

// Real packets, the real kernel as the peer: a network namespace lab with a
// veth pair, the XDP program and AF_XDP sockets on the proxy end, an echo
// server running on the engine, and Linux's TCP as the client. These need
// root; under CI=true a skip is a failure (lab.RequireRoot).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/bpf"
	"github.com/xdproxy/xdproxy/internal/lab"
	"github.com/xdproxy/xdproxy/stack"
)

var (
	clientPrefix = netip.MustParsePrefix("10.77.0.1/24")
	proxyPrefix  = netip.MustParsePrefix("10.77.0.2/24")
	echoAddr     = netip.AddrPortFrom(proxyPrefix.Addr(), 7)
)

type echoLab struct {
	lab    *lab.Lab
	client *lab.NS
	proxy  *lab.NS
	veth   *lab.Veth
	dp     *Dataplane
}

// newEchoLab builds client ⇄ proxy namespaces and starts the data plane
// with an echo server on every shard.
func newEchoLab(t *testing.T, queues int, mutate func(*Config)) *echoLab {
	t.Helper()
	el := newLabLink(t, queues)
	el.start(t, mutate)
	return el
}

// start starts the data plane on the proxy's veth with an echo server on
// every shard.
func (el *echoLab) start(t *testing.T, mutate func(*Config)) {
	t.Helper()
	cfg := Config{
		Interfaces:  []InterfaceConfig{{Name: el.veth.B.Name, XDPMode: bpf.ModeAuto}},
		Listeners:   []netip.AddrPort{echoAddr},
		SourceAddrs: []netip.Addr{proxyPrefix.Addr()},
		NewHandler:  func(*Shard) stack.Handler { return &echoApp{} },
	}
	if mutate != nil {
		mutate(&cfg)
	}
	err := el.proxy.Do(func() error {
		var err error
		el.dp, err = Start(cfg)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := el.dp.Stop(); err != nil {
			t.Errorf("stopping the data plane: %v", err)
		}
	})
}

// newLabLink builds the client ⇄ proxy namespaces and the veth pair
// between them (c0 10.77.0.1, p0 10.77.0.2), with no data plane yet.
func newLabLink(t *testing.T, queues int) *echoLab {
	t.Helper()
	return newLabLinkMTU(t, queues, 0)
}

// newLabLinkMTU is newLabLink with both ends at mtu (0: the default).
func newLabLinkMTU(t *testing.T, queues, mtu int) *echoLab {
	t.Helper()
	lab.RequireRoot(t)
	l, err := lab.New(t)
	if err != nil {
		t.Fatal(err)
	}
	client, proxy, v, err := l.Pair("client", "c0", "proxy", "p0", lab.LinkOpts{
		Queues: queues, MTU: mtu, AAddrs: []netip.Prefix{clientPrefix}, BAddrs: []netip.Prefix{proxyPrefix},
		// The client kernel's frames must carry full checksums for the engine
		// (see internal/lab's package doc on CHECKSUM_PARTIAL over veth).
		DisableTxChecksum: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &echoLab{lab: l, client: client, proxy: proxy, veth: v}
}

func (el *echoLab) dial(t testing.TB) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := el.client.DialTCP(ctx, echoAddr.String())
	if err != nil {
		t.Fatalf("dial %v: %v", echoAddr, err)
	}
	return c
}

// roundTrip sends msg on a new connection, half-closes, reads the echo to EOF.
func (el *echoLab) roundTrip(t testing.TB, msg []byte) error {
	c := el.dial(t)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return echoExchange(c, msg)
}

// echoExchange sends msg on c, half-closes, and reads the echo to EOF.
func echoExchange(c net.Conn, msg []byte) error {
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return fmt.Errorf("close-write: %w", err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo of %d bytes came back as %d bytes", len(msg), len(got))
	}
	return nil
}

func TestLabSequentialConnections(t *testing.T) {
	el := newEchoLab(t, 1, nil)
	for i := 0; i < 1000; i++ {
		if err := el.roundTrip(t, []byte(fmt.Sprintf("hello %d", i))); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	el.logCounters(t)
}

func TestLabConcurrentConnections(t *testing.T) {
	el := newEchoLab(t, 1, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := bytes.Repeat([]byte{byte(i)}, 1000+i*37)
			if err := el.roundTrip(t, msg); err != nil {
				errs <- fmt.Errorf("connection %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// bulk sends size bytes each way at once over one connection and checks both
// directions' sha256.
func (el *echoLab) bulk(t *testing.T, size int) {
	c := el.dial(t)
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	// ChaCha8's Read fills at GB/s: the generator must not be what bounds
	// the throughput measured.
	rng := rand.NewChaCha8([32]byte{1, 2})
	sent := sha256.New()
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 256<<10)
		left := size
		for left > 0 {
			n := min(left, len(buf))
			rng.Read(buf[:n])
			sent.Write(buf[:n])
			if _, err := c.Write(buf[:n]); err != nil {
				done <- fmt.Errorf("write: %w", err)
				return
			}
			left -= n
		}
		done <- c.(*net.TCPConn).CloseWrite()
	}()
	got := sha256.New()
	n, err := io.Copy(got, c)
	if err != nil {
		t.Fatalf("read after %d bytes: %v", n, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n != int64(size) || !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		t.Fatalf("echoed %d of %d bytes; sha256 match %v", n, size, bytes.Equal(got.Sum(nil), sent.Sum(nil)))
	}
}

func TestLabBulk64MiB(t *testing.T) {
	el := newEchoLab(t, 1, nil)
	start := time.Now()
	el.bulk(t, 64<<20)
	t.Logf("64 MiB each way in %v", time.Since(start))
	el.logCounters(t)
}

func TestLabBulk64MiBWithLoss(t *testing.T) {
	el := newEchoLab(t, 1, nil)
	// 2% random loss on the client's side, both directions (iptables statistic).
	if _, err := el.client.Loss(el.veth.A.Name, 2, lab.Both); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	el.bulk(t, 64<<20)
	t.Logf("64 MiB each way under 2%% loss in %v", time.Since(start))
	el.logCounters(t)
}

func (el *echoLab) logCounters(t *testing.T) {
	var b strings.Builder
	for _, s := range el.dp.Shards() {
		s.Do(func(s *Shard) {
			snap := s.Engine().Counters().Snapshot(make([]uint64, stack.NumCounters))
			fmt.Fprintf(&b, "shard %d:", s.ID())
			for i, v := range snap {
				if v != 0 {
					fmt.Fprintf(&b, " %s=%d", stack.Counter(i), v)
				}
			}
			fmt.Fprintf(&b, " handoffs_in=%d handoffs_out=%d\n", s.Stats().HandoffsIn.Load(), s.Stats().HandoffsOut.Load())
		})
	}
	t.Log(b.String())
}

var _ = os.Getenv

// dialResult is what an engine-side active open saw.
type dialResult struct {
	got []byte
	err error
}

// engineDial opens a connection from the engine on shard s to the kernel
// server at dst, sends msg, half-closes, and collects the reply to EOF.
func engineDial(s *Shard, dst netip.AddrPort, msg []byte, done chan<- dialResult) {
	engineDialFrom(s, proxyPrefix.Addr(), dst, msg, done)
}

// engineDialFrom is engineDial from src (invalid: the engine's choice).
func engineDialFrom(s *Shard, src netip.Addr, dst netip.AddrPort, msg []byte, done chan<- dialResult) {
	s.Do(func(s *Shard) {
		var got []byte
		buf := make([]byte, 64<<10)
		var sent bool
		fn := connFunc(func(c *stack.Conn, ev stack.Events) {
			if ev&(stack.EventConnectFailed|stack.EventReset|stack.EventTimedOut) != 0 {
				done <- dialResult{got, fmt.Errorf("%v: %v", ev, c.Err())}
				c.Close()
				return
			}
			if ev&stack.EventConnected != 0 && !sent {
				sent = true
				c.Write(msg)
				c.CloseWrite()
			}
			for {
				n, err := c.Read(buf)
				got = append(got, buf[:n]...)
				if err == io.EOF {
					done <- dialResult{got, nil}
					c.Close()
					return
				}
				if err != nil || n == 0 {
					return
				}
			}
		})
		c, err := s.Engine().Dial(s.Now(), src, dst)
		if err != nil {
			done <- dialResult{nil, err}
			return
		}
		c.User = fn
	})
}

// TestLabActiveOpen is TCP-SCENARIOS 2 on the wire: the engine dials the
// kernel (a backend leg), sends, half-closes, and reads the reply to EOF.
// The request, written as the connection opens, rides on the third segment.
func TestLabActiveOpen(t *testing.T) {
	el := newEchoLab(t, 1, nil)
	el.client.EchoTCP(t, "10.77.0.1:9000")
	pcap := filepath.Join(t.TempDir(), "active.pcap")
	stopCap, err := el.client.Capture(context.Background(), el.veth.A.Name, "tcp port 9000", pcap)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan dialResult, 1)
	for i := 0; i < 50; i++ {
		msg := []byte(fmt.Sprintf("request %d from the engine", i))
		engineDial(el.dp.Shards()[0], netip.MustParseAddrPort("10.77.0.1:9000"), msg, done)
		select {
		case r := <-done:
			if r.err != nil || !bytes.Equal(r.got, msg) {
				t.Fatalf("dial %d: got %q, err %v", i, r.got, r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("dial %d: no answer", i)
		}
	}
	el.logCounters(t)
	if err := stopCap(); err != nil {
		t.Fatal(err)
	}
	// The first connection on the wire: SYN(x), SYN-ACK, then the third
	// segment at x+1 carrying the request: it was written on
	// EventConnected, in the burst that brought the SYN-ACK, so the ACK
	// waited for it (stack's TestThirdACKCarriesBurstData) and no bare ACK
	// went ahead of it.
	segs := readCapture(t, pcap)
	if len(segs) < 3 {
		t.Fatalf("captured %d segments", len(segs))
	}
	syn, synack, third := segs[0], segs[1], segs[2]
	x := syn.tcp.Seq
	if syn.fromClient || !syn.tcp.SYN || syn.tcp.ACK || !synack.tcp.SYN || !synack.tcp.ACK || synack.tcp.Ack != x+1 {
		t.Fatalf("handshake on the wire: %+v / %+v", syn.tcp.BaseLayer.Contents, synack.tcp.BaseLayer.Contents)
	}
	want := len("request 0 from the engine")
	if third.fromClient || third.tcp.SYN || !third.tcp.ACK || third.payload != want || third.tcp.Seq != x+1 || third.tcp.Ack != synack.tcp.Seq+1 {
		t.Errorf("third segment: seq=x+%d ack=y+%d len=%d, want the request's %d bytes at x+1, y+1", third.tcp.Seq-x, third.tcp.Ack-synack.tcp.Seq, third.payload, want)
	}
}

// TestLabTwoQueues: a 2-queue veth with both queues in use. Client flows
// land on both queues; the engine's own connections (backend legs) pick
// source ports by shard, and replies that the kernel sends on the other
// queue are handed to the owning shard through the SPSC rings, counted.
func TestLabTwoQueues(t *testing.T) {
	el := newEchoLab(t, 2, nil)
	if n := len(el.dp.Shards()); n != 2 {
		t.Fatalf("%d shards, want 2", n)
	}
	// Client flows.
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := el.roundTrip(t, []byte(fmt.Sprintf("flow %d", i))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// Client flows stay on the queue they arrive on (the client socket's
	// hash picks it) and are held by that queue's shard: none of their
	// segments cross shards (a re-randomised hash, on an RTO, would).
	var rx, out uint64
	for _, s := range el.dp.Shards() {
		rx += s.Stats().RxFrames.Load()
		out += s.Stats().HandoffsOut.Load()
	}
	t.Logf("client flows: %d frames received, %d handed to another shard", rx, out)
	if out*20 > rx {
		t.Errorf("client flows: %d of %d frames handed off, want under 5%% (by a hash of the address, half were)", out, rx)
	}
	// Engine-side flows from both shards.
	el.client.EchoTCP(t, "10.77.0.1:9000")
	done := make(chan dialResult, 200)
	for i := 0; i < 100; i++ {
		engineDial(el.dp.Shards()[i%2], netip.MustParseAddrPort("10.77.0.1:9000"), []byte("x"), done)
	}
	for i := 0; i < 100; i++ {
		select {
		case r := <-done:
			if r.err != nil || string(r.got) != "x" {
				t.Fatalf("engine dial: got %q, err %v", r.got, r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("engine dial: no answer")
		}
	}
	var handoffs uint64
	for _, s := range el.dp.Shards() {
		st := s.Stats()
		t.Logf("shard %d (queue %d): rx_frames=%d handoffs_out=%d handoffs_in=%d drops=%d",
			s.ID(), s.Queue(0), st.RxFrames.Load(), st.HandoffsOut.Load(), st.HandoffsIn.Load(), st.HandoffDrops.Load())
		if st.RxFrames.Load() == 0 {
			t.Errorf("queue %d received nothing: both queues must be in use", s.Queue(0))
		}
		handoffs += st.HandoffsOut.Load()
	}
	if handoffs == 0 {
		t.Error("no hand-offs counted: every reply landed on its owner's queue (possible, but then the test shows nothing)")
	}
}

// TestLabIdleCPU measures the daemon's CPU use while idle: the shards must
// sleep in poll, not spin.
func TestLabIdleCPU(t *testing.T) {
	el := newEchoLab(t, 2, nil)
	if err := el.roundTrip(t, []byte("warm up")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	before := cpuTime(t)
	start := time.Now()
	time.Sleep(3 * time.Second)
	used := cpuTime(t) - before
	frac := used.Seconds() / time.Since(start).Seconds()
	t.Logf("idle data plane (2 shards): %.2f%% of one core (%v CPU in %v)", 100*frac, used, time.Since(start).Round(time.Millisecond))
	if frac > 0.05 {
		t.Errorf("idle CPU %.1f%% of a core, want about 0", 100*frac)
	}
	var sleeps uint64
	for _, s := range el.dp.Shards() {
		sleeps += s.Stats().Sleeps.Load()
	}
	if sleeps == 0 {
		t.Error("the shards never slept")
	}
}

func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestLabEngineOwnedAddress: a listener address the kernel does not have.
// The engine answers ARP and ping for it (the XDP program steers them), and
// serves TCP on it.
func TestLabEngineOwnedAddress(t *testing.T) {
	vip := netip.MustParseAddrPort("10.77.0.100:7")
	el := newEchoLab(t, 1, func(cfg *Config) {
		cfg.Listeners = append(cfg.Listeners, vip)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := lab.EnsureTools("ping:iputils-ping"); err != nil {
		t.Fatal(err)
	}
	if out, err := el.client.Run(ctx, "ping", "-c", "2", "-i", "0.2", "-W", "2", vip.Addr().String()); err != nil {
		t.Fatalf("ping %v (answered by the engine): %v\n%s", vip.Addr(), err, out)
	}
	c, err := el.client.DialTCP(ctx, vip.String())
	if err != nil {
		t.Fatalf("dial %v: %v", vip, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("via the engine's own address"))
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "via the engine's own address" {
		t.Fatalf("echo: %q, %v", got, err)
	}
	var arp, echo uint64
	el.dp.Shards()[0].Do(func(s *Shard) {
		arp = s.Engine().Counters().Load(stack.ARPRepliesOut)
		echo = s.Engine().Counters().Load(stack.ICMPEchoReplies)
	})
	if arp == 0 || echo == 0 {
		t.Errorf("engine answered %d ARP requests and %d pings, want both > 0", arp, echo)
	}
}
