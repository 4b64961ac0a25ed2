// Package seqnum is TCP sequence-number arithmetic modulo 2^32
// (RFC 9293 section 3.4): comparisons are by signed difference, so they stay
// right across wrap-around as long as the two values are less than 2^31 apart.
package seqnum

// Value is a TCP sequence or acknowledgement number.
type Value uint32

// Size is a length in sequence space (bytes, plus one for SYN and FIN).
type Size uint32

// LessThan reports v < w in sequence space.
func (v Value) LessThan(w Value) bool { return int32(v-w) < 0 }

// LessThanEq reports v <= w in sequence space.
func (v Value) LessThanEq(w Value) bool { return int32(v-w) <= 0 }

// GreaterThan reports v > w in sequence space.
func (v Value) GreaterThan(w Value) bool { return int32(v-w) > 0 }

// GreaterThanEq reports v >= w in sequence space.
func (v Value) GreaterThanEq(w Value) bool { return int32(v-w) >= 0 }

// InRange reports a <= v < b.
func (v Value) InRange(a, b Value) bool { return v-a < b-a }

// InWindow reports first <= v < first+size. A zero-sized window holds nothing.
func (v Value) InWindow(first Value, size Size) bool { return v.InRange(first, first.Add(size)) }

// Add returns v+s.
func (v Value) Add(s Size) Value { return v + Value(s) }

// Sub returns v-s.
func (v Value) Sub(s Size) Value { return v - Value(s) }

// Size returns the distance from v to w (w-v); w must not be before v.
func (v Value) Size(w Value) Size { return Size(w - v) }

// Max returns the later of v and w in sequence space.
func Max(v, w Value) Value {
	if v.LessThan(w) {
		return w
	}
	return v
}

// Min returns the earlier of v and w in sequence space.
func Min(v, w Value) Value {
	if v.LessThan(w) {
		return v
	}
	return w
}

// Overlap reports whether the segment [segStart, segStart+segLen) has any
// byte in the window [wndStart, wndStart+wndLen) — the RFC 9293 section
// 3.10.7.4 acceptability test, including its zero-length cases.
func Overlap(segStart Value, segLen Size, wndStart Value, wndLen Size) bool {
	switch {
	case segLen == 0 && wndLen == 0:
		return segStart == wndStart
	case segLen == 0:
		return segStart.InWindow(wndStart, wndLen)
	case wndLen == 0:
		return false
	default:
		segEnd := segStart.Add(segLen - 1)
		return segStart.InWindow(wndStart, wndLen) || segEnd.InWindow(wndStart, wndLen)
	}
}
