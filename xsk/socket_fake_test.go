package xsk

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFakeSocketFrameConservation runs many times NumFrames frames through
// RX (fill → rx → Receive → Recycle) and TX (NextFrame → Commit → Flush →
// completion → Complete) against a fake kernel whose indices cross 2^32, and
// checks that every frame is always in exactly one place.
func TestFakeSocketFrameConservation(t *testing.T) {
	const frames = 64
	cfg := Config{NumFrames: frames, FillSize: 32, CompletionSize: 16, RxSize: 16, TxSize: 16}
	s := newFakeSocket(t, cfg, 1<<32-40)
	k := fakeKernel{t: t, s: s}
	if got := s.FreeFrames(); got != frames/2 {
		t.Fatalf("free frames at open: %d, want %d", got, frames/2)
	}

	descs := make([]Desc, 8)
	var rxTotal, txTotal int
	held := map[uint64]bool{} // frames in the fake kernel's hands
	for round := 0; round < 2000; round++ {
		// Kernel receives up to 5 frames into fill buffers.
		for _, a := range k.consumeFill(5) {
			if held[a] {
				t.Fatalf("round %d: frame %#x handed to the kernel twice", round, a)
			}
			held[a] = true
			frame := s.umem.frame(a)
			frame[0], frame[1] = byte(round), 0xAB
			if k.produceRx(unix.XDPDesc{Addr: a, Len: 60}) != 1 {
				t.Fatalf("round %d: rx ring full", round)
			}
		}
		// We receive and recycle.
		for {
			n := s.Receive(descs)
			if n == 0 {
				break
			}
			for _, d := range descs[:n] {
				f := s.Frame(d)
				if len(f) != 60 || f[1] != 0xAB {
					t.Fatalf("round %d: frame %+v = % x", round, d, f[:2])
				}
				delete(held, d.Addr)
			}
			rxTotal += n
			s.Recycle(descs[:n])
		}
		// We transmit 3 frames.
		for i := range 3 {
			buf := s.NextFrame()
			if buf == nil {
				break
			}
			if len(buf) != 2048 {
				t.Fatalf("NextFrame len %d", len(buf))
			}
			buf[0] = byte(i)
			s.Commit(64)
			txTotal++
		}
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		// Kernel transmits and completes some of them.
		var done []uint64
		for _, d := range k.consumeTx(2) {
			if d.Len != 64 {
				t.Fatalf("tx len %d", d.Len)
			}
			if held[d.Addr] {
				t.Fatalf("frame %#x transmitted while the kernel holds it", d.Addr)
			}
			done = append(done, d.Addr)
		}
		k.produceComp(done...)
		if round%3 == 0 {
			s.Complete()
		}
	}
	if rxTotal < 10*frames || txTotal < 10*frames {
		t.Fatalf("only %d received, %d transmitted", rxTotal, txTotal)
	}
	st := s.ctr
	if st.badDescs != 0 || st.badCommits != 0 {
		t.Fatalf("counters: %+v", st)
	}
}

// TestNextFrameCommit pins the Sink contract: NextFrame returns the same
// frame until Commit; Commit without NextFrame or with a bad length queues
// nothing; nil when frames run out.
func TestNextFrameCommit(t *testing.T) {
	s := newFakeSocket(t, Config{NumFrames: 8, FillSize: 4, CompletionSize: 8, RxSize: 8, TxSize: 8}, 0)
	k := fakeKernel{s: s}
	s.Commit(60) // nothing held
	a, b := s.NextFrame(), s.NextFrame()
	if &a[0] != &b[0] {
		t.Fatal("NextFrame twice without Commit gave two frames")
	}
	s.Commit(0)
	s.Commit(4097)
	if s.ctr.badCommits != 2 || s.tx.cachedProd != s.tx.published {
		t.Fatalf("bad commits queued something: %+v", s.ctr)
	}
	copy(a, "hello")
	s.Commit(5)
	var got int
	for s.NextFrame() != nil {
		s.Commit(10)
		got++
	}
	if got != 3 || s.ctr.txNoFrame == 0 {
		t.Fatalf("4 free frames: committed %d more, txNoFrame %d", got, s.ctr.txNoFrame)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	tx := k.consumeTx(8)
	if len(tx) != 4 || !bytes.Equal(s.Frame(Desc{Addr: tx[0].Addr, Len: tx[0].Len}), []byte("hello")) {
		t.Fatalf("tx ring: %+v", tx)
	}
	// NextFrame reaps the completion ring by itself when it runs dry.
	k.produceComp(tx[0].Addr, tx[1].Addr)
	if s.NextFrame() == nil || s.FreeFrames() != 1 {
		t.Fatalf("NextFrame did not reap completions: free %d", s.FreeFrames())
	}
}

// TestBadDescriptors: descriptors that are not ours, or frames handed back
// twice, are counted and ignored.
func TestBadDescriptors(t *testing.T) {
	s := newFakeSocket(t, Config{NumFrames: 8, FillSize: 4, CompletionSize: 8, RxSize: 8, TxSize: 8}, 0)
	k := fakeKernel{s: s}
	if f := s.Frame(Desc{Addr: 8 * 2048, Len: 10}); f != nil {
		t.Error("Frame past the UMEM")
	}
	if f := s.Frame(Desc{Addr: 2000, Len: 100}); f != nil {
		t.Error("Frame across two frames")
	}
	s.Recycle([]Desc{{Addr: 1 << 40}})  // not in the UMEM
	s.Recycle([]Desc{{Addr: 6 * 2048}}) // a free frame, never received
	// Receive one frame and recycle it twice.
	a := k.consumeFill(1)[0]
	k.produceRx(unix.XDPDesc{Addr: a, Len: 60})
	d := make([]Desc, 1)
	if s.Receive(d) != 1 {
		t.Fatal("no frame")
	}
	s.Recycle(d)
	s.Recycle(d)
	if s.ctr.badDescs != 3 {
		t.Fatalf("badDescs %d after three bad recycles", s.ctr.badDescs)
	}
	// Completions for frames that were never transmitted.
	k.produceComp(1<<40, 0, 5*2048)
	s.Complete()
	if s.ctr.badDescs != 6 || s.FreeFrames() != 4 {
		t.Fatalf("badDescs %d, free %d after three bad completions", s.ctr.badDescs, s.FreeFrames())
	}
}

// TestClosedSocket: every method after Close is harmless.
func TestClosedSocket(t *testing.T) {
	s := newFakeSocket(t, Config{NumFrames: 8, FillSize: 4, CompletionSize: 8, RxSize: 8, TxSize: 8}, 0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	d := make([]Desc, 4)
	if s.Receive(d) != 0 || s.NextFrame() != nil || s.Complete() != 0 || s.Frame(Desc{Len: 1}) != nil {
		t.Fatal("closed socket still works")
	}
	s.Commit(10)
	s.Recycle(d)
	if err := s.Flush(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Flush: %v", err)
	}
	if _, err := s.Poll(0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Poll: %v", err)
	}
	if _, err := s.Stats(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Stats: %v", err)
	}
	if s.RefillNeedsWakeup() {
		t.Fatal("RefillNeedsWakeup")
	}
}

// TestReceiveAllocsNothing: the RX and TX paths allocate nothing.
func TestReceiveAllocsNothing(t *testing.T) {
	s := newFakeSocket(t, Config{}, 1<<32-100)
	k := fakeKernel{s: s}
	descs := make([]Desc, 64)
	in := make([]unix.XDPDesc, 64)
	allocs := testing.AllocsPerRun(100, func() {
		// Kernel side inline, without the test helpers' slices.
		r := &s.fill
		for i := range in {
			a := r.addrs[*r.consumer&r.mask]
			*r.consumer++
			in[i] = unix.XDPDesc{Addr: a, Len: 64}
		}
		k.produceRx(in...)
		n := s.Receive(descs)
		s.Recycle(descs[:n])
		for range 8 {
			if s.NextFrame() != nil {
				s.Commit(64)
			}
		}
		_ = s.Flush()
		s.Complete()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch", allocs)
	}
}

// BenchmarkReceiveRecycle measures the userspace cost of the RX path alone
// (Receive + Frame + Recycle) against a fake kernel, 64 frames per batch.
func BenchmarkReceiveRecycle(b *testing.B) {
	s := newFakeSocket(b, Config{}, 0)
	descs := make([]Desc, 64)
	in := make([]unix.XDPDesc, 64)
	k := fakeKernel{s: s}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 64 {
		r := &s.fill
		for j := range in {
			a := r.addrs[*r.consumer&r.mask]
			*r.consumer++
			in[j] = unix.XDPDesc{Addr: a, Len: 64}
		}
		k.produceRx(in...)
		n := s.Receive(descs)
		for _, d := range descs[:n] {
			_ = s.Frame(d)[0]
		}
		s.Recycle(descs[:n])
	}
}

// TestUnflushed: the frames committed since the last Flush are readable in
// place, in order, until that Flush hands them to the kernel; indices
// that wrap around the ring change nothing.
func TestUnflushed(t *testing.T) {
	s := newFakeSocket(t, Config{NumFrames: 16, FillSize: 4, CompletionSize: 8, RxSize: 8, TxSize: 8}, 1<<32-3)
	k := fakeKernel{s: s}
	for round := range 4 {
		for i := range 3 {
			copy(s.NextFrame(), []byte{byte(round), byte(i), 0xee})
			s.Commit(2 + i)
		}
		if got := s.Unflushed(); got != 3 {
			t.Fatalf("round %d: Unflushed %d, want 3", round, got)
		}
		for i := range 3 {
			f := s.UnflushedFrame(i)
			if len(f) != 2+i || f[0] != byte(round) || f[1] != byte(i) || cap(f) != len(f) {
				t.Fatalf("round %d: UnflushedFrame(%d) = % x (cap %d)", round, i, f, cap(f))
			}
		}
		if s.UnflushedFrame(3) != nil || s.UnflushedFrame(-1) != nil {
			t.Fatal("UnflushedFrame beyond the committed frames is not nil")
		}
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		if s.Unflushed() != 0 {
			t.Fatalf("round %d: Unflushed %d after Flush", round, s.Unflushed())
		}
		var done []uint64
		for _, d := range k.consumeTx(8) {
			done = append(done, d.Addr)
		}
		k.produceComp(done...)
		s.Complete()
	}
}
