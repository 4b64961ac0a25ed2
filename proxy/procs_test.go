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

func TestFreeEphemeralPorts(t *testing.T) {
	for _, c := range []struct {
		rng, reserved string
		free          int
		ok            bool
	}{
		{"32768\t60999\n", "20000-59999\n", 1000, true},
		{"32768\t60999", "", 28232, true},
		{"1024 65535", "7000-7004,20000-59999", 64512 - 5 - 40000, true},
		{"1024 65535", "7000,7000-7001", 64512 - 2, true},
		{"32768 60999", "1000-2000", 28232, true},
		{"32768", "", 0, false},
		{"32768 60999", "x-1", 0, false},
	} {
		free, _, _, ok := freeEphemeralPorts(c.rng, c.reserved)
		if ok != c.ok || (ok && free != c.free) {
			t.Errorf("range %q reserved %q: %d, %v; want %d, %v", c.rng, c.reserved, free, ok, c.free, c.ok)
		}
	}
}
