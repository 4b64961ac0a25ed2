package xsk

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Small rings and UMEM, so that the tests push many times NumFrames frames
// through every ring and the completion ring must recycle TX frames.
var smallConfig = Config{NumFrames: 64, FillSize: 32, CompletionSize: 32, RxSize: 32, TxSize: 32}

// TestOpenVeth: veth has no zero-copy, so Auto falls back to copy mode,
// On fails with the errno and the place, and half the frames start free.
func TestOpenVeth(t *testing.T) {
	l := newLab(t, 1)
	s := l.open(t, l.xa, 0, smallConfig)
	if s.ZeroCopy() {
		t.Error("veth reported zero-copy")
	}
	if s.FreeFrames() != 32 || s.FD() < 0 {
		t.Errorf("free frames %d, fd %d", s.FreeFrames(), s.FD())
	}
	if _, err := s.Stats(); err != nil {
		t.Fatal(err)
	}
	// The queue is taken: a second socket cannot bind it.
	var err error
	l.do(t, func() { _, err = Open(l.xa, 0, smallConfig) })
	if !errors.Is(err, unix.EBUSY) {
		t.Errorf("second bind of queue 0: %v, want EBUSY", err)
	}
	// Close releases the queue (the kernel does it in deferred work, so
	// allow it a moment): every ring is unmapped, nothing holds the file.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openRetry(t, l, l.xa, 0, Config{ZeroCopy: ZeroCopyOff})
	if s2.ZeroCopy() {
		t.Error("ZeroCopyOff reported zero-copy")
	}
	s2.Close()
	openRetry(t, l, l.xa, 0, Config{}).Close() // and the queue is free again

	time.Sleep(100 * time.Millisecond) // let the kernel release the queue
	l.do(t, func() { _, err = Open(l.xa, 0, Config{ZeroCopy: ZeroCopyOn}) })
	if err == nil {
		t.Fatal("ZeroCopyOn on veth: no error")
	}
	t.Logf("ZeroCopyOn on veth: %v", err)
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) {
		t.Errorf("ZeroCopyOn on veth: %v, want EOPNOTSUPP", err)
	}
	l.do(t, func() { _, err = Open(l.xa, 7, Config{}) })
	if err == nil || !errors.Is(err, unix.EINVAL) {
		t.Errorf("queue 7 of a 1-queue veth: %v, want EINVAL", err)
	}
}

// TestReceiveVeth sends frames from the peer through an AF_PACKET socket,
// receives them through the XDP redirect with Receive and Frame, checks
// every byte, and recycles; 1600 frames through a 64-frame UMEM.
func TestReceiveVeth(t *testing.T) {
	for _, nw := range []bool{true, false} {
		t.Run(map[bool]string{true: "need_wakeup", false: "no_need_wakeup"}[nw], func(t *testing.T) {
			l := newLab(t, 1)
			cfg := smallConfig
			cfg.NeedWakeup = Bool(nw)
			s := l.open(t, l.xa, 0, cfg)
			l.register(t, 0, s.FD())
			peer := l.packetSocket(t, l.xb)

			const total, burst = 1600, 16
			buf := make([]byte, 128)
			descs := make([]Desc, 8) // smaller than a burst: Receive batches
			next := uint32(0)
			for sent := 0; sent < total; sent += burst {
				for i := range burst {
					n := testFrame(buf, l.macA, l.macB, uint32(sent+i))
					peer.send(t, buf[:n])
				}
				for got := 0; got < burst; {
					n := s.Receive(descs)
					if n == 0 {
						if s.RefillNeedsWakeup() {
							_ = s.Wakeup()
						}
						ready, err := s.Poll(2 * time.Second)
						if err != nil {
							t.Fatal(err)
						}
						if !ready {
							st, _ := s.Stats()
							t.Fatalf("frame %d: nothing after 2s; stats %+v", next, st)
						}
						continue
					}
					for _, d := range descs[:n] {
						seq, err := checkFrame(s.Frame(d), l.macA, l.macB)
						if err != nil {
							t.Fatalf("frame at %#x: %v", d.Addr, err)
						}
						if seq != next {
							t.Fatalf("got seq %d, want %d", seq, next)
						}
						next++
					}
					got += n
					s.Recycle(descs[:n])
				}
			}
			st, err := s.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if st.RxFrames != total || st.RxDropped != 0 || st.RxRingFull != 0 || st.RxInvalidDescs != 0 || st.BadDescs != 0 {
				t.Fatalf("stats %+v", st)
			}
			if s.FreeFrames() != 32 {
				t.Fatalf("free frames %d after RX only, want 32", s.FreeFrames())
			}
		})
	}
}

// TestTransmitVeth builds frames with NextFrame/Commit, sends them with
// Flush, reads them on the peer with AF_PACKET and recycles the frames
// through the completion ring: 2000 frames through 32 TX frames.
func TestTransmitVeth(t *testing.T) {
	for _, nw := range []bool{true, false} {
		t.Run(map[bool]string{true: "need_wakeup", false: "no_need_wakeup"}[nw], func(t *testing.T) {
			l := newLab(t, 1)
			cfg := smallConfig
			cfg.NeedWakeup = Bool(nw)
			s := l.open(t, l.xa, 0, cfg)
			peer := l.packetSocket(t, l.xb)

			const total, burst = 2000, 20
			buf := make([]byte, 2048)
			next := uint32(0)
			for sent := 0; sent < total; sent += burst {
				for i := range burst {
					f := s.NextFrame()
					if f == nil {
						t.Fatalf("frame %d: no free frame (free %d, pending %d)", sent+i, s.FreeFrames(), s.TxPending())
					}
					s.Commit(testFrame(f, l.macB, l.macA, uint32(sent+i)))
				}
				if err := s.Flush(); err != nil {
					t.Fatal(err)
				}
				for range burst {
					f := peer.recv(t, buf, 2*time.Second)
					if f == nil {
						st, _ := s.Stats()
						t.Fatalf("peer: frame %d missing; stats %+v", next, st)
					}
					seq, err := checkFrame(f, l.macB, l.macA)
					if err != nil {
						t.Fatal(err)
					}
					if seq != next {
						t.Fatalf("peer got seq %d, want %d", seq, next)
					}
					next++
				}
				s.Complete()
			}
			deadline := time.Now().Add(2 * time.Second)
			for s.FreeFrames() != 32 && time.Now().Before(deadline) {
				s.Complete()
				time.Sleep(time.Millisecond)
			}
			st, err := s.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if s.FreeFrames() != 32 || st.TxFrames != total || st.Completed != total || st.TxInvalidDescs != 0 || st.KickErrors != 0 {
				t.Fatalf("free %d, stats %+v", s.FreeFrames(), st)
			}
			if nw && st.Kicks == 0 {
				t.Fatal("copy mode with need_wakeup: no sendto at all")
			}
		})
	}
}

// TestTransmitBudget: in copy mode a flush of 200 frames is one sendto
// where the kernel lets the socket raise its per-call budget to the TX
// ring's size (XDP_MAX_TX_SKB_BUDGET, Linux 6.17), and at least ceil(200/32)
// = 7 where it does not; every frame arrives either way.
func TestTransmitBudget(t *testing.T) {
	l := newLab(t, 1)
	cfg := Config{NumFrames: 512, FillSize: 128, CompletionSize: 256, RxSize: 128, TxSize: 256}
	s := l.open(t, l.xa, 0, cfg)
	peer := l.packetSocket(t, l.xb)
	if b := s.TxBudget(); b != 256 && b != 32 {
		t.Fatalf("TxBudget %d, want 256 (raised) or 32", b)
	}
	const burst = 200
	for i := range burst {
		f := s.NextFrame()
		if f == nil {
			t.Fatalf("frame %d: no free frame", i)
		}
		s.Commit(testFrame(f, l.macB, l.macA, uint32(i)))
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := 1
	if s.TxBudget() == 32 {
		want = (burst + 31) / 32
	}
	if st.Kicks != uint64(want) || st.KickBusy != 0 {
		t.Errorf("budget %d: %d kicks (%d busy) for %d frames, want %d", s.TxBudget(), st.Kicks, st.KickBusy, burst, want)
	}
	buf := make([]byte, 2048)
	for i := range uint32(burst) {
		f := peer.recv(t, buf, 2*time.Second)
		if f == nil {
			t.Fatalf("peer: frame %d missing", i)
		}
		if seq, err := checkFrame(f, l.macB, l.macA); err != nil || seq != i {
			t.Fatalf("peer got seq %d (%v), want %d", seq, err, i)
		}
	}
	t.Logf("TX budget %d: %d frames in %d kicks", s.TxBudget(), burst, st.Kicks)
}

// TestEchoVeth receives and transmits on the same socket at once, with more
// frames than the UMEM holds, in both directions.
func TestEchoVeth(t *testing.T) {
	l := newLab(t, 1)
	s := l.open(t, l.xa, 0, smallConfig)
	l.register(t, 0, s.FD())
	peer := l.packetSocket(t, l.xb)
	buf := make([]byte, 2048)
	descs := make([]Desc, 16)
	for i := range uint32(500) {
		peer.send(t, buf[:testFrame(buf, l.macA, l.macB, i)])
		var n int
		for n == 0 {
			if n = s.Receive(descs); n == 0 {
				if ok, err := s.Poll(2 * time.Second); err != nil || !ok {
					t.Fatalf("frame %d: poll %v %v", i, ok, err)
				}
			}
		}
		in := s.Frame(descs[0])
		out := s.NextFrame()
		if out == nil {
			t.Fatalf("frame %d: no TX frame", i)
		}
		// Answer: swap the MACs.
		copy(out, in)
		copy(out[0:6], l.macB)
		copy(out[6:12], l.macA)
		s.Commit(len(in))
		s.Recycle(descs[:n])
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		f := peer.recv(t, buf, 2*time.Second)
		for f != nil && string(f[0:6]) != string(l.macB) { // our own send, seen leaving xb
			f = peer.recv(t, buf, 2*time.Second)
		}
		if f == nil {
			t.Fatalf("frame %d: no echo", i)
		}
		if seq, err := checkFrame(f, l.macB, l.macA); err != nil || seq != i {
			t.Fatalf("echo %d: seq %d, %v", i, seq, err)
		}
		s.Complete()
	}
}

// TestRxDropsCounted fills the RX side without receiving and checks that
// the kernel's statistics show the drops.
func TestRxDropsCounted(t *testing.T) {
	l := newLab(t, 1)
	s := l.open(t, l.xa, 0, Config{NumFrames: 16, FillSize: 8, CompletionSize: 8, RxSize: 16, TxSize: 8})
	l.register(t, 0, s.FD())
	peer := l.packetSocket(t, l.xb)
	buf := make([]byte, 128)
	for i := range uint32(40) {
		peer.send(t, buf[:testFrame(buf, l.macA, l.macB, i)])
	}
	deadline := time.Now().Add(2 * time.Second)
	var st Stats
	for time.Now().Before(deadline) {
		var err error
		if st, err = s.Stats(); err != nil {
			t.Fatal(err)
		}
		if st.RxDropped+st.RxRingFull+st.RxFillRingEmptyDescs > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st.RxDropped+st.RxRingFull+st.RxFillRingEmptyDescs == 0 {
		t.Fatalf("40 frames into 8 fill entries, no drop counted: %+v", st)
	}
	t.Logf("stats after overrun: %+v", st)
	descs := make([]Desc, 64)
	if n := s.Receive(descs); n != 8 {
		t.Fatalf("received %d, want the 8 that had fill entries", n)
	}
}

// TestPoll: Poll times out when nothing arrives and reports readiness when
// something does.
func TestPoll(t *testing.T) {
	l := newLab(t, 1)
	s := l.open(t, l.xa, 0, smallConfig)
	l.register(t, 0, s.FD())
	start := time.Now()
	ready, err := s.Poll(50 * time.Millisecond)
	if err != nil || ready {
		t.Fatalf("idle Poll: %v %v", ready, err)
	}
	if d := time.Since(start); d < 45*time.Millisecond {
		t.Fatalf("idle Poll returned after %v", d)
	}
	if ready, err := s.Poll(0); err != nil || ready {
		t.Fatalf("Poll(0): %v %v", ready, err)
	}
	peer := l.packetSocket(t, l.xb)
	buf := make([]byte, 128)
	peer.send(t, buf[:testFrame(buf, l.macA, l.macB, 1)])
	if ready, err := s.Poll(-1); err != nil || !ready {
		t.Fatalf("Poll after send: %v %v", ready, err)
	}
}

// openRetry opens a socket, retrying for up to a second while the queue is
// still held by a socket closed a moment ago.
func openRetry(t *testing.T, l *lab, ifindex, queue int, cfg Config) *Socket {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		var s *Socket
		var err error
		l.do(t, func() { s, err = Open(ifindex, queue, cfg) })
		if err == nil {
			return s
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
}
