package stack

import "github.com/valyala/bytebufferpool"

// bufferPools back every connection's send and receive ring: one pool per
// power-of-two size class (bufferClass), so that each pool sees buffers of
// one size. (A single bytebufferpool.Pool calibrates itself to the 95th
// percentile of the sizes put back and drops larger buffers: with many
// small rings, every large ring of a bulk transfer was allocated anew —
// measured at 60 MB/s of garbage in one 1.7 Gbit/s stream, 4% of the
// shard's CPU in the collector.) Storage is taken on the first byte and
// given back as soon as the ring is empty, so an idle connection holds no
// buffer memory at all.
var bufferPools [bufferClasses]bytebufferpool.Pool

// bufferClasses: sizes minRingSize<<0 .. minRingSize<<(bufferClasses-1)
// (4 KiB to 1 GiB; a ring's bound is far below).
const bufferClasses = 19

// bufferClass is the pool of buffers of capacity size: the smallest class
// whose size is at least size.
func bufferClass(size int) int {
	k := 0
	for k < bufferClasses-1 && minRingSize<<k < size {
		k++
	}
	return k
}

// minRingSize is the first allocation of a ring; it doubles up to the bound.
const minRingSize = 4096

// ring is a bounded byte FIFO on pooled storage. Bytes are stored at
// buf[(head+i) % len(buf)] for i < n. A receive ring also holds out-of-order
// bytes past n (written with writeAt, up to hi): they sit where they belong
// in the stream, so reassembly is a commit, not a copy.
type ring struct {
	bb   *bytebufferpool.ByteBuffer
	buf  []byte
	head int
	n    int
	hi   int // bytes from head that hold data: n plus out-of-order data beyond it
	max  int

	// The size the ring takes when it fills again after emptying: the
	// size it had, halved when it held less than a quarter of that.
	// Without it a ring that empties between bursts (a bulk transfer to
	// a fast reader) grew 4, 8, 16 ... KiB again, a copy at each step.
	next int
	peak int // the most bytes held (hi) since the storage was taken

	// The engine's account the storage is charged to (nil: not accounted).
	acct *memAcct
	kind MemoryKind
}

func (r *ring) Len() int  { return r.n }
func (r *ring) Free() int { return r.max - r.n }

// grow makes room for need bytes in total, keeping the stored bytes in order.
func (r *ring) grow(need int) {
	size := len(r.buf)
	if size == 0 {
		size = max(minRingSize, r.next)
	}
	for size < need {
		size *= 2
	}
	size = min(size, r.max)
	bb := bufferPools[bufferClass(size)].Get()
	if cap(bb.B) < size {
		bb.B = make([]byte, size)
	}
	nb := bb.B[:size]
	if keep := max(r.n, r.hi); keep > 0 {
		a, b := r.peek(0, keep)
		copy(nb[copy(nb, a):], b)
	}
	r.putStorage()
	r.bb, r.buf, r.head = bb, nb, 0
	if r.acct != nil {
		r.acct.add(r.kind, int64(cap(nb)))
	}
}

// releaseStorage gives an empty ring's storage back, remembering the size
// for the next fill.
func (r *ring) releaseStorage() {
	if r.bb == nil {
		return
	}
	r.next = len(r.buf)
	if r.peak < len(r.buf)/4 {
		r.next = len(r.buf) / 2
	}
	r.peak = 0
	r.putStorage()
}

func (r *ring) putStorage() {
	if r.bb != nil {
		// Put sizes the buffer by len(B) to calibrate the pool: after 42000
		// Puts it stops keeping buffers larger than the 95th percentile. At
		// length 0 every ring would count as 64 bytes, and from then on
		// every ring would allocate anew. Report the real size.
		r.bb.B = r.bb.B[:cap(r.bb.B)]
		if r.acct != nil {
			r.acct.add(r.kind, -int64(cap(r.buf)))
		}
		bufferPools[bufferClass(cap(r.bb.B))].Put(r.bb)
		r.bb, r.buf = nil, nil
	}
}

// Write appends as much of p as fits under the bound and returns how much.
func (r *ring) Write(p []byte) int {
	k := min(len(p), r.Free())
	if k == 0 {
		return 0
	}
	if r.n+k > len(r.buf) {
		r.grow(r.n + k)
	}
	tail := r.head + r.n
	if tail >= len(r.buf) {
		tail -= len(r.buf)
	}
	c := copy(r.buf[tail:], p[:k])
	copy(r.buf, p[c:k])
	r.n += k
	r.hi = max(r.hi, r.n)
	r.peak = max(r.peak, r.hi)
	return k
}

// writeAt stores p at offset off from the head without making it readable
// (out-of-order data, off >= n); it returns how much fit under the bound.
func (r *ring) writeAt(off int, p []byte) int {
	k := min(len(p), r.max-off)
	if k <= 0 {
		return 0
	}
	if off+k > len(r.buf) {
		r.grow(off + k)
	}
	pos := r.head + off
	if pos >= len(r.buf) {
		pos -= len(r.buf)
	}
	c := copy(r.buf[pos:], p[:k])
	copy(r.buf, p[c:k])
	r.hi = max(r.hi, off+k)
	r.peak = max(r.peak, r.hi)
	return k
}

// commit makes k bytes already written past n (by writeAt) readable.
func (r *ring) commit(k int) {
	r.n += k
	r.hi = max(r.hi, r.n)
	r.peak = max(r.peak, r.hi)
}

// peek returns the n stored bytes starting off bytes past the head, as up to
// two slices (the second is non-empty when the range wraps).
func (r *ring) peek(off, n int) (a, b []byte) {
	if n <= 0 {
		return nil, nil
	}
	start := r.head + off
	if start >= len(r.buf) {
		start -= len(r.buf)
	}
	if end := start + n; end <= len(r.buf) {
		return r.buf[start:end], nil
	}
	return r.buf[start:], r.buf[:n-(len(r.buf)-start)]
}

// Discard drops the first k stored bytes.
func (r *ring) Discard(k int) {
	r.n -= k
	r.hi -= k
	if r.hi == 0 {
		r.head = 0
		r.releaseStorage()
		return
	}
	r.head += k
	if r.head >= len(r.buf) {
		r.head -= len(r.buf)
	}
}

// Read moves up to len(p) bytes out of the ring.
func (r *ring) Read(p []byte) int {
	k := min(len(p), r.n)
	a, b := r.peek(0, k)
	copy(p[copy(p, a):], b)
	r.Discard(k)
	return k
}

// reset drops everything and gives the storage back.
func (r *ring) reset() {
	r.n, r.hi, r.head = 0, 0, 0
	r.releaseStorage()
}
