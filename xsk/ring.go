package xsk

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ringHeader points at the three words the kernel shares for one ring. The
// producer and consumer indices are free-running uint32 counters: an entry's
// slot is index&mask, and producer-consumer is the number of entries in the
// ring even across the 2^32 wrap.
//
// The side that owns an index writes it with atomic.StoreUint32 after
// writing (or reading) the descriptors it covers; the other side reads it
// with atomic.LoadUint32 before touching them. Go's atomics are sequentially
// consistent, which is at least the release/acquire pairing the kernel uses
// (smp_store_release / smp_load_acquire in net/xdp/xsk_queue.h), on every
// architecture, not just on x86's TSO.
type ringHeader struct {
	producer *uint32
	consumer *uint32
	flags    *uint32
	size     uint32
	mask     uint32
}

// needWakeup reports XDP_RING_NEED_WAKEUP on this ring.
func (h *ringHeader) needWakeup() bool {
	return atomic.LoadUint32(h.flags)&unix.XDP_RING_NEED_WAKEUP != 0
}

// prodRing is our side of a ring we fill and the kernel consumes (fill and
// TX rings): the next slot we write and the kernel's consumer index as last
// read, plus size, so that cachedCons-cachedProd is the free space without
// another add. Entries below cachedProd reach the kernel only when the
// ring's submit publishes them.
type prodRing struct {
	ringHeader
	cachedProd uint32
	cachedCons uint32
}

func newProdRing(h ringHeader) prodRing {
	return prodRing{ringHeader: h, cachedProd: atomic.LoadUint32(h.producer), cachedCons: atomic.LoadUint32(h.consumer) + h.size}
}

// free returns how many entries we can write now. It reads the kernel's
// consumer index only when the cached view shows fewer than want.
func (r *prodRing) free(want uint32) uint32 {
	if n := r.cachedCons - r.cachedProd; n >= want {
		return n
	}
	r.cachedCons = atomic.LoadUint32(r.consumer) + r.size
	return r.cachedCons - r.cachedProd
}

// ringLayout says where a ring's words live inside its mapping, as the
// kernel reports them through XDP_MMAP_OFFSETS.
type ringLayout = unix.XDPRingOffset

// header builds a ringHeader over mem. mem must hold layout.Desc plus size
// entries of entrySize bytes; the indices must be 4-byte aligned.
func header(mem []byte, layout ringLayout, size, entrySize uint32) (ringHeader, unsafe.Pointer, error) {
	if !powerOfTwo(int(size)) {
		return ringHeader{}, nil, fmt.Errorf("ring size %d is not a power of two", size)
	}
	need := layout.Desc + uint64(size)*uint64(entrySize)
	for _, off := range []uint64{layout.Producer, layout.Consumer, layout.Flags} {
		if off%4 != 0 || off+4 > uint64(len(mem)) {
			return ringHeader{}, nil, fmt.Errorf("ring index offset %d outside a %d-byte mapping", off, len(mem))
		}
	}
	if need > uint64(len(mem)) || layout.Desc%8 != 0 {
		return ringHeader{}, nil, fmt.Errorf("ring descriptors at %d (+%d) outside a %d-byte mapping", layout.Desc, need-layout.Desc, len(mem))
	}
	base := unsafe.Pointer(unsafe.SliceData(mem))
	return ringHeader{
		producer: (*uint32)(unsafe.Add(base, layout.Producer)),
		consumer: (*uint32)(unsafe.Add(base, layout.Consumer)),
		flags:    (*uint32)(unsafe.Add(base, layout.Flags)),
		size:     size,
		mask:     size - 1,
	}, unsafe.Add(base, layout.Desc), nil
}

// mapRing mmaps one ring of fd at the kernel's page offset pgoff.
func mapRing(fd int, pgoff int64, layout ringLayout, size, entrySize uint32) ([]byte, error) {
	length := layout.Desc + uint64(size)*uint64(entrySize)
	mem, err := unix.Mmap(fd, pgoff, int(length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, err
	}
	return mem, nil
}

const (
	addrSize = uint32(unsafe.Sizeof(uint64(0)))
	descSize = uint32(unsafe.Sizeof(unix.XDPDesc{}))
)
