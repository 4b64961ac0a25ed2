// Package preflight finds the deployment mistakes that a configuration file
// cannot show by itself: it holds the loaded configuration against this
// host's interfaces, addresses and routes, as the kernel of the current
// network namespace has them, and reports each problem as
// internal/config does:
//
//	FILE:LINE: field.path: what is wrong
//
// It only reads (links, addresses, `ip route get`, disable_ipv6); it never
// changes the host and never sends a packet. `xdproxy check` runs it after
// config.Load, and `xdproxy run` refuses to start when it finds a problem, so
// both must run in the network namespace the daemon serves in; their
// --no-preflight skips it (check then validates the file alone, as for a
// file meant for another machine).
//
// The rules, in the order Check applies them:
//
//  1. interfaces[i].name: the interface exists, is Ethernet (link type ether
//     with a 6-byte MAC address) and is up. Down means administratively down
//     (IFF_UP unset): XDP on such a link receives nothing until someone
//     brings it up, so it is an error for check and run alike. A link that is
//     up without a carrier (a cable out, a veth peer down) is not reported:
//     it comes back by itself and the daemon serves once it does.
//  2. listeners[i].address: the listener's IP is not assigned to a kernel
//     interface that is missing from interfaces: (the neighbours would send
//     clients' packets there, where no XDP program runs). Addresses on the
//     loopback or on NOARP links (dummy) are exempt: they are the usual way
//     to give the kernel a service address that arrives through another
//     interface.
//  3. listeners[i].address: an IPv6 listener needs IPv6 enabled
//     (net.ipv6.conf.IF.disable_ipv6 = 0) on at least one configured
//     interface that exists.
//  4. listeners[i].backends[j].address, dial: xdp only: the kernel's route to
//     the backend (`ip route get`) leaves through a configured interface.
//     A backend without a route, one that is an address of this host, and one
//     routed through any other interface are errors: the engine's backend
//     legs can only leave through the interfaces it attaches to.
//  5. listeners[i].backends[j].address, dial: xdp only: when the listener
//     sets no source of the backend's family, the routed interface has an
//     address of that family to dial from (IPv4: any; IPv6: a global or
//     unique-local one, not link-local), as the engine takes the interface's
//     address then.
//  6. state_dir can hold the engine's keys, and admin.token_file (when the
//     admin server is on) can be read, holds a token and is open to no one
//     but its owner (mode 0600).
//
// dial: kernel listeners are exempt from 4 and 5: the kernel routes their
// backend legs itself. A listener source of another family than a backend is
// already an error of config.Load (address family differs from the
// listener's source), so Check does not repeat it.
//
// Check is a pure function of the configuration and a System, the view of
// the host; Host is the System of the current network namespace, read
// through netlink and /proc/sys.
package preflight

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/xdproxy/xdproxy/internal/config"
)

// System is the read-only view of the host that Check needs.
type System interface {
	// Links lists every network interface of the namespace with its
	// addresses.
	Links() ([]Link, error)
	// RouteGet is the kernel's route to dst, as `ip route get dst` gives
	// it. An error means the kernel has no usable route (unreachable,
	// blackhole, prohibited, no route at all); its text is shown to the user.
	RouteGet(dst netip.Addr) (Route, error)
	// IPv6Disabled reports net.ipv6.conf.IFNAME.disable_ipv6 of the
	// namespace (true also when the kernel has no IPv6 at all).
	IPv6Disabled(ifname string) (bool, error)
	// StateDir reports why dir cannot be the state directory (it is not a
	// directory, cannot be created or written, or its keys file is bad).
	StateDir(dir string) error
	// TokenFile reports why path cannot be the admin token file (it cannot
	// be read, is empty, or is open to group or others: see
	// config.ReadTokenFile).
	TokenFile(path string) error
}

// Link is one network interface.
type Link struct {
	Name  string
	Up    bool             // administratively up (IFF_UP)
	NoARP bool             // IFF_NOARP (dummy and similar)
	Type  string           // link type as `ip link` names it: ether, loopback, none, ...
	MAC   net.HardwareAddr // nil when the link has none
	Addrs []netip.Prefix   // assigned addresses (DAD-failed ones left out)
}

// Route is the kernel's route to one destination.
type Route struct {
	Dev     string     // the interface it leaves by
	Gateway netip.Addr // next hop; invalid when the destination is on-link
	Src     netip.Addr // preferred source; invalid when the route names none
	Local   bool       // the destination is an address of this host (type local)
	Text    string     // the route as `ip route` prints it: "10.0.3.0/24 dev eth2 src 10.0.3.1"
}

// Check holds cfg (loaded from file) against the host sys. It returns nil
// when it finds nothing, a *config.Errors with every problem, sorted by line
// (each naming file and the line of its field, from cfg.Lines), as
// config.Load does, or another error when the host cannot be read (listing
// its interfaces failed).
func Check(file string, cfg *config.Config, sys System) error {
	links, err := sys.Links()
	if err != nil {
		return fmt.Errorf("preflight: listing the network interfaces: %w", err)
	}
	c := &checker{file: file, cfg: cfg, sys: sys, links: map[string]*Link{},
		configured: map[string]bool{}, broken: map[string]bool{}}
	for i := range links {
		c.links[links[i].Name] = &links[i]
	}
	for _, ifc := range cfg.Interfaces {
		c.configured[ifc.Name] = true
		c.names = append(c.names, ifc.Name)
	}
	c.interfaces()
	for i := range cfg.Listeners {
		c.listenerAddress(i, links)
		if err := c.listenerIPv6(i); err != nil {
			return err
		}
		if cfg.Listeners[i].Dial == "kernel" {
			continue
		}
		for j := range cfg.Listeners[i].Backends {
			c.backend(i, j)
		}
	}
	if cfg.StateDir != "" {
		if err := sys.StateDir(cfg.StateDir); err != nil {
			c.add("state_dir", "%v", err)
		}
	}
	if cfg.Admin.Address != "" && cfg.Admin.TokenFile != "" {
		if err := sys.TokenFile(cfg.Admin.TokenFile); err != nil {
			c.add("admin.token_file", "%v", err)
		}
	}
	if len(c.errs) == 0 {
		return nil
	}
	sort.SliceStable(c.errs, func(a, b int) bool { return c.errs[a].Line < c.errs[b].Line })
	return &c.errs
}

type checker struct {
	file       string
	cfg        *config.Config
	sys        System
	links      map[string]*Link
	configured map[string]bool
	broken     map[string]bool // configured interfaces that rule 1 reported
	names      []string        // configured interface names, in file order
	errs       config.Errors
}

func (c *checker) add(field, format string, args ...any) {
	c.errs = append(c.errs, &config.Error{File: c.file, Line: c.cfg.Line(field), Field: field, Msg: fmt.Sprintf(format, args...)})
}

// configuredList is "eth0" or "eth0, eth1".
func (c *checker) configuredList() string { return strings.Join(c.names, ", ") }

// interfaces: rule 1.
func (c *checker) interfaces() {
	for i, ifc := range c.cfg.Interfaces {
		field := fmt.Sprintf("interfaces[%d].name", i)
		l := c.links[ifc.Name]
		c.broken[ifc.Name] = l == nil || !isEthernet(l) || !l.Up
		switch {
		case l == nil:
			c.add(field, "interface %s does not exist in this network namespace", ifc.Name)
		case !isEthernet(l):
			c.add(field, "interface %s is not Ethernet (%s); XDP and the engine need an Ethernet interface with a 6-byte MAC address", ifc.Name, describeLink(l))
		case !l.Up:
			c.add(field, "interface %s is down; bring it up (ip link set %s up)", ifc.Name, ifc.Name)
		}
	}
}

func isEthernet(l *Link) bool {
	return (l.Type == "" || l.Type == "ether") && len(l.MAC) == 6
}

func describeLink(l *Link) string {
	t := l.Type
	if t == "" {
		t = "unknown"
	}
	if len(l.MAC) == 6 {
		return "link type " + t
	}
	if len(l.MAC) == 0 {
		return "link type " + t + ", no MAC address"
	}
	return fmt.Sprintf("link type %s, %d-byte hardware address", t, len(l.MAC))
}

// listenerAddress: rule 2.
func (c *checker) listenerAddress(i int, links []Link) {
	l := c.cfg.Listeners[i]
	ip := l.Address.Addr().Unmap()
	for _, k := range links {
		if c.configured[k.Name] || k.Type == "loopback" || k.NoARP {
			continue
		}
		for _, p := range k.Addrs {
			if p.Addr().Unmap() == ip {
				c.add(fmt.Sprintf("listeners[%d].address", i),
					"%s is assigned to %s, which is not under interfaces: (%s); clients' packets for it arrive on %s, where no XDP program runs; add %s under interfaces: or remove the address from it",
					ip, k.Name, c.configuredList(), k.Name, k.Name)
				return
			}
		}
	}
}

// listenerIPv6: rule 3.
func (c *checker) listenerIPv6(i int) error {
	l := c.cfg.Listeners[i]
	if l.Address.Addr().Unmap().Is4() {
		return nil
	}
	var existing []string
	for _, name := range c.names {
		if c.links[name] == nil {
			continue // rule 1 reports it
		}
		off, err := c.sys.IPv6Disabled(name)
		if err != nil {
			return fmt.Errorf("preflight: reading disable_ipv6 of %s: %w", name, err)
		}
		if !off {
			return nil
		}
		existing = append(existing, name)
	}
	if len(existing) == 0 {
		return nil
	}
	c.add(fmt.Sprintf("listeners[%d].address", i),
		"%s is IPv6, but IPv6 is disabled on every configured interface (%s); enable it (sysctl net.ipv6.conf.%s.disable_ipv6=0)",
		l.Address, strings.Join(existing, ", "), existing[0])
	return nil
}

// backend: rules 4 and 5 for backend j of a dial: xdp listener i.
func (c *checker) backend(i, j int) {
	l := c.cfg.Listeners[i]
	b := l.Backends[j]
	field := fmt.Sprintf("listeners[%d].backends[%d].address", i, j)
	dst := b.Address.Addr().Unmap()
	r, err := c.sys.RouteGet(dst)
	switch {
	case err != nil:
		c.add(field, "%s has no route in the kernel (ip route get %s: %v); add a route to it through a configured interface (%s)",
			b.Address, dst, err, c.configuredList())
		return
	case r.Local:
		c.add(field, "%s is an address of this host (%s); dial: xdp cannot reach this host's own sockets; use dial: kernel",
			b.Address, r.Text)
		return
	case !c.configured[r.Dev]:
		c.add(field, "%s is routed via %s (%s), not through a configured interface (%s); add %s under interfaces: or use dial: kernel",
			b.Address, r.Dev, r.Text, c.configuredList(), r.Dev)
		return
	}
	if l.Source.IsValid() && l.Source.Unmap().Is4() == dst.Is4() {
		return
	}
	link := c.links[r.Dev]
	if c.broken[r.Dev] || hasSource(link, dst.Is4()) {
		return // rule 1 has said what is wrong with the interface
	}
	fam, which := "IPv4", "one"
	if !dst.Is4() {
		fam, which = "IPv6", "a global or unique-local one"
	}
	c.add(field, "%s is routed via %s, which has no %s address to dial it from%s, and the listener sets no %s source; add %s to %s or set listeners[%d].source",
		b.Address, r.Dev, fam, linkLocalNote(link, dst.Is4()), fam, which, r.Dev, i)
}

// hasSource reports whether the link has an address the engine can dial
// from in the family (IPv4: any; IPv6: not link-local).
func hasSource(l *Link, v4 bool) bool {
	for _, p := range l.Addrs {
		a := p.Addr().Unmap()
		if a.Is4() != v4 {
			continue
		}
		if v4 || (!a.IsLinkLocalUnicast() && !a.IsLoopback() && !a.IsUnspecified()) {
			return true
		}
	}
	return false
}

func linkLocalNote(l *Link, v4 bool) string {
	if v4 {
		return ""
	}
	for _, p := range l.Addrs {
		if a := p.Addr(); a.Is6() && a.IsLinkLocalUnicast() {
			return " (link-local ones do not count)"
		}
	}
	return ""
}
