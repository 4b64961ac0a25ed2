package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/xdproxy/xdproxy/proxy/balance"
	"github.com/xdproxy/xdproxy/proxy/dataplane"
	"github.com/xdproxy/xdproxy/stack"
)

// Reload (SIGHUP, POST /reload) applies a new configuration to the running
// proxy without dropping a connection. What it changes:
//
//   - Listeners added start at once (the data plane steers, reserves and
//     listens: dataplane.AddListener); listeners removed stop accepting (a
//     new client is reset, as by a host with nothing listening) while their
//     open sessions go on, and their address is given back to the kernel
//     once the last of those sessions ends. A listener whose address or
//     dial mode changed is a removal and an addition.
//   - A listener that stays (same name, address and dial mode) takes its
//     new balance, timeouts, max_connections, PROXY protocol and health
//     checks for new sessions; its counters carry on. Its backends are
//     matched by address: one that stays keeps its health, its counters
//     and its run-time setting (a drain or maint set through the runtime
//     API survives; a run-time weight survives too unless it still equals
//     the old configured weight, which then follows the file); new ones
//     start up; removed ones get no new session and their open sessions
//     finish as they would have.
//   - Open sessions are never touched: they keep the listener and backend
//     they started with, timeouts included.
//
// What takes a restart — the interfaces, the engine's tcp settings,
// source_ports, state_dir, a listener source address the data plane did not
// start with — is reported in the result (Restart) and left as it was.
//
// The new listeners are swapped in on every shard between two batches, so a
// reload takes about one loop iteration per shard.

// ReloadResult says what a reload did.
type ReloadResult struct {
	Added, Removed, Changed, Kept []string // listener names
	Restart                       []string // settings that differ but take a restart
}

// Reload applies cfg (see above). It fails, changing nothing, only when
// the new listeners cannot be started.
func (p *Proxy) Reload(cfg Config) (ReloadResult, error) {
	p.reloadMu.Lock()
	defer p.reloadMu.Unlock()
	var res ReloadResult
	if p.draining.Load() {
		return res, errors.New("reload: the proxy is draining")
	}
	res.Restart = restartOnly(p.cfg, cfg)
	old := p.lis()
	byName := map[string]*Listener{}
	for _, l := range old {
		byName[l.Spec.Name] = l
	}
	sources := map[netip.Addr]bool{}
	for _, l := range old {
		if l.Spec.Source.IsValid() {
			sources[l.Spec.Source] = true
		}
	}
	var next []*Listener
	kept := map[*Listener]bool{}
	for _, spec := range cfg.Listeners {
		if !spec.DialKernel && spec.Source.IsValid() && !sources[spec.Source] {
			return res, fmt.Errorf("reload: listener %s: source %v is new: a source address takes a restart (the data plane steers its return traffic from the start)", spec.Name, spec.Source)
		}
		o := byName[spec.Name]
		switch {
		case o != nil && o.Spec.Addr == spec.Addr && o.Spec.DialKernel == spec.DialKernel:
			nl := o.reconfigured(spec)
			kept[o] = true
			next = append(next, nl)
			if reflect.DeepEqual(o.Spec, spec) {
				res.Kept = append(res.Kept, spec.Name)
			} else {
				res.Changed = append(res.Changed, spec.Name)
			}
		default:
			next = append(next, newListener(spec, p.log))
			res.Added = append(res.Added, spec.Name)
		}
	}
	// Every shard takes the new listeners between two batches — before the
	// new addresses are steered, so that a client's first SYN to one finds
	// its session logic there.
	setAll := func(ls []*Listener) {
		for _, a := range p.apps {
			a.sh.Do(func(sh *dataplane.Shard) { a.setListeners(ls) })
		}
	}
	setAll(next)
	// New addresses; a failure puts the running configuration back whole.
	oldAddrs, newAddrs := map[netip.AddrPort]bool{}, map[netip.AddrPort]bool{}
	for _, l := range old {
		oldAddrs[l.Spec.Addr] = true
	}
	for _, l := range next {
		newAddrs[l.Spec.Addr] = true
	}
	var started []netip.AddrPort
	for _, l := range next {
		ap := l.Spec.Addr
		if oldAddrs[ap] || slices.Contains(started, ap) || p.dp == nil {
			continue
		}
		if _, err := p.dp.AddListener(ap); err != nil {
			for _, a := range started {
				p.dp.RemoveListener(a)
			}
			setAll(old)
			return ReloadResult{Restart: res.Restart}, fmt.Errorf("reload: listener %s: %w", l.Spec.Name, err)
		}
		started = append(started, ap)
	}
	p.listeners.Store(&next)
	p.startGeneration(next)
	for _, l := range old {
		if kept[l] {
			continue
		}
		res.Removed = append(res.Removed, l.Spec.Name)
		if ap := l.Spec.Addr; !newAddrs[ap] && p.dp != nil {
			p.dp.CloseListener(ap)
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.retire(l)
			}()
		}
	}
	if p.dp != nil && cfg.MemoryLimit != p.dp.MemoryLimit() {
		p.log.Info("memory limit changed", "from", p.dp.MemoryLimit(), "to", cfg.MemoryLimit)
		p.dp.SetMemoryLimit(cfg.MemoryLimit)
	}
	p.log.Info("configuration reloaded", "added", res.Added, "removed", res.Removed, "changed", res.Changed,
		"unchanged", len(res.Kept), "take_a_restart", res.Restart)
	return res, nil
}

// retire gives a removed listener's address back once its last session has
// ended (or the proxy stops).
func (p *Proxy) retire(l *Listener) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for l.Active() > 0 {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
	}
	if err := p.dp.RemoveListener(l.Spec.Addr); err != nil {
		p.log.Warn("removing a reloaded-away listener", "listener", l.Spec.Name, "err", err)
		return
	}
	p.log.Info("listener removed: its last session ended", "listener", l.Spec.Name, "address", l.Spec.Addr)
}

// reconfigured is the listener l becomes under spec (same name, address and
// dial mode): counters shared; backends that stay keep their health,
// counters and run-time setting.
func (l *Listener) reconfigured(spec ListenerSpec) *Listener {
	nl := &Listener{Spec: spec, listenerShared: l.listenerShared, log: l.log}
	rise, fall := 2, 3
	if h := spec.Health; h != nil {
		rise, fall = h.Rise, h.Fall
	}
	sameChecks := (spec.Health == nil) == (l.Spec.Health == nil) &&
		(spec.Health == nil || (spec.Health.Rise == l.Spec.Health.Rise && spec.Health.Fall == l.Spec.Health.Fall))
	for _, b := range spec.Backends {
		ob := l.backendAt(b.Addr)
		if ob == nil {
			nl.Backends = append(nl.Backends, newBackendState(b, balance.NewHealth(rise, fall)))
			continue
		}
		health := ob.Health
		if !sameChecks {
			health = balance.NewHealth(rise, fall)
		}
		if b.Weight != ob.Spec.Weight {
			oldWeight := ob.Spec.Weight
			ob.Runtime.Update(func(s balance.Setting) balance.Setting {
				if s.Weight == oldWeight {
					s.Weight = b.Weight
				}
				return s
			})
		}
		nl.Backends = append(nl.Backends, &BackendState{Spec: b, Health: health, Runtime: ob.Runtime, backendShared: ob.backendShared})
	}
	if spec.Balance == "maglev" {
		nl.initMaglev()
	}
	return nl
}

// setListeners gives the shard the listeners a reload made (on the shard).
// Sessions keep the shardListener they started with.
func (a *shardApp) setListeners(ls []*Listener) {
	m := make(map[netip.AddrPort]*shardListener, len(ls))
	for _, l := range ls {
		m[l.Spec.Addr] = newShardListener(l)
	}
	a.listeners = m
	if a.probes != nil {
		a.probes = balance.NewProber(engineDialer{a.sh}, healthTargets(ls, false), a.sh.Now())
	}
}

// restartOnly names the settings of next that differ from cur and that a
// reload does not apply.
func restartOnly(cur, next Config) []string {
	var out []string
	if !reflect.DeepEqual(cur.Interfaces, next.Interfaces) {
		out = append(out, "interfaces")
	}
	if cur.SourcePorts != next.SourcePorts {
		out = append(out, "listeners[].source_ports")
	}
	if cur.StateDir != next.StateDir {
		out = append(out, "state_dir")
	}
	if !sameEngine(cur.Engine, next.Engine) {
		out = append(out, "tcp")
	}
	if !slices.Equal(cur.Engine.SecondChance.Peers, next.Engine.SecondChance.Peers) {
		out = append(out, "bgp.second_chance")
	}
	return out
}

// sameEngine compares the settings of two engine templates (not the keys,
// which are read from state_dir, nor what the data plane fills in).
func sameEngine(a, b stack.Config) bool {
	a.Keys, b.Keys = nil, nil
	a.Handler, b.Handler = nil, nil
	a.Rand, b.Rand = nil, nil
	a.Sink, b.Sink = nil, nil
	a.PortFilter, b.PortFilter = nil, nil
	a.SecondChance, b.SecondChance = stack.SecondChance{}, stack.SecondChance{} // bgp.second_chance
	return reflect.DeepEqual(a, b)
}
