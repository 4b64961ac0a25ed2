package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LinkOpts configures a veth pair.
type LinkOpts struct {
	// Queues > 1 gives each end that many RX and TX queues (one AF_XDP
	// socket and shard per queue).
	Queues int
	// MTU, when > 0, is set on both ends.
	MTU int
	// AAddrs and BAddrs are the addresses of each end, host address and
	// prefix length ("10.9.0.1/24", "fd00:9::1/64"). IPv6 addresses skip
	// duplicate address detection, so they are usable at once; so does
	// each end's link-local address (accept_dad is 0 on lab links), without
	// which a router namespace could not resolve a neighbour for a
	// forwarded packet (see noLinkLocalDAD).
	AAddrs, BAddrs []netip.Prefix
	// AMAC and BMAC, when set, are the ends' MAC addresses (otherwise the
	// kernel picks random ones).
	AMAC, BMAC net.HardwareAddr
	// DisableTxChecksum runs `ethtool -K <if> tx off` on both ends, so that
	// frames the namespaces' kernels send carry full checksums rather than
	// CHECKSUM_PARTIAL ones (see the package doc). Needs ethtool, which is
	// installed when missing (EnsureTools).
	DisableTxChecksum bool
}

// Veth is a veth pair of a lab.
type Veth struct{ A, B *End }

// End is one end of a veth pair.
type End struct {
	NS    *NS
	Name  string // full interface name (prefix + given name, ≤ 15 bytes)
	Index int
	MAC   net.HardwareAddr
	Addrs []netip.Prefix
}

// IP4 returns the end's first IPv4 address (the zero Addr if none).
func (e *End) IP4() netip.Addr { return e.firstAddr(true) }

// IP6 returns the end's first IPv6 address (the zero Addr if none).
func (e *End) IP6() netip.Addr { return e.firstAddr(false) }

func (e *End) firstAddr(v4 bool) netip.Addr {
	for _, p := range e.Addrs {
		if a := p.Addr().Unmap(); a.Is4() == v4 {
			return a
		}
	}
	return netip.Addr{}
}

// ifName is prefix+name cut to IFNAMSIZ-1 bytes.
func ifName(prefix, name string) string {
	s := prefix + name
	if len(s) > ifNameMax {
		s = s[:ifNameMax]
	}
	return s
}

// Link joins a (interface prefix+aIf) and b (prefix+bIf) with a veth pair,
// assigns the addresses and brings both ends up, waiting until the link is
// operationally up. a and b may be the same namespace (then the names must
// differ after truncation).
func (l *Lab) Link(a *NS, aIf string, b *NS, bIf string, o LinkOpts) (*Veth, error) {
	if a == nil || b == nil || a.lab != l || b.lab != l {
		return nil, errors.New("lab: Link needs two namespaces of this lab")
	}
	for _, n := range []string{aIf, bIf} {
		if n == "" || strings.ContainsAny(n, "/: \t\n\x00") {
			return nil, fmt.Errorf("lab: bad interface name %q", n)
		}
	}
	aName, bName := ifName(l.prefix, aIf), ifName(l.prefix, bIf)
	if a == b && aName == bName {
		return nil, fmt.Errorf("lab: both ends of the veth would be %s in %s", aName, a.Name)
	}
	if o.Queues < 0 || o.Queues > 1024 || o.MTU < 0 {
		return nil, fmt.Errorf("lab: bad LinkOpts: %d queues, MTU %d", o.Queues, o.MTU)
	}
	for _, p := range append(append([]netip.Prefix(nil), o.AAddrs...), o.BAddrs...) {
		if !p.IsValid() {
			return nil, fmt.Errorf("lab: invalid address prefix %v", p)
		}
	}
	if o.DisableTxChecksum {
		if err := EnsureTools("ethtool"); err != nil {
			return nil, err
		}
	}
	if err := a.open(); err != nil {
		return nil, err
	}
	if err := b.open(); err != nil {
		return nil, err
	}

	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: aName, MTU: o.MTU, HardwareAddr: o.AMAC},
		PeerName:         bName,
		PeerHardwareAddr: o.BMAC,
		PeerMTU:          uint32(o.MTU),
	}
	// Always explicit: the kernel's default for veth is not 1.
	q := max(o.Queues, 1)
	veth.NumTxQueues, veth.NumRxQueues = q, q
	veth.PeerNumTxQueues, veth.PeerNumRxQueues = uint32(q), uint32(q)
	if b != a {
		veth.PeerNamespace = netlink.NsFd(int(b.h))
	}

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	err := a.nl.LinkAdd(veth)
	if err != nil {
		l.mu.Unlock()
		hint := ""
		if len(l.prefix)+max(len(aIf), len(bIf)) > ifNameMax {
			hint = fmt.Sprintf(" (names are cut to %d bytes)", ifNameMax)
		}
		return nil, fmt.Errorf("lab: creating veth %s/%s ↔ %s/%s%s: %w", a.Name, aName, b.Name, bName, hint, err)
	}
	v := &Veth{
		A: &End{NS: a, Name: aName, Addrs: append([]netip.Prefix(nil), o.AAddrs...)},
		B: &End{NS: b, Name: bName, Addrs: append([]netip.Prefix(nil), o.BAddrs...)},
	}
	// Look up the index now, so that cleanup can find the pair even if
	// setup fails below.
	al, err := a.nl.LinkByName(aName)
	if err != nil {
		l.mu.Unlock()
		return nil, fmt.Errorf("lab: veth %s created but not found: %w", aName, err)
	}
	v.A.Index = al.Attrs().Index
	l.links = append(l.links, v)
	l.mu.Unlock()

	if err := l.setupVeth(v, o); err != nil {
		l.mu.Lock()
		for i, x := range l.links {
			if x == v {
				l.links = append(l.links[:i], l.links[i+1:]...)
				break
			}
		}
		l.mu.Unlock()
		if derr := a.nl.LinkDel(al); derr != nil && !isNotFound(derr) {
			err = errors.Join(err, derr)
		}
		return nil, err
	}
	return v, nil
}

func (l *Lab) setupVeth(v *Veth, o LinkOpts) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	links := make([]netlink.Link, 2)
	for i, e := range []*End{v.A, v.B} {
		link, err := e.NS.nl.LinkByName(e.Name)
		if err != nil {
			return fmt.Errorf("lab: %s: %s: %w", e.NS.Name, e.Name, err)
		}
		links[i] = link
		e.Index = link.Attrs().Index
		e.MAC = link.Attrs().HardwareAddr
		for _, p := range e.Addrs {
			a := &netlink.Addr{IPNet: ipNet(p)}
			if p.Addr().Unmap().Is6() {
				a.Flags = unix.IFA_F_NODAD
			}
			if err := e.NS.nl.AddrAdd(link, a); err != nil {
				return fmt.Errorf("lab: %s: address %v on %s: %w", e.NS.Name, p, e.Name, err)
			}
		}
		if o.DisableTxChecksum {
			if _, err := e.NS.Run(ctx, "ethtool", "-K", e.Name, "tx", "off"); err != nil {
				return err
			}
		}
	}
	for i, e := range []*End{v.A, v.B} {
		if err := noLinkLocalDAD(e); err != nil {
			return err
		}
		if err := e.NS.nl.LinkSetUp(links[i]); err != nil {
			return fmt.Errorf("lab: %s: %s up: %w", e.NS.Name, e.Name, err)
		}
	}
	// A veth is operationally up once both ends are up; wait for it so that
	// the first packet a test sends is not lost.
	deadline := time.Now().Add(5 * time.Second)
	for _, e := range []*End{v.A, v.B} {
		for {
			link, err := e.NS.nl.LinkByIndex(e.Index)
			if err != nil {
				return fmt.Errorf("lab: %s: %s: %w", e.NS.Name, e.Name, err)
			}
			if link.Attrs().OperState == netlink.OperUp {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("lab: %s: %s is %v, not up, after 5s", e.NS.Name, e.Name, link.Attrs().OperState)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// noLinkLocalDAD sets accept_dad to 0 on e before it goes up, so that the
// link-local address the kernel gives it is usable at once. The addresses
// of LinkOpts skip DAD on their own (IFA_F_NODAD), but that is not enough:
// the kernel sends a neighbour solicitation for a packet whose source is
// not its own (a forwarded one) from its link-local address and sends none
// while that address is tentative, so a router namespace would hold the
// first forwarded IPv6 packets for the one to two seconds DAD takes.
func noLinkLocalDAD(e *End) error {
	path := "/proc/sys/net/ipv6/conf/" + e.Name + "/accept_dad"
	return e.NS.Do(func() error {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return nil // no IPv6 on this kernel
		}
		if err := os.WriteFile(path, []byte("0\n"), 0o644); err != nil {
			return fmt.Errorf("lab: %s: %w", e.NS.Name, err)
		}
		return nil
	})
}

// Pair is the smallest lab: namespaces aName and bName joined by one veth
// (aIf in a, bIf in b), as Link makes it with o.
func (l *Lab) Pair(aName, aIf, bName, bIf string, o LinkOpts) (a, b *NS, v *Veth, err error) {
	if a, err = l.NS(aName); err != nil {
		return nil, nil, nil, err
	}
	if b, err = l.NS(bName); err != nil {
		return nil, nil, nil, err
	}
	if v, err = l.Link(a, aIf, b, bIf, o); err != nil {
		return nil, nil, nil, err
	}
	return a, b, v, nil
}
