package dataplane

import (
	"net/netip"
	"sort"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/stack"
	"github.com/xdproxy/xdproxy/stack/wire"
)

// The engines take routes and neighbours from the kernel: loaded at start,
// then followed live through netlink subscriptions. A next hop the engine
// does not know is resolved by the kernel when the leg's source address is
// one of the kernel's (RTM_NEWNEIGH with NTF_USE starts the kernel's own ARP
// or neighbour solicitation; its answer comes back through the neighbour
// subscription), so the reply is addressed to the kernel that asked and
// nothing depends on the kernel accepting unsolicited replies (arp_accept,
// accept_untracked_na — Linux drops an untracked IPv6 advertisement on a
// host). For a source address only the engine owns, the engine asks
// itself: the XDP program steers the answer to it.

// loadKernelState gives every engine the kernel's routes and neighbours of
// the data plane's interfaces.
func (d *Dataplane) loadKernelState() error {
	routes, err := d.kernelRoutes()
	if err != nil {
		return err
	}
	for _, s := range d.shards {
		s.eng.SetRoutes(routes)
	}
	for _, f := range d.ifs {
		neighs, err := d.nl.NeighList(f.link.Attrs().Index, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, n := range neighs {
			if ip, mac, ok := validNeigh(n); ok {
				for _, s := range d.shards {
					s.eng.SetNeighborOn(f.index, ip, mac)
				}
			}
		}
	}
	return nil
}

// kernelRoutes is the kernel's main routing table as the engines see it:
// the unicast routes whose next hop is on one of the data plane's
// interfaces (a route through any other interface is not one a leg on the
// engine can take), with the interface as its index among ours.
func (d *Dataplane) kernelRoutes() ([]stack.Route, error) {
	list, err := d.nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	var out []stack.Route
	for _, r := range list {
		if r.Type != unix.RTN_UNICAST {
			continue
		}
		var dst netip.Prefix
		if r.Dst == nil {
			if r.Family == unix.AF_INET6 {
				dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			} else {
				dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			}
		} else {
			ip, ok := netip.AddrFromSlice(r.Dst.IP)
			if !ok {
				continue
			}
			ones, _ := r.Dst.Mask.Size()
			dst = netip.PrefixFrom(ip.Unmap(), ones)
		}
		src, _ := netip.AddrFromSlice(r.Src)
		add := func(ifindex int, gw []byte) {
			f := d.byIfindex[ifindex]
			if f == nil {
				return
			}
			g, _ := netip.AddrFromSlice(gw)
			out = append(out, stack.Route{Prefix: dst, Gateway: g.Unmap(), Iface: f.index, Src: src.Unmap(), Metric: r.Priority})
		}
		if len(r.MultiPath) > 0 {
			// ECMP: the engine takes the first next hop on one of ours.
			for _, nh := range r.MultiPath {
				if d.byIfindex[nh.LinkIndex] != nil {
					add(nh.LinkIndex, nh.Gw)
					break
				}
			}
			continue
		}
		add(r.LinkIndex, r.Gw)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Prefix.Bits() > out[j].Prefix.Bits() })
	return out, nil
}

func validNeigh(n netlink.Neigh) (netip.Addr, wire.MAC, bool) {
	if len(n.HardwareAddr) != 6 || n.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE|netlink.NUD_NOARP) != 0 || n.State == netlink.NUD_NONE {
		return netip.Addr{}, wire.MAC{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Addr{}, wire.MAC{}, false
	}
	var mac wire.MAC
	copy(mac[:], n.HardwareAddr)
	return ip.Unmap(), mac, true
}

// setNeighbor posts a kernel neighbour entry to every shard.
func (d *Dataplane) setNeighbor(f *Iface, ip netip.Addr, mac wire.MAC) {
	for _, s := range d.shards {
		s.Post(func(s *Shard) { s.eng.SetNeighborOn(f.index, ip, mac) })
	}
}

// watchKernel follows the kernel's neighbour and route changes until Stop.
func (d *Dataplane) watchKernel() {
	neighs := make(chan netlink.NeighUpdate, 256)
	if err := netlink.NeighSubscribeWithOptions(neighs, d.watchEnd, netlink.NeighSubscribeOptions{Namespace: &d.netns}); err != nil {
		d.log.Warn("no neighbour updates from the kernel", "err", err)
		neighs = nil
	}
	routes := make(chan netlink.RouteUpdate, 256)
	if err := netlink.RouteSubscribeWithOptions(routes, d.watchEnd, netlink.RouteSubscribeOptions{Namespace: &d.netns}); err != nil {
		d.log.Warn("no route updates from the kernel", "err", err)
		routes = nil
	}
	end := d.watchEnd
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		var reload <-chan time.Time
		for {
			select {
			case <-end:
				return
			case u, ok := <-neighs:
				if !ok {
					neighs = nil
					continue
				}
				f := d.byIfindex[u.LinkIndex]
				if f == nil || u.Type != unix.RTM_NEWNEIGH {
					continue
				}
				if ip, mac, ok := validNeigh(u.Neigh); ok {
					d.setNeighbor(f, ip, mac)
				}
			case _, ok := <-routes:
				if !ok {
					routes = nil
					continue
				}
				// A route change comes in bursts (an address added brings
				// several): reread the table once the burst is over.
				if reload == nil {
					reload = time.After(20 * time.Millisecond)
				}
			case <-reload:
				reload = nil
				rs, err := d.kernelRoutes()
				if err != nil {
					d.log.Warn("rereading the kernel's routes", "err", err)
					continue
				}
				for _, s := range d.shards {
					s.Post(func(s *Shard) { s.eng.SetRoutes(rs) })
				}
			}
		}
	}()
}

// resolveReq asks the kernel for the MAC of addr on an interface.
type resolveReq struct {
	f    *Iface
	addr netip.Addr
}

// resolver is interface j's stack.Interface.Resolve: next hops of legs
// from an address the kernel owns are the kernel's to resolve. Called on a
// shard: it only queues the request.
func (d *Dataplane) resolver(kernelOwned map[netip.Addr]bool, j int) func(src, nh netip.Addr) bool {
	f := d.ifs[j]
	return func(src, nh netip.Addr) bool {
		if !kernelOwned[src] {
			return false
		}
		select {
		case d.resolveCh <- resolveReq{f, nh}:
		default: // the RTO asks again
		}
		return true
	}
}

// resolveLoop asks the kernel to resolve next hops (RTM_NEWNEIGH with
// NTF_USE: the kernel's neigh_event_send) and passes on an answer it
// already has; a new one arrives through the neighbour subscription.
func (d *Dataplane) resolveLoop(end <-chan struct{}) {
	asked := map[resolveReq]time.Time{}
	for {
		select {
		case <-end:
			return
		case r := <-d.resolveCh:
			now := time.Now()
			if t, ok := asked[r]; ok && now.Sub(t) < 100*time.Millisecond {
				continue // every shard asks for the same next hop at once
			}
			asked[r] = now
			if len(asked) > 4096 {
				clear(asked)
			}
			fam := netlink.FAMILY_V4
			if r.addr.Is6() {
				fam = netlink.FAMILY_V6
			}
			ifindex := r.f.link.Attrs().Index
			err := d.nl.NeighSet(&netlink.Neigh{LinkIndex: ifindex, Family: fam, IP: r.addr.AsSlice(), Flags: unix.NTF_USE})
			if err != nil {
				d.log.Debug("asking the kernel to resolve a next hop", "interface", r.f.name, "addr", r.addr, "err", err)
				continue
			}
			if list, err := d.nl.NeighList(ifindex, fam); err == nil {
				for _, n := range list {
					if ip, mac, ok := validNeigh(n); ok && ip == r.addr {
						d.setNeighbor(r.f, ip, mac)
					}
				}
			}
		}
	}
}

// checksumWatch: how often the interfaces' checksum drops are looked at,
// and how often at most one interface's warning is logged.
const (
	checksumWatchEvery = 5 * time.Second
	checksumWarnEvery  = 10 * time.Minute
)

// watchChecksums logs, at most once per checksumWarnEvery and interface,
// when segments with bad TCP checksums dominate what an interface receives:
// the mark of senders on this host whose checksum offload leaves them
// partial on a link the engine does not know to be virtual.
func (d *Dataplane) watchChecksums(end <-chan struct{}) {
	t := time.NewTicker(checksumWatchEvery)
	defer t.Stop()
	for {
		select {
		case <-end:
			return
		case <-t.C:
			d.checkChecksums(time.Now())
		}
	}
}

func (d *Dataplane) checkChecksums(now time.Time) {
	for _, f := range d.ifs {
		var rx, bad uint64
		for _, s := range d.shards {
			if s.eng == nil {
				continue
			}
			st := s.eng.IfaceStats(f.index)
			rx += st.RxFrames.Load()
			bad += st.ChecksumDrops.Load()
		}
		dRx, dBad := rx-f.lastRx, bad-f.lastBad
		f.lastRx, f.lastBad = rx, bad
		if dBad < 16 || 2*dBad < dRx || now.Sub(f.lastWarn) < checksumWarnEvery {
			continue
		}
		f.lastWarn = now
		hint := "if the senders are on this host (containers, veth), their TX checksum offload leaves checksums partial: turn it off on the sending side (ethtool -K IFACE tx off) or use a veth; otherwise look for corruption on the link"
		if f.virtual {
			hint = "the interface is virtual and partial checksums are accepted: these segments are corrupt"
		}
		d.log.Warn("most TCP segments on this interface fail their checksum and are dropped",
			"interface", f.name, "dropped", dBad, "received", dRx, "hint", hint)
	}
}
