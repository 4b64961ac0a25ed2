package rawxsk

import (
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/xsk"
)

const (
	// SpinFor is how long a receiver keeps looking at an empty ring or
	// socket before it blocks, the same for every receive path.
	SpinFor = 50 * time.Microsecond
	// BlockFor bounds one blocking wait of a receiver.
	BlockFor = 10 * time.Millisecond
)

// Receiver is one receive path's consumer.
type Receiver interface {
	// Recv takes what is waiting, in one batch, and returns how many test
	// frames it got. With wait it may first block up to BlockFor.
	Recv(wait bool) int
}

type xskReceiver struct {
	s     *xsk.Socket
	descs []xsk.Desc
}

// NewXSKReceiver drains an AF_XDP socket, Batch descriptors at a time, with
// Receive/Frame/Recycle (Poll when it may block).
func NewXSKReceiver(s *xsk.Socket) Receiver {
	return &xskReceiver{s: s, descs: make([]xsk.Desc, Batch)}
}

func (r *xskReceiver) Recv(wait bool) int {
	n := r.s.Receive(r.descs)
	if n == 0 && wait {
		r.s.Poll(BlockFor)
		n = r.s.Receive(r.descs)
	}
	got := 0
	for _, d := range r.descs[:n] {
		if IsTestFrame(r.s.Frame(d)) {
			got++
		}
	}
	r.s.Recycle(r.descs[:n])
	return got
}

type udpReceiver struct {
	fd int
	m  *MsgBatch
}

// NewUDPReceiver drains a UDP socket with recvmmsg, Batch datagrams per
// call; it sets SO_RCVTIMEO to BlockFor to bound a blocking call.
func NewUDPReceiver(fd int) (Receiver, error) {
	tv := unix.NsecToTimeval(BlockFor.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, err
	}
	return &udpReceiver{fd: fd, m: NewRecvBatch()}, nil
}

func (r *udpReceiver) Recv(wait bool) int {
	flags := unix.MSG_DONTWAIT
	if wait {
		flags = unix.MSG_WAITFORONE
	}
	n, e := r.m.recv(r.fd, flags)
	if e != 0 {
		return 0
	}
	got := 0
	for i := range n {
		if r.m.msgLen(i) == PayloadLen {
			got++
		}
	}
	return got
}

// Received is what a receiver counted: test frames, and when the last
// of them arrived.
type Received struct {
	Frames int
	Last   time.Time
}

// StartReceiving first drains what rcv has left from an earlier run, then
// counts test frames with it on a goroutine locked to its own thread, and
// returns once that goroutine runs. It stops after want frames, or once
// senderDone is set and nothing has come for 2×BlockFor; the count is then
// sent on the channel. An idle receiver spins for SpinFor before each
// blocking wait.
func StartReceiving(rcv Receiver, want int, senderDone *atomic.Bool) <-chan Received {
	for rcv.Recv(false) > 0 {
	}
	ready := make(chan struct{})
	res := make(chan Received, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		close(ready)
		got, last := 0, time.Now()
		var idleSince time.Time
		wait := false
		for got < want {
			n := rcv.Recv(wait)
			now := time.Now()
			if n > 0 {
				got += n
				last, idleSince, wait = now, time.Time{}, false
				continue
			}
			wait = now.Sub(last) > SpinFor
			if senderDone.Load() {
				if idleSince.IsZero() {
					idleSince = now
				} else if now.Sub(idleSince) > 2*BlockFor {
					break
				}
			}
		}
		res <- Received{got, last}
	}()
	<-ready
	return res
}
