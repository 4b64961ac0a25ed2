package balance

import "sync/atomic"

// Health is one backend's health state machine, fed by active checks
// (Report) and by passive observations (ConnectFailed).
//
//   - A backend starts up: the proxy serves at once, and a backend that is
//     in fact down is found out after `fall` failed checks.
//   - While up, `fall` consecutive failures take it down; a success in between
//     starts the count again.
//   - While down, `rise` consecutive successes bring it up; a failure in
//     between starts the count again.
//
// Report and ConnectFailed say whether the call changed the state, so that
// exactly one caller logs (and rebuilds a Maglev table) per transition.
//
// Thread-safety: any number of goroutines may report and read at once (the
// checker goroutine or shard, and every shard passing on connect failures).
// The state is a single atomic word updated by compare-and-swap; Up is one
// atomic load, so shards read it on the hot path without locks.
//
// Passive marking can only take a backend down: a backend that is down gets
// no connections, so only active checks bring it back. Without active checks,
// do not call ConnectFailed, or a backend would stay down for good.
//
// The zero Health is up, with rise = fall = 1.
type Health struct {
	rise, fall uint32

	// state: bit 63 set when down; the low 32 bits count consecutive results
	// that disagree with the current state (failures while up, successes
	// while down).
	state atomic.Uint64

	transitions   atomic.Uint64
	checksOK      atomic.Uint64
	checksFailed  atomic.Uint64
	connectFailed atomic.Uint64
}

const healthDown = 1 << 63

// NewHealth returns an up Health with the given thresholds (values below 1
// count as 1).
func NewHealth(rise, fall int) *Health {
	return &Health{rise: uint32(max(rise, 1)), fall: uint32(max(fall, 1))}
}

// Up reports whether the backend may receive new connections.
func (h *Health) Up() bool { return h.state.Load()&healthDown == 0 }

// Report records the result of one active check and reports whether the
// backend's state changed (up → down or down → up).
func (h *Health) Report(ok bool) (changed bool) {
	if ok {
		h.checksOK.Add(1)
	} else {
		h.checksFailed.Add(1)
	}
	return h.apply(ok)
}

// ConnectFailed records a failed connection to the backend (refused,
// unreachable, connect timeout) as a failed check, and reports whether that
// took the backend down.
func (h *Health) ConnectFailed() (changed bool) {
	h.connectFailed.Add(1)
	return h.apply(false)
}

func (h *Health) apply(ok bool) bool {
	rise, fall := max(h.rise, 1), max(h.fall, 1)
	for {
		old := h.state.Load()
		down := old&healthDown != 0
		streak := uint32(old)
		var next uint64
		changed := false
		switch {
		case down == !ok: // agrees with the state: any streak is broken
			next = old &^ 0xffff_ffff
		case !down: // a failure while up
			if streak+1 >= fall {
				next, changed = healthDown, true
			} else {
				next = uint64(streak + 1)
			}
		default: // a success while down
			if streak+1 >= rise {
				next, changed = 0, true
			} else {
				next = healthDown | uint64(streak+1)
			}
		}
		if next == old || h.state.CompareAndSwap(old, next) {
			if changed {
				h.transitions.Add(1)
			}
			return changed
		}
	}
}

// Recheck puts the backend up on probation, for its return from Maint
// (whose checks stopped, so its health is stale): it takes new connections
// at once, and the next failure (an active check, or a failed connect)
// takes it down, whatever fall says; a success ends the probation. This is
// HAProxy's default for a server leaving maintenance (init-state up).
// It reports whether the backend was down (a transition to up).
func (h *Health) Recheck() (changed bool) {
	probation := uint64(max(h.fall, 1) - 1)
	old := h.state.Swap(probation)
	if old&healthDown != 0 {
		h.transitions.Add(1)
		return true
	}
	return false
}

// Transitions counts state changes (up → down and down → up) so far.
func (h *Health) Transitions() uint64 { return h.transitions.Load() }

// Checks counts the active check results reported so far.
func (h *Health) Checks() (ok, failed uint64) { return h.checksOK.Load(), h.checksFailed.Load() }

// ConnectFailures counts the passive failures reported through ConnectFailed.
func (h *Health) ConnectFailures() uint64 { return h.connectFailed.Load() }

// String is "up" or "down".
func (h *Health) String() string {
	if h.Up() {
		return "up"
	}
	return "down"
}
