package xsk

// Stats are the kernel's XDP_STATISTICS for the socket plus the socket's own
// counters since Open.
type Stats struct {
	// From the kernel.
	RxDropped            uint64 // dropped for reasons other than a full ring or empty fill ring
	RxInvalidDescs       uint64 // bad descriptors on the fill ring
	TxInvalidDescs       uint64 // bad descriptors on the TX ring
	RxRingFull           uint64 // dropped because the RX ring was full
	RxFillRingEmptyDescs uint64 // times the fill ring was found empty
	TxRingEmptyDescs     uint64 // times the TX ring was found empty

	// From this side.
	RxFrames   uint64 // packets returned by Receive (a multi-buffer chain counts once)
	TxFrames   uint64 // frames queued by Commit
	Completed  uint64 // frames reaped from the completion ring
	Kicks      uint64 // sendto calls made by Flush
	KickBusy   uint64 // of which answered EAGAIN (no progress), EBUSY or ENOBUFS
	KickErrors uint64 // of which answered with any other errno
	Wakeups    uint64 // recvfrom calls made by Wakeup
	TxNoFrame  uint64 // NextFrame found no free frame
	TxRingFull uint64 // NextFrame found no TX ring slot
	BadDescs   uint64 // descriptors outside the UMEM, or frames returned twice
	BadCommits uint64 // Commit with a length outside [1, FrameSize] (MaxPacket with multi-buffer)

	// Multi-buffer (XDP_USE_SG) packets: chains of descriptors.
	RxChains     uint64 // chains Receive gathered into one packet
	RxChainDescs uint64 // descriptors in them
	RxChainDrops uint64 // chains dropped: longer than MaxPacket, or never ended
	TxChains     uint64 // packets Commit split into a chain
	TxChainDescs uint64 // descriptors in them
}

type counters struct {
	rxFrames, txFrames, completed  uint64
	kicks, kickBusy, kickErrors    uint64
	wakeups, txNoFrame, txRingFull uint64
	badDescs, badCommits           uint64
}

// Stats reads the kernel's counters (getsockopt XDP_STATISTICS) and adds the
// socket's own.
func (s *Socket) Stats() (Stats, error) {
	if s.closed {
		return Stats{}, ErrClosed
	}
	c := &s.ctr
	st := Stats{
		RxFrames: c.rxFrames, TxFrames: c.txFrames, Completed: c.completed,
		Kicks: c.kicks, KickBusy: c.kickBusy, KickErrors: c.kickErrors,
		Wakeups: c.wakeups, TxNoFrame: c.txNoFrame, TxRingFull: c.txRingFull,
		BadDescs: c.badDescs, BadCommits: c.badCommits,
	}
	s.mb.stats(&st)
	k, err := getStatistics(s.fd)
	if err != nil {
		return st, s.opError("get statistics", err)
	}
	st.RxDropped = k.Rx_dropped
	st.RxInvalidDescs = k.Rx_invalid_descs
	st.TxInvalidDescs = k.Tx_invalid_descs
	st.RxRingFull = k.Rx_ring_full
	st.RxFillRingEmptyDescs = k.Rx_fill_ring_empty_descs
	st.TxRingEmptyDescs = k.Tx_ring_empty_descs
	return st, nil
}
