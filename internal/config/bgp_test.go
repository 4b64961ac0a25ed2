package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// bgpBase is base with a bgp block from line 14 on.
const bgpBase = base + `bgp:
  asn: 65001
  router_id: 10.10.1.1
  withdraw_delay: 2s
  neighbors:
    - address: 10.10.1.254
      asn: 65000
      hold_time: 9s
      password: secret
  announce:
    - listener: web
      communities: ["65000:100", "1:2"]
      med: 10
`

func TestBGPConfig(t *testing.T) {
	cfg := mustParse(t, "t.yaml", bgpBase)
	want := &BGP{
		ASN: 65001, RouterID: netip.MustParseAddr("10.10.1.1"), WithdrawDelay: 2 * time.Second,
		Neighbors: []BGPNeighbor{{Address: netip.MustParseAddr("10.10.1.254"), ASN: 65000, HoldTime: 9 * time.Second, Password: "secret"}},
		Announce:  []BGPAnnounce{{Listener: "web", Communities: []uint32{65000<<16 | 100, 1<<16 | 2}, MED: 10, HasMED: true}},
	}
	if !reflect.DeepEqual(cfg.BGP, want) {
		t.Errorf("got %+v\nwant %+v", cfg.BGP, want)
	}
	if cfg := mustParse(t, "t.yaml", base); cfg.BGP != nil {
		t.Errorf("no bgp block: BGP = %+v, want nil", cfg.BGP)
	}
}

func TestBGPDefaults(t *testing.T) {
	cfg := mustParse(t, "t.yaml", base+"bgp:\n  asn: 4200000000\n  router_id: 192.0.2.1\n  neighbors:\n    - {address: \"2001:db8::1\", asn: 65000}\n")
	b := cfg.BGP
	if b.ASN != 4200000000 || b.WithdrawDelay != DefaultBGPWithdrawDelay {
		t.Errorf("asn %d withdraw_delay %s", b.ASN, b.WithdrawDelay)
	}
	if n := b.Neighbors[0]; n.HoldTime != DefaultBGPHoldTime || n.Password != "" || n.Address != netip.MustParseAddr("2001:db8::1") {
		t.Errorf("neighbor %+v", n)
	}
	// No announce list: every listener, plainly.
	if !reflect.DeepEqual(b.Announce, []BGPAnnounce{{Listener: "web"}}) {
		t.Errorf("announce %+v", b.Announce)
	}
	// An empty list: none.
	cfg = mustParse(t, "t.yaml", base+"bgp:\n  asn: 1\n  router_id: 192.0.2.1\n  neighbors: [{address: 192.0.2.2, asn: 2}]\n  announce: []\n")
	if cfg.BGP.Announce == nil || len(cfg.BGP.Announce) != 0 {
		t.Errorf("announce: [] gave %+v", cfg.BGP.Announce)
	}
}

func TestBadBGPConfigs(t *testing.T) {
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"asn missing", "  asn: 65001\n", "",
			"t.yaml:15: bgp.asn: required field is missing"},
		{"asn 0", "asn: 65001", "asn: 0",
			"t.yaml:15: bgp.asn: must be between 1 and 4294967294 (got 0)"},
		{"asn too large", "asn: 65001", "asn: 4294967295",
			"t.yaml:15: bgp.asn: must be between 1 and 4294967294 (got 4294967295)"},
		{"router id IPv6", "router_id: 10.10.1.1", "router_id: \"2001:db8::1\"",
			`t.yaml:16: bgp.router_id: "2001:db8::1" is not an IPv4 address (a BGP identifier is 32 bits; use one of this node's IPv4 addresses)`},
		{"router id missing", "  router_id: 10.10.1.1\n", "",
			"t.yaml:15: bgp.router_id: required field is missing"},
		{"withdraw delay without unit", "withdraw_delay: 2s", "withdraw_delay: 2",
			`t.yaml:17: bgp.withdraw_delay: duration "2" needs a unit, as in 2s or 2ms`},
		{"no neighbors", "  neighbors:\n    - address: 10.10.1.254\n      asn: 65000\n      hold_time: 9s\n      password: secret\n", "  neighbors: []\n",
			"t.yaml:18: bgp.neighbors: at least one neighbor is required"},
		{"neighbor with a port", "address: 10.10.1.254", "address: 10.10.1.254:179",
			`t.yaml:19: bgp.neighbors[0].address: "10.10.1.254:179" is not an IP address (the neighbor's address, no port)`},
		{"duplicate neighbor", "      password: secret\n", "      password: secret\n    - {address: 10.10.1.254, asn: 65002}\n",
			"t.yaml:23: bgp.neighbors[1].address: duplicate neighbor 10.10.1.254 (first at line 19)"},
		{"neighbor asn missing", "      asn: 65000\n", "",
			"t.yaml:19: bgp.neighbors[0].asn: required field is missing"},
		{"hold time 1s", "hold_time: 9s", "hold_time: 1s",
			"t.yaml:21: bgp.neighbors[0].hold_time: must be between 3s and 18h12m15s (got 1s)"},
		{"hold time fraction", "hold_time: 9s", "hold_time: 9500ms",
			"t.yaml:21: bgp.neighbors[0].hold_time: must be a whole number of seconds (got 9.5s)"},
		{"hold time too long", "hold_time: 9s", "hold_time: 24h",
			"t.yaml:21: bgp.neighbors[0].hold_time: must be between 3s and 18h12m15s (got 24h)"},
		{"password too long", "password: secret", "password: " + strings.Repeat("x", 81),
			"t.yaml:22: bgp.neighbors[0].password: a TCP MD5 key is at most 80 bytes (got 81)"},
		{"unknown neighbor key", "      hold_time: 9s\n", "      holdtime: 9s\n",
			"t.yaml:21: bgp.neighbors[0].holdtime: unknown field; did you mean hold_time?"},
		{"announce unknown listener", "listener: web", "listener: api",
			`t.yaml:24: bgp.announce[0].listener: no listener is named "api"`},
		{"announce twice", "      med: 10\n", "      med: 10\n    - listener: web\n",
			`t.yaml:27: bgp.announce[1].listener: listener "web" is already announced (first at line 24)`},
		{"bad community", `"1:2"`, `"1:70000"`,
			`t.yaml:25: bgp.announce[0].communities[1]: "1:70000" is not a community "ASN:VALUE" (two numbers from 0 to 65535, like 65000:100)`},
		{"community a number", `"1:2"`, `12`,
			`t.yaml:25: bgp.announce[0].communities[1]: "12" is not a community "ASN:VALUE" (two numbers from 0 to 65535, like 65000:100)`},
		{"negative med", "med: 10", "med: -1",
			"t.yaml:26: bgp.announce[0].med: must be between 0 and 4294967295 (got -1)"},
		{"unknown bgp key", "  withdraw_delay: 2s\n", "  withdraw_dealy: 2s\n",
			"t.yaml:17: bgp.withdraw_dealy: unknown field; did you mean withdraw_delay?"},
		{"neighbours spelled the British way", "  neighbors:\n", "  neighbours:\n",
			"t.yaml:18: bgp.neighbours: unknown field; did you mean neighbors?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(bgpBase, tc.old) {
				t.Fatalf("bgpBase does not contain %q", tc.old)
			}
			src := strings.Replace(bgpBase, tc.old, tc.new, 1)
			_, err := Parse("t.yaml", []byte(src))
			if err == nil {
				t.Fatalf("no error; want %s\nsource:\n%s", tc.want, src)
			}
			if got := err.Error(); !strings.Contains(got, tc.want) {
				t.Errorf("got:\n%s\nwant:\n%s\nsource:\n%s", got, tc.want, src)
			}
		})
	}
}

func TestCommunityRoundTrip(t *testing.T) {
	for _, s := range []string{"0:0", "65000:100", "65535:65535"} {
		c, ok := ParseCommunity(s)
		if !ok || FormatCommunity(c) != s {
			t.Errorf("%s: %d %v -> %s", s, c, ok, FormatCommunity(c))
		}
	}
	for _, s := range []string{"", "1", "1:", ":1", "65536:1", "a:b", "-1:2"} {
		if _, ok := ParseCommunity(s); ok {
			t.Errorf("%q parsed", s)
		}
	}
}

func TestBGPSecondChance(t *testing.T) {
	cfg := mustParse(t, "t.yaml", bgpBase+"  second_chance:\n    peers: [10.10.4.1, \"2001:db8::2\", \"::ffff:10.10.7.1\"]\n")
	want := []netip.Addr{netip.MustParseAddr("10.10.4.1"), netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("10.10.7.1")}
	if !reflect.DeepEqual(cfg.BGP.SecondChance.Peers, want) {
		t.Errorf("peers %v, want %v", cfg.BGP.SecondChance.Peers, want)
	}
	if cfg := mustParse(t, "t.yaml", bgpBase); cfg.BGP.SecondChance.Peers != nil {
		t.Errorf("no second_chance: peers %v", cfg.BGP.SecondChance.Peers)
	}
	for _, tc := range []struct{ name, block, want string }{
		{"no peers", "  second_chance: {peers: []}\n",
			"t.yaml:27: bgp.second_chance.peers: list the other nodes' addresses (or leave second_chance out)"},
		{"peers missing", "  second_chance: {}\n",
			"t.yaml:27: bgp.second_chance.peers: list the other nodes' addresses (or leave second_chance out)"},
		{"unknown key", "  second_chance: {peer: [10.10.4.1]}\n",
			"t.yaml:27: bgp.second_chance.peer: unknown field; did you mean peers?"},
		{"a port", "  second_chance:\n    peers: [\"10.10.4.1:4\"]\n",
			`t.yaml:28: bgp.second_chance.peers[0]: "10.10.4.1:4" is not an IP address (another node's address, no port)`},
		{"multicast", "  second_chance:\n    peers: [10.10.4.1, 224.0.0.5]\n",
			"t.yaml:28: bgp.second_chance.peers[1]: 224.0.0.5 is not another node's unicast address"},
		{"loopback", "  second_chance:\n    peers: [127.0.0.1]\n",
			"t.yaml:28: bgp.second_chance.peers[0]: 127.0.0.1 is not another node's unicast address"},
		{"itself", "  second_chance:\n    peers: [10.10.1.1]\n",
			"t.yaml:28: bgp.second_chance.peers[0]: 10.10.1.1 is this node's router_id: list the other nodes only"},
		{"twice", "  second_chance:\n    peers:\n      - 10.10.4.1\n      - 10.10.4.1\n",
			"t.yaml:30: bgp.second_chance.peers[1]: duplicate peer 10.10.4.1 (first at line 29)"},
		{"a mapping", "  second_chance:\n    peers: [{address: 10.10.4.1}]\n",
			"t.yaml:28: bgp.second_chance.peers[0]: expected an IP address, got a mapping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(bgpBase+tc.block))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got:\n%v\nwant:\n%s", err, tc.want)
			}
		})
	}
}

func TestBGPBFD(t *testing.T) {
	withBFD := func(block string) string {
		return strings.Replace(bgpBase, "      password: secret\n", "      password: secret\n"+block, 1)
	}
	for _, tc := range []struct {
		name, block string
		want        BGPBFD
	}{
		{"absent", "", BGPBFD{}},
		{"defaults", "      bfd: {}\n", BGPBFD{Enabled: true, MinTx: 300 * time.Millisecond, MinRx: 300 * time.Millisecond, Multiplier: 3}},
		{"all set", "      bfd: {enabled: true, min_tx: 100ms, min_rx: 150ms, multiplier: 5}\n",
			BGPBFD{Enabled: true, MinTx: 100 * time.Millisecond, MinRx: 150 * time.Millisecond, Multiplier: 5}},
		{"off", "      bfd: {enabled: false, min_tx: 100ms}\n", BGPBFD{}},
		{"limits", "      bfd: {min_tx: 10ms, min_rx: 4294967295us, multiplier: 255}\n",
			BGPBFD{Enabled: true, MinTx: 10 * time.Millisecond, MinRx: MaxBFDInterval, Multiplier: 255}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustParse(t, "t.yaml", withBFD(tc.block))
			if got := cfg.BGP.Neighbors[0].BFD; got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	for _, tc := range []struct{ name, block, want string }{
		{"not a mapping", "      bfd: on\n",
			`t.yaml:23: bgp.neighbors[0].bfd: expected a mapping, got "on"`},
		{"unknown key", "      bfd: {min_tx: 100ms, detect_mult: 3}\n",
			"t.yaml:23: bgp.neighbors[0].bfd.detect_mult: unknown field"},
		{"enabled not a bool", "      bfd: {enabled: 1}\n",
			"t.yaml:23: bgp.neighbors[0].bfd.enabled: expected true or false"},
		{"min_tx zero", "      bfd: {min_tx: 0s}\n",
			"t.yaml:23: bgp.neighbors[0].bfd.min_tx: must be between 10ms and 1h11m34.967295s (got 0s)"},
		{"min_rx too short", "      bfd:\n        min_rx: 1ms\n",
			"t.yaml:24: bgp.neighbors[0].bfd.min_rx: must be between 10ms and 1h11m34.967295s (got 1ms)"},
		{"min_rx too long", "      bfd: {min_rx: 2h}\n",
			"t.yaml:23: bgp.neighbors[0].bfd.min_rx: must be between 10ms and 1h11m34.967295s (got 2h)"},
		{"sub-microsecond", "      bfd: {min_tx: 100000001ns}\n",
			"t.yaml:23: bgp.neighbors[0].bfd.min_tx: must be a whole number of microseconds (got 100.000001ms)"},
		{"no unit", "      bfd: {min_tx: 300}\n",
			`t.yaml:23: bgp.neighbors[0].bfd.min_tx: duration "300" needs a unit, as in 300s or 300ms`},
		{"multiplier zero", "      bfd: {multiplier: 0}\n",
			"t.yaml:23: bgp.neighbors[0].bfd.multiplier: must be between 1 and 255 (got 0)"},
		{"multiplier too large", "      bfd: {multiplier: 256}\n",
			"t.yaml:23: bgp.neighbors[0].bfd.multiplier: must be between 1 and 255 (got 256)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(withBFD(tc.block)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got:\n%v\nwant:\n%s", err, tc.want)
			}
		})
	}
}
