package dataplane

import (
	"time"

	"github.com/xdproxy/xdproxy/stack"
)

// The memory budget (Config.MemoryLimit, tcp.memory_limit) is split into
// one share per shard's engine, and the engines account and apply pressure
// on their own share without locks (stack/memory.go). Once a second the
// shares are rebalanced to follow use: each shard gets what it holds plus
// an equal part of what is left, so a busy shard is not in pressure while
// the daemon as a whole is far from its limit; when the whole budget is in
// use, the shares are in proportion to what the shards hold, so that every
// shard is at its high mark together and each resets its own stalest
// connections. A shard's share never drops below 1/(4n) of the budget, so
// a quiet shard can always take new connections.
//
// The same loop logs pressure episodes: once when one begins (a shard
// leaves normal) and once when it ends (every shard back to normal), with
// what it cost.

// memoryEvery is how often the shares are rebalanced and pressure looked at.
const memoryEvery = time.Second

// SetMemoryLimit sets the budget (bytes; 0 for none) and splits it evenly
// until the next rebalance. Safe from any goroutine.
func (d *Dataplane) SetMemoryLimit(n int64) {
	d.memLimit.Store(n)
	for _, s := range d.shards {
		s.eng.SetMemoryShare(n / int64(len(d.shards)))
	}
}

// MemoryLimit returns the budget (bytes; 0 for none).
func (d *Dataplane) MemoryLimit() int64 { return d.memLimit.Load() }

// rebalance gives each shard's engine its share of limit, from used (what
// each holds now).
func rebalance(limit int64, used []int64) []int64 {
	n := int64(len(used))
	shares := make([]int64, n)
	if limit <= 0 || n == 0 {
		return shares
	}
	floor := limit / (4 * n)
	var total int64
	for _, u := range used {
		total += u
	}
	for i, u := range used {
		if total < limit {
			shares[i] = u + (limit-total)/n
		} else {
			shares[i] = int64(float64(limit) * float64(u) / float64(total))
		}
		shares[i] = max(shares[i], floor)
	}
	return shares
}

// memoryEpisode is what the loop remembers of a pressure episode.
type memoryEpisode struct {
	on             bool
	since          time.Time
	peak           stack.MemoryLevel
	resets0, syns0 uint64
}

func (d *Dataplane) watchMemory(end <-chan struct{}) {
	t := time.NewTicker(memoryEvery)
	defer t.Stop()
	var ep memoryEpisode
	for {
		select {
		case <-end:
			return
		case now := <-t.C:
			d.memoryTick(now, &ep)
		}
	}
}

func (d *Dataplane) memoryTick(now time.Time, ep *memoryEpisode) {
	used := make([]int64, len(d.shards))
	level := stack.MemoryNormal
	var resets, syns uint64
	for i, s := range d.shards {
		m := s.eng.Memory()
		used[i] = m.Used()
		level = max(level, m.Level())
		c := s.eng.Counters()
		resets += c.Load(stack.MemoryResets)
		syns += c.Load(stack.SYNCookiesMemory) + c.Load(stack.SYNDropsMemory)
	}
	limit := d.memLimit.Load()
	for i, sh := range rebalance(limit, used) {
		d.shards[i].eng.SetMemoryShare(sh)
	}
	var total int64
	for _, u := range used {
		total += u
	}
	switch {
	case !ep.on && level > stack.MemoryNormal:
		*ep = memoryEpisode{on: true, since: now, peak: level, resets0: resets, syns0: syns}
		d.log.Warn("memory pressure: windows clamped and rings held small; above the high mark new clients get SYN cookies and the stalest sessions are reset",
			"used", total, "limit", limit, "level", level.String())
	case ep.on && level > stack.MemoryNormal:
		if level > ep.peak {
			ep.peak = level
			d.log.Warn("memory pressure: high mark reached", "used", total, "limit", limit)
		}
	case ep.on:
		d.log.Info("memory pressure over", "lasted", now.Sub(ep.since).Round(time.Second).String(), "peak", ep.peak.String(),
			"sessions_reset", resets-ep.resets0, "syns_by_cookie_or_dropped", syns-ep.syns0, "used", total, "limit", limit)
		ep.on = false
	}
}
