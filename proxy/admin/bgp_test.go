package admin

import (
	"encoding/json"
	"strings"
	"testing"
)

type fakeBGP struct{ v BGPView }

func (f fakeBGP) BGPStatus() BGPView { return f.v }

func TestBGPEndpointAndMetrics(t *testing.T) {
	a := New(nil, "127.0.0.1:0", nil)
	resp, body := get(t, a.Handler(), "/bgp")
	if resp.StatusCode != 200 || !strings.Contains(body, `"enabled": false`) {
		t.Fatalf("/bgp without a speaker: %d %s", resp.StatusCode, body)
	}
	med := uint32(10)
	a.SetBGP(fakeBGP{BGPView{Enabled: true, ASN: 65001, RouterID: "10.10.1.1",
		Neighbors: []BGPNeighborView{
			{Address: "10.10.1.254", ASN: 65000, State: "established", Up: true, HoldTime: 3, Established: 2, UpdatesSent: 5},
			{Address: "10.10.4.254", ASN: 65000, State: "established", Up: true, HoldTime: 3,
				BFD: &BGPBFDView{State: "up", Up: true, MinTxMs: 100, MinRxMs: 100, Multiplier: 3, PacketsSent: 40, PacketsReceived: 38}},
		},
		Routes: []BGPRouteView{{Prefix: "10.10.9.1/32", Listeners: []string{"web"}, Announced: true, Reason: "serving", MED: &med, Announces: 3, Withdrawals: 2}},
	}})
	_, body = get(t, a.Handler(), "/bgp")
	var v BGPView
	if err := json.Unmarshal([]byte(body), &v); err != nil || !v.Enabled || v.Neighbors[0].State != "established" || *v.Routes[0].MED != 10 {
		t.Fatalf("/bgp: %v %s", err, body)
	}
	_, metrics := get(t, a.Handler(), "/metrics")
	for _, want := range []string{
		`xdproxy_bgp_session_up{neighbor="10.10.1.254"} 1`,
		`xdproxy_bgp_session_state{neighbor="10.10.1.254",state="established"} 1`,
		`xdproxy_bgp_session_state{neighbor="10.10.1.254",state="idle"} 0`,
		`xdproxy_bgp_session_established_total{neighbor="10.10.1.254"} 2`,
		`xdproxy_bgp_updates_total{direction="sent",neighbor="10.10.1.254"} 5`,
		`xdproxy_bgp_bfd_up{neighbor="10.10.4.254"} 1`,
		`xdproxy_bgp_bfd_state{neighbor="10.10.4.254",state="up"} 1`,
		`xdproxy_bgp_bfd_state{neighbor="10.10.4.254",state="down"} 0`,
		`xdproxy_bgp_bfd_packets_total{direction="sent",neighbor="10.10.4.254"} 40`,
		`xdproxy_bgp_bfd_packets_total{direction="received",neighbor="10.10.4.254"} 38`,
		`xdproxy_bgp_route_announced{prefix="10.10.9.1/32"} 1`,
		`xdproxy_bgp_announcements_total{prefix="10.10.9.1/32"} 3`,
		`xdproxy_bgp_withdrawals_total{prefix="10.10.9.1/32"} 2`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// A neighbor without bfd has no bfd series.
	if strings.Contains(metrics, `xdproxy_bgp_bfd_up{neighbor="10.10.1.254"}`) {
		t.Errorf("/metrics has bfd series for a neighbor without bfd")
	}
}
