package rawxsk

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr, which x/sys/unix does not define.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [unsafe.Sizeof(uintptr(0)) - 4]byte
}

// MsgBatch is a preallocated vector of Batch messages for sendmmsg or
// recvmmsg: no allocation per call.
type MsgBatch struct {
	msgs []mmsghdr
	iovs []unix.Iovec
	bufs [][]byte
}

// NewSendBatch points every message of the batch at the same buffer.
func NewSendBatch(buf []byte) *MsgBatch {
	m := &MsgBatch{msgs: make([]mmsghdr, Batch), iovs: make([]unix.Iovec, Batch)}
	for i := range m.msgs {
		m.iovs[i].Base = &buf[0]
		m.iovs[i].SetLen(len(buf))
		m.msgs[i].hdr.Iov = &m.iovs[i]
		m.msgs[i].hdr.SetIovlen(1)
	}
	return m
}

// NewRecvBatch gives every message its own 2 KiB buffer.
func NewRecvBatch() *MsgBatch {
	m := &MsgBatch{msgs: make([]mmsghdr, Batch), iovs: make([]unix.Iovec, Batch), bufs: make([][]byte, Batch)}
	for i := range m.msgs {
		m.bufs[i] = make([]byte, 2048)
		m.iovs[i].Base = &m.bufs[i][0]
		m.iovs[i].SetLen(len(m.bufs[i]))
		m.msgs[i].hdr.Iov = &m.iovs[i]
		m.msgs[i].hdr.SetIovlen(1)
	}
	return m
}

// send is sendmmsg(fd, the first n messages).
func (m *MsgBatch) send(fd, n int) (int, unix.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.msgs[0])), uintptr(n), 0, 0, 0)
	return int(r), e
}

// recv is recvmmsg(fd, all messages, flags); msgLen(i) is then the length
// of message i.
func (m *MsgBatch) recv(fd, flags int) (int, unix.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.msgs[0])), uintptr(len(m.msgs)), uintptr(flags), 0, 0)
	return int(r), e
}

func (m *MsgBatch) msgLen(i int) int { return int(m.msgs[i].n) }
