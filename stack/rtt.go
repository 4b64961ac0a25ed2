package stack

import "time"

// rttEstimator is RFC 6298's SRTT/RTTVAR estimator.
//
// The RTO differs from RFC 6298 section 2.3 the way Linux differs
// (tcp_set_rto): the variance term is floored at min_rto instead of the RTO
// as a whole, RTO = SRTT + max(4*RTTVAR, min_rto), so that a short, steady
// RTT does not leave the timer a hair above the RTT where a delayed ACK
// fires it spuriously.
type rttEstimator struct {
	srtt   time.Duration
	rttvar time.Duration
	valid  bool
}

// sample folds one measurement R into the estimate (section 2.2-2.3) and
// returns the new RTO, clamped to [minRTO, maxRTO].
func (r *rttEstimator) sample(m, minRTO, maxRTO time.Duration) time.Duration {
	m = max(m, 0) // a 0 ms timestamp sample is a real "less than a tick"
	if !r.valid {
		r.srtt, r.rttvar, r.valid = m, m/2, true
	} else {
		d := r.srtt - m
		if d < 0 {
			d = -d
		}
		r.rttvar = (3*r.rttvar + d) / 4 // β = 1/4
		r.srtt = (7*r.srtt + m) / 8     // α = 1/8
	}
	return r.rto(minRTO, maxRTO)
}

func (r *rttEstimator) rto(minRTO, maxRTO time.Duration) time.Duration {
	return min(max(r.srtt+max(4*r.rttvar, minRTO), minRTO), maxRTO)
}

// minRTTFilter is a windowed minimum of RTT samples (RACK.min_RTT; Linux
// keeps its tcp_min_rtt_wlen, 300 s): the least sample of the last window,
// give or take half of it. best is the minimum; next the minimum of the
// samples since the later half-window began, which takes over when best
// grows too old, so a path whose RTT went up is followed within a window.
type minRTTFilter struct {
	best, next rttAt
	ok         bool
}

type rttAt struct {
	at  Time
	rtt time.Duration
}

const minRTTWindow = 300 * time.Second

func (f *minRTTFilter) get() time.Duration { return f.best.rtt }

func (f *minRTTFilter) update(now Time, rtt time.Duration) {
	s := rttAt{now, rtt}
	if !f.ok || rtt <= f.best.rtt {
		f.best, f.next, f.ok = s, s, true
		return
	}
	if rtt <= f.next.rtt || now.Sub(f.next.at) > minRTTWindow/2 {
		f.next = s
	}
	if now.Sub(f.best.at) > minRTTWindow {
		f.best, f.next = f.next, s
	}
}
