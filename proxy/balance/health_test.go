package balance

import (
	"sync"
	"sync/atomic"
	"testing"
)

// healthStep is one reported result and what should follow: 'S' success,
// 'F' failed check, 'C' passive connect failure; up and changed afterwards.
type healthStep struct {
	ev      byte
	up      bool
	changed bool
}

func runHealth(t *testing.T, h *Health, steps []healthStep) {
	t.Helper()
	for k, s := range steps {
		var changed bool
		switch s.ev {
		case 'S':
			changed = h.Report(true)
		case 'F':
			changed = h.Report(false)
		case 'C':
			changed = h.ConnectFailed()
		}
		if h.Up() != s.up || changed != s.changed {
			t.Fatalf("step %d (%c): up=%v changed=%v, want up=%v changed=%v", k, s.ev, h.Up(), changed, s.up, s.changed)
		}
	}
}

func TestHealthRiseFall(t *testing.T) {
	h := NewHealth(2, 3)
	if !h.Up() || h.String() != "up" {
		t.Fatal("a new backend must start up")
	}
	runHealth(t, h, []healthStep{
		{'S', true, false},
		{'F', true, false},
		{'F', true, false},
		{'S', true, false}, // breaks the failure streak
		{'F', true, false},
		{'F', true, false},
		{'F', false, true}, // third consecutive failure: down
		{'F', false, false},
		{'S', false, false},
		{'F', false, false}, // breaks the success streak
		{'S', false, false},
		{'S', true, true}, // second consecutive success: up
		{'S', true, false},
		{'F', true, false},
		{'C', true, false}, // passive failures count as failed checks
		{'C', false, true},
		{'S', false, false},
		{'S', true, true},
	})
	if n := h.Transitions(); n != 4 {
		t.Fatalf("transitions %d, want 4", n)
	}
	if ok, failed := h.Checks(); ok != 8 || failed != 8 {
		t.Fatalf("checks ok=%d failed=%d, want 8 and 8", ok, failed)
	}
	if n := h.ConnectFailures(); n != 2 {
		t.Fatalf("connect failures %d, want 2", n)
	}
}

func TestHealthRiseFallOne(t *testing.T) {
	for _, h := range []*Health{NewHealth(1, 1), NewHealth(0, -3), new(Health)} {
		runHealth(t, h, []healthStep{
			{'S', true, false},
			{'F', false, true},
			{'F', false, false},
			{'S', true, true},
			{'C', false, true},
			{'S', true, true},
		})
		if h.String() != "up" {
			t.Fatal("String of an up backend")
		}
		h.Report(false)
		if h.String() != "down" {
			t.Fatal("String of a down backend")
		}
	}
}

func TestHealthLongSequence(t *testing.T) {
	// Against a straightforward model, over a pseudo-random sequence.
	h := NewHealth(3, 2)
	up, streak := true, 0
	x := uint32(12345)
	for k := range 100000 {
		x = x*1664525 + 1013904223
		ok := x>>28 < 9 // ~56% successes: plenty of flapping
		wantChanged := false
		if ok != up {
			streak++
			if (up && streak >= 2) || (!up && streak >= 3) {
				up, streak, wantChanged = !up, 0, true
			}
		} else {
			streak = 0
		}
		if changed := h.Report(ok); changed != wantChanged || h.Up() != up {
			t.Fatalf("step %d: up=%v changed=%v, want up=%v changed=%v", k, h.Up(), changed, up, wantChanged)
		}
	}
}

func TestHealthConcurrentOneTransition(t *testing.T) {
	// Many shards report at once: exactly one caller sees each transition.
	for round := range 50 {
		h := NewHealth(5, 5)
		var changes atomic.Int32
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 100 {
					if h.ConnectFailed() {
						changes.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if h.Up() || changes.Load() != 1 {
			t.Fatalf("round %d: down transitions seen %d, up=%v", round, changes.Load(), h.Up())
		}
		changes.Store(0)
		for range 8 {
			wg.Go(func() {
				for range 100 {
					if h.Report(true) {
						changes.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if !h.Up() || changes.Load() != 1 || h.Transitions() != 2 {
			t.Fatalf("round %d: up transitions seen %d, up=%v, transitions %d", round, changes.Load(), h.Up(), h.Transitions())
		}
	}
}

func TestHealthAllocs(t *testing.T) {
	h := NewHealth(2, 2)
	k := 0
	if n := testing.AllocsPerRun(1000, func() {
		k++
		h.Report(k%3 != 0)
		_ = h.Up()
	}); n != 0 {
		t.Fatalf("Report allocates %v times", n)
	}
}

func BenchmarkHealthUp(b *testing.B) {
	h := NewHealth(2, 3)
	for b.Loop() {
		if !h.Up() {
			b.Fatal("down")
		}
	}
}
