package main

// What a proxy adds: the whole machine's CPU (/proc/stat: load generator,
// backends, every namespace's kernel TCP and softirq, the proxy) per unit
// of work, minus the direct path's per unit in the same round and
// workload. Per-process CPU hides whose work is whose (a receiver's softirq
// runs in, and is billed to, whichever task transmitted); the difference
// of machine-wide figures does not. The units: a connection (connrate), a
// request (every request/response workload) and a GiB (bulk).

import (
	"fmt"
	"math"
)

// Marginal is a contender's machine-wide cost per unit of one workload,
// and what it adds to the direct path's: medians over rounds, each round
// against the direct path's run of the same round (NaN: not measured, or
// no direct run in that round). For xdproxy, its frames and data-path
// kernel entries per unit, from its counters.
type Marginal struct {
	Workload  string `json:"workload"`
	Unit      string `json:"unit"` // "conn", "req" or "GiB"
	Machine   num    `json:"machine_cpu_us_per_unit"`
	Added     num    `json:"added_cpu_us_per_unit"` // Machine minus the direct path's, same round
	FramesIn  num    `json:"frames_in_per_unit,omitempty"`
	FramesOut num    `json:"frames_out_per_unit,omitempty"`
	Syscalls  num    `json:"syscalls_per_unit,omitempty"`
}

// marginalWorkloads are the workloads the marginal table covers, in its
// order: connection rate, the closed-loop request/response, each offered
// rate, bulk.
func (res *Results) marginalWorkloads() []string {
	ws := []string{"connrate", "rr-max"}
	for _, r := range res.Settings.Rates {
		ws = append(ws, rrName(r))
	}
	return append(ws, "bulk1", "bulk8")
}

// units is how many units of its workload a run did (0: none or failed):
// connections (warm-up and tail included), requests (estimated from the
// achieved rate over warm-up and window, as the proxy-CPU column is), or
// GiB moved (warm-up included).
func (res *Results) units(r Run) (float64, string) {
	switch {
	case r.Error != "":
		return 0, ""
	case r.ConnRate != nil:
		return float64(r.ConnRate.AllConns), "conn"
	case r.RR != nil:
		return r.RR.Achieved * (res.Settings.Duration + res.Settings.Warmup).Seconds(), "req"
	case r.Bulk != nil:
		return float64(r.Bulk.AllBytes) / (1 << 30), "GiB"
	}
	return 0, ""
}

// perUnit is the run's machine CPU in µs per unit (NaN without units).
func (res *Results) perUnit(r Run) float64 {
	n, _ := res.units(r)
	if n <= 0 {
		return math.NaN()
	}
	return r.MachineCPU * 1e6 / n
}

// summarizeMarginal fills in every contender's Marginal rows.
func (res *Results) summarizeMarginal() {
	type roundWorkload struct {
		round    int
		workload string
	}
	direct := map[roundWorkload]float64{} // µs per unit
	for _, r := range res.Runs {
		if r.Contender == "direct" {
			if v := res.perUnit(r); !math.IsNaN(v) {
				direct[roundWorkload{r.Round, r.Workload}] = v
			}
		}
	}
	for _, c := range res.Contenders {
		s := res.Summary[c.Name]
		if s == nil {
			continue
		}
		s.Marginal = nil
		for _, w := range res.marginalWorkloads() {
			var machine, added, in, out, sys []float64
			unit := ""
			for _, r := range res.Runs {
				if r.Contender != c.Name || r.Workload != w {
					continue
				}
				n, u := res.units(r)
				if n <= 0 {
					continue
				}
				unit = u
				v := res.perUnit(r)
				machine = append(machine, v)
				if d, ok := direct[roundWorkload{r.Round, w}]; ok {
					added = append(added, v-d)
				}
				if x := r.XSK; x != nil && x.Error == "" {
					in = append(in, float64(x.RX)/n)
					out = append(out, float64(x.TX)/n)
					sys = append(sys, float64(x.Syscalls)/n)
				}
			}
			if unit == "" {
				continue
			}
			s.Marginal = append(s.Marginal, Marginal{Workload: w, Unit: unit, Machine: median(machine), Added: median(added),
				FramesIn: median(in), FramesOut: median(out), Syscalls: median(sys)})
		}
	}
}

// marginalOf is s's row for workload w (NaNs when there is none).
func (s *Summary) marginalOf(w string) Marginal {
	for _, m := range s.Marginal {
		if m.Workload == w {
			return m
		}
	}
	return Marginal{Workload: w, Machine: nan, Added: nan, FramesIn: nan, FramesOut: nan, Syscalls: nan}
}

// scaled formats a per-unit figure: µs per connection or request, seconds
// per GiB.
func scaled(v num, unit string) string {
	if unit == "GiB" {
		return fN(v/1e6, 2)
	}
	return fN(v, 1)
}

// marginalMarkdown is the section on what each contender adds to the
// machine's CPU, and xdproxy's frames and kernel entries per unit.
func (res *Results) marginalMarkdown(w func(format string, a ...any), names []string, sum func(string) *Summary) {
	w("\n## What each proxy adds: machine-wide CPU per connection, request and GiB, minus the direct path's\n\n")
	w("The whole machine's busy time from /proc/stat (user, nice, system, irq, softirq, steal: the load generator, the backends, every namespace's kernel TCP and the proxy) over each workload, per unit of work; \"added\" subtracts the direct path's per-unit figure of the same round and workload, then takes the median over rounds. ")
	w("Per-process CPU hides whose work is whose (on veth a receiver's softirq runs in, and is billed to, whichever task transmitted); this difference does not: it is what the proxy costs the machine. µs per connection and per request, CPU seconds per GiB.\n\n")
	hap := sum("haproxy")
	w("| workload | contender | machine | added | added ×HAProxy | frames in / out per unit | kernel entries per unit |\n|---|---|---:|---:|---:|---:|---:|\n")
	for _, wl := range res.marginalWorkloads() {
		hm := hap.marginalOf(wl)
		for _, n := range names {
			m := sum(n).marginalOf(wl)
			if m.Unit == "" {
				continue
			}
			frames, sys := "–", "–"
			if !math.IsNaN(float64(m.FramesIn)) {
				frames = fmt.Sprintf("%s / %s", fN(m.FramesIn, 2), fN(m.FramesOut, 2))
				sys = fN(m.Syscalls, 2)
			}
			added, vsHAProxy := "–", "–"
			if n != "direct" {
				added, vsHAProxy = scaled(m.Added, m.Unit), ratio(m.Added, hm.Added)
			}
			w("| %s (per %s) | %s | %s | %s | %s | %s | %s |\n", workloadLabel(wl), m.Unit, n, scaled(m.Machine, m.Unit), added, vsHAProxy, frames, sys)
		}
	}
	w("\nFrames (xdproxy): `%s` and `%s` over the workload, summed over queues (and interfaces), per unit; kernel entries: its data path's syscalls, TX kicks (`%s`, sendto), fill-ring wake-ups (`%s`), the shards' sleeps in poll(2) (`%s`) and the eventfd writes that wake a sleeping shard (`%s`). ", metricXSKRx, metricXSKTx, metricXSKKicks, metricXSKWakeups, metricSleeps, metricShardWakeup)
	w("A request's units are estimated from the achieved rate over warm-up and window; at the low offered rates the machine's idle-time work (xdproxy's busy-polling, every process's timers) is spread over few requests. ")
	w("The machine-wide figure holds whatever else the box runs: %s.\n", res.loadRange())
}

// loadRange says between which 1-minute load averages the workloads
// started.
func (res *Results) loadRange() string {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range res.Runs {
		if v := float64(r.LoadAvg); !math.IsNaN(v) && v > 0 {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if math.IsInf(lo, 0) {
		return "the load average was not recorded"
	}
	return fmt.Sprintf("the 1-minute load average was %.1f to %.1f as the workloads started (on %d cores; compare within a run, over several rounds)", lo, hi, res.Machine.Cores)
}
