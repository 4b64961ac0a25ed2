package stack

import (
	"math"
	"time"
)

// Time is a point on the caller's monotonic clock, in nanoseconds since an
// arbitrary origin. The engine never reads a clock itself: every entry point
// takes the current Time.
type Time int64

// Add returns t+d.
func (t Time) Add(d time.Duration) Time { return t + Time(d) }

// Sub returns the duration t-u.
func (t Time) Sub(u Time) time.Duration { return time.Duration(t - u) }

// Before reports t < u.
func (t Time) Before(u Time) bool { return t < u }

// Never is the deadline of a timer that is not armed; NextDeadline returns it
// when nothing is due.
const Never Time = math.MaxInt64
