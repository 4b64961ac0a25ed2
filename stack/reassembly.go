package stack

import (
	"github.com/xdproxy/xdproxy/stack/seqnum"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// Out-of-order data is written straight into the receive ring at the offset
// where it belongs (ring.writeAt), so memory is bounded by the receive
// buffer and reassembly never copies twice. oooSet remembers which ranges
// past RCV.NXT are held; when the hole at RCV.NXT fills, the ranges that now
// touch it are committed in one step. The same ranges are the SACK blocks we
// report (RFC 2018), the most recently changed first.

// maxOOORanges bounds the holes we track per connection; a segment that
// would need more is dropped and counted (RxOOOOverflow) — the sender
// retransmits it later.
const maxOOORanges = 16

type seqRange struct{ start, end seqnum.Value }

type oooSet struct {
	r      [maxOOORanges]seqRange // sorted by start, disjoint, not touching
	n      int
	recent [maxOOORanges]seqnum.Value // starts of ranges, most recently changed first (SACK order)
	nrec   int
}

// add records [start, end). It returns false (nothing recorded) when the
// set is full and the range would need a new entry.
func (s *oooSet) add(start, end seqnum.Value) bool {
	// Find the first range that ends at or after start (may merge).
	i := 0
	for i < s.n && s.r[i].end.LessThan(start) {
		i++
	}
	j := i
	for j < s.n && s.r[j].start.LessThanEq(end) {
		j++
	}
	// Ranges i..j-1 overlap or touch [start, end): merge them.
	if i == j {
		if s.n == maxOOORanges {
			return false
		}
		copy(s.r[i+1:s.n+1], s.r[i:s.n])
		s.r[i] = seqRange{start, end}
		s.n++
	} else {
		for k := i; k < j; k++ {
			s.forget(s.r[k].start)
		}
		s.r[i] = seqRange{seqnum.Min(start, s.r[i].start), seqnum.Max(end, s.r[j-1].end)}
		copy(s.r[i+1:], s.r[j:s.n])
		s.n -= j - i - 1
	}
	s.touch(s.r[i].start)
	return true
}

// touch moves the range starting at start to the front of the recency list.
func (s *oooSet) touch(start seqnum.Value) {
	s.forget(start)
	copy(s.recent[1:s.nrec+1], s.recent[:s.nrec])
	s.recent[0] = start
	s.nrec++
}

func (s *oooSet) forget(start seqnum.Value) {
	for k := 0; k < s.nrec; k++ {
		if s.recent[k] == start {
			copy(s.recent[k:], s.recent[k+1:s.nrec])
			s.nrec--
			return
		}
	}
}

// popFront removes and returns the first range if it starts at or before rcvNxt.
func (s *oooSet) popFront(rcvNxt seqnum.Value) (seqRange, bool) {
	if s.n == 0 || s.r[0].start.GreaterThan(rcvNxt) {
		return seqRange{}, false
	}
	first := s.r[0]
	s.forget(first.start)
	copy(s.r[:], s.r[1:s.n])
	s.n--
	return first, true
}

// covers reports whether [start, end) is already held entirely.
func (s *oooSet) covers(start, end seqnum.Value) bool {
	for i := 0; i < s.n; i++ {
		if s.r[i].start.LessThanEq(start) && end.LessThanEq(s.r[i].end) {
			return true
		}
	}
	return false
}

func (s *oooSet) reset() { s.n, s.nrec = 0, 0 }

// bytes is how many sequence numbers the ranges cover.
func (s *oooSet) bytes() int {
	n := 0
	for _, r := range s.r[:s.n] {
		n += int(r.start.Size(r.end))
	}
	return n
}

// sackBlocks fills o's SACK blocks: a D-SACK block first when dsack is set
// (RFC 2883 section 4), then the held ranges, most recently changed first
// (RFC 2018 section 4). wire trims them to what fits beside the timestamps.
func (s *oooSet) sackBlocks(o *wire.TCPOptions, dsack *seqRange) {
	o.NumSACK = 0
	if dsack != nil {
		o.SACK[0] = wire.SACKBlock{Start: uint32(dsack.start), End: uint32(dsack.end)}
		o.NumSACK = 1
	}
	for k := 0; k < s.nrec && int(o.NumSACK) < len(o.SACK); k++ {
		for i := 0; i < s.n; i++ {
			if s.r[i].start == s.recent[k] {
				o.SACK[o.NumSACK] = wire.SACKBlock{Start: uint32(s.r[i].start), End: uint32(s.r[i].end)}
				o.NumSACK++
				break
			}
		}
	}
}
