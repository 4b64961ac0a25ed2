package dataplane

import "sync/atomic"

// handoff is a lock-free single-producer/single-consumer ring of frames,
// one per ordered pair of shards. A frame that lands on a queue whose shard
// does not own its flow is copied in here by the receiving shard and handled
// by the owner on its next loop iteration. Copying (rather than passing the
// UMEM frame) lets the receiving shard recycle its frame at once: UMEM frames
// belong to the socket that received them.
//
// head is written only by the consumer, tail only by the producer; each side
// loads the other's index atomically (acquire) and publishes its own with an
// atomic store (release), which on amd64 are plain MOVs.
type handoff struct {
	_     [64]byte // keep the indices off the neighbours' cache lines
	head  atomic.Uint64
	_     [56]byte
	tail  atomic.Uint64
	_     [56]byte
	mask  uint64
	lens  []uint16
	ifxs  []uint8 // the interface each frame arrived on (or leaves by)
	slot  int     // bytes per slot: the UMEM frame size, so every received frame fits
	slots []byte  // len(lens) slots of slot bytes
}

func newHandoff(size, frameSize int) *handoff {
	n := 1
	for n < size {
		n <<= 1
	}
	return &handoff{mask: uint64(n - 1), lens: make([]uint16, n), ifxs: make([]uint8, n), slot: frameSize, slots: make([]byte, n*frameSize)}
}

func (h *handoff) at(i uint64) []byte {
	off := int(i) * h.slot
	return h.slots[off : off+h.slot : off+h.slot]
}

// push copies frame (of interface ifx) in; it reports false when the ring
// is full or the frame too large (the caller counts the drop).
func (h *handoff) push(ifx uint8, frame []byte) bool {
	if len(frame) > h.slot {
		return false
	}
	b := h.reserve()
	if b == nil {
		return false
	}
	h.commit(ifx, copy(b, frame))
	return true
}

// reserve returns the next free slot for the producer to write a frame
// into, or nil when the ring is full; commit publishes it.
func (h *handoff) reserve() []byte {
	t := h.tail.Load()
	if t-h.head.Load() > h.mask {
		return nil
	}
	return h.at(t & h.mask)
}

// commit publishes the first n bytes of the slot reserve returned.
func (h *handoff) commit(ifx uint8, n int) {
	t := h.tail.Load()
	i := t & h.mask
	h.lens[i] = uint16(n)
	h.ifxs[i] = ifx
	h.tail.Store(t + 1)
}

// drain hands every queued frame to fn, in order, and returns how many.
func (h *handoff) drain(fn func(ifx int, frame []byte)) int {
	hd := h.head.Load()
	t := h.tail.Load()
	for i := hd; i != t; i++ {
		s := i & h.mask
		fn(int(h.ifxs[s]), h.at(s)[:h.lens[s]])
	}
	h.head.Store(t)
	return int(t - hd)
}

// empty reports whether nothing is queued (a consumer-side check).
func (h *handoff) empty() bool { return h.head.Load() == h.tail.Load() }
