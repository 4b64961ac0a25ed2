package xsk

import (
	"sync/atomic"
	"unsafe"
)

// fillRing is how we hand empty UMEM frames to the kernel for RX. We are its
// only producer; the kernel consumes.
type fillRing struct {
	prodRing
	addrs []uint64
}

func newFillRing(mem []byte, layout ringLayout, size uint32) (fillRing, error) {
	h, descs, err := header(mem, layout, size, addrSize)
	if err != nil {
		return fillRing{}, err
	}
	return fillRing{prodRing: newProdRing(h), addrs: unsafe.Slice((*uint64)(descs), size)}, nil
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
