package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xdproxy/xdproxy/bpf"
	"github.com/xdproxy/xdproxy/proxy/balance"
	"github.com/xdproxy/xdproxy/proxy/dataplane"
	"github.com/xdproxy/xdproxy/proxy/trace"
	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/xsk"
)

// InterfaceSpec is one NIC the proxy runs on.
type InterfaceSpec struct {
	Name     string
	Queues   []int
	XDPMode  bpf.Mode
	ZeroCopy xsk.ZeroCopy
	BusyPoll time.Duration // the shards' spin after their last work (0: the data plane's default; < 0: none)
}

// Config is the whole proxy.
type Config struct {
	Interfaces  []InterfaceSpec
	Listeners   []ListenerSpec
	SourcePorts [2]uint16 // the engine's ports for backend legs (one range for all listeners)
	Engine      stack.Config
	MemoryLimit int64  // the engines' buffer budget in bytes (tcp.memory_limit resolved; 0: none)
	StateDir    string // where host changes are recorded before they are made (dataplane.Config.StateDir)
	Logger      *slog.Logger
}

// Proxy is xdproxy's data plane plus the proxying on top: every listener
// on every shard of every interface, sessions splicing client legs to
// backend legs, health checks, drain.
type Proxy struct {
	cfg       Config
	listeners atomic.Pointer[[]*Listener] // replaced whole by a reload
	dp        *dataplane.Dataplane
	apps      []*shardApp
	draining  atomic.Bool
	log       *slog.Logger
	ctx       context.Context
	cancel    context.CancelFunc
	genCancel context.CancelFunc // the current listeners' goroutines (startGeneration)
	reloadMu  sync.Mutex         // one reload at a time
	wg        sync.WaitGroup
	stopOnce  sync.Once
	traces    trace.Hub // ladder traces' watches (trace.go)
}

// lis is the listeners now (a reload replaces the slice, never changes it).
func (p *Proxy) lis() []*Listener {
	if l := p.listeners.Load(); l != nil {
		return *l
	}
	return nil
}

// Start brings the proxy up. It returns once every shard of every listener
// is serving.
func Start(cfg Config) (_ *Proxy, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger}
	var ls []*Listener
	for _, spec := range cfg.Listeners {
		ls = append(ls, newListener(spec, p.log))
	}
	p.listeners.Store(&ls)
	defer func() {
		if err != nil {
			p.Stop()
		}
	}()
	ecfg := cfg.Engine
	ecfg.ConnOverhead = sessionOverhead / 2
	dcfg := dataplane.Config{
		SourcePorts:  cfg.SourcePorts,
		Engine:       ecfg,
		MemoryLimit:  cfg.MemoryLimit,
		ReservePorts: true,
		StateDir:     cfg.StateDir,
		Logger:       p.log,
		NewHandler: func(sh *dataplane.Shard) stack.Handler {
			a := newShardApp(p, sh)
			if sh.ID() == 0 {
				a.probes = balance.NewProber(engineDialer{sh}, healthTargets(p.lis(), false), sh.Now())
			}
			p.apps = append(p.apps, a)
			return a
		},
	}
	for _, l := range p.lis() {
		dcfg.Listeners = append(dcfg.Listeners, l.Spec.Addr)
		if !l.Spec.DialKernel && l.Spec.Source.IsValid() && !slices.Contains(dcfg.SourceAddrs, l.Spec.Source) {
			dcfg.SourceAddrs = append(dcfg.SourceAddrs, l.Spec.Source)
		}
	}
	for _, ifc := range cfg.Interfaces {
		dcfg.Interfaces = append(dcfg.Interfaces, dataplane.InterfaceConfig{
			Name: ifc.Name, Queues: ifc.Queues, XDPMode: ifc.XDPMode, BusyPoll: ifc.BusyPoll,
			// A proxy bursts: an initial window to hundreds of new
			// connections at once. 16384 frames (32 MiB of UMEM per
			// queue) and 4096-entry rings keep the TX allocator and the
			// fill ring from running dry (xsk's defaults are 4096/2048).
			XSK: xsk.Config{ZeroCopy: ifc.ZeroCopy, NumFrames: 16384,
				FillSize: 4096, CompletionSize: 4096, RxSize: 4096, TxSize: 4096},
		})
	}
	if p.dp, err = dataplane.Start(dcfg); err != nil {
		return nil, err
	}
	shards := len(p.dp.Shards())
	for _, l := range p.lis() {
		if l.Spec.DialKernel {
			warnKernelPorts(p.log)
			break
		}
	}
	if procs, ok := spareProcs(shards); ok {
		p.log.Info("GOMAXPROCS raised above the shard count", "gomaxprocs", procs, "shards", shards)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.ctx, p.cancel = ctx, cancel
	p.startGeneration(p.lis())
	p.installTracers()
	return p, nil
}

// startGeneration starts the goroutines that serve one set of listeners
// (kernel health checks, Maglev rebuilders), stopping the previous set's.
func (p *Proxy) startGeneration(ls []*Listener) {
	if p.genCancel != nil {
		p.genCancel()
	}
	ctx, cancel := context.WithCancel(p.ctx)
	p.genCancel = cancel
	if targets := healthTargets(ls, true); len(targets) > 0 {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			balance.RunKernelChecks(ctx, targets)
		}()
	}
	for _, l := range ls {
		if l.maglev != nil {
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				l.rebuilder(ctx)
			}()
		}
	}
}

// kernelPortsFloor is how many ephemeral ports dial: kernel legs should
// have at least before the daemon warns: at a few thousand new backend
// connections a second, each held ~60 s in TIME_WAIT by whichever side
// closes first, fewer run out.
const kernelPortsFloor = 4096

// warnKernelPorts logs a warning when the kernel's ephemeral range, less
// the reserved ports (ours included), leaves dial: kernel legs few source
// ports: Linux's default 32768-60999 less the default source_ports
// 20000-59999 leaves 1,000.
func warnKernelPorts(log *slog.Logger) {
	rng, err1 := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	res, err2 := os.ReadFile("/proc/sys/net/ipv4/ip_local_reserved_ports")
	if err1 != nil || err2 != nil {
		return
	}
	free, lo, hi, ok := freeEphemeralPorts(string(rng), string(res))
	if ok && free < kernelPortsFloor {
		log.Warn("few ephemeral ports left for dial: kernel backend legs: widen net.ipv4.ip_local_port_range or narrow source_ports",
			"ip_local_port_range", fmt.Sprintf("%d-%d", lo, hi), "free", free)
	}
}

// freeEphemeralPorts counts the ports of an ip_local_port_range value
// ("32768\t60999") that an ip_local_reserved_ports value ("7000,20000-59999")
// leaves free.
func freeEphemeralPorts(rng, reserved string) (free, lo, hi int, ok bool) {
	f := strings.Fields(rng)
	if len(f) != 2 {
		return 0, 0, 0, false
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || lo > hi {
		return 0, 0, 0, false
	}
	taken := make(map[int]bool)
	for _, part := range strings.Split(strings.TrimSpace(reserved), ",") {
		if part == "" {
			continue
		}
		a, b, found := strings.Cut(part, "-")
		x, err := strconv.Atoi(a)
		if err != nil {
			return 0, 0, 0, false
		}
		y := x
		if found {
			if y, err = strconv.Atoi(b); err != nil {
				return 0, 0, 0, false
			}
		}
		for p := max(x, lo); p <= min(y, hi); p++ {
			taken[p] = true
		}
	}
	return hi - lo + 1 - len(taken), lo, hi, true
}

// spareProcs raises GOMAXPROCS to two more than the shards unless the
// GOMAXPROCS environment variable set it. A sleeping shard blocks in
// poll(2), a system call, holding its P; with no idle P left (GOMAXPROCS =
// cores = shards, the usual setup) Go's sysmon takes the P away after 20 µs
// of every such sleep and the wake-up must win one back — futex and usleep
// churn measured at 28% of the daemon's CPU at 2,000 req/s on 2 cores.
// With idle Ps to spare sysmon leaves a syscall's P alone for 10 ms: 12-30%
// less CPU per request at 2k-20k req/s in the same runs. The extra Ps cost
// nothing while the shards sleep.
func spareProcs(shards int) (int, bool) {
	if os.Getenv("GOMAXPROCS") != "" {
		return 0, false
	}
	if want := shards + 2; runtime.GOMAXPROCS(0) < want {
		runtime.GOMAXPROCS(want)
		return want, true
	}
	return 0, false
}

// Dataplane returns the data plane (nil before Start finished).
func (p *Proxy) Dataplane() *dataplane.Dataplane { return p.dp }

// Draining reports whether Drain has begun.
func (p *Proxy) Draining() bool { return p.draining.Load() }

// Drain stops accepting (new clients are reset), waits up to timeout for
// open sessions to finish, then resets the rest. It returns how many were reset.
func (p *Proxy) Drain(timeout time.Duration) int {
	p.draining.Store(true)
	p.eachShard(func(a *shardApp) {
		for _, el := range a.engineListeners() {
			el.Close()
		}
	})
	end := time.Now().Add(timeout)
	for time.Now().Before(end) && p.activeSessions() > 0 {
		time.Sleep(20 * time.Millisecond)
	}
	reset := 0
	p.eachShard(func(a *shardApp) { reset += a.abortAll() })
	if reset > 0 {
		p.log.Warn("drain timeout: reset the remaining sessions", "sessions", reset)
	}
	// Let the shards send the RSTs.
	time.Sleep(50 * time.Millisecond)
	return reset
}

func (p *Proxy) activeSessions() int64 {
	var n int64
	for _, l := range p.lis() {
		n += l.Active()
	}
	return n
}

// eachShard runs fn on every shard, on the shard's goroutine.
func (p *Proxy) eachShard(fn func(a *shardApp)) {
	for _, a := range p.apps {
		a.sh.Do(func(*dataplane.Shard) { fn(a) })
	}
}

// Stop stops health checks and every data plane (detaching XDP).
func (p *Proxy) Stop() error {
	var err error
	p.stopOnce.Do(func() {
		if p.cancel != nil {
			p.cancel()
		}
		p.wg.Wait()
		if p.dp != nil {
			err = p.dp.Stop()
		}
	})
	return err
}

// engineListeners lists the engine listeners of the shard.
func (a *shardApp) engineListeners() []*stack.Listener {
	return a.sh.Listeners()
}
