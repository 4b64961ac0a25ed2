package preflight

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/internal/config"
	"github.com/xdproxy/xdproxy/internal/statedir"
)

// Host is the System of the network namespace of the calling thread: links,
// addresses and routes through netlink, disable_ipv6 from /proc/sys/net
// (which, unlike /sys, shows the namespace of the task that reads it). The
// daemon's threads all stay in one namespace; a caller that switches a
// locked thread into another one must call Check on that thread.
func Host() System { return host{} }

type host struct{}

func (host) Links() ([]Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	byIndex := map[int][]netip.Prefix{}
	for _, a := range addrs {
		if a.IPNet == nil || a.Flags&unix.IFA_F_DADFAILED != 0 {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		byIndex[a.LinkIndex] = append(byIndex[a.LinkIndex], netip.PrefixFrom(ip.Unmap(), ones))
	}
	out := make([]Link, 0, len(links))
	for _, l := range links {
		at := l.Attrs()
		out = append(out, Link{
			Name:  at.Name,
			Up:    at.RawFlags&unix.IFF_UP != 0,
			NoARP: at.RawFlags&unix.IFF_NOARP != 0,
			Type:  at.EncapType,
			MAC:   at.HardwareAddr,
			Addrs: byIndex[at.Index],
		})
	}
	return out, nil
}

func (host) RouteGet(dst netip.Addr) (Route, error) {
	ip := net.IP(dst.AsSlice())
	rs, err := netlink.RouteGet(ip)
	if err != nil {
		return Route{}, err
	}
	if len(rs) == 0 {
		return Route{}, errors.New("no route")
	}
	r := rs[0]
	out := Route{Local: r.Type == unix.RTN_LOCAL}
	out.Dev = linkName(r.LinkIndex)
	out.Gateway = addrOf(r.Gw)
	out.Src = addrOf(r.Src)
	switch r.Type {
	case unix.RTN_UNICAST, unix.RTN_LOCAL:
	default:
		// ip route get answers some of these without an error.
		return Route{}, fmt.Errorf("the route is of type %s", routeType(r.Type))
	}
	out.Text = formatRoute(r, dst, out.Dev)
	if !out.Local {
		// The table entry that matched, "10.0.3.0/24 dev eth2 ..." rather
		// than the host route the lookup made of it (ip route get fibmatch).
		if fib, err := netlink.RouteGetWithOptions(ip, &netlink.RouteGetOptions{FIBMatch: true}); err == nil && len(fib) == 1 {
			f := fib[0]
			if f.LinkIndex == r.LinkIndex && f.MultiPath == nil {
				out.Text = formatRoute(f, netip.Addr{}, out.Dev)
			}
		}
	}
	return out, nil
}

func (host) IPv6Disabled(ifname string) (bool, error) {
	if strings.ContainsAny(ifname, "/") || ifname == "." || ifname == ".." {
		return false, fmt.Errorf("bad interface name %q", ifname)
	}
	if _, err := os.Stat("/proc/sys/net/ipv6"); errors.Is(err, fs.ErrNotExist) {
		return true, nil // no IPv6 in this kernel (ipv6.disable=1)
	}
	b, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv6/conf", ifname, "disable_ipv6"))
	if err != nil {
		return false, err
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return false, fmt.Errorf("disable_ipv6 of %s: %q", ifname, b)
	}
	return v != 0, nil
}

func linkName(index int) string {
	if index == 0 {
		return ""
	}
	l, err := netlink.LinkByIndex(index)
	if err != nil {
		return "if" + strconv.Itoa(index)
	}
	return l.Attrs().Name
}

func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

// formatRoute renders r as `ip route` does, in short: [type] dst [via gw]
// dev DEV [table T] [src S] [metric M]. host, when valid, stands for the
// destination of a looked-up route (a /32 or /128).
func formatRoute(r netlink.Route, host netip.Addr, dev string) string {
	var b strings.Builder
	if r.Type != unix.RTN_UNICAST && r.Type != 0 {
		b.WriteString(routeType(r.Type) + " ")
	}
	switch {
	case host.IsValid():
		b.WriteString(host.String())
	case r.Dst == nil:
		b.WriteString("default")
	default:
		ones, bits := r.Dst.Mask.Size()
		if ones == 0 && bits != 0 {
			b.WriteString("default")
		} else if p, ok := netip.AddrFromSlice(r.Dst.IP); ok {
			b.WriteString(netip.PrefixFrom(p.Unmap(), ones).Masked().String())
		} else {
			b.WriteString(r.Dst.String())
		}
	}
	if gw := addrOf(r.Gw); gw.IsValid() {
		b.WriteString(" via " + gw.String())
	}
	if dev != "" {
		b.WriteString(" dev " + dev)
	}
	switch r.Table {
	case 0, unix.RT_TABLE_MAIN:
	case unix.RT_TABLE_LOCAL:
		b.WriteString(" table local")
	default:
		b.WriteString(" table " + strconv.Itoa(r.Table))
	}
	if src := addrOf(r.Src); src.IsValid() {
		b.WriteString(" src " + src.String())
	}
	if r.Priority > 0 {
		b.WriteString(" metric " + strconv.Itoa(r.Priority))
	}
	return b.String()
}

func routeType(t int) string {
	switch t {
	case unix.RTN_UNICAST:
		return "unicast"
	case unix.RTN_LOCAL:
		return "local"
	case unix.RTN_BROADCAST:
		return "broadcast"
	case unix.RTN_ANYCAST:
		return "anycast"
	case unix.RTN_MULTICAST:
		return "multicast"
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	case unix.RTN_THROW:
		return "throw"
	case unix.RTN_NAT:
		return "nat"
	}
	return "type " + strconv.Itoa(t)
}

func (host) StateDir(dir string) error { return statedir.Check(dir) }

func (host) TokenFile(path string) error {
	_, err := config.ReadTokenFile(path)
	return err
}
