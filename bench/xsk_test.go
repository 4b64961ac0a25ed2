package bench

// Raw frame rates on one veth pair, AF_XDP against the kernel's own path.
// See the package doc for what each number means.

import (
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/internal/lab"
	"github.com/xdproxy/xdproxy/xsk"
)

var (
	rawGenPrefix = netip.MustParsePrefix("10.78.0.1/24") // peer (traffic generator / sink)
	rawDUTPrefix = netip.MustParsePrefix("10.78.0.2/24") // proxy end (device under test)
)

const (
	// spinFor is how long a receiver keeps looking at an empty ring or
	// socket before it blocks, the same for both paths (the shard loop's
	// default SpinLimit).
	spinFor = 50 * time.Microsecond
	// blockFor bounds one blocking wait of a receiver.
	blockFor = 10 * time.Millisecond
	// sendLimit bounds one sub-benchmark run's sending.
	sendLimit = 60 * time.Second
)

// rawLab is two namespaces joined by one veth pair: gen/g0 (the peer) and
// dut/p0 (the proxy end).
type rawLab struct {
	gen, dut *lab.NS
	veth     *lab.Veth
	g0, p0   *lab.End
}

func newRawLab(b *testing.B) *rawLab {
	b.Helper()
	lab.RequireRoot(b)
	l, err := lab.New(b)
	if err != nil {
		b.Fatal(err)
	}
	r := &rawLab{gen: newNS(b, l, "gen"), dut: newNS(b, l, "dut")}
	r.veth, err = l.Link(r.gen, "g0", r.dut, "p0", lab.LinkOpts{
		AAddrs: []netip.Prefix{rawGenPrefix}, BAddrs: []netip.Prefix{rawDUTPrefix},
	})
	if err != nil {
		b.Fatal(err)
	}
	r.g0, r.p0 = r.veth.A, r.veth.B
	return r
}

// openXSK opens an AF_XDP socket on queue 0 of p0 (copy mode: veth has no
// zero-copy), closed at cleanup.
func (r *rawLab) openXSK(b *testing.B) *xsk.Socket {
	b.Helper()
	var s *xsk.Socket
	err := r.dut.Do(func() (err error) {
		s, err = xsk.Open(r.p0.Index, 0, xsk.Config{ZeroCopy: xsk.ZeroCopyOff})
		return err
	})
	if err != nil {
		b.Fatalf("opening the AF_XDP socket on %s: %v", r.p0.Name, err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// receiver is one receive path's consumer.
type receiver interface {
	// recv takes what is waiting, in one batch, and returns how many test
	// frames it got. With wait it may first block up to blockFor.
	recv(wait bool) int
}

type xskReceiver struct {
	s     *xsk.Socket
	descs []xsk.Desc
}

func (r *xskReceiver) recv(wait bool) int {
	n := r.s.Receive(r.descs)
	if n == 0 && wait {
		r.s.Poll(blockFor)
		n = r.s.Receive(r.descs)
	}
	got := 0
	for _, d := range r.descs[:n] {
		if isTestFrame(r.s.Frame(d)) {
			got++
		}
	}
	r.s.Recycle(r.descs[:n])
	return got
}

// udpReceiver reads a UDP socket with recvmmsg, batch datagrams per call;
// SO_RCVTIMEO bounds a blocking call.
type udpReceiver struct {
	fd int
	m  *mmsgBatch
}

func (r *udpReceiver) recv(wait bool) int {
	flags := unix.MSG_DONTWAIT
	if wait {
		flags = unix.MSG_WAITFORONE
	}
	n, e := recvmmsg(r.fd, r.m, flags)
	if e != 0 {
		return 0
	}
	got := 0
	for i := range n {
		if r.m.msgs[i].n == udpPayload {
			got++
		}
	}
	return got
}

// BenchmarkRawRX: frames/s received on the proxy end of a veth pair. The
// peer namespace blasts b.N 64-byte UDP frames with AF_PACKET sendmmsg
// (qdisc bypassed, 64 frames per call, refused calls retried). xsk: a
// redirect-all XDP program on p0 steers them into an AF_XDP socket (copy
// mode), drained in batches of 64. kernel: no XDP program; a UDP socket
// drains them with recvmmsg, 64 per call. Both receivers spin for 50µs on
// an empty ring/socket before blocking, on their own locked thread.
//
// frames/s is test frames received over the time from the first send to
// the last frame received; sent-frames/s is what the sender pushed (frames
// the kernel accepted per second of sending); lost-% the frames accepted
// but never received.
func BenchmarkRawRX(b *testing.B) {
	r := newRawLab(b)
	frame := udpFrame(r.p0.MAC, r.g0.MAC, rawGenPrefix.Addr(), rawDUTPrefix.Addr())
	sender := packetSocket(b, r.gen, r.g0.Index)
	send := newSendBatch(frame)

	sock := r.openXSK(b)
	xsks, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		b.Fatalf("creating the XSKMAP: %v", err)
	}
	b.Cleanup(func() { xsks.Close() })
	if err := xsks.Put(uint32(0), uint32(sock.FD())); err != nil {
		b.Fatalf("xsks[0] = %d: %v", sock.FD(), err)
	}
	prog := redirectAllProg(b, xsks)

	udp := udpSocket(b, r.dut, netip.AddrPortFrom(rawDUTPrefix.Addr(), benchPort), netip.AddrPort{})
	tv := unix.NsecToTimeval(blockFor.Nanoseconds())
	if err := unix.SetsockoptTimeval(udp, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		b.Fatal(err)
	}

	b.Run("xsk", func(b *testing.B) {
		lk := attachXDP(b, r.dut, prog, r.p0.Index)
		defer lk.Close()
		runRX(b, sender, send, &xskReceiver{s: sock, descs: make([]xsk.Desc, batch)})
	})
	b.Run("kernel", func(b *testing.B) {
		runRX(b, sender, send, &udpReceiver{fd: udp, m: newRecvBatch()})
	})
}

// runRX sends b.N frames from fd while rcv counts them on its own locked
// thread, and reports the rates.
func runRX(b *testing.B, fd int, m *mmsgBatch, rcv receiver) {
	for rcv.recv(false) > 0 { // leftovers of an earlier run
	}
	want := b.N
	var senderDone atomic.Bool
	type result struct {
		got  int
		last time.Time
	}
	ready := make(chan struct{})
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		close(ready)
		got, last := 0, time.Now()
		var idleSince time.Time
		wait := false
		for got < want {
			n := rcv.recv(wait)
			now := time.Now()
			if n > 0 {
				got += n
				last, idleSince, wait = now, time.Time{}, false
				continue
			}
			wait = now.Sub(last) > spinFor
			if senderDone.Load() {
				if idleSince.IsZero() {
					idleSince = now
				} else if now.Sub(idleSince) > 2*blockFor {
					break
				}
			}
		}
		res <- result{got, last}
	}()
	<-ready
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	refused, err := sendAll(fd, m, want, sendLimit)
	sendDur := time.Since(t0)
	senderDone.Store(true)
	out := <-res
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if out.got == 0 {
		b.Fatalf("none of %d frames arrived", want)
	}
	b.ReportMetric(float64(out.got)/out.last.Sub(t0).Seconds(), "frames/s")
	b.ReportMetric(float64(want)/sendDur.Seconds(), "sent-frames/s")
	b.ReportMetric(100*float64(want-out.got)/float64(want), "lost-%")
	if refused > 0 && want > 1000 {
		b.Logf("N=%d: %d sendmmsg calls refused (ENOBUFS) and retried", want, refused)
	}
}

// BenchmarkRawTX: frames/s transmitted from the proxy end of the veth pair.
// The peer runs a count-and-drop XDP program, so that the far side costs
// the same for every sender and counts what actually crossed. xsk:
// NextFrame/Commit, Flush every 64 frames, completions reaped (copy mode).
// kernel: a connected UDP socket, sendmmsg of 64 datagrams (the same
// 64-byte frames on the wire). afpacket: an AF_PACKET socket, qdisc
// bypassed, sendmmsg of 64 prebuilt frames.
//
// frames/s is frames counted at the peer over the sending time (b.N frames,
// until the last completion for xsk); sent-frames/s is what the sending API
// accepted per second; lost-% the accepted frames that never reached the
// peer (a UDP socket without IP_RECVERR does not report ENOBUFS).
func BenchmarkRawTX(b *testing.B) {
	r := newRawLab(b)
	counter, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		b.Fatalf("creating the frame counter: %v", err)
	}
	b.Cleanup(func() { counter.Close() })
	lk := attachXDP(b, r.gen, countDropProg(b, counter), r.g0.Index)
	b.Cleanup(func() { lk.Close() })
	// The peer answers no ARP now.
	if err := r.dut.Neigh(r.p0.Name, rawGenPrefix.Addr(), r.g0.MAC); err != nil {
		b.Fatal(err)
	}

	frame := udpFrame(r.g0.MAC, r.p0.MAC, rawDUTPrefix.Addr(), rawGenPrefix.Addr())
	sock := r.openXSK(b)
	udp := udpSocket(b, r.dut, netip.AddrPortFrom(rawDUTPrefix.Addr(), benchPort), netip.AddrPortFrom(rawGenPrefix.Addr(), benchPort))
	udpBatch := newSendBatch(frame[42:])
	pkt := packetSocket(b, r.dut, r.p0.Index)
	pktBatch := newSendBatch(frame)

	b.Run("xsk", func(b *testing.B) {
		runTX(b, counter, func(n int) error { return xskSend(sock, frame, n, sendLimit) })
	})
	b.Run("kernel", func(b *testing.B) {
		runTX(b, counter, func(n int) error { _, err := sendAll(udp, udpBatch, n, sendLimit); return err })
	})
	b.Run("afpacket", func(b *testing.B) {
		runTX(b, counter, func(n int) error { _, err := sendAll(pkt, pktBatch, n, sendLimit); return err })
	})
}

// runTX times send(b.N) on a locked thread and reports the rates.
func runTX(b *testing.B, counter *ebpf.Map, send func(n int) error) {
	before := perCPUSum(b, counter)
	runtime.LockOSThread()
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	err := send(b.N)
	d := time.Since(t0)
	b.StopTimer()
	runtime.UnlockOSThread()
	if err != nil {
		b.Fatal(err)
	}
	// The peer's NAPI may still hold a ring's worth: wait until the count
	// settles.
	delivered := perCPUSum(b, counter) - before
	for stable, deadline := 0, time.Now().Add(200*time.Millisecond); stable < 5 && time.Now().Before(deadline) && delivered < uint64(b.N); {
		time.Sleep(time.Millisecond)
		if n := perCPUSum(b, counter) - before; n != delivered {
			delivered, stable = n, 0
		} else {
			stable++
		}
	}
	b.ReportMetric(float64(delivered)/d.Seconds(), "frames/s")
	b.ReportMetric(float64(b.N)/d.Seconds(), "sent-frames/s")
	b.ReportMetric(100*(float64(b.N)-float64(delivered))/float64(b.N), "lost-%")
}

// xskSend transmits total copies of frame through s and waits until the
// kernel has completed them all. It allocates nothing.
func xskSend(s *xsk.Socket, frame []byte, total int, limit time.Duration) error {
	st, err := s.Stats()
	if err != nil {
		return err
	}
	done0 := st.Completed
	deadline := time.Now().Add(limit)
	for sent, iter := 0, 0; sent < total; iter++ {
		for i := 0; i < batch && sent < total; i++ {
			f := s.NextFrame()
			if f == nil {
				break
			}
			copy(f, frame)
			s.Commit(len(frame))
			sent++
		}
		if err := s.Flush(); err != nil {
			return err
		}
		s.Complete()
		if iter&1023 == 1023 && time.Now().After(deadline) {
			return errTimeout(sent, total, limit)
		}
	}
	for spins := 0; ; spins++ {
		if err := s.Flush(); err != nil {
			return err
		}
		s.Complete()
		if st, err = s.Stats(); err != nil {
			return err
		}
		if st.Completed-done0 >= uint64(total) {
			return nil
		}
		if spins&1023 == 1023 && time.Now().After(deadline) {
			return errTimeout(int(st.Completed-done0), total, limit)
		}
	}
}
