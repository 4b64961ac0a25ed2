package xsk

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("xsk: socket closed")

// KickError is what Flush and Wakeup return when the kernel refused a wakeup
// for a reason other than back-pressure. It is never fatal to the socket:
// the descriptors stay on their ring and the next Flush tries again. Callers
// count it; errors.Is(err, unix.ENETDOWN) tells a link that is down.
type KickError struct {
	Op      string // "sendto" or "recvfrom"
	Ifindex int
	Queue   int
	Errno   unix.Errno
}

func (e *KickError) Error() string {
	return fmt.Sprintf("xsk: %s ifindex %d queue %d: %v", e.Op, e.Ifindex, e.Queue, e.Errno)
}

func (e *KickError) Unwrap() error { return e.Errno }

// Temporary reports whether the condition is expected to clear by itself
// (the link is down, or the kernel is short of buffers).
func (e *KickError) Temporary() bool {
	switch e.Errno {
	case unix.ENETDOWN, unix.ENOBUFS, unix.EAGAIN, unix.EBUSY:
		return true
	}
	return false
}

// opError adds the operation and the socket's place to err.
func (s *Socket) opError(op string, err error) error {
	return fmt.Errorf("xsk: %s ifindex %d queue %d: %w", op, s.ifindex, s.queue, err)
}
