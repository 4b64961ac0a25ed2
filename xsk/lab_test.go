package xsk

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// requireRoot skips a kernel test without root, except in CI (CI=true),
// where a skip would hide a broken test and fails instead.
func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		tb.Fatal("AF_XDP tests need root, and CI=true forbids skipping them")
	}
	tb.Skip("AF_XDP tests need root (netns, veth, XDP, AF_XDP)")
}

// lab is a throwaway network namespace holding one veth pair: xa, where the
// XDP program and the sockets under test live, and xb, the peer.
type lab struct {
	name   string
	ns     netns.NsHandle
	xa, xb int // ifindexes inside the namespace
	macA   net.HardwareAddr
	macB   net.HardwareAddr
	xsks   *ebpf.Map // the XSKMAP the program on xa redirects into
}

var labSeq atomic.Int32

// newLab creates the namespace and the veth pair with queues RX/TX queues
// on each end, attaches a redirect-everything XDP program to xa, and
// removes it all in t.Cleanup.
func newLab(tb testing.TB, queues int) *lab {
	tb.Helper()
	return newLabMTU(tb, queues, 1500)
}

// newLabMTU is newLab with both ends at mtu; above a page's worth the XDP
// program is frags-aware (BPF_F_XDP_HAS_FRAGS), which veth requires to
// attach at such an MTU, and frames reach it as multi-buffer xdp_buffs.
func newLabMTU(tb testing.TB, queues, mtu int) *lab {
	tb.Helper()
	requireRoot(tb)
	l := &lab{name: fmt.Sprintf("xsk-test-%d-%d", os.Getpid(), labSeq.Add(1))}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		tb.Fatalf("lab: current netns: %v", err)
	}
	defer orig.Close()
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic("lab: cannot return to the original netns: " + err.Error())
		}
	}()
	l.ns, err = netns.NewNamed(l.name) // moves this thread into it
	if err != nil {
		tb.Fatalf("lab: create netns %s: %v", l.name, err)
	}
	tb.Cleanup(func() {
		l.ns.Close()
		if err := netns.DeleteNamed(l.name); err != nil {
			tb.Errorf("lab: delete netns %s: %v", l.name, err)
		}
	})

	// Keep IPv6 autoconfiguration from putting its own frames on the link.
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0)
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/all/disable_ipv6", []byte("1"), 0)

	veth := &netlink.Veth{
		LinkAttrs:       netlink.LinkAttrs{Name: "xa", NumTxQueues: queues, NumRxQueues: queues, MTU: mtu},
		PeerName:        "xb",
		PeerNumTxQueues: uint32(queues),
		PeerNumRxQueues: uint32(queues),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		tb.Fatalf("lab: add veth: %v", err)
	}
	for _, name := range []string{"xa", "xb"} {
		ln, err := netlink.LinkByName(name)
		if err != nil {
			tb.Fatalf("lab: %s: %v", name, err)
		}
		if err := netlink.LinkSetUp(ln); err != nil {
			tb.Fatalf("lab: set %s up: %v", name, err)
		}
		if name == "xa" {
			l.xa, l.macA = ln.Attrs().Index, ln.Attrs().HardwareAddr
		} else {
			l.xb, l.macB = ln.Attrs().Index, ln.Attrs().HardwareAddr
		}
	}

	l.xsks, err = ebpf.NewMap(&ebpf.MapSpec{Name: "xsks", Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: uint32(queues)})
	if err != nil {
		tb.Fatalf("lab: create xskmap: %v", err)
	}
	tb.Cleanup(func() { l.xsks.Close() })
	// return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:  "xsk_redirect",
		Type:  ebpf.XDP,
		Flags: fragsFlag(mtu),
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 16, asm.Word), // struct xdp_md.rx_queue_index
			asm.LoadMapPtr(asm.R1, l.xsks.FD()),
			asm.Mov.Imm(asm.R3, 2), // XDP_PASS when the slot is empty
			asm.FnRedirectMap.Call(),
			asm.Return(),
		},
		License: "GPL",
	})
	if err != nil {
		tb.Fatalf("lab: load xdp program: %v", err)
	}
	tb.Cleanup(func() { prog.Close() })
	lk, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: l.xa, Flags: link.XDPDriverMode})
	if err != nil {
		tb.Fatalf("lab: attach xdp to xa: %v", err)
	}
	tb.Cleanup(func() { lk.Close() })
	return l
}

func fragsFlag(mtu int) uint32 {
	if mtu > 3500 {
		return unix.BPF_F_XDP_HAS_FRAGS
	}
	return 0
}

// do runs fn with the calling goroutine's thread inside the lab namespace
// (sockets are tied to the namespace they were created in).
func (l *lab) do(tb testing.TB, fn func()) {
	tb.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		tb.Fatalf("lab: current netns: %v", err)
	}
	defer orig.Close()
	if err := netns.Set(l.ns); err != nil {
		tb.Fatalf("lab: enter %s: %v", l.name, err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic("lab: cannot return to the original netns: " + err.Error())
		}
	}()
	fn()
}

// open opens one of our sockets on xa (or xb) inside the lab.
func (l *lab) open(tb testing.TB, ifindex, queue int, cfg Config) *Socket {
	tb.Helper()
	var s *Socket
	var err error
	l.do(tb, func() { s, err = Open(ifindex, queue, cfg) })
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

// register points the XSKMAP slot for queue at fd.
func (l *lab) register(tb testing.TB, queue, fd int) {
	tb.Helper()
	if err := l.xsks.Put(uint32(queue), uint32(fd)); err != nil {
		tb.Fatalf("xskmap[%d] = %d: %v", queue, fd, err)
	}
}

// packetSocket is an AF_PACKET socket on one lab interface.
type packetSocket struct {
	fd int
	sa unix.SockaddrLinklayer
}

const etherTypeTest = 0x88B5 // IEEE local experimental

func (l *lab) packetSocket(tb testing.TB, ifindex int) *packetSocket {
	tb.Helper()
	p := &packetSocket{fd: -1}
	var err error
	l.do(tb, func() {
		p.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(etherTypeTest)))
	})
	if err != nil {
		tb.Fatalf("packet socket: %v", err)
	}
	tb.Cleanup(func() { unix.Close(p.fd) })
	p.sa = unix.SockaddrLinklayer{Protocol: htons(etherTypeTest), Ifindex: ifindex}
	if err := unix.Bind(p.fd, &p.sa); err != nil {
		tb.Fatalf("bind packet socket: %v", err)
	}
	_ = unix.SetsockoptInt(p.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	_ = unix.SetsockoptInt(p.fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20)
	return p
}

func (p *packetSocket) send(tb testing.TB, frame []byte) {
	tb.Helper()
	if err := unix.Sendto(p.fd, frame, 0, &p.sa); err != nil {
		tb.Fatalf("packet send: %v", err)
	}
}

// recv returns the next frame, or nil after timeout.
func (p *packetSocket) recv(tb testing.TB, buf []byte, timeout time.Duration) []byte {
	tb.Helper()
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(timeout/time.Millisecond))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			tb.Fatalf("packet poll: %v", err)
		}
		if n == 0 {
			return nil
		}
		break
	}
	n, _, err := unix.Recvfrom(p.fd, buf, unix.MSG_DONTWAIT)
	if err != nil {
		tb.Fatalf("packet recv: %v", err)
	}
	return buf[:n]
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// testFrame writes a 64-byte Ethernet frame carrying seq and returns its
// length: dst, src, etherTypeTest, "xsk!", seq, then a pattern from seq.
func testFrame(buf []byte, dst, src net.HardwareAddr, seq uint32) int {
	const n = 64
	copy(buf[0:6], dst)
	copy(buf[6:12], src)
	binary.BigEndian.PutUint16(buf[12:14], etherTypeTest)
	copy(buf[14:18], "xsk!")
	binary.BigEndian.PutUint32(buf[18:22], seq)
	for i := 22; i < n; i++ {
		buf[i] = byte(seq) + byte(i)
	}
	return n
}

// checkFrame returns the sequence number in a frame written by testFrame, or
// an error describing how it differs.
func checkFrame(f []byte, dst, src net.HardwareAddr) (uint32, error) {
	if len(f) != 64 {
		return 0, fmt.Errorf("length %d, want 64", len(f))
	}
	if string(f[0:6]) != string(dst) || string(f[6:12]) != string(src) ||
		binary.BigEndian.Uint16(f[12:14]) != etherTypeTest || string(f[14:18]) != "xsk!" {
		return 0, fmt.Errorf("header % x", f[:18])
	}
	seq := binary.BigEndian.Uint32(f[18:22])
	for i := 22; i < 64; i++ {
		if f[i] != byte(seq)+byte(i) {
			return seq, fmt.Errorf("seq %d: byte %d = %#x", seq, i, f[i])
		}
	}
	return seq, nil
}
