package xsk

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rxRing is how the kernel hands us received frames. The kernel produces; we
// are its only consumer.
type rxRing struct {
	ringHeader
	descs []unix.XDPDesc

	// cachedProd is the kernel's producer index as last read.
	cachedProd uint32
	// cachedCons is the next slot we read; release publishes up to it.
	cachedCons uint32
}

func newRxRing(mem []byte, layout ringLayout, size uint32) (rxRing, error) {
	h, descs, err := header(mem, layout, size, descSize)
	if err != nil {
		return rxRing{}, err
	}
	r := rxRing{ringHeader: h, descs: unsafe.Slice((*unix.XDPDesc)(descs), size)}
	r.cachedCons = atomic.LoadUint32(r.consumer)
	r.cachedProd = atomic.LoadUint32(r.producer)
	return r, nil
}

// available returns how many received descriptors we can read now. It reads
// the kernel's producer index only when the cached view shows fewer than
// want, and never reports more than the ring holds.
func (r *rxRing) available(want uint32) uint32 {
	n := r.cachedProd - r.cachedCons
	if n < want {
		r.cachedProd = atomic.LoadUint32(r.producer)
		n = r.cachedProd - r.cachedCons
	}
	return min(n, r.size)
}

// at returns the descriptor i entries past the next unread one.
func (r *rxRing) at(i uint32) *unix.XDPDesc {
	return &r.descs[(r.cachedCons+i)&r.mask]
}

// release hands n read slots back to the kernel.
func (r *rxRing) release(n uint32) {
	r.cachedCons += n
	atomic.StoreUint32(r.consumer, r.cachedCons)
}
