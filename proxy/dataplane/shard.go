package dataplane

import (
	"math/bits"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/xsk"
)

// Shard is one queue index's worth of xdproxy: an AF_XDP socket on that
// queue of every interface, one TCP engine that knows all the interfaces,
// and the application running on it, all driven by one goroutine locked to
// its OS thread — so a session whose legs use two NICs lives in one
// goroutine. Nothing in the loop takes a lock: frames for flows another
// shard owns go through lock-free hand-off rings, and work from other
// goroutines (a listing for the admin server, a neighbour update) arrives as
// a function on a channel the loop polls without blocking.
type Shard struct {
	id     int
	dp     *Dataplane
	socks  []*xsk.Socket // per interface; nil where the interface has no queue for this shard
	queues []int         // per interface: the queue of socks[i], or -1
	eng    *stack.Engine

	inbox    []*handoff     // inbox[j]: frames shard j handed to us
	outbox   []*handoff     // outbox[j]: frames we hand to shard j
	txIn     []*handoff     // txIn[j]: frames shard j sends through our sockets (it has none on that interface)
	forwards []*forwardSink // our sinks for interfaces we have no socket on
	efd      int            // eventfd that wakes this shard from poll

	sleeping atomic.Bool
	stopping atomic.Bool
	tap      atomic.Pointer[shardTap] // the running capture's side on this shard (capture.go), or nil
	done     chan struct{}
	ctl      chan func(*Shard)

	driver    Driver            // the application's own timers and file descriptors, if it has any
	listeners []*stack.Listener // the engine listeners of this shard
	descs     []xsk.Desc
	now       stack.Time
	handleFn  func(ifx int, frame []byte) // s.handle bound once, so draining allocates nothing
	txFn      func(ifx int, frame []byte) // s.transmit bound once
	stats     ShardStats
	lastBusy  stack.Time
	pollFDs   []unix.PollFd
	pollTS    unix.Timespec // ppoll's timeout (the kernel writes the time left back)
	eventBuf  [8]byte
	spinLimit time.Duration
}

// Driver is implemented by an application that has work of its own in the
// shard loop besides engine events: timers (Deadline/Tick) and a file
// descriptor to wait on (an epoll set of kernel sockets, FD; -1 for none).
// Poll does non-blocking work on that descriptor and reports whether there was any.
type Driver interface {
	Deadline() stack.Time
	Tick(now stack.Time)
	FD() int
	Poll(now stack.Time) bool
}

// ShardStats are a shard's loop counters, readable from any goroutine.
type ShardStats struct {
	RxFrames       atomic.Uint64 // frames received on this shard's queue
	HandoffsOut    atomic.Uint64 // frames passed to the shard that owns their flow
	HandoffsIn     atomic.Uint64 // frames received from other shards
	HandoffDrops   atomic.Uint64 // hand-off ring full: frame dropped
	Sleeps         atomic.Uint64 // times the loop went to sleep in poll
	Wakeups        atomic.Uint64 // eventfd wake-ups sent to this shard
	FlushErrors    atomic.Uint64 // TX kicks the kernel refused (retried on the next loop)
	CtlDrops       atomic.Uint64 // control messages dropped: the shard's queue was full
	TxHandoffs     atomic.Uint64 // frames sent through another shard's socket (we have none on that interface)
	TxHandoffDrops atomic.Uint64 // such frames lost: the ring to that shard, or its TX ring, was full
}

func inc(c *atomic.Uint64) { c.Store(c.Load() + 1) } // single writer

// ID is the shard's index: it serves the ID-th queue of every interface.
func (s *Shard) ID() int { return s.id }

// Queue is the queue of interface ifx the shard serves, or -1 (the
// interface has fewer queues than there are shards).
func (s *Shard) Queue(ifx int) int { return s.queues[ifx] }

// Engine is the shard's TCP engine. Only code running on the shard (the
// application's handler, or a function passed to Do) may use it.
func (s *Shard) Engine() *stack.Engine { return s.eng }

// Now is the shard's clock, for engine calls made from the shard.
func (s *Shard) Now() stack.Time { return s.dp.now() }

// Stats returns the loop counters.
func (s *Shard) Stats() *ShardStats { return &s.stats }

// Socket returns the shard's AF_XDP socket on interface ifx (for its kernel
// statistics), or nil.
func (s *Shard) Socket(ifx int) *xsk.Socket { return s.socks[ifx] }

// Driver returns the application's Driver, if it has one.
func (s *Shard) Driver() Driver { return s.driver }

// SetDriver replaces the application's Driver; only code running on the
// shard may call it.
func (s *Shard) SetDriver(d Driver) { s.driver = d }

// Listeners are the shard's engine listeners.
func (s *Shard) Listeners() []*stack.Listener { return s.listeners }

// Dataplane is the data plane the shard belongs to.
func (s *Shard) Dataplane() *Dataplane { return s.dp }

// Do runs fn on the shard's goroutine and waits for it. It returns false if
// the shard has stopped.
func (s *Shard) Do(fn func(*Shard)) bool {
	ran := make(chan struct{})
	select {
	case s.ctl <- func(sh *Shard) { fn(sh); close(ran) }:
	case <-s.done:
		return false
	}
	s.wake()
	select {
	case <-ran:
		return true
	case <-s.done:
		return false
	}
}

// Post queues fn to run on the shard without waiting; false if the queue is full.
func (s *Shard) Post(fn func(*Shard)) bool {
	select {
	case s.ctl <- fn:
		s.wake()
		return true
	default:
		inc(&s.stats.CtlDrops)
		return false
	}
}

// wake interrupts the shard's poll if it is sleeping.
func (s *Shard) wake() {
	if s.sleeping.Load() && s.efd > 0 {
		var one = [8]byte{1}
		unix.Write(s.efd, one[:])
		s.stats.Wakeups.Add(1)
	}
}

func (s *Shard) handle(ifx int, frame []byte) {
	s.now = s.dp.now()
	s.eng.HandleFrameOn(s.now, ifx, frame)
}

// transmit sends a frame another shard built for interface ifx through our socket there.
func (s *Shard) transmit(ifx int, frame []byte) {
	sock := s.socks[ifx]
	buf := sock.NextFrame()
	if buf == nil || len(frame) > len(buf) {
		inc(&s.stats.TxHandoffDrops)
		return
	}
	sock.Commit(copy(buf, frame))
}

// run is the shard loop: RX batch → engine → TX batch, timers from the
// engine's deadline, busy-polling while traffic flows and sleeping in poll
// (with need_wakeup) once the loop has been idle for spinLimit.
func (s *Shard) run() {
	runtime.LockOSThread()
	defer close(s.done)
	if cur, err := netns.Get(); err == nil {
		if !cur.Equal(s.dp.netns) {
			if err := netns.Set(s.dp.netns); err != nil {
				s.dp.log.Error("shard cannot enter the data plane's network namespace", "shard", s.id, "err", err)
			}
			// This thread's namespace changed: never hand it back to the
			// scheduler (no UnlockOSThread; the thread exits with the goroutine).
		} else {
			// Any thread will do: unlocked, the preemption sysmon asks of
			// a goroutine that never yields (every 10 ms; see rawPpoll) is
			// a trip through this M's own scheduler, not a hand-off to
			// another thread and back (two futex wake-ups, and a wait
			// for the OS to run that thread on a busy machine).
			runtime.UnlockOSThread()
		}
		cur.Close()
	}
	s.handleFn = s.handle
	s.txFn = s.transmit
	for !s.stopping.Load() {
		s.now = s.dp.now()
		busy := s.poll()
		if busy {
			s.lastBusy = s.now
			continue
		}
		if time.Duration(s.now-s.lastBusy) < s.spinLimit {
			continue
		}
		s.sleep()
	}
	// Last words: whatever the engine still has to send (RSTs of a drain).
	s.drainTxIn()
	for _, sock := range s.socks {
		if sock != nil {
			sock.Flush()
		}
	}
}

// poll does one round of work and reports whether there was any.
func (s *Shard) poll() bool {
	busy := false
	for _, sock := range s.socks {
		if sock != nil {
			sock.Complete()
		}
	}
	// What one round reads arrived together: the engine acknowledges the
	// in-order data of each connection once for all of it (as GRO would).
	s.eng.BeginBatch()
	// Wake an owner at its first frame of the batch (so it starts at once)
	// and again after the batch (so a frame pushed after it went back to
	// sleep is not stranded) — not once per frame.
	var woken uint64 // bit per shard (the first 64) handed a frame in this round
	for ifx, sock := range s.socks {
		if sock == nil {
			continue
		}
		n := sock.Receive(s.descs)
		if n == 0 {
			continue
		}
		busy = true
		s.stats.RxFrames.Store(s.stats.RxFrames.Load() + uint64(n))
		// A capture, off, costs this load and test per batch (loaded here,
		// not kept across the frame loop below, so as not to hold a register).
		if tap := s.tap.Load(); tap != nil {
			// Before the engine, which may rewrite a frame in place.
			tap.received(s.now, ifx, s.queues[ifx], sock, s.descs[:n])
		}
		for _, d := range s.descs[:n] {
			f := sock.Frame(d)
			if o := s.dp.owner(f, s.id); o != s.id {
				if s.outbox[o].push(uint8(ifx), f) {
					inc(&s.stats.HandoffsOut)
					if o >= 64 || woken&(1<<o) == 0 {
						s.dp.shards[o].wake()
					}
					if o < 64 {
						woken |= 1 << o
					}
				} else {
					inc(&s.stats.HandoffDrops)
				}
				continue
			}
			// The clock is read for each frame, as Linux's tcp_mstamp_refresh
			// per segment: a batch is long when the thread is preempted in
			// it, and a time read at its start would make the RTT of an ACK
			// late in it short by the preemption (measured: a 50 ms path
			// sampled at 3-19 ms on this loaded box, BBR's model collapsed).
			s.now = s.dp.now()
			s.eng.HandleFrameOn(s.now, ifx, f)
		}
		sock.Recycle(s.descs[:n])
	}
	for _, in := range s.inbox {
		if in != nil && !in.empty() {
			busy = true
			n := in.drain(s.handleFn)
			s.stats.HandoffsIn.Store(s.stats.HandoffsIn.Load() + uint64(n))
		}
	}
	s.now = s.dp.now()
	s.eng.EndBatch(s.now)
	for more := true; more; {
		select {
		case fn := <-s.ctl:
			fn(s)
			busy = true
		default:
			more = false
		}
	}
	if s.eng.NextDeadline() <= s.now {
		s.eng.Tick(s.now)
	}
	if d := s.driver; d != nil {
		if d.FD() >= 0 && d.Poll(s.now) {
			busy = true
		}
		if d.Deadline() <= s.now {
			d.Tick(s.now)
		}
	}
	if s.drainTxIn() {
		busy = true
	}
	for _, fs := range s.forwards {
		if fs.sent {
			fs.sent = false
			fs.to.wake()
		}
	}
	// And this load per round, with a test per socket.
	tap := s.tap.Load()
	var sentAt stack.Time
	if tap != nil {
		sentAt = s.dp.now()
	}
	for ifx, sock := range s.socks {
		if sock == nil {
			continue
		}
		if tap != nil {
			tap.sent(sentAt, ifx, s.queues[ifx], sock)
		}
		if err := sock.Flush(); err != nil {
			inc(&s.stats.FlushErrors)
		}
		if sock.RefillNeedsWakeup() && busy {
			sock.Poll(0)
		}
	}
	for ; woken != 0; woken &= woken - 1 {
		s.dp.shards[bits.TrailingZeros64(woken)].wake()
	}
	return busy
}

// drainTxIn sends what other shards queued for our sockets.
func (s *Shard) drainTxIn() bool {
	busy := false
	for _, in := range s.txIn {
		if in != nil && !in.empty() {
			busy = true
			in.drain(s.txFn)
		}
	}
	return busy
}

// sleep waits in poll for a frame, a hand-off, a control message or the
// engine's next deadline.
func (s *Shard) sleep() {
	s.sleeping.Store(true)
	// Re-check after announcing the sleep, so a producer that saw us awake a
	// moment ago has either queued before this check or will write the eventfd.
	for _, in := range s.inbox {
		if in != nil && !in.empty() {
			s.sleeping.Store(false)
			return
		}
	}
	for _, in := range s.txIn {
		if in != nil && !in.empty() {
			s.sleeping.Store(false)
			return
		}
	}
	if len(s.ctl) > 0 || s.stopping.Load() {
		s.sleeping.Store(false)
		return
	}
	// Bounded so a missed wake-up costs at most this.
	timeout := time.Second
	deadline := s.eng.NextDeadline()
	fds := s.pollFDs[:0]
	for _, sock := range s.socks {
		if sock != nil {
			fds = append(fds, unix.PollFd{Fd: int32(sock.FD()), Events: unix.POLLIN})
		}
	}
	efdAt := len(fds)
	fds = append(fds, unix.PollFd{Fd: int32(s.efd), Events: unix.POLLIN})
	if d := s.driver; d != nil {
		deadline = min(deadline, d.Deadline())
		if fd := d.FD(); fd >= 0 {
			fds = append(fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
		}
	}
	s.pollFDs = fds
	if deadline != stack.Never {
		timeout = max(0, min(timeout, time.Duration(deadline-s.dp.now())))
	}
	inc(&s.stats.Sleeps)
	// ppoll, not poll: the engine's deadlines are to the microsecond
	// (pacing at hundreds of Mbit/s releases a segment every few tens of
	// microseconds), and poll's millisecond timeout rounded every wait up
	// to a whole millisecond, a round trip on a LAN.
	s.pollTS = unix.NsecToTimespec(int64(timeout))
	n := rawPpoll(fds, &s.pollTS)
	s.sleeping.Store(false)
	if n > 0 && fds[efdAt].Revents&unix.POLLIN != 0 {
		unix.Read(s.efd, s.eventBuf[:])
	}
}

// forwardSink is an engine's sink for an interface its shard has no socket
// on: frames go into a hand-off ring to the shard that has one, which
// copies them into its TX ring (Shard.transmit).
type forwardSink struct {
	h        *handoff
	ifx      uint8
	to, from *Shard
	sent     bool // a frame went in since the last wake-up of to
}

func (f *forwardSink) NextFrame() []byte {
	b := f.h.reserve()
	if b == nil {
		inc(&f.from.stats.TxHandoffDrops)
	}
	return b
}

func (f *forwardSink) Commit(n int) {
	f.h.commit(f.ifx, n)
	f.sent = true
	inc(&f.from.stats.TxHandoffs)
}

// rawPpoll is ppoll(2) without telling Go's scheduler that the thread
// blocks (RawSyscall, no entersyscall/exitsyscall); it returns how many
// descriptors are ready, 0 on a timeout or an error (EINTR: a signal).
//
// Why: a shard never yields its goroutine, and in Go 1.26 a P whose thread
// sits in a system call stays "running". Every 10 ms sysmon preempts the
// shard's never-changing schedtick and, finding it in a syscall, takes its
// P away and hands it off; each such retake resets sysmon to waking every
// 20 µs for a millisecond, and the shard's wake-up has to win a P back
// (futex). Measured at 2,000 req/s with one shard: sysmon 2,400 wake-ups
// a second, 2.4% of the machine's CPU in sysmon alone. Raw, the P stays
// with the sleeping shard (GOMAXPROCS is the shards plus two: spareProcs,
// so other goroutines have Ps of their own); sysmon's preemption every
// 10 ms arrives as a signal that interrupts the ppoll (EINTR, never
// restarted), the loop reaches a preemption point and yields, and sysmon
// backs off to its 10 ms period; a stop-the-world re-sends that signal
// every 100 µs until the shard stops, so a garbage collection waits for a
// sleeping shard no longer than that. Not inlined: its own entry is a
// preemption point, whatever loop calls it (the system call wrappers are
// nosplit and have none).
//
//go:noinline
func rawPpoll(fds []unix.PollFd, ts *unix.Timespec) int {
	if len(fds) == 0 {
		return 0
	}
	n, _, e := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), uintptr(len(fds)),
		uintptr(unsafe.Pointer(ts)), 0, 0, 0)
	if e != 0 {
		return 0
	}
	return int(n)
}
