package bench

// Helpers shared by the benchmarks: the lab namespaces, 64-byte UDP test
// frames, sendmmsg/recvmmsg without allocations, the two tiny XDP programs,
// and the statistics the benchmarks report.

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/internal/lab"
)

// newNS creates a lab namespace with IPv6 off, so that router solicitations
// and MLD reports stay off the links being measured.
func newNS(b *testing.B, l *lab.Lab, name string) *lab.NS {
	b.Helper()
	ns, err := l.NS(name)
	if err != nil {
		b.Fatal(err)
	}
	err = ns.Do(func() error {
		for _, f := range []string{"all", "default"} {
			p := "/proc/sys/net/ipv6/conf/" + f + "/disable_ipv6"
			if err := os.WriteFile(p, []byte("1"), 0o644); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatalf("%s: disabling IPv6: %v", ns.Name, err)
	}
	return ns
}

// frameLen is the size of every raw test frame: Ethernet (14) + IPv4 (20) +
// UDP (8) + udpPayload, the minimum Ethernet frame without its FCS.
const (
	frameLen   = 64
	udpPayload = frameLen - 14 - 20 - 8
	benchPort  = 9000
	batch      = 64 // frames per sendmmsg/recvmmsg/XSK batch
)

// udpFrame builds a 64-byte Ethernet/IPv4/UDP frame from src to dst, port
// benchPort both ways, UDP checksum 0 (none, valid for IPv4).
func udpFrame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr) []byte {
	f := make([]byte, frameLen)
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:14], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], 20+8+udpPayload)
	ip[6] = 0x40 // DF
	ip[8] = 64
	ip[9] = unix.IPPROTO_UDP
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:12], ipChecksum(ip))
	udp := f[34:42]
	binary.BigEndian.PutUint16(udp[0:2], benchPort)
	binary.BigEndian.PutUint16(udp[2:4], benchPort)
	binary.BigEndian.PutUint16(udp[4:6], 8+udpPayload)
	copy(f[42:], "xdproxy bench frame...")
	return f
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// isTestFrame reports whether f is one of ours: IPv4, UDP, to benchPort.
func isTestFrame(f []byte) bool {
	return len(f) == frameLen && f[12] == 0x08 && f[13] == 0x00 && f[23] == unix.IPPROTO_UDP &&
		binary.BigEndian.Uint16(f[36:38]) == benchPort
}

// mmsghdr is struct mmsghdr, which x/sys/unix does not define.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [unsafe.Sizeof(uintptr(0)) - 4]byte
}

// mmsgBatch is a preallocated vector for sendmmsg/recvmmsg: no allocation
// per call.
type mmsgBatch struct {
	msgs []mmsghdr
	iovs []unix.Iovec
	bufs [][]byte
}

// newSendBatch points every message of the batch at the same buffer.
func newSendBatch(buf []byte) *mmsgBatch {
	m := &mmsgBatch{msgs: make([]mmsghdr, batch), iovs: make([]unix.Iovec, batch)}
	for i := range m.msgs {
		m.iovs[i].Base = &buf[0]
		m.iovs[i].SetLen(len(buf))
		m.msgs[i].hdr.Iov = &m.iovs[i]
		m.msgs[i].hdr.SetIovlen(1)
	}
	return m
}

// newRecvBatch gives every message its own 2 KiB buffer.
func newRecvBatch() *mmsgBatch {
	m := &mmsgBatch{msgs: make([]mmsghdr, batch), iovs: make([]unix.Iovec, batch), bufs: make([][]byte, batch)}
	for i := range m.msgs {
		m.bufs[i] = make([]byte, 2048)
		m.iovs[i].Base = &m.bufs[i][0]
		m.iovs[i].SetLen(len(m.bufs[i]))
		m.msgs[i].hdr.Iov = &m.iovs[i]
		m.msgs[i].hdr.SetIovlen(1)
	}
	return m
}

func sendmmsg(fd int, m *mmsgBatch, n int) (int, unix.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.msgs[0])), uintptr(n), 0, 0, 0)
	return int(r), e
}

func recvmmsg(fd int, m *mmsgBatch, flags int) (int, unix.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.msgs[0])), uintptr(len(m.msgs)), uintptr(flags), 0, 0)
	return int(r), e
}

// sendAll sends total copies of the batch's frame with sendmmsg, batch
// frames per call, retrying what the kernel refused (ENOBUFS: the device
// dropped it, or a stopped queue). It returns how many calls were refused
// and gives up after limit.
func sendAll(fd int, m *mmsgBatch, total int, limit time.Duration) (refused int, err error) {
	deadline := time.Now().Add(limit)
	for sent := 0; sent < total; {
		n, e := sendmmsg(fd, m, min(batch, total-sent))
		switch e {
		case 0:
			sent += n
			continue
		case unix.ENOBUFS, unix.EAGAIN, unix.EINTR:
			refused++
		default:
			return refused, fmt.Errorf("sendmmsg: %w", e)
		}
		if refused&1023 == 0 && time.Now().After(deadline) {
			return refused, fmt.Errorf("sendmmsg: %d of %d frames sent in %v", sent, total, limit)
		}
	}
	return refused, nil
}

func errTimeout(done, total int, limit time.Duration) error {
	return fmt.Errorf("only %d of %d frames sent in %v", done, total, limit)
}

// packetSocket opens an AF_PACKET raw socket on ifindex that receives
// nothing (protocol 0) and bypasses the qdisc, inside ns.
func packetSocket(b *testing.B, ns *lab.NS, ifindex int) int {
	b.Helper()
	fd := -1
	err := ns.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifindex}); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return fmt.Errorf("PACKET_QDISC_BYPASS: %w", err)
		}
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		b.Fatalf("%s: AF_PACKET socket: %v", ns.Name, err)
	}
	b.Cleanup(func() { unix.Close(fd) })
	return fd
}

// udpSocket opens a UDP socket in ns bound to local and, when remote is
// valid, connected to it.
func udpSocket(b *testing.B, ns *lab.NS, local, remote netip.AddrPort) int {
	b.Helper()
	fd := -1
	err := ns.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: local.Addr().As4(), Port: int(local.Port())}); err != nil {
			return fmt.Errorf("bind %v: %w", local, err)
		}
		if remote.IsValid() {
			if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: remote.Addr().As4(), Port: int(remote.Port())}); err != nil {
				return fmt.Errorf("connect %v: %w", remote, err)
			}
		}
		return nil
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		b.Fatalf("%s: UDP socket: %v", ns.Name, err)
	}
	b.Cleanup(func() { unix.Close(fd) })
	return fd
}

// redirectAllProg returns an XDP program that redirects every frame to the
// AF_XDP socket in xsks at the frame's RX queue, and passes it to the kernel
// when that slot is empty:
//
//	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
func redirectAllProg(b *testing.B, xsks *ebpf.Map) *ebpf.Program {
	b.Helper()
	const rxQueueIndex = 16 // offsetof(struct xdp_md, rx_queue_index)
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "bench_redirect",
		Type: ebpf.XDP,
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, rxQueueIndex, asm.Word),
			asm.LoadMapPtr(asm.R1, xsks.FD()),
			asm.Mov.Imm(asm.R3, int32(xdpPass)),
			asm.FnRedirectMap.Call(),
			asm.Return(),
		},
		License: "GPL",
	})
	if err != nil {
		b.Fatalf("loading the redirect-all XDP program: %v", err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

const (
	xdpDrop = 1
	xdpPass = 2
)

// countDropProg returns an XDP program that counts every frame in slot 0 of
// the per-CPU array counter and drops it: the cheapest possible receiver,
// so that a transmit benchmark measures the sender, and a count of what
// actually crossed the veth.
func countDropProg(b *testing.B, counter *ebpf.Map) *ebpf.Program {
	b.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "bench_count",
		Type: ebpf.XDP,
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word), // key = 0
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, counter.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "drop"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord), // per-CPU slot: no atomics needed
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, xdpDrop).WithSymbol("drop"),
			asm.Return(),
		},
		License: "GPL",
	})
	if err != nil {
		b.Fatalf("loading the count-and-drop XDP program: %v", err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// attachXDP attaches prog in driver (native) mode to ifindex in ns. Close
// the link to detach.
func attachXDP(b *testing.B, ns *lab.NS, prog *ebpf.Program, ifindex int) link.Link {
	b.Helper()
	var lk link.Link
	err := ns.Do(func() (err error) {
		lk, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		b.Fatalf("%s: attaching XDP to ifindex %d: %v", ns.Name, ifindex, err)
	}
	return lk
}

// perCPUSum reads slot 0 of a per-CPU uint64 array.
func perCPUSum(b *testing.B, m *ebpf.Map) uint64 {
	b.Helper()
	var vals []uint64
	if err := m.Lookup(uint32(0), &vals); err != nil {
		b.Fatalf("reading the frame counter: %v", err)
	}
	var sum uint64
	for _, v := range vals {
		sum += v
	}
	return sum
}

// percentile returns the p-th percentile (0 < p < 100) of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)) * p / 100)
	return sorted[min(i, len(sorted)-1)]
}

// reportLatency sorts the sample and reports its p50 and p99 in µs.
func reportLatency(b *testing.B, sample []time.Duration) {
	slices.Sort(sample)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	b.ReportMetric(us(percentile(sample, 50)), "p50-µs")
	b.ReportMetric(us(percentile(sample, 99)), "p99-µs")
}
