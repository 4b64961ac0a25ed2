package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// vethPair is a veth pair in a network namespace of its own: the program is
// attached to in, and frames are injected through out.
type vethPair struct {
	in, out netlink.Link
}

// newVethPair moves the calling goroutine, locked to its thread, into a
// fresh network namespace holding a new veth pair, for the rest of the test.
// Cleanup deletes the pair and returns the thread to the original namespace
// (or, if that fails, lets the runtime discard the thread). Everything the
// test does with interfaces must stay on the test's goroutine.
func newVethPair(t *testing.T) vethPair {
	t.Helper()
	requireRoot(t)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get network namespace: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("new network namespace: %v", err)
	}
	var veth *netlink.Veth
	t.Cleanup(func() {
		if veth != nil {
			if err := netlink.LinkDel(veth); err != nil {
				t.Errorf("delete veth %s: %v", veth.Name, err)
			}
		}
		err := netns.Set(orig)
		ns.Close()
		orig.Close()
		if err != nil {
			t.Errorf("return to the original network namespace: %v (thread discarded)", err)
			return // still locked: the thread exits with the goroutine
		}
		runtime.UnlockOSThread()
	})

	// Unique per run, although the namespace is fresh anyway.
	name := fmt.Sprintf("xb%d", os.Getpid()%1000000)
	veth = &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name + "a"}, PeerName: name + "b"}
	if err := netlink.LinkAdd(veth); err != nil {
		veth = nil
		t.Fatalf("add veth pair: %v", err)
	}
	var pair vethPair
	for _, dst := range []*netlink.Link{&pair.in, &pair.out} {
		n := name + "a"
		if dst == &pair.out {
			n = name + "b"
		}
		l, err := netlink.LinkByName(n)
		if err != nil {
			t.Fatalf("find %s: %v", n, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatalf("set %s up: %v", n, err)
		}
		*dst = l
	}
	return pair
}

// attached returns the interface's XDP attachment as rtnetlink reports it.
func attached(t *testing.T, ifindex int) xdpState {
	t.Helper()
	s, err := queryXDP(ifindex)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func progID(t *testing.T, prog *ebpf.Program) uint32 {
	t.Helper()
	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("program info has no ID")
	}
	return uint32(id)
}

// wantAttached checks that exactly p's program is on ifindex, in mode.
func wantAttached(t *testing.T, ifindex int, p *Program, mode Mode) {
	t.Helper()
	s := attached(t, ifindex)
	want := xdpState{mode: nl.XDP_ATTACHED_SKB, progID: progID(t, p.objs.XdproxySteer)}
	if mode == ModeNative {
		want.mode = nl.XDP_ATTACHED_DRV
	}
	if s != want {
		t.Fatalf("attachment %+v, want %+v (%s)", s, want, mode)
	}
	if got := p.AttachedMode(); got != mode {
		t.Fatalf("AttachedMode %s, want %s", got, mode)
	}
	if got := p.Ifindex(); got != ifindex {
		t.Fatalf("Ifindex %d, want %d", got, ifindex)
	}
}

func wantNothingAttached(t *testing.T, ifindex int) {
	t.Helper()
	if s := attached(t, ifindex); s.mode != nl.XDP_ATTACHED_NONE {
		t.Fatalf("attachment %+v, want none", s)
	}
}

// inject sends frame into out, so that it arrives on in's receive path.
func (v vethPair) inject(t *testing.T, frame []byte) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrLinklayer{Ifindex: v.out.Attrs().Index}
	if err := unix.Sendto(fd, frame, 0, sa); err != nil {
		t.Fatalf("send on %s: %v", v.out.Attrs().Name, err)
	}
}

// waitCounters polls until cond holds for p's counters (the frame crosses
// the veth asynchronously) or a second passes.
func waitCounters(t *testing.T, p *Program, cond func(Counters) bool) Counters {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		c := counters(t, p)
		if cond(c) || time.Now().After(deadline) {
			return c
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAttachModes(t *testing.T) {
	for _, tc := range []struct {
		mode, want Mode
	}{
		{ModeGeneric, ModeGeneric},
		{ModeNative, ModeNative},
		{ModeAuto, ModeNative}, // veth has a native XDP path
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			v := newVethPair(t)
			p := loadForTest(t)
			configure(t, p)
			idx := v.in.Attrs().Index
			if err := p.Attach(idx, tc.mode); err != nil {
				t.Fatal(err)
			}
			wantAttached(t, idx, p, tc.want)
			if err := p.Attach(idx, tc.mode); !errors.Is(err, ErrAttached) {
				t.Errorf("second Attach of one Program: %v, want ErrAttached", err)
			}

			// The program really runs on in's receive path.
			v.inject(t, tcp4(t, listen4))
			v.inject(t, tcp4(t, netip.AddrPortFrom(otherAddr, 22)))
			c := waitCounters(t, p, func(c Counters) bool { return c.RedirectListener == 1 && c.PassNotOurs >= 1 })
			if c.RedirectListener != 1 || c.RedirectFailed != 1 || c.PassNotOurs < 1 {
				t.Errorf("counters after two injected frames: %+v", c)
			}

			if err := p.Detach(); err != nil {
				t.Fatal(err)
			}
			wantNothingAttached(t, idx)
			if err := p.Detach(); err != nil {
				t.Errorf("second Detach: %v", err)
			}
			if got := p.AttachedMode(); got != ModeAuto {
				t.Errorf("AttachedMode after Detach: %s", got)
			}
		})
	}
}

// A second Program attaching where a first one (another process, or a run
// that has not exited yet) holds a link replaces it, in either mode.
func TestAttachReplacesLink(t *testing.T) {
	for _, tc := range []struct{ first, second Mode }{
		{ModeGeneric, ModeGeneric},
		{ModeGeneric, ModeNative},
		{ModeNative, ModeGeneric},
		{ModeNative, ModeAuto},
	} {
		t.Run(tc.first.String()+"_then_"+tc.second.String(), func(t *testing.T) {
			v := newVethPair(t)
			idx := v.in.Attrs().Index
			old := loadForTest(t)
			if err := old.Attach(idx, tc.first); err != nil {
				t.Fatal(err)
			}
			p := loadForTest(t)
			if err := p.Attach(idx, tc.second); err != nil {
				t.Fatal(err)
			}
			want := tc.second
			if want == ModeAuto {
				want = ModeNative
			}
			wantAttached(t, idx, p, want)

			// The replaced Program's Detach and Close leave the new one alone.
			if err := old.Detach(); err != nil {
				t.Fatal(err)
			}
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
			wantAttached(t, idx, p, want)
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			wantNothingAttached(t, idx)
		})
	}
}

// A program attached through netlink outlives the process that attached it:
// this is what a killed run of an older xdproxy (or `ip link set xdp`) leaves.
func TestAttachReplacesStaleNetlinkProgram(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags int
		mode  Mode
	}{
		{"stale_generic_then_auto", unix.XDP_FLAGS_SKB_MODE, ModeAuto},
		{"stale_native_then_generic", unix.XDP_FLAGS_DRV_MODE, ModeGeneric},
		{"stale_native_then_native", unix.XDP_FLAGS_DRV_MODE, ModeNative},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVethPair(t)
			idx := v.in.Attrs().Index
			stale := loadForTest(t)
			staleID := progID(t, stale.objs.XdproxySteer)
			if err := netlink.LinkSetXdpFdWithFlags(v.in, stale.objs.XdproxySteer.FD(), tc.flags); err != nil {
				t.Fatalf("netlink attach: %v", err)
			}
			// The process dies: its fds close, the program stays attached.
			if err := stale.Close(); err != nil {
				t.Fatal(err)
			}
			if s := attached(t, idx); s.progID != staleID {
				t.Fatalf("stale program not attached: %+v", s)
			}

			p := loadForTest(t)
			if err := p.Attach(idx, tc.mode); err != nil {
				t.Fatal(err)
			}
			want := tc.mode
			if want == ModeAuto {
				want = ModeNative
			}
			wantAttached(t, idx, p, want)
			if err := p.Detach(); err != nil {
				t.Fatal(err)
			}
			wantNothingAttached(t, idx)
		})
	}
}

// foreignProgram is a minimal XDP program that is not xdproxy's: it passes
// everything.
func foreignProgram(t testing.TB) *ebpf.Program {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "other_xdp",
		Type:    ebpf.XDP,
		License: "MIT",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, xdpPass),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

func TestAttachRefusesForeignProgram(t *testing.T) {
	v := newVethPair(t)
	idx := v.in.Attrs().Index
	foreign := foreignProgram(t)

	// Attached through netlink ...
	if err := netlink.LinkSetXdpFdWithFlags(v.in, foreign.FD(), unix.XDP_FLAGS_SKB_MODE); err != nil {
		t.Fatalf("netlink attach: %v", err)
	}
	p := loadForTest(t)
	err := p.Attach(idx, ModeAuto)
	if !errors.Is(err, ErrForeignProgram) {
		t.Fatalf("Attach over a foreign program: %v, want ErrForeignProgram", err)
	}
	t.Logf("as expected: %v", err)
	if s := attached(t, idx); s.progID != progID(t, foreign) {
		t.Fatalf("foreign program displaced: %+v", s)
	}
	if err := netlink.LinkSetXdpFdWithFlags(v.in, -1, unix.XDP_FLAGS_SKB_MODE); err != nil {
		t.Fatal(err)
	}

	// ... and through a link.
	l, err := linkXDP(foreign, idx)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := p.Attach(idx, ModeGeneric); !errors.Is(err, ErrForeignProgram) {
		t.Fatalf("Attach over a foreign link: %v, want ErrForeignProgram", err)
	}
	if p.AttachedMode() != ModeAuto {
		t.Fatal("a failed Attach left the Program attached")
	}
}

// With a socket bound in the queue's slot the redirect succeeds: the
// program returns XDP_REDIRECT and counts no failure, and a frame steered on
// the wire reaches the socket (which, with an empty fill ring, drops it).
func TestRedirectToBoundSocket(t *testing.T) {
	v := newVethPair(t)
	idx := v.in.Attrs().Index
	p := loadForTest(t)
	configure(t, p)
	if err := p.Attach(idx, ModeGeneric); err != nil {
		t.Fatal(err)
	}
	xsk := bindXSK(t, idx, 0)
	if err := p.SetXSK(0, xsk); err != nil {
		t.Fatal(err)
	}

	before := counters(t, p)
	if got := run(t, p.objs.XdproxySteer, tcp4(t, listen4)); got != xdpRedirect {
		t.Errorf("test run with a bound socket: %s, want XDP_REDIRECT", actionNames[got])
	}
	if d := counters(t, p).Sub(before); d != (Counters{RxPackets: 1, RedirectListener: 1}) {
		t.Errorf("counter deltas %+v", d)
	}

	v.inject(t, tcp4(t, listen4))
	c := waitCounters(t, p, func(c Counters) bool { return c.RedirectListener == 2 })
	if c.RedirectListener != 2 || c.RedirectFailed != 0 {
		t.Errorf("counters after an injected frame: %+v", c)
	}
	deadline := time.Now().Add(time.Second)
	for {
		st := xskStats(t, xsk)
		if st.Rx_dropped+st.Rx_fill_ring_empty_descs > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the injected frame never reached the socket: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}

	if err := p.ClearXSK(0); err != nil {
		t.Fatal(err)
	}
	if got := run(t, p.objs.XdproxySteer, tcp4(t, listen4)); got != xdpPass {
		t.Errorf("after ClearXSK: %s, want XDP_PASS", actionNames[got])
	}
	if err := p.ClearXSK(0); err != nil {
		t.Errorf("clearing an empty slot: %v", err)
	}
}

// bindXSK creates an AF_XDP socket in copy mode bound to ifindex/queue, with
// a UMEM and rings that are never mapped: enough to be a redirect target.
func bindXSK(t *testing.T, ifindex, queue int) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("AF_XDP socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	const frames, frameSize = 16, 4096
	umem, err := unix.Mmap(-1, 0, frames*frameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatalf("mmap umem: %v", err)
	}
	t.Cleanup(func() { unix.Munmap(umem) })
	reg := unix.XDPUmemReg{Addr: uint64(uintptr(unsafe.Pointer(&umem[0]))), Len: uint64(len(umem)), Size: frameSize}
	if _, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_UMEM_REG,
		uintptr(unsafe.Pointer(&reg)), unsafe.Sizeof(reg), 0); e != 0 {
		t.Fatalf("XDP_UMEM_REG: %v", e)
	}
	for _, opt := range []int{unix.XDP_UMEM_FILL_RING, unix.XDP_UMEM_COMPLETION_RING, unix.XDP_RX_RING} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, opt, frames); err != nil {
			t.Fatalf("ring option %d: %v", opt, err)
		}
	}
	sa := &unix.SockaddrXDP{Flags: unix.XDP_COPY, Ifindex: uint32(ifindex), QueueID: uint32(queue)}
	if err := unix.Bind(fd, sa); err != nil {
		t.Fatalf("bind AF_XDP socket to ifindex %d queue %d: %v", ifindex, queue, err)
	}
	return fd
}

func xskStats(t *testing.T, fd int) unix.XDPStatistics {
	t.Helper()
	var st unix.XDPStatistics
	size := uint32(unsafe.Sizeof(st))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_STATISTICS,
		uintptr(unsafe.Pointer(&st)), uintptr(unsafe.Pointer(&size)), 0); e != 0 {
		t.Fatalf("XDP_STATISTICS: %v", e)
	}
	return st
}

func linkXDP(prog *ebpf.Program, ifindex int) (link.Link, error) {
	return link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPGenericMode})
}
