package proxy

import (
	"runtime"
	"testing"
)

func TestSpareProcs(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })

	runtime.GOMAXPROCS(2)
	t.Setenv("GOMAXPROCS", "")
	if got, ok := spareProcs(2); !ok || got != 4 || runtime.GOMAXPROCS(0) != 4 {
		t.Fatalf("2 shards on GOMAXPROCS 2: spareProcs = %d, %v; GOMAXPROCS %d; want 4", got, ok, runtime.GOMAXPROCS(0))
	}
	// Already enough: left alone.
	runtime.GOMAXPROCS(8)
	if _, ok := spareProcs(2); ok || runtime.GOMAXPROCS(0) != 8 {
		t.Fatalf("2 shards on GOMAXPROCS 8 changed it to %d", runtime.GOMAXPROCS(0))
	}
	// The operator's GOMAXPROCS wins.
	runtime.GOMAXPROCS(2)
	t.Setenv("GOMAXPROCS", "2")
	if _, ok := spareProcs(4); ok || runtime.GOMAXPROCS(0) != 2 {
		t.Fatalf("GOMAXPROCS=2 in the environment overridden: %d", runtime.GOMAXPROCS(0))
	}
}
