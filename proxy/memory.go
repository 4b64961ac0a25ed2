package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"
)

// sessionOverhead is what a session costs the proxy on top of its two
// engine connections (the session, its entry in the shard's session set
// and timer heap): charged to the memory budget, half with each leg
// (stack.Config.ConnOverhead).
const sessionOverhead = int(unsafe.Sizeof(session{})) + 96

// AutoMemoryLimit is tcp.memory_limit: auto — a quarter of the memory this
// process may use: the machine's (MemTotal), or its cgroup's memory.max
// when that is lower (cgroup v2). It also says where the figure came from.
func AutoMemoryLimit() (int64, string, error) {
	total, err := memTotal("/proc/meminfo")
	if err != nil {
		return 0, "", err
	}
	from := fmt.Sprintf("a quarter of the machine's memory (%d MiB)", total>>20)
	if cg, ok := cgroupMemoryMax("/proc/self/cgroup", "/sys/fs/cgroup"); ok && cg < total {
		total = cg
		from = fmt.Sprintf("a quarter of the cgroup's memory.max (%d MiB)", cg>>20)
	}
	return total / 4, from, nil
}

// memTotal reads MemTotal from a meminfo file, in bytes.
func memTotal(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: MemTotal: %w", path, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("%s: no MemTotal line", path)
}

// cgroupMemoryMax is the lowest memory.max on the way from this process's
// cgroup (v2: the "0::" line of selfCgroup) up to root, under mount; false
// when there is none ("max" everywhere, or cgroup v1).
func cgroupMemoryMax(selfCgroup, mount string) (int64, bool) {
	data, err := os.ReadFile(selfCgroup)
	if err != nil {
		return 0, false
	}
	var rel string
	for _, line := range bytes.Split(data, []byte("\n")) {
		if r, ok := bytes.CutPrefix(line, []byte("0::")); ok {
			rel = string(r)
		}
	}
	if rel == "" {
		return 0, false
	}
	lowest, found := int64(0), false
	for dir := filepath.Join(mount, rel); strings.HasPrefix(dir, mount); dir = filepath.Dir(dir) {
		b, err := os.ReadFile(filepath.Join(dir, "memory.max"))
		if err == nil {
			if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && (!found || n < lowest) {
				lowest, found = n, true
			}
		}
		if dir == mount {
			break
		}
	}
	return lowest, found
}

// GoMemoryLimit is the Go runtime's soft limit the daemon sets from the
// budget (unless GOMEMLIMIT is in the environment): the budget plus room
// for what it does not count — the pools' idle buffers, listeners, the
// admin server — so that the collector works harder before the heap
// outgrows the budget by much, and never holds back the budget itself.
func GoMemoryLimit(budget int64) int64 { return budget + budget/8 + 32<<20 }
