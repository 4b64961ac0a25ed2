package rawxsk

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/xsk"
)

// drainFor bounds the wait for the last completions once an XSK sender has
// stopped queueing at its deadline.
const drainFor = time.Second

// Send sends copies of the batch's frame on fd with sendmmsg, Batch frames
// per call, until total are sent or the clock passes until. It retries what
// the kernel refused (ENOBUFS: the device dropped it, or a stopped queue)
// and returns how many frames were sent and how many calls were refused.
func Send(fd int, m *MsgBatch, total int, until time.Time) (sent, refused int, err error) {
	for sent < total && time.Now().Before(until) {
		n, e := m.send(fd, min(Batch, total-sent))
		switch e {
		case 0:
			sent += n
		case unix.ENOBUFS, unix.EAGAIN, unix.EINTR:
			refused++
		default:
			return sent, refused, fmt.Errorf("sendmmsg: %w", e)
		}
	}
	return sent, refused, nil
}

// XSKSend transmits copies of frame through s, Flush every Batch frames,
// completions reaped, until total are queued or the clock passes until;
// then it waits until the kernel has completed them all (until the later of
// until and drainFor from then). It returns how many frames completed and
// allocates nothing.
func XSKSend(s *xsk.Socket, frame []byte, total int, until time.Time) (completed int, err error) {
	st, err := s.Stats()
	if err != nil {
		return 0, err
	}
	done0 := st.Completed
	sent := 0
	for iter := 0; sent < total; iter++ {
		for i := 0; i < Batch && sent < total; i++ {
			f := s.NextFrame()
			if f == nil {
				break
			}
			copy(f, frame)
			s.Commit(len(frame))
			sent++
		}
		if err := s.Flush(); err != nil {
			return 0, err
		}
		s.Complete()
		if iter&63 == 63 && time.Now().After(until) {
			break
		}
	}
	drainUntil := until
	if t := time.Now().Add(drainFor); t.After(drainUntil) {
		drainUntil = t
	}
	for spins := 0; ; spins++ {
		if err := s.Flush(); err != nil {
			return 0, err
		}
		s.Complete()
		if st, err = s.Stats(); err != nil {
			return 0, err
		}
		completed = int(st.Completed - done0)
		if completed >= sent || spins&1023 == 1023 && time.Now().After(drainUntil) {
			return completed, nil
		}
	}
}
