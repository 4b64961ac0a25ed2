package stack

import (
	"math"
	"time"
)

// cubic is RFC 9438. Windows are kept in bytes; the cubic function works in
// segments and seconds as the RFC writes it.
type cubic struct {
	reno // slow start, and the Reno-friendly estimate's arithmetic

	wMax       float64 // segments: the window before the last reduction
	wLastMax   float64 // for fast convergence (section 4.7)
	k          float64 // seconds: time to grow back to wMax
	epochStart Time    // start of the current congestion avoidance epoch; 0: not started
	cwndEpoch  float64 // segments: cwnd at the epoch start
	wEst       float64 // segments: the Reno-friendly estimate (section 4.3)
	minRTT     time.Duration
	ackedAcc   float64 // fractional segments of growth not yet applied
}

const (
	cubicC    = 0.4 // section 5
	cubicBeta = 0.7 // section 4.6: multiplicative decrease
)

// cubicAlpha makes the Reno-friendly region's average window equal Reno's: 3(1-β)/(1+β).
var cubicAlpha = 3 * (1 - cubicBeta) / (1 + cubicBeta)

func newCubic(smss int) *cubic {
	return &cubic{reno: *newNewReno(smss)}
}

func (c *cubic) segs(b int) float64 { return float64(b) / float64(c.smss) }

func (c *cubic) onAck(now Time, acked int, rtt time.Duration) {
	if rtt > 0 && (c.minRTT == 0 || rtt < c.minRTT) {
		c.minRTT = rtt
	}
	if c.inSlowStart() {
		c.reno.onAck(now, acked, rtt)
		return
	}
	cw := c.segs(c.cw)
	if c.epochStart == 0 {
		c.epochStart = now
		c.cwndEpoch = cw
		c.wEst = cw
		if cw < c.wMax {
			c.k = math.Cbrt((c.wMax - cw) / cubicC) // section 4.2, eq. 2 with cwnd_epoch
		} else {
			c.k = 0
			c.wMax = cw
		}
	}
	// Section 4.2: target = W_cubic(t + RTT), clamped to [cwnd, 1.5 cwnd].
	t := now.Sub(c.epochStart).Seconds() + c.minRTT.Seconds()
	d := t - c.k
	wCubic := cubicC*d*d*d + c.wMax
	target := math.Min(math.Max(wCubic, cw), 1.5*cw)
	// Section 4.3: the Reno-friendly estimate.
	ackedSegs := float64(acked) / float64(c.smss)
	c.wEst += cubicAlpha * ackedSegs / cw
	if c.wEst > wCubic {
		target = math.Max(target, c.wEst)
	}
	// Section 4.4/4.5: grow by (target - cwnd)/cwnd per acknowledged segment.
	c.ackedAcc += (target - cw) / cw * ackedSegs
	if c.ackedAcc >= 1 {
		grow := math.Floor(c.ackedAcc)
		c.ackedAcc -= grow
		c.cw += int(grow) * c.smss
	}
}

// onLoss: section 4.6-4.7.
func (c *cubic) onLoss(now Time, inFlight int) {
	cw := c.segs(c.cw)
	if cw < c.wLastMax { // fast convergence
		c.wLastMax = cw
		c.wMax = cw * (1 + cubicBeta) / 2
	} else {
		c.wLastMax = cw
		c.wMax = cw
	}
	// RFC 9438 section 4.6 uses cwnd (not FlightSize) for the reduction, as Linux does.
	c.ssth = max(int(cw*cubicBeta)*c.smss, 2*c.smss)
	c.cw = c.ssth
	c.epochStart = 0
	c.ackedAcc = 0
}

func (c *cubic) undo(cwnd, ssthresh int) {
	c.reno.undo(cwnd, ssthresh)
	c.wMax = c.wLastMax
	c.epochStart = 0
}

func (c *cubic) onRecoveryEnd(now Time) {
	c.cw = c.ssth
	c.epochStart = 0
}

// onRTO: section 4.8 — reduce as on loss, then cwnd to one segment and a new epoch.
func (c *cubic) onRTO(now Time, inFlight int) {
	c.onLoss(now, inFlight)
	c.cw = c.smss
	c.epochStart = 0
}
