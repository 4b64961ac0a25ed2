package dataplane

import (
	"fmt"
)

// Jumbo frames. A UMEM frame is at most a page (4096 bytes, aligned mode),
// so a link whose MTU needs more takes multi-buffer AF_XDP (Linux 6.6+):
// the sockets bind with XDP_USE_SG, the XDP program is frags-aware, and a
// frame travels as a chain of UMEM frames that the sockets gather on RX and
// split on TX (xsk/multibuf.go), so the engine still sees one contiguous
// frame and its MSS still follows the MTU (9000 - 40 = 8960 over IPv4).

// frameSizeFor picks the UMEM frame size for an MTU and the longest frame
// the link carries (MTU plus Ethernet and two VLAN tags): 2048-byte frames
// up to an MTU of 2026, 4096-byte beyond; a configured size is kept. When
// the longest frame exceeds the frame size, packet is that length and the
// sockets use multi-buffer; otherwise packet is 0. An MTU the chains cannot
// carry (more than 17 frames) is an error naming the interface.
func frameSizeFor(ifname string, mtu, frameSize int) (frame, packet int, err error) {
	need := mtu + maxFrameOverhead
	switch {
	case frameSize == 0 && need > 2048:
		frame = 4096
	case frameSize == 0:
		frame = 2048
	case frameSize != 2048 && frameSize != 4096:
		return 0, 0, fmt.Errorf("dataplane: interface %q: frame size %d: want 2048 or 4096", ifname, frameSize)
	default:
		frame = frameSize
	}
	if need <= frame {
		return frame, 0, nil
	}
	if need > maxChainFrames*frame {
		return 0, 0, fmt.Errorf("dataplane: interface %q: MTU %d does not fit %d AF_XDP frames of %d bytes", ifname, mtu, maxChainFrames, frame)
	}
	return frame, need, nil
}

// maxChainFrames is the longest descriptor chain the sockets take (xsk's
// limit: the kernel's copy-mode TX takes MAX_SKB_FRAGS+1).
const maxChainFrames = 17

// openError explains a socket that would not open; with multi-buffer it
// names the interface and the MTU that asked for it, since the kernel's
// errno alone (EINVAL before Linux 6.6, EOPNOTSUPP from a driver without
// multi-buffer in this mode) does not say why.
func (f *Iface) openError(queue int, err error) error {
	if f.packet > f.frame {
		return fmt.Errorf("dataplane: %s queue %d: MTU %d needs %d-byte frames in chains of %d-byte AF_XDP frames (multi-buffer, XDP_USE_SG: Linux 6.6+, and driver support in zero-copy mode; or lower the MTU to %d): %w",
			f.name, queue, f.mtu, f.packet, f.frame, f.frame-maxFrameOverhead, err)
	}
	return fmt.Errorf("dataplane: %s queue %d: %w", f.name, queue, err)
}
