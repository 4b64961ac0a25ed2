package xsk

import (
	"golang.org/x/sys/unix"
)

// Multi-buffer AF_XDP (Linux 6.6+, Documentation/networking/af_xdp.rst,
// "Multi-Buffer Support"): a socket bound with XDP_USE_SG carries packets
// larger than one UMEM frame as chains of descriptors, XDP_PKT_CONTD set in
// the options of every descriptor but the last, on the RX ring and on the
// TX ring alike. Frames stay at most a page (aligned mode), so a 9000-byte
// MTU takes three 4096-byte frames.
//
// The engine works on contiguous frames, so the chains stop here:
//
//   - RX: Receive hands a one-descriptor packet out in place, as without
//     multi-buffer. A chain is copied, once, into a per-socket scratch slot
//     and its frames go straight back to the fill ring; the Desc that
//     Receive returns for it is marked as scratch (scratchAddr), Frame
//     returns the slot and Recycle skips it. A slot stays valid until the
//     next Receive. With every slot taken, Receive stops before the next
//     chain and leaves it on the ring for the next call.
//   - TX: NextFrame returns a scratch buffer of MaxPacket bytes (the
//     stack.Sink contract: MTU+18 at least), since it cannot know how long
//     the frame will be; Commit copies the frame into as many UMEM frames
//     as it needs and queues them as one chain. It checks at NextFrame that
//     the longest chain has room (frames and TX slots), so Commit never
//     fails for want of them.
//
// What cannot be delivered is dropped and counted: a chain longer than
// MaxPacket or than maxChainDescs descriptors (RxChainDrops), a chain that
// fills the whole RX ring without its last descriptor (RxChainDrops: the
// kernel publishes a packet's descriptors together, so this means a broken
// producer), a Commit longer than MaxPacket (BadCommits).

// maxChainDescs bounds a chain: the kernel's copy-mode TX builds one skb per
// packet and takes at most MAX_SKB_FRAGS+1 descriptors (17+1 by default);
// zero-copy drivers advertise their own limit (xdp_zc_max_segs), at least 1.
const maxChainDescs = 17

// rxScratchSlots is how many gathered chains one Receive can return: with
// three-frame jumbo packets a 64-descriptor batch holds 21.
const rxScratchSlots = 32

// scratchAddr marks a Desc whose packet was gathered into an RX scratch
// slot: Addr&^scratchAddr is the offset in the scratch area. UMEM offsets
// never reach bit 62 (at most 2^20 frames of 4096 bytes).
const scratchAddr = uint64(1) << 62

// multiBuf is a socket's multi-buffer state; on is false (and the rest
// empty) when every packet fits one frame.
type multiBuf struct {
	on        bool
	maxPacket int    // bytes in the longest packet
	maxDescs  uint32 // frames in the longest chain

	rx       []byte // rxScratchSlots slots of slotSize bytes
	slotSize int
	rxUsed   int // slots handed out by the last Receive

	tx     []byte // the TX scratch frame NextFrame hands out
	txHeld bool

	// Counters (Stats).
	rxChains, rxChainDescs, rxChainDrops uint64
	txChains, txChainDescs               uint64
}

// initMultiBuf sizes the scratch buffers when packets can be larger than a
// frame. It allocates only here, once per socket.
func (s *Socket) initMultiBuf() {
	s.mb = multiBuf{}
	if s.cfg.MaxPacket <= s.cfg.FrameSize {
		return
	}
	fs := s.cfg.FrameSize
	mb := &s.mb
	mb.on = true
	mb.maxPacket = s.cfg.MaxPacket
	mb.maxDescs = uint32((s.cfg.MaxPacket + fs - 1) / fs)
	// Slots in whole frames, so that Frame's capacity (to the slot's end)
	// can be rewritten longer as a UMEM frame can.
	mb.slotSize = int(mb.maxDescs) * fs
	mb.rx = make([]byte, rxScratchSlots*mb.slotSize)
	mb.tx = make([]byte, mb.slotSize)
}

// MultiBuffer reports whether the socket was bound with XDP_USE_SG (its
// MaxPacket exceeds its FrameSize).
func (s *Socket) MultiBuffer() bool { return s.mb.on }

// MaxPacket returns the largest packet the socket carries: its FrameSize
// without multi-buffer.
func (s *Socket) MaxPacket() int {
	if s.mb.on {
		return s.mb.maxPacket
	}
	return s.cfg.FrameSize
}

// bindFlags is XDP_USE_SG when packets span frames.
func (mb *multiBuf) bindFlags() uint16 {
	if mb.on {
		return unix.XDP_USE_SG
	}
	return 0
}

// receiveChains is Receive on a multi-buffer socket.
func (s *Socket) receiveChains(descs []Desc) int {
	mb := &s.mb
	mb.rxUsed = 0
	avail := s.rx.available(uint32(min(len(descs), int(s.rx.size))))
	var i uint32 // next RX slot to read
	out := 0
	refilled := false
	for i < avail && out < len(descs) {
		d := s.rx.at(i)
		if d.Options&unix.XDP_PKT_CONTD == 0 {
			descs[out] = Desc{Addr: d.Addr, Len: d.Len}
			s.umem.set(d.Addr, ownedUser)
			out++
			i++
			continue
		}
		// A chain: find its last descriptor among those published.
		end := i + 1
		for end < avail && s.rx.at(end).Options&unix.XDP_PKT_CONTD != 0 {
			end++
		}
		if end == avail {
			// Not all of it is visible. Look again once: the kernel
			// publishes a packet's descriptors together, so a fresh
			// producer index shows the rest.
			if avail = s.rx.available(s.rx.size); end == avail {
				if i == 0 && avail == s.rx.size {
					// A chain as long as the ring never ends: drop
					// it or the socket stalls for good.
					refilled = s.dropChain(i, avail) || refilled
					i = avail
				}
				break
			}
			continue
		}
		n := end - i + 1 // descriptors in the chain
		if mb.rxUsed == rxScratchSlots {
			break // the next Receive takes it
		}
		if s.gather(i, n, descs[out:out+1]) {
			out++
		}
		refilled = true
		i += n
	}
	if i > 0 {
		s.rx.release(i)
	}
	if refilled {
		s.fill.submit()
	}
	s.ctr.rxFrames += uint64(out)
	return out
}

// gather copies the chain of n descriptors at RX slot i into the next
// scratch slot and describes it in out[0]; its frames go back to the fill
// ring (or the free stack) at once. It reports false when the chain was
// dropped (too long, or a descriptor outside the UMEM) instead.
func (s *Socket) gather(i, n uint32, out []Desc) bool {
	mb := &s.mb
	slot := mb.rxUsed * mb.slotSize
	dst := mb.rx[slot : slot+mb.slotSize]
	total := 0
	ok := n <= mb.maxDescs && n <= maxChainDescs
	for j := range n {
		d := s.rx.at(i + j)
		var f []byte
		if d.Addr < uint64(len(s.umem.mem)) {
			f = s.Frame(Desc{Addr: d.Addr, Len: d.Len})
		}
		if f == nil {
			s.ctr.badDescs++
			ok = false
			if d.Addr < uint64(len(s.umem.mem)) {
				s.refill(d.Addr) // ours, only its length was wrong
			}
			continue
		}
		if ok && total+len(f) <= len(dst) {
			total += copy(dst[total:], f)
		} else {
			ok = false
		}
		s.refill(d.Addr)
	}
	if !ok || total > mb.maxPacket {
		mb.rxChainDrops++
		return false
	}
	out[0] = Desc{Addr: scratchAddr | uint64(slot), Len: uint32(total)}
	mb.rxUsed++
	mb.rxChains++
	mb.rxChainDescs += uint64(n)
	return true
}

// dropChain returns the frames of RX slots [i, end) to the fill ring and
// counts one dropped chain; it reports whether it put any on the fill ring.
func (s *Socket) dropChain(i, end uint32) bool {
	for ; i < end; i++ {
		if d := s.rx.at(i); d.Addr < uint64(len(s.umem.mem)) {
			s.refill(d.Addr)
		} else {
			s.ctr.badDescs++
		}
	}
	s.mb.rxChainDrops++
	return true
}

// refill hands the received frame holding addr straight back to the fill
// ring (published by the caller) or, with no room there, to the free stack.
func (s *Socket) refill(addr uint64) {
	base, _ := s.umem.base(addr)
	if s.fill.free(1) > 0 {
		s.fill.put(base)
		s.umem.set(base, ownedRx)
		return
	}
	s.umem.set(base, ownedFree)
	s.umem.push(base)
}

// scratchFrame is Frame for a Desc that Receive marked as scratch.
func (s *Socket) scratchFrame(d Desc) []byte {
	off := d.Addr &^ scratchAddr
	mb := &s.mb
	if !mb.on || off%uint64(mb.slotSize) != 0 || off >= uint64(len(mb.rx)) || int(d.Len) > mb.slotSize {
		return nil
	}
	end := off + uint64(mb.slotSize)
	return mb.rx[off : off+uint64(d.Len) : end]
}

// nextFrameChained is NextFrame on a multi-buffer socket: the TX scratch
// buffer, once the longest chain has room.
func (s *Socket) nextFrameChained() []byte {
	mb := &s.mb
	if mb.txHeld {
		return mb.tx
	}
	if s.tx.free(mb.maxDescs) < mb.maxDescs {
		s.ctr.txRingFull++
		return nil
	}
	if s.umem.nfree < int(mb.maxDescs) {
		s.Complete()
		if s.umem.nfree < int(mb.maxDescs) {
			s.ctr.txNoFrame++
			return nil
		}
	}
	mb.txHeld = true
	return mb.tx
}

// commitChained is Commit on a multi-buffer socket: the first n bytes of the
// scratch buffer go out in ceil(n/FrameSize) frames, chained with
// XDP_PKT_CONTD.
func (s *Socket) commitChained(n int) {
	mb := &s.mb
	if !mb.txHeld {
		return
	}
	if n <= 0 || n > mb.maxPacket {
		s.ctr.badCommits++
		return
	}
	fs := int(s.umem.frameSize)
	descs := uint32(0)
	for off := 0; off < n; off += fs {
		// nextFrameChained checked that frames and slots are there.
		addr, _ := s.umem.pop()
		piece := copy(s.umem.frame(addr), mb.tx[off:n])
		s.umem.set(addr, ownedTx)
		s.tx.putChained(addr, uint32(piece), off+piece < n)
		descs++
	}
	mb.txHeld = false
	s.ctr.txFrames++
	if descs > 1 {
		mb.txChains++
		mb.txChainDescs += uint64(descs)
	}
}

// putChained writes one descriptor, with XDP_PKT_CONTD when more of the
// packet follows; the caller has checked free.
func (r *txRing) putChained(addr uint64, n uint32, more bool) {
	d := &r.descs[r.cachedProd&r.mask]
	d.Addr, d.Len, d.Options = addr, n, 0
	if more {
		d.Options = unix.XDP_PKT_CONTD
	}
	r.cachedProd++
}

// unflushedChain is UnflushedFrame on a multi-buffer socket, where a packet
// may be several descriptors: for the descriptor that starts a packet, the
// whole packet (in place when it is one frame, else gathered into the TX
// scratch buffer, which is free between Commit and the next NextFrame);
// nil for the descriptors that continue one.
func (s *Socket) unflushedChain(i int) []byte {
	r := &s.tx
	at := func(k int) *unix.XDPDesc { return &r.descs[(r.published+uint32(k))&r.mask] }
	if i > 0 && at(i-1).Options&unix.XDP_PKT_CONTD != 0 {
		return nil // continues the packet of an earlier descriptor
	}
	d := at(i)
	if d.Options&unix.XDP_PKT_CONTD == 0 {
		return s.umem.mem[d.Addr : d.Addr+uint64(d.Len) : d.Addr+uint64(d.Len)]
	}
	// The packet spans frames: gather it into the TX scratch buffer, free
	// again after Commit (a capture reads before the next NextFrame).
	if s.mb.txHeld {
		return nil
	}
	n := 0
	unflushed := int(r.cachedProd - r.published)
	for k := i; k < unflushed; k++ {
		d := at(k)
		n += copy(s.mb.tx[n:], s.umem.mem[d.Addr:d.Addr+uint64(d.Len)])
		if d.Options&unix.XDP_PKT_CONTD == 0 {
			break
		}
	}
	return s.mb.tx[:n:n]
}

// multiBufStats adds the multi-buffer counters to st.
func (mb *multiBuf) stats(st *Stats) {
	st.RxChains, st.RxChainDescs, st.RxChainDrops = mb.rxChains, mb.rxChainDescs, mb.rxChainDrops
	st.TxChains, st.TxChainDescs = mb.txChains, mb.txChainDescs
}
