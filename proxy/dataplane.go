package proxy

import (
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/bpf"
	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/stack/wire"
	"github.com/xdproxy/xdproxy/xsk"
)

// DataplaneConfig describes one interface's data plane.
type DataplaneConfig struct {
	Interface string
	Queues    []int    // nil: every RX queue of the interface
	XDPMode   bpf.Mode // auto: native where the driver supports it, else generic
	XSK       xsk.Config

	// Listeners are the address:ports the engine terminates (every shard
	// listens on each).
	Listeners []netip.AddrPort
	// SourceAddrs are the addresses backend legs are dialed from; the
	// engine owns SourcePorts on them and the XDP program steers their
	// return traffic.
	SourceAddrs []netip.Addr
	SourcePorts [2]uint16

	// Engine is the template for each shard's engine; MAC, Addresses, Sink,
	// Handler, Rand, EphemeralPorts and PortFilter are filled in per shard,
	// and MTU (when 0) from the interface.
	Engine stack.Config

	// NewHandler returns the application for a shard (called on Start, before
	// the shard runs).
	NewHandler func(s *Shard) stack.Handler

	// SpinLimit is how long an idle shard keeps busy-polling before it
	// sleeps in poll (default 5µs, config interfaces[].busy_poll). Measured
	// on 2 cores (make bench, xdproxy and HAProxy only, one round): against
	// 50µs it lowered p50 at 2k/10k/20k req/s from 206/218/380 to
	// 142/141/173 µs and proxy CPU per request from 231/92/46 to 135/55/34
	// µs — spinning steals the core the rest of the path needs. On
	// dedicated cores a longer spin catches back-to-back requests.
	SpinLimit time.Duration

	// ReservePorts reserves SourcePorts and the listeners' ports from the
	// kernel's ephemeral range (net.ipv4.ip_local_reserved_ports) while the
	// data plane runs: see reservedPorts.
	ReservePorts bool

	Logger *slog.Logger
}

// Dataplane is the XDP program on one interface, one AF_XDP socket and
// shard per queue, and the glue between them.
type Dataplane struct {
	cfg      DataplaneConfig
	link     netlink.Link
	prog     *bpf.Program
	shards   []*Shard
	start    time.Time
	portLo   uint16
	portHi   uint16
	wg       sync.WaitGroup
	restore  []func() // undo steps for system settings, run in reverse
	neighEnd chan struct{}
	netns    netns.NsHandle // the namespace the data plane was started in
	// hashClients: the receive queue of a client flow is not stable (veth:
	// the queue is the sender's skb->hash, which its TCP re-randomises on
	// an RTO or duplicate data), so client flows are owned by a hash of
	// their address instead of by the queue they happen to arrive on.
	hashClients bool
	log         *slog.Logger
	stopOnce    sync.Once
}

func (d *Dataplane) now() stack.Time { return stack.Time(time.Since(d.start)) + 1 }

// Shards returns the shards, one per queue.
func (d *Dataplane) Shards() []*Shard { return d.shards }

// Program returns the XDP program (for its counters).
func (d *Dataplane) Program() *bpf.Program { return d.prog }

// StartDataplane attaches the XDP program, opens a socket per queue and
// starts the shards. On error everything already set up is undone.
func StartDataplane(cfg DataplaneConfig) (_ *Dataplane, err error) {
	switch {
	case cfg.SpinLimit == 0:
		cfg.SpinLimit = 5 * time.Microsecond
	case cfg.SpinLimit < 0: // asked for none: sleep as soon as there is no work
		cfg.SpinLimit = 0
	}
	if cfg.SourcePorts == [2]uint16{} {
		cfg.SourcePorts = [2]uint16{20000, 59999}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Dataplane{cfg: cfg, start: time.Now(), portLo: cfg.SourcePorts[0], portHi: cfg.SourcePorts[1], log: cfg.Logger}
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
	d.link, err = netlink.LinkByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("dataplane: interface %q: %w", cfg.Interface, err)
	}
	ifindex := d.link.Attrs().Index
	d.hashClients = d.link.Type() == "veth"
	var mac wire.MAC
	if hw := d.link.Attrs().HardwareAddr; len(hw) == 6 {
		copy(mac[:], hw)
	} else {
		return nil, fmt.Errorf("dataplane: interface %q has no Ethernet address", cfg.Interface)
	}
	if cfg.Engine.MTU == 0 {
		cfg.Engine.MTU = d.link.Attrs().MTU
	}
	if cfg.XSK.FrameSize, err = frameSizeFor(cfg.Interface, cfg.Engine.MTU, cfg.XSK.FrameSize); err != nil {
		return nil, err
	}
	queues := cfg.Queues
	if len(queues) == 0 {
		// From netlink, not sysfs: /sys shows the namespace that mounted it.
		nq := d.link.Attrs().NumRxQueues
		if nq <= 0 {
			nq = 1
		}
		for q := 0; q < nq; q++ {
			queues = append(queues, q)
		}
	}
	kernelAddrs, err := linkAddrs(d.link)
	if err != nil {
		return nil, err
	}

	if d.prog, err = bpf.Load(); err != nil {
		return nil, fmt.Errorf("dataplane: %w", err)
	}
	owned := map[netip.Addr]bool{}
	for _, ap := range cfg.Listeners {
		if err := d.prog.AddListener(ap); err != nil {
			return nil, fmt.Errorf("dataplane: listener %v: %w", ap, err)
		}
		owned[ap.Addr()] = true
	}
	for _, a := range cfg.SourceAddrs {
		if err := d.prog.AddOwnedRange(a, d.portLo, d.portHi); err != nil {
			return nil, fmt.Errorf("dataplane: source address %v: %w", a, err)
		}
		owned[a] = true
	}
	var addrs []netip.Addr
	for a := range owned {
		addrs = append(addrs, a)
		if !kernelAddrs[a] {
			// The kernel will not answer ARP/NDP for it: the engine does.
			if err := d.prog.AddNeighborAddr(a); err != nil {
				return nil, fmt.Errorf("dataplane: neighbour address %v: %w", a, err)
			}
		}
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
	if cfg.ReservePorts {
		undo, err := reservePorts(reservedPorts(cfg))
		if err != nil {
			return nil, err
		}
		d.addRestore(undo)
	}
	// The engine's own ARP/NDP requests go out from addresses the kernel
	// may own; the replies then reach the kernel, not the engine. Let the
	// kernel learn from them (unsolicited replies are ignored by default),
	// and the neighbour watcher passes the entry on to the engines.
	for _, sc := range []struct{ path, val string }{
		{"/proc/sys/net/ipv4/conf/" + cfg.Interface + "/arp_accept", "1"},
		{"/proc/sys/net/ipv6/conf/" + cfg.Interface + "/accept_untracked_na", "1"},
	} {
		if undo, err := setSysctl(sc.path, sc.val); err != nil {
			d.log.Warn("cannot let the kernel learn neighbours from the engine's requests", "sysctl", sc.path, "err", err)
		} else {
			d.addRestore(undo)
		}
	}

	n := len(queues)
	d.shards = make([]*Shard, n)
	for i, q := range queues {
		sock, err := xsk.Open(ifindex, q, cfg.XSK)
		if err != nil {
			return nil, fmt.Errorf("dataplane: %s queue %d: %w", cfg.Interface, q, err)
		}
		efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			sock.Close()
			return nil, fmt.Errorf("dataplane: eventfd: %w", err)
		}
		s := &Shard{
			id: i, queue: q, dp: d, sock: sock, efd: efd,
			done: make(chan struct{}), ctl: make(chan func(*Shard), 256),
			descs: make([]xsk.Desc, 64), spinLimit: cfg.SpinLimit,
			inbox: make([]*handoff, n), outbox: make([]*handoff, n),
		}
		d.shards[i] = s
	}
	for i, s := range d.shards {
		for j := range d.shards {
			if i != j {
				h := newHandoff(1024, cfg.XSK.FrameSize)
				s.outbox[j] = h
				d.shards[j].inbox[i] = h
			}
		}
		ecfg := cfg.Engine
		ecfg.MAC = mac
		ecfg.Addresses = addrs
		ecfg.Sink = s.sock
		ecfg.Rand = newRand()
		ecfg.EphemeralPorts = cfg.SourcePorts
		if n > 1 {
			id := i
			ecfg.PortFilter = func(p uint16) bool { return int(p)%n == id }
		}
		if cfg.NewHandler != nil {
			ecfg.Handler = cfg.NewHandler(s)
			if d, ok := ecfg.Handler.(Driver); ok {
				s.driver = d
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
		if err := loadNeighbors(d.link, s.eng); err != nil {
			d.log.Warn("loading the kernel's neighbours and routes", "interface", cfg.Interface, "err", err)
		}
	}
	// The sockets exist and the engines are ready: now steer traffic to them.
	for _, s := range d.shards {
		if err := d.prog.SetXSK(s.queue, s.sock.FD()); err != nil {
			return nil, fmt.Errorf("dataplane: queue %d: %w", s.queue, err)
		}
	}
	// ICMP for our flows (path MTU discovery) and echo to engine-owned
	// addresses go to the engine too; the kernel has no socket for them.
	if err := d.prog.SetICMPSteering(true); err != nil {
		return nil, fmt.Errorf("dataplane: %w", err)
	}
	if err := d.prog.Attach(ifindex, cfg.XDPMode); err != nil {
		return nil, fmt.Errorf("dataplane: %w", err)
	}
	d.watchNeighbors()
	for _, s := range d.shards {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			s.run()
		}()
	}
	d.log.Info("data plane up", "interface", cfg.Interface, "queues", queues, "xdp_mode", d.prog.AttachedMode(), "zerocopy", d.shards[0].sock.ZeroCopy())
	return d, nil
}

// Stop stops the shards, detaches the program and releases everything.
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
		d.wg.Wait()
		err = d.teardown()
	})
	return err
}

func (d *Dataplane) teardown() error {
	var errs []error
	if d.neighEnd != nil {
		close(d.neighEnd)
		d.neighEnd = nil
	}
	if d.prog != nil {
		errs = append(errs, d.prog.Close())
		d.prog = nil
	}
	if d.netns.IsOpen() {
		d.netns.Close()
	}
	for _, s := range d.shards {
		if s == nil {
			continue
		}
		if s.sock != nil {
			errs = append(errs, s.sock.Close())
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
// Where the queue of a flow can change mid-connection (veth: hashClients),
// client flows belong to the shard a hash of the client's address picks;
// otherwise a segment landing on another shard would be answered with a RST.
func (d *Dataplane) owner(frame []byte, self int) int {
	n := len(d.shards)
	if n == 1 {
		return self
	}
	port, ok := tcpDstPort(frame)
	if !ok {
		return self
	}
	if port < d.portLo || port > d.portHi {
		if d.hashClients {
			if h, ok := tcpSourceHash(frame); ok {
				return int(h % uint32(n))
			}
		}
		return self
	}
	return int(port) % n
}

// maxFrameOverhead is what a frame holds besides the IP packet: Ethernet
// and two VLAN tags (the XDP program accepts QinQ).
const maxFrameOverhead = wire.EthernetHeaderLen + 8

// frameSizeFor picks the UMEM frame size for an MTU: every frame is one
// buffer (no multi-buffer AF_XDP), so the largest frame the link can carry
// must fit — 2048-byte frames up to an MTU of 2026, 4096-byte beyond. A
// configured size that is too small, or an MTU over what 4096 holds, is an
// error naming the interface, never frames dropped at random.
func frameSizeFor(ifname string, mtu, frameSize int) (int, error) {
	need := mtu + maxFrameOverhead
	switch {
	case need > 4096:
		return 0, fmt.Errorf("dataplane: interface %q: MTU %d does not fit one 4096-byte AF_XDP frame (at most %d; xdproxy does not use multi-buffer frames)", ifname, mtu, 4096-maxFrameOverhead)
	case frameSize == 0 && need > 2048:
		return 4096, nil
	case frameSize == 0:
		return 2048, nil
	case need > frameSize:
		return 0, fmt.Errorf("dataplane: interface %q: MTU %d needs frames of 4096 bytes, not %d", ifname, mtu, frameSize)
	}
	return frameSize, nil
}

// tcpLocate finds, without a full parse, the source address and the TCP
// header of an Ethernet frame (IPv4 or IPv6, after VLAN tags); the engine
// checks the rest.
func tcpLocate(f []byte) (src []byte, tcp []byte, ok bool) {
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
				return nil, nil, false
			}
			src = f[off+12 : off+16]
			off += int(f[off]&0x0f) * 4
		case wire.EtherTypeIPv6:
			if len(f) < off+40 || f[off+6] != wire.ProtoTCP {
				return nil, nil, false
			}
			src = f[off+8 : off+24]
			off += 40
		default:
			return nil, nil, false
		}
		if len(f) < off+4 {
			return nil, nil, false
		}
		return src, f[off:], true
	}
	return nil, nil, false
}

// tcpDstPort reads the TCP destination port of a frame.
func tcpDstPort(f []byte) (uint16, bool) {
	_, tcp, ok := tcpLocate(f)
	if !ok {
		return 0, false
	}
	return binary.BigEndian.Uint16(tcp[2:]), true
}

// tcpSourceHash hashes the source address and port of a TCP frame (FNV-1a,
// then murmur3's fmix32: FNV's low bits are weak, mod 2 a mere parity).
func tcpSourceHash(f []byte) (uint32, bool) {
	src, tcp, ok := tcpLocate(f)
	if !ok {
		return 0, false
	}
	h := uint32(2166136261)
	for _, b := range src {
		h = (h ^ uint32(b)) * 16777619
	}
	h = (h ^ uint32(tcp[0])) * 16777619
	h = (h ^ uint32(tcp[1])) * 16777619
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h, true
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

func linkAddrs(l netlink.Link) (map[netip.Addr]bool, error) {
	list, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("dataplane: addresses of %s: %w", l.Attrs().Name, err)
	}
	m := map[netip.Addr]bool{}
	for _, a := range list {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			m[ip.Unmap()] = true
		}
	}
	return m, nil
}

// loadNeighbors gives the engine the kernel's neighbour entries and routes
// for the interface.
func loadNeighbors(l netlink.Link, e *stack.Engine) error {
	neighs, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, n := range neighs {
		setNeighbor(e, n)
	}
	routes, err := netlink.RouteList(l, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, r := range routes {
		addRoute(e, r)
	}
	return nil
}

func setNeighbor(e *stack.Engine, n netlink.Neigh) {
	if len(n.HardwareAddr) != 6 || n.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE|netlink.NUD_NOARP) != 0 {
		return
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return
	}
	var mac wire.MAC
	copy(mac[:], n.HardwareAddr)
	e.SetNeighbor(ip.Unmap(), mac)
}

func addRoute(e *stack.Engine, r netlink.Route) {
	if r.Gw == nil {
		return
	}
	gw, ok := netip.AddrFromSlice(r.Gw)
	if !ok {
		return
	}
	gw = gw.Unmap()
	var dst netip.Prefix
	if r.Dst == nil {
		dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if gw.Is6() {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
	} else {
		ip, _ := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		dst = netip.PrefixFrom(ip.Unmap(), ones)
	}
	e.AddRoute(dst, gw)
}

// watchNeighbors forwards the kernel's neighbour updates to every shard.
func (d *Dataplane) watchNeighbors() {
	ch := make(chan netlink.NeighUpdate, 256)
	d.neighEnd = make(chan struct{})
	if err := netlink.NeighSubscribe(ch, d.neighEnd); err != nil {
		d.log.Warn("no neighbour updates from the kernel", "err", err)
		return
	}
	ifindex := d.link.Attrs().Index
	go func() {
		for u := range ch {
			if u.LinkIndex != ifindex || u.Type != unix.RTM_NEWNEIGH {
				continue
			}
			n := u.Neigh
			for _, s := range d.shards {
				s.Post(func(s *Shard) { setNeighbor(s.eng, n) })
			}
		}
	}()
}

func (d *Dataplane) addRestore(fn func()) { d.restore = append(d.restore, fn) }

// setSysctl writes val to a /proc/sys file and returns the undo.
func setSysctl(path, val string) (func(), error) {
	old, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(val), 0o644); err != nil {
		return nil, err
	}
	return func() { os.WriteFile(path, old, 0o644) }, nil
}

// reservedPorts are the local ports whose return traffic the XDP program
// steers to the engine, as sorted, disjoint ranges: the engine's source
// ports and every listener's port. The program decides by destination
// address:port alone (for a listener on the unspecified address, by port),
// so a kernel socket that autobinds one of them — a dial: kernel backend
// leg, a kernel health check — loses its replies to the engine: with a
// listener on 10.10.1.1:7002, a leg from 10.10.1.1:7002 never sees the
// backend's SYN-ACK, and its client is reset at connect_timeout.
func reservedPorts(cfg DataplaneConfig) [][2]uint16 {
	rs := [][2]uint16{cfg.SourcePorts}
	for _, ap := range cfg.Listeners {
		rs = append(rs, [2]uint16{ap.Port(), ap.Port()})
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i][0] < rs[j][0] })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if int(r[0]) <= int(last[1])+1 {
			last[1] = max(last[1], r[1])
		} else {
			out = append(out, r)
		}
	}
	return out
}

// portList formats ranges as ip_local_reserved_ports takes them: "7000-7004,20000-59999".
func portList(rs [][2]uint16) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(',')
		}
		if r[0] == r[1] {
			fmt.Fprintf(&b, "%d", r[0])
		} else {
			fmt.Fprintf(&b, "%d-%d", r[0], r[1])
		}
	}
	return b.String()
}

// reservePorts adds rs to net.ipv4.ip_local_reserved_ports (which also
// covers IPv6), so kernel sockets never pick a port whose return traffic XDP
// would steer to the engine; the returned func restores the old value.
func reservePorts(rs [][2]uint16) (func(), error) {
	const path = "/proc/sys/net/ipv4/ip_local_reserved_ports"
	old, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dataplane: reserve ports: %w", err)
	}
	cur := strings.TrimSpace(string(old))
	ours := portList(rs)
	val := ours
	if cur != "" {
		val = cur + "," + ours
	}
	if err := os.WriteFile(path, []byte(val), 0o644); err != nil {
		return nil, fmt.Errorf("dataplane: reserve ports %s: %w", ours, err)
	}
	return func() { os.WriteFile(path, []byte(cur+"\n"), 0o644) }, nil
}
