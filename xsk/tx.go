package xsk

import (
	"golang.org/x/sys/unix"
)

// NextFrame returns a free UMEM frame to build one outgoing frame in, or nil
// when no frame or no TX ring slot is free. Until Commit queues it, the same
// frame is returned again, so a caller may abandon a frame without leaking
// it. When the free stack is empty it first reaps the completion ring.
// NextFrame and Commit make *Socket a stack.Sink.
func (s *Socket) NextFrame() []byte {
	if s.closed {
		return nil
	}
	if s.mb.on {
		return s.nextFrameChained()
	}
	if s.txHeld {
		return s.umem.frame(s.txAddr)
	}
	if s.tx.free(1) == 0 {
		s.ctr.txRingFull++
		return nil
	}
	addr, ok := s.umem.pop()
	if !ok {
		s.Complete()
		if addr, ok = s.umem.pop(); !ok {
			s.ctr.txNoFrame++
			return nil
		}
	}
	s.umem.set(addr, ownedTxHeld)
	s.txHeld, s.txAddr = true, addr
	return s.umem.frame(addr)
}

// Commit queues the first n bytes of the frame NextFrame last returned on the
// TX ring. The kernel sees it at the next Flush. A Commit with no frame
// outstanding, or with n outside [1, FrameSize], queues nothing (and a held
// frame stays held for the next NextFrame).
func (s *Socket) Commit(n int) {
	if s.mb.on {
		s.commitChained(n)
		return
	}
	if !s.txHeld {
		return
	}
	if n <= 0 || uint64(n) > s.umem.frameSize {
		s.ctr.badCommits++
		return
	}
	// NextFrame checked that a slot is free and nothing else produces.
	s.tx.put(s.txAddr, uint32(n))
	s.umem.set(s.txAddr, ownedTx)
	s.txHeld = false
	s.ctr.txFrames++
}

// maxKickRounds bounds the sendto loop in Flush. In copy mode the kernel
// transmits at most its per-call budget (TxBudget: 32 frames by default,
// the whole ring where it could be raised) per sendto and answers EAGAIN
// when more are left; a full TX ring of 2^k descriptors takes 2^k/32 calls
// at the default.
func maxKickRounds(txSize uint32) int { return int(txSize/copyModeTxBatch) + 2 }

// Flush publishes the TX producer index and, when the kernel needs it, kicks
// the kernel with sendto(MSG_DONTWAIT): always without need_wakeup, and
// only while the TX ring's need-wakeup flag is set with it (copy mode keeps
// it set; zero-copy drivers set it only when idle). In copy mode it keeps
// kicking while the kernel makes progress, so the ring drains here.
//
// EAGAIN, EBUSY and ENOBUFS are back-pressure: Flush counts them and returns
// nil; the descriptors stay queued for the next Flush. Any other errno comes
// back as a *KickError (ENETDOWN among them), which is never fatal either.
func (s *Socket) Flush() error {
	if s.closed {
		return ErrClosed
	}
	s.tx.submit()
	for range maxKickRounds(s.tx.size) {
		pending := s.tx.outstanding()
		if pending == 0 {
			return nil
		}
		if s.needWakeup && !s.tx.needWakeup() {
			return nil
		}
		s.ctr.kicks++
		switch e := kick(s.fd); e {
		case 0:
			if s.zeroCopy {
				return nil
			}
			// Copy mode sent what its budget allowed; loop if more is
			// left and the kernel took some.
			if s.tx.outstanding() >= pending {
				return nil
			}
		case unix.EINTR:
		case unix.EAGAIN:
			if s.tx.outstanding() >= pending {
				// No progress: the completion ring is full or
				// the driver is busy. Complete and Flush again.
				s.ctr.kickBusy++
				return nil
			}
		case unix.EBUSY, unix.ENOBUFS:
			s.ctr.kickBusy++
			return nil
		default:
			s.ctr.kickErrors++
			return &KickError{Op: "sendto", Ifindex: s.ifindex, Queue: s.queue, Errno: e}
		}
	}
	return nil
}

// Complete reaps the completion ring: every frame the kernel has finished
// transmitting goes back to the free stack. It returns how many.
func (s *Socket) Complete() int {
	if s.closed {
		return 0
	}
	n := s.comp.available()
	if n == 0 {
		return 0
	}
	for i := range n {
		addr, ok := s.umem.base(s.comp.at(i))
		if !ok || !s.umem.move(addr, ownedTx, ownedFree) || !s.umem.push(addr) {
			s.ctr.badDescs++
		}
	}
	s.comp.release(n)
	s.ctr.completed += uint64(n)
	return int(n)
}

// TxPending returns how many committed descriptors the kernel has not taken
// from the TX ring yet (after the last Flush) plus those not yet flushed.
func (s *Socket) TxPending() int {
	if s.closed {
		return 0
	}
	return int(s.tx.cachedProd-s.tx.published) + int(s.tx.outstanding())
}

// Unflushed returns how many frames Commit has queued since the last Flush:
// the frames the next Flush hands to the kernel. UnflushedFrame(i) is the
// i-th of them. Until that Flush they are the caller's alone (the kernel
// sees none of them), so a packet capture reads them here, in place.
func (s *Socket) Unflushed() int {
	if s.closed {
		return 0
	}
	return int(s.tx.cachedProd - s.tx.published)
}

// UnflushedFrame is the i-th frame (0 the oldest) of those Unflushed counts,
// in place, or nil when there is no such frame.
func (s *Socket) UnflushedFrame(i int) []byte {
	if s.closed || i < 0 || i >= int(s.tx.cachedProd-s.tx.published) {
		return nil
	}
	if s.mb.on {
		return s.unflushedChain(i)
	}
	d := s.tx.descs[(s.tx.published+uint32(i))&s.tx.mask]
	return s.umem.mem[d.Addr : d.Addr+uint64(d.Len) : d.Addr+uint64(d.Len)]
}
