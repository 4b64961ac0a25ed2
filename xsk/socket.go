package xsk

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Desc is one received frame: its UMEM address and length.
type Desc struct {
	Addr uint64
	Len  uint32
}

// Socket is one AF_XDP socket bound to one (interface, queue), with its own
// UMEM. It is not safe for concurrent use: a shard owns it.
type Socket struct {
	fd      int
	ifindex int
	queue   int
	cfg     Config

	umem umem
	fill fillRing
	comp completionRing
	rx   rxRing
	tx   txRing

	// maps are the mmaps to undo on Close: UMEM, fill, completion, RX, TX.
	maps [5][]byte

	zeroCopy   bool
	needWakeup bool
	txBudget   int // frames the kernel sends per sendto in copy mode
	closed     bool

	// txHeld is true while txAddr is a frame NextFrame handed out and Commit
	// has not queued yet.
	txHeld bool
	txAddr uint64

	mb multiBuf // packets larger than a frame (multibuf.go)

	pollFds [1]unix.PollFd
	ctr     counters
}

// Open creates an AF_XDP socket on queue of the interface with index
// ifindex: it maps and registers a UMEM, creates and maps the four rings
// with the offsets from XDP_MMAP_OFFSETS, binds, and puts half the frames
// (at most FillSize) on the fill ring. The socket receives only what an XDP
// program redirects to it through an XSKMAP entry holding FD().
func Open(ifindex, queue int, cfg Config) (*Socket, error) {
	s := &Socket{fd: -1, ifindex: ifindex, queue: queue}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, s.opError("open", err)
	}
	if ifindex <= 0 || queue < 0 {
		return nil, s.opError("open", fmt.Errorf("%w: interface index and queue must be positive", ErrConfig))
	}
	s.cfg = cfg
	if err := s.open(); err != nil {
		s.release()
		return nil, err
	}
	return s, nil
}

func (s *Socket) open() error {
	cfg := &s.cfg
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return s.opError("socket", err)
	}
	s.fd = fd

	size := cfg.NumFrames * cfg.FrameSize
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return s.opError(fmt.Sprintf("mmap %d-byte umem", size), err)
	}
	s.maps[0] = mem
	reg := unix.XDPUmemReg{
		Addr: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(mem)))),
		Len:  uint64(len(mem)),
		Size: uint32(cfg.FrameSize),
	}
	if err := setUmemReg(fd, &reg); err != nil {
		return s.opError("register umem", err)
	}
	for _, r := range []struct {
		name string
		opt  int
		n    int
	}{
		{"fill", unix.XDP_UMEM_FILL_RING, cfg.FillSize},
		{"completion", unix.XDP_UMEM_COMPLETION_RING, cfg.CompletionSize},
		{"rx", unix.XDP_RX_RING, cfg.RxSize},
		{"tx", unix.XDP_TX_RING, cfg.TxSize},
	} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, r.opt, r.n); err != nil {
			return s.opError(fmt.Sprintf("size %s ring to %d", r.name, r.n), err)
		}
	}
	off, err := getMmapOffsets(fd)
	if err != nil {
		return s.opError("get mmap offsets", err)
	}
	for i, r := range []struct {
		name   string
		pgoff  int64
		layout ringLayout
		n      int
		entry  uint32
	}{
		{"fill", unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, cfg.FillSize, addrSize},
		{"completion", unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, cfg.CompletionSize, addrSize},
		{"rx", unix.XDP_PGOFF_RX_RING, off.Rx, cfg.RxSize, descSize},
		{"tx", unix.XDP_PGOFF_TX_RING, off.Tx, cfg.TxSize, descSize},
	} {
		m, err := mapRing(fd, r.pgoff, r.layout, uint32(r.n), r.entry)
		if err != nil {
			return s.opError("mmap "+r.name+" ring", err)
		}
		s.maps[i+1] = m
	}
	if err := s.initRings(&off); err != nil {
		return s.opError("open", err)
	}

	s.needWakeup = *cfg.NeedWakeup
	flags := s.mb.bindFlags()
	if s.needWakeup {
		flags |= unix.XDP_USE_NEED_WAKEUP
	}
	switch cfg.ZeroCopy {
	case ZeroCopyOn:
		if err := s.bind(flags | unix.XDP_ZEROCOPY); err != nil {
			return s.opError("bind", fmt.Errorf("zero-copy: %w", err))
		}
	case ZeroCopyOff:
		if err := s.bind(flags | unix.XDP_COPY); err != nil {
			return s.opError("bind", fmt.Errorf("copy: %w", err))
		}
	case ZeroCopyAuto:
		if zcErr := s.bind(flags | unix.XDP_ZEROCOPY); zcErr != nil {
			// The driver has no zero-copy for this queue (EOPNOTSUPP):
			// a failed bind leaves the socket unbound with its UMEM and
			// rings, so bind it again in copy mode, which every driver
			// with XDP supports.
			if err := s.bind(flags | unix.XDP_COPY); err != nil {
				return s.opError("bind", fmt.Errorf("copy: %w (zero-copy: %v)", err, zcErr))
			}
		}
	}
	opt, err := unix.GetsockoptInt(fd, unix.SOL_XDP, unix.XDP_OPTIONS)
	if err != nil {
		return s.opError("get options", err)
	}
	s.zeroCopy = opt&unix.XDP_OPTIONS_ZEROCOPY != 0
	s.txBudget = copyModeTxBatch
	if !s.zeroCopy {
		// Copy mode sends at most 32 frames per sendto unless told more
		// (XDP_MAX_TX_SKB_BUDGET, Linux 6.17): a whole TX ring per kick,
		// so one flush of a batch is one kernel entry. Older kernels
		// answer ENOPROTOOPT and keep 32.
		if unix.SetsockoptInt(fd, unix.SOL_XDP, unix.XDP_MAX_TX_SKB_BUDGET, cfg.TxSize) == nil {
			s.txBudget = cfg.TxSize
		}
	}
	s.initFrames()
	return nil
}

// copyModeTxBatch is how many frames copy mode sends per sendto by
// default (the kernel's TX_BATCH_SIZE).
const copyModeTxBatch = 32

// TxBudget is how many frames one kick (sendto) transmits at most in copy
// mode: the whole TX ring where the kernel lets the socket raise it
// (XDP_MAX_TX_SKB_BUDGET), else 32.
func (s *Socket) TxBudget() int { return s.txBudget }

func (s *Socket) bind(flags uint16) error {
	err := unix.Bind(s.fd, &unix.SockaddrXDP{Flags: flags, Ifindex: uint32(s.ifindex), QueueID: uint32(s.queue)})
	if err != nil && s.mb.on {
		// Before Linux 6.6 the flag is unknown (EINVAL); a driver without
		// multi-buffer in this mode answers EOPNOTSUPP.
		return fmt.Errorf("multi-buffer (XDP_USE_SG, %d-byte packets in %d-byte frames): %w", s.mb.maxPacket, s.cfg.FrameSize, err)
	}
	return err
}

// initRings builds the four rings over s.maps[1:] as laid out by off.
func (s *Socket) initRings(off *unix.XDPMmapOffsets) error {
	var err error
	if s.fill, err = newFillRing(s.maps[1], off.Fr, uint32(s.cfg.FillSize)); err != nil {
		return fmt.Errorf("fill ring: %w", err)
	}
	if s.comp, err = newCompletionRing(s.maps[2], off.Cr, uint32(s.cfg.CompletionSize)); err != nil {
		return fmt.Errorf("completion ring: %w", err)
	}
	if s.rx, err = newRxRing(s.maps[3], off.Rx, uint32(s.cfg.RxSize)); err != nil {
		return fmt.Errorf("rx ring: %w", err)
	}
	if s.tx, err = newTxRing(s.maps[4], off.Tx, uint32(s.cfg.TxSize)); err != nil {
		return fmt.Errorf("tx ring: %w", err)
	}
	s.initMultiBuf()
	return nil
}

// initFrames puts the first half of the frames (at most the fill ring's
// size) on the fill ring and the rest on the free stack, lowest address on
// top.
func (s *Socket) initFrames() {
	s.umem = newUmem(s.maps[0], s.cfg.FrameSize)
	n := s.umem.numFrames()
	toFill := min(n/2, int(s.fill.free(uint32(s.cfg.FillSize))))
	for i := range toFill {
		s.fill.put(uint64(i) * s.umem.frameSize)
		s.umem.set(uint64(i)*s.umem.frameSize, ownedRx)
	}
	s.fill.submit()
	for i := n - 1; i >= toFill; i-- {
		s.umem.push(uint64(i) * s.umem.frameSize)
	}
	s.pollFds[0] = unix.PollFd{Fd: int32(s.fd), Events: unix.POLLIN}
}

// FD returns the socket's file descriptor, for an XSKMAP entry.
func (s *Socket) FD() int { return s.fd }

// ZeroCopy reports whether the kernel bound the socket in zero-copy mode.
func (s *Socket) ZeroCopy() bool { return s.zeroCopy }

// Ifindex and Queue return where the socket is bound.
func (s *Socket) Ifindex() int { return s.ifindex }
func (s *Socket) Queue() int   { return s.queue }

// FrameSize returns the size of one UMEM frame.
func (s *Socket) FrameSize() int { return s.cfg.FrameSize }

// FreeFrames returns how many frames are free for NextFrame right now.
func (s *Socket) FreeFrames() int { return s.umem.nfree }

// Close unmaps the rings and the UMEM and closes the socket. It is safe to
// call more than once; every other method is a no-op (or returns ErrClosed)
// afterwards. The kernel lets go of the queue in deferred work: an Open of
// the same queue right after Close can fail with EBUSY for a few tens of
// milliseconds (20 ms measured on veth, Linux 6.18).
func (s *Socket) Close() error {
	if s.closed {
		return nil
	}
	return s.release()
}

func (s *Socket) release() error {
	s.closed = true
	s.umem = umem{}
	s.fill, s.comp, s.rx, s.tx = fillRing{}, completionRing{}, rxRing{}, txRing{}
	s.txHeld = false
	s.mb = multiBuf{}
	var errs []error
	// Rings first, then the socket, then the UMEM: the kernel keeps the
	// UMEM pages pinned until it has let go of the socket, so the order is
	// about tidiness, not safety. A ring mapping holds a reference to the
	// socket file, so the socket (and its queue binding) is released only
	// once every ring is unmapped.
	for i := len(s.maps) - 1; i >= 1; i-- {
		if s.maps[i] != nil {
			if err := unix.Munmap(s.maps[i]); err != nil {
				errs = append(errs, err)
			}
			s.maps[i] = nil
		}
	}
	if s.fd >= 0 {
		if err := unix.Close(s.fd); err != nil {
			errs = append(errs, err)
		}
		s.fd = -1
	}
	if s.maps[0] != nil {
		if err := unix.Munmap(s.maps[0]); err != nil {
			errs = append(errs, err)
		}
		s.maps[0] = nil
	}
	if len(errs) > 0 {
		return s.opError("close", errors.Join(errs...))
	}
	return nil
}
