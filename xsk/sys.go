package xsk

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Raw SOL_XDP socket options whose arguments x/sys/unix has no typed helper
// for. Each returns the bare errno so callers add their own context.

func setUmemReg(fd int, reg *unix.XDPUmemReg) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_UMEM_REG,
		uintptr(unsafe.Pointer(reg)), unsafe.Sizeof(*reg), 0)
	if e != 0 {
		return e
	}
	return nil
}

func getMmapOffsets(fd int) (unix.XDPMmapOffsets, error) {
	var off unix.XDPMmapOffsets
	n := uint32(unsafe.Sizeof(off))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS,
		uintptr(unsafe.Pointer(&off)), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return off, e
	}
	if n != uint32(unsafe.Sizeof(off)) {
		// Kernels before 5.4 report the layout without the flags word;
		// need_wakeup does not exist there either.
		return off, unix.EOPNOTSUPP
	}
	return off, nil
}

func getStatistics(fd int) (unix.XDPStatistics, error) {
	var st unix.XDPStatistics
	n := uint32(unsafe.Sizeof(st))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_STATISTICS,
		uintptr(unsafe.Pointer(&st)), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return st, e
	}
	return st, nil
}

// kick is sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0): it asks the kernel to
// process the TX ring (in copy mode it transmits up to its per-call budget
// right here; in zero-copy mode it wakes the driver's NAPI).
func kick(fd int) unix.Errno {
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	return e
}

// wakeRX is recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL): it asks a
// zero-copy driver to look at the fill ring again without blocking.
func wakeRX(fd int) unix.Errno {
	_, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	return e
}
