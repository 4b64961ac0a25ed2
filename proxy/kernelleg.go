package proxy

import (
	"errors"
	"io"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/stack"
)

// kernelLeg is a backend leg over an OS socket (dial: kernel), for backends
// the NIC cannot reach — a service on 127.0.0.1 behind a terminator. It is
// driven by the shard loop like an engine connection: a non-blocking socket
// in the shard's edge-triggered epoll set, a bounded write buffer, and the
// same Read/Write/WriteSpace/CloseWrite/Close/Abort surface as *stack.Conn,
// so a session splices either kind of leg the same way. No goroutine per
// connection.
type kernelLeg struct {
	fd        int
	sess      *session
	connected bool
	readable  bool
	eof       bool
	wbuf      []byte // pending bytes: wbuf[whead:]
	whead     int
	wmax      int
	eng       *stack.Engine // charged for wbuf's storage (charged bytes so far)
	charged   int64
	shutWant  bool // CloseWrite called: shut down once wbuf drains
	shutDone  bool
	closed    bool
	err       error
}

// errLegReset is what a kernel leg reports when the backend reset it.
var errLegReset = errors.New("backend reset the connection")

// dialKernel starts a non-blocking connect to addr and registers the socket
// with the shard's epoll set.
func (a *shardApp) dialKernel(addr netip.AddrPort, wmax int) (*kernelLeg, error) {
	if err := a.ensureEpoll(); err != nil {
		return nil, err
	}
	family := unix.AF_INET
	var sa unix.Sockaddr
	if addr.Addr().Is4() || addr.Addr().Is4In6() {
		sa = &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().Unmap().As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, err
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		return nil, err
	}
	k := &kernelLeg{fd: fd, wmax: wmax}
	if a.sh != nil {
		k.eng = a.sh.Engine()
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(a.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(fd)
		return nil, err
	}
	a.kernelLegs[fd] = k
	return k, nil
}

// onEvent handles epoll readiness; it tells the session what changed.
func (k *kernelLeg) onEvent(events uint32) {
	if k.closed {
		return
	}
	if !k.connected {
		if events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		soerr, err := unix.GetsockoptInt(k.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil || soerr != 0 || events&unix.EPOLLERR != 0 {
			k.err = stack.ErrRefused
			k.sess.onBackendFailed(k.err)
			return
		}
		k.connected = true
		k.sess.onBackendConnected()
		if k.closed {
			return
		}
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		k.readable = true
	}
	if events&unix.EPOLLOUT != 0 {
		k.flush()
	}
	k.sess.onBackendActivity()
}

// Read reads from the socket; 0, nil means nothing now (edge-triggered:
// readiness comes back through onEvent).
func (k *kernelLeg) Read(p []byte) (int, error) {
	switch {
	case k.err != nil:
		return 0, k.err
	case k.eof:
		return 0, io.EOF
	case !k.connected || k.closed || !k.readable:
		return 0, nil
	}
	n, err := unix.Read(k.fd, p)
	switch {
	case n > 0:
		return n, nil
	case err == unix.EAGAIN:
		k.readable = false
		return 0, nil
	case err == nil:
		k.eof = true
		return 0, io.EOF
	case err == unix.EINTR:
		return 0, nil
	default:
		k.err = errLegReset
		return 0, k.err
	}
}

// Write buffers p (up to the bound) and writes what the socket takes.
func (k *kernelLeg) Write(p []byte) (int, error) {
	if k.err != nil {
		return 0, k.err
	}
	if k.closed || k.shutWant {
		return 0, stack.ErrClosed
	}
	n := min(len(p), k.WriteSpace())
	if k.whead > 0 && k.whead == len(k.wbuf) {
		k.wbuf, k.whead = k.wbuf[:0], 0
	}
	k.wbuf = append(k.wbuf, p[:n]...)
	k.charge()
	k.flush()
	return n, nil
}

// charge keeps the engine's memory account in step with wbuf's storage:
// the splice's buffer on this leg counts against the budget as the rings
// of an engine leg do.
func (k *kernelLeg) charge() {
	if c := int64(cap(k.wbuf)); c != k.charged && k.eng != nil {
		k.eng.ChargeMemory(stack.MemSend, c-k.charged)
		k.charged = c
	}
}

// WriteSpace is the room left in the write buffer.
func (k *kernelLeg) WriteSpace() int {
	if k.closed || k.shutWant || k.err != nil {
		return 0
	}
	return k.wmax - (len(k.wbuf) - k.whead)
}

func (k *kernelLeg) flush() {
	for k.connected && !k.closed && k.whead < len(k.wbuf) {
		n, err := unix.Write(k.fd, k.wbuf[k.whead:])
		if n > 0 {
			k.whead += n
		}
		if err == unix.EAGAIN {
			break
		}
		if err != nil && err != unix.EINTR {
			k.err = errLegReset
			return
		}
	}
	if k.whead == len(k.wbuf) {
		k.wbuf, k.whead = k.wbuf[:0], 0
		if k.shutWant && !k.shutDone && k.connected {
			unix.Shutdown(k.fd, unix.SHUT_WR)
			k.shutDone = true
		}
	} else if k.whead > cap(k.wbuf)/2 {
		k.wbuf = k.wbuf[:copy(k.wbuf, k.wbuf[k.whead:])]
		k.whead = 0
	}
}

// CloseWrite sends FIN after the buffered bytes.
func (k *kernelLeg) CloseWrite() error {
	k.shutWant = true
	k.flush()
	return nil
}

// Close closes the socket (the kernel finishes sending what it has).
func (k *kernelLeg) Close() error {
	if k.closed {
		return nil
	}
	k.closed = true
	k.wbuf, k.whead = nil, 0
	k.charge()
	return unix.Close(k.fd)
}

// Abort resets the connection: SO_LINGER 0, then close.
func (k *kernelLeg) Abort() {
	if k.closed {
		return
	}
	unix.SetsockoptLinger(k.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	k.Close()
}

// drained reports whether every buffered byte went to the kernel.
func (k *kernelLeg) drained() bool { return k.whead == len(k.wbuf) }
