package xsk

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// txRing is how we hand filled UMEM frames to the kernel for transmission.
// We are its only producer; the kernel consumes.
type txRing struct {
	prodRing
	descs []unix.XDPDesc
	// published is the producer index last stored for the kernel.
	published uint32
}

func newTxRing(mem []byte, layout ringLayout, size uint32) (txRing, error) {
	h, descs, err := header(mem, layout, size, descSize)
	if err != nil {
		return txRing{}, err
	}
	r := txRing{prodRing: newProdRing(h), descs: unsafe.Slice((*unix.XDPDesc)(descs), size)}
	r.published = r.cachedProd
	return r, nil
}

// put writes one descriptor into the next slot; the caller has checked free.
func (r *txRing) put(addr uint64, n uint32) {
	d := &r.descs[r.cachedProd&r.mask]
	d.Addr, d.Len, d.Options = addr, n, 0
	r.cachedProd++
}

// submit publishes every descriptor put so far and reports whether there
// was anything new.
func (r *txRing) submit() bool {
	if r.published == r.cachedProd {
		return false
	}
	atomic.StoreUint32(r.producer, r.cachedProd)
	r.published = r.cachedProd
	return true
}

// outstanding returns how many published descriptors the kernel has not
// consumed yet (one atomic load).
func (r *txRing) outstanding() uint32 {
	return r.published - atomic.LoadUint32(r.consumer)
}
