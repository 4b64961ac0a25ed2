package xsk

import (
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fakeLayout places a ring's words the way the kernel does (each index on
// its own cache line, then the descriptors), in ordinary memory.
var fakeLayout = ringLayout{Producer: 0, Consumer: 64, Flags: 128, Desc: 192}

// fakeRingMem returns 8-byte aligned memory for a ring of size entries of
// entrySize bytes whose producer and consumer both start at start.
func fakeRingMem(size, entrySize, start uint32) []byte {
	n := fakeLayout.Desc + uint64(size)*uint64(entrySize)
	words := make([]uint64, (n+7)/8)
	mem := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n)
	*(*uint32)(unsafe.Pointer(&mem[fakeLayout.Producer])) = start
	*(*uint32)(unsafe.Pointer(&mem[fakeLayout.Consumer])) = start
	return mem
}

// fakeKernel plays the kernel's side of a Socket built over ordinary memory.
type fakeKernel struct {
	t *testing.T
	s *Socket
}

// newFakeSocket builds a Socket over ordinary memory, with every ring's
// indices starting at start (pick one near 2^32 to cross the wrap).
func newFakeSocket(t testing.TB, cfg Config, start uint32) *Socket {
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	s := &Socket{fd: -1, ifindex: 1, queue: 0, cfg: cfg, needWakeup: *cfg.NeedWakeup}
	umemWords := make([]uint64, cfg.NumFrames*cfg.FrameSize/8)
	s.maps[0] = unsafe.Slice((*byte)(unsafe.Pointer(&umemWords[0])), cfg.NumFrames*cfg.FrameSize)
	s.maps[1] = fakeRingMem(uint32(cfg.FillSize), addrSize, start)
	s.maps[2] = fakeRingMem(uint32(cfg.CompletionSize), addrSize, start)
	s.maps[3] = fakeRingMem(uint32(cfg.RxSize), descSize, start)
	s.maps[4] = fakeRingMem(uint32(cfg.TxSize), descSize, start)
	off := unix.XDPMmapOffsets{Rx: fakeLayout, Tx: fakeLayout, Fr: fakeLayout, Cr: fakeLayout}
	if err := s.initRings(&off); err != nil {
		t.Fatal(err)
	}
	s.initFrames()
	s.maps = [5][]byte{} // Go memory: nothing for Close to unmap
	return s
}

// consumeFill takes up to max addresses off the fill ring, as the kernel
// does when a frame arrives.
func (k fakeKernel) consumeFill(max int) []uint64 {
	r := &k.s.fill
	prod, cons := atomic.LoadUint32(r.producer), atomic.LoadUint32(r.consumer)
	var out []uint64
	for cons != prod && len(out) < max {
		out = append(out, r.addrs[cons&r.mask])
		cons++
	}
	atomic.StoreUint32(r.consumer, cons)
	return out
}

// produceRx puts received descriptors on the RX ring; it returns how many fit.
func (k fakeKernel) produceRx(descs ...unix.XDPDesc) int {
	r := &k.s.rx
	prod, cons := atomic.LoadUint32(r.producer), atomic.LoadUint32(r.consumer)
	n := 0
	for _, d := range descs {
		if prod-cons == r.size {
			break
		}
		r.descs[prod&r.mask] = d
		prod++
		n++
	}
	atomic.StoreUint32(r.producer, prod)
	return n
}

// consumeTx takes up to max descriptors off the TX ring.
func (k fakeKernel) consumeTx(max int) []unix.XDPDesc {
	r := &k.s.tx
	prod, cons := atomic.LoadUint32(r.producer), atomic.LoadUint32(r.consumer)
	var out []unix.XDPDesc
	for cons != prod && len(out) < max {
		out = append(out, r.descs[cons&r.mask])
		cons++
	}
	atomic.StoreUint32(r.consumer, cons)
	return out
}

// produceComp puts transmitted addresses on the completion ring; it returns
// how many fit.
func (k fakeKernel) produceComp(addrs ...uint64) int {
	r := &k.s.comp
	prod, cons := atomic.LoadUint32(r.producer), atomic.LoadUint32(r.consumer)
	n := 0
	for _, a := range addrs {
		if prod-cons == r.size {
			break
		}
		r.addrs[prod&r.mask] = a
		prod++
		n++
	}
	atomic.StoreUint32(r.producer, prod)
	return n
}
