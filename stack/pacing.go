package stack

import "time"

// Pacing: a connection whose congestion control gives a pacing rate (BBR)
// spreads its segments over time at that rate instead of sending a
// window's worth at once. Each segment sent moves the connection's next
// send time on by its length over the rate. As Linux with TSO autosizing,
// segments go in small bursts — a millisecond's worth of the rate, at
// least two segments, at most 64 KiB — so the owner wakes once per burst,
// not once per segment: output stops while the next send time is more
// than a burst ahead of the clock and arms the pacing timer for when it
// is not.
//
// A connection that sends late (its owner was busy) catches up, with a
// credit of at most paceCredit behind the clock.
const paceCredit = time.Millisecond

// paceBurst is the time worth of a pacing burst.
const paceBurst = time.Millisecond

// paceBurstBytes is the size of a pacing burst at rate: a millisecond's
// worth, at least two segments and at most 64 KiB (Linux's
// tcp_tso_autosize bounds).
func paceBurstBytes(rate float64, smss int) int {
	b := int(rate * paceBurst.Seconds())
	return min(max(b, 2*smss), 64<<10)
}

// paceDur is how long n bytes take at rate.
func paceDur(n int, rate float64) time.Duration {
	return time.Duration(float64(n) / rate * float64(time.Second))
}

// paceSent moves the next send time on by n bytes at the pacing rate.
func (c *Conn) paceSent(n int) {
	rate := c.cc.pacingRate()
	if rate <= 0 || n <= 0 {
		return
	}
	at := max(c.paceAt, c.e.now.Add(-paceCredit))
	c.paceAt = at.Add(paceDur(n, rate))
}

// paceBlocked reports whether the next segment must wait for the pacing
// timer, and arms it if so: when the next send time is more than a burst
// ahead.
func (c *Conn) paceBlocked() bool {
	rate := c.cc.pacingRate()
	if rate <= 0 || c.paceAt <= c.e.now {
		return false
	}
	burst := paceDur(paceBurstBytes(rate, c.effectiveMSS())-c.effectiveMSS(), rate)
	at := c.paceAt.Add(-burst)
	if at <= c.e.now {
		return false
	}
	if c.paceWaitAt != at {
		c.paceWaitAt = at
		c.rearm()
	}
	return true
}
