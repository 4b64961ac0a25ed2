package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/stack/wire"
	"github.com/xdproxy/xdproxy/xsk"
)

// Packet capture: the frames the shards take off their AF_XDP sockets and
// put on them, which tcpdump on the interface never sees (XDP redirects
// them before the kernel's taps; in zero-copy mode the sent ones too).
//
// There is one tap per direction, at the socket:
//
//   - received: each RX batch as it comes off a socket, before the engine
//     (or the hand-off to the shard that owns the flow) sees it — so a
//     frame handed to another shard is captured once, by the shard whose
//     queue it arrived on;
//   - sent: the frames committed to a socket's TX ring, just before the
//     Flush that hands them to the kernel — the engine's own frames and
//     the ones other shards sent through this socket (TX hand-offs) alike,
//     each once, by the shard that owns the socket.
//
// Off, a tap costs one atomic pointer load per loop round and a nil check
// per RX batch and per socket flush; it allocates nothing. On, each shard
// checks every frame against the filter (a few loads of the raw frame)
// and copies the matching ones into a ring of its own (single producer:
// the shard; single consumer: the capture's reader). A full ring drops the
// frame from the capture, counted; traffic never waits for the reader.

// DefaultCaptureRing is each shard's capture ring, in bytes, when
// StartCapture is given none: about 2,700 full 1,514-byte frames, or ten
// times as many ACKs.
const DefaultCaptureRing = 4 << 20

// ErrCaptureBusy is StartCapture's error while another capture runs: one
// at a time, so that a second reader cannot double the copying the shards
// do.
var ErrCaptureBusy = errors.New("a capture is already running (one at a time)")

// CaptureFilter selects the frames a capture keeps; the zero filter keeps
// every frame. Every field that is set must match.
type CaptureFilter struct {
	// Host is the source or destination address of an IPv4 or IPv6
	// packet, or the sender or target address of an ARP message.
	Host netip.Addr
	// Port is the source or destination port (TCP or UDP).
	Port uint16
	// Listener is a TCP address and port on either side: a listener's
	// client legs, and nothing else that merely shares its address or port.
	Listener netip.AddrPort
}

// String renders f for people (and for the capture file's interface
// filter option): "host 10.0.0.1 and port 80", "" for the zero filter.
func (f CaptureFilter) String() string {
	var parts []string
	if f.Host.IsValid() {
		parts = append(parts, "host "+f.Host.String())
	}
	if f.Port != 0 {
		parts = append(parts, fmt.Sprintf("port %d", f.Port))
	}
	if f.Listener.IsValid() {
		parts = append(parts, "listener "+f.Listener.String())
	}
	return strings.Join(parts, " and ")
}

// Match reports whether frame, a raw Ethernet frame, passes f. It reads
// the headers in place (VLAN tags skipped; IPv6 extension headers and IPv4
// fragments after the first carry no ports) and allocates nothing.
func (f *CaptureFilter) Match(frame []byte) bool {
	if !f.Host.IsValid() && f.Port == 0 && !f.Listener.IsValid() {
		return true
	}
	e, ok := frameEnds(frame)
	if !ok {
		return false
	}
	if f.Host.IsValid() && e.src != f.Host && e.dst != f.Host {
		return false
	}
	if f.Port != 0 && (!e.ports || e.sport != f.Port && e.dport != f.Port) {
		return false
	}
	if l := f.Listener; l.IsValid() {
		if !e.ports || e.proto != wire.ProtoTCP {
			return false
		}
		if (e.src != l.Addr() || e.sport != l.Port()) && (e.dst != l.Addr() || e.dport != l.Port()) {
			return false
		}
	}
	return true
}

// normalized is f with its addresses as frames carry them (an IPv4-mapped
// IPv6 address as IPv4, no zone), so that Match compares them directly.
func (f CaptureFilter) normalized() CaptureFilter {
	if f.Host.IsValid() {
		f.Host = f.Host.Unmap().WithZone("")
	}
	if f.Listener.IsValid() {
		f.Listener = netip.AddrPortFrom(f.Listener.Addr().Unmap().WithZone(""), f.Listener.Port())
	}
	return f
}

// ends are the addresses and ports of a frame, as far as the filter needs.
type ends struct {
	src, dst     netip.Addr
	proto        uint8
	ports        bool // sport and dport are valid (TCP or UDP, first fragment)
	sport, dport uint16
}

const protoUDP = 17

// frameEnds reads the endpoints of an IPv4, IPv6 or ARP frame.
func frameEnds(f []byte) (e ends, ok bool) {
	off := 12
	for {
		if len(f) < off+2 {
			return e, false
		}
		et := binary.BigEndian.Uint16(f[off:])
		off += 2
		if et == wire.EtherTypeVLAN || et == wire.EtherTypeQinQ {
			off += 2
			continue
		}
		var minLen, srcAt, dstAt, addrLen int // the header's minimum length, where its addresses are
		switch et {
		case wire.EtherTypeIPv4:
			minLen, srcAt, dstAt, addrLen = 20, 12, 16, 4
		case wire.EtherTypeIPv6:
			minLen, srcAt, dstAt, addrLen = 40, 8, 24, 16
		case wire.EtherTypeARP: // Ethernet/IPv4 ARP: sender and target protocol addresses
			minLen, srcAt, dstAt, addrLen = 28, 14, 24, 4
		default:
			return e, false
		}
		if len(f) < off+minLen {
			return e, false
		}
		e.src, _ = netip.AddrFromSlice(f[off+srcAt : off+srcAt+addrLen])
		e.dst, _ = netip.AddrFromSlice(f[off+dstAt : off+dstAt+addrLen])
		l4 := len(f) // no ports unless found below
		switch et {
		case wire.EtherTypeIPv4:
			e.proto = f[off+9]
			if binary.BigEndian.Uint16(f[off+6:])&0x1fff == 0 { // later fragments carry no ports
				l4 = off + int(f[off]&0x0f)*4
			}
		case wire.EtherTypeIPv6:
			e.proto, l4 = f[off+6], off+40
		case wire.EtherTypeARP:
			if binary.BigEndian.Uint16(f[off+2:]) != wire.EtherTypeIPv4 || f[off+5] != 4 {
				return e, false
			}
		}
		if (e.proto == wire.ProtoTCP || e.proto == protoUDP) && len(f) >= l4+4 {
			e.ports = true
			e.sport = binary.BigEndian.Uint16(f[l4:])
			e.dport = binary.BigEndian.Uint16(f[l4+2:])
		}
		return e, true
	}
}

// CapturedFrame is one frame a capture kept.
type CapturedFrame struct {
	Time  int64 // Unix nanoseconds: the loop round that received it, or the flush that sent it
	Iface int   // the interface's index (Dataplane.Interfaces)
	Queue int   // the interface's queue
	Out   bool  // sent by the shard (else received)
	Data  []byte
}

// CaptureCounts are a capture's counters for one interface.
type CaptureCounts struct {
	Captured uint64 // frames that matched and went into a ring
	Dropped  uint64 // frames that matched but found their shard's ring full
}

// Capture is a running capture: one ring per shard, read by one goroutine
// (Read) until Close.
type Capture struct {
	d      *Dataplane
	filter CaptureFilter
	start  time.Time
	taps   []*shardTap
	next   []CapturedFrame // per shard: the frame at the head of its ring, when have
	have   []bool
	closed atomic.Bool
}

// StartCapture starts copying the frames f matches, on every shard and
// interface, into rings of ringBytes each (0: DefaultCaptureRing; rounded
// up to a power of two, at least 64 KiB). ErrCaptureBusy while another
// capture runs.
func (d *Dataplane) StartCapture(f CaptureFilter, ringBytes int) (*Capture, error) {
	if ringBytes <= 0 {
		ringBytes = DefaultCaptureRing
	}
	size := 64 << 10
	for size < ringBytes {
		size <<= 1
	}
	c := &Capture{d: d, filter: f.normalized(), start: time.Now(),
		next: make([]CapturedFrame, len(d.shards)), have: make([]bool, len(d.shards))}
	if !d.capture.CompareAndSwap(nil, c) {
		return nil, ErrCaptureBusy
	}
	// A shard's clock plus wall is Unix time: now() is bootBase plus the
	// monotonic time since start.
	wall := d.start.UnixNano() - int64(d.bootBase)
	for range d.shards {
		c.taps = append(c.taps, &shardTap{filter: c.filter, ring: newCaptureRing(size), wall: wall, counts: make([]tapCounts, len(d.ifs))})
	}
	for i, s := range d.shards {
		s.tap.Store(c.taps[i])
	}
	return c, nil
}

// Filter is the capture's filter.
func (c *Capture) Filter() CaptureFilter { return c.filter }

// Start is when the capture started.
func (c *Capture) Start() time.Time { return c.start }

// Read hands fn the frames queued now, oldest first across the shards, at
// most max of them (max <= 0: no limit), and returns how many. A frame's
// Data is valid only until fn returns. Only one goroutine may Read.
func (c *Capture) Read(max int, fn func(*CapturedFrame)) int {
	n := 0
	for max <= 0 || n < max {
		best := -1
		for i, tp := range c.taps {
			if !c.have[i] {
				c.have[i] = tp.ring.peek(&c.next[i])
			}
			if c.have[i] && (best < 0 || c.next[i].Time < c.next[best].Time) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		fn(&c.next[best])
		c.taps[best].ring.advance(len(c.next[best].Data))
		c.have[best] = false
		n++
	}
	return n
}

// Counts returns the capture's counters, per interface, summed over the shards.
func (c *Capture) Counts() []CaptureCounts {
	out := make([]CaptureCounts, len(c.d.ifs))
	for _, tp := range c.taps {
		for i := range tp.counts {
			out[i].Captured += tp.counts[i].captured.Load()
			out[i].Dropped += tp.counts[i].dropped.Load()
		}
	}
	return out
}

// Close stops the capture: the shards stop copying (within a loop round;
// what they still copy is never read) and another capture may start.
func (c *Capture) Close() {
	if c.closed.Swap(true) {
		return
	}
	for _, s := range c.d.shards {
		s.tap.CompareAndSwap(c.taps[s.id], nil)
	}
	c.d.capture.CompareAndSwap(c, nil)
}

// shardTap is one shard's side of a capture.
type shardTap struct {
	filter CaptureFilter
	ring   *captureRing
	wall   int64       // shard clock + wall = Unix nanoseconds
	counts []tapCounts // per interface
}

// tapCounts are written by the shard only and read by anyone.
type tapCounts struct {
	captured, dropped atomic.Uint64
}

// frame offers one frame to the capture.
func (tp *shardTap) frame(now stack.Time, ifx, queue int, out bool, f []byte) {
	if !tp.filter.Match(f) {
		return
	}
	c := &tp.counts[ifx]
	if tp.ring.push(int64(now)+tp.wall, ifx, queue, out, f) {
		inc(&c.captured)
	} else {
		inc(&c.dropped)
	}
}

// received offers an RX batch of sock (interface ifx) to the capture.
func (tp *shardTap) received(now stack.Time, ifx, queue int, sock *xsk.Socket, descs []xsk.Desc) {
	for _, d := range descs {
		if f := sock.Frame(d); f != nil {
			tp.frame(now, ifx, queue, false, f)
		}
	}
}

// sent offers the frames the next Flush of sock (interface ifx) sends.
func (tp *shardTap) sent(now stack.Time, ifx, queue int, sock *xsk.Socket) {
	for i, n := 0, sock.Unflushed(); i < n; i++ {
		// nil: a descriptor that continues a multi-buffer frame, which
		// its first descriptor already showed whole.
		if f := sock.UnflushedFrame(i); f != nil {
			tp.frame(now, ifx, queue, true, f)
		}
	}
}

// captureRing is a single-producer/single-consumer ring of variable-length
// records (a frame and its header), so that small frames (ACKs) take
// little room. head and tail are byte counts that only grow; a record
// starts at tail&mask. Records are 16-byte aligned, so the room left at
// the end of the buffer is 0 or holds a header: when a record does not fit
// there, the producer writes a wrap marker (length recWrap) and starts the
// record at offset 0.
//
// As in handoff, each side loads the other's index atomically and
// publishes its own with an atomic store after touching the bytes it
// covers.
type captureRing struct {
	_    [64]byte
	head atomic.Uint64 // written by the consumer only
	_    [56]byte
	tail atomic.Uint64 // written by the producer only
	_    [56]byte
	buf  []byte
	mask uint64
}

// The record header: time (8 bytes), length (2), queue (2), interface (1),
// direction (1: 0 in, 1 out), 2 unused; little-endian.
const (
	recHeader        = 16
	recAlign         = 16
	recWrap   uint16 = 0xffff
	recMaxLen        = 0xfff0
)

func newCaptureRing(size int) *captureRing {
	return &captureRing{buf: make([]byte, size), mask: uint64(size - 1)}
}

func recordSize(n int) uint64 { return recHeader + (uint64(n)+recAlign-1)&^(recAlign-1) }

// push copies a frame in; false when the ring has no room for it (or it
// cannot be a frame: longer than recMaxLen, or an interface index that
// does not fit a byte). It never waits.
func (r *captureRing) push(ts int64, ifx, queue int, out bool, frame []byte) bool {
	if len(frame) > recMaxLen || ifx > 0xff {
		return false
	}
	need := recordSize(len(frame))
	size := uint64(len(r.buf))
	t := r.tail.Load()
	pos := t & r.mask
	var skip uint64
	if size-pos < need {
		skip = size - pos
	}
	if t+skip+need-r.head.Load() > size {
		return false
	}
	if skip > 0 {
		binary.LittleEndian.PutUint16(r.buf[pos+8:], recWrap)
		pos = 0
	}
	h := r.buf[pos : pos+recHeader]
	binary.LittleEndian.PutUint64(h[0:], uint64(ts))
	binary.LittleEndian.PutUint16(h[8:], uint16(len(frame)))
	binary.LittleEndian.PutUint16(h[10:], uint16(queue))
	h[12] = byte(ifx)
	h[13] = 0
	if out {
		h[13] = 1
	}
	copy(r.buf[pos+recHeader:], frame)
	r.tail.Store(t + skip + need)
	return true
}

// peek fills f with the oldest record, in place, and reports whether there
// was one; advance(len(f.Data)) then releases it.
func (r *captureRing) peek(f *CapturedFrame) bool {
	h := r.head.Load()
	t := r.tail.Load()
	for h != t {
		pos := h & r.mask
		hdr := r.buf[pos : pos+recHeader]
		n := binary.LittleEndian.Uint16(hdr[8:])
		if n == recWrap {
			h += uint64(len(r.buf)) - pos
			r.head.Store(h)
			continue
		}
		f.Time = int64(binary.LittleEndian.Uint64(hdr[0:]))
		f.Queue = int(binary.LittleEndian.Uint16(hdr[10:]))
		f.Iface = int(hdr[12])
		f.Out = hdr[13] == 1
		start := pos + recHeader
		f.Data = r.buf[start : start+uint64(n) : start+uint64(n)]
		return true
	}
	return false
}

// advance releases the record peek returned (n: its length).
func (r *captureRing) advance(n int) { r.head.Store(r.head.Load() + recordSize(n)) }
