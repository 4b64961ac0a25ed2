package xsk

// Receive moves up to len(descs) received frames from the RX ring into
// descs and returns how many. It reads the kernel's producer index at most
// once and writes the consumer index once per call, and allocates nothing.
// The frames are the caller's until it passes them to Recycle. On a
// multi-buffer socket a packet that spans frames comes gathered into a
// scratch slot instead, valid until the next Receive (multibuf.go).
func (s *Socket) Receive(descs []Desc) int {
	if s.closed || len(descs) == 0 {
		return 0
	}
	if s.mb.on {
		return s.receiveChains(descs)
	}
	n := min(s.rx.available(uint32(min(len(descs), int(s.rx.size)))), uint32(len(descs)))
	if n == 0 {
		return 0
	}
	for i := range n {
		d := s.rx.at(i)
		descs[i] = Desc{Addr: d.Addr, Len: d.Len}
		s.umem.set(d.Addr, ownedUser)
	}
	s.rx.release(n)
	s.ctr.rxFrames += uint64(n)
	return int(n)
}

// Frame returns the bytes of a descriptor in place, without copying. Its
// capacity runs to the end of the UMEM frame, so a frame may be rewritten
// longer (for example to answer in place). It returns nil for a descriptor
// that does not lie inside one frame of this socket's UMEM.
func (s *Socket) Frame(d Desc) []byte {
	if d.Addr&scratchAddr != 0 {
		return s.scratchFrame(d) // a multi-buffer packet, gathered
	}
	base, ok := s.umem.base(d.Addr)
	if !ok {
		return nil
	}
	end := base + s.umem.frameSize
	if d.Addr+uint64(d.Len) > end {
		return nil
	}
	return s.umem.mem[d.Addr : d.Addr+uint64(d.Len) : end]
}

// Recycle gives received frames back to the kernel through the fill ring,
// publishing the fill producer index once. A frame that does not fit (which
// cannot happen while every recycled frame came from Receive) goes to the
// TX free stack instead. A descriptor that is not a received frame still
// held by the caller (outside the UMEM, or recycled twice) is ignored and
// counted in Stats.BadDescs.
func (s *Socket) Recycle(descs []Desc) {
	if s.closed || len(descs) == 0 {
		return
	}
	room := s.fill.free(uint32(len(descs)))
	put := false
	for _, d := range descs {
		if d.Addr&scratchAddr != 0 && s.mb.on {
			continue // gathered: its frames went back at Receive
		}
		addr, ok := s.umem.base(d.Addr)
		if !ok || !s.umem.move(addr, ownedUser, ownedRx) {
			s.ctr.badDescs++
			continue
		}
		if room > 0 {
			s.fill.put(addr)
			room--
			put = true
		} else {
			s.umem.set(addr, ownedFree)
			s.umem.push(addr)
		}
	}
	if put {
		s.fill.submit()
	}
}
