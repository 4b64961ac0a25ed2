package stack

import "time"

// bbr is BBR version 1 (draft-cardwell-iccrg-bbr-congestion-control-00),
// with the choices of Linux's tcp_bbr.c, the "bbr" of Linux 6.18. Instead
// of reading loss as congestion it models the path: the bottleneck
// bandwidth (a windowed maximum of delivery rate samples over ten round
// trips, rate.go) and the round-trip propagation time (a windowed minimum
// over ten seconds). It paces at the bandwidth times a gain that cycles to
// probe for more (1.25, 0.75, then 1 for six round trips) and bounds the
// flight at twice the bandwidth-delay product. Random loss that does not
// shrink the delivery rate does not shrink the window: on a path losing
// 1% of its packets it keeps the bandwidth that CUBIC halves away.
//
// Loss recovery itself is the engine's (RACK-TLP, the SACK scoreboard);
// what BBR adds there is Linux's: packet conservation for the first round
// of a fast recovery (cwnd = what is in flight plus what the ACK
// delivered), cwnd less the bytes newly found lost, and the window from
// before the recovery restored when it ends. PRR does not run under BBR
// (Linux skips tcp_cwnd_reduction for a module with its own cong_control).
//
// Departures from tcp_bbr.c, and why: windows and rates are in bytes, not
// packets; the long-term (policer) bandwidth estimate is not kept; the
// quantization budget follows the engine's pacing burst (pacing.go) in
// place of TSO autosizing.
type bbr struct {
	smss    int
	cw      int // cwnd, bytes
	ssth    int
	priorCw int // cwnd before the last recovery or PROBE_RTT, restored after it

	mode               bbrMode
	pacingGain         float64
	cwndGain           float64
	rate               float64   // pacing rate, bytes/s (0: not yet set)
	bw                 maxFilter // bytes/s over round trips
	rounds             uint64    // round trips counted (Linux's rtt_cnt)
	nextRoundDelivered uint64
	roundStart         bool
	minRTT             time.Duration // 0: no sample yet
	minRTTAt           Time
	probeRTTDoneAt     Time // 0: not yet at the PROBE_RTT window
	probeRTTRoundDone  bool
	fullBW             float64
	fullBWCount        int
	fullBWReached      bool
	cycleIdx           int
	cycleAt            Time
	conservation       bool
	prevRecovery       bool // the connection was in fast recovery at the last ACK
	prevLoss           bool // ... or in RTO recovery
	idleRestart        bool
	hadSRTT            bool // the pacing rate was set from a smoothed RTT
}

type bbrMode uint8

const (
	bbrStartup bbrMode = iota
	bbrDrain
	bbrProbeBW
	bbrProbeRTT
)

func (m bbrMode) String() string {
	return [...]string{"startup", "drain", "probe_bw", "probe_rtt"}[m]
}

const (
	bbrHighGain      = 2.885 // 2/ln(2): the smallest gain that doubles the delivery rate each round
	bbrDrainGain     = 1 / bbrHighGain
	bbrCwndGain      = 2.0
	bbrBWRounds      = 10 // the bandwidth filter's window, round trips
	bbrMinRTTWindow  = 10 * time.Second
	bbrProbeRTTTime  = 200 * time.Millisecond
	bbrMinCwndSegs   = 4
	bbrFullBWThresh  = 1.25 // startup ends when the bandwidth grew less than this ...
	bbrFullBWRounds  = 3    // ... in this many rounds
	bbrPacingMargin  = 0.99 // pace 1% below the estimate, so queues drain
	bbrCycleLen      = 8
	bbrCycleRandMax  = 7 // the phase a cycle starts in: any but the draining one
	bbrQuantumBudget = 3 // pacing bursts of room above the BDP
)

var bbrPacingGains = [bbrCycleLen]float64{1.25, 0.75, 1, 1, 1, 1, 1, 1}

func newBBR(smss int) *bbr {
	b := &bbr{smss: smss, cw: initialWindowSegments * smss, ssth: 1 << 30, priorCw: initialWindowSegments * smss}
	b.mode, b.pacingGain, b.cwndGain = bbrStartup, bbrHighGain, bbrHighGain
	return b
}

func (b *bbr) cwnd() int       { return b.cw }
func (b *bbr) ssthresh() int   { return b.ssth }
func (b *bbr) setMSS(smss int) { b.cw = max(b.cw/b.smss*smss, bbrMinCwndSegs*smss); b.smss = smss }

// onAck: BBR runs on every ACK's rate sample (onSample) instead.
func (b *bbr) onAck(now Time, acked int, rtt time.Duration) {}

// onLoss: a fast recovery begins; the model is kept, the window is
// remembered for its end (Linux's bbr_ssthresh, bbr_save_cwnd).
func (b *bbr) onLoss(now Time, inFlight int) { b.saveCwnd() }

func (b *bbr) onRecoveryEnd(now Time) {}

// onRTO: the window restarts from one segment and grows back by what the
// ACKs deliver; the bandwidth plateau count restarts (Linux's
// CA_EVENT_LOSS); the window before is restored when recovery ends.
func (b *bbr) onRTO(now Time, inFlight int) {
	b.saveCwnd()
	b.cw = b.smss
	b.fullBW, b.fullBWCount = 0, 0
	b.roundStart = true
}

// undo: a reduction proved spurious; BBR made none, but the bandwidth
// plateau count restarts, as Linux's bbr_undo_cwnd.
func (b *bbr) undo(cwnd, ssthresh int) { b.fullBW, b.fullBWCount = 0, 0 }

func (b *bbr) saveCwnd() {
	if !b.prevRecovery && !b.prevLoss && b.mode != bbrProbeRTT {
		b.priorCw = b.cw
	} else {
		b.priorCw = max(b.priorCw, b.cw)
	}
}

func (b *bbr) pacingRate() float64 { return b.rate }

// maxBW is the bandwidth filter's maximum over the last bbrBWRounds rounds.
func (b *bbr) maxBW() float64 { return b.bw.get() }

// maxFilter is a windowed maximum over a count (round trips) that keeps
// three samples — the best, and the best of the later quarter and half of
// the window — so that when the best ages out the next best is at hand
// (Kathleen Nichols' algorithm, which Linux's lib/win_minmax.c runs). It
// ages only as samples come in.
type maxFilter struct{ s [3]filterSample }

type filterSample struct {
	t uint64
	v float64
}

func (f *maxFilter) get() float64 { return f.s[0].v }

func (f *maxFilter) update(win, t uint64, v float64) {
	n := filterSample{t, v}
	if v >= f.s[0].v || t-f.s[2].t > win {
		f.s = [3]filterSample{n, n, n} // a new best, or every sample too old
		return
	}
	if v >= f.s[1].v {
		f.s[1], f.s[2] = n, n
	} else if v >= f.s[2].v {
		f.s[2] = n
	}
	switch dt := t - f.s[0].t; {
	case dt > win:
		// The best aged out: the next take its place.
		f.s = [3]filterSample{f.s[1], f.s[2], n}
		if t-f.s[0].t > win {
			f.s = [3]filterSample{f.s[1], f.s[2], n}
		}
	case f.s[1].t == f.s[0].t && dt > win/4:
		// A quarter of the window passed with no second best: take this.
		f.s[1], f.s[2] = n, n
	case f.s[2].t == f.s[1].t && dt > win/2:
		f.s[2] = n
	}
}

// bdp is the bandwidth-delay product times gain, in bytes; before the
// first RTT sample, the initial window.
func (b *bbr) bdp(bw, gain float64) int {
	if b.minRTT == 0 {
		return initialWindowSegments * b.smss
	}
	return int(bw * b.minRTT.Seconds() * gain)
}

// target is the window BBR aims at: the BDP times the gain, plus room for
// the pacing bursts in flight (Linux's bbr_quantization_budget).
func (b *bbr) target(bw, gain float64) int {
	t := b.bdp(bw, gain) + bbrQuantumBudget*paceBurstBytes(b.rate, b.smss)
	if b.mode == bbrProbeBW && b.cycleIdx == 0 {
		t += 2 * b.smss // the probing phase gets its gain's worth through
	}
	return t
}

// onSendIdle is called when data goes with nothing in flight: after an
// application-limited pause, restart at the estimated rate (Linux's
// CA_EVENT_TX_START).
func (b *bbr) onSendIdle(c *Conn) {
	if c.rate.appLimited == 0 {
		return
	}
	b.idleRestart = true
	if b.mode == bbrProbeBW {
		b.setPacingRate(c, b.maxBW(), 1)
	} else if b.mode == bbrProbeRTT {
		b.checkProbeRTTDone(c)
	}
}

// onSample is bbr_main: update the model from the ACK's rate sample, then
// the pacing rate and the window.
func (b *bbr) onSample(c *Conn, rs *rateSample) {
	b.updateBW(c, rs)
	b.updateCyclePhase(c, rs)
	b.checkFullBW(rs)
	b.checkDrain(c)
	b.updateMinRTT(c, rs)
	b.updateGains()
	bw := b.maxBW()
	b.setPacingRate(c, bw, b.pacingGain)
	b.setCwnd(c, rs, bw)
}

func (b *bbr) updateBW(c *Conn, rs *rateSample) {
	b.roundStart = false
	if rs.delivered < 0 || rs.interval <= 0 {
		return
	}
	if rs.priorDelivered >= b.nextRoundDelivered {
		b.nextRoundDelivered = c.rate.delivered
		b.rounds++
		b.roundStart = true
		b.conservation = false
	}
	// An application-limited sample only raises the estimate: the path
	// did at least this much. (Without samples the estimate stays: it
	// ages only as newer samples come in.)
	if bw := rs.bw(); !rs.appLimited || bw >= b.maxBW() {
		b.bw.update(bbrBWRounds, b.rounds, bw)
	}
}

func (b *bbr) updateCyclePhase(c *Conn, rs *rateSample) {
	if b.mode != bbrProbeBW {
		return
	}
	now := c.e.now
	full := now.Sub(b.cycleAt) > b.minRTT
	next := full
	switch {
	case b.pacingGain > 1:
		// Probing: until the probe has filled its extra BDP, or met loss.
		next = full && (rs.losses > 0 || rs.priorInFlight >= b.bdp(b.maxBW(), b.pacingGain))
	case b.pacingGain < 1:
		// Draining what the probe queued: as soon as the flight is down
		// to one BDP.
		next = full || rs.priorInFlight <= b.bdp(b.maxBW(), 1)
	}
	if next {
		b.cycleIdx = (b.cycleIdx + 1) % bbrCycleLen
		b.cycleAt = now
	}
}

// checkFullBW ends STARTUP once three non-application-limited rounds in
// a row grew the bandwidth by less than a quarter.
func (b *bbr) checkFullBW(rs *rateSample) {
	if b.fullBWReached || !b.roundStart || rs.appLimited {
		return
	}
	if bw := b.maxBW(); bw >= b.fullBW*bbrFullBWThresh {
		b.fullBW, b.fullBWCount = bw, 0
		return
	}
	b.fullBWCount++
	b.fullBWReached = b.fullBWCount >= bbrFullBWRounds
}

func (b *bbr) checkDrain(c *Conn) {
	if b.mode == bbrStartup && b.fullBWReached {
		b.mode = bbrDrain
		b.ssth = b.bdp(b.maxBW(), 1)
	}
	if b.mode == bbrDrain && c.pipe() <= b.bdp(b.maxBW(), 1) {
		b.resetProbeBW(c)
	}
}

func (b *bbr) resetProbeBW(c *Conn) {
	b.mode = bbrProbeBW
	// Start in a random phase other than the draining one, so flows that
	// start together do not probe together.
	b.cycleIdx = bbrCycleLen - 1 - int(c.e.rand.Uint64()%bbrCycleRandMax)
	b.cycleIdx = (b.cycleIdx + 1) % bbrCycleLen
	b.cycleAt = c.e.now
}

func (b *bbr) resetMode(c *Conn) {
	if !b.fullBWReached {
		b.mode = bbrStartup
		return
	}
	b.resetProbeBW(c)
}

// updateMinRTT keeps the ten-second minimum RTT and runs PROBE_RTT: when
// the minimum is ten seconds old, the window drops to four segments for
// 200 ms and a round trip, so the queue drains and the propagation time
// shows again.
func (b *bbr) updateMinRTT(c *Conn, rs *rateSample) {
	now := c.e.now
	expired := b.minRTT != 0 && now.Sub(b.minRTTAt) > bbrMinRTTWindow
	if rs.rtt >= 0 && (b.minRTT == 0 || rs.rtt < b.minRTT || expired) {
		b.minRTT, b.minRTTAt = max(rs.rtt, time.Microsecond), now
	}
	if expired && !b.idleRestart && b.mode != bbrProbeRTT {
		b.mode = bbrProbeRTT
		b.saveCwnd()
		b.probeRTTDoneAt = 0
	}
	if b.mode == bbrProbeRTT {
		// What is sent meanwhile is application-limited: it cannot show
		// the bandwidth.
		c.rate.appLimited = max(c.rate.delivered+uint64(c.pipe()), 1)
		switch {
		case b.probeRTTDoneAt == 0 && c.pipe() <= bbrMinCwndSegs*b.smss:
			b.probeRTTDoneAt = now.Add(bbrProbeRTTTime)
			b.probeRTTRoundDone = false
			b.nextRoundDelivered = c.rate.delivered
		case b.probeRTTDoneAt != 0:
			if b.roundStart {
				b.probeRTTRoundDone = true
			}
			if b.probeRTTRoundDone {
				b.checkProbeRTTDone(c)
			}
		}
	}
	if rs.delivered > 0 {
		b.idleRestart = false
	}
}

func (b *bbr) checkProbeRTTDone(c *Conn) {
	if b.probeRTTDoneAt == 0 || c.e.now < b.probeRTTDoneAt {
		return
	}
	b.minRTTAt = c.e.now
	b.cw = max(b.cw, b.priorCw)
	b.resetMode(c)
}

func (b *bbr) updateGains() {
	switch b.mode {
	case bbrStartup:
		b.pacingGain, b.cwndGain = bbrHighGain, bbrHighGain
	case bbrDrain:
		b.pacingGain, b.cwndGain = bbrDrainGain, bbrHighGain
	case bbrProbeBW:
		b.pacingGain, b.cwndGain = bbrPacingGains[b.cycleIdx], bbrCwndGain
	case bbrProbeRTT:
		b.pacingGain, b.cwndGain = 1, 1
	}
}

// setPacingRate paces at bw times gain, less the margin. Before the first
// bandwidth sample the rate comes from the initial window over the RTT;
// until STARTUP has found the bandwidth the rate only grows.
func (b *bbr) setPacingRate(c *Conn, bw, gain float64) {
	if !b.hadSRTT && c.rtt.valid {
		b.hadSRTT = true
		b.initPacingRate(c)
	}
	if b.rate == 0 {
		b.initPacingRate(c)
	}
	rate := bw * gain * bbrPacingMargin
	if rate <= 0 {
		return
	}
	if b.fullBWReached || rate > b.rate {
		b.rate = rate
	}
}

// initPacingRate is the high gain times the initial window over the
// smoothed RTT (1 ms before there is one).
func (b *bbr) initPacingRate(c *Conn) {
	rtt := time.Millisecond
	if c.rtt.valid && c.rtt.srtt > 0 {
		rtt = c.rtt.srtt
	}
	b.rate = bbrHighGain * float64(b.cw) / rtt.Seconds()
}

// setCwnd moves the window toward the target by what the ACK delivered,
// with Linux's loss-recovery rules first (bbr_set_cwnd_to_recover_or_restore).
func (b *bbr) setCwnd(c *Conn, rs *rateSample, bw float64) {
	cw := b.cw
	acked := rs.acked
	pipe := c.pipe()
	recovery := c.inRecovery && !c.rtoRecovery
	loss := c.inRecovery && c.rtoRecovery
	conserve := false
	if acked > 0 {
		if rs.losses > 0 {
			cw = max(cw-rs.losses, b.smss)
		}
		switch {
		case recovery && !b.prevRecovery:
			// The first round of a fast recovery: packet conservation.
			b.conservation = true
			b.nextRoundDelivered = c.rate.delivered
			cw = pipe + acked
		case !recovery && !loss && (b.prevRecovery || b.prevLoss):
			cw = max(cw, b.priorCw)
			b.conservation = false
		}
		b.prevRecovery, b.prevLoss = recovery, loss
		if b.conservation {
			cw = max(cw, pipe+acked)
			conserve = true
		}
		if !conserve {
			target := b.target(bw, b.cwndGain)
			switch {
			case b.fullBWReached:
				cw = min(cw+acked, target)
			case cw < target || c.rate.delivered < uint64(initialWindowSegments*b.smss):
				cw += acked
			}
			cw = max(cw, bbrMinCwndSegs*b.smss)
		}
	}
	if b.mode == bbrProbeRTT {
		cw = min(cw, bbrMinCwndSegs*b.smss)
	}
	b.cw = cw
}
