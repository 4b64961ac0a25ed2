package admin

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
)

// BGPSource is the daemon's BGP speaker (proxy/bgp) as GET /bgp and
// /metrics report it.
type BGPSource interface {
	BGPStatus() BGPView
}

// BGPView is GET /bgp's JSON document.
type BGPView struct {
	Enabled  bool   `json:"enabled"` // false: no bgp block in the configuration
	ASN      uint32 `json:"asn,omitempty"`
	RouterID string `json:"router_id,omitempty"`
	// Withdrawn is true once the daemon withdrew every route to shut down.
	Withdrawn bool              `json:"withdrawn"`
	Neighbors []BGPNeighborView `json:"neighbors"`
	Routes    []BGPRouteView    `json:"routes"`
}

// BGPNeighborView is one BGP session.
type BGPNeighborView struct {
	Address string `json:"address"`
	ASN     uint32 `json:"asn"`
	// State is the session's FSM state: idle, connect, active, opensent,
	// openconfirm, established.
	State    string `json:"state"`
	Up       bool   `json:"up"`
	HoldTime uint64 `json:"hold_time_seconds"` // negotiated while up, else configured
	// Since is when the session last came up or went down (RFC 3339; "" before either).
	Since string `json:"since,omitempty"`
	// Established counts the session's transitions to established.
	Established       uint64 `json:"established_total"`
	UpdatesSent       uint64 `json:"updates_sent"`
	UpdatesReceived   uint64 `json:"updates_received"`
	DisconnectMessage string `json:"last_error,omitempty"`
	// BFD is the neighbor's BFD session; nil when bfd is off for it.
	BFD *BGPBFDView `json:"bfd,omitempty"`
}

// BGPBFDView is the BFD session (RFC 5880) beside a BGP session: while it
// is down after having been up, the BGP session is closed.
type BGPBFDView struct {
	// State is the local session state: down, init, up (admin_down when
	// the neighbor took it down by hand).
	State           string `json:"state"`
	Up              bool   `json:"up"`
	MinTxMs         uint64 `json:"min_tx_ms"`
	MinRxMs         uint64 `json:"min_rx_ms"`
	Multiplier      uint32 `json:"multiplier"`
	PacketsSent     uint64 `json:"packets_sent"`
	PacketsReceived uint64 `json:"packets_received"`
}

// BGPRouteView is one announced (or announceable) prefix: a listener
// address as a host route.
type BGPRouteView struct {
	Prefix      string   `json:"prefix"`
	Listeners   []string `json:"listeners"`
	Announced   bool     `json:"announced"`
	Reason      string   `json:"reason"` // why it is (not) announced
	Communities []string `json:"communities,omitempty"`
	MED         *uint32  `json:"med,omitempty"`
	Announces   uint64   `json:"announcements_total"`
	Withdrawals uint64   `json:"withdrawals_total"`
}

type bgpRef struct{ src BGPSource }

// SetBGP makes GET /bgp and the xdproxy_bgp_* metrics report src (nil:
// /bgp answers {"enabled": false} and there are no bgp metrics).
func (a *Admin) SetBGP(src BGPSource) {
	if src == nil {
		a.bgpSrc.Store(nil)
		return
	}
	a.bgpSrc.Store(&bgpRef{src})
}

func (a *Admin) currentBGP() BGPSource {
	if ref := a.bgpSrc.Load(); ref != nil {
		return ref.src
	}
	return nil
}

func (a *Admin) bgpStatus() BGPView {
	if src := a.currentBGP(); src != nil {
		return src.BGPStatus()
	}
	return BGPView{Neighbors: []BGPNeighborView{}, Routes: []BGPRouteView{}}
}

// handleBGP: GET /bgp, the sessions and routes as JSON.
func (a *Admin) handleBGP(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	writeJSON(w, http.StatusOK, a.bgpStatus())
}

var (
	mBGPSessionUp    = desc("bgp_session_up", "1 while the BGP session with the neighbor is established, else 0.", "neighbor")
	mBGPSessionState = desc("bgp_session_state", "1 for the BGP session's current FSM state, 0 for the others.", "neighbor", "state")
	mBGPEstablished  = desc("bgp_session_established_total", "Transitions of the BGP session to established.", "neighbor")
	mBGPUpdates      = desc("bgp_updates_total", "BGP UPDATE messages by direction (sent, received).", "neighbor", "direction")
	mBGPBFDUp        = desc("bgp_bfd_up", "1 while the BFD session with the neighbor is up, else 0 (neighbors with bfd on only).", "neighbor")
	mBGPBFDState     = desc("bgp_bfd_state", "1 for the BFD session's current state (down, init, up, admin_down), 0 for the others.", "neighbor", "state")
	mBGPBFDPackets   = desc("bgp_bfd_packets_total", "BFD control packets by direction (sent, received).", "neighbor", "direction")
	mBGPAnnounced    = desc("bgp_route_announced", "1 while the listener address (prefix) is announced, else 0 (no eligible backend, draining, or withdrawn for shutdown).", "prefix")
	mBGPAnnounces    = desc("bgp_announcements_total", "Times the prefix was announced (it became servable, or its attributes changed).", "prefix")
	mBGPWithdrawals  = desc("bgp_withdrawals_total", "Times the prefix was withdrawn (it stopped being servable, or the daemon shut down).", "prefix")
)

// BGPStates are the session states xdproxy_bgp_session_state reports.
var BGPStates = []string{"idle", "connect", "active", "opensent", "openconfirm", "established"}

// BFDStates are the session states xdproxy_bgp_bfd_state reports (RFC 5880 4.1).
var BFDStates = []string{"admin_down", "down", "init", "up"}

type bgpCollector struct{ source func() BGPSource }

func (c *bgpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mBGPSessionUp, mBGPSessionState, mBGPEstablished, mBGPUpdates, mBGPBFDUp, mBGPBFDState, mBGPBFDPackets, mBGPAnnounced, mBGPAnnounces, mBGPWithdrawals} {
		ch <- d
	}
}

func (c *bgpCollector) Collect(ch chan<- prometheus.Metric) {
	src := c.source()
	if src == nil {
		return
	}
	v := src.BGPStatus()
	for _, n := range v.Neighbors {
		ch <- gauge(mBGPSessionUp, b2f(n.Up), n.Address)
		for _, s := range BGPStates {
			ch <- gauge(mBGPSessionState, b2f(n.State == s), n.Address, s)
		}
		ch <- counter(mBGPEstablished, n.Established, n.Address)
		ch <- counter(mBGPUpdates, n.UpdatesSent, n.Address, "sent")
		ch <- counter(mBGPUpdates, n.UpdatesReceived, n.Address, "received")
		if f := n.BFD; f != nil {
			ch <- gauge(mBGPBFDUp, b2f(f.Up), n.Address)
			for _, s := range BFDStates {
				ch <- gauge(mBGPBFDState, b2f(f.State == s), n.Address, s)
			}
			ch <- counter(mBGPBFDPackets, f.PacketsSent, n.Address, "sent")
			ch <- counter(mBGPBFDPackets, f.PacketsReceived, n.Address, "received")
		}
	}
	for _, r := range v.Routes {
		ch <- gauge(mBGPAnnounced, b2f(r.Announced), r.Prefix)
		ch <- counter(mBGPAnnounces, r.Announces, r.Prefix)
		ch <- counter(mBGPWithdrawals, r.Withdrawals, r.Prefix)
	}
}
