package xsk

import (
	"sync/atomic"
	"unsafe"
)

// completionRing is how the kernel returns transmitted frames to us. The
// kernel produces; we are its only consumer.
type completionRing struct {
	ringHeader
	addrs []uint64

	// cachedProd is the kernel's producer index as last read.
	cachedProd uint32
	// cachedCons is the next slot we read; release publishes up to it.
	cachedCons uint32
}

func newCompletionRing(mem []byte, layout ringLayout, size uint32) (completionRing, error) {
	h, descs, err := header(mem, layout, size, addrSize)
	if err != nil {
		return completionRing{}, err
	}
	r := completionRing{ringHeader: h, addrs: unsafe.Slice((*uint64)(descs), size)}
	r.cachedCons = atomic.LoadUint32(r.consumer)
	r.cachedProd = atomic.LoadUint32(r.producer)
	return r, nil
}

// available reads the kernel's producer index (one atomic load) and returns
// how many completed addresses we can read now.
func (r *completionRing) available() uint32 {
	r.cachedProd = atomic.LoadUint32(r.producer)
	return min(r.cachedProd-r.cachedCons, r.size)
}

// at returns the address i entries past the next unread one.
func (r *completionRing) at(i uint32) uint64 {
	return r.addrs[(r.cachedCons+i)&r.mask]
}

// release hands n read slots back to the kernel.
func (r *completionRing) release(n uint32) {
	r.cachedCons += n
	atomic.StoreUint32(r.consumer, r.cachedCons)
}
