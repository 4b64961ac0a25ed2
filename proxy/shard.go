package proxy

import (
	"math/bits"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/xsk"
)

// Shard is one NIC queue's worth of xdproxy: an AF_XDP socket, a TCP engine
// and the application running on it, all driven by one goroutine locked to
// its OS thread. Nothing in the loop takes a lock: frames for flows another
// shard owns go through lock-free hand-off rings, and work from other
// goroutines (a listing for the admin server, a neighbour update) arrives as
// a function on a channel the loop polls without blocking.
type Shard struct {
	id    int
	queue int
	dp    *Dataplane
	sock  *xsk.Socket
	eng   *stack.Engine

	inbox  []*handoff // inbox[j]: frames shard j handed to us
	outbox []*handoff // outbox[j]: frames we hand to shard j
	efd    int        // eventfd that wakes this shard from poll

	sleeping atomic.Bool
	stopping atomic.Bool
	done     chan struct{}
	ctl      chan func(*Shard)

	driver    Driver            // the application's own timers and file descriptors, if it has any
	listeners []*stack.Listener // the engine listeners of this shard
	descs     []xsk.Desc
	now       stack.Time
	handleFn  func([]byte) // s.handle bound once, so draining allocates nothing
	stats     ShardStats
	lastBusy  stack.Time
	pollFDs   [3]unix.PollFd
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
	RxFrames     atomic.Uint64 // frames received on this shard's queue
	HandoffsOut  atomic.Uint64 // frames passed to the shard that owns their flow
	HandoffsIn   atomic.Uint64 // frames received from other shards
	HandoffDrops atomic.Uint64 // hand-off ring full: frame dropped
	Sleeps       atomic.Uint64 // times the loop went to sleep in poll
	Wakeups      atomic.Uint64 // eventfd wake-ups sent to this shard
	FlushErrors  atomic.Uint64 // TX kicks the kernel refused (retried on the next loop)
	CtlDrops     atomic.Uint64 // control messages dropped: the shard's queue was full
}

func inc(c *atomic.Uint64) { c.Store(c.Load() + 1) } // single writer

// ID is the shard's index; Queue the NIC queue it serves.
func (s *Shard) ID() int    { return s.id }
func (s *Shard) Queue() int { return s.queue }

// Engine is the shard's TCP engine. Only code running on the shard (the
// application's handler, or a function passed to Do) may use it.
func (s *Shard) Engine() *stack.Engine { return s.eng }

// Now is the shard's clock, for engine calls made from the shard.
func (s *Shard) Now() stack.Time { return s.dp.now() }

// Stats returns the loop counters.
func (s *Shard) Stats() *ShardStats { return &s.stats }

// Socket returns the shard's AF_XDP socket (for its kernel statistics).
func (s *Shard) Socket() *xsk.Socket { return s.sock }

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
	if s.sleeping.Load() {
		var one = [8]byte{1}
		unix.Write(s.efd, one[:])
		s.stats.Wakeups.Add(1)
	}
}

func (s *Shard) handle(frame []byte) { s.eng.HandleFrame(s.now, frame) }

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
			defer runtime.UnlockOSThread()
		}
		cur.Close()
	}
	s.handleFn = s.handle
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
	s.sock.Flush()
}

// poll does one round of work and reports whether there was any.
func (s *Shard) poll() bool {
	busy := false
	s.sock.Complete()
	// What one round reads arrived together: the engine acknowledges the
	// in-order data of each connection once for all of it (as GRO would).
	s.eng.BeginBatch()
	if n := s.sock.Receive(s.descs); n > 0 {
		busy = true
		s.stats.RxFrames.Store(s.stats.RxFrames.Load() + uint64(n))
		// Wake an owner at its first frame of the batch (so it starts at
		// once) and again after the batch (so a frame pushed after it went
		// back to sleep is not stranded) — not once per frame.
		var woken uint64 // bit per shard (the first 64) handed a frame in this batch
		for _, d := range s.descs[:n] {
			f := s.sock.Frame(d)
			if o := s.dp.owner(f, s.id); o != s.id {
				if s.outbox[o].push(f) {
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
			s.eng.HandleFrame(s.now, f)
		}
		s.sock.Recycle(s.descs[:n])
		for ; woken != 0; woken &= woken - 1 {
			s.dp.shards[bits.TrailingZeros64(woken)].wake()
		}
	}
	for _, in := range s.inbox {
		if in != nil && !in.empty() {
			busy = true
			n := in.drain(s.handleFn)
			s.stats.HandoffsIn.Store(s.stats.HandoffsIn.Load() + uint64(n))
		}
	}
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
	if err := s.sock.Flush(); err != nil {
		inc(&s.stats.FlushErrors)
	}
	if s.sock.RefillNeedsWakeup() && busy {
		s.sock.Poll(0)
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
	if len(s.ctl) > 0 || s.stopping.Load() {
		s.sleeping.Store(false)
		return
	}
	timeout := 1000 // ms; bounded so a missed wake-up costs at most this
	deadline := s.eng.NextDeadline()
	fds := s.pollFDs[:2]
	if d := s.driver; d != nil {
		deadline = min(deadline, d.Deadline())
		if fd := d.FD(); fd >= 0 {
			s.pollFDs[2] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
			fds = s.pollFDs[:3]
		}
	}
	if deadline != stack.Never {
		ms := int((time.Duration(deadline-s.dp.now()) + time.Millisecond - 1) / time.Millisecond)
		timeout = max(0, min(timeout, ms))
	}
	inc(&s.stats.Sleeps)
	s.pollFDs[0] = unix.PollFd{Fd: int32(s.sock.FD()), Events: unix.POLLIN}
	s.pollFDs[1] = unix.PollFd{Fd: int32(s.efd), Events: unix.POLLIN}
	n, _ := unix.Poll(fds, timeout)
	s.sleeping.Store(false)
	if n > 0 && s.pollFDs[1].Revents&unix.POLLIN != 0 {
		unix.Read(s.efd, s.eventBuf[:])
	}
}
