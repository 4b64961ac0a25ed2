package lab

import (
	"encoding/binary"
	"math/rand/v2"
	"time"
)

// line is one direction of a WAN's delay line: it decides the fate of each
// frame that arrives on one side (drop, or the time it leaves) and hands
// the frames back in departure order. It does no I/O and reads no clock:
// the pump passes the time in (nanoseconds on the monotonic clock since the
// WAN started), which keeps it testable with made-up times.
type line struct {
	cfg        WANPath
	queueLimit int64 // ns of bottleneck backlog that QueueBytes stands for
	rng        *rand.Rand

	slab []byte  // slots of wanFrameSize bytes
	free []int32 // free slot indices (a stack: recently used slots stay warm)

	fifo pktRing   // frames in departure order, due non-decreasing
	held []heldPkt // reordered frames waiting to be overtaken

	linkFree int64 // when the bottleneck has sent all it holds
	lastDue  int64 // due time of the last frame put on fifo
	bad      bool  // Gilbert-Elliott state
	nextSeq  uint64
	outSeq   uint64 // 1 + the arrival number of the latest-arrived frame that has left

	st WANDirStats
}

// pkt is a frame in the delay line.
type pkt struct {
	arrived int64
	due     int64
	seq     uint64 // arrival order
	slot    int32
	n       uint16 // length
	queue   uint16 // RX queue it came in on; it leaves on the same queue
}

type heldPkt struct {
	pkt
	wait     int   // later frames still to overtake it
	deadline int64 // when it leaves anyway
}

func newLine(slots int, seed uint64, dir uint64) *line {
	l := &line{
		rng:  rand.New(rand.NewPCG(seed, dir)),
		slab: make([]byte, slots*wanFrameSize), // pages are touched only when used
		free: make([]int32, slots),
		fifo: pktRing{buf: make([]pkt, slots)},
	}
	for i := range l.free {
		l.free[i] = int32(slots - 1 - i)
	}
	return l
}

// setConfig puts p in force for the frames that arrive from now on.
func (l *line) setConfig(p WANPath) {
	l.cfg = p
	l.queueLimit = 0
	if p.Rate > 0 {
		l.queueLimit = int64(float64(p.queueBytes()) * 8e9 / float64(p.Rate))
	}
	if p.Burst == nil {
		l.bad = false
	}
}

// impaired reports whether loss and reordering apply to frame: IPv4 and
// IPv6 packets other than neighbour discovery.
func impaired(frame []byte) bool {
	if len(frame) < 14 {
		return false
	}
	off := 12
	et := binary.BigEndian.Uint16(frame[off:])
	for (et == 0x8100 || et == 0x88a8) && len(frame) >= off+6 { // VLAN tags
		off += 4
		et = binary.BigEndian.Uint16(frame[off:])
	}
	ip := off + 2
	switch et {
	case 0x0800:
		return true
	case 0x86dd:
		// Neighbour discovery: ICMPv6 (next header 58) types 133-137,
		// right after the fixed header (it carries no extension header).
		if len(frame) >= ip+41 && frame[ip+6] == 58 {
			if t := frame[ip+40]; t >= 133 && t <= 137 {
				return false
			}
		}
		return true
	}
	return false
}

// arrive takes a frame read at time now on RX queue q: it is dropped, or
// copied into the delay line with the time it is due to leave.
func (l *line) arrive(now int64, frame []byte, q int) {
	l.st.Packets++
	l.st.Bytes += uint64(len(frame))
	imp := impaired(frame)
	if !imp {
		l.st.Exempt++
	}
	if imp && l.lost() {
		return
	}
	if len(frame) > wanFrameSize {
		l.st.Dropped.Oversize++
		return
	}
	if len(l.free) == 0 {
		l.st.Dropped.NoBuffer++
		return
	}
	// The bottleneck: a FIFO served at Rate, whose backlog is the time
	// until it has sent what it holds.
	departs := now
	if r := l.cfg.Rate; r > 0 {
		start := max(now, l.linkFree)
		tx := int64(len(frame)) * 8e9 / r
		if start-now+tx > l.queueLimit {
			l.st.Dropped.Queue++
			return
		}
		l.linkFree = start + tx
		departs = l.linkFree
	}
	due := departs + int64(l.cfg.Delay)
	if j := int64(l.cfg.Jitter); j > 0 {
		due = max(due+l.rng.Int64N(2*j+1)-j, departs)
	}
	slot := l.free[len(l.free)-1]
	l.free = l.free[:len(l.free)-1]
	copy(l.slab[int(slot)*wanFrameSize:], frame)
	p := pkt{arrived: now, seq: l.nextSeq, slot: slot, n: uint16(len(frame)), queue: uint16(q)}
	l.nextSeq++
	l.st.Delayed++
	l.st.InFlight++
	l.st.MaxInFlight = max(l.st.MaxInFlight, l.st.InFlight)
	if imp && l.cfg.Reorder > 0 && l.rng.Float64() < l.cfg.Reorder {
		p.due = due
		l.held = append(l.held, heldPkt{pkt: p, wait: l.cfg.reorderDistance(), deadline: due + int64(l.cfg.reorderTimeout())})
		return
	}
	// Jitter never reorders: no frame is due before the one ahead of it.
	p.due = max(due, l.lastDue)
	l.lastDue = p.due
	l.fifo.push(p)
}

// lost draws the loss of one packet: Gilbert-Elliott first, then random
// loss, and counts it.
func (l *line) lost() bool {
	if g := l.cfg.Burst; g != nil {
		if l.bad {
			l.bad = l.rng.Float64() >= g.R
		} else {
			l.bad = l.rng.Float64() < g.P
		}
		p := g.LossGood
		if l.bad {
			p = g.lossBad()
		}
		if p > 0 && l.rng.Float64() < p {
			l.st.Dropped.Burst++
			return true
		}
	}
	if l.cfg.Loss > 0 && l.rng.Float64() < l.cfg.Loss {
		l.st.Dropped.Loss++
		return true
	}
	return false
}

// next returns the earliest time something in the line is due, and false
// when it is empty.
func (l *line) next() (int64, bool) {
	t, ok := int64(0), false
	if l.fifo.len() > 0 {
		t, ok = l.fifo.peek().due, true
	}
	for _, h := range l.held {
		d := h.deadline
		if h.wait <= 0 {
			d = 0 // overtaken, waiting only for TX room: due now
		}
		if !ok || d < t {
			t, ok = d, true
		}
	}
	return t, ok
}

// release hands the frames due by now to send, in departure order, at most
// budget of them, and stops at the first one send refuses (no TX room: it
// stays, and goes first next time; blocked is then true). send gets the
// frame's bytes, valid only during the call. It returns how many went.
func (l *line) release(now int64, budget int, send func(frame []byte, queue int) bool) (sent int, blocked bool) {
	for ; sent < budget; sent++ {
		if i := l.readyHeld(now); i >= 0 {
			h := l.held[i]
			if !l.emit(now, h.pkt, false, send) {
				return sent, true
			}
			l.held = append(l.held[:i], l.held[i+1:]...)
			continue
		}
		if l.fifo.len() == 0 || l.fifo.peek().due > now {
			return sent, false
		}
		p := l.fifo.peek()
		if !l.emit(now, p, true, send) {
			return sent, true
		}
		l.fifo.pop()
		// Each frame that leaves overtakes the held frames that arrived
		// before it; one overtaken ReorderDistance times is ready, and
		// leaves right behind it (readyHeld, next round).
		for i := range l.held {
			if l.held[i].seq < p.seq {
				l.held[i].wait--
			}
		}
	}
	return sent, false
}

// readyHeld returns the index of the held frame that leaves before the
// next fifo frame, or -1: first one that has been overtaken often enough,
// else the one whose deadline came first, if it came before the fifo head
// is due.
func (l *line) readyHeld(now int64) int {
	best := -1
	for i, h := range l.held {
		if h.wait <= 0 && (best < 0 || h.seq < l.held[best].seq) {
			best = i
		}
	}
	if best >= 0 {
		return best
	}
	for i, h := range l.held {
		if h.deadline <= now && (best < 0 || h.deadline < l.held[best].deadline) {
			best = i
		}
	}
	if best >= 0 && l.fifo.len() > 0 && l.fifo.peek().due < l.held[best].deadline {
		return -1
	}
	return best
}

// emit sends p and, when it went, frees its slot and counts it. onTime
// frames (not held back for reordering) count the time they left after
// they were due in Late.
func (l *line) emit(now int64, p pkt, onTime bool, send func([]byte, int) bool) bool {
	off := int(p.slot) * wanFrameSize
	if !send(l.slab[off:off+int(p.n)], int(p.queue)) {
		return false
	}
	l.free = append(l.free, p.slot)
	l.st.Forwarded++
	l.st.ForwardedBytes += uint64(p.n)
	l.st.InFlight--
	l.st.Hold += time.Duration(now - p.arrived)
	if late := time.Duration(now - p.due); onTime && late > 0 {
		l.st.Late += late
		l.st.MaxLate = max(l.st.MaxLate, late)
	}
	if p.seq+1 < l.outSeq {
		l.st.Reordered++
	}
	l.outSeq = max(l.outSeq, p.seq+1)
	return true
}

// pktRing is a FIFO of pkts with a fixed capacity (the number of slots, so
// it cannot overflow).
type pktRing struct {
	buf        []pkt
	head, size int
}

func (r *pktRing) len() int { return r.size }

func (r *pktRing) push(p pkt) {
	r.buf[(r.head+r.size)%len(r.buf)] = p
	r.size++
}

func (r *pktRing) peek() pkt { return r.buf[r.head] }

func (r *pktRing) pop() {
	r.head = (r.head + 1) % len(r.buf)
	r.size--
}
