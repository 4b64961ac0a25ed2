package loadgen

import (
	"context"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// pacer sleeps on a timerfd: the netpoller wakes when it fires, with the
// kernel's hrtimer precision, where time.Sleep's wake-up can come a
// millisecond late (the netpoller's epoll timeout is in milliseconds).
type pacer struct {
	fd  int
	f   *os.File
	buf [8]byte
}

func newPacer() (*pacer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	// A non-blocking fd: os.NewFile registers it with the netpoller.
	return &pacer{fd: fd, f: os.NewFile(uintptr(fd), "timerfd")}, nil
}

func (p *pacer) close() {
	if p != nil {
		p.f.Close()
	}
}

// sleep waits d, or until ctx is done (checked only before and after: d is
// short, at most one slot interval).
func (p *pacer) sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d < 5*time.Microsecond {
		return nil
	}
	its := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	if err := unix.TimerfdSettime(p.fd, 0, &its, nil); err != nil {
		time.Sleep(d)
		return ctx.Err()
	}
	if _, err := p.f.Read(p.buf[:]); err != nil {
		time.Sleep(d)
	}
	return ctx.Err()
}
