package xsk

import (
	"errors"
	"fmt"
)

// ZeroCopy selects how the socket binds to the driver.
type ZeroCopy int

const (
	// ZeroCopyAuto tries XDP_ZEROCOPY and falls back to XDP_COPY when the
	// driver refuses it; Socket.ZeroCopy reports the outcome.
	ZeroCopyAuto ZeroCopy = iota
	// ZeroCopyOn binds with XDP_ZEROCOPY and fails when the driver cannot.
	ZeroCopyOn
	// ZeroCopyOff binds with XDP_COPY.
	ZeroCopyOff
)

func (z ZeroCopy) String() string {
	switch z {
	case ZeroCopyAuto:
		return "auto"
	case ZeroCopyOn:
		return "on"
	case ZeroCopyOff:
		return "off"
	}
	return fmt.Sprintf("ZeroCopy(%d)", int(z))
}

// Defaults applied to zero fields of Config.
const (
	DefaultNumFrames = 4096
	DefaultFrameSize = 2048
	DefaultRingSize  = 2048
)

// Config sizes one socket. The zero Config is valid and means the defaults
// above, zero-copy when the driver offers it, and need_wakeup on.
type Config struct {
	// NumFrames is the number of UMEM frames, a power of two. Half of them
	// (at most FillSize) start on the fill ring for RX; the rest start in
	// the TX free list.
	NumFrames int
	// FrameSize is 2048 or 4096 bytes.
	FrameSize int
	// MaxPacket is the longest frame the socket carries (the link's MTU
	// plus its Ethernet and VLAN headers); 0 means FrameSize. Above
	// FrameSize the socket binds with XDP_USE_SG (multi-buffer, Linux 6.6+)
	// and carries a packet as a chain of frames (multibuf.go); at most 17.
	MaxPacket int
	// Ring sizes in descriptors, powers of two.
	FillSize, CompletionSize, RxSize, TxSize int
	// ZeroCopy chooses the bind mode.
	ZeroCopy ZeroCopy
	// NeedWakeup binds with XDP_USE_NEED_WAKEUP, so the kernel asks for a
	// sendto/poll only when it has gone idle. nil means true; see Bool.
	NeedWakeup *bool
}

// Bool returns a pointer to b, for Config.NeedWakeup.
func Bool(b bool) *bool { return &b }

// ErrConfig is wrapped by every error Open returns for an invalid Config.
var ErrConfig = errors.New("invalid config")

// withDefaults returns c with zero fields filled in, or an error wrapping
// ErrConfig. It runs before any system call.
func (c Config) withDefaults() (Config, error) {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.NumFrames, DefaultNumFrames)
	def(&c.FrameSize, DefaultFrameSize)
	def(&c.FillSize, DefaultRingSize)
	def(&c.CompletionSize, DefaultRingSize)
	def(&c.RxSize, DefaultRingSize)
	def(&c.TxSize, DefaultRingSize)
	if c.NeedWakeup == nil {
		c.NeedWakeup = Bool(true)
	}

	if c.FrameSize != 2048 && c.FrameSize != 4096 {
		return c, fmt.Errorf("%w: FrameSize %d: want 2048 or 4096", ErrConfig, c.FrameSize)
	}
	if !powerOfTwo(c.NumFrames) || c.NumFrames < 2 || c.NumFrames > 1<<20 {
		return c, fmt.Errorf("%w: NumFrames %d: want a power of two in [2, 2^20]", ErrConfig, c.NumFrames)
	}
	for _, r := range []struct {
		name string
		n    int
	}{{"FillSize", c.FillSize}, {"CompletionSize", c.CompletionSize}, {"RxSize", c.RxSize}, {"TxSize", c.TxSize}} {
		if !powerOfTwo(r.n) || r.n > 1<<20 {
			return c, fmt.Errorf("%w: %s %d: want a power of two in [1, 2^20]", ErrConfig, r.name, r.n)
		}
	}
	if c.MaxPacket < 0 || c.MaxPacket > maxChainDescs*c.FrameSize {
		return c, fmt.Errorf("%w: MaxPacket %d: want at most %d frames of %d bytes", ErrConfig, c.MaxPacket, maxChainDescs, c.FrameSize)
	}
	switch c.ZeroCopy {
	case ZeroCopyAuto, ZeroCopyOn, ZeroCopyOff:
	default:
		return c, fmt.Errorf("%w: ZeroCopy %d", ErrConfig, int(c.ZeroCopy))
	}
	return c, nil
}

func powerOfTwo(n int) bool { return n > 0 && n&(n-1) == 0 }
