package dataplane

import (
	"net/netip"
	"testing"
)

func TestReservedPorts(t *testing.T) {
	for _, tc := range []struct {
		name      string
		listeners []string
		want      string
	}{
		{"no listeners", nil, "20000-59999"},
		// Five listeners on one address (the bench's 7000-7004), in any order.
		{"adjacent", []string{"10.10.1.1:7003", "10.10.1.1:7000", "10.10.1.1:7001", "10.10.1.1:7004", "10.10.1.1:7002"}, "7000-7004,20000-59999"},
		// One port on several addresses, the unspecified ones included.
		{"same port", []string{"10.0.0.1:443", "0.0.0.0:443", "[::]:443", "[2001:db8::1]:80"}, "80,443,20000-59999"},
		{"inside and next to the source ports", []string{"10.0.0.1:30000", "10.0.0.1:60000", "10.0.0.1:65535"}, "20000-60000,65535"},
	} {
		cfg := Config{SourcePorts: [2]uint16{20000, 59999}}
		for _, l := range tc.listeners {
			cfg.Listeners = append(cfg.Listeners, netip.MustParseAddrPort(l))
		}
		if got := portList(reservedPorts(cfg)); got != tc.want {
			t.Errorf("%s: reserved %q, want %q", tc.name, got, tc.want)
		}
	}
}
