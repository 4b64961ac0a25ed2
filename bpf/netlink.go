package bpf

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// xdpState is what rtnetlink reports of an interface's XDP attachment.
type xdpState struct {
	mode   uint32 // nl.XDP_ATTACHED_*
	progID uint32 // 0 when none, or with XDP_ATTACHED_MULTI
}

// queryXDP reads the XDP attachment of ifindex in the calling thread's
// network namespace.
func queryXDP(ifindex int) (xdpState, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return xdpState{}, fmt.Errorf("query link %d: %w", ifindex, err)
	}
	x := l.Attrs().Xdp
	if x == nil || !x.Attached {
		return xdpState{mode: nl.XDP_ATTACHED_NONE}, nil
	}
	return xdpState{mode: x.AttachMode, progID: x.ProgId}, nil
}

// detachNetlink removes a program attached through netlink (not a BPF link)
// in the given attach mode. The mode flag matters: without it the kernel
// picks driver mode on devices that have one, and a generic-mode program
// would stay.
func detachNetlink(ifindex int, mode uint32) error {
	var flags int
	switch mode {
	case nl.XDP_ATTACHED_DRV:
		flags = unix.XDP_FLAGS_DRV_MODE
	case nl.XDP_ATTACHED_SKB:
		flags = unix.XDP_FLAGS_SKB_MODE
	case nl.XDP_ATTACHED_HW:
		flags = unix.XDP_FLAGS_HW_MODE
	default:
		return fmt.Errorf("unknown attach mode %d", mode)
	}
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return fmt.Errorf("query link %d: %w", ifindex, err)
	}
	if err := netlink.LinkSetXdpFdWithFlags(l, -1, flags); err != nil {
		return fmt.Errorf("netlink detach: %w", err)
	}
	return nil
}
