package balance

import "net/netip"

// Balancer chooses a backend for a new client connection.
//
// Pick returns the index of the chosen backend in the listener's backend
// list, or -1 when no backend with a positive weight is healthy. healthy
// reports whether backend i may receive new connections (its health, and
// its Runtime: ready and weighted); nil means all of them may. To keep Pick
// allocation-free, build the healthy function once (e.g. a closure over the
// listener's backends, made at set-up time), not per call.
//
// Weights may change at run time (Runtime). Round robin and least
// connections read them on every Pick through the weight function they were
// made with, which must be cheap and safe to call from every shard (an
// atomic load). Maglev bakes weights into its table, rebuilt off the hot
// path (RebuildWeights).
//
// The round-robin and least-connections balancers keep per-shard state and
// must be used by one goroutine only (one per shard). Maglev is safe for
// concurrent use: Pick is lock-free and may run in every shard at once.
//
// A backend whose weight is zero or negative never receives connections.
type Balancer interface {
	Pick(client netip.AddrPort, healthy func(i int) bool) int
}

func usable(healthy func(int) bool, i int) bool { return healthy == nil || healthy(i) }

// roundRobin is nginx's smooth weighted round robin: on each pick every
// eligible backend's current value grows by its weight, the largest current
// wins and is lowered by the sum of the eligible weights. Over any window of
// sum(weights) picks with a stable healthy set each backend is picked exactly
// weight times, and the picks of a heavy backend are spread out rather than
// bunched (weights 5,1,1 give a a b a c a a). Unhealthy backends sit out:
// their current value is frozen until they are back.
//
// Unlike nginx there is no effective-weight back-off on failures: failures
// feed the health state machine (Health.ConnectFailed) instead.
//
// A weight changed at run time takes effect from the next pick: the
// algorithm keeps no state that depends on the weights' sum.
type roundRobin struct {
	weight  func(i int) int
	current []int
}

// NewRoundRobin returns a smooth weighted round-robin balancer over n
// backends whose current weights weight(i) reports. It keeps per-shard
// state: make one per shard.
func NewRoundRobin(n int, weight func(i int) int) Balancer {
	return &roundRobin{weight: weight, current: make([]int, n)}
}

func (r *roundRobin) Pick(_ netip.AddrPort, healthy func(i int) bool) int {
	best, total := -1, 0
	for i := range r.current {
		w := r.weight(i)
		if w <= 0 || !usable(healthy, i) {
			continue
		}
		r.current[i] += w
		total += w
		if best < 0 || r.current[i] > r.current[best] {
			best = i
		}
	}
	if best >= 0 {
		r.current[best] -= total
	}
	return best
}

// leastConn picks the healthy backend with the fewest active connections
// per unit of weight (active/weight, compared by cross-multiplication so no
// division or floating point is involved). Among equally loaded backends the
// scan starts just after the previous pick, so ties go round robin.
type leastConn struct {
	n      int
	weight func(i int) int
	active func(i int) int
	next   int
}

// NewLeastConn returns a least-connections balancer over n backends whose
// current weights weight(i) reports; active(i) reports the connections
// currently open to backend i. It keeps per-shard state (the tie-breaking
// cursor): make one per shard.
func NewLeastConn(n int, weight, active func(i int) int) Balancer {
	return &leastConn{n: n, weight: weight, active: active}
}

func (l *leastConn) Pick(_ netip.AddrPort, healthy func(i int) bool) int {
	n := l.n
	best, bestActive, bestWeight := -1, 0, 0
	i := l.next
	for range n {
		if w := l.weight(i); w > 0 && usable(healthy, i) {
			a := l.active(i)
			// a/w < bestActive/bestWeight, strictly: the earliest in scan order wins ties.
			if best < 0 || a*bestWeight < bestActive*w {
				best, bestActive, bestWeight = i, a, w
			}
		}
		if i++; i == n {
			i = 0
		}
	}
	if best >= 0 {
		if l.next = best + 1; l.next == n {
			l.next = 0
		}
	}
	return best
}
