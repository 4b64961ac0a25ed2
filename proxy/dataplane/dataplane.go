package dataplane

import (
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/bpf"
	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/stack/wire"
	"github.com/xdproxy/xdproxy/xsk"
)

// InterfaceConfig is one interface of the data plane.
type InterfaceConfig struct {
	Name    string
	Queues  []int    // nil: every RX queue of the interface
	XDPMode bpf.Mode // auto: native where the driver supports it, else generic
	XSK     xsk.Config
	// BusyPoll is how long an idle shard keeps busy-polling before it
	// sleeps in poll (config interfaces[].busy_poll; 0: the default 5µs,
	// < 0: none). A shard serves every interface, so it spins for the
	// longest BusyPoll of them. Measured on 2 cores (make bench, xdproxy
	// and HAProxy only, one round): against 50µs, 5µs lowered p50 at
	// 2k/10k/20k req/s from 206/218/380 to 142/141/173 µs and proxy CPU
	// per request from 231/92/46 to 135/55/34 µs — spinning steals the
	// core the rest of the path needs. On dedicated cores a longer spin
	// catches back-to-back requests.
	BusyPoll time.Duration
}

// Config describes the data plane: every interface, the addresses it
// terminates, the engine template and the application.
type Config struct {
	Interfaces []InterfaceConfig

	// Listeners are the address:ports the engine terminates (every shard
	// listens on each; every interface steers them).
	Listeners []netip.AddrPort
	// SourceAddrs are extra addresses backend legs may be dialed from (the
	// listeners' explicit sources), besides each interface's own first
	// IPv4 and global IPv6 address. The engine owns SourcePorts on all of
	// them and the XDP program steers their return traffic.
	SourceAddrs []netip.Addr
	SourcePorts [2]uint16

	// Engine is the template for each shard's engine; Interfaces,
	// Addresses, Handler, Rand, EphemeralPorts, PortFilter and MemoryLimit
	// are filled in per shard.
	Engine stack.Config
	// MemoryLimit is the budget of all the engines together, in bytes (0:
	// none): see memory.go.
	MemoryLimit int64

	// NewHandler returns the application for a shard (called on Start, before
	// the shard runs).
	NewHandler func(s *Shard) stack.Handler

	// ReservePorts reserves SourcePorts and the listeners' ports from the
	// kernel's ephemeral range (net.ipv4.ip_local_reserved_ports) while the
	// data plane runs: see reservedPorts.
	ReservePorts bool
	// StateDir, when set, is where the data plane records the host changes
	// it makes before it makes them, so that a run that dies without undoing
	// them (SIGKILL) is undone by the next start (see reservePorts).
	StateDir string

	Logger *slog.Logger
}

// Iface is one interface of a running data plane: its XDP program and what
// the engine knows of it.
type Iface struct {
	index    int // in Config.Interfaces and the engines' interface list
	name     string
	link     netlink.Link
	prog     *bpf.Program
	queues   []int
	mac      wire.MAC
	mtu      int
	frame    int // UMEM frame size
	packet   int // the longest frame the link carries; over frame: multi-buffer (jumbo.go)
	virtual  bool
	sources  []netip.Addr        // the kernel's first IPv4 and global IPv6 address on it
	kernel   map[netip.Addr]bool // every address the kernel has on it
	lastWarn time.Time           // the checksum warning, rate-limited
	lastRx   uint64
	lastBad  uint64
}

// Name is the interface's name.
func (f *Iface) Name() string { return f.name }

// Index is the interface's position in the configuration (and the engines').
func (f *Iface) Index() int { return f.index }

// Program returns the interface's XDP program (for its counters).
func (f *Iface) Program() *bpf.Program { return f.prog }

// Queues are the interface's queues, one per shard from the first.
func (f *Iface) Queues() []int { return f.queues }

// Virtual reports whether the engine accepts partial checksums on it.
func (f *Iface) Virtual() bool { return f.virtual }

// Dataplane is the XDP program on every interface, the shards (one per
// queue index, each with an AF_XDP socket on that queue of every interface)
// and the glue between them: hand-offs, routes and neighbours followed from
// the kernel.
type Dataplane struct {
	cfg         Config
	bootBase    stack.Time // CLOCK_BOOTTIME at start: see now
	ifs         []*Iface
	byIfindex   map[int]*Iface
	shards      []*Shard
	start       time.Time
	portLo      uint16
	portHi      uint16
	wg          sync.WaitGroup
	restore     []func() // undo steps for system settings, run in reverse
	watchEnd    chan struct{}
	resolveCh   chan resolveReq
	ports       *portReservation        // nil unless Config.ReservePorts
	kernelOwned map[netip.Addr]bool     // addresses the kernel has on some interface
	listening   map[netip.AddrPort]bool // listeners steered now (Config.Listeners, AddListener, RemoveListener)
	mu          sync.Mutex              // serialises AddListener and RemoveListener
	netns       netns.NsHandle          // the namespace the data plane was started in
	nl          *netlink.Handle         // netlink sockets in that namespace (goroutines do not inherit it)
	// hashClients: the receive queue of a client flow is not stable (veth:
	// the queue is the sender's skb->hash, which its TCP re-randomises on
	// an RTO or duplicate data). A client flow belongs to the shard whose
	// engine holds it (clientFlows: the shard that answered its SYN, on
	// the queue the flow arrives on while the hash holds); a segment that
	// lands elsewhere is handed to that shard.
	hashClients bool
	// clientFlows maps a client flow the engines hold to the shard that
	// holds it (clientFlowKey → int), kept by the engines' FlowObserver
	// (clientFlowOwner); only with hashClients and more than one shard.
	clientFlows  sync.Map
	memLimit     atomic.Int64            // Config.MemoryLimit, or SetMemoryLimit's
	capture      atomic.Pointer[Capture] // the running capture (one at a time), or nil
	cookies      *cookieCtl              // SYN cookies in XDP (cookies.go); nil with syn_cookies never
	xdpCookiesOn atomic.Bool             // the programs answer SYNs now
	log          *slog.Logger
	stopOnce     sync.Once
}

// now is the engines' clock: CLOCK_BOOTTIME, which does not restart with
// the process, so a restarted daemon's ISNs and timestamps (RFC 6528's M,
// RFC 7323's TSval, both from this clock, under keys kept in state_dir) are
// ahead of its predecessor's. It is read once at start and carried on with
// Go's monotonic clock (one vDSO read per loop, no system call); the two
// differ only across a suspend, which a server does not do.
func (d *Dataplane) now() stack.Time { return d.bootBase + stack.Time(time.Since(d.start)) }

// bootTime is CLOCK_BOOTTIME now (1 if it cannot be read: the clock then
// restarts with the process, as before).
func bootTime() stack.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 1
	}
	return stack.Time(ts.Nano()) + 1
}

// Shards returns the shards, one per queue index.
func (d *Dataplane) Shards() []*Shard { return d.shards }

// Interfaces returns the interfaces, in configuration order.
func (d *Dataplane) Interfaces() []*Iface { return d.ifs }

// virtualKinds are the link types whose frames come from the same host's
// kernel, never across a wire: a sender there with TX checksum offload on
// (the default) leaves TCP checksums partial.
var virtualKinds = map[string]bool{"veth": true, "netkit": true, "macvlan": true, "macvtap": true, "ipvlan": true, "ipvtap": true}

// Start attaches the XDP program to every interface, opens a socket per
// (interface, queue) and starts one shard per queue index. On error
// everything already set up is undone.
//
// Shard i serves the i-th queue of every interface. Interfaces may have
// different queue counts: there are as many shards as the largest count,
// and a shard beyond an interface's count has no socket on it — what its
// engine sends there goes through a TX hand-off ring to shard i mod n
// (counted as tx hand-offs; one copy per frame), and what arrives there
// reaches it through the receive hand-offs like any flow another shard
// owns. Give interfaces the same number of queues (ethtool -L) to avoid
// the copy.
//
// No UMEM is shared between interfaces (XDP_SHARED_UMEM): a terminator
// never forwards a received frame — the engine builds every outgoing frame
// straight into a TX frame of the socket of the interface it leaves by —
// so a shared UMEM would save no copy, and separate ones keep each
// socket's fill and completion rings its own.
func Start(cfg Config) (_ *Dataplane, err error) {
	if len(cfg.Interfaces) == 0 {
		return nil, errors.New("dataplane: no interfaces")
	}
	if cfg.SourcePorts == [2]uint16{} {
		cfg.SourcePorts = [2]uint16{20000, 59999}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Dataplane{cfg: cfg, start: time.Now(), bootBase: bootTime(), portLo: cfg.SourcePorts[0], portHi: cfg.SourcePorts[1],
		log: cfg.Logger, byIfindex: map[int]*Iface{}, resolveCh: make(chan resolveReq, 1024)}
	defer func() {
		if err != nil {
			d.teardown()
		}
	}()
	// Sockets a shard opens later (kernel legs) must live in the namespace
	// the data plane was started in; goroutines do not inherit it.
	if d.netns, err = netns.Get(); err != nil {
		return nil, fmt.Errorf("dataplane: current network namespace: %w", err)
	}
	if d.nl, err = netlink.NewHandleAt(d.netns); err != nil {
		return nil, fmt.Errorf("dataplane: netlink: %w", err)
	}
	spin := time.Duration(-1)
	shards := 0
	for i, ic := range cfg.Interfaces {
		f, err := d.openIface(i, ic)
		if err != nil {
			return nil, err
		}
		d.ifs = append(d.ifs, f)
		d.byIfindex[f.link.Attrs().Index] = f
		shards = max(shards, len(f.queues))
		switch {
		case ic.BusyPoll == 0:
			spin = max(spin, 5*time.Microsecond)
		case ic.BusyPoll > 0:
			spin = max(spin, ic.BusyPoll)
		}
	}
	spin = max(spin, 0)

	// Every address the engines own, and which of them the kernel owns on
	// some interface (it answers ARP/NDP for those; the engine for the rest,
	// on every interface, as Linux answers for any of its addresses).
	owned := map[netip.Addr]bool{}
	kernelOwned := map[netip.Addr]bool{}
	for _, f := range d.ifs {
		for a := range f.kernel {
			kernelOwned[a] = true
		}
	}
	d.kernelOwned, d.listening = kernelOwned, map[netip.AddrPort]bool{}
	for _, ap := range cfg.Listeners {
		owned[ap.Addr()] = true
		d.listening[ap] = true
	}
	for _, a := range cfg.SourceAddrs {
		owned[a] = true
	}
	for _, f := range d.ifs {
		for _, ap := range cfg.Listeners {
			if err := f.prog.AddListener(ap); err != nil {
				return nil, fmt.Errorf("dataplane: %s: listener %v: %w", f.name, ap, err)
			}
		}
		// Second chance: what the other nodes forward is decapsulated here.
		for _, a := range cfg.Engine.SecondChance.Peers {
			if err := f.prog.AddPeer(a); err != nil {
				return nil, fmt.Errorf("dataplane: %s: second chance peer %v: %w", f.name, a, err)
			}
		}
		srcs := append(slices.Clone(f.sources), cfg.SourceAddrs...)
		for _, a := range srcs {
			if err := f.prog.AddOwnedRange(a, d.portLo, d.portHi); err != nil {
				return nil, fmt.Errorf("dataplane: %s: source address %v: %w", f.name, a, err)
			}
			owned[a] = true
		}
	}
	if peers := cfg.Engine.SecondChance.Peers; len(peers) > 0 {
		d.log.Info("second chance on", "peers", peers)
	}
	var addrs []netip.Addr
	for a := range owned {
		addrs = append(addrs, a)
		if kernelOwned[a] {
			continue
		}
		for _, f := range d.ifs {
			if err := f.prog.AddNeighborAddr(a); err != nil {
				return nil, fmt.Errorf("dataplane: %s: neighbour address %v: %w", f.name, a, err)
			}
		}
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
	if cfg.ReservePorts {
		res, err := reservePorts(cfg.StateDir, reservedPorts(cfg), d.log)
		if err != nil {
			return nil, err
		}
		d.ports = res
		d.restore = append(d.restore, res.undo)
	}

	handoffSlot := 0
	for _, f := range d.ifs {
		d.hashClients = d.hashClients || f.link.Type() == "veth"
		handoffSlot = max(handoffSlot, f.frame, f.packet)
	}
	d.shards = make([]*Shard, shards)
	for i := range d.shards {
		efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("dataplane: eventfd: %w", err)
		}
		s := &Shard{
			id: i, dp: d, efd: efd,
			done: make(chan struct{}), ctl: make(chan func(*Shard), 256),
			descs: make([]xsk.Desc, 64), spinLimit: spin,
			inbox: make([]*handoff, shards), outbox: make([]*handoff, shards),
			socks: make([]*xsk.Socket, len(d.ifs)), queues: make([]int, len(d.ifs)),
			txIn: make([]*handoff, shards),
		}
		d.shards[i] = s
		for j, f := range d.ifs {
			s.queues[j] = -1
			if i >= len(f.queues) {
				continue
			}
			ic := cfg.Interfaces[j]
			xcfg := ic.XSK
			xcfg.FrameSize = f.frame
			xcfg.MaxPacket = f.packet
			sock, err := xsk.Open(f.link.Attrs().Index, f.queues[i], xcfg)
			if err != nil {
				return nil, f.openError(f.queues[i], err)
			}
			s.socks[j], s.queues[j] = sock, f.queues[i]
		}
	}
	for i, s := range d.shards {
		for j := range d.shards {
			if i != j {
				h := newHandoff(1024, handoffSlot)
				s.outbox[j] = h
				d.shards[j].inbox[i] = h
			}
		}
	}
	if cfg.Engine.Keys == nil && cfg.Engine.SYNCookies != stack.SYNCookiesNever {
		// The XDP program makes the engines' cookies: one set of keys for all.
		cfg.Engine.Keys = newKeys()
		d.cfg.Engine.Keys = cfg.Engine.Keys
	}
	for i, s := range d.shards {
		ecfg := cfg.Engine
		ecfg.Interfaces = nil
		for j, f := range d.ifs {
			var sink stack.Sink = s.socks[j]
			if s.socks[j] == nil {
				// No socket on this interface: send through the shard that has one.
				to := d.shards[i%len(f.queues)]
				h := to.txIn[i]
				if h == nil {
					h = newHandoff(1024, handoffSlot)
					to.txIn[i] = h
				}
				fs := &forwardSink{h: h, ifx: uint8(j), to: to, from: s}
				s.forwards = append(s.forwards, fs)
				sink = fs
			}
			ecfg.Interfaces = append(ecfg.Interfaces, stack.Interface{
				Name: f.name, MAC: f.mac, MTU: f.mtu, Sink: sink,
				Sources: f.sources, Virtual: f.virtual, Resolve: d.resolver(kernelOwned, j),
			})
		}
		ecfg.MAC, ecfg.MTU, ecfg.Sink = wire.MAC{}, 0, nil
		ecfg.Addresses = addrs
		ecfg.Rand = newRand()
		ecfg.EphemeralPorts = cfg.SourcePorts
		ecfg.MemoryLimit = cfg.MemoryLimit / int64(len(d.shards))
		if n := len(d.shards); n > 1 {
			id := i
			ecfg.PortFilter = func(p uint16) bool { return int(p)%n == id }
			if d.hashClients {
				ecfg.Flows = &clientFlowOwner{d: d, shard: id}
			}
		}
		if cfg.NewHandler != nil {
			ecfg.Handler = cfg.NewHandler(s)
			if dr, ok := ecfg.Handler.(Driver); ok {
				s.driver = dr
			}
		}
		if s.eng, err = stack.New(ecfg); err != nil {
			return nil, fmt.Errorf("dataplane: shard %d: %w", i, err)
		}
		for _, ap := range cfg.Listeners {
			el, err := s.eng.Listen(ap)
			if err != nil {
				return nil, fmt.Errorf("dataplane: shard %d: %w", i, err)
			}
			s.listeners = append(s.listeners, el)
		}
	}
	if err := d.loadKernelState(); err != nil {
		d.log.Warn("loading the kernel's neighbours and routes", "err", err)
	}
	// The sockets exist and the engines are ready: now steer traffic to them.
	for _, s := range d.shards {
		for j, sock := range s.socks {
			if sock == nil {
				continue
			}
			if err := d.ifs[j].prog.SetXSK(s.queues[j], sock.FD()); err != nil {
				return nil, fmt.Errorf("dataplane: %s queue %d: %w", d.ifs[j].name, s.queues[j], err)
			}
		}
	}
	if err := d.setupCookies(); err != nil {
		return nil, err
	}
	for j, f := range d.ifs {
		// ICMP for our flows (path MTU discovery) and echo to engine-owned
		// addresses go to the engine too; the kernel has no socket for them.
		if err := f.prog.SetICMPSteering(true); err != nil {
			return nil, fmt.Errorf("dataplane: %s: %w", f.name, err)
		}
		if err := f.prog.Attach(f.link.Attrs().Index, cfg.Interfaces[j].XDPMode); err != nil {
			return nil, fmt.Errorf("dataplane: %s: %w", f.name, err)
		}
	}
	d.probeCookieTX()
	d.watchEnd = make(chan struct{})
	end := d.watchEnd
	d.watchKernel()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.resolveLoop(end)
	}()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.watchChecksums(end)
	}()
	d.memLimit.Store(cfg.MemoryLimit)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.watchMemory(end)
	}()
	if d.cookies != nil {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.watchCookies(end)
		}()
	}
	for _, s := range d.shards {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			s.run()
		}()
	}
	for _, f := range d.ifs {
		zc := false
		if sk := d.shards[0].socks[f.index]; sk != nil {
			zc = sk.ZeroCopy()
		}
		d.log.Info("data plane up", "interface", f.name, "queues", f.queues, "shards", len(d.shards),
			"xdp_mode", f.prog.AttachedMode(), "zerocopy", zc, "virtual", f.virtual, "sources", f.sources,
			"mtu", f.mtu, "multi_buffer", f.packet > f.frame)
	}
	return d, nil
}

// openIface finds interface ic, its MAC, MTU, queues and addresses, and
// loads an XDP program for it (one per interface: each has its own XSK map).
func (d *Dataplane) openIface(i int, ic InterfaceConfig) (*Iface, error) {
	link, err := d.nl.LinkByName(ic.Name)
	if err != nil {
		return nil, fmt.Errorf("dataplane: interface %q: %w", ic.Name, err)
	}
	f := &Iface{index: i, name: ic.Name, link: link, virtual: virtualKinds[link.Type()]}
	if hw := link.Attrs().HardwareAddr; len(hw) == 6 {
		copy(f.mac[:], hw)
	} else {
		return nil, fmt.Errorf("dataplane: interface %q has no Ethernet address", ic.Name)
	}
	f.mtu = link.Attrs().MTU
	if d.cfg.Engine.MTU != 0 {
		f.mtu = d.cfg.Engine.MTU
	}
	if f.frame, f.packet, err = frameSizeFor(ic.Name, f.mtu, ic.XSK.FrameSize); err != nil {
		return nil, err
	}
	f.queues = ic.Queues
	if len(f.queues) == 0 {
		// From netlink, not sysfs: /sys shows the namespace that mounted it.
		nq := max(link.Attrs().NumRxQueues, 1)
		for q := 0; q < nq; q++ {
			f.queues = append(f.queues, q)
		}
	}
	if f.kernel, f.sources, err = linkAddrs(d.nl, link); err != nil {
		return nil, err
	}
	if f.prog, err = bpf.Load(); err != nil {
		return nil, fmt.Errorf("dataplane: %s: %w", ic.Name, err)
	}
	return f, nil
}

// AddListener starts terminating ap while the data plane runs: every
// interface's XDP program steers it, its port is reserved from the kernel,
// every shard's engine listens on it (owning its address). It returns the
// listeners, one per shard, in shard order.
func (d *Dataplane) AddListener(ap netip.AddrPort) ([]*stack.Listener, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.listening[ap] {
		return nil, fmt.Errorf("dataplane: listener %v: already steered", ap)
	}
	if d.ports != nil {
		if err := d.ports.add([][2]uint16{{ap.Port(), ap.Port()}}); err != nil {
			return nil, err
		}
	}
	for _, f := range d.ifs {
		if err := f.prog.AddListener(ap); err != nil {
			return nil, fmt.Errorf("dataplane: %s: listener %v: %w", f.name, ap, err)
		}
		if !d.kernelOwned[ap.Addr()] {
			if err := f.prog.AddNeighborAddr(ap.Addr()); err != nil {
				return nil, fmt.Errorf("dataplane: %s: neighbour address %v: %w", f.name, ap.Addr(), err)
			}
		}
	}
	d.listening[ap] = true
	out := make([]*stack.Listener, len(d.shards))
	var errs []error
	for i, s := range d.shards {
		s.Do(func(s *Shard) {
			el, err := s.eng.Listen(ap)
			if err != nil {
				errs = append(errs, fmt.Errorf("dataplane: shard %d: %w", s.id, err))
				return
			}
			s.listeners = append(s.listeners, el)
			out[i] = el
		})
	}
	return out, errors.Join(errs...)
}

// CloseListener stops accepting on ap on every shard: a new SYN is answered
// with RST, as by a host with no listener there. Connections already
// accepted go on, their segments still steered to the engine until
// RemoveListener.
func (d *Dataplane) CloseListener(ap netip.AddrPort) {
	for _, s := range d.shards {
		s.Do(func(s *Shard) {
			kept := s.listeners[:0]
			for _, el := range s.listeners {
				if el.Addr() == ap {
					el.Close()
					continue
				}
				kept = append(kept, el)
			}
			clear(s.listeners[len(kept):])
			s.listeners = kept
		})
	}
}

// RemoveListener stops steering ap to the engine and gives its port back to
// the kernel (unless the source ports or another listener need it). Call it
// after CloseListener, once the connections it accepted have ended: from
// here on their segments reach the kernel.
func (d *Dataplane) RemoveListener(ap netip.AddrPort) error {
	d.CloseListener(ap)
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.listening[ap] {
		return nil
	}
	delete(d.listening, ap)
	var errs []error
	stillOwned := false
	for other := range d.listening {
		stillOwned = stillOwned || other.Addr() == ap.Addr()
	}
	for _, f := range d.ifs {
		if err := f.prog.RemoveListener(ap); err != nil {
			errs = append(errs, fmt.Errorf("dataplane: %s: %w", f.name, err))
		}
		if !stillOwned && !d.kernelOwned[ap.Addr()] && !slices.Contains(d.cfg.SourceAddrs, ap.Addr()) {
			if err := f.prog.RemoveNeighborAddr(ap.Addr()); err != nil {
				errs = append(errs, fmt.Errorf("dataplane: %s: %w", f.name, err))
			}
		}
	}
	if d.ports != nil {
		keep := [][2]uint16{d.cfg.SourcePorts}
		for other := range d.listening {
			keep = append(keep, [2]uint16{other.Port(), other.Port()})
		}
		if err := d.ports.release([][2]uint16{{ap.Port(), ap.Port()}}, keep); err != nil {
			errs = append(errs, fmt.Errorf("dataplane: releasing port %d: %w", ap.Port(), err))
		}
	}
	return errors.Join(errs...)
}

// Stop stops the shards, detaches the programs and releases everything.
func (d *Dataplane) Stop() error {
	var err error
	d.stopOnce.Do(func() {
		for _, s := range d.shards {
			if s != nil {
				s.stopping.Store(true)
				s.sleeping.Store(true) // force the eventfd write
				s.wake()
			}
		}
		if d.watchEnd != nil {
			close(d.watchEnd)
			d.watchEnd = nil
		}
		d.wg.Wait()
		err = d.teardown()
	})
	return err
}

func (d *Dataplane) teardown() error {
	var errs []error
	if d.watchEnd != nil {
		close(d.watchEnd)
		d.watchEnd = nil
	}
	for _, f := range d.ifs {
		if f.prog != nil {
			errs = append(errs, f.prog.Close())
			f.prog = nil
		}
	}
	if d.nl != nil {
		d.nl.Close()
	}
	if d.netns.IsOpen() {
		d.netns.Close()
	}
	for _, s := range d.shards {
		if s == nil {
			continue
		}
		for _, sock := range s.socks {
			if sock != nil {
				errs = append(errs, sock.Close())
			}
		}
		if s.efd > 0 {
			unix.Close(s.efd)
		}
	}
	for i := len(d.restore) - 1; i >= 0; i-- {
		d.restore[i]()
	}
	d.restore = nil
	return errors.Join(errs...)
}

// owner is the shard that owns frame's flow. Return traffic of backend legs
// (TCP to a source port) belongs to the shard that chose the port (ports are
// split by port mod shards: the engines' PortFilter); everything else stays
// where RSS put it, which keeps every packet of a client flow on one queue.
// Where the queue of a flow can change mid-connection (veth: hashClients), a
// client segment goes to the shard whose engine holds its flow
// (clientFlows), so one that lands on another queue is not answered with a
// RST; a flow nobody holds (a new SYN, a cookie's ACK) stays where it
// landed. (Until this table, client flows went by a hash of the client's
// address: on a 2-queue veth half of their segments crossed shards; now
// only those whose sender re-randomised its hash do.)
func (d *Dataplane) owner(frame []byte, self int) int {
	n := len(d.shards)
	if n == 1 {
		return self
	}
	src, dst, tcp, ok := tcpLocate(frame)
	if !ok {
		return self
	}
	port := binary.BigEndian.Uint16(tcp[2:])
	if port < d.portLo || port > d.portHi {
		if d.hashClients {
			if o, ok := d.clientFlows.Load(clientFlowOf(src, dst, tcp)); ok {
				return o.(int)
			}
		}
		return self
	}
	return int(port) % n
}

// clientFlowKey is a client flow as the shared table keys it: addresses
// in their 16-byte form (IPv4 mapped), no pointers.
type clientFlowKey struct {
	remote, local         [16]byte
	remotePort, localPort uint16
}

// clientFlowOf is the flow of a received TCP frame, from the parts
// tcpLocate found.
func clientFlowOf(src, dst, tcp []byte) (k clientFlowKey) {
	if len(src) == 4 {
		k.remote[10], k.remote[11], k.local[10], k.local[11] = 0xff, 0xff, 0xff, 0xff
		copy(k.remote[12:], src)
		copy(k.local[12:], dst)
	} else {
		copy(k.remote[:], src)
		copy(k.local[:], dst)
	}
	k.remotePort, k.localPort = binary.BigEndian.Uint16(tcp[0:]), binary.BigEndian.Uint16(tcp[2:])
	return k
}

// clientFlowOwner is a shard engine's FlowObserver: it records the client
// flows (not the backend legs, whose source port names their shard) the
// engine holds in the data plane's table.
type clientFlowOwner struct {
	d     *Dataplane
	shard int
}

func (o *clientFlowOwner) key(k stack.FlowKey) (clientFlowKey, bool) {
	if k.LocalPort >= o.d.portLo && k.LocalPort <= o.d.portHi {
		return clientFlowKey{}, false
	}
	return clientFlowKey{remote: k.RemoteAddr.As16(), local: k.LocalAddr.As16(), remotePort: k.RemotePort, localPort: k.LocalPort}, true
}

func (o *clientFlowOwner) FlowHeld(k stack.FlowKey) {
	if ck, ok := o.key(k); ok {
		o.d.clientFlows.Store(ck, o.shard)
	}
}

func (o *clientFlowOwner) FlowReleased(k stack.FlowKey) {
	if ck, ok := o.key(k); ok {
		o.d.clientFlows.CompareAndDelete(ck, o.shard)
	}
}

// maxFrameOverhead is what a frame holds besides the IP packet: Ethernet
// and two VLAN tags (the XDP program accepts QinQ).
const maxFrameOverhead = wire.EthernetHeaderLen + 8

// tcpLocate finds, without a full parse, the source and destination
// addresses and the TCP header of an Ethernet frame (IPv4 or IPv6, after
// VLAN tags); the engine checks the rest.
func tcpLocate(f []byte) (src, dst, tcp []byte, ok bool) {
	off := 12
	for len(f) >= off+2 {
		et := binary.BigEndian.Uint16(f[off:])
		off += 2
		switch et {
		case wire.EtherTypeVLAN, wire.EtherTypeQinQ:
			off += 2
			continue
		case wire.EtherTypeIPv4:
			if len(f) < off+20 || f[off+9] != wire.ProtoTCP {
				return nil, nil, nil, false
			}
			src, dst = f[off+12:off+16], f[off+16:off+20]
			off += int(f[off]&0x0f) * 4
		case wire.EtherTypeIPv6:
			if len(f) < off+40 || f[off+6] != wire.ProtoTCP {
				return nil, nil, nil, false
			}
			src, dst = f[off+8:off+24], f[off+24:off+40]
			off += 40
		default:
			return nil, nil, nil, false
		}
		if len(f) < off+4 {
			return nil, nil, nil, false
		}
		return src, dst, f[off:], true
	}
	return nil, nil, nil, false
}

// newRand is a ChaCha8 generator seeded from the OS CSPRNG: ISN and cookie
// secrets must not be predictable.
func newRand() stack.Rand {
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // the OS has no entropy source: nothing sensible to do
	}
	return rand.New(rand.NewChaCha8(seed))
}

// newKeys draws the engines' keys (stack.Keys) for a run without state_dir.
func newKeys() *stack.Keys {
	r := newRand()
	k := &stack.Keys{}
	k.ISN = [2]uint64{r.Uint64(), r.Uint64()}
	k.Timestamp = [2]uint64{r.Uint64(), r.Uint64()}
	k.Cookie = [2]uint64{r.Uint64(), r.Uint64()}
	return k
}

// NewRand is newRand for the packages above (tests building engines).
func NewRand() stack.Rand { return newRand() }

// linkAddrs are the kernel's addresses on l, and the ones backend legs
// leaving by l are dialed from: its first IPv4 address and its first global
// (or unique local) IPv6 address.
func linkAddrs(nl *netlink.Handle, l netlink.Link) (map[netip.Addr]bool, []netip.Addr, error) {
	list, err := nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, nil, fmt.Errorf("dataplane: addresses of %s: %w", l.Attrs().Name, err)
	}
	m := map[netip.Addr]bool{}
	var v4, v6 netip.Addr
	for _, a := range list {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		m[ip] = true
		if ip.Is4() && !v4.IsValid() {
			v4 = ip
		}
		if ip.Is6() && ip.IsGlobalUnicast() && !v6.IsValid() {
			v6 = ip
		}
	}
	var srcs []netip.Addr
	for _, a := range []netip.Addr{v4, v6} {
		if a.IsValid() {
			srcs = append(srcs, a)
		}
	}
	return m, srcs, nil
}

// Detached builds a data plane without XDP programs or sockets whose shards
// (one per engine) only run the functions handed to Do and Post, on
// goroutines of their own: for tests of the code above the data plane (the
// admin server, metrics) with engines the test drives itself. ifaces names
// the interfaces; queues[i] are shard i's queue on each of them (-1: none).
// A nil engine makes a shard that never answers (a stuck loop). Stop ends
// the goroutines.
func Detached(ifaces []string, queues [][]int, engines []*stack.Engine) *Dataplane {
	d := &Dataplane{start: time.Now(), bootBase: bootTime(), log: slog.Default(), byIfindex: map[int]*Iface{}}
	for i, name := range ifaces {
		d.ifs = append(d.ifs, &Iface{index: i, name: name})
	}
	for i, e := range engines {
		s := &Shard{id: i, dp: d, eng: e, ctl: make(chan func(*Shard), 16), done: make(chan struct{}),
			socks: make([]*xsk.Socket, len(ifaces)), queues: queues[i]}
		d.shards = append(d.shards, s)
	}
	d.watchEnd = make(chan struct{})
	for _, s := range d.shards {
		end := d.watchEnd
		if s.eng == nil {
			go func() { <-end; close(s.done) }()
			continue
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			defer close(s.done)
			for {
				select {
				case fn := <-s.ctl:
					fn(s)
				case <-end:
					return
				}
			}
		}()
	}
	return d
}

// Engines returns the shards' engines, in shard order.
func (d *Dataplane) Engines() []*stack.Engine {
	out := make([]*stack.Engine, len(d.shards))
	for i, s := range d.shards {
		out[i] = s.eng
	}
	return out
}
