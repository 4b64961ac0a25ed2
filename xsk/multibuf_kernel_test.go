package xsk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// jumboFrame writes an n-byte test frame (etherTypeTest) carrying seq and a
// pattern from it.
func jumboFrame(buf []byte, dst, src net.HardwareAddr, seq uint32, n int) []byte {
	f := buf[:n]
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:14], etherTypeTest)
	binary.BigEndian.PutUint32(f[14:18], seq)
	for i := 18; i < n; i++ {
		f[i] = byte(seq*31) + byte(i) + byte(i>>8)
	}
	return f
}

// TestMultiBufferVeth runs 9014-byte frames (MTU 9000) both ways over a veth
// pair through a real kernel: from the peer (AF_PACKET) through the
// frags-aware XDP redirect into a socket bound with XDP_USE_SG, which
// gathers each three-descriptor chain; and from that socket, which splits
// each frame into a chain, to the peer. Every byte is checked; frames of
// every length class (one, two, three descriptors) go both ways.
func TestMultiBufferVeth(t *testing.T) {
	const mtu = 9000
	l := newLabMTU(t, 1, mtu)
	cfg := Config{NumFrames: 256, FrameSize: 4096, MaxPacket: mtu + 14, FillSize: 128, CompletionSize: 128, RxSize: 128, TxSize: 128}
	s := l.open(t, l.xa, 0, cfg)
	if !s.MultiBuffer() {
		t.Fatal("socket not multi-buffer")
	}
	l.register(t, 0, s.FD())
	peer := l.packetSocket(t, l.xb)
	sizes := []int{64, 4000, 4096, 4097, 8192, 8193, mtu + 14}

	want := make([]byte, mtu+14)
	buf := make([]byte, mtu+100)
	descs := make([]Desc, 16)
	const rounds = 60
	for i := range rounds * len(sizes) {
		n := sizes[i%len(sizes)]
		peer.send(t, jumboFrame(buf, l.macA, l.macB, uint32(i), n))
		deadline := time.Now().Add(2 * time.Second)
		got := 0
		for got == 0 {
			if got = s.Receive(descs); got == 0 {
				if time.Now().After(deadline) {
					st, _ := s.Stats()
					t.Fatalf("rx frame %d (%d bytes): nothing after 2s; stats %+v", i, n, st)
				}
				s.Poll(10 * time.Millisecond)
			}
		}
		if got != 1 || !bytes.Equal(s.Frame(descs[0]), jumboFrame(want, l.macA, l.macB, uint32(i), n)) {
			t.Fatalf("rx frame %d: %d packets, first %d bytes, want %d", i, got, len(s.Frame(descs[0])), n)
		}
		s.Recycle(descs[:got])
	}
	for i := range rounds * len(sizes) {
		n := sizes[i%len(sizes)]
		f := s.NextFrame()
		if f == nil {
			t.Fatalf("tx frame %d: no frame", i)
		}
		s.Commit(len(jumboFrame(f, l.macB, l.macA, uint32(i), n)))
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		r := peer.recv(t, buf, 2*time.Second)
		if !bytes.Equal(r, jumboFrame(want, l.macB, l.macA, uint32(i), n)) {
			st, _ := s.Stats()
			t.Fatalf("tx frame %d: peer got %d bytes, want %d; stats %+v", i, len(r), n, st)
		}
		s.Complete()
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats %+v", st)
	if st.RxChains == 0 || st.TxChains == 0 || st.RxChainDrops != 0 || st.TxInvalidDescs != 0 ||
		st.RxDropped != 0 || st.BadDescs != 0 || st.BadCommits != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestMultiBufferBindRefused: where the kernel refuses multi-buffer in the
// mode asked for (veth has no zero-copy at all), the error says that the
// socket wanted multi-buffer and carries the errno; in auto mode the copy
// mode bind with XDP_USE_SG succeeds.
func TestMultiBufferBindRefused(t *testing.T) {
	l := newLabMTU(t, 1, 9000)
	cfg := Config{NumFrames: 64, FrameSize: 4096, MaxPacket: 9014, ZeroCopy: ZeroCopyOn}
	var err error
	l.do(t, func() { _, err = Open(l.xa, 0, cfg) })
	if err == nil || !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) ||
		!strings.Contains(err.Error(), "multi-buffer (XDP_USE_SG, 9014-byte packets in 4096-byte frames)") {
		t.Fatalf("zero-copy multi-buffer on veth: %v", err)
	}
	t.Log(err)
	cfg.ZeroCopy = ZeroCopyAuto
	s := openRetry(t, l, l.xa, 0, cfg)
	defer s.Close()
	if !s.MultiBuffer() || s.ZeroCopy() {
		t.Fatalf("auto: multi-buffer %v, zero-copy %v", s.MultiBuffer(), s.ZeroCopy())
	}
}
