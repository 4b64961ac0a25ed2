package xsk

import (
	"fmt"
	"runtime"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asavie/xdp"
	"golang.org/x/sys/unix"
)

// The veth benchmarks run inside a lab with two queues per end. Queue 0 of
// xa belongs to our Socket, queue 1 to asavie/xdp's; each xb queue carries
// one of our Sockets as a traffic generator, and the XDP program on xa
// steers each xb queue's frames into the matching xa socket. Both libraries
// therefore see the same kernel path; only the userspace side differs.
//
//	go test ./xsk/ -run '^$' -bench 'Veth|AsavieVsXSK|Alloc' -benchtime 5x

// benchConfig is the default socket shape: 4096 frames, 2048-entry rings.
var benchConfig = Config{}

const benchBatch = 64

// spinsBeforePoll is how many empty looks at the RX ring a receiver makes
// before it sleeps in poll(2), the same for both libraries: a shard spins
// briefly before paying for a sleep and a wakeup.
const spinsBeforePoll = 4096

// threadCPU returns the CPU time the calling thread has used.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// generate transmits total test frames on g as fast as the kernel takes
// them, then waits until all are completed. It allocates nothing.
func generate(g *Socket, total int, dst, src []byte) {
	var tmpl [64]byte
	n := testFrame(tmpl[:], dst, src, 0)
	sent := 0
	start := g.ctr.completed
	for sent < total {
		for i := 0; i < benchBatch && sent < total; i++ {
			f := g.NextFrame()
			if f == nil {
				break
			}
			copy(f, tmpl[:n])
			f[21] = byte(sent)
			g.Commit(n)
			sent++
		}
		_ = g.Flush()
		g.Complete()
	}
	for g.ctr.completed-start < uint64(total) {
		_ = g.Flush()
		if g.Complete() == 0 {
			runtime.Gosched()
		}
	}
}

// rxResult is one receive phase: frames received, wall time from the start
// of generation to the last frame, and the receiving thread's CPU time.
type rxResult struct {
	frames int
	wall   time.Duration
	cpu    time.Duration
}

// receiveLoop runs recv (one library's receive step, returning how many
// frames it consumed, waiting up to 10 ms when there are none) on a locked
// thread while gen sends total frames, and stops when all arrived or the
// generator is done and 50 ms pass without a frame.
func receiveLoop(total int, gen func(), recv func() int) rxResult {
	var genDone atomic.Bool
	res := make(chan rxResult)
	ready := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		<-ready
		cpu0 := threadCPU()
		start := time.Now()
		got, last := 0, start
		idleSince := time.Time{}
		for got < total {
			n := recv()
			if n > 0 {
				got += n
				last = time.Now()
				idleSince = time.Time{}
				continue
			}
			if genDone.Load() {
				if idleSince.IsZero() {
					idleSince = time.Now()
				} else if time.Since(idleSince) > 50*time.Millisecond {
					break
				}
			}
		}
		res <- rxResult{frames: got, wall: last.Sub(start), cpu: threadCPU() - cpu0}
	}()
	runtime.LockOSThread()
	close(ready)
	gen()
	genDone.Store(true)
	runtime.UnlockOSThread()
	return <-res
}

// oursRx returns a receive step for our socket.
func oursRx(s *Socket) func() int {
	descs := make([]Desc, benchBatch)
	var sink byte
	spins := 0
	return func() int {
		n := s.Receive(descs)
		if n == 0 {
			if spins++; spins >= spinsBeforePoll {
				spins = 0
				_, _ = s.Poll(10 * time.Millisecond)
			}
			return 0
		}
		for _, d := range descs[:n] {
			sink += s.Frame(d)[21]
		}
		s.Recycle(descs[:n])
		return n
	}
}

// asavieRx returns the receive step asavie/xdp's documentation shows:
// refill from GetDescs, Poll, Receive.
func asavieRx(x *xdp.Socket) func() int {
	var sink byte
	spins := 0
	return func() int {
		x.Fill(x.GetDescs(x.NumFreeFillSlots()))
		n := x.NumReceived()
		if n == 0 {
			if spins++; spins < spinsBeforePoll {
				return 0
			}
			spins = 0
			n, _, _ = x.Poll(10)
			if n == 0 {
				return 0
			}
		}
		descs := x.Receive(n)
		for _, d := range descs {
			sink += x.GetFrame(d)[21]
		}
		return len(descs)
	}
}

// oursTx transmits total frames on s and waits for their completions; it
// returns the wall time (the sending thread never sleeps).
func oursTx(s *Socket, total int, dst, src []byte) time.Duration {
	start := time.Now()
	generate(s, total, dst, src)
	return time.Since(start)
}

// asavieTx does the same with asavie/xdp: GetDescs, write, Transmit (which
// kicks every call), Complete.
func asavieTx(x *xdp.Socket, total int, dst, src []byte) time.Duration {
	var tmpl [64]byte
	n := testFrame(tmpl[:], dst, src, 0)
	start := time.Now()
	sent, done := 0, 0
	for sent < total {
		descs := x.GetDescs(min(benchBatch, x.NumFreeTxSlots(), total-sent))
		for i := range descs {
			descs[i].Len = uint32(n)
			f := x.GetFrame(descs[i])
			copy(f, tmpl[:n])
			f[21] = byte(sent + i)
		}
		sent += x.Transmit(descs)
		if c := x.NumCompleted(); c > 0 {
			x.Complete(c)
			done += c
		}
	}
	for done < total {
		x.Transmit(nil)
		if c := x.NumCompleted(); c > 0 {
			x.Complete(c)
			done += c
		}
	}
	return time.Since(start)
}

// asavieTxSink transmits total frames the way a one-frame-at-a-time sink
// (stack.Sink: NextFrame, Commit) must drive asavie/xdp: GetDescs(1) does
// not reserve the frame it returns, so each frame has to be handed to
// Transmit, and so to sendto, before the next GetDescs.
func asavieTxSink(x *xdp.Socket, total int, dst, src []byte) time.Duration {
	var tmpl [64]byte
	n := testFrame(tmpl[:], dst, src, 0)
	start := time.Now()
	sent, done := 0, 0
	for sent < total {
		if descs := x.GetDescs(1); len(descs) == 1 && x.NumFreeTxSlots() > 0 {
			descs[0].Len = uint32(n)
			f := x.GetFrame(descs[0])
			copy(f, tmpl[:n])
			f[21] = byte(sent)
			sent += x.Transmit(descs)
		}
		if c := x.NumCompleted(); c > 0 {
			x.Complete(c)
			done += c
		}
	}
	for done < total {
		x.Transmit(nil)
		if c := x.NumCompleted(); c > 0 {
			x.Complete(c)
			done += c
		}
	}
	return time.Since(start)
}

// drainFrames is how many frames a drain phase pre-loads: less than the
// 2048 frames either library keeps on its fill ring.
const drainFrames = 2000

// waitRx waits until ready() reports drainFrames frames waiting.
func waitRx(b *testing.B, ready func() int) {
	deadline := time.Now().Add(5 * time.Second)
	for ready() < drainFrames {
		if time.Now().After(deadline) {
			b.Fatalf("drain: only %d of %d frames arrived", ready(), drainFrames)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// drainOurs pre-loads our RX ring with drainFrames frames, then times
// Receive + Frame + Recycle in batches of 64 until it is empty: the
// userspace cost of receiving, without the kernel's.
func drainOurs(b *testing.B, l *benchLab) time.Duration {
	s := l.ours
	generate(l.gen[0], drainFrames, l.macA, l.macB)
	waitRx(b, func() int { return int(atomic.LoadUint32(s.rx.producer) - s.rx.cachedCons) })
	descs := make([]Desc, benchBatch)
	var sink byte
	start := time.Now()
	for got := 0; got < drainFrames; {
		n := s.Receive(descs)
		for _, d := range descs[:n] {
			sink += s.Frame(d)[21]
		}
		s.Recycle(descs[:n])
		got += n
	}
	return time.Since(start)
}

// drainAsavie does the same with asavie/xdp: Receive 64, then refill the
// fill ring with Fill(GetDescs(NumFreeFillSlots())).
func drainAsavie(b *testing.B, l *benchLab) time.Duration {
	x := l.asavie
	generate(l.gen[1], drainFrames, l.macA, l.macB)
	waitRx(b, x.NumReceived)
	var sink byte
	start := time.Now()
	for got := 0; got < drainFrames; {
		descs := x.Receive(benchBatch)
		for _, d := range descs {
			sink += x.GetFrame(d)[21]
		}
		got += len(descs)
		x.Fill(x.GetDescs(x.NumFreeFillSlots()))
	}
	return time.Since(start)
}

// benchLab opens the two sockets under test on xa and the two generators
// on xb.
type benchLab struct {
	*lab
	ours   *Socket
	asavie *xdp.Socket
	gen    [2]*Socket
}

func newBenchLab(b *testing.B) *benchLab {
	l := &benchLab{lab: newLab(b, 2)}
	l.ours = l.open(b, l.xa, 0, benchConfig)
	l.register(b, 0, l.ours.FD())
	var err error
	l.do(b, func() {
		l.asavie, err = xdp.NewSocket(l.xa, 1, &xdp.SocketOptions{
			NumFrames: 4096, FrameSize: 2048,
			FillRingNumDescs: 2048, CompletionRingNumDescs: 2048, RxRingNumDescs: 2048, TxRingNumDescs: 2048,
		})
	})
	if err != nil {
		b.Fatalf("asavie/xdp NewSocket: %v", err)
	}
	b.Cleanup(func() { l.asavie.Close() })
	// As its documentation does: half the frames on the fill ring.
	l.asavie.Fill(l.asavie.GetDescs(l.asavie.NumFreeFillSlots()))
	l.register(b, 1, l.asavie.FD())
	for q := range 2 {
		l.gen[q] = l.open(b, l.xb, q, benchConfig)
	}
	return l
}

// BenchmarkAsavieVsXSK runs both libraries on the same veth pair, phase by
// phase, alternating which goes first each round:
//
//   - rx: a generator streams framesPerPhase frames; frames/s is received
//     frames over wall time (the kernel's copy-mode path on a 2-vCPU
//     machine bounds it for both), plus frames dropped for lack of fill
//     entries;
//   - rx-drain: drainFrames frames wait in the RX ring, then the receiver
//     empties it and refills the fill ring: ns per frame of userspace work;
//   - tx: framesPerPhase frames built, queued, kicked and completed, in
//     batches of 64 (asavie: GetDescs(64) + Transmit): frames/s;
//   - tx-sink: the same one frame at a time, as stack.Sink drives it (ours:
//     NextFrame/Commit with a Flush per 64; asavie: GetDescs(1) + Transmit
//     per frame, since GetDescs does not reserve): frames/s.
func BenchmarkAsavieVsXSK(b *testing.B) {
	const framesPerPhase = 200_000
	const drainsPerRound = 20
	l := newBenchLab(b)
	var rxO, rxA, txO, txA, drO, drA, tsA []float64
	var dropO, dropA int
	for round := range b.N {
		phases := [][2]func(){
			{func() {
				r := receiveLoop(framesPerPhase, func() { generate(l.gen[0], framesPerPhase, l.macA, l.macB) }, oursRx(l.ours))
				rxO = append(rxO, float64(r.frames)/r.wall.Seconds())
				dropO += framesPerPhase - r.frames
			}, func() {
				r := receiveLoop(framesPerPhase, func() { generate(l.gen[1], framesPerPhase, l.macA, l.macB) }, asavieRx(l.asavie))
				rxA = append(rxA, float64(r.frames)/r.wall.Seconds())
				dropA += framesPerPhase - r.frames
			}},
			{func() {
				var d time.Duration
				for range drainsPerRound {
					d += drainOurs(b, l)
				}
				drO = append(drO, float64(d.Nanoseconds())/(drainsPerRound*drainFrames))
			}, func() {
				var d time.Duration
				for range drainsPerRound {
					d += drainAsavie(b, l)
				}
				drA = append(drA, float64(d.Nanoseconds())/(drainsPerRound*drainFrames))
			}},
			{func() {
				txO = append(txO, framesPerPhase/oursTx(l.ours, framesPerPhase, l.macB, l.macA).Seconds())
			}, func() {
				txA = append(txA, framesPerPhase/asavieTx(l.asavie, framesPerPhase, l.macB, l.macA).Seconds())
			}},
			{func() {}, func() {
				tsA = append(tsA, framesPerPhase/asavieTxSink(l.asavie, framesPerPhase, l.macB, l.macA).Seconds())
			}},
		}
		for _, p := range phases {
			if round%2 == 0 {
				p[0]()
				p[1]()
			} else {
				p[1]()
				p[0]()
			}
		}
	}
	b.ReportMetric(median(rxO), "xsk-rx-frames/s")
	b.ReportMetric(median(rxA), "asavie-rx-frames/s")
	b.ReportMetric(float64(dropO)/float64(b.N), "xsk-rx-drops/round")
	b.ReportMetric(float64(dropA)/float64(b.N), "asavie-rx-drops/round")
	b.ReportMetric(median(drO), "xsk-rx-drain-ns/frame")
	b.ReportMetric(median(drA), "asavie-rx-drain-ns/frame")
	b.ReportMetric(median(txO), "xsk-tx-frames/s")
	b.ReportMetric(median(txA), "asavie-tx-frames/s")
	b.ReportMetric(median(tsA), "asavie-tx-sink-frames/s")
	b.Logf("rounds %d: rx frames/s xsk %v asavie %v; rx-drain ns/frame xsk %v asavie %v; tx frames/s xsk %v asavie %v; tx-sink asavie %v (ours is tx: NextFrame/Commit is already per frame)",
		b.N, short(rxO), short(rxA), short(drO), short(drA), short(txO), short(txA), short(tsA))
}

// BenchmarkVethRX measures our raw receive rate: b.N frames from the
// generator through XDP into our socket. allocs/op covers generator and
// receiver and must be 0.
func BenchmarkVethRX(b *testing.B) {
	l := newBenchLab(b)
	recv := oursRx(l.ours)
	b.ReportAllocs()
	b.ResetTimer()
	r := receiveLoop(b.N, func() { generate(l.gen[0], b.N, l.macA, l.macB) }, recv)
	b.StopTimer()
	b.ReportMetric(float64(r.frames)/r.wall.Seconds(), "frames/s")
	b.ReportMetric(float64(r.cpu.Nanoseconds())/float64(max(r.frames, 1)), "rx-cpu-ns/frame")
	b.ReportMetric(float64(b.N-r.frames), "drops")
	st, _ := l.ours.Stats()
	b.Logf("N %d stats %+v", b.N, st)
}

// BenchmarkVethTX measures our raw transmit rate: b.N frames through
// NextFrame/Commit/Flush/Complete.
func BenchmarkVethTX(b *testing.B) {
	l := newBenchLab(b)
	b.ReportAllocs()
	b.ResetTimer()
	d := oursTx(l.ours, b.N, l.macB, l.macA)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/d.Seconds(), "frames/s")
}

// BenchmarkAlloc compares finding TX frames at 4096 frames with half of
// them on the fill ring (the state both libraries are in after setup):
// asavie/xdp's GetDescs scans its []bool from frame 0 on every call; our
// free list pops and pushes. Per op: one frame, or a batch of 64.
func BenchmarkAlloc(b *testing.B) {
	b.Run("xsk-freelist-1", func(b *testing.B) {
		u := newUmem(make([]byte, 4096*2048), 2048)
		for i := 2048; i < 4096; i++ {
			u.push(uint64(i) * 2048)
		}
		b.ReportAllocs()
		for range b.N {
			a, _ := u.pop()
			u.push(a)
		}
	})
	b.Run("xsk-freelist-64", func(b *testing.B) {
		u := newUmem(make([]byte, 4096*2048), 2048)
		for i := 2048; i < 4096; i++ {
			u.push(uint64(i) * 2048)
		}
		var got [64]uint64
		b.ReportAllocs()
		for range b.N {
			for i := range got {
				got[i], _ = u.pop()
			}
			for i := range got {
				u.push(got[i])
			}
		}
	})
	l := newLab(b, 1)
	var x *xdp.Socket
	var err error
	l.do(b, func() {
		x, err = xdp.NewSocket(l.xa, 0, &xdp.SocketOptions{
			NumFrames: 4096, FrameSize: 2048,
			FillRingNumDescs: 2048, CompletionRingNumDescs: 2048, RxRingNumDescs: 2048, TxRingNumDescs: 2048,
		})
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { x.Close() })
	x.Fill(x.GetDescs(x.NumFreeFillSlots()))
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprintf("asavie-GetDescs-%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if len(x.GetDescs(n)) != n {
					b.Fatal("short")
				}
			}
		})
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func short(v []float64) string {
	out := "["
	for i, x := range v {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("%.3g", x)
	}
	return out + "]"
}
