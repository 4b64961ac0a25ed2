package proxy

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/xdproxy/xdproxy/stack"
)

// bgp.second_chance is read at start: a reload that changes the peers
// names it as needing a restart, and not as a tcp change.
func TestReloadSecondChanceNeedsRestart(t *testing.T) {
	peers := func(as ...string) Config {
		var c Config
		for _, a := range as {
			c.Engine.SecondChance.Peers = append(c.Engine.SecondChance.Peers, netip.MustParseAddr(a))
		}
		return c
	}
	if got := restartOnly(peers("10.0.0.2"), peers("10.0.0.2")); len(got) != 0 {
		t.Errorf("same peers: restart for %v", got)
	}
	for _, next := range []Config{peers(), peers("10.0.0.3"), peers("10.0.0.2", "10.0.0.3")} {
		if got := restartOnly(peers("10.0.0.2"), next); !slices.Equal(got, []string{"bgp.second_chance"}) {
			t.Errorf("peers %v -> %v: restart for %v, want [bgp.second_chance]", "10.0.0.2", next.Engine.SecondChance.Peers, got)
		}
	}
	if !sameEngine(stack.Config{}, peers("10.0.0.2").Engine) {
		t.Error("sameEngine compares the second chance peers (reported as tcp)")
	}
}
