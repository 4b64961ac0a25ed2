package stack

import (
	"slices"
	"testing"
	"time"
)

// bbrRun is what TestBBR* observe of the sender over a simulated transfer.
type bbrRun struct {
	res        simResult
	modes      []bbrMode // each mode entered, in order
	maxBW      float64   // the bandwidth estimate when half the data was acknowledged, bytes/s
	peakBW     float64   // the largest estimate over the transfer
	minRTT     time.Duration
	queued     time.Duration // the longest a data frame waited at the bottleneck once in PROBE_BW
	burst      int           // the most frames the sender sent at one instant once in PROBE_BW
	probeBWAt  time.Duration // when PROBE_BW began, from the first step
	probeRTTCw int           // the largest cwnd while in PROBE_RTT
	lastRate   float64
}

func runBBR(t *testing.T, name string, link linkConfig, size int) bbrRun {
	t.Helper()
	var r bbrRun
	var sm *sim
	r.res = runSimObserved(t, name, link, size, 1024, func(s *sim, c *Conn) {
		sm = s
		b := &c.ccState.bbr
		if c.cc != congestion(b) {
			return
		}
		if n := len(r.modes); n == 0 || r.modes[n-1] != b.mode {
			r.modes = append(r.modes, b.mode)
			if b.mode == bbrProbeBW && !slices.Contains(r.modes[:n], bbrProbeBW) {
				r.probeBWAt = s.now.Sub(t0)
				s.queued[0], s.bursts[0] = 0, 0 // STARTUP's queue is not PROBE_BW's
			}
		}
		if b.mode == bbrProbeRTT && b.probeRTTDoneAt != 0 {
			r.probeRTTCw = max(r.probeRTTCw, b.cw)
		}
		r.peakBW = max(r.peakBW, b.maxBW())
		if c.rate.delivered <= uint64(size/2) {
			r.maxBW, r.minRTT, r.lastRate = b.maxBW(), b.minRTT, b.rate
		}
	})
	r.queued, r.burst = sm.queued[0], sm.bursts[0]
	return r
}

// TestBBRModel: on a clean 10 Mbit/s path of 20 ms, BBR goes through
// STARTUP and DRAIN to PROBE_BW, its model finds the bottleneck's rate
// and the propagation delay, and pacing keeps the bottleneck's queue
// short — where CUBIC fills it up to the receive window.
func TestBBRModel(t *testing.T) {
	link := linkConfig{delay: 10 * time.Millisecond, rate: 10e6, cc: BBR}
	r := runBBR(t, "bbr model", link, 8<<20)
	cubicLink := link
	cubicLink.cc = CUBIC
	cu := runSimSizes(t, "cubic model", cubicLink, 8<<20, 1024)
	t.Logf("bbr: %.2f Mbit/s, modes %v, bw %.2f Mbit/s (peak %.2f), min RTT %v, in PROBE_BW queue %v and bursts of %d; cubic: %.2f Mbit/s, queue %v",
		r.res.goodput, r.modes, r.maxBW*8/1e6, r.peakBW*8/1e6, r.minRTT, r.queued, r.burst, cu.goodput, cu.queued)
	if want := []bbrMode{bbrStartup, bbrDrain, bbrProbeBW}; len(r.modes) < 3 || !slices.Equal(r.modes[:3], want) {
		t.Errorf("modes %v, want %v first", r.modes, want)
	}
	// Payload at 10 Mbit/s: 1448 of every 1514+24 bytes on the wire.
	payload := 10e6 / 8 * 1448 / (1514 + 24)
	if r.maxBW < 0.9*payload || r.peakBW > 1.1*payload {
		t.Errorf("bandwidth estimate %.0f B/s mid-transfer, %.0f at most: want %.0f within 10%%", r.maxBW, r.peakBW, payload)
	}
	if r.minRTT < 20*time.Millisecond || r.minRTT > 23*time.Millisecond {
		t.Errorf("min RTT %v, want 20-23 ms", r.minRTT)
	}
	if r.res.goodput < 0.9*payload*8/1e6 {
		t.Errorf("goodput %.2f Mbit/s, want at least 90%% of %.2f", r.res.goodput, payload*8/1e6)
	}
	// CUBIC keeps the bottleneck queue as long as the receive window
	// allows (256 KiB: ~200 ms at 10 Mbit/s); BBR about one BDP or less.
	if r.queued > 30*time.Millisecond || cu.queued < 100*time.Millisecond {
		t.Errorf("bottleneck queue up to %v under BBR (want at most 30 ms), %v under CUBIC (want over 100 ms)", r.queued, cu.queued)
	}
	// Paced: the simulator runs the pacing timer on time, so segments go
	// in bursts of two (at 10 Mbit/s a millisecond's worth is less than
	// two segments, the least burst).
	if r.burst < 1 || r.burst > 2 || r.probeBWAt > 2*time.Second {
		t.Errorf("PROBE_BW from %v, bursts of %d frames there: want it within 2 s (STARTUP and DRAIN take a few round trips) and 1-2 (paced)", r.probeBWAt, r.burst)
	}
}

// TestBBRProbeRTT: a transfer longer than ten seconds sees the minimum
// RTT expire; BBR then holds the window at four segments for 200 ms and
// a round trip, and goes back to PROBE_BW.
func TestBBRProbeRTT(t *testing.T) {
	r := runBBR(t, "bbr probe rtt", linkConfig{delay: 10 * time.Millisecond, rate: 10e6, cc: BBR}, 24<<20)
	t.Logf("modes %v, largest cwnd in PROBE_RTT %d, %.2f Mbit/s", r.modes, r.probeRTTCw, r.res.goodput)
	i := slices.Index(r.modes, bbrProbeRTT)
	if i < 0 || i+1 >= len(r.modes) || r.modes[i+1] != bbrProbeBW {
		t.Fatalf("modes %v: want PROBE_RTT, then PROBE_BW", r.modes)
	}
	if r.probeRTTCw > bbrMinCwndSegs*1448 {
		t.Errorf("cwnd %d in PROBE_RTT, want at most %d", r.probeRTTCw, bbrMinCwndSegs*1448)
	}
}

// TestBBRRandomLoss: 1% random loss each way on a 20 ms, 50 Mbit/s path,
// with buffers of 1 MiB (a hole holds the send buffer for a round trip or
// two). CUBIC reads every loss as congestion and averages a few segments
// per round trip; BBR's bandwidth estimate holds and so does its rate.
func TestBBRRandomLoss(t *testing.T) {
	link := linkConfig{delay: 10 * time.Millisecond, rate: 50e6, loss: 0.01, cc: BBR, buffers: 1 << 20}
	r := runBBR(t, "bbr loss", link, 48<<20)
	cubicLink := link
	cubicLink.cc = CUBIC
	cu := runSimSizes(t, "cubic loss", cubicLink, 48<<20, 1024)
	t.Logf("bbr %.2f Mbit/s (%d retransmits, %d RTOs), cubic %.2f Mbit/s (%d, %d)", r.res.goodput, r.res.retransmits, r.res.rtos,
		cu.goodput, cu.retransmits, cu.rtos)
	if r.res.goodput < 0.8*50*1448/1538 {
		t.Errorf("bbr %.2f Mbit/s under 1%% loss, want at least 80%% of the path", r.res.goodput)
	}
	if r.res.goodput < 2*cu.goodput {
		t.Errorf("bbr %.2f Mbit/s, cubic %.2f: want bbr at least twice", r.res.goodput, cu.goodput)
	}
}

// TestMaxFilter: the windowed maximum keeps the best sample of the last
// window and hands over to the next best as it ages; it ages only as
// samples come (an application-limited stretch keeps the estimate).
func TestMaxFilter(t *testing.T) {
	var f maxFilter
	for _, s := range []struct {
		t    uint64
		v    float64
		want float64
	}{
		{1, 5, 5}, {2, 3, 5}, {3, 4, 5},
		{6, 2, 5}, // over a quarter of the window on: kept as the second best
		// 5 (round 1) is 11 rounds old: the second best takes over. (4,
		// of round 3, fell between the marks: the filter keeps one
		// sample per quarter and half of the window, not every one.)
		{12, 1, 2},
		{17, 1, 1}, // 2 (round 6) aged out too
		{40, 3, 3}, // every sample too old: the new one alone
		{41, 7, 7}, // a new best replaces all
	} {
		f.update(10, s.t, s.v)
		if got := f.get(); got != s.want {
			t.Errorf("after (%d, %g): max %g, want %g", s.t, s.v, got, s.want)
		}
	}
}
