package rawxsk

import (
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/internal/lab"
	"github.com/xdproxy/xdproxy/xsk"
)

// Rate is one raw frame-rate measurement of a veth.
type Rate struct {
	Queues  int     `json:"queues"`  // AF_XDP sockets, one per queue, and as many sender threads
	Sent    uint64  `json:"sent"`    // frames the senders got accepted
	Frames  uint64  `json:"frames"`  // counted at the receiving end (TX: every frame, a stray one of near's kernel too)
	Seconds float64 `json:"seconds"` // the time Frames are divided by
	// PerSecond is Frames/Seconds (0 when nothing arrived).
	PerSecond float64 `json:"frames_per_s"`
	// PerQueue is, for RX, the frames each queue's socket received.
	PerQueue []uint64 `json:"per_queue,omitempty"`
	// Refused counts sendmmsg calls the kernel refused and that were
	// retried (RX's AF_PACKET senders).
	Refused int `json:"refused,omitempty"`
}

func (r *Rate) finish() {
	r.PerSecond = 0
	if r.Seconds > 0 {
		r.PerSecond = float64(r.Frames) / r.Seconds
	}
}

// MeasureTX measures raw AF_XDP transmission from near, the end of a veth
// pair whose other end is far: one AF_XDP socket per queue of near (0 to
// queues-1), each driven by its own pinned thread (onThreads), sends
// FrameLen-byte UDP frames to far's MAC with XSKSend for d; a CountDrop
// program on far counts what crosses. The rate is frames counted at far
// over the time from the first send until every sender's frames completed.
// Nothing else may use near's queues or far's XDP hook meanwhile; all is
// closed and detached on return (see OpenXSK for when the queues are free
// again).
func MeasureTX(near, far *lab.End, queues int, d time.Duration) (r Rate, err error) {
	var c closers
	defer func() { err = errors.Join(err, c.close()) }()
	r.Queues = queues
	counter, err := NewCounter()
	if err != nil {
		return r, err
	}
	c.add(counter)
	prog, err := CountDrop(counter)
	if err != nil {
		return r, err
	}
	c.add(prog)
	lk, err := AttachXDP(far.NS, prog, far.Index)
	if err != nil {
		return r, err
	}
	c.add(lk)
	socks, err := openXSKs(near, queues, &c)
	if err != nil {
		return r, err
	}
	frame := UDPFrame(far.MAC, near.MAC, near.IP4(), far.IP4())
	before, err := Count(counter)
	if err != nil {
		return r, err
	}

	completed := make([]int, queues)
	errs := make([]error, queues)
	t0 := time.Now()
	until := t0.Add(d)
	onThreads(queues, func(q int) {
		completed[q], errs[q] = XSKSend(socks[q], frame, math.MaxInt, until)
	})
	r.Seconds = time.Since(t0).Seconds()
	if err := errors.Join(errs...); err != nil {
		return r, fmt.Errorf("AF_XDP transmit: %w", err)
	}
	for _, n := range completed {
		r.Sent += uint64(n)
	}
	if r.Frames, err = Settle(counter, before, r.Sent); err != nil {
		return r, err
	}
	r.finish()
	return r, nil
}

// MeasureRX measures raw AF_XDP reception on near, the end of a veth pair
// whose other end is far: a RedirectAll program on near steers every frame
// into the AF_XDP socket of its queue (one per queue of near, each drained
// by its own thread, see StartReceiving), while queues pinned threads
// (onThreads) send FrameLen-byte UDP frames to near's MAC for d, each with
// its own AF_PACKET socket in far's namespace (qdisc bypassed, Batch frames per sendmmsg,
// refused calls retried). The rate is test frames received over the time
// from the first send to the last frame received. On veth the receive
// path's kernel work (XDP, the copy into the UMEM) runs in the sender's
// softirq, so the rate is bounded by what the senders' cores can do. All is
// closed and detached on return (see OpenXSK for when the queues are free
// again).
func MeasureRX(near, far *lab.End, queues int, d time.Duration) (r Rate, err error) {
	var c closers
	defer func() { err = errors.Join(err, c.close()) }()
	r.Queues = queues
	socks, err := openXSKs(near, queues, &c)
	if err != nil {
		return r, err
	}
	xsks, err := NewXSKMap(queues)
	if err != nil {
		return r, err
	}
	c.add(xsks)
	for q, s := range socks {
		if err := xsks.Put(uint32(q), uint32(s.FD())); err != nil {
			return r, fmt.Errorf("xsks[%d] = %d: %w", q, s.FD(), err)
		}
	}
	prog, err := RedirectAll(xsks)
	if err != nil {
		return r, err
	}
	c.add(prog)
	senders := make([]int, queues)
	for i := range senders {
		if senders[i], err = PacketSocket(far.NS, far.Index); err != nil {
			return r, err
		}
		c.add(fdCloser(senders[i]))
	}
	lk, err := AttachXDP(near.NS, prog, near.Index)
	if err != nil {
		return r, err
	}
	c.add(lk)
	batch := NewSendBatch(UDPFrame(near.MAC, far.MAC, far.IP4(), near.IP4()))

	var sendersDone atomic.Bool
	received := make([]<-chan Received, queues)
	for q, s := range socks {
		received[q] = StartReceiving(NewXSKReceiver(s), math.MaxInt, &sendersDone)
	}
	sent := make([]int, queues)
	refused := make([]int, queues)
	errs := make([]error, queues)
	t0 := time.Now()
	until := t0.Add(d)
	onThreads(queues, func(i int) {
		sent[i], refused[i], errs[i] = Send(senders[i], batch, math.MaxInt, until)
	})
	sendersDone.Store(true)
	last := t0
	for q := range received {
		got := <-received[q]
		r.PerQueue = append(r.PerQueue, uint64(got.Frames))
		r.Frames += uint64(got.Frames)
		if got.Frames > 0 && got.Last.After(last) {
			last = got.Last
		}
	}
	for i := range sent {
		r.Sent += uint64(sent[i])
		r.Refused += refused[i]
	}
	if err := errors.Join(errs...); err != nil {
		return r, fmt.Errorf("AF_PACKET send: %w", err)
	}
	r.Seconds = last.Sub(t0).Seconds()
	r.finish()
	return r, nil
}

// openXSKs opens an AF_XDP socket on each of queues queues of e, each
// added to c.
func openXSKs(e *lab.End, queues int, c *closers) ([]*xsk.Socket, error) {
	if queues < 1 {
		return nil, fmt.Errorf("%d queues", queues)
	}
	socks := make([]*xsk.Socket, queues)
	for q := range socks {
		s, err := OpenXSK(e.NS, e.Index, q)
		if err != nil {
			return nil, err
		}
		c.add(s)
		socks[q] = s
	}
	return socks, nil
}

// onThreads runs fn(0) … fn(n-1) at once, each on its own OS thread
// pinned to CPU i mod NumCPU, and waits for them. Pinned, the senders do
// not share a core while another idles, and AF_PACKET senders feed every
// queue: the kernel picks an AF_PACKET frame's TX queue, and so the veth
// peer's RX queue, from the sending CPU. The threads are not unlocked:
// Go ends a thread whose goroutine exits locked, so none returns to the
// scheduler with its affinity narrowed.
func onThreads(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			runtime.LockOSThread()
			var cpu unix.CPUSet
			cpu.Set(i % runtime.NumCPU())
			_ = unix.SchedSetaffinity(0, &cpu) // best effort: unpinned it still measures
			fn(i)
		})
	}
	wg.Wait()
}

// closers closes what a measurement opened, last opened first.
type closers []io.Closer

func (c *closers) add(x io.Closer) { *c = append(*c, x) }

func (c closers) close() error {
	var errs []error
	for i := len(c) - 1; i >= 0; i-- {
		if err := c[i].Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

type fdCloser int

func (f fdCloser) Close() error { return unix.Close(int(f)) }
