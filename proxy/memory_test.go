package proxy

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMemTotal(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "meminfo")
	os.WriteFile(p, []byte("MemFree:         1000 kB\nMemTotal:       24576000 kB\n"), 0o644)
	n, err := memTotal(p)
	if err != nil || n != 24576000<<10 {
		t.Fatalf("memTotal = %d, %v; want %d", n, err, 24576000<<10)
	}
	os.WriteFile(p, []byte("MemFree: 1 kB\n"), 0o644)
	if _, err := memTotal(p); err == nil {
		t.Fatal("a meminfo without MemTotal was accepted")
	}
}

func TestCgroupMemoryMax(t *testing.T) {
	dir := t.TempDir()
	mount := filepath.Join(dir, "cgroup")
	leaf := filepath.Join(mount, "system.slice", "xdproxy.service")
	os.MkdirAll(leaf, 0o755)
	self := filepath.Join(dir, "self")
	os.WriteFile(self, []byte("0::/system.slice/xdproxy.service\n"), 0o644)

	// "max" all the way up: no limit.
	os.WriteFile(filepath.Join(leaf, "memory.max"), []byte("max\n"), 0o644)
	if n, ok := cgroupMemoryMax(self, mount); ok {
		t.Fatalf("no limit set, got %d", n)
	}
	// The lowest on the way up counts, the parent's included.
	os.WriteFile(filepath.Join(mount, "system.slice", "memory.max"), []byte("2147483648\n"), 0o644)
	if n, ok := cgroupMemoryMax(self, mount); !ok || n != 2<<30 {
		t.Fatalf("parent's 2 GiB: got %d, %v", n, ok)
	}
	os.WriteFile(filepath.Join(leaf, "memory.max"), []byte("1073741824\n"), 0o644)
	if n, ok := cgroupMemoryMax(self, mount); !ok || n != 1<<30 {
		t.Fatalf("own 1 GiB under a 2 GiB parent: got %d, %v", n, ok)
	}
	// cgroup v1 (no "0::" line): nothing to go by.
	os.WriteFile(self, []byte("4:memory:/x\n"), 0o644)
	if _, ok := cgroupMemoryMax(self, mount); ok {
		t.Fatal("a v1 hierarchy gave a limit")
	}
}

func TestAutoMemoryLimitOnThisMachine(t *testing.T) {
	n, from, err := AutoMemoryLimit()
	if err != nil {
		t.Fatal(err)
	}
	total, _ := memTotal("/proc/meminfo")
	if n <= 0 || n > total/4 {
		t.Fatalf("auto limit %d (%s), want (0, %d]", n, from, total/4)
	}
}
