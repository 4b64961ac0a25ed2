package stack

import (
	"fmt"
	"time"
)

// CongestionControl names a congestion control algorithm.
type CongestionControl uint8

const (
	// CUBIC is RFC 9438, the default (as on Linux).
	CUBIC CongestionControl = iota
	// NewReno is RFC 5681 with the RFC 6582 recovery.
	NewReno
	// BBR is BBR v1 as Linux's tcp_bbr.c (bbr.go), paced.
	BBR
)

func (c CongestionControl) String() string {
	switch c {
	case CUBIC:
		return "cubic"
	case NewReno:
		return "newreno"
	case BBR:
		return "bbr"
	}
	return fmt.Sprintf("CongestionControl(%d)", uint8(c))
}

// initialWindowSegments is the initial congestion window of RFC 6928.
const initialWindowSegments = 10

// congestion is what a congestion control algorithm answers to. Windows are
// in bytes; smss is the sender's maximum segment size (payload).
// Loss recovery itself (which segments to resend, the pipe) lives in
// recovery.go; the algorithm only sets cwnd and ssthresh.
type congestion interface {
	// cwnd is the congestion window.
	cwnd() int
	// ssthresh is the slow start threshold.
	ssthresh() int
	// onAck is called for each ACK that acknowledges new data outside recovery.
	onAck(now Time, acked int, rtt time.Duration)
	// onLoss is called once when loss recovery starts (fast retransmit);
	// inFlight is the FlightSize at that moment.
	onLoss(now Time, inFlight int)
	// onRecoveryEnd is called when recovery ends (the recovery point is acknowledged).
	onRecoveryEnd(now Time)
	// onRTO is called when the retransmission timer expires.
	onRTO(now Time, inFlight int)
	// setMSS changes the segment size (path MTU discovery).
	setMSS(smss int)
	// undo restores the window from before a reduction that D-SACKs showed
	// to be spurious (RFC 3708's detection; Linux's tcp_try_undo_dsack).
	undo(cwnd, ssthresh int)
	// onSample is called for every acceptable ACK after loss detection,
	// with its delivery rate sample (rate.go): a model-based algorithm
	// (BBR) runs on it, in recovery too, in place of onAck.
	onSample(c *Conn, rs *rateSample)
	// onSendIdle is called when data goes with nothing in flight.
	onSendIdle(c *Conn)
	// pacingRate is the rate, bytes/s, segments are paced at (pacing.go);
	// 0: not paced.
	pacingRate() float64
}

func newCongestion(kind CongestionControl, smss int) congestion {
	var st ccState
	return st.init(kind, smss)
}

// ccState holds the algorithms' state (NewReno's is CUBIC's embedded
// one); a Conn embeds one, so the congestion controller costs no
// allocation of its own.
type ccState struct {
	cubic cubic
	bbr   bbr
}

func (st *ccState) init(kind CongestionControl, smss int) congestion {
	switch kind {
	case NewReno:
		st.cubic.reno = *newNewReno(smss)
		return &st.cubic.reno
	case BBR:
		st.bbr = *newBBR(smss)
		return &st.bbr
	}
	st.cubic = *newCubic(smss)
	return &st.cubic
}

// reno is RFC 5681 slow start and congestion avoidance, with appropriate
// byte counting (RFC 3465, L = 2*SMSS), and RFC 6582's window arithmetic.
// CUBIC embeds it for slow start and its Reno-friendly estimate.
type reno struct {
	smss     int
	cw       int
	ssth     int
	ackedAcc int // bytes acknowledged in congestion avoidance since cwnd last grew
}

func newNewReno(smss int) *reno {
	return &reno{smss: smss, cw: initialWindowSegments * smss, ssth: 1 << 30}
}

func (r *reno) cwnd() int         { return r.cw }
func (r *reno) ssthresh() int     { return r.ssth }
func (r *reno) setMSS(smss int)   { r.cw = r.cw / r.smss * smss; r.smss = smss }
func (r *reno) inSlowStart() bool { return r.cw < r.ssth }

// Loss-based algorithms take no rate samples and do not pace.
func (r *reno) onSample(c *Conn, rs *rateSample) {}
func (r *reno) onSendIdle(c *Conn)               {}
func (r *reno) pacingRate() float64              { return 0 }

func (r *reno) onAck(now Time, acked int, rtt time.Duration) {
	if r.inSlowStart() {
		r.cw += min(acked, 2*r.smss)
		return
	}
	// Congestion avoidance: one SMSS per cwnd of acknowledged bytes (RFC 5681 section 3.1, eq. 3's byte-counting form).
	r.ackedAcc += acked
	if r.ackedAcc >= r.cw {
		r.ackedAcc -= r.cw
		r.cw += r.smss
	}
}

// onLoss: ssthresh = max(FlightSize/2, 2*SMSS) (RFC 5681 eq. 4); cwnd = ssthresh
// (RFC 6675 section 5 step 4.2 — recovery is paced by the pipe, not inflation).
func (r *reno) onLoss(now Time, inFlight int) {
	r.ssth = max(inFlight/2, 2*r.smss)
	r.cw = r.ssth
	r.ackedAcc = 0
}

func (r *reno) onRecoveryEnd(now Time) { r.cw = r.ssth }

func (r *reno) undo(cwnd, ssthresh int) {
	r.cw, r.ssth = max(r.cw, cwnd), max(r.ssth, ssthresh)
}

// onRTO: ssthresh as on loss, cwnd = the loss window, one segment (RFC 5681 section 3.1).
func (r *reno) onRTO(now Time, inFlight int) {
	r.ssth = max(inFlight/2, 2*r.smss)
	r.cw = r.smss
	r.ackedAcc = 0
}
