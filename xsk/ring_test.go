package xsk

import (
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// Starting indices for the wrap tests: both sides cross 2^32 within the
// first few rounds.
var wrapStarts = []uint32{0, 1<<32 - 1, 1<<32 - 5, 1<<32 - 64, 1 << 31}

// TestFillRingWrap drives the fill ring as producer against a fake kernel
// consumer across the 2^32 index wrap: nothing is lost, reordered or
// overwritten, and free space never exceeds the ring.
func TestFillRingWrap(t *testing.T) {
	for _, start := range wrapStarts {
		mem := fakeRingMem(8, addrSize, start)
		r, err := newFillRing(mem, fakeLayout, 8)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(uint64(start), 1))
		var next, want uint64 // next value to put, next value the kernel expects
		for round := 0; round < 1000; round++ {
			free := r.free(8)
			if free > 8 {
				t.Fatalf("start %#x round %d: free %d > size", start, round, free)
			}
			for range rng.IntN(int(free) + 1) {
				r.put(next)
				next++
			}
			r.submit()
			// Kernel side: consume some.
			prod, cons := atomic.LoadUint32(r.producer), atomic.LoadUint32(r.consumer)
			if prod-cons > 8 {
				t.Fatalf("start %#x round %d: %d entries in an 8-entry ring", start, round, prod-cons)
			}
			for range rng.IntN(int(prod-cons) + 1) {
				if got := r.addrs[cons&r.mask]; got != want {
					t.Fatalf("start %#x round %d: kernel read %d, want %d", start, round, got, want)
				}
				cons++
				want++
			}
			atomic.StoreUint32(r.consumer, cons)
		}
		if next < 1000 || atomic.LoadUint32(r.producer)-start != uint32(next) {
			t.Fatalf("start %#x: producer %#x after %d puts", start, atomic.LoadUint32(r.producer), next)
		}
	}
}

// TestTxRingWrap is TestFillRingWrap for the TX ring's descriptors.
func TestTxRingWrap(t *testing.T) {
	for _, start := range wrapStarts {
		mem := fakeRingMem(16, descSize, start)
		r, err := newTxRing(mem, fakeLayout, 16)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(uint64(start), 2))
		var next, want uint64
		for round := 0; round < 1000; round++ {
			free := r.free(16)
			if free > 16 {
				t.Fatalf("start %#x: free %d", start, free)
			}
			for range rng.IntN(int(free) + 1) {
				r.put(next*2048, uint32(next%1500)+1)
				next++
			}
			r.submit()
			if out := r.outstanding(); out > 16 {
				t.Fatalf("start %#x: outstanding %d", start, out)
			}
			prod, cons := atomic.LoadUint32(r.producer), atomic.LoadUint32(r.consumer)
			for range rng.IntN(int(prod-cons) + 1) {
				d := r.descs[cons&r.mask]
				if d.Addr != want*2048 || d.Len != uint32(want%1500)+1 {
					t.Fatalf("start %#x: kernel read %+v, want addr %d", start, d, want*2048)
				}
				cons++
				want++
			}
			atomic.StoreUint32(r.consumer, cons)
		}
	}
}

// TestRxRingWrap drives the RX ring as consumer against a fake kernel
// producer across the wrap.
func TestRxRingWrap(t *testing.T) {
	for _, start := range wrapStarts {
		mem := fakeRingMem(8, descSize, start)
		r, err := newRxRing(mem, fakeLayout, 8)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(uint64(start), 3))
		var next, want uint64
		for round := 0; round < 1000; round++ {
			prod, cons := atomic.LoadUint32(r.producer), atomic.LoadUint32(r.consumer)
			for range rng.IntN(int(8-(prod-cons)) + 1) {
				r.descs[prod&r.mask] = unix.XDPDesc{Addr: next, Len: uint32(next)}
				prod++
				next++
			}
			atomic.StoreUint32(r.producer, prod)

			batch := uint32(rng.IntN(10))
			n := min(r.available(batch), batch)
			for i := range n {
				if d := r.at(i); d.Addr != want || d.Len != uint32(want) {
					t.Fatalf("start %#x round %d: read %+v, want %d", start, round, *d, want)
				}
				want++
			}
			r.release(n)
		}
		if want == 0 {
			t.Fatal("nothing received")
		}
	}
}

// TestCompletionRingWrap does the same for the completion ring.
func TestCompletionRingWrap(t *testing.T) {
	for _, start := range wrapStarts {
		mem := fakeRingMem(4, addrSize, start)
		r, err := newCompletionRing(mem, fakeLayout, 4)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(uint64(start), 4))
		var next, want uint64
		for round := 0; round < 1000; round++ {
			prod, cons := atomic.LoadUint32(r.producer), atomic.LoadUint32(r.consumer)
			for range rng.IntN(int(4-(prod-cons)) + 1) {
				r.addrs[prod&r.mask] = next
				prod++
				next++
			}
			atomic.StoreUint32(r.producer, prod)
			n := r.available()
			if n > 4 {
				t.Fatalf("available %d", n)
			}
			n = uint32(rng.IntN(int(n) + 1))
			for i := range n {
				if got := r.at(i); got != want {
					t.Fatalf("start %#x: read %d, want %d", start, got, want)
				}
				want++
			}
			r.release(n)
		}
	}
}

// TestRingHeaderChecks: a layout that does not fit its mapping is an error,
// not a crash.
func TestRingHeaderChecks(t *testing.T) {
	mem := fakeRingMem(8, descSize, 0)
	if _, err := newRxRing(mem, fakeLayout, 16); err == nil {
		t.Error("16 descriptors in room for 8: no error")
	}
	if _, err := newRxRing(mem, fakeLayout, 6); err == nil {
		t.Error("size 6: no error")
	}
	bad := fakeLayout
	bad.Consumer = 2
	if _, err := newFillRing(mem, bad, 8); err == nil {
		t.Error("unaligned consumer: no error")
	}
}

// TestConfigDefaults pins the zero Config and the checks that run before
// any system call.
func TestConfigDefaults(t *testing.T) {
	c, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.NumFrames != 4096 || c.FrameSize != 2048 || c.FillSize != 2048 || c.CompletionSize != 2048 ||
		c.RxSize != 2048 || c.TxSize != 2048 || !*c.NeedWakeup || c.ZeroCopy != ZeroCopyAuto {
		t.Fatalf("defaults: %+v", c)
	}
	if c, _ := (Config{NeedWakeup: Bool(false)}).withDefaults(); *c.NeedWakeup {
		t.Error("NeedWakeup false lost")
	}
	for _, bad := range []Config{
		{FrameSize: 1500}, {NumFrames: 3000}, {FillSize: 100}, {TxSize: -2}, {ZeroCopy: 7},
	} {
		if _, err := bad.withDefaults(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: err %v, want ErrConfig", bad, err)
		}
		if _, err := Open(1, 0, bad); !errors.Is(err, ErrConfig) {
			t.Errorf("Open(%+v): err %v, want ErrConfig", bad, err)
		}
	}
	if _, err := Open(0, 0, Config{}); !errors.Is(err, ErrConfig) {
		t.Errorf("Open(ifindex 0): %v", err)
	}
}
