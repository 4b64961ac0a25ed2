package rawxsk

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/internal/lab"
	"github.com/xdproxy/xdproxy/xsk"
)

// PacketSocket opens, inside ns, an AF_PACKET raw socket on ifindex that
// receives nothing (protocol 0) and bypasses the qdisc.
func PacketSocket(ns *lab.NS, ifindex int) (int, error) {
	return socketIn(ns, "AF_PACKET socket", func() (int, error) {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifindex}); err != nil {
			return fd, fmt.Errorf("bind: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return fd, fmt.Errorf("PACKET_QDISC_BYPASS: %w", err)
		}
		return fd, unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
	})
}

// UDPSocket opens, inside ns, a UDP socket bound to local and, when remote
// is valid, connected to it.
func UDPSocket(ns *lab.NS, local, remote netip.AddrPort) (int, error) {
	return socketIn(ns, "UDP socket", func() (int, error) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: local.Addr().As4(), Port: int(local.Port())}); err != nil {
			return fd, fmt.Errorf("bind %v: %w", local, err)
		}
		if remote.IsValid() {
			if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: remote.Addr().As4(), Port: int(remote.Port())}); err != nil {
				return fd, fmt.Errorf("connect %v: %w", remote, err)
			}
		}
		return fd, nil
	})
}

// socketIn runs open inside ns and closes what it opened when it fails.
func socketIn(ns *lab.NS, what string, open func() (int, error)) (int, error) {
	fd := -1
	err := ns.Do(func() (err error) {
		fd, err = open()
		return err
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("%s: %s: %w", ns.Name, what, err)
	}
	return fd, nil
}

// releaseWait bounds how long OpenXSK waits for a queue that an AF_XDP
// socket closed just before still holds.
const releaseWait = 2 * time.Second

// OpenXSK opens an AF_XDP socket on queue of ifindex inside ns, in copy
// mode (veth has no zero-copy), with the default sizes. The kernel lets go
// of a queue in deferred work after its socket is closed, 25 to 45 ms later
// (measured on veth, Linux 6.18): while the bind finds the queue busy,
// OpenXSK tries again, for up to releaseWait.
func OpenXSK(ns *lab.NS, ifindex, queue int) (*xsk.Socket, error) {
	var s *xsk.Socket
	open := func() (err error) {
		s, err = xsk.Open(ifindex, queue, xsk.Config{ZeroCopy: xsk.ZeroCopyOff})
		return err
	}
	err := ns.Do(open)
	t0 := time.Now()
	for errors.Is(err, unix.EBUSY) && time.Since(t0) < releaseWait {
		time.Sleep(time.Millisecond)
		err = ns.Do(open)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: AF_XDP socket on ifindex %d queue %d: %w", ns.Name, ifindex, queue, err)
	}
	return s, nil
}
