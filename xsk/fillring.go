package xsk

import (
	"sync/atomic"
	"unsafe"
)

// fillRing is how we hand empty UMEM frames to the kernel for RX. We are its
// only producer; the kernel consumes.
type fillRing struct {
	ringHeader
	addrs []uint64

	// cachedProd is the next slot we write. Entries below it are published
	// to the kernel only by submit.
	cachedProd uint32
	// cachedCons is the kernel's consumer index as last read, plus size, so
	// that cachedCons-cachedProd is the free space without another add.
	cachedCons uint32
}

func newFillRing(mem []byte, layout ringLayout, size uint32) (fillRing, error) {
	h, descs, err := header(mem, layout, size, addrSize)
	if err != nil {
		return fillRing{}, err
	}
	r := fillRing{ringHeader: h, addrs: unsafe.Slice((*uint64)(descs), size)}
	r.cachedProd = atomic.LoadUint32(r.producer)
	r.cachedCons = atomic.LoadUint32(r.consumer) + size
	return r, nil
}

// free returns how many entries we can write now. It reads the kernel's
// consumer index only when the cached view shows fewer than want.
func (r *fillRing) free(want uint32) uint32 {
	if n := r.cachedCons - r.cachedProd; n >= want {
		return n
	}
	r.cachedCons = atomic.LoadUint32(r.consumer) + r.size
	return r.cachedCons - r.cachedProd
}

// put writes addr into the next slot; the caller has checked free.
func (r *fillRing) put(addr uint64) {
	r.addrs[r.cachedProd&r.mask] = addr
	r.cachedProd++
}

// submit publishes every entry put so far.
func (r *fillRing) submit() {
	atomic.StoreUint32(r.producer, r.cachedProd)
}
