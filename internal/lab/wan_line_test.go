package lab

import (
	"encoding/binary"
	"math"
	"testing"
	"time"
)

// ipFrame returns an Ethernet frame of n bytes carrying IPv4, with seq in
// its payload.
func ipFrame(n int, seq uint64) []byte {
	f := make([]byte, n)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	binary.BigEndian.PutUint64(f[n-8:], seq)
	return f
}

// out is a frame as a line's send saw it.
type out struct {
	seq uint64
	at  int64
}

// drain releases everything due by now into got.
func drain(l *line, now int64, got *[]out) {
	l.release(now, math.MaxInt, func(f []byte, q int) bool {
		*got = append(*got, out{binary.BigEndian.Uint64(f[len(f)-8:]), now})
		return true
	})
}

// run feeds n frames of size bytes to a line with p, one every gap ns, and
// advances time 10 µs at a time until everything has left.
func run(p WANPath, n, size int, gap int64) (*line, []out) {
	l := newLine(4096, 42, 1)
	l.setConfig(p)
	var got []out
	now := int64(0)
	for i := 0; i < n || l.st.InFlight > 0; i++ {
		if i < n && now >= int64(i)*gap {
			l.arrive(now, ipFrame(size, uint64(i)), 0)
		} else {
			now += 10_000
			i--
		}
		drain(l, now, &got)
		if now > int64(time.Hour) {
			panic("line never drained")
		}
	}
	return l, got
}

func TestLineDelayAndJitterKeepOrder(t *testing.T) {
	const d, j = 10 * time.Millisecond, 4 * time.Millisecond
	for _, tc := range []struct {
		name   string
		gap    int64
		lo, hi time.Duration // bounds of the mean hold
		frames int
	}{
		// Sparse frames draw their delays independently: mean ≈ Delay.
		{"sparse", int64(20 * time.Millisecond), d - j/5, d + j/5, 500},
		// Dense ones (100 within the jitter) cannot leave before the one
		// ahead: their delays bunch towards Delay+Jitter.
		{"dense", 100_000, d + j/2, d + j, 2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, got := run(WANPath{Delay: d, Jitter: j}, tc.frames, 100, tc.gap)
			if len(got) != tc.frames || l.st.Reordered != 0 {
				t.Fatalf("%d frames out, %d reordered", len(got), l.st.Reordered)
			}
			var sum time.Duration
			for i, o := range got {
				if o.seq != uint64(i) {
					t.Fatalf("frame %d left as number %d: jitter reordered", o.seq, i)
				}
				hold := time.Duration(o.at - int64(o.seq)*tc.gap)
				if hold < d-j || hold > d+j+20*time.Microsecond {
					t.Fatalf("frame %d held %v, want %v ± %v", o.seq, hold, d, j)
				}
				sum += hold
			}
			if mean := sum / time.Duration(len(got)); mean < tc.lo || mean > tc.hi {
				t.Errorf("mean hold %v, want in [%v, %v]", mean, tc.lo, tc.hi)
			}
		})
	}
}

func TestLineReorder(t *testing.T) {
	l, got := run(WANPath{Delay: time.Millisecond, Reorder: 0.1, ReorderDistance: 2}, 5000, 100, 50_000)
	// A frame is late when frames that came after it left before it; by
	// how many is its displacement.
	late, byTwo := 0, 0
	for i, o := range got {
		k := 0
		for _, p := range got[max(0, i-10):i] {
			if p.seq > o.seq {
				k++
			}
		}
		if k > 0 {
			late++
		}
		if k == 2 {
			byTwo++
		}
	}
	if uint64(late) != l.st.Reordered {
		t.Errorf("%d frames left late, line counted %d", late, l.st.Reordered)
	}
	if r := float64(late) / 5000; math.Abs(r-0.1) > 0.015 {
		t.Errorf("reordered %.3f, want 0.1", r)
	}
	// Held frames in a row overtake each other less: most, not all, are
	// displaced by exactly ReorderDistance.
	if byTwo < late*8/10 {
		t.Errorf("%d of %d late frames displaced by 2", byTwo, late)
	}
}

func TestLineReorderTimeout(t *testing.T) {
	// One frame, held: nothing overtakes it, so it leaves at its timeout.
	l := newLine(16, 1, 1)
	l.setConfig(WANPath{Delay: time.Millisecond, Reorder: 1, ReorderTimeout: 5 * time.Millisecond})
	l.arrive(0, ipFrame(100, 7), 0)
	var got []out
	if due, ok := l.next(); !ok || due != int64(6*time.Millisecond) {
		t.Fatalf("next %v %v, want 6ms", due, ok)
	}
	drain(l, int64(6*time.Millisecond)-1, &got)
	if len(got) != 0 {
		t.Fatal("left before its timeout")
	}
	drain(l, int64(6*time.Millisecond), &got)
	if len(got) != 1 || l.st.Reordered != 0 {
		t.Fatalf("got %v, reordered %d", got, l.st.Reordered)
	}
}

func TestLineRate(t *testing.T) {
	// 1500-byte frames into 12 Mbit/s: one leaves every ms.
	l, got := run(WANPath{Delay: 5 * time.Millisecond, Rate: 12e6, QueueBytes: 15000}, 100, 1500, 100_000)
	// The queue holds 10 frames; arrivals come 10 times faster than they
	// leave, so about 100 - 10 - 100/10 are dropped.
	if l.st.Dropped.Queue < 75 || l.st.Dropped.Queue > 82 || len(got)+int(l.st.Dropped.Queue) != 100 {
		t.Errorf("dropped %d at the queue, %d left", l.st.Dropped.Queue, len(got))
	}
	for i := 1; i < len(got); i++ {
		if gap := got[i].at - got[i-1].at; gap < int64(time.Millisecond)-10_000 || gap > int64(time.Millisecond)+10_000 {
			t.Errorf("gap %v between frames %d and %d, want 1ms", time.Duration(gap), got[i-1].seq, got[i].seq)
		}
	}
	if first := time.Duration(got[0].at); first < 6*time.Millisecond || first > 6*time.Millisecond+20*time.Microsecond {
		t.Errorf("first frame left at %v, want 1ms serialisation + 5ms", first)
	}
}

func TestLineGilbertElliott(t *testing.T) {
	ge := &GilbertElliott{P: 0.02, R: 0.2, LossGood: 0, LossBad: 1}
	l := newLine(16, 9, 1)
	l.setConfig(WANPath{Burst: ge})
	const n = 200000
	var lost, bursts, run int
	for i := range n {
		before := l.st.Dropped.Burst
		l.arrive(int64(i), ipFrame(64, uint64(i)), 0)
		drain(l, int64(i), new([]out))
		if l.st.Dropped.Burst > before {
			lost++
			run++
		} else if run > 0 {
			bursts++
			run = 0
		}
	}
	mean, rate := float64(lost)/float64(bursts), float64(lost)/n
	if math.Abs(mean-5) > 0.25 || math.Abs(rate-ge.P/(ge.P+ge.R)) > 0.005 {
		t.Errorf("mean burst %.2f (want 5), loss rate %.4f (want %.4f)", mean, rate, ge.P/(ge.P+ge.R))
	}
	if l.st.Packets != n || l.st.Forwarded+l.st.Dropped.Total() != n {
		t.Errorf("counters: %v", l.st)
	}
}

func TestLineExemptAndNoBuffer(t *testing.T) {
	l := newLine(2, 1, 1)
	l.setConfig(WANPath{Delay: time.Millisecond, Loss: 1})
	arp := make([]byte, 60)
	binary.BigEndian.PutUint16(arp[12:], 0x0806)
	ns := make([]byte, 14+40+24) // IPv6 neighbour solicitation
	binary.BigEndian.PutUint16(ns[12:], 0x86dd)
	ns[14+6], ns[14+40] = 58, 135
	l.arrive(0, arp, 0)
	l.arrive(0, ns, 0)
	l.arrive(0, ipFrame(100, 1), 0) // lost
	l.arrive(0, arp, 0)             // no slot left
	if l.st.Exempt != 3 || l.st.Dropped.Loss != 1 || l.st.Dropped.NoBuffer != 1 || l.st.InFlight != 2 {
		t.Errorf("counters: %v", l.st)
	}
	if impaired(arp) || impaired(ns) || !impaired(ipFrame(60, 0)) {
		t.Error("impaired() misclassifies")
	}
}

func TestWANConfigCheck(t *testing.T) {
	for _, c := range []WANConfig{
		Symmetric(WANPath{Delay: -1}),
		Symmetric(WANPath{Loss: 1.5}),
		Symmetric(WANPath{Reorder: -0.1}),
		Symmetric(WANPath{Rate: 10}),
		Symmetric(WANPath{Burst: &GilbertElliott{P: 2}}),
		{Slots: -1},
	} {
		if c.check() == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if err := (WANConfig{AtoB: WANPath{Delay: time.Second, Rate: 1e6, Burst: &GilbertElliott{P: 0.1, R: 0.5}}}).check(); err != nil {
		t.Error(err)
	}
	if q := (WANPath{Rate: 1e9}).queueBytes(); q != 6250000 {
		t.Errorf("default queue at 1 Gbit/s: %d bytes", q)
	}
}
