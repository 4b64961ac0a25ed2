package bgp

import (
	"net/netip"
	"slices"
	"time"

	"github.com/xdproxy/xdproxy/internal/config"
)

// Config is what the speaker runs: the bgp block with each announced
// listener resolved to its host route.
type Config struct {
	ASN           uint32
	RouterID      netip.Addr
	WithdrawDelay time.Duration
	Neighbors     []Neighbor
	Routes        []Route
}

// Neighbor is one BGP session.
type Neighbor struct {
	Addr     netip.Addr
	ASN      uint32
	HoldTime time.Duration
	Password string
	// BFD is the neighbor's bfd block (zero: no BFD): GoBGP runs a
	// single-hop BFD session beside the BGP session and resets the BGP
	// session when BFD says the neighbor is down.
	BFD config.BGPBFD
	// Port is the neighbor's BGP port (0: 179); the file has no field for
	// it, tests set it.
	Port uint16
	// Local is the address to connect from (invalid: the kernel's choice);
	// for tests.
	Local netip.Addr
}

// Route is a listener address announced as a host route (/32 or /128).
// Listeners sharing an address share its route: it is announced while any
// of them can serve, with the union of their communities and the lowest
// of their MEDs.
type Route struct {
	Prefix      netip.Prefix
	Listeners   []string
	Communities []uint32
	MED         uint32
	HasMED      bool
}

// FromConfig resolves the file's bgp block (nil: nil, no BGP).
func FromConfig(c *config.Config) *Config {
	if c.BGP == nil {
		return nil
	}
	b := c.BGP
	out := &Config{ASN: b.ASN, RouterID: b.RouterID, WithdrawDelay: b.WithdrawDelay}
	for _, n := range b.Neighbors {
		out.Neighbors = append(out.Neighbors, Neighbor{Addr: n.Address, ASN: n.ASN, HoldTime: n.HoldTime, Password: n.Password, BFD: n.BFD})
	}
	addrOf := map[string]netip.Addr{}
	for _, l := range c.Listeners {
		addrOf[l.Name] = l.Address.Addr()
	}
	for _, a := range b.Announce {
		addr, ok := addrOf[a.Listener]
		if !ok {
			continue
		}
		prefix := netip.PrefixFrom(addr, addr.BitLen())
		i := slices.IndexFunc(out.Routes, func(r Route) bool { return r.Prefix == prefix })
		if i < 0 {
			out.Routes = append(out.Routes, Route{Prefix: prefix})
			i = len(out.Routes) - 1
		}
		r := &out.Routes[i]
		r.Listeners = append(r.Listeners, a.Listener)
		for _, c := range a.Communities {
			if !slices.Contains(r.Communities, c) {
				r.Communities = append(r.Communities, c)
			}
		}
		if a.HasMED && (!r.HasMED || a.MED < r.MED) {
			r.MED, r.HasMED = a.MED, true
		}
	}
	return out
}
