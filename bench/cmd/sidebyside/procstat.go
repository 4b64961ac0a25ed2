package main

import (
	"bufio"
	"bytes"
	"math"
	"os"
	"strconv"
	"strings"
)

// clkTck is USER_HZ, the unit of /proc/<pid>/stat's utime and stime (100
// on every Linux architecture Go supports).
const clkTck = 100

// procTree returns root and all its descendants (nginx's workers, say).
func procTree(root int) []int {
	if root <= 0 {
		return nil
	}
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(pid); len(f) > 1 {
			if ppid, err := strconv.Atoi(f[1]); err == nil {
				children[ppid] = append(children[ppid], pid)
			}
		}
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// statFields returns the fields of /proc/<pid>/stat after the command name
// (fields[0] is the state, [1] the ppid, [11] utime, [12] stime).
func statFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// cpuSeconds is utime+stime of the processes (each the sum over all its
// threads, exited ones included).
func cpuSeconds(pids []int) float64 {
	var ticks int64
	for _, pid := range pids {
		f := statFields(pid)
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return float64(ticks) / clkTck
}

// rssKiB is the sum of VmRSS of the processes.
func rssKiB(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		total += statusKiB("/proc/"+strconv.Itoa(pid)+"/status", "VmRSS:")
	}
	return total
}

// statusKiB reads a "Key:   123 kB" line of a /proc status-like file.
func statusKiB(path, key string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key); ok {
			if fs := strings.Fields(rest); len(fs) > 0 {
				v, _ := strconv.ParseInt(fs[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

// machineCPU is the whole machine's busy and softirq time from /proc/stat,
// in seconds (busy = everything but idle and iowait).
func machineCPU() (busy, softirq float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0
	}
	var v [10]float64
	for i := 1; i < len(f) && i <= 10; i++ {
		x, _ := strconv.ParseFloat(f[i], 64)
		v[i-1] = x / clkTck
	}
	// user nice system idle iowait irq softirq steal guest guest_nice;
	// guest time is already in user.
	busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
	return busy, v[6]
}

// loadAvg1 is the 1-minute load average (NaN when /proc/loadavg cannot be
// read).
func loadAvg1() float64 {
	first, _, _ := strings.Cut(loadAvg(), " ")
	v, err := strconv.ParseFloat(first, 64)
	if err != nil {
		return math.NaN()
	}
	return v
}
