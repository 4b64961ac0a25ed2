package stack

import (
	"cmp"
	"slices"
	"sync/atomic"
	"time"
	"unsafe"
)

// Memory: what the engine holds, against the share of the daemon's budget
// it was given, and the pressure behaviour near that share (Linux's tcp_mem).
//
// Counted: the storage of every send and receive ring (what is allocated,
// not the bound; a ring holds none while empty) and every live connection
// record (plus Config.ConnOverhead, the owner's per-connection state). Not
// counted: the TIME_WAIT table, bounded by Config.TimeWaitMax and fixed.
//
// With a share S (Config.MemoryLimit, then SetMemoryShare):
//   - below 3/4 S, normal;
//   - from 3/4 S (the low mark), pressure: rings stop growing past
//     pressureRing (never below one MSS), so send buffers that have not
//     grown take no more and receive windows that have not grown are
//     clamped to what the ring already has; a window already advertised is
//     never retracted. Below the low mark again, normal: windows reopen
//     with the next segment sent;
//   - from 7/8 S (the high mark), new connections are answered with SYN
//     cookies (no state, no buffers until the handshake completes), and
//     the connections that have made no progress for longest (no byte
//     acknowledged or received) are reset, oldest first, until use is back
//     under 13/16 S (MemoryResets);
//   - at S, SYNs are dropped (SYNDropsMemory).
//
// Every transition is counted (MemoryPressureEntered, MemoryHighEntered,
// MemoryNormalEntered) and the level and byte counts are published in
// MemoryStats for any goroutine to read.
//
// Besides pressure, a send buffer follows the data in every mode: it takes
// at most twice the largest window the peer has offered (at least
// minSndLimit; Config.SndBuffer stays the maximum), and a spliced
// connection's receive window is bounded by what its partner's send buffer
// can still take (Conn.Splice), so a session whose reader stalls holds one
// buffer's worth in that direction, not two.

// MemoryKind is one kind of memory the engine accounts.
type MemoryKind uint8

const (
	MemSend    MemoryKind = iota // send ring storage
	MemReceive                   // receive ring storage (in-order and out-of-order bytes)
	MemConn                      // connection records (Conn plus Config.ConnOverhead)
	NumMemoryKinds
)

var memKindNames = [NumMemoryKinds]string{"send", "receive", "conn"}

func (k MemoryKind) String() string {
	if k < NumMemoryKinds {
		return memKindNames[k]
	}
	return "unknown"
}

// MemoryLevel is the engine's pressure mode.
type MemoryLevel int32

const (
	MemoryNormal   MemoryLevel = iota
	MemoryPressure             // above the low mark: rings stop growing, windows clamp
	MemoryHigh                 // above the high mark: SYN cookies, stalest connections reset
)

func (l MemoryLevel) String() string {
	switch l {
	case MemoryNormal:
		return "normal"
	case MemoryPressure:
		return "pressure"
	case MemoryHigh:
		return "high"
	}
	return "unknown"
}

const (
	// pressureRing is how far a ring may grow under pressure.
	pressureRing = 16 << 10
	// minSndLimit is the least a send buffer may hold however small the
	// peer's window: enough to keep a few segments queued behind it.
	minSndLimit = 16 << 10
	// reapInterval spaces the scans for stale connections at the high mark.
	reapInterval = 10 * time.Millisecond
	// connBytes is what a connection record costs on the heap (the Conn
	// and its flow table entry).
	connBytes = int64(unsafe.Sizeof(Conn{})) + 64
)

// MemoryStats are the engine's memory gauges, readable from any goroutine.
type MemoryStats struct {
	bytes [NumMemoryKinds]atomic.Int64
	share atomic.Int64
	level atomic.Int32
}

// Bytes returns what the engine holds of kind k.
func (m *MemoryStats) Bytes(k MemoryKind) int64 { return m.bytes[k].Load() }

// Used returns what the engine holds in all.
func (m *MemoryStats) Used() int64 {
	var n int64
	for k := range m.bytes {
		n += m.bytes[k].Load()
	}
	return n
}

// Share returns the engine's share of the budget (0: no limit).
func (m *MemoryStats) Share() int64 { return m.share.Load() }

// Level returns the engine's pressure mode.
func (m *MemoryStats) Level() MemoryLevel { return MemoryLevel(m.level.Load()) }

// Memory returns the engine's memory gauges (safe to read from any goroutine).
func (e *Engine) Memory() *MemoryStats { return &e.mem.pub }

// SetMemoryShare gives the engine a new share of the budget (0: no limit).
// It may be called from any goroutine; the engine acts on it at its next
// allocation or Tick.
func (e *Engine) SetMemoryShare(n int64) { e.mem.pub.share.Store(max(n, 0)) }

// ChargeMemory adds delta bytes of kind k that the application holds for
// the engine's connections (a proxy's own buffers: the write buffer of a
// backend leg on an OS socket) to the account, and to the pressure it
// drives. Engine goroutine only; the application gives back what it
// charged.
func (e *Engine) ChargeMemory(k MemoryKind, delta int64) { e.mem.add(k, delta) }

// memAcct is the engine's side of MemoryStats: plain counts owned by the
// engine goroutine, published to the atomics as they change.
type memAcct struct {
	used     [NumMemoryKinds]int64
	total    int64
	level    MemoryLevel
	pub      MemoryStats
	counters *Counters
	reapAt   Time
	scratch  []*Conn
}

func (m *memAcct) add(k MemoryKind, d int64) {
	if d == 0 {
		return
	}
	m.used[k] += d
	m.total += d
	m.pub.bytes[k].Store(m.used[k])
	m.relevel()
}

// marks returns the low and high marks of share s.
func marks(s int64) (low, high int64) { return s / 4 * 3, s / 8 * 7 }

// relevel moves the pressure mode to where use now stands.
func (m *memAcct) relevel() {
	lv := MemoryNormal
	if s := m.pub.share.Load(); s > 0 {
		low, high := marks(s)
		switch {
		case m.total >= high:
			lv = MemoryHigh
		case m.total >= low:
			lv = MemoryPressure
		}
	}
	if lv == m.level {
		return
	}
	switch {
	case lv == MemoryHigh:
		m.counters.inc(MemoryHighEntered)
	case lv == MemoryPressure && m.level == MemoryNormal:
		m.counters.inc(MemoryPressureEntered)
	case lv == MemoryNormal:
		m.counters.inc(MemoryNormalEntered)
	}
	m.level = lv
	m.pub.level.Store(int32(lv))
}

// full reports whether use has reached the share itself.
func (m *memAcct) full() bool {
	s := m.pub.share.Load()
	return s > 0 && m.total >= s
}

// ringCap is how far ring r may fill now: its bound, or under pressure no
// further than its storage has already grown (at least pressureRing, and
// one MSS).
func (e *Engine) ringCap(r *ring, mss int) int {
	if e.mem.level == MemoryNormal {
		return r.max
	}
	return min(r.max, max(len(r.buf), pressureRing, mss))
}

// sndLimit is how many bytes c's send buffer may hold now: twice the
// largest window the peer has offered (at least minSndLimit), within the
// configured bound and what pressure allows.
func (c *Conn) sndLimit() int {
	lim := c.e.ringCap(&c.sndBuf, c.sndMSS)
	if w := 2 * int(c.maxSndWnd); w < lim {
		lim = max(w, min(minSndLimit, lim))
	}
	return lim
}

// sndSpace is how many more bytes c's send buffer takes now.
func (c *Conn) sndSpace() int { return max(c.sndLimit()-c.sndBuf.Len(), 0) }

// rcvSpace is the receive window c can offer now (before scaling and silly
// window avoidance): the ring's room under pressure's cap, and for a
// spliced connection no more than its partner's send buffer can still take
// beyond what already waits here.
func (c *Conn) rcvSpace() int {
	free := c.e.ringCap(&c.rcvBuf, int(c.ourMSS())) - c.rcvBuf.Len()
	if o := c.spliceTo; o != nil && o.state.synchronized() && !o.appClosed {
		free = min(free, o.sndSpace()-c.rcvBuf.Len())
	}
	return max(free, 0)
}

// Splice ties c's receive window to out's send buffer: c never offers its
// peer more than out can still queue beyond what waits unread in c. A
// proxy splicing c's bytes into out (and reading c whenever out has room)
// then holds at most out's send buffer in that direction, whatever the
// reader on out's side does. Call it on both legs of a session, each with
// the other. out == nil unties c.
func (c *Conn) Splice(out *Conn) {
	if o := c.spliceTo; o != nil && o.spliceFrom == c {
		o.spliceFrom = nil
	}
	c.spliceTo = out
	if out != nil {
		out.spliceFrom = c
	}
}

// heldBytes is the ring storage c holds.
func (c *Conn) heldBytes() int64 { return int64(cap(c.sndBuf.buf) + cap(c.rcvBuf.buf)) }

// freeable is what resetting c gives back: its rings and its record.
func (c *Conn) freeable() int64 {
	if c.state == Closed {
		return 0
	}
	return c.heldBytes() + connBytes + int64(c.e.cfg.ConnOverhead)
}

// reap resets the connections that have gone longest without progress,
// until use is back under 13/16 of the share. Buffers or not: a
// population of clients that trickle a byte now and then (slow writers)
// costs records, not rings, and is reset the same way once its records
// are what fills the share. A spliced pair counts together: the owner
// resets the partner when told (EventReset).
func (e *Engine) reap() {
	m := &e.mem
	m.reapAt = e.now.Add(reapInterval)
	s := m.pub.share.Load()
	excess := m.total - s/16*13
	if s == 0 || excess <= 0 {
		return
	}
	m.scratch = m.scratch[:0]
	for _, c := range e.flows {
		if c.state.synchronized() && c.state != TimeWait {
			m.scratch = append(m.scratch, c)
		}
	}
	slices.SortFunc(m.scratch, func(a, b *Conn) int { return cmp.Compare(a.progressAt, b.progressAt) })
	for i, c := range m.scratch {
		m.scratch[i] = nil
		if excess <= 0 || c.state == Closed {
			continue
		}
		excess -= c.freeable()
		if o := c.spliceTo; o != nil {
			excess -= o.freeable()
		}
		c.resetForMemory()
	}
	m.scratch = m.scratch[:0]
}

// resetForMemory resets c to free what it holds: RST to the peer, and
// EventReset with ErrMemoryPressure to the application.
func (c *Conn) resetForMemory() {
	e := c.e
	e.counters.inc(MemoryResets)
	e.sendRST(c.key, c.peer, c.sndNxt, 0, false)
	c.fail(ErrMemoryPressure, EventReset)
}
