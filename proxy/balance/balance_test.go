package balance

import (
	"net/netip"
	"slices"
	"testing"
)

var balanceClient = netip.MustParseAddrPort("192.0.2.7:40000")

// fixed is a weight function over constant weights.
func fixed(weights []int) func(int) int { return func(i int) int { return weights[i] } }

func newRR(weights []int) Balancer { return NewRoundRobin(len(weights), fixed(weights)) }

func newLC(weights []int, active func(int) int) Balancer {
	return NewLeastConn(len(weights), fixed(weights), active)
}

func pickCounts(b Balancer, n, picks int, healthy func(int) bool) []int {
	counts := make([]int, n)
	for range picks {
		if i := b.Pick(balanceClient, healthy); i >= 0 {
			counts[i]++
		}
	}
	return counts
}

func TestRoundRobinSmoothSequence(t *testing.T) {
	// nginx's example: weights 5,1,1 give a a b a c a a, every cycle.
	rr := newRR([]int{5, 1, 1})
	want := []int{0, 0, 1, 0, 2, 0, 0}
	for cycle := range 3 {
		got := make([]int, 0, len(want))
		for range want {
			got = append(got, rr.Pick(balanceClient, nil))
		}
		if !slices.Equal(got, want) {
			t.Fatalf("cycle %d: picks %v, want %v", cycle, got, want)
		}
	}
}

func TestRoundRobinWeights(t *testing.T) {
	weights := []int{3, 2, 1, 0, 4}
	rr := newRR(weights)
	got := pickCounts(rr, len(weights), 10*1000, nil)
	// Smooth WRR is exact over every window of sum(weights) picks.
	if want := []int{3000, 2000, 1000, 0, 4000}; !slices.Equal(got, want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
	// Plain round robin when every weight is 1.
	rr = newRR([]int{1, 1, 1})
	for k := range 9 {
		if i := rr.Pick(balanceClient, nil); i != k%3 {
			t.Fatalf("pick %d: got %d, want %d", k, i, k%3)
		}
	}
}

func TestRoundRobinSkipsUnhealthy(t *testing.T) {
	weights := []int{5, 1, 1}
	rr := newRR(weights)
	down := []bool{false, true, false}
	healthy := func(i int) bool { return !down[i] }
	got := pickCounts(rr, 3, 6000, healthy)
	if want := []int{5000, 0, 1000}; !slices.Equal(got, want) {
		t.Fatalf("counts with backend 1 down: %v, want %v", got, want)
	}
	// Back up: the weights hold again from then on (within one cycle).
	down[1] = false
	got = pickCounts(rr, 3, 7000, healthy)
	for i, w := range weights {
		if d := got[i] - w*1000; d < -w || d > w {
			t.Fatalf("counts after recovery %v, want ~%v", got, weights)
		}
	}
	down = []bool{true, true, true}
	if i := rr.Pick(balanceClient, healthy); i != -1 {
		t.Fatalf("all unhealthy: got %d, want -1", i)
	}
	if i := newRR(nil).Pick(balanceClient, nil); i != -1 {
		t.Fatalf("no backends: got %d, want -1", i)
	}
	if i := newRR([]int{0, 0}).Pick(balanceClient, nil); i != -1 {
		t.Fatalf("all weights 0: got %d, want -1", i)
	}
}

func TestLeastConnPicksLeastLoaded(t *testing.T) {
	active := []int{3, 1, 2}
	lc := newLC([]int{1, 1, 1}, func(i int) int { return active[i] })
	for range 5 {
		if i := lc.Pick(balanceClient, nil); i != 1 {
			t.Fatalf("got %d, want 1 (active %v)", i, active)
		}
	}
	// Weighted: 4 conns on weight 4 is lighter than 2 on weight 1.
	active = []int{4, 2}
	lc = newLC([]int{4, 1}, func(i int) int { return active[i] })
	if i := lc.Pick(balanceClient, nil); i != 0 {
		t.Fatalf("weighted: got %d, want 0", i)
	}
	// Unhealthy skipped even when least loaded.
	active = []int{5, 0, 3}
	lc = newLC([]int{1, 1, 1}, func(i int) int { return active[i] })
	if i := lc.Pick(balanceClient, func(i int) bool { return i != 1 }); i != 2 {
		t.Fatalf("backend 1 down: got %d, want 2", i)
	}
	if i := lc.Pick(balanceClient, func(int) bool { return false }); i != -1 {
		t.Fatalf("all unhealthy: got %d, want -1", i)
	}
	if i := newLC(nil, nil).Pick(balanceClient, nil); i != -1 {
		t.Fatalf("no backends: got %d, want -1", i)
	}
}

func TestLeastConnTiesRoundRobin(t *testing.T) {
	active := []int{0, 0, 0, 0}
	lc := newLC([]int{1, 1, 1, 1}, func(i int) int { return active[i] })
	for k := range 12 {
		if i := lc.Pick(balanceClient, nil); i != k%4 {
			t.Fatalf("pick %d: got %d, want %d", k, i, k%4)
		}
	}
	// Ties among a subset: backend 2 is busier; 0, 1, 3 alternate.
	active[2] = 1
	var got []int
	for range 6 {
		got = append(got, lc.Pick(balanceClient, nil))
	}
	if want := []int{0, 1, 3, 0, 1, 3}; !slices.Equal(got, want) {
		t.Fatalf("picks %v, want %v", got, want)
	}
}

func TestLeastConnWeightsOverTime(t *testing.T) {
	// Connections that never close: the open counts follow the weights.
	weights := []int{2, 1, 1}
	active := make([]int, 3)
	lc := newLC(weights, func(i int) int { return active[i] })
	for range 4000 {
		active[lc.Pick(balanceClient, nil)]++
	}
	if want := []int{2000, 1000, 1000}; !slices.Equal(active, want) {
		t.Fatalf("active %v, want %v", active, want)
	}
	// Churn: close the longest-open connection of a random backend
	// proportionally; counts stay proportional to the weights.
	for k := range 10000 {
		i := lc.Pick(balanceClient, nil)
		active[i]++
		active[k%3]-- // close one somewhere
		if active[k%3] < 0 {
			active[k%3] = 0
		}
	}
	sum := active[0] + active[1] + active[2]
	for i, w := range weights {
		want := sum * w / 4
		if d := active[i] - want; d < -2 || d > 2 {
			t.Fatalf("after churn active %v, want ~2:1:1", active)
		}
	}
}

func TestBalanceAllocs(t *testing.T) {
	weights := []int{3, 1, 2, 1}
	active := []int{1, 2, 3, 4}
	up := []bool{true, false, true, true}
	healthy := func(i int) bool { return up[i] }
	addrs := make([]netip.AddrPort, len(weights))
	for i := range addrs {
		addrs[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 8080)
	}
	bals := map[string]Balancer{
		"round_robin": newRR(weights),
		"least_conn":  newLC(weights, func(i int) int { return active[i] }),
		"maglev":      NewMaglev(addrs, weights, 0),
	}
	for name, b := range bals {
		client := balanceClient
		n := testing.AllocsPerRun(1000, func() {
			client = netip.AddrPortFrom(client.Addr(), client.Port()+1)
			if b.Pick(client, healthy) < 0 {
				t.Fatal("no pick")
			}
		})
		if n != 0 {
			t.Errorf("%s: Pick allocates %v times", name, n)
		}
	}
}

func benchPick(b *testing.B, bal Balancer, healthy func(int) bool) {
	b.ReportAllocs()
	client := balanceClient
	for b.Loop() {
		client = netip.AddrPortFrom(client.Addr(), client.Port()+1)
		if bal.Pick(client, healthy) < 0 {
			b.Fatal("no pick")
		}
	}
}

func benchWeights(n int) []int {
	w := make([]int, n)
	for i := range w {
		w[i] = 1 + i%3
	}
	return w
}

func BenchmarkRoundRobinPick(b *testing.B) {
	benchPick(b, newRR(benchWeights(16)), func(i int) bool { return i != 3 })
}

func BenchmarkLeastConnPick(b *testing.B) {
	active := make([]int, 16)
	bal := newLC(benchWeights(16), func(i int) int { return active[i] })
	b.ReportAllocs()
	healthy := func(i int) bool { return i != 3 }
	for b.Loop() {
		i := bal.Pick(balanceClient, healthy)
		active[i]++
		if active[i] > 100 {
			active[i] = 0
		}
	}
}
