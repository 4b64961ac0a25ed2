package xsk

import "math/bits"

// umem is the packet buffer area shared with the kernel, cut into frames of
// frameSize bytes, plus the O(1) allocator for the frames we own and are not
// using: a stack of frame addresses.
//
// Every frame is in exactly one place at a time: the free stack, the fill
// ring, the kernel's RX path, the RX ring, the caller's hands (between
// Receive and Recycle, or between NextFrame and Commit), the TX ring, or the
// completion ring.
type umem struct {
	mem        []byte
	frameSize  uint64
	frameMask  uint64 // frameSize-1: addr&^frameMask is the frame's base
	frameShift uint   // log2(frameSize): addr>>frameShift is the frame's index

	free  []uint64 // free[:nfree] are free frame base addresses
	nfree int

	// owner says where each frame is, so that a frame handed back twice, or
	// a descriptor that was never ours, is refused (and counted) instead of
	// being given to the kernel twice and corrupting two packets.
	owner []frameOwner
}

// frameOwner is where one frame is.
type frameOwner uint8

const (
	ownedFree   frameOwner = iota // on the free stack
	ownedRx                       // fill ring, kernel RX path or RX ring
	ownedUser                     // returned by Receive, not yet recycled
	ownedTxHeld                   // returned by NextFrame, not yet committed
	ownedTx                       // TX ring or completion ring
)

func newUmem(mem []byte, frameSize int) umem {
	n := len(mem) / frameSize
	return umem{
		mem:        mem,
		frameSize:  uint64(frameSize),
		frameMask:  uint64(frameSize - 1),
		frameShift: uint(bits.TrailingZeros(uint(frameSize))),
		free:       make([]uint64, n),
		owner:      make([]frameOwner, n),
	}
}

// numFrames returns the number of frames in the area.
func (u *umem) numFrames() int { return len(u.free) }

// base returns the frame base address of addr and whether addr lies inside
// the area.
func (u *umem) base(addr uint64) (uint64, bool) {
	return addr &^ u.frameMask, addr < uint64(len(u.mem))
}

// move records that the frame holding addr (inside the area) goes from
// owner from to owner to. It reports false, changing nothing, when the
// frame is not where the caller thinks it is.
func (u *umem) move(addr uint64, from, to frameOwner) bool {
	i := addr >> u.frameShift
	if i >= uint64(len(u.owner)) || u.owner[i] != from {
		return false
	}
	u.owner[i] = to
	return true
}

// set records the owner of the frame holding addr (inside the area).
func (u *umem) set(addr uint64, to frameOwner) {
	if i := addr >> u.frameShift; i < uint64(len(u.owner)) {
		u.owner[i] = to
	}
}

// pop takes a free frame; ok is false when none is left.
func (u *umem) pop() (addr uint64, ok bool) {
	if u.nfree == 0 {
		return 0, false
	}
	u.nfree--
	return u.free[u.nfree], true
}

// push returns a frame to the free stack. It reports false, and keeps the
// stack unchanged, when the stack is already full (which the owner checks
// make impossible).
func (u *umem) push(addr uint64) bool {
	if u.nfree == len(u.free) {
		return false
	}
	u.free[u.nfree] = addr
	u.nfree++
	return true
}

// frame returns the whole frame at base address addr.
func (u *umem) frame(addr uint64) []byte {
	end := addr + u.frameSize
	return u.mem[addr:end:end]
}
