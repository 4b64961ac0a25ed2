package stack

import "time"

// Pacing: a connection whose congestion control gives a pacing rate (BBR)
// spreads its segments over time at that rate instead of sending a
// window's worth at once. Each segment sent moves the connection's next
// send time on by its length over the rate; output stops while that time
// is ahead of the clock and arms the pacing timer for it.
//
// The engine's owner wakes on deadlines with a millisecond's granularity
// (poll), so a connection may send late; it then catches up, with a credit
// of at most paceCredit behind the clock. The segments of one wake-up thus
// leave as a burst of about a millisecond of the rate, as Linux's TSO
// autosizing sizes a paced burst (sk_pacing_shift 10: ~1 ms).
const paceCredit = 2 * time.Millisecond

// paceBurst is the time worth of a pacing burst.
const paceBurst = time.Millisecond

// paceBurstBytes is the size of a pacing burst at rate: a millisecond's
// worth, at least two segments and at most 64 KiB (Linux's
// tcp_tso_autosize bounds).
func paceBurstBytes(rate float64, smss int) int {
	b := int(rate * paceBurst.Seconds())
	return min(max(b, 2*smss), 64<<10)
}

// paceSent moves the next send time on by n bytes at the pacing rate.
func (c *Conn) paceSent(n int) {
	rate := c.cc.pacingRate()
	if rate <= 0 || n <= 0 {
		return
	}
	now := c.e.now
	at := max(c.paceAt, now.Add(-paceCredit))
	c.paceAt = at.Add(time.Duration(float64(n) / rate * float64(time.Second)))
}

// paceBlocked reports whether the next segment must wait for the pacing
// timer, and arms it if so.
func (c *Conn) paceBlocked() bool {
	if c.paceAt <= c.e.now || c.cc.pacingRate() <= 0 {
		return false
	}
	if c.paceWaitAt != c.paceAt {
		c.paceWaitAt = c.paceAt
		c.rearm()
	}
	return true
}
