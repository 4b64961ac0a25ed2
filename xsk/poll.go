package xsk

import (
	"time"

	"golang.org/x/sys/unix"
)

// RefillNeedsWakeup reports whether the kernel has flagged the fill ring as
// needing a wakeup: a driver in zero-copy mode that ran out of fill entries
// stops looking at the ring until poll (Poll) or recvfrom (Wakeup) tells it
// to. Without need_wakeup the kernel never sets the flag and this is false.
func (s *Socket) RefillNeedsWakeup() bool {
	return !s.closed && s.needWakeup && s.fill.needWakeup()
}

// TxNeedsWakeup reports whether the TX ring's need-wakeup flag is set (or
// need_wakeup is off, when every Flush kicks).
func (s *Socket) TxNeedsWakeup() bool {
	return !s.closed && (!s.needWakeup || s.tx.needWakeup())
}

// Wakeup asks the driver to look at the fill ring again without blocking
// (recvfrom with MSG_DONTWAIT). Back-pressure errnos are not errors;
// anything else comes back as a *KickError.
func (s *Socket) Wakeup() error {
	if s.closed {
		return ErrClosed
	}
	for {
		switch e := wakeRX(s.fd); e {
		case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS:
			s.ctr.wakeups++
			return nil
		case unix.EINTR:
		default:
			return &KickError{Op: "recvfrom", Ifindex: s.ifindex, Queue: s.queue, Errno: e}
		}
	}
}

// Poll waits up to timeout (forever when negative, not at all when zero)
// for the RX ring to hold frames, with poll(POLLIN). Polling also wakes a
// zero-copy driver that flagged the fill ring. It returns true when frames
// are ready. An interrupted wait resumes with the time that is left.
func (s *Socket) Poll(timeout time.Duration) (bool, error) {
	if s.closed {
		return false, ErrClosed
	}
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	for {
		var ts *unix.Timespec
		var t unix.Timespec
		if timeout >= 0 {
			t = unix.NsecToTimespec(int64(max(timeout, 0)))
			ts = &t
		}
		s.pollFds[0].Revents = 0
		n, err := unix.Ppoll(s.pollFds[:], ts, nil)
		if err == unix.EINTR {
			if timeout > 0 {
				if timeout = time.Until(deadline); timeout < 0 {
					timeout = 0
				}
			}
			continue
		}
		if err != nil {
			return false, s.opError("poll", err)
		}
		if n == 0 {
			return false, nil
		}
		re := s.pollFds[0].Revents
		if re&(unix.POLLNVAL|unix.POLLERR) != 0 {
			return false, s.opError("poll", unix.EBADFD)
		}
		return re&unix.POLLIN != 0, nil
	}
}
