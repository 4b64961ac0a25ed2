package config

import (
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// BGP is the bgp block: the daemon's BGP speaker announces its listeners'
// addresses (as host routes, /32 or /128) to the neighbors while it can
// serve them (proxy/bgp).
type BGP struct {
	ASN      uint32
	RouterID netip.Addr // IPv4: a BGP identifier is 32 bits
	// WithdrawDelay is how long the daemon waits, on SIGTERM, between
	// withdrawing its routes and closing its listeners, for the routers to
	// move new flows to the other nodes.
	WithdrawDelay time.Duration
	Neighbors     []BGPNeighbor
	// Announce lists the listeners whose addresses are announced; when the
	// file has no announce list, every listener, without communities.
	Announce []BGPAnnounce
	// SecondChance is bgp.second_chance: the other nodes that segments of
	// connections this node does not hold are handed to (and accepted
	// from) instead of being reset. Empty: none.
	SecondChance BGPSecondChance
}

// BGPSecondChance is the bgp.second_chance block (stack/secondchance.go).
type BGPSecondChance struct {
	// Peers are the other nodes' unicast addresses: each is where this
	// node forwards to, and the source it accepts forwarded segments from
	// (the address a node sends from is its own source address for the
	// route to the peer).
	Peers []netip.Addr
}

// MaxSecondChancePeers is the size of the XDP program's peers map.
const MaxSecondChancePeers = 64

// BGPNeighbor is a router the speaker opens a session to.
type BGPNeighbor struct {
	Address  netip.Addr
	ASN      uint32
	HoldTime time.Duration // whole seconds, 3s to 65535s (GoBGP has no hold time 0)
	Password string        // TCP MD5 (RFC 2385) key; "" for none
	BFD      BGPBFD        // the neighbor's bfd block; zero: no BFD
}

// BGPBFD is a neighbor's bfd block: single-hop BFD (RFC 5880, 5881) beside
// the BGP session, so that a dead neighbor (or a dead node, as the router
// sees it) is noticed in MinRx × Multiplier rather than in the hold time.
// The session is closed when BFD says the neighbor is down.
type BGPBFD struct {
	Enabled    bool
	MinTx      time.Duration // Desired Min TX Interval (RFC 5880 6.8.1)
	MinRx      time.Duration // Required Min RX Interval
	Multiplier int           // Detect Mult: packets missed before the neighbor is down
}

// BFD defaults (a present bfd block; about a second to detect) and limits.
// RFC 5880 carries the intervals in 32-bit microsecond fields and the
// multiplier in 8 bits, neither zero (6.8.1, 6.8.6); GoBGP's BFD runs on Go
// timers in user space, so intervals below 10ms are refused rather than
// promised.
const (
	DefaultBFDInterval   = 300 * time.Millisecond
	DefaultBFDMultiplier = 3
	MinBFDInterval       = 10 * time.Millisecond
	MaxBFDInterval       = math.MaxUint32 * time.Microsecond
	MaxBFDMultiplier     = math.MaxUint8
)

// BGPAnnounce is how one listener's address is announced.
type BGPAnnounce struct {
	Listener    string
	Communities []uint32 // RFC 1997 communities, "ASN:VALUE" as ASN<<16 | VALUE
	MED         uint32   // MULTI_EXIT_DISC; sent only when HasMED
	HasMED      bool
}

// BGP defaults and limits.
const (
	DefaultBGPHoldTime      = 90 * time.Second
	DefaultBGPWithdrawDelay = 5 * time.Second
	MinBGPHoldTime          = 3 * time.Second // RFC 4271 4.2
	MaxBGPHoldTime          = 65535 * time.Second
	MaxBGPPasswordLen       = 80 // TCP_MD5SIG_MAXKEYLEN
	// MaxASN is the largest usable 4-byte AS number (4294967295 is reserved, RFC 7300).
	MaxASN = math.MaxUint32 - 1
)

func (d *decoder) bgp(v *yaml.Node, listeners []Listener) *BGP {
	bm := d.mapping(v, "bgp", "asn", "router_id", "withdraw_delay", "neighbors", "announce", "second_chance")
	if bm == nil {
		return nil
	}
	b := &BGP{WithdrawDelay: DefaultBGPWithdrawDelay}
	if av := bm.required("asn"); av != nil {
		b.ASN = bm.asn("asn")
	}
	if rv := bm.required("router_id"); rv != nil {
		if s, ok := bm.scalar(rv, "router_id", "an IPv4 address"); ok {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			switch {
			case err != nil || !a.Is4():
				d.add(rv.Line, bm.field("router_id"), "%q is not an IPv4 address (a BGP identifier is 32 bits; use one of this node's IPv4 addresses)", s)
			case a.IsUnspecified():
				d.add(rv.Line, bm.field("router_id"), "must not be 0.0.0.0")
			default:
				b.RouterID = a
			}
		}
	}
	bm.duration("withdraw_delay", &b.WithdrawDelay, 0, 0)
	d.bgpNeighbors(bm, b)
	d.bgpAnnounce(bm, b, listeners)
	d.bgpSecondChance(bm, b)
	return b
}

// bgpSecondChance reads bgp.second_chance: {peers: [address, ...]}.
func (d *decoder) bgpSecondChance(bm *mapping, b *BGP) {
	v := bm.get("second_chance")
	if v == nil {
		return
	}
	sm := d.mapping(v, "bgp.second_chance", "peers")
	if sm == nil {
		return
	}
	items, lv, ok := sm.list("peers")
	if !ok || !sm.needItems("peers", items, lv, "list the other nodes' addresses (or leave second_chance out)") {
		return
	}
	if len(items) > MaxSecondChancePeers {
		d.add(lv.Line, sm.field("peers"), "at most %d peers (got %d)", MaxSecondChancePeers, len(items))
		return
	}
	firstLine := map[netip.Addr]int{}
	for i, it := range items {
		path := index(sm.field("peers"), i)
		if it.Kind != yaml.ScalarNode {
			d.add(it.Line, path, "expected an IP address, got %s", describe(it))
			continue
		}
		a, err := netip.ParseAddr(strings.TrimSpace(it.Value))
		switch {
		case err != nil:
			d.add(it.Line, path, "%q is not an IP address (another node's address, no port)", it.Value)
		case a.Zone() != "":
			d.add(it.Line, path, "IPv6 zones (%%%s) are not supported", a.Zone())
		case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			d.add(it.Line, path, "%s is not another node's unicast address", a)
		case b.RouterID.IsValid() && a.Unmap() == b.RouterID:
			d.add(it.Line, path, "%s is this node's router_id: list the other nodes only", a)
		case firstLine[a.Unmap()] != 0:
			d.add(it.Line, path, "duplicate peer %s (first at line %d)", a, firstLine[a.Unmap()])
		default:
			firstLine[a.Unmap()] = it.Line
			b.SecondChance.Peers = append(b.SecondChance.Peers, a.Unmap())
		}
	}
}

// asn reads an AS number (1 to MaxASN); 0 when invalid.
func (m *mapping) asn(key string) uint32 {
	n := 0
	if !m.integer(key, &n, 1, MaxASN) {
		return 0
	}
	return uint32(n)
}

func (d *decoder) bgpNeighbors(bm *mapping, b *BGP) {
	items, v, ok := bm.list("neighbors")
	if !ok || !bm.needItems("neighbors", items, v, "at least one neighbor is required") {
		return
	}
	firstLine := map[netip.Addr]int{}
	for i, it := range items {
		nm := d.mapping(it, index("bgp.neighbors", i), "address", "asn", "hold_time", "password", "bfd")
		if nm == nil {
			continue
		}
		n := BGPNeighbor{HoldTime: DefaultBGPHoldTime}
		if av := nm.required("address"); av != nil {
			if s, ok := nm.scalar(av, "address", "an IP address"); ok {
				a, err := netip.ParseAddr(strings.TrimSpace(s))
				switch {
				case err != nil:
					d.add(av.Line, nm.field("address"), "%q is not an IP address (the neighbor's address, no port)", s)
				case !nm.unicast(av, "address", a):
				case firstLine[a] != 0:
					d.add(av.Line, nm.field("address"), "duplicate neighbor %s (first at line %d)", a, firstLine[a])
				default:
					firstLine[a] = av.Line
					n.Address = a
				}
			}
		}
		if nm.required("asn") != nil {
			n.ASN = nm.asn("asn")
		}
		if nm.duration("hold_time", &n.HoldTime, MinBGPHoldTime, MaxBGPHoldTime) && n.HoldTime%time.Second != 0 {
			d.add(nm.get("hold_time").Line, nm.field("hold_time"), "must be a whole number of seconds (got %s)", fmtDur(n.HoldTime))
		}
		if pv := nm.get("password"); pv != nil {
			if s, ok := nm.scalar(pv, "password", "a string"); ok {
				if len(s) > MaxBGPPasswordLen {
					d.add(pv.Line, nm.field("password"), "a TCP MD5 key is at most %d bytes (got %d)", MaxBGPPasswordLen, len(s))
				} else {
					n.Password = s
				}
			}
		}
		n.BFD = d.bgpBFD(nm)
		b.Neighbors = append(b.Neighbors, n)
	}
}

// bgpBFD reads a neighbor's bfd block: {enabled, min_tx, min_rx,
// multiplier}; present, it is enabled unless it says enabled: false.
func (d *decoder) bgpBFD(nm *mapping) BGPBFD {
	v := nm.get("bfd")
	if v == nil {
		return BGPBFD{}
	}
	bm := d.mapping(v, nm.field("bfd"), "enabled", "min_tx", "min_rx", "multiplier")
	if bm == nil {
		return BGPBFD{}
	}
	f := BGPBFD{Enabled: true, MinTx: DefaultBFDInterval, MinRx: DefaultBFDInterval, Multiplier: DefaultBFDMultiplier}
	bm.boolean("enabled", &f.Enabled)
	for _, iv := range []struct {
		key string
		dst *time.Duration
	}{{"min_tx", &f.MinTx}, {"min_rx", &f.MinRx}} {
		if bm.duration(iv.key, iv.dst, MinBFDInterval, MaxBFDInterval) && *iv.dst%time.Microsecond != 0 {
			d.add(bm.get(iv.key).Line, bm.field(iv.key), "must be a whole number of microseconds (got %s)", fmtDur(*iv.dst))
		}
	}
	bm.integer("multiplier", &f.Multiplier, 1, MaxBFDMultiplier)
	if !f.Enabled {
		return BGPBFD{}
	}
	return f
}

func (d *decoder) bgpAnnounce(bm *mapping, b *BGP, listeners []Listener) {
	names := map[string]bool{}
	for _, l := range listeners {
		if l.Name != "" {
			names[l.Name] = true
		}
	}
	if !bm.has("announce") || bm.get("announce") == nil {
		for _, l := range listeners {
			if l.Name != "" {
				b.Announce = append(b.Announce, BGPAnnounce{Listener: l.Name})
			}
		}
		return
	}
	items, _, ok := bm.list("announce")
	if !ok {
		return
	}
	b.Announce = []BGPAnnounce{} // an empty list announces nothing
	firstLine := map[string]int{}
	for i, it := range items {
		am := d.mapping(it, index("bgp.announce", i), "listener", "communities", "med")
		if am == nil {
			continue
		}
		var a BGPAnnounce
		if lv := am.required("listener"); lv != nil {
			if s, ok := am.scalar(lv, "listener", "a listener name"); ok {
				switch {
				case !names[s] && len(listeners) > 0:
					d.add(lv.Line, am.field("listener"), "no listener is named %q", s)
				case firstLine[s] != 0:
					d.add(lv.Line, am.field("listener"), "listener %q is already announced (first at line %d)", s, firstLine[s])
				default:
					firstLine[s] = lv.Line
					a.Listener = s
				}
			}
		}
		if cs, _, ok := am.list("communities"); ok {
			for j, c := range cs {
				path := index(am.field("communities"), j)
				if c.Kind != yaml.ScalarNode {
					d.add(c.Line, path, "expected a community \"ASN:VALUE\", got %s", describe(c))
					continue
				}
				if v, ok := ParseCommunity(c.Value); ok {
					a.Communities = append(a.Communities, v)
				} else {
					d.add(c.Line, path, "%q is not a community \"ASN:VALUE\" (two numbers from 0 to 65535, like 65000:100)", c.Value)
				}
			}
		}
		if am.get("med") != nil {
			med := 0
			if am.integer("med", &med, 0, math.MaxUint32) {
				a.MED, a.HasMED = uint32(med), true
			}
		}
		b.Announce = append(b.Announce, a)
	}
}

// ParseCommunity reads an RFC 1997 community written "ASN:VALUE".
func ParseCommunity(s string) (uint32, bool) {
	hi, lo, found := strings.Cut(strings.TrimSpace(s), ":")
	if !found || !isDigits(hi) || !isDigits(lo) {
		return 0, false
	}
	h, errH := strconv.ParseUint(hi, 10, 16)
	l, errL := strconv.ParseUint(lo, 10, 16)
	if errH != nil || errL != nil {
		return 0, false
	}
	return uint32(h)<<16 | uint32(l), true
}

// FormatCommunity writes a community as "ASN:VALUE".
func FormatCommunity(c uint32) string {
	return strconv.FormatUint(uint64(c>>16), 10) + ":" + strconv.FormatUint(uint64(c&0xffff), 10)
}
