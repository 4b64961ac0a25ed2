package bench

// Raw frame rates on one veth pair, AF_XDP against the kernel's own path.
// See the package doc for what each number means; the pieces are package
// rawxsk's, which the side-by-side harness shares.

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdproxy/xdproxy/bench/rawxsk"
	"github.com/xdproxy/xdproxy/internal/lab"
	"github.com/xdproxy/xdproxy/xsk"
)

var (
	rawGenPrefix = netip.MustParsePrefix("10.78.0.1/24") // peer (traffic generator / sink)
	rawDUTPrefix = netip.MustParsePrefix("10.78.0.2/24") // proxy end (device under test)
)

// sendLimit bounds one sub-benchmark run's sending.
const sendLimit = 60 * time.Second

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
	s, err := rawxsk.OpenXSK(r.dut, r.p0.Index, 0)
	return closed(b, s, err)
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
	frame := rawxsk.UDPFrame(r.p0.MAC, r.g0.MAC, rawGenPrefix.Addr(), rawDUTPrefix.Addr())
	sender := packetSocket(b, r.gen, r.g0.Index)
	send := rawxsk.NewSendBatch(frame)

	sock := r.openXSK(b)
	xsks, err := rawxsk.NewXSKMap(1)
	closed(b, xsks, err)
	if err := xsks.Put(uint32(0), uint32(sock.FD())); err != nil {
		b.Fatalf("xsks[0] = %d: %v", sock.FD(), err)
	}
	prog, err := rawxsk.RedirectAll(xsks)
	closed(b, prog, err)

	udp := udpSocket(b, r.dut, netip.AddrPortFrom(rawDUTPrefix.Addr(), rawxsk.Port), netip.AddrPort{})
	udpRecv, err := rawxsk.NewUDPReceiver(udp)
	if err != nil {
		b.Fatal(err)
	}

	b.Run("xsk", func(b *testing.B) {
		lk := attachXDP(b, r.dut, prog, r.p0.Index)
		defer lk.Close()
		runRX(b, sender, send, rawxsk.NewXSKReceiver(sock))
	})
	b.Run("kernel", func(b *testing.B) {
		runRX(b, sender, send, udpRecv)
	})
}

// runRX sends b.N frames from fd while rcv counts them on its own locked
// thread, and reports the rates.
func runRX(b *testing.B, fd int, m *rawxsk.MsgBatch, rcv rawxsk.Receiver) {
	want := b.N
	var senderDone atomic.Bool
	res := rawxsk.StartReceiving(rcv, want, &senderDone)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	sent, refused, err := rawxsk.Send(fd, m, want, t0.Add(sendLimit))
	sendDur := time.Since(t0)
	senderDone.Store(true)
	out := <-res
	b.StopTimer()
	if err == nil && sent < want {
		err = errTimeout(sent, want)
	}
	if err != nil {
		b.Fatal(err)
	}
	if out.Frames == 0 {
		b.Fatalf("none of %d frames arrived", want)
	}
	b.ReportMetric(float64(out.Frames)/out.Last.Sub(t0).Seconds(), "frames/s")
	b.ReportMetric(float64(want)/sendDur.Seconds(), "sent-frames/s")
	b.ReportMetric(100*float64(want-out.Frames)/float64(want), "lost-%")
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
	counter, err := rawxsk.NewCounter()
	closed(b, counter, err)
	prog, err := rawxsk.CountDrop(counter)
	closed(b, prog, err)
	attachXDP(b, r.gen, prog, r.g0.Index)
	// The peer answers no ARP now.
	if err := r.dut.Neigh(r.p0.Name, rawGenPrefix.Addr(), r.g0.MAC); err != nil {
		b.Fatal(err)
	}

	frame := rawxsk.UDPFrame(r.g0.MAC, r.p0.MAC, rawDUTPrefix.Addr(), rawGenPrefix.Addr())
	sock := r.openXSK(b)
	udp := udpSocket(b, r.dut, netip.AddrPortFrom(rawDUTPrefix.Addr(), rawxsk.Port), netip.AddrPortFrom(rawGenPrefix.Addr(), rawxsk.Port))
	udpBatch := rawxsk.NewSendBatch(frame[rawxsk.HeaderLen:])
	pkt := packetSocket(b, r.dut, r.p0.Index)
	pktBatch := rawxsk.NewSendBatch(frame)

	b.Run("xsk", func(b *testing.B) {
		runTX(b, counter, func(n int, until time.Time) (int, error) { return rawxsk.XSKSend(sock, frame, n, until) })
	})
	b.Run("kernel", func(b *testing.B) {
		runTX(b, counter, func(n int, until time.Time) (int, error) {
			sent, _, err := rawxsk.Send(udp, udpBatch, n, until)
			return sent, err
		})
	})
	b.Run("afpacket", func(b *testing.B) {
		runTX(b, counter, func(n int, until time.Time) (int, error) {
			sent, _, err := rawxsk.Send(pkt, pktBatch, n, until)
			return sent, err
		})
	})
}

// runTX times send(b.N) on a locked thread and reports the rates.
func runTX(b *testing.B, counter *ebpf.Map, send func(n int, until time.Time) (sent int, err error)) {
	before, err := rawxsk.Count(counter)
	if err != nil {
		b.Fatal(err)
	}
	runtime.LockOSThread()
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	sent, err := send(b.N, t0.Add(sendLimit))
	d := time.Since(t0)
	b.StopTimer()
	runtime.UnlockOSThread()
	if err == nil && sent < b.N {
		err = errTimeout(sent, b.N)
	}
	if err != nil {
		b.Fatal(err)
	}
	delivered, err := rawxsk.Settle(counter, before, uint64(b.N))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(delivered)/d.Seconds(), "frames/s")
	b.ReportMetric(float64(b.N)/d.Seconds(), "sent-frames/s")
	b.ReportMetric(100*(float64(b.N)-float64(delivered))/float64(b.N), "lost-%")
}

func errTimeout(done, total int) error {
	return fmt.Errorf("only %d of %d frames sent in %v", done, total, sendLimit)
}
