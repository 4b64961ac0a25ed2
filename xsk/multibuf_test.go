package xsk

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// jumboCfg is a socket for MTU 9000 (9018-byte frames with two VLAN tags'
// room) in 4096-byte frames: chains of at most three descriptors.
func jumboCfg(frames, ring int) Config {
	return Config{NumFrames: frames, FrameSize: 4096, MaxPacket: 9000 + 14 + 8,
		FillSize: ring, CompletionSize: ring, RxSize: ring, TxSize: ring}
}

// pattern is n bytes that differ from one packet (seed) to the next.
func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

// deliver plays the kernel receiving pkt: it takes frames off the fill ring,
// copies pkt into them in pieces of at most piece bytes and produces the
// chain (XDP_PKT_CONTD on all but the last). It returns the descriptors.
func (k fakeKernel) deliver(pkt []byte, piece int) []unix.XDPDesc {
	k.t.Helper()
	n := (len(pkt) + piece - 1) / piece
	addrs := k.consumeFill(n)
	if len(addrs) != n {
		k.t.Fatalf("fill ring has %d frames, want %d", len(addrs), n)
	}
	var descs []unix.XDPDesc
	for i, a := range addrs {
		end := min((i+1)*piece, len(pkt))
		c := copy(k.s.umem.frame(a), pkt[i*piece:end])
		d := unix.XDPDesc{Addr: a, Len: uint32(c)}
		if i < n-1 {
			d.Options = unix.XDP_PKT_CONTD
		}
		descs = append(descs, d)
	}
	return descs
}

func (k fakeKernel) fillCount() int {
	r := &k.s.fill
	return int(*r.producer - *r.consumer)
}

// TestMultiBufferRX: one-frame packets come out in place, chains gathered
// into scratch (one copy) with their frames back on the fill ring at once,
// in ring order; Recycle takes both kinds; every frame is accounted for.
func TestMultiBufferRX(t *testing.T) {
	s := newFakeSocket(t, jumboCfg(64, 32), 1<<32-5)
	k := fakeKernel{t: t, s: s}
	if !s.MultiBuffer() || s.MaxPacket() != 9022 || s.mb.bindFlags() != unix.XDP_USE_SG {
		t.Fatalf("multi-buffer %v, max packet %d", s.MultiBuffer(), s.MaxPacket())
	}
	fill0 := k.fillCount()
	small, big, mid := pattern(1, 60), pattern(2, 9014), pattern(3, 4097)
	var all []unix.XDPDesc
	all = append(all, k.deliver(small, 4096)...)
	all = append(all, k.deliver(big, 4096)...)
	all = append(all, k.deliver(mid, 4096)...)
	all = append(all, k.deliver(small, 4096)...)
	k.produceRx(all...)

	descs := make([]Desc, 8)
	n := s.Receive(descs)
	if n != 4 {
		t.Fatalf("Receive: %d packets, want 4", n)
	}
	for i, want := range [][]byte{small, big, mid, small} {
		if got := s.Frame(descs[i]); !bytes.Equal(got, want) {
			t.Fatalf("packet %d: %d bytes, want %d (equal prefix %v)", i, len(got), len(want), len(got) > 0 && got[0] == want[0])
		}
	}
	if descs[0].Addr != all[0].Addr || descs[1].Addr&scratchAddr == 0 {
		t.Fatalf("descs %+v: one-frame packets in place, chains in scratch", descs[:n])
	}
	// The chains' five frames are back on the fill ring already.
	if got := k.fillCount(); got != fill0-7+5 {
		t.Fatalf("fill ring %d, want %d", got, fill0-7+5)
	}
	s.Recycle(descs[:n])
	if got := k.fillCount(); got != fill0 {
		t.Fatalf("fill ring %d after Recycle, want %d", got, fill0)
	}
	st, _ := s.Stats()
	if st.RxFrames != 4 || st.RxChains != 2 || st.RxChainDescs != 5 || st.RxChainDrops != 0 || st.BadDescs != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestMultiBufferRXPartialChain: a chain whose last descriptor is not yet
// published stays on the ring; the packets before it are delivered.
func TestMultiBufferRXPartialChain(t *testing.T) {
	s := newFakeSocket(t, jumboCfg(64, 32), 0)
	k := fakeKernel{t: t, s: s}
	small, big := pattern(1, 100), pattern(2, 9000)
	chain := k.deliver(big, 4096)
	k.produceRx(k.deliver(small, 4096)...)
	k.produceRx(chain[:2]...)
	descs := make([]Desc, 8)
	if n := s.Receive(descs); n != 1 || !bytes.Equal(s.Frame(descs[0]), small) {
		t.Fatalf("Receive: %d packets, want the small one", n)
	}
	s.Recycle(descs[:1])
	if n := s.Receive(descs); n != 0 {
		t.Fatalf("Receive of half a chain: %d packets", n)
	}
	k.produceRx(chain[2])
	if n := s.Receive(descs); n != 1 || !bytes.Equal(s.Frame(descs[0]), big) {
		t.Fatalf("Receive of the completed chain: %d packets", n)
	}
	s.Recycle(descs[:1])
	if st, _ := s.Stats(); st.RxChains != 1 || st.RxChainDrops != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestMultiBufferRXDrops: a chain longer than MaxPacket allows, in bytes or
// in descriptors, is dropped and counted, its frames back on the fill ring;
// a chain that fills the whole ring without ending is dropped too.
func TestMultiBufferRXDrops(t *testing.T) {
	s := newFakeSocket(t, jumboCfg(64, 8), 0)
	k := fakeKernel{t: t, s: s}
	fill0 := k.fillCount()
	descs := make([]Desc, 8)

	k.produceRx(k.deliver(pattern(1, 4*1024), 1024)...) // 4 descriptors > 3
	k.produceRx(k.deliver(pattern(2, 60), 4096)...)
	if n := s.Receive(descs); n != 1 || len(s.Frame(descs[0])) != 60 {
		t.Fatalf("Receive: %d packets, want only the small one", n)
	}
	s.Recycle(descs[:1])
	k.produceRx(k.deliver(pattern(3, 9100), 4096)...) // 3 descriptors, > MaxPacket bytes
	if n := s.Receive(descs); n != 0 {
		t.Fatalf("Receive of an oversize chain: %d packets", n)
	}
	// Eight descriptors, all continued: a chain that never ends.
	never := k.deliver(pattern(4, 8*100), 100)
	never[7].Options = unix.XDP_PKT_CONTD
	k.produceRx(never...)
	if n := s.Receive(descs); n != 0 {
		t.Fatalf("Receive of an endless chain: %d packets", n)
	}
	if got := k.fillCount(); got != fill0 {
		t.Fatalf("fill ring %d, want %d: dropped chains' frames not returned", got, fill0)
	}
	st, _ := s.Stats()
	if st.RxChainDrops != 3 || st.RxChains != 0 || st.BadDescs != 0 {
		t.Fatalf("stats %+v", st)
	}
	// The socket still works.
	k.produceRx(k.deliver(pattern(5, 5000), 4096)...)
	if n := s.Receive(descs); n != 1 || len(s.Frame(descs[0])) != 5000 {
		t.Fatalf("Receive after drops: %d", n)
	}
}

// TestMultiBufferRXScratchFull: one Receive gathers at most rxScratchSlots
// chains; the rest wait on the ring for the next call.
func TestMultiBufferRXScratchFull(t *testing.T) {
	const chains = rxScratchSlots + 5
	s := newFakeSocket(t, jumboCfg(512, 256), 0)
	k := fakeKernel{t: t, s: s}
	for i := range chains {
		k.produceRx(k.deliver(pattern(byte(i), 5000), 4096)...)
	}
	descs := make([]Desc, 64)
	got := 0
	for round, want := range []int{rxScratchSlots, 5, 0} {
		n := s.Receive(descs)
		if n != want {
			t.Fatalf("round %d: %d packets, want %d", round, n, want)
		}
		for i := range n {
			if !bytes.Equal(s.Frame(descs[i]), pattern(byte(got+i), 5000)) {
				t.Fatalf("packet %d corrupt", got+i)
			}
		}
		got += n
		s.Recycle(descs[:n])
	}
}

// TestMultiBufferTX: NextFrame hands out a buffer for the longest packet;
// Commit splits a jumbo frame into a chain and sends a small one as one
// descriptor; completions bring every frame back; UnflushedFrame shows
// whole packets for a capture.
func TestMultiBufferTX(t *testing.T) {
	s := newFakeSocket(t, jumboCfg(32, 16), 1<<32-3)
	k := fakeKernel{t: t, s: s}
	free0 := s.FreeFrames()
	big, small := pattern(9, 9022), pattern(8, 66)

	buf := s.NextFrame()
	if len(buf) < 9022 {
		t.Fatalf("NextFrame: %d bytes, want at least MaxPacket", len(buf))
	}
	s.Commit(copy(buf, big))
	s.Commit(copy(s.NextFrame(), small))
	if s.Unflushed() != 4 {
		t.Fatalf("Unflushed %d descriptors, want 4", s.Unflushed())
	}
	if !bytes.Equal(s.UnflushedFrame(0), big) || s.UnflushedFrame(1) != nil || s.UnflushedFrame(2) != nil ||
		!bytes.Equal(s.UnflushedFrame(3), small) {
		t.Fatal("UnflushedFrame does not show the packets whole")
	}
	s.NextFrame()
	s.Commit(0)
	s.Commit(9023) // both refused, the buffer still held
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	tx := k.consumeTx(16)
	wantLen := []uint32{4096, 4096, 830, 66}
	wantOpt := []uint32{unix.XDP_PKT_CONTD, unix.XDP_PKT_CONTD, 0, 0}
	if len(tx) != 4 {
		t.Fatalf("tx ring: %+v", tx)
	}
	var sent []byte
	for i, d := range tx {
		if d.Len != wantLen[i] || d.Options != wantOpt[i] {
			t.Fatalf("descriptor %d: %+v, want len %d options %d", i, d, wantLen[i], wantOpt[i])
		}
		sent = append(sent, s.umem.frame(d.Addr)[:d.Len]...)
	}
	if !bytes.Equal(sent, append(append([]byte(nil), big...), small...)) {
		t.Fatal("the chain does not carry the frame")
	}
	st, _ := s.Stats()
	if st.TxFrames != 2 || st.TxChains != 1 || st.TxChainDescs != 3 || st.BadCommits != 2 {
		t.Fatalf("stats %+v", st)
	}
	var done []uint64
	for _, d := range tx {
		done = append(done, d.Addr)
	}
	k.produceComp(done...)
	s.Complete()
	if s.FreeFrames() != free0 {
		t.Fatalf("free frames %d after completion, want %d", s.FreeFrames(), free0)
	}
}

// TestMultiBufferTXRoom: NextFrame refuses (nil, counted) when the longest
// chain would not find frames or TX slots, so Commit never has to.
func TestMultiBufferTXRoom(t *testing.T) {
	s := newFakeSocket(t, jumboCfg(16, 8), 0) // 8 TX frames, 8 slots
	var sent int
	for s.NextFrame() != nil {
		s.Commit(60)
		sent++
	}
	// 8 slots: one-frame packets until fewer than 3 slots are left.
	if sent != 6 || s.ctr.txRingFull == 0 {
		t.Fatalf("sent %d, ring full %d", sent, s.ctr.txRingFull)
	}
	s2 := newFakeSocket(t, jumboCfg(8, 8), 0) // 4 TX frames
	if b := s2.NextFrame(); b == nil {
		t.Fatal("NextFrame with 4 free frames")
	}
	s2.Commit(5000) // 2 frames
	if s2.NextFrame() != nil || s2.ctr.txNoFrame != 1 {
		t.Fatalf("NextFrame with 2 free frames for a 3-frame chain: no frame %d", s2.ctr.txNoFrame)
	}
}

// TestMultiBufferConfig: MaxPacket beyond the longest chain is refused
// before any system call; up to FrameSize there is no multi-buffer.
func TestMultiBufferConfig(t *testing.T) {
	if _, err := (Config{FrameSize: 2048, MaxPacket: 17*2048 + 1}).withDefaults(); !errors.Is(err, ErrConfig) {
		t.Fatalf("MaxPacket over 17 frames: %v", err)
	}
	s := newFakeSocket(t, Config{NumFrames: 8, FrameSize: 4096, MaxPacket: 4096}, 0)
	if s.MultiBuffer() || s.MaxPacket() != 4096 || s.mb.bindFlags() != 0 {
		t.Fatal("MaxPacket == FrameSize turned multi-buffer on")
	}
}

// receiveJumbo plays the kernel receiving one 9000-byte packet in three
// frames off the fill ring, without allocating, and receives it.
func receiveJumbo(tb testing.TB, s *Socket, descs []Desc) {
	fr, r := &s.fill, &s.rx
	lens := [3]uint32{4096, 4096, 808}
	for i := range 3 {
		d := &r.descs[*r.producer&r.mask]
		d.Addr, d.Len, d.Options = fr.addrs[*fr.consumer&fr.mask], lens[i], unix.XDP_PKT_CONTD
		if i == 2 {
			d.Options = 0
		}
		*fr.consumer++
		*r.producer++
	}
	if n := s.Receive(descs); n != 1 || len(s.Frame(descs[0])) != 9000 {
		tb.Fatalf("Receive: %d", n)
	}
	s.Recycle(descs[:1])
}

// sendJumbo transmits pkt and plays the kernel sending and completing it.
func sendJumbo(s *Socket, pkt []byte) {
	t, c := &s.tx, &s.comp
	s.Commit(copy(s.NextFrame(), pkt))
	s.Flush()
	for *t.consumer != *t.producer {
		c.addrs[*c.producer&c.mask] = t.descs[*t.consumer&t.mask].Addr
		*c.producer++
		*t.consumer++
	}
	s.Complete()
}

// TestMultiBufferAllocsNothing: gathering and splitting allocate nothing.
func TestMultiBufferAllocsNothing(t *testing.T) {
	s := newFakeSocket(t, jumboCfg(256, 64), 0)
	pkt := pattern(1, 9000)
	descs := make([]Desc, 8)
	rx := testing.AllocsPerRun(100, func() { receiveJumbo(t, s, descs) })
	tx := testing.AllocsPerRun(100, func() { sendJumbo(s, pkt) })
	if rx != 0 || tx != 0 {
		t.Fatalf("allocs per packet: rx %v, tx %v", rx, tx)
	}
	if st, _ := s.Stats(); st.RxChains < 100 || st.TxChains < 100 || st.BadDescs != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// BenchmarkMultiBufferRX: Receive+Frame+Recycle of 9000-byte packets in
// three frames (the gather copy included), fake kernel.
func BenchmarkMultiBufferRX(b *testing.B) {
	s := newFakeSocket(b, jumboCfg(256, 64), 0)
	descs := make([]Desc, 8)
	b.SetBytes(9000)
	b.ReportAllocs()
	for b.Loop() {
		receiveJumbo(b, s, descs)
	}
}

// BenchmarkMultiBufferTX: NextFrame+Commit of a 9000-byte frame (the split
// copy included) and its completion, fake kernel.
func BenchmarkMultiBufferTX(b *testing.B) {
	s := newFakeSocket(b, jumboCfg(256, 64), 0)
	pkt := pattern(1, 9000)
	b.SetBytes(9000)
	b.ReportAllocs()
	for b.Loop() {
		sendJumbo(s, pkt)
	}
}
