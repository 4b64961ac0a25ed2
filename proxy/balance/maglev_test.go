package balance

import (
	"hash/fnv"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"
)

func maglevBackends(n int) []netip.AddrPort {
	addrs := make([]netip.AddrPort, n)
	for i := range addrs {
		addrs[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 10, 2, byte(i + 2)}), 8080)
	}
	return addrs
}

// maglevClients are n pseudo-random client addresses (IPv4 and IPv6 mixed),
// the same on every run.
func maglevClients(n int) []netip.AddrPort {
	r := rand.New(rand.NewPCG(1, 2))
	cs := make([]netip.AddrPort, n)
	for i := range cs {
		var a netip.Addr
		if i%4 == 3 {
			var b [16]byte
			for j := range b {
				b[j] = byte(r.Uint32())
			}
			b[0] = 0x20
			a = netip.AddrFrom16(b)
		} else {
			v := r.Uint32()
			a = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		}
		cs[i] = netip.AddrPortFrom(a, uint16(1024+r.IntN(64512)))
	}
	return cs
}

func tableShares(g *Maglev) []int {
	counts := make([]int, len(g.addrs))
	for _, i := range g.table.Load().entry {
		counts[i]++
	}
	return counts
}

func TestMaglevTableSize(t *testing.T) {
	for _, c := range []struct{ in, want int }{{0, 65537}, {-1, 65537}, {65537, 65537}, {65536, 65537}, {100, 101}, {251, 251}, {2, 2}, {1, 2}} {
		if got := NewMaglev(maglevBackends(1), nil, c.in).Size(); got != c.want {
			t.Errorf("tableSize %d: size %d, want %d", c.in, got, c.want)
		}
	}
}

func TestMaglevTableBalance(t *testing.T) {
	for _, n := range []int{2, 3, 7, 10, 50} {
		g := NewMaglev(maglevBackends(n), nil, 0)
		counts := tableShares(g)
		want := float64(g.Size()) / float64(n)
		for i, c := range counts {
			// Round-robin filling gives every backend floor or ceil of M/N.
			if d := float64(c) - want; d < -1 || d > 1 {
				t.Errorf("n=%d: backend %d has %d slots, want %.1f", n, i, c, want)
			}
		}
	}
}

func TestMaglevWeights(t *testing.T) {
	weights := []int{1, 2, 3, 0, 2}
	g := NewMaglev(maglevBackends(len(weights)), weights, 0)
	counts := tableShares(g)
	total := 8.0
	for i, w := range weights {
		want := float64(g.Size()) * float64(w) / total
		if d := float64(counts[i]) - want; d < -2 || d > 2 {
			t.Errorf("backend %d (weight %d): %d slots, want %.0f", i, w, counts[i], want)
		}
	}
	if counts[3] != 0 {
		t.Errorf("weight 0 backend has %d slots", counts[3])
	}
}

func TestMaglevClientBalance(t *testing.T) {
	const n, clients = 5, 200000
	g := NewMaglev(maglevBackends(n), nil, 0)
	counts := make([]int, n)
	for _, c := range maglevClients(clients) {
		counts[g.Pick(c, nil)]++
	}
	want := float64(clients) / n
	for i, c := range counts {
		if dev := (float64(c) - want) / want; dev < -0.03 || dev > 0.03 {
			t.Errorf("backend %d got %d clients, want %.0f ±3%%", i, c, want)
		}
	}
	t.Logf("clients per backend: %v", counts)
}

func TestMaglevSameClientSameBackend(t *testing.T) {
	g := NewMaglev(maglevBackends(8), nil, 0)
	c := netip.MustParseAddrPort("198.51.100.9:51000")
	first := g.Pick(c, nil)
	for range 100 {
		if i := g.Pick(c, nil); i != first {
			t.Fatalf("same client moved from %d to %d", first, i)
		}
	}
	// The port is part of the key: a client's connections spread.
	seen := map[int]bool{}
	for p := range uint16(200) {
		seen[g.Pick(netip.AddrPortFrom(c.Addr(), 40000+p), nil)] = true
	}
	if len(seen) != 8 {
		t.Fatalf("200 ports of one client reached %d of 8 backends", len(seen))
	}
	// An IPv4-mapped IPv6 client is the same client.
	mapped := netip.AddrPortFrom(netip.AddrFrom16(c.Addr().As16()), c.Port())
	if i := g.Pick(mapped, nil); i != first {
		t.Fatalf("IPv4-mapped client picked %d, want %d", i, first)
	}
}

// Two nodes build their tables independently, one of them from a config
// listing the backends in another order: every client reaches the same
// backend address on both, also after the same backend fails on both.
func TestMaglevTwoNodesAgree(t *testing.T) {
	addrs := maglevBackends(9)
	weights := []int{1, 1, 2, 1, 3, 1, 1, 2, 1}
	a := NewMaglev(addrs, weights, 0)
	perm := rand.New(rand.NewPCG(3, 4)).Perm(len(addrs))
	addrsB, weightsB := make([]netip.AddrPort, len(addrs)), make([]int, len(addrs))
	for j, i := range perm {
		addrsB[j], weightsB[j] = addrs[i], weights[i]
	}
	b := NewMaglev(addrsB, weightsB, 0)
	clients := maglevClients(50000)
	check := func(stage string) {
		for _, c := range clients {
			ia, ib := a.Pick(c, nil), b.Pick(c, nil)
			if ia < 0 || ib < 0 || addrs[ia] != addrsB[ib] {
				t.Fatalf("%s: client %v: node A picks %d, node B %d", stage, c, ia, ib)
			}
		}
	}
	check("all healthy")
	downA := make([]bool, len(addrs))
	downB := make([]bool, len(addrs))
	for i := range addrs {
		downA[i] = addrs[i] != addrs[4]
		downB[i] = addrsB[i] != addrs[4]
	}
	a.Rebuild(downA)
	b.Rebuild(downB)
	check("backend 4 down")
}

// Golden values: the mapping must not change between builds, processes or
// versions (nodes of different versions must agree during an upgrade).
func TestMaglevGolden(t *testing.T) {
	g := NewMaglev(maglevBackends(5), []int{1, 2, 1, 1, 3}, 0)
	h := fnv.New64a()
	for _, e := range g.table.Load().entry {
		h.Write([]byte{byte(e)})
	}
	const wantTable = 0x4dc9b18e4dffdc6b
	got := h.Sum64()
	var picks []int
	for _, c := range []string{"192.0.2.1:1234", "192.0.2.1:1235", "198.51.100.77:443", "[2001:db8::1]:50000", "[2001:db8::2]:50000", "203.0.113.250:65535"} {
		picks = append(picks, g.Pick(netip.MustParseAddrPort(c), nil))
	}
	wantPicks := []int{4, 0, 4, 4, 3, 0}
	if got != wantTable || !slices.Equal(picks, wantPicks) {
		t.Fatalf("table hash %#x, picks %v; want %#x, %v", got, picks, uint64(wantTable), wantPicks)
	}
}

func TestMaglevMinimalDisruption(t *testing.T) {
	const n = 10
	g := NewMaglev(maglevBackends(n), nil, 0)
	before := slices.Clone(g.table.Load().entry)
	clients := maglevClients(100000)
	was := make([]int, len(clients))
	for k, c := range clients {
		was[k] = g.Pick(c, nil)
	}
	healthy := make([]bool, n)
	for i := range healthy {
		healthy[i] = i != 3
	}
	g.Rebuild(healthy)
	after := g.table.Load().entry
	slotsMoved := 0
	for j := range before {
		if before[j] != 3 && before[j] != after[j] {
			slotsMoved++
		}
		if after[j] == 3 {
			t.Fatal("removed backend still in the table")
		}
	}
	moved, ofRemoved := 0, 0
	for k, c := range clients {
		now := g.Pick(c, nil)
		switch {
		case was[k] == 3:
			ofRemoved++
		case now != was[k]:
			moved++
		}
	}
	frac := float64(moved) / float64(len(clients)-ofRemoved)
	t.Logf("backend 3 had %d of %d clients; %d others moved (%.2f%%); %d of %d other slots changed",
		ofRemoved, len(clients), moved, 100*frac, slotsMoved, len(before))
	if share := float64(ofRemoved) / float64(len(clients)); share < 0.08 || share > 0.12 {
		t.Errorf("removed backend had %.1f%% of clients, want ~10%%", 100*share)
	}
	if frac > 0.02 {
		t.Errorf("%.2f%% of the clients of healthy backends moved, want < 2%%", 100*frac)
	}
	// Coming back restores the original table exactly.
	g.Rebuild(nil)
	if !slices.Equal(before, g.table.Load().entry) {
		t.Fatal("table after recovery differs from the original")
	}
}

func TestMaglevUnhealthy(t *testing.T) {
	const n = 6
	g := NewMaglev(maglevBackends(n), nil, 0)
	clients := maglevClients(20000)
	// The health view changed but the table is not rebuilt yet: clients of
	// the failed backend walk on to the next healthy slot; no one else moves.
	healthy := func(i int) bool { return i != 2 }
	for _, c := range clients {
		orig := g.Lookup(c)
		got := g.Pick(c, healthy)
		if got == 2 || (orig != 2 && got != orig) {
			t.Fatalf("client %v: table %d, pick %d", c, orig, got)
		}
	}
	if i := g.Pick(clients[0], func(int) bool { return false }); i != -1 {
		t.Fatalf("every backend unhealthy by the view: got %d", i)
	}
	g.Rebuild(make([]bool, n))
	if i := g.Pick(clients[0], nil); i != -1 {
		t.Fatalf("empty table: got %d", i)
	}
	if i := g.Lookup(clients[0]); i != -1 {
		t.Fatalf("empty table lookup: got %d", i)
	}
	if i := NewMaglev(nil, nil, 0).Pick(clients[0], nil); i != -1 {
		t.Fatalf("no backends: got %d", i)
	}
	if i := NewMaglev(maglevBackends(3), []int{0, 0, 0}, 0).Pick(clients[0], nil); i != -1 {
		t.Fatalf("all weights 0: got %d", i)
	}
	// A single live backend gets everything.
	only := make([]bool, n)
	only[5] = true
	g.Rebuild(only)
	for _, c := range clients[:100] {
		if i := g.Pick(c, nil); i != 5 {
			t.Fatalf("only backend 5 up: got %d", i)
		}
	}
}

func TestMaglevRebuildNoop(t *testing.T) {
	g := NewMaglev(maglevBackends(4), nil, 0)
	t0 := g.table.Load()
	g.Rebuild([]bool{true, true, true, true})
	g.RebuildFunc(func(int) bool { return true })
	if g.table.Load() != t0 {
		t.Fatal("rebuild with an unchanged view replaced the table")
	}
	g.Rebuild([]bool{true, false})
	if g.table.Load() == t0 {
		t.Fatal("rebuild with a changed view kept the table")
	}
}

func TestMaglevConcurrentPickRebuild(t *testing.T) {
	const n = 5
	g := NewMaglev(maglevBackends(n), nil, 1009)
	clients := maglevClients(1000)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				if i := g.Pick(clients[(k+w)%len(clients)], nil); i < 0 || i >= n {
					t.Errorf("pick %d", i)
					return
				}
			}
		})
	}
	for k := range 200 {
		view := make([]bool, n)
		for i := range view {
			view[i] = i != k%n
		}
		g.Rebuild(view)
	}
	close(stop)
	wg.Wait()
}

func BenchmarkMaglevPick(b *testing.B) {
	g := NewMaglev(maglevBackends(16), benchWeights(16), 0)
	benchPick(b, g, func(i int) bool { return true })
}

func BenchmarkMaglevRebuild(b *testing.B) {
	g := NewMaglev(maglevBackends(16), benchWeights(16), 0)
	views := [2][]bool{make([]bool, 16), make([]bool, 16)}
	for i := range 16 {
		views[0][i], views[1][i] = true, i != 7
	}
	b.ReportAllocs()
	k := 0
	for b.Loop() {
		k++
		g.Rebuild(views[k%2])
	}
}
