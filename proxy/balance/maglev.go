package balance

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/dchest/siphash"
)

// MaglevTableSize is the default lookup-table size: a prime well above 100
// times any sensible backend count, as the Maglev paper recommends.
const MaglevTableSize = 65537

// Fixed SipHash keys. They are part of the wire-visible behaviour: every
// xdproxy node (every build, every process) must map a client to the same
// backend, so these must never be randomised or changed without a migration
// note. They are not secrets; Maglev needs agreement, not unpredictability.
const (
	maglevBackendK0 = 0x7864_7072_6f78_7931 // "xdproxy1"
	maglevBackendK1 = 0x6d61_676c_6576_2d62 // "maglev-b"
	maglevClientK0  = 0x7864_7072_6f78_7932 // "xdproxy2"
	maglevClientK1  = 0x6d61_676c_6576_2d63 // "maglev-c"
)

// Maglev is Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and
// Reliable Software Network Load Balancer", NSDI 2016, section 3.4).
//
// Each backend has a preference list over the M slots of a lookup table, the
// permutation (offset + j*skip) mod M, with offset and skip derived from a
// keyed SipHash-2-4 of the backend's address (IP as 16 bytes, IPv4 unmapped
// to its IPv4-in-IPv6 form, then the port). M is prime, so every skip in
// [1, M-1] gives a full permutation. Backends take turns claiming their next
// free preferred slot until the table is full; a backend of weight w takes
// w/maxWeight turns per round, so its share of the table is proportional to
// its weight. A client maps to table[SipHash(client IP, client port) mod M].
//
// Turns are taken in the order of the backends' addresses, not their order in
// the configuration, so the table is a function of the set of (address,
// weight) pairs and of the healthy subset only: nodes with the same backends
// and the same health view build identical tables and send a given client to
// the same backend, whatever order their config lists the backends in.
//
// Removing a backend (Rebuild with it unhealthy) moves its own clients, and
// only a small fraction of the others (the paper's "minimal disruption").
//
// A Maglev is safe for concurrent use and is meant to be shared by every
// shard of a listener: the table is immutable once built and published
// through an atomic pointer; Pick never locks. Rebuild serialises behind a
// mutex and allocates, so it belongs to the health checker, not the hot path.
type Maglev struct {
	addrs   []netip.AddrPort
	weights []int
	order   []int // backend indices sorted by address: the population turn order
	m       uint64
	offset  []uint64
	skip    []uint64

	mu    sync.Mutex // serialises Rebuild
	table atomic.Pointer[maglevTable]
}

type maglevTable struct {
	entry   []int32 // backend index per slot; nil when no backend is live
	weights []int   // the weight view this table was built for (0: out)
}

// NewMaglev returns a Maglev balancer over backends with all of them
// healthy. weights[i] is backend i's weight (nil or missing entries mean 1;
// zero or negative weights get no slots). tableSize is the lookup-table
// size; 0 or less means MaglevTableSize, and a non-prime size is rounded up
// to the next prime (so configs that disagree only there still agree with
// themselves, not with each other: keep it identical across nodes).
//
// It returns the concrete *Maglev (a Balancer) so that the caller can reach
// Rebuild, RebuildFunc and RebuildWeights without a type assertion.
func NewMaglev(backends []netip.AddrPort, weights []int, tableSize int) *Maglev {
	if tableSize <= 0 {
		tableSize = MaglevTableSize
	}
	m := uint64(nextPrime(tableSize))
	n := len(backends)
	g := &Maglev{
		addrs:   append([]netip.AddrPort(nil), backends...),
		weights: make([]int, n),
		order:   make([]int, n),
		m:       m,
		offset:  make([]uint64, n),
		skip:    make([]uint64, n),
	}
	for i, ap := range backends {
		g.weights[i] = 1
		if i < len(weights) {
			g.weights[i] = weights[i]
		}
		var b [18]byte
		a := ap.Addr().Unmap().As16()
		copy(b[:16], a[:])
		binary.BigEndian.PutUint16(b[16:], ap.Port())
		h1, h2 := siphash.Hash128(maglevBackendK0, maglevBackendK1, b[:])
		g.offset[i] = h1 % m
		g.skip[i] = h2%(m-1) + 1
		g.order[i] = i
	}
	slices.SortStableFunc(g.order, func(x, y int) int {
		return maglevKey(backends[x]).Compare(maglevKey(backends[y]))
	})
	g.RebuildFunc(nil)
	return g
}

// maglevKey is the address as the hashes see it (IPv4-mapped IPv6 unmapped,
// zone dropped), so that sorting agrees with hashing.
func maglevKey(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

// Size is the lookup-table size M (a prime).
func (g *Maglev) Size() int { return int(g.m) }

// Rebuild rebuilds the lookup table for the given health view: healthy[i]
// false removes backend i (nil, or entries past the end, mean healthy);
// the others keep the weights NewMaglev was given. It is a no-op when the
// view is the one the current table was built for.
//
// When several goroutines may report health transitions at once, prefer
// RebuildFunc with a function that reads the live health state: it samples
// the state under the rebuild lock, so the last rebuild to run always sees
// the latest view (a snapshot taken before waiting for the lock may be stale).
func (g *Maglev) Rebuild(healthy []bool) {
	g.RebuildFunc(func(i int) bool { return i >= len(healthy) || healthy[i] })
}

// RebuildFunc is Rebuild with the health view sampled from up (nil: all
// healthy) while holding the rebuild lock.
func (g *Maglev) RebuildFunc(up func(i int) bool) {
	g.RebuildWeights(func(i int) int {
		if up == nil || up(i) {
			return g.weights[i]
		}
		return 0
	})
}

// RebuildWeights rebuilds the lookup table for backend i weighing
// weight(i) (0 or less: out of the table), sampled while holding the
// rebuild lock: the general form, for weights set at run time and backends
// drained or down. It is a no-op when the weights are the ones the current
// table was built for.
func (g *Maglev) RebuildWeights(weight func(i int) int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	view := make([]int, len(g.addrs))
	for i := range view {
		view[i] = max(weight(i), 0)
	}
	if cur := g.table.Load(); cur != nil && slices.Equal(cur.weights, view) {
		return
	}
	g.table.Store(&maglevTable{entry: g.populate(view), weights: view})
}

// populate fills a new lookup table with the live backends (weight > 0),
// or returns nil when there is none.
func (g *Maglev) populate(weights []int) []int32 {
	maxW := 0
	live := make([]int, 0, len(g.order))
	for _, i := range g.order {
		if weights[i] > 0 {
			live = append(live, i)
			maxW = max(maxW, weights[i])
		}
	}
	if len(live) == 0 {
		return nil
	}
	m := g.m
	entry := make([]int32, m)
	for j := range entry {
		entry[j] = -1
	}
	next := make([]uint64, len(g.addrs)) // next preferred slot: permutation[i][turns taken]
	credit := make([]int, len(g.addrs))  // weight banked towards the next turn
	for _, i := range live {
		next[i] = g.offset[i]
	}
	for filled := uint64(0); ; {
		for _, i := range live {
			// The heaviest backends take exactly one turn per round, the
			// others weight/maxW turns on average.
			for credit[i] += weights[i]; credit[i] >= maxW; credit[i] -= maxW {
				c := next[i]
				for entry[c] >= 0 {
					if c += g.skip[i]; c >= m {
						c -= m
					}
				}
				entry[c] = int32(i)
				if next[i] = c + g.skip[i]; next[i] >= m {
					next[i] -= m
				}
				if filled++; filled == m {
					return entry
				}
			}
		}
	}
}

// Pick maps the client (IP and port) to a backend through the lookup table.
// If that backend is not healthy by the caller's view (the table has not yet
// been rebuilt for a transition), Pick walks on through the table to the next
// slot whose backend is healthy; that too is deterministic, so nodes with the
// same table and the same view still agree. It returns -1 when the table is
// empty (no live backend) or no slot's backend is healthy.
func (g *Maglev) Pick(client netip.AddrPort, healthy func(i int) bool) int {
	t := g.table.Load()
	if t.entry == nil {
		return -1
	}
	j := maglevClientHash(client) % g.m
	for range g.m {
		if i := int(t.entry[j]); usable(healthy, i) {
			return i
		}
		if j++; j == g.m {
			j = 0
		}
	}
	return -1
}

// Lookup is the table's backend for the client, ignoring health (-1 when the
// table is empty); for tests and diagnostics.
func (g *Maglev) Lookup(client netip.AddrPort) int {
	t := g.table.Load()
	if t.entry == nil {
		return -1
	}
	return int(t.entry[maglevClientHash(client)%g.m])
}

// maglevClientHash is SipHash-2-4 with a fixed key over the client's IP (16
// bytes, IPv4 as IPv4-mapped IPv6, no zone) and port (big endian).
func maglevClientHash(client netip.AddrPort) uint64 {
	var b [18]byte
	a := client.Addr().Unmap().As16()
	copy(b[:16], a[:])
	binary.BigEndian.PutUint16(b[16:], client.Port())
	return siphash.Hash(maglevClientK0, maglevClientK1, b[:])
}

// nextPrime is the smallest prime >= n (n >= 2 assumed; smaller gives 2).
func nextPrime(n int) int {
	if n <= 2 {
		return 2
	}
	if n%2 == 0 {
		n++
	}
	for ; ; n += 2 {
		prime := true
		for d := 3; d*d <= n; d += 2 {
			if n%d == 0 {
				prime = false
				break
			}
		}
		if prime {
			return n
		}
	}
}
