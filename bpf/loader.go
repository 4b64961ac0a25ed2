package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Mode says how the program is attached to an interface.
type Mode int

const (
	// ModeAuto tries native (driver) mode and falls back to generic.
	ModeAuto Mode = iota
	// ModeNative runs the program in the driver, before any skb exists.
	ModeNative
	// ModeGeneric runs it on the skb path: slower, but on any device.
	ModeGeneric
)

func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeNative:
		return "native"
	case ModeGeneric:
		return "generic"
	default:
		return fmt.Sprintf("Mode(%d)", int(m))
	}
}

// MaxQueues is the number of XSK slots: NIC queues 0 to MaxQueues-1 can be
// steered; packets from higher queues are counted as redirect failures.
const MaxQueues = 64

// programPrefix starts the name of every XDP program xdproxy has attached,
// in this version or an older one; Attach replaces only programs so named.
const programPrefix = "xdproxy"

// Settings bits (xdproxy.h).
const (
	settingEnabled  = 1 << 0
	settingWildcard = 1 << 1
	settingICMP     = 1 << 2
	settingCookies  = 1 << 3

	settingCookieLearn = 1 << 4
	settingSecond      = 1 << 5 // SETTING_SECOND_CHANCE
)

// xdpAttachedMulti is IFLA_XDP_ATTACHED's value for driver and offload
// programs at once (linux/if_link.h); the netlink package lacks it.
const xdpAttachedMulti = 4

var (
	// ErrForeignProgram is returned by Attach when the interface already
	// runs an XDP program that is not xdproxy's: it is left in place.
	ErrForeignProgram = errors.New("interface runs an XDP program that is not xdproxy's")
	// ErrAttached is returned by Attach on a Program already attached.
	ErrAttached = errors.New("program already attached")
	// ErrClosed is returned by the methods of a closed Program.
	ErrClosed = errors.New("program closed")
)

// Program is the loaded XDP program and its maps. Its methods are safe for
// concurrent use; none of them is meant for a per-packet path.
type Program struct {
	mu        sync.Mutex
	objs      xdpObjects
	closed    bool
	link      link.Link
	ifindex   int
	mode      Mode
	flags     uint32
	wildcards map[xdpListenerKey]struct{}
	peers     int // entries in the peers map: SETTING_SECOND_CHANCE while > 0
}

// Load loads the program and creates its maps, empty, with steering enabled.
// It attaches nothing.
func Load() (*Program, error) {
	// A no-op since Linux 5.11, where BPF memory is charged to the cgroup.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("load xdp program: %w", err)
	}
	p := &Program{wildcards: make(map[xdpListenerKey]struct{})}
	if err := loadXdpObjects(&p.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			// The whole log, not the last line that %v shows.
			return nil, fmt.Errorf("load xdp program: %w\n%+v", err, ve)
		}
		return nil, fmt.Errorf("load xdp program: %w", err)
	}
	p.flags = settingEnabled
	if err := p.writeSettings(); err != nil {
		p.objs.Close()
		return nil, fmt.Errorf("load xdp program: %w", err)
	}
	return p, nil
}

// Attach attaches the program to the interface through a BPF link, which the
// kernel removes when the process exits. An xdproxy program already on the
// interface (a link of another Program, or a netlink-attached program left
// by an older or killed run) is detached first, so programs never stack; a
// program of anyone else makes Attach fail with ErrForeignProgram. Between
// the two steps the interface briefly runs no program: its packets go to
// the kernel.
func (p *Program) Attach(ifindex int, mode Mode) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	wrap := func(err error) error {
		return fmt.Errorf("attach xdp to ifindex %d (%s): %w", ifindex, mode, err)
	}
	switch {
	case p.closed:
		return wrap(ErrClosed)
	case p.link != nil:
		return wrap(fmt.Errorf("%w to ifindex %d", ErrAttached, p.ifindex))
	case ifindex <= 0:
		return wrap(errors.New("invalid interface index"))
	case mode != ModeAuto && mode != ModeNative && mode != ModeGeneric:
		return wrap(errors.New("invalid mode"))
	}

	if err := removeStale(ifindex); err != nil {
		return wrap(err)
	}

	attach := func(flags link.XDPAttachFlags) (link.Link, error) {
		return link.AttachXDP(link.XDPOptions{
			Program:   p.objs.XdproxySteer,
			Interface: ifindex,
			Flags:     flags,
		})
	}
	var (
		l   link.Link
		err error
		got = mode
	)
	switch mode {
	case ModeNative:
		l, err = attach(link.XDPDriverMode)
	case ModeGeneric:
		l, err = attach(link.XDPGenericMode)
	case ModeAuto:
		got = ModeNative
		l, err = attach(link.XDPDriverMode)
		if err != nil {
			nativeErr := err
			got = ModeGeneric
			l, err = attach(link.XDPGenericMode)
			if err != nil {
				err = fmt.Errorf("native: %w; generic: %w", nativeErr, err)
			}
		}
	}
	if err != nil {
		return wrap(err)
	}
	p.link, p.ifindex, p.mode = l, ifindex, got
	return nil
}

// AttachedMode returns the mode the program runs in: ModeNative or
// ModeGeneric, or ModeAuto while it is not attached.
func (p *Program) AttachedMode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.link == nil {
		return ModeAuto
	}
	return p.mode
}

// Ifindex returns the interface the program is attached to, or 0.
func (p *Program) Ifindex() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.link == nil {
		return 0
	}
	return p.ifindex
}

// Detach removes the program from its interface; without an attachment it
// does nothing. If another Program has since replaced this one, Detach
// leaves that one in place.
func (p *Program) Detach() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.detachLocked()
}

func (p *Program) detachLocked() error {
	if p.link == nil {
		return nil
	}
	l, ifindex := p.link, p.ifindex
	p.link, p.ifindex, p.mode = nil, 0, ModeAuto
	// Closing the last reference detaches too; LINK_DETACH also covers a
	// reference someone else took by ID.
	err := l.Detach()
	if errors.Is(err, link.ErrNotSupported) {
		err = nil
	}
	if cerr := l.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("detach xdp from ifindex %d: %w", ifindex, err)
	}
	return nil
}

// Close detaches the program if it is attached and releases the program and
// its maps. Calling it again does nothing.
func (p *Program) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	err := p.detachLocked()
	if cerr := p.objs.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close xdp objects: %w", cerr))
	}
	return err
}

// SetEnabled turns steering on or off. While off the program passes every
// packet to the kernel (counted as PassDisabled). Load turns it on.
func (p *Program) SetEnabled(on bool) error {
	return p.setFlag("set xdp steering", settingEnabled, on)
}

// SetICMPSteering turns ICMP steering on or off (off after Load). When on,
// ICMP and ICMPv6 echo requests to a neighbour address, and ICMP errors
// (destination unreachable, including fragmentation needed; packet too big;
// time exceeded; parameter problem) that quote a TCP segment sent from a
// listener address:port or an owned port, are steered too (RedirectICMP):
// the engine's path MTU discovery needs them. When off they go to the
// kernel, which has no socket for those flows.
func (p *Program) SetICMPSteering(on bool) error {
	return p.setFlag("set xdp icmp steering", settingICMP, on)
}

func (p *Program) setFlag(op string, bit uint32, on bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("%s: %w", op, ErrClosed)
	}
	old := p.flags
	if on {
		p.flags |= bit
	} else {
		p.flags &^= bit
	}
	if err := p.writeSettings(); err != nil {
		p.flags = old
		return fmt.Errorf("%s to %t: %w", op, on, err)
	}
	return nil
}

func (p *Program) writeSettings() error {
	s := xdpSteerSettings{Flags: p.flags}
	if err := p.objs.Settings.Update(uint32(0), &s, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	return nil
}

// AddListener steers TCP to ap: the client legs. An unspecified address
// (0.0.0.0 or ::) matches every destination address of its family.
func (p *Program) AddListener(ap netip.AddrPort) error {
	key, err := listenerKey(ap)
	if err != nil {
		return fmt.Errorf("add listener %s: %w", ap, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("add listener %s: %w", ap, ErrClosed)
	}
	if err := p.objs.Listeners.Update(&key, uint32(0), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("add listener %s: %w", ap, mapFull(err, "listeners"))
	}
	if ap.Addr().IsUnspecified() {
		p.wildcards[key] = struct{}{}
		return p.syncWildcard("add listener", ap)
	}
	return nil
}

// RemoveListener stops steering TCP to ap. It fails, wrapping
// ebpf.ErrKeyNotExist, when ap was not a listener.
func (p *Program) RemoveListener(ap netip.AddrPort) error {
	key, err := listenerKey(ap)
	if err != nil {
		return fmt.Errorf("remove listener %s: %w", ap, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("remove listener %s: %w", ap, ErrClosed)
	}
	if err := p.objs.Listeners.Delete(&key); err != nil {
		return fmt.Errorf("remove listener %s: %w", ap, err)
	}
	if _, ok := p.wildcards[key]; ok {
		delete(p.wildcards, key)
		return p.syncWildcard("remove listener", ap)
	}
	return nil
}

// syncWildcard keeps SETTING_WILDCARD set exactly while a wildcard listener
// exists, so that other traffic pays for no second lookup.
func (p *Program) syncWildcard(op string, ap netip.AddrPort) error {
	if err := p.syncBit(settingWildcard, len(p.wildcards) > 0); err != nil {
		return fmt.Errorf("%s %s: %w", op, ap, err)
	}
	return nil
}

// syncBit sets or clears a settings bit that follows the maps' contents,
// writing the settings only when it changes.
func (p *Program) syncBit(bit uint32, on bool) error {
	flags := p.flags &^ bit
	if on {
		flags |= bit
	}
	if flags == p.flags {
		return nil
	}
	old := p.flags
	p.flags = flags
	if err := p.writeSettings(); err != nil {
		p.flags = old
		return err
	}
	return nil
}

// AddPeer decapsulates what the peer node at addr forwards (second chance:
// IPv4 in IPv4 or IPv6 in IPv6 from addr, whose inner packet is TCP to a
// listener) and steers the inner packet, marked with the destination MAC
// SECOND_CHANCE_MAC, counted as RedirectSecondChance. Adding a peer twice
// is no error.
func (p *Program) AddPeer(addr netip.Addr) error {
	key, err := addrKey(addr)
	if err == nil && (addr.IsUnspecified() || addr.IsMulticast()) {
		err = errors.New("not a unicast address")
	}
	if err != nil {
		return fmt.Errorf("add peer %s: %w", addr, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("add peer %s: %w", addr, ErrClosed)
	}
	var v uint32
	if p.objs.Peers.Lookup(&key, &v) == nil {
		return nil
	}
	if err := p.objs.Peers.Update(&key, uint32(0), ebpf.UpdateNoExist); err != nil {
		return fmt.Errorf("add peer %s: %w", addr, mapFull(err, "peers"))
	}
	p.peers++
	return p.syncPeers("add peer", addr)
}

// RemovePeer undoes AddPeer. It fails, wrapping ebpf.ErrKeyNotExist, when
// addr was not a peer.
func (p *Program) RemovePeer(addr netip.Addr) error {
	key, err := addrKey(addr)
	if err != nil {
		return fmt.Errorf("remove peer %s: %w", addr, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("remove peer %s: %w", addr, ErrClosed)
	}
	if err := p.objs.Peers.Delete(&key); err != nil {
		return fmt.Errorf("remove peer %s: %w", addr, err)
	}
	p.peers--
	return p.syncPeers("remove peer", addr)
}

// syncPeers keeps SETTING_SECOND_CHANCE set exactly while a peer exists.
func (p *Program) syncPeers(op string, addr netip.Addr) error {
	if err := p.syncBit(settingSecond, p.peers > 0); err != nil {
		return fmt.Errorf("%s %s: %w", op, addr, err)
	}
	return nil
}

// AddOwnedRange steers TCP to addr with a destination port in [lo, hi]: the
// return traffic of the backend legs. An address has one range; adding
// another replaces it.
func (p *Program) AddOwnedRange(addr netip.Addr, lo, hi uint16) error {
	key, err := addrKey(addr)
	if err == nil && (lo == 0 || lo > hi) {
		err = fmt.Errorf("invalid port range %d-%d", lo, hi)
	}
	if err == nil && addr.IsUnspecified() {
		err = errors.New("owned ranges need a specific address")
	}
	if err != nil {
		return fmt.Errorf("add owned range %s:%d-%d: %w", addr, lo, hi, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("add owned range %s:%d-%d: %w", addr, lo, hi, ErrClosed)
	}
	r := xdpOwnedRange{Lo: lo, Hi: hi}
	if err := p.objs.OwnedRanges.Update(&key, &r, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("add owned range %s:%d-%d: %w", addr, lo, hi, mapFull(err, "owned_ranges"))
	}
	return nil
}

// RemoveOwnedRange stops steering addr's owned range. It fails, wrapping
// ebpf.ErrKeyNotExist, when addr had none.
func (p *Program) RemoveOwnedRange(addr netip.Addr) error {
	key, err := addrKey(addr)
	if err != nil {
		return fmt.Errorf("remove owned range of %s: %w", addr, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("remove owned range of %s: %w", addr, ErrClosed)
	}
	if err := p.objs.OwnedRanges.Delete(&key); err != nil {
		return fmt.Errorf("remove owned range of %s: %w", addr, err)
	}
	return nil
}

// AddNeighborAddr steers ARP requests and replies (IPv4) or neighbour
// solicitations and advertisements (IPv6) whose target is addr: for
// addresses the kernel does not own, which the engine answers for.
func (p *Program) AddNeighborAddr(addr netip.Addr) error {
	key, err := addrKey(addr)
	if err == nil && addr.IsUnspecified() {
		err = errors.New("unspecified address")
	}
	if err != nil {
		return fmt.Errorf("add neighbour address %s: %w", addr, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("add neighbour address %s: %w", addr, ErrClosed)
	}
	if err := p.objs.ArpAddrs.Update(&key, uint32(0), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("add neighbour address %s: %w", addr, mapFull(err, "arp_addrs"))
	}
	return nil
}

// RemoveNeighborAddr undoes AddNeighborAddr. It fails, wrapping
// ebpf.ErrKeyNotExist, when addr was not there.
func (p *Program) RemoveNeighborAddr(addr netip.Addr) error {
	key, err := addrKey(addr)
	if err != nil {
		return fmt.Errorf("remove neighbour address %s: %w", addr, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("remove neighbour address %s: %w", addr, ErrClosed)
	}
	if err := p.objs.ArpAddrs.Delete(&key); err != nil {
		return fmt.Errorf("remove neighbour address %s: %w", addr, err)
	}
	return nil
}

// SetXSK makes the AF_XDP socket fd the destination of the packets steered
// on queue. The socket must be bound to this interface and queue: a socket
// bound elsewhere makes the redirect fail after the program has returned,
// and the kernel drops the packet (visible only as xdp:xdp_redirect_err).
func (p *Program) SetXSK(queue int, fd int) error {
	if queue < 0 || queue >= MaxQueues {
		return fmt.Errorf("set xsk of queue %d: queue out of range [0, %d)", queue, MaxQueues)
	}
	if fd < 0 {
		return fmt.Errorf("set xsk of queue %d: invalid fd %d", queue, fd)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("set xsk of queue %d: %w", queue, ErrClosed)
	}
	if err := p.objs.Xsks.Update(uint32(queue), uint32(fd), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set xsk of queue %d to fd %d: %w", queue, fd, err)
	}
	return nil
}

// ClearXSK removes queue's socket: its steered packets fall back to the
// kernel (counted as RedirectFailed). Clearing an empty slot is no error.
func (p *Program) ClearXSK(queue int) error {
	if queue < 0 || queue >= MaxQueues {
		return fmt.Errorf("clear xsk of queue %d: queue out of range [0, %d)", queue, MaxQueues)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("clear xsk of queue %d: %w", queue, ErrClosed)
	}
	if err := p.objs.Xsks.Delete(uint32(queue)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("clear xsk of queue %d: %w", queue, err)
	}
	return nil
}

// Counters returns the program's counters summed over all CPUs.
func (p *Program) Counters() (Counters, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return Counters{}, fmt.Errorf("read xdp counters: %w", ErrClosed)
	}
	var perCPU []xdpSteerCounters
	if err := p.objs.Counters.Lookup(uint32(0), &perCPU); err != nil {
		return Counters{}, fmt.Errorf("read xdp counters: %w", err)
	}
	var c Counters
	for _, v := range perCPU {
		c.RxPackets += v.RxPackets
		c.RedirectListener += v.RedirectListener
		c.RedirectOwned += v.RedirectOwned
		c.RedirectARP += v.RedirectArp
		c.RedirectNDP += v.RedirectNdp
		c.RedirectICMP += v.RedirectIcmp
		c.RedirectSecondChance += v.RedirectSecondChance
		c.PassNotOurs += v.PassNotOurs
		c.PassDisabled += v.PassDisabled
		c.DropMalformed += v.DropMalformed
		c.RedirectFailed += v.RedirectFailed
		c.TxSYNCookie += v.TxSynCookie
		c.DropBadCookie += v.DropBadCookie
		c.CookieACK += v.CookieAck
	}
	return c, nil
}

// Counters are the XDP program's packet counts. Every packet is counted in
// RxPackets and in exactly one of the redirect, pass, drop and TX counters,
// except RedirectFailed, which counts the redirects (already counted by
// reason) that found no socket for their queue and went to the kernel, and
// CookieACK, which counts the listener redirects a valid cookie let through.
type Counters struct {
	RxPackets        uint64
	RedirectListener uint64 // TCP to a listener address:port
	RedirectOwned    uint64 // TCP to an owned port range (backend return traffic)
	RedirectARP      uint64 // ARP request or reply for a neighbour address
	RedirectNDP      uint64 // neighbour solicitation or advertisement for a neighbour address
	RedirectICMP     uint64 // ICMP for the engine (with SetICMPSteering(true) only)
	// RedirectSecondChance: segments a peer forwarded, decapsulated (AddPeer).
	RedirectSecondChance uint64
	PassNotOurs          uint64 // passed to the kernel
	PassDisabled         uint64 // passed to the kernel because steering is off
	DropMalformed        uint64 // ours by address and port, but malformed
	RedirectFailed       uint64 // no socket in the queue's XSK slot: passed to the kernel
	TxSYNCookie          uint64 // SYN to a listener answered with a cookie SYN-ACK (XDP_TX)
	DropBadCookie        uint64 // ACK to a listener of no known flow without a valid cookie: dropped
	CookieACK            uint64 // of RedirectListener: ACKs that a valid cookie let through
}

// Counter is one named counter value, for metrics.
type Counter struct {
	Name  string
	Value uint64
}

// List returns the counters in a fixed order, named as in the C program.
func (c Counters) List() []Counter {
	return []Counter{
		{"rx_packets", c.RxPackets},
		{"redirect_listener", c.RedirectListener},
		{"redirect_owned", c.RedirectOwned},
		{"redirect_arp", c.RedirectARP},
		{"redirect_ndp", c.RedirectNDP},
		{"redirect_icmp", c.RedirectICMP},
		{"redirect_second_chance", c.RedirectSecondChance},
		{"pass_not_ours", c.PassNotOurs},
		{"pass_disabled", c.PassDisabled},
		{"drop_malformed", c.DropMalformed},
		{"redirect_failed", c.RedirectFailed},
		{"tx_syn_cookie", c.TxSYNCookie},
		{"drop_bad_cookie", c.DropBadCookie},
		{"cookie_ack", c.CookieACK},
	}
}

// Sub returns c - o, counter by counter.
func (c Counters) Sub(o Counters) Counters {
	return Counters{
		RxPackets:            c.RxPackets - o.RxPackets,
		RedirectListener:     c.RedirectListener - o.RedirectListener,
		RedirectOwned:        c.RedirectOwned - o.RedirectOwned,
		RedirectARP:          c.RedirectARP - o.RedirectARP,
		RedirectNDP:          c.RedirectNDP - o.RedirectNDP,
		RedirectICMP:         c.RedirectICMP - o.RedirectICMP,
		RedirectSecondChance: c.RedirectSecondChance - o.RedirectSecondChance,
		PassNotOurs:          c.PassNotOurs - o.PassNotOurs,
		PassDisabled:         c.PassDisabled - o.PassDisabled,
		DropMalformed:        c.DropMalformed - o.DropMalformed,
		RedirectFailed:       c.RedirectFailed - o.RedirectFailed,
		TxSYNCookie:          c.TxSYNCookie - o.TxSYNCookie,
		DropBadCookie:        c.DropBadCookie - o.DropBadCookie,
		CookieACK:            c.CookieACK - o.CookieACK,
	}
}

// addrKey is the 16-byte form shared by every map: IPv6 as is, IPv4 (and
// IPv4-mapped IPv6) as ::ffff:a.b.c.d. Zones are dropped.
func addrKey(addr netip.Addr) (xdpAddr16, error) {
	if !addr.IsValid() {
		return xdpAddr16{}, errors.New("invalid address")
	}
	return xdpAddr16{B: addr.Unmap().As16()}, nil
}

func listenerKey(ap netip.AddrPort) (xdpListenerKey, error) {
	addr, err := addrKey(ap.Addr())
	if err != nil {
		return xdpListenerKey{}, err
	}
	if ap.Port() == 0 {
		return xdpListenerKey{}, errors.New("port 0")
	}
	// The program compares the port as it is on the wire, big-endian.
	var be [2]byte
	binary.BigEndian.PutUint16(be[:], ap.Port())
	return xdpListenerKey{Addr: addr, Port: binary.NativeEndian.Uint16(be[:])}, nil
}

// mapFull names the map when the kernel says it has no room (E2BIG).
func mapFull(err error, name string) error {
	if errors.Is(err, unix.E2BIG) {
		return fmt.Errorf("map %s full: %w", name, err)
	}
	return err
}

// removeStale detaches an xdproxy program already attached to ifindex,
// whether through a BPF link or through netlink (the pre-link way, which
// outlives the process that attached it), and refuses any other program.
func removeStale(ifindex int) error {
	cur, err := queryXDP(ifindex)
	if err != nil {
		return err
	}
	if cur.mode == nl.XDP_ATTACHED_NONE {
		return nil
	}
	if cur.mode == xdpAttachedMulti || cur.progID == 0 {
		return fmt.Errorf("%w: several programs attached (driver and offload)", ErrForeignProgram)
	}
	id := ebpf.ProgramID(cur.progID)
	name, err := programName(id)
	if errors.Is(err, os.ErrNotExist) {
		return nil // detached in the meantime
	}
	if err != nil {
		return fmt.Errorf("inspect attached program %d: %w", id, err)
	}
	if !strings.HasPrefix(name, programPrefix) {
		return fmt.Errorf("%w: %q (id %d)", ErrForeignProgram, name, id)
	}

	found, err := detachLinkOf(ifindex, id)
	if err != nil || found {
		return err
	}
	if err := detachNetlink(ifindex, cur.mode); err != nil {
		return fmt.Errorf("detach stale program %q (id %d): %w", name, id, err)
	}
	return nil
}

func programName(id ebpf.ProgramID) (string, error) {
	prog, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return "", err
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		return "", err
	}
	return info.Name, nil
}

// detachLinkOf finds the XDP link that holds program id on ifindex and
// detaches it: its owner's link becomes defunct and detaches nothing later.
func detachLinkOf(ifindex int, id ebpf.ProgramID) (bool, error) {
	var it link.Iterator
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil || info.Type != link.XDPType || info.Program != id {
			continue
		}
		if xi := info.XDP(); xi != nil && int(xi.Ifindex) != ifindex {
			continue
		}
		if err := it.Link.Detach(); err != nil {
			return true, fmt.Errorf("detach stale link %d (program %d): %w", it.ID, id, err)
		}
		return true, nil
	}
	if err := it.Err(); err != nil {
		return false, fmt.Errorf("list bpf links: %w", err)
	}
	return false, nil
}
